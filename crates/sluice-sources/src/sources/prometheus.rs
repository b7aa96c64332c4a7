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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use sluice_engine::Measurement;
use sluice_plan::model::{Check, Reduce, Slo, SourceKind};

use crate::{MeasureContext, Redactor, Secrets};

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

    /// The plan's Prometheus, and the redactor of a URL that came from a secret (it may hold credentials).
    fn endpoint(&self, cx: &MeasureContext<'_>) -> Result<(String, Redactor), String> {
        let e = cx.plan.analysis.prometheus.as_ref().ok_or("the plan has no `analysis.prometheus`")?;
        let mut redactor = Redactor::default();
        let url = match (&e.url, &e.url_env) {
            (Some(u), None) => sluice_plan::render(&u.value, cx.values),
            (None, Some(var)) => {
                let r = sluice_plan::model::SecretRef { secret_env: Some(var.value.clone()), secret_file: None };
                let url = self.secrets.resolve(&r)?;
                redactor.add(&url);
                url
            }
            _ => return Err("`analysis.prometheus` needs `url` or `url_env`".into()),
        };
        Ok((url.trim_end_matches('/').to_string(), redactor))
    }

    fn slots_of(&self, base: &str) -> Arc<tokio::sync::Semaphore> {
        let mut slots = self.slots.lock().expect("slots");
        slots
            .entry(base.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(SLOTS_PER_ENDPOINT)))
            .clone()
    }

    /// The samples of an instant query at `at_ms`.
    async fn instant(&self, base: &str, query: &str, at_ms: u64) -> Result<Vec<Sample>, String> {
        let slots = self.slots_of(base);
        let _slot = slots.acquire().await.map_err(|_| "the endpoint's slots are closed".to_string())?;
        let time = format!("{}.{:03}", at_ms / 1000, at_ms % 1000);
        let mut response = self
            .http
            .get(format!("{base}/api/v1/query"))
            .query(&[("query", query), ("time", time.as_str())])
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
        let data = answer.data.ok_or("Prometheus answered success with no data")?;
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

    /// One number from an instant query, as a measurement.
    async fn value(&self, base: &str, query: &str, reduce: Option<Reduce>, at_ms: u64) -> Measurement {
        match self.instant(base, query, at_ms).await {
            Ok(samples) => one(samples, reduce),
            Err(e) => Measurement::Error(e),
        }
    }

    /// The error-budget burn rate: over each window, the share of bad events divided by the share the
    /// objective allows; the value is the smallest, so that it exceeds a threshold only when every window
    /// burns that fast (the multi-window rule of the SRE workbook). In the queries, `{{window}}` is the
    /// window measured.
    async fn burn_rate(&self, base: &str, slo: &Slo, reduce: Option<Reduce>, cx: &MeasureContext<'_>) -> Measurement {
        let allowed = 1.0 - slo.objective / 100.0;
        let mut slowest: Option<f64> = None;
        for window in &slo.windows {
            let mut values = cx.values.clone();
            values.insert("window".into(), window.value.to_string());
            let good = self.value(base, &sluice_plan::render(&slo.good.value, &values), reduce, cx.now).await;
            let total = self.value(base, &sluice_plan::render(&slo.total.value, &values), reduce, cx.now).await;
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
    fn kind(&self) -> SourceKind {
        SourceKind::Prometheus
    }

    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement {
        let (base, redactor) = match self.endpoint(cx) {
            Ok(e) => e,
            Err(e) => return Measurement::Error(e),
        };
        let timeout = check.timeout.as_ref().map_or(DEFAULT_TIMEOUT, |t| t.value.0);
        let measured = async {
            match (&check.slo, &check.query) {
                (Some(slo), _) => self.burn_rate(&base, &slo.value, check.reduce, cx).await,
                (None, Some(q)) => {
                    self.value(&base, &sluice_plan::render(&q.value, cx.values), check.reduce, cx.now).await
                }
                (None, None) => Measurement::Error("a prometheus check needs a `query` or an `slo`".into()),
            }
        };
        match tokio::time::timeout(timeout, measured).await {
            Ok(Measurement::Error(e)) => Measurement::Error(redactor.redact(&e)),
            Ok(m) => m,
            Err(_) => Measurement::Error(format!("Prometheus gave no answer within the timeout of {timeout:?}")),
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
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}
