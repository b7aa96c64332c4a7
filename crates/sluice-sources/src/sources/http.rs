//! The `http` source: golden probes. Each tick runs every request of a probe once, concurrently, each within
//! the check's `timeout`, and checks its answer against its expectations (status, body text, JSON pointers
//! present, not null or equal to a value). The value is either `success_ratio`, the share of this tick's
//! requests that met every expectation, or `consecutive_failures`, the longest run of failed answers of
//! one request across ticks (kept in memory: a restart starts the count again).
//!
//! An endpoint that is down, answers 5xx or times out is a failed request, not a source error: the probe
//! measures the endpoints, and that is what it found.

use std::collections::HashMap;
use parking_lot::Mutex;
use std::time::Duration;

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_engine::Measurement;
use sluice_plan::model::{Check, EnvValue, Location, Spanned};
use sluice_plan::Report;

use crate::{MeasureContext, Secrets};

/// An `http` check's own keys: `http: {url, expect, value}` or `http: {requests: […], value}`.
///
/// ```yaml
/// triggers:
///   - name: null-responses
///     http: { url: 'http://elite.internal/endpoints', expect: { json_not_null: [/endpoints/0/status] }, value: consecutive_failures }
///     above: 3
///     severity: hard
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// The golden probe.
    pub http: Spanned<Probe>,
}

/// A golden HTTP probe: one request (`url`, …) or a list of them (`requests`), each with expectations;
/// every request runs once a tick.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// The URL of a one-request probe (templates allowed).
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// `GET` by default.
    #[serde(default)]
    pub method: Option<String>,
    /// Request headers: text (templates allowed) or a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<EnvValue>>,
    /// Request body (templates allowed).
    #[serde(default)]
    pub body: Option<String>,
    /// What a good answer looks like (for `url`, and the default of every item of `requests`).
    #[serde(default)]
    pub expect: Expect,
    /// Several requests (e.g. every endpoint of a service), each as a one-request probe.
    #[serde(default)]
    pub requests: Vec<Spanned<ProbeRequest>>,
    /// `success_ratio` or `consecutive_failures`.
    pub value: ProbeValue,
}

/// One request of a probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// The URL (templates allowed).
    pub url: Spanned<String>,
    /// `GET` by default.
    #[serde(default)]
    pub method: Option<String>,
    /// Request headers: text or a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<EnvValue>>,
    /// Request body.
    #[serde(default)]
    pub body: Option<String>,
    /// Its expectations; the probe's `expect` when absent.
    #[serde(default)]
    pub expect: Option<Expect>,
}

impl Probe {
    /// Every request of the probe, each with its expectations.
    pub fn all_requests(&self) -> Vec<ProbeRequest> {
        let one = self.url.as_ref().map(|url| ProbeRequest {
            url: url.clone(),
            method: self.method.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            expect: Some(self.expect.clone()),
        });
        one.into_iter()
            .chain(self.requests.iter().map(|r| {
                let mut r = r.value.clone();
                r.expect.get_or_insert_with(|| self.expect.clone());
                r
            }))
            .collect()
    }
}

/// Expectations of a probe's answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The status code (any 2xx when absent).
    #[serde(default)]
    pub status: Option<u16>,
    /// Text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// JSON pointers (`/endpoints/0/status`) that must be present, null or not.
    #[serde(default)]
    pub json_present: Vec<String>,
    /// JSON pointers that must be present and not null.
    #[serde(default)]
    pub json_not_null: Vec<String>,
    /// JSON pointers and the value each must equal (numbers by value: 1 equals 1.0).
    #[serde(default)]
    pub json_equals: BTreeMap<String, serde_json::Value>,
}

/// What a probe's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeValue {
    /// Good answers over all, 0..1, over the window.
    SuccessRatio,
    /// Bad answers in a row.
    ConsecutiveFailures,
}


/// Longest a request may take when the check sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read; the rest is not needed to judge it.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The `http` source: one HTTP client, and each request's failures in a row.
pub struct Http {
    http: reqwest::Client,
    secrets: Secrets,
    /// (rollout, check, request) → failed answers in a row.
    failures: Mutex<HashMap<(String, String, usize), u32>>,
}

impl Http {
    /// Built from the server's configuration.
    pub fn new(config: &crate::Config) -> Http {
        Http {
            http: reqwest::Client::builder().no_proxy().build().expect("an HTTP client with defaults"),
            secrets: Secrets::new(config.secrets_dir.clone()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Sends one request; `Ok(())` when the answer met every expectation, else what was wrong.
    async fn probe(&self, r: &ProbeRequest, cx: &MeasureContext<'_>, timeout: Duration) -> Result<(), String> {
        let answer = self.send(r, cx.values, timeout).await?;
        judge(answer.status, &answer.body, r.expect.as_ref().unwrap_or(&Expect::default()))
    }

    /// Sends one request of a probe or a golden suite, templates filled from `values`, and reads its
    /// answer (the first MiB of the body). Errors name no secret and no URL.
    pub async fn send(
        &self,
        r: &ProbeRequest,
        values: &std::collections::BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let (headers, redactor) = self.secrets.environment(&r.headers, values)?;
        let url = sluice_plan::render(&r.url.value, values);
        let method = reqwest::Method::from_bytes(r.method.as_deref().unwrap_or("GET").to_ascii_uppercase().as_bytes())
            .map_err(|_| "not an HTTP method".to_string())?;
        let mut request = self.http.request(method, &url).timeout(timeout);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        if let Some(body) = &r.body {
            request = request.body(sluice_plan::render(body, values));
        }
        let read = async {
            let mut response = request.send().await.map_err(|e| describe(&e))?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer { status, body })
        };
        read.await.map_err(|e: String| redactor.redact(&e))
    }
}

/// An endpoint's answer: its status and the start of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body (at most 1 MiB).
    pub body: Vec<u8>,
}

#[async_trait::async_trait]
impl crate::Source for Http {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["http"]
    }

    fn hint(&self) -> &'static str {
        "http: {url, expect, value}"
    }

    fn check_config(&self, check: &Check, _trigger: bool, at: Location, report: &mut Report<'_>) {
        let Some(c) = report.parse_block::<HttpCheck>(&check.block, at) else { return };
        let p = &c.http;
        match (&p.value.url, p.value.requests.is_empty()) {
            (Some(_), false) => report.error(p.referenced, "http", "give `url` (one request) or `requests: […]`, not both"),
            (None, true) => report.error(p.referenced, "http", "needs `url` (one request) or `requests: […]`"),
            _ => {}
        }
        for (i, r) in p.value.all_requests().iter().enumerate() {
            let at = if p.value.url.is_some() { "http".to_string() } else { format!("http.requests[{i}]") };
            report.templates(r.url.referenced, &format!("{at}.url"), &r.url.value, &[]);
            if let Some(m) = &r.method {
                if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].contains(&m.to_ascii_uppercase().as_str()) {
                    report.error(r.url.referenced, &format!("{at}.method"), format!("`{m}` is not an HTTP method"));
                }
            }
            report.headers(&format!("{at}.headers"), &r.headers, &[]);
            let expect = r.expect.clone().unwrap_or_default();
            let pointers = expect.json_present.iter().chain(expect.json_not_null.iter()).chain(expect.json_equals.keys());
            for ptr in pointers {
                if !ptr.is_empty() && !ptr.starts_with('/') {
                    report.error(
                        r.url.referenced,
                        &format!("{at}.expect"),
                        format!("`{ptr}` is not a JSON pointer: it starts with `/` (`/endpoints/0/status`)"),
                    );
                }
            }
        }
    }

    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement {
        let probe = match check.block.parse::<HttpCheck>(Location::UNKNOWN) {
            Ok(c) => c.http,
            Err(e) => return Measurement::Error(e.to_string()),
        };
        let requests = probe.value.all_requests();
        if requests.is_empty() {
            return Measurement::Error("the probe has no request".into());
        }
        let timeout = check.timeout.as_ref().map_or(DEFAULT_TIMEOUT, |t| t.value.0);
        let outcomes = futures_util::future::join_all(requests.iter().map(|r| self.probe(r, cx, timeout))).await;
        match probe.value.value {
            ProbeValue::SuccessRatio => {
                let good = outcomes.iter().filter(|o| o.is_ok()).count();
                Measurement::Value(good as f64 / outcomes.len() as f64)
            }
            ProbeValue::ConsecutiveFailures => {
                let mut failures = self.failures.lock();
                let mut longest = 0;
                for (i, outcome) in outcomes.iter().enumerate() {
                    let run = failures.entry((cx.rollout_id.to_string(), check.name.value.clone(), i)).or_insert(0);
                    *run = if outcome.is_ok() { 0 } else { *run + 1 };
                    longest = longest.max(*run);
                }
                Measurement::Value(f64::from(longest))
            }
        }
    }
}

/// Whether an answer meets `expect`: its status (any 2xx by default), the text its body contains, and the
/// JSON pointers that must be present, not null, or equal to a value.
///
/// ```
/// use sluice_sources::sources::http::{judge, Expect};
/// let expect = Expect { json_not_null: vec!["/status".into()], ..Expect::default() };
/// assert!(judge(200, br#"{"status": "up"}"#, &expect).is_ok());
/// assert_eq!(judge(200, br#"{"status": null}"#, &expect).unwrap_err(), "`/status` is null");
/// ```
pub fn judge(status: u16, body: &[u8], expect: &Expect) -> Result<(), String> {
    match expect.status {
        Some(want) if want != status => return Err(format!("status {status}, expected {want}")),
        None if !(200..300).contains(&status) => return Err(format!("status {status}")),
        _ => {}
    }
    if let Some(text) = &expect.body_contains {
        if !String::from_utf8_lossy(body).contains(text.as_str()) {
            return Err(format!("the body does not contain `{text}`"));
        }
    }
    let pointers =
        !expect.json_present.is_empty() || !expect.json_not_null.is_empty() || !expect.json_equals.is_empty();
    if !pointers {
        return Ok(());
    }
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_string())?;
    for ptr in &expect.json_present {
        if json.pointer(ptr).is_none() {
            return Err(format!("`{ptr}` is missing"));
        }
    }
    for ptr in &expect.json_not_null {
        match json.pointer(ptr) {
            None => return Err(format!("`{ptr}` is missing")),
            Some(serde_json::Value::Null) => return Err(format!("`{ptr}` is null")),
            Some(_) => {}
        }
    }
    for (ptr, want) in &expect.json_equals {
        let got = json.pointer(ptr).ok_or_else(|| format!("`{ptr}` is missing"))?;
        if !same(got, want) {
            return Err(format!("`{ptr}` is {got}, expected {want}"));
        }
    }
    Ok(())
}

/// JSON equality where numbers compare by value (1 equals 1.0).
pub fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// A transport error in a few words, without its URL (which may carry a token).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer within the timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "the request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expectations from JSON (a subset of what a plan's YAML says).
    fn expect(json: &str) -> Expect {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let mut e = Expect { status: v["status"].as_u64().map(|s| s as u16), ..Expect::default() };
        if let Some(m) = v["json_equals"].as_object() {
            e.json_equals = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>();
        }
        if let Some(l) = v["json_not_null"].as_array() {
            e.json_not_null = l.iter().map(|p| p.as_str().unwrap().to_string()).collect();
        }
        e
    }

    #[test]
    fn numbers_compare_by_value_and_null_is_not_present_enough() {
        let body = br#"{"n": 1, "status": null, "list": [1.0, "a"]}"#;
        assert!(judge(200, body, &expect(r#"{"json_equals": {"/n": 1.0, "/list": [1, "a"]}}"#)).is_ok());
        assert!(judge(200, body, &expect(r#"{"json_equals": {"/n": 2}}"#)).unwrap_err().contains("expected 2"));
        assert!(judge(200, body, &expect(r#"{"json_not_null": ["/status"]}"#)).unwrap_err().contains("null"));
        assert!(judge(503, body, &expect("{}")).unwrap_err().contains("503"));
        assert!(judge(404, body, &expect(r#"{"status": 404}"#)).is_ok());
    }
}
