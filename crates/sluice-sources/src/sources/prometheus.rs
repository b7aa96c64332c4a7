//! The `prometheus` source: an instant query against the Prometheus HTTP API (`/api/v1/query`), evaluated
//! at the tick's time, with the plan's templates filled; or, with `slo:`, the error-budget burn rate over
//! each window. Every answer has one outcome: one sample is the value; no sample is "no data"
//! (inconclusive, or 0 with `on_empty: zero`); NaN or ±Inf is not a number (inconclusive); several series
//! are an error naming them unless `reduce:` says how to combine them; an HTTP error, a timeout, a body that
//! is not Prometheus JSON or one over the size limit is a source error.
//!
//! A Prometheus that hangs delays only the rollouts that ask it: each endpoint has a few slots, and the
//! wait for one counts toward the check's timeout.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use serde::Deserialize;
use sluice_engine::Measurement;
use sluice_plan::model::{Check, EnvValue, Location, Node, Spanned};
use sluice_plan::{Dur, Report, Supports};

use crate::{MeasureContext, Redactor, Secrets};

/// A `prometheus` check's own keys.
///
/// ```yaml
/// analysis: { prometheus: { url: http://prometheus:9090 } }
/// gates:
///   - { name: errors, query: 'sum(rate(errors_total{variant="{{ramped}}"}[5m]))', below: 0.01 }
///   - { name: budget, slo: { objective: 99.9, good: …, total: …, windows: [5m, 1h] }, below: 2 }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusCheck {
    /// The query (templates allowed).
    #[serde(default)]
    pub query: Option<Spanned<String>>,
    /// Multi-window burn rate of an SLO; the value is the burn rate.
    #[serde(default)]
    pub slo: Option<Spanned<Slo>>,
    /// How several series become one number.
    #[serde(default)]
    pub reduce: Option<Reduce>,
}

impl PrometheusCheck {
    /// The check's keys as this source reads them.
    pub fn of(check: &Check) -> Result<PrometheusCheck, String> {
        check.block.parse(Location::UNKNOWN).map_err(|e| e.to_string())
    }
}

/// How several series become one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    /// The largest (e.g. "any endpoint").
    Max,
    /// The smallest.
    Min,
    /// The sum.
    Sum,
    /// The mean.
    Avg,
}

/// An SLO burn-rate check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Objective in percent, e.g. 99.9.
    pub objective: f64,
    /// PromQL of good events' rate.
    pub good: Spanned<String>,
    /// PromQL of all events' rate.
    pub total: Spanned<String>,
    /// The windows that must all burn faster than the threshold (e.g. `[5m, 1h]`).
    pub windows: Vec<Spanned<Dur>>,
}

/// The Prometheus a plan's `prometheus` checks ask, and how to authenticate to it (`analysis.prometheus`).
/// Credentials are secrets (`SLUICE_SECRET_*` variables or files under `--secrets-dir`): never logged, never
/// shown.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The URL (templates allowed).
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// The environment variable holding the URL (when it holds credentials).
    #[serde(default)]
    pub url_env: Option<Spanned<String>>,
    /// The environment variable holding a bearer token: `Authorization: Bearer TOKEN`.
    #[serde(default)]
    pub bearer_env: Option<Spanned<String>>,
    /// The environment variable holding `user:password` for HTTP basic authentication.
    #[serde(default)]
    pub basic_env: Option<Spanned<String>>,
    /// Headers sent with every query (e.g. `X-Scope-OrgID` of a Mimir or Cortex tenant): text, or a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<EnvValue>>,
    /// Longest a query may take when the check sets no `timeout` (default 30 s).
    #[serde(default)]
    pub timeout: Option<Spanned<Dur>>,
}

impl Settings {
    /// A plan's `analysis.prometheus`, if it has one.
    pub fn of(plan: &sluice_plan::Plan) -> Result<Option<Settings>, String> {
        plan.analysis.settings_of(KIND).map(|n| sluice_plan::block::parse(n).map_err(|e| e.to_string())).transpose()
    }
}

/// This source's name.
pub const KIND: &str = "prometheus";

/// Longest a query may take when the check sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read (a query that returns every series of a big metric).
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 4 << 20;
/// Queries in flight at once against one Prometheus.
pub const SLOTS_PER_ENDPOINT: usize = 4;

/// The `prometheus` source: one HTTP client for every endpoint.
pub struct Prometheus {
    http: reqwest::Client,
    secrets: Secrets,
    max_answer_bytes: usize,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl Prometheus {
    /// Built from the server's configuration.
    pub fn new(config: &crate::Config) -> Prometheus {
        Prometheus {
            http: reqwest::Client::builder().no_proxy().build().expect("an HTTP client with defaults"),
            secrets: Secrets::new(config.secrets_dir.clone()),
            max_answer_bytes: config.prometheus_max_answer_bytes.unwrap_or(DEFAULT_MAX_ANSWER_BYTES),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The plan's Prometheus: its URL, credentials and headers, and the redactor of every secret among
    /// them (a URL from a secret may hold credentials too).
    fn endpoint(&self, cx: &MeasureContext<'_>) -> Result<Target, String> {
        let e = Settings::of(cx.plan)?.ok_or("the plan has no `analysis.prometheus`")?;
        let env = |var: &str| sluice_plan::model::SecretRef { secret_env: Some(var.to_string()), secret_file: None };
        let (headers, mut redactor) = self.secrets.environment(&e.headers, cx.values)?;
        let url = match (&e.url, &e.url_env) {
            (Some(u), None) => sluice_plan::render(&u.value, cx.values),
            (None, Some(var)) => {
                let url = self.secrets.resolve(&env(&var.value))?;
                redactor.add(&url);
                url
            }
            _ => return Err("`analysis.prometheus` needs `url` or `url_env`".into()),
        };
        let auth = match (&e.bearer_env, &e.basic_env) {
            (Some(var), _) => {
                let token = self.secrets.resolve(&env(&var.value)).map_err(|e| format!("bearer_env: {e}"))?;
                redactor.add(&token);
                Some(Auth::Bearer(token))
            }
            (None, Some(var)) => {
                let pair = self.secrets.resolve(&env(&var.value)).map_err(|e| format!("basic_env: {e}"))?;
                let (user, password) = pair
                    .split_once(':')
                    .ok_or_else(|| format!("basic_env: `{}` holds no `user:password`", var.value))?;
                redactor.add(&pair);
                if password.chars().count() >= 4 {
                    redactor.add(password);
                }
                Some(Auth::Basic(user.to_string(), password.to_string()))
            }
            (None, None) => None,
        };
        Ok(Target {
            base: url.trim_end_matches('/').to_string(),
            auth,
            headers,
            timeout: e.timeout.as_ref().map(|t| t.value.0),
            redactor,
        })
    }

    fn slots_of(&self, base: &str) -> Arc<tokio::sync::Semaphore> {
        let mut slots = self.slots.lock();
        slots
            .entry(base.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(SLOTS_PER_ENDPOINT)))
            .clone()
    }

    /// Prometheus' `data` for a GET of `/api/v1/{path}` with `params`: every failure a source error.
    async fn fetch(&self, target: &Target, path: &str, params: &[(&str, &str)]) -> Result<Data, String> {
        let slots = self.slots_of(&target.base);
        let _slot = slots.acquire().await.map_err(|_| "the endpoint's slots are closed".to_string())?;
        let mut response = target
            .request(&self.http, path)
            .query(params)
            .send()
            .await
            .map_err(|e| format!("Prometheus cannot be reached: {}", without_url(&e)))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| format!("reading Prometheus' answer: {}", without_url(&e)))?
        {
            if body.len() + chunk.len() > self.max_answer_bytes {
                return Err(format!(
                    "Prometheus' answer is larger than {} bytes: narrow the query or aggregate it",
                    self.max_answer_bytes
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
            let start = String::from_utf8_lossy(&body[..body.len().min(120)]).to_string();
            format!("HTTP {status} with a body that is not Prometheus JSON: {start}")
        })?;
        if answer.status != "success" {
            return Err(format!(
                "Prometheus said {} ({status}): {}",
                answer.error_type.unwrap_or_default(),
                answer.error.unwrap_or_default()
            ));
        }
        answer.data.ok_or_else(|| "Prometheus answered success with no data".to_string())
    }

    /// The samples of an instant query at `at_ms`.
    async fn instant(&self, target: &Target, query: &str, at_ms: u64) -> Result<Vec<Sample>, String> {
        let time = seconds(at_ms);
        let data = self.fetch(target, "query", &[("query", query), ("time", time.as_str())]).await?;
        match data.result_type.as_str() {
            "vector" => serde_json::from_value::<Vec<VectorSample>>(data.result)
                .map_err(|e| format!("a vector Prometheus answered does not parse: {e}"))?
                .into_iter()
                .map(|s| Ok(Sample { labels: s.metric, value: number(&s.value.1)? }))
                .collect(),
            "scalar" => {
                let (_, v): (f64, String) =
                    serde_json::from_value(data.result).map_err(|e| format!("a scalar does not parse: {e}"))?;
                Ok(vec![Sample { labels: BTreeMap::new(), value: number(&v)? }])
            }
            other => Err(format!("the query returned a {other}: a check needs an instant vector or a scalar")),
        }
    }

    /// Every series of a range query over `[from, to]` at `step`, asked in pieces that stay under
    /// Prometheus' limit of 11,000 points per series.
    async fn range(&self, target: &Target, query: &str, from: u64, to: u64, step: u64) -> Result<Vec<Series>, String> {
        const MOST_POINTS: u64 = 10_000;
        let mut by_labels: BTreeMap<BTreeMap<String, String>, Vec<(u64, f64)>> = BTreeMap::new();
        let mut start = from;
        while start <= to {
            let end = to.min(start + step * (MOST_POINTS - 1));
            let (s, e, st) = (seconds(start), seconds(end), seconds(step));
            let data = self
                .fetch(target, "query_range", &[("query", query), ("start", &s), ("end", &e), ("step", &st)])
                .await?;
            if data.result_type != "matrix" {
                return Err(format!("a range query returned a {}, not a matrix", data.result_type));
            }
            let series: Vec<MatrixSeries> = serde_json::from_value(data.result)
                .map_err(|e| format!("a matrix Prometheus answered does not parse: {e}"))?;
            for m in series {
                let points = by_labels.entry(m.metric).or_default();
                for (t, v) in m.values {
                    points.push(((t * 1000.0).round() as u64, number(&v)?));
                }
            }
            start = end + step;
        }
        Ok(by_labels.into_iter().map(|(labels, points)| Series { labels, points }).collect())
    }

    /// The samples of `query` at `at_ms`: asked now, or read from a range of history.
    async fn samples(&self, target: &Target, query: &str, at: When<'_>) -> Result<Vec<Sample>, String> {
        let (history, at_ms) = match at {
            When::Now(at_ms) => return self.instant(target, query, at_ms).await,
            When::Past(history, at_ms) => (history, at_ms),
        };
        let cell = {
            let mut ranges = history.ranges.lock();
            ranges.entry(query.to_string()).or_default().clone()
        };
        let series = cell
            .get_or_init(|| async {
                self.range(target, query, history.from, history.to, history.step).await.map(Arc::new)
            })
            .await
            .clone()?;
        // Range points fall on `from + k × step`; a series without one there had no value then.
        let half = history.step / 2;
        Ok(series
            .iter()
            .filter_map(|s| {
                let i = s.points.partition_point(|(t, _)| *t + half < at_ms);
                let (t, v) = *s.points.get(i)?;
                (t <= at_ms + half).then(|| Sample { labels: s.labels.clone(), value: v })
            })
            .collect())
    }

    /// One number from a query at an instant, as a measurement.
    async fn value(&self, target: &Target, query: &str, reduce: Option<Reduce>, at: When<'_>) -> Measurement {
        match self.samples(target, query, at).await {
            Ok(samples) => one(samples, reduce),
            Err(e) => Measurement::Error(e),
        }
    }

    /// The error-budget burn rate: over each window, the share of bad events divided by the share the
    /// objective allows; the value is the smallest, so that it exceeds a threshold only when every window
    /// burns that fast (the multi-window rule of the SRE workbook). In the queries, `{{window}}` is the
    /// window measured.
    async fn burn_rate(
        &self,
        target: &Target,
        slo: &Slo,
        reduce: Option<Reduce>,
        cx: &MeasureContext<'_>,
        at: When<'_>,
    ) -> Measurement {
        let allowed = 1.0 - slo.objective / 100.0;
        let mut slowest: Option<f64> = None;
        for window in &slo.windows {
            let mut values = cx.values.clone();
            values.insert("window".into(), window.value.to_string());
            let good = self.value(target, &sluice_plan::render(&slo.good.value, &values), reduce, at).await;
            let total = self.value(target, &sluice_plan::render(&slo.total.value, &values), reduce, at).await;
            let (good, total) = match (good, total) {
                (Measurement::Value(g), Measurement::Value(t)) => (g, t),
                (Measurement::Error(e), _) | (_, Measurement::Error(e)) => return Measurement::Error(e),
                _ => return Measurement::Empty,
            };
            if total.is_nan() || total <= 0.0 {
                // No traffic in the window: nothing burned, nothing known.
                return Measurement::Empty;
            }
            let burn = (1.0 - good / total) / allowed;
            slowest = Some(slowest.map_or(burn, |s| s.min(burn)));
        }
        slowest.map_or(Measurement::Empty, Measurement::Value)
    }
}

#[async_trait::async_trait]
impl crate::Source for Prometheus {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn keys(&self) -> &'static [&'static str] {
        &["query", "slo"]
    }

    fn hint(&self) -> &'static str {
        "query: PROMQL"
    }

    fn supports(&self) -> Supports {
        Supports { baseline: true, ..Supports::default() }
    }

    fn check_config(&self, check: &Check, _trigger: bool, at: Location, report: &mut Report<'_>) {
        let Some(c) = report.parse_block::<PrometheusCheck>(&check.block, at) else { return };
        if report.plan().analysis.settings_of(KIND).is_none() {
            report.error(
                at,
                "",
                "a prometheus check needs the server to ask: add `analysis.prometheus: {url: http://…}` (or `url_env: SLUICE_SECRET_…`)",
            );
        }
        match (&c.query, &c.slo) {
            (Some(q), None) => {
                report.templates(q.referenced, "query", &q.value, &[]);
                promql(report, q, "query");
            }
            (None, Some(slo)) => {
                if !(0.0 < slo.value.objective && slo.value.objective < 100.0) {
                    report.error(slo.referenced, "slo.objective", "an objective is a percentage between 0 and 100, e.g. 99.9");
                }
                if slo.value.windows.is_empty() {
                    report.error(slo.referenced, "slo.windows", "needs at least one window, e.g. [5m, 1h]");
                }
                // `{{window}}` is each window in turn, and means nothing elsewhere.
                let (good, total) = (&slo.value.good, &slo.value.total);
                report.templates(good.referenced, "slo.good", &good.value, &["window"]);
                report.templates(total.referenced, "slo.total", &total.value, &["window"]);
                promql(report, good, "slo.good");
                promql(report, total, "slo.total");
            }
            (Some(_), Some(_)) => report.error(at, "", "give `query` or `slo`, not both"),
            (None, None) => report.error(at, "", "a prometheus check needs a `query` (or an `slo`)"),
        }
    }

    fn check_settings(&self, settings: &Spanned<Node>, report: &mut Report<'_>) {
        let Some(e) = report.parse::<Settings>(settings, "") else { return };
        let loc = settings.referenced;
        report.url(loc, e.url.as_ref(), e.url_env.as_ref());
        match (&e.bearer_env, &e.basic_env) {
            (Some(b), Some(_)) => report.error(b.referenced, "bearer_env", "give `bearer_env` or `basic_env`, not both"),
            (Some(v), None) => report.secret_env(v.referenced, "bearer_env", &v.value),
            (None, Some(v)) => report.secret_env(v.referenced, "basic_env", &v.value),
            (None, None) => {}
        }
        report.headers("headers", &e.headers, &[]);
        for (name, value) in &e.headers {
            if name.eq_ignore_ascii_case("authorization") && (e.bearer_env.is_some() || e.basic_env.is_some()) {
                report.error(value.referenced, &format!("headers.{name}"), "`bearer_env`/`basic_env` set `Authorization` already");
            }
        }
    }

    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement {
        match PrometheusCheck::of(check) {
            Ok(config) => self.measure_at(&config, check, cx, When::Now(cx.now)).await,
            Err(e) => Measurement::Error(e),
        }
    }

    /// The average of the check's value at every analysis interval of its `baseline.window` before the
    /// rollout's start (a range query, one point per interval).
    async fn baseline(&self, check: &Check, cx: &MeasureContext<'_>) -> Result<f64, String> {
        let window = check.baseline.as_ref().ok_or("the check has no `baseline`")?.value.window.value;
        let config = PrometheusCheck::of(check)?;
        let step = (cx.plan.analysis.interval.value.0.as_millis() as u64).max(1000);
        let to = cx.started_at;
        let from = to.saturating_sub(window.0.as_millis() as u64);
        let history = History::new(from, to, step);
        let (mut sum, mut n) = (0.0, 0u64);
        let mut at = from;
        while at <= to {
            match self.measure_at(&config, check, &MeasureContext { now: at, ..*cx }, When::Past(&history, at)).await {
                Measurement::Value(v) if v.is_finite() => {
                    sum += v;
                    n += 1;
                }
                Measurement::Error(e) => return Err(e),
                _ => {}
            }
            at += step;
        }
        if n == 0 {
            return Err(format!("the query had no value in the {window} before the start: nothing to compare with"));
        }
        Ok(sum / n as f64)
    }
}

impl Prometheus {
    /// The check's value at `cx.now` in the past, read from `history` (a range query per distinct query,
    /// asked on first use): what `sluice simulate --prometheus` replays.
    pub async fn replay(&self, check: &Check, cx: &MeasureContext<'_>, history: &History) -> Measurement {
        match PrometheusCheck::of(check) {
            Ok(config) => self.measure_at(&config, check, cx, When::Past(history, cx.now)).await,
            Err(e) => Measurement::Error(e),
        }
    }

    async fn measure_at(
        &self,
        config: &PrometheusCheck,
        check: &Check,
        cx: &MeasureContext<'_>,
        at: When<'_>,
    ) -> Measurement {
        let target = match self.endpoint(cx) {
            Ok(e) => e,
            Err(e) => return Measurement::Error(e),
        };
        let timeout = check.timeout.as_ref().map(|t| t.value.0).or(target.timeout).unwrap_or(DEFAULT_TIMEOUT);
        let measured = async {
            match (&config.slo, &config.query) {
                (Some(slo), _) => self.burn_rate(&target, &slo.value, config.reduce, cx, at).await,
                (None, Some(q)) => {
                    self.value(&target, &sluice_plan::render(&q.value, cx.values), config.reduce, at).await
                }
                (None, None) => Measurement::Error("a prometheus check needs a `query` or an `slo`".into()),
            }
        };
        match tokio::time::timeout(timeout, measured).await {
            Ok(Measurement::Error(e)) => Measurement::Error(target.redactor.redact(&e)),
            Ok(m) => m,
            Err(_) => Measurement::Error(format!("Prometheus gave no answer within the timeout of {timeout:?}")),
        }
    }
}

/// When a query is evaluated: at an instant now asked, or at an instant of [`History`].
#[derive(Clone, Copy)]
enum When<'a> {
    Now(u64),
    Past(&'a History, u64),
}

/// Past answers of Prometheus over `[from, to]` at `step` (ms): each distinct query asked once, as a range
/// query, then read at any instant of it. Baselines and replays read history this way rather than with
/// an instant query per point.
#[derive(Debug)]
pub struct History {
    from: u64,
    to: u64,
    step: u64,
    ranges: Mutex<HashMap<String, Arc<Range>>>,
}

impl History {
    /// History from `from` to `to` (ms since the epoch) at `step` (ms, at least 1 s).
    pub fn new(from: u64, to: u64, step: u64) -> History {
        History { from, to, step: step.max(1000), ranges: Mutex::new(HashMap::new()) }
    }
}

/// A range query's answer, asked once by whichever check needs it first.
type Range = tokio::sync::OnceCell<Result<Arc<Vec<Series>>, String>>;

/// One series of a range query.
#[derive(Debug)]
struct Series {
    labels: BTreeMap<String, String>,
    points: Vec<(u64, f64)>,
}

/// Where and how to ask one plan's Prometheus.
struct Target {
    base: String,
    auth: Option<Auth>,
    headers: Vec<(String, String)>,
    timeout: Option<Duration>,
    redactor: Redactor,
}

enum Auth {
    Bearer(String),
    Basic(String, String),
}

impl Target {
    /// A GET of `/api/v1/{path}` with the credentials and headers.
    fn request(&self, http: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        let mut request = http.get(format!("{}/api/v1/{path}", self.base));
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        match &self.auth {
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
            Some(Auth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }
}

/// One series' value.
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The single number of a query's samples.
fn one(samples: Vec<Sample>, reduce: Option<Reduce>) -> Measurement {
    match (samples.len(), reduce) {
        (0, _) => Measurement::Empty,
        (1, _) => Measurement::Value(samples[0].value),
        (n, None) => {
            let shown: Vec<String> = samples.iter().take(3).map(|s| labels(&s.labels)).collect();
            let more = if n > 3 { format!(" and {} more", n - 3) } else { String::new() };
            Measurement::Error(format!(
                "the query returned {n} series ({}{more}): aggregate it, or say how to combine them with `reduce: max|min|sum|avg`",
                shown.join(", ")
            ))
        }
        (n, Some(r)) => {
            let values = samples.iter().map(|s| s.value);
            Measurement::Value(match r {
                Reduce::Max => values.fold(f64::NEG_INFINITY, f64::max),
                Reduce::Min => values.fold(f64::INFINITY, f64::min),
                Reduce::Sum => values.sum(),
                Reduce::Avg => values.sum::<f64>() / n as f64,
            })
        }
    }
}

fn labels(l: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Prometheus' time parameter: seconds with milliseconds.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Prometheus writes numbers as strings: `"1.5"`, `"NaN"`, `"+Inf"`.
fn number(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        t => t.parse().map_err(|_| format!("`{t}` is not a number")),
    }
}

/// A transport error without its URL (which may hold credentials from a secret).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the body broke off"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut deepest = None;
    while let Some(s) = source {
        deepest = Some(s.to_string());
        source = s.source();
    }
    match deepest {
        Some(d) => format!("{kind}: {d}"),
        None => kind.to_string(),
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct MatrixSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// A PromQL query parses (a real PromQL parser, templates filled with sample values): a syntax error is
/// found by `plan check`, with the parser's words, rather than as a source error at the first tick.
fn promql(report: &mut Report<'_>, q: &Spanned<String>, key: &str) {
    let mut sample: BTreeMap<String, String> =
        report.plan().vars.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    for (name, value) in
        [("flag", "f"), ("ramped", "on"), ("base", "off"), ("phase", "1"), ("percent", "10"), ("interval", "1m"), ("window", "5m")]
    {
        sample.insert(name.into(), value.into());
    }
    let query = sluice_plan::render(&q.value, &sample);
    if let Err(e) = promql_parser::parser::parse(&query) {
        report.error(q.referenced, key, format!("the PromQL does not parse: {e}"));
    }
}
