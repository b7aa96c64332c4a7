//! How long the server takes to answer, by route and method, for `/metrics`
//! (`sluice_http_request_duration_seconds`, `sluice_http_requests_total`).
//!
//! Timed on every request, OFREP's included, so it allocates nothing and stays off shared cache lines:
//! each worker thread adds to its own row of a [`Tally`], and the route's slot range is found through a
//! copy-on-write map that readers load without a lock. Routes are axum's matched templates
//! (`/api/v1/flags/{key}`), so the label set is bounded by the router. A `from_fn` middleware here cost
//! 15% of the `/healthz` ceiling (it boxes the future and clones the boxed route twice per request).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::extract::MatchedPath;
use axum::response::Response;
use sluice_flags::tally::Tally;

/// Upper bounds of the latency buckets, in seconds (Prometheus' `le`); one more bucket holds the rest.
pub(crate) const BOUNDS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Per route: the buckets (and the one past the last bound), the sum in microseconds, and the count of
/// 1xx … 5xx answers.
const SUM: u32 = BOUNDS.len() as u32 + 1;
const CLASSES: u32 = SUM + 1;
const PER_ROUTE: u32 = CLASSES + 5;
/// The status classes, in slot order.
pub(crate) const CLASS_NAMES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A request's method as a label: the standard ones by name, anything else (a client may send any token
/// as a method) as `other`, so that no client can add label sets.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Route template → each method's first slot.
type RouteSlots = HashMap<Box<str>, Vec<(&'static str, u32)>>;

/// Request durations and answers by (method, route).
#[derive(Default)]
pub(crate) struct RequestTimes {
    tally: Tally,
    routes: ArcSwap<RouteSlots>,
    /// Numbering of new routes, one at a time; readers never take it.
    numbering: Mutex<Vec<(&'static str, Arc<str>)>>,
}

/// One route's figures, read at scrape time.
pub(crate) struct RouteTimes {
    pub method: String,
    pub route: Arc<str>,
    /// Cumulative counts per bound of [`BOUNDS`], then the total (`+Inf`).
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
    /// Answers per class of [`CLASS_NAMES`].
    pub classes: [u64; 5],
}

impl RequestTimes {
    fn base(&self, method: &axum::http::Method, route: &str) -> u32 {
        let method = method_label(method);
        let known = |routes: &RouteSlots| {
            routes.get(route).and_then(|m| m.iter().find(|(k, _)| *k == method)).map(|&(_, base)| base)
        };
        if let Some(base) = known(&self.routes.load()) {
            return base;
        }
        let mut numbering = self.numbering.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(base) = known(&self.routes.load()) {
            return base;
        }
        let base = numbering.len() as u32 * PER_ROUTE;
        numbering.push((method, Arc::from(route)));
        let mut routes = HashMap::clone(&self.routes.load());
        routes.entry(Box::from(route)).or_default().push((method, base));
        self.routes.store(Arc::new(routes));
        base
    }

    fn record(&self, base: u32, status: u16, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BOUNDS.iter().position(|&b| seconds <= b).unwrap_or(BOUNDS.len()) as u32;
        let class = u32::from(status.clamp(100, 599) / 100 - 1);
        self.tally.with(|hand| {
            hand.add(base + bucket, 1);
            hand.add(base + SUM, elapsed.as_micros() as u64);
            hand.add(base + CLASSES + class, 1);
        });
    }

    /// Every route answered so far.
    pub(crate) fn read(&self) -> Vec<RouteTimes> {
        let numbering = self.numbering.lock().unwrap_or_else(|e| e.into_inner()).clone();
        numbering
            .into_iter()
            .enumerate()
            .map(|(i, (method, route))| {
                let base = i as u32 * PER_ROUTE;
                let mut running = 0;
                let buckets = (0..SUM)
                    .map(|b| {
                        running += self.tally.sum(base + b);
                        running
                    })
                    .collect();
                RouteTimes {
                    method: method.to_string(),
                    route,
                    buckets,
                    sum_seconds: self.tally.sum(base + SUM) as f64 / 1e6,
                    classes: std::array::from_fn(|c| self.tally.sum(base + CLASSES + c as u32)),
                }
            })
            .collect()
    }
}

/// The layer that times every request: outermost, so that the time includes error mapping. It is a plain
/// service with an unboxed future and a `'static` reference to the figures: axum clones each route's
/// layers per request, and an `Arc` here would be a counter both cores fight over.
#[derive(Clone, Copy)]
pub(crate) struct TimeRequests(pub(crate) &'static RequestTimes);

impl<S> tower_layer::Layer<S> for TimeRequests {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Timed<S> {
        Timed { inner, times: self.0 }
    }
}

/// A route's service, timed.
#[derive(Clone)]
pub(crate) struct Timed<S> {
    inner: S,
    times: &'static RequestTimes,
}

/// The route of a request axum did not route (the fallback): one label for all of them.
const UNMATCHED: &str = "(unmatched)";

impl<S, B> tower_service::Service<axum::http::Request<B>> for Timed<S>
where
    S: tower_service::Service<axum::http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TimedAnswer<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let began = Instant::now();
        let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str);
        let base = self.times.base(request.method(), route);
        TimedAnswer { inner: self.inner.call(request), began, base, times: self.times }
    }
}

pin_project_lite::pin_project! {
    /// A route's answer, recorded when it is ready.
    pub(crate) struct TimedAnswer<F> {
        #[pin]
        inner: F,
        began: Instant,
        base: u32,
        times: &'static RequestTimes,
    }
}

impl<F, E> std::future::Future for TimedAnswer<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &answer {
            this.times.record(*this.base, response.status().as_u16(), this.began.elapsed());
        }
        std::task::Poll::Ready(answer)
    }
}
