//! The `json` source: a number read from a JSON document over HTTP, at a JSON pointer — a service's own
//! stats endpoint (`/stats` → `/queue/depth`), a feature store's health, anything that answers JSON. Each
//! tick GETs the URL (templates filled, headers text or secrets), within the check's `timeout` (default
//! 10 s), and reads at most 1 MiB. The value at the pointer is a number, or text that parses as one;
//! nothing there is no data (inconclusive, or 0 with `on_empty: zero`); an error answer, a body that is not
//! JSON, or a value that is not a number is a source error.
//!
//! ```yaml
//! gates:
//!   - name: queue-depth
//!     json: { url: 'http://queue.internal/stats', pointer: /queues/checkout/depth }
//!     below: 1000
//! ```
//!
//! This whole plug-in is this file and its line in `sources/mod.rs`: the plan format knows nothing of it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_engine::Measurement;
use sluice_plan::model::{Check, EnvValue, Location, Spanned};
use sluice_plan::Report;

use crate::{MeasureContext, Secrets};

/// Longest a request may take when the check sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest document read.
const MAX_BODY_BYTES: usize = 1 << 20;

/// A `json` check's own keys: `json: {url, pointer, headers}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonCheck {
    /// Where and what to read.
    pub json: Spanned<Document>,
}

/// The document and the number in it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// The URL (templates allowed).
    pub url: Spanned<String>,
    /// The JSON pointer of the number (`/queues/checkout/depth`).
    pub pointer: Spanned<String>,
    /// Request headers: text (templates allowed) or a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<EnvValue>>,
}

/// The `json` source: one HTTP client.
pub struct Json {
    http: reqwest::Client,
    secrets: Secrets,
}

impl Json {
    /// Built from the server's configuration.
    pub fn new(config: &crate::Config) -> Json {
        Json {
            http: reqwest::Client::builder().no_proxy().build().expect("an HTTP client with defaults"),
            secrets: Secrets::new(config.secrets_dir.clone()),
        }
    }

    async fn read(&self, doc: &Document, cx: &MeasureContext<'_>, timeout: Duration) -> Measurement {
        let (headers, redactor) = match self.secrets.environment(&doc.headers, cx.values) {
            Ok(h) => h,
            Err(e) => return Measurement::Error(e),
        };
        let url = sluice_plan::render(&doc.url.value, cx.values);
        let mut request = self.http.get(&url).timeout(timeout);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let answer = async {
            let mut response = request.send().await.map_err(|e| {
                if e.is_timeout() {
                    format!("no answer within {timeout:?}")
                } else {
                    "the document cannot be reached".to_string()
                }
            })?;
            let status = response.status();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|_| "the body broke off".to_string())? {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(format!("the document is larger than {MAX_BODY_BYTES} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| format!("the body is not JSON: {e}"))
        };
        let document = match answer.await {
            Ok(d) => d,
            Err(e) => return Measurement::Error(redactor.redact(&e)),
        };
        let pointer = &doc.pointer.value;
        match document.pointer(pointer) {
            None | Some(serde_json::Value::Null) => Measurement::Empty,
            Some(serde_json::Value::Number(n)) => n.as_f64().map_or(Measurement::Empty, Measurement::Value),
            Some(serde_json::Value::String(s)) => match s.trim().parse::<f64>() {
                Ok(v) => Measurement::Value(v),
                Err(_) => Measurement::Error(format!("`{pointer}` is the text {s:?}, not a number")),
            },
            Some(other) => Measurement::Error(format!("`{pointer}` is {other}, not a number")),
        }
    }
}

#[async_trait::async_trait]
impl crate::Source for Json {
    fn kind(&self) -> &'static str {
        "json"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["json"]
    }

    fn hint(&self) -> &'static str {
        "json: {url, pointer}"
    }

    fn check_config(&self, check: &Check, _trigger: bool, at: Location, report: &mut Report<'_>) {
        let Some(c) = report.parse_block::<JsonCheck>(&check.block, at) else { return };
        let mut r = report.within("json");
        let doc = &c.json.value;
        r.url(c.json.referenced, Some(&doc.url), None);
        let pointer = &doc.pointer;
        if !pointer.value.starts_with('/') {
            r.error(
                pointer.referenced,
                "pointer",
                format!("`{}` is not a JSON pointer: it starts with `/` (`/queues/checkout/depth`)", pointer.value),
            );
        }
        r.headers("headers", &doc.headers, &[]);
    }

    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement {
        let config = match check.block.parse::<JsonCheck>(Location::UNKNOWN) {
            Ok(c) => c,
            Err(e) => return Measurement::Error(e.to_string()),
        };
        let timeout = check.timeout.as_ref().map_or(DEFAULT_TIMEOUT, |t| t.value.0);
        self.read(&config.json.value, cx, timeout).await
    }
}
