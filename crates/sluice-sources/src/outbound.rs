//! Outbound HTTP calls of actions and notifiers: a JSON body, signed with the plan's secret
//! (`Sluice-Signature: t=UNIX_SECONDS,v1=HEX`, HEX the HMAC-SHA256 of `"{t}.{body}"`), an
//! `Idempotency-Key` that is the same on every attempt, a timeout per attempt, and retries with
//! exponential backoff and full jitter. Each attempt is recorded (time, target, status, duration,
//! error) so that decisions and the audit log can show what was tried. A target is shown as its
//! origin only (`https://hooks.slack.com`): the path of a chat webhook is its secret.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::Redactor;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "Sluice-Signature";
/// Largest answer read from a receiver (its start is kept as the error when it fails).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The signature of `body` sent at `t` (Unix seconds) with `secret`: the header's value.
///
/// ```
/// let v = sluice_sources::outbound::signature("whsec-test", 1_700_000_000, b"{}");
/// assert!(v.starts_with("t=1700000000,v1="));
/// assert_eq!(v.len(), "t=1700000000,v1=".len() + 64);
/// ```
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is a valid signature of `body` with `secret`, at most `tolerance` from `now` (Unix
/// seconds): what a receiver checks. Compares in constant time.
///
/// ```
/// use sluice_sources::outbound::{signature, verify};
/// let header = signature("whsec-test", 1_700_000_000, b"{\"a\":1}");
/// assert!(verify("whsec-test", &header, b"{\"a\":1}", 1_700_000_100, 300));
/// assert!(!verify("whsec-test", &header, b"{\"a\":2}", 1_700_000_100, 300));
/// assert!(!verify("whsec-test", &header, b"{\"a\":1}", 1_700_001_000, 300), "too old");
/// ```
pub fn verify(secret: &str, header: &str, body: &[u8], now: u64, tolerance: u64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<u64>().ok(),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    if t.abs_diff(now) > tolerance {
        return false;
    }
    let Ok(given) = hex::decode(v1) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // The MAC's own comparison takes the same time however much of a guess is right.
    mac.verify_slice(&given).is_ok()
}

/// One call to make.
#[derive(Debug, Clone)]
pub struct Call {
    /// `POST`, `PUT`, …
    pub method: reqwest::Method,
    /// Where.
    pub url: String,
    /// Extra headers (the plan's).
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
    /// Signs the body when given.
    pub secret: Option<String>,
    /// Sent as `Idempotency-Key` when given: the same on every attempt.
    pub idempotency_key: Option<String>,
    /// Longest one attempt may take.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// The first retry's wait before jitter; each next one doubles (capped at 10 minutes).
    pub backoff: Duration,
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started (ms since the Unix epoch).
    pub at: u64,
    /// Where it went: the URL's origin only.
    pub target: String,
    /// The receiver's status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How long it took (ms).
    pub duration_ms: u64,
    /// What went wrong, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a call came to: success on a 2xx, and every attempt made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The receiver answered 2xx.
    pub ok: bool,
    /// Each attempt, in order.
    pub attempts: Vec<Attempt>,
    /// The start of the last answer's body (redacted).
    pub answer: String,
}

impl Delivery {
    /// Why it failed, when it did: transient when the last attempt could not reach the receiver, timed out
    /// or was answered 408, 429 or 5xx; permanent for any other answer.
    ///
    /// ```
    /// use sluice_sources::outbound::{Attempt, Delivery};
    /// let attempt = |status| Attempt { at: 0, target: "http://127.0.0.1:1".into(), status, duration_ms: 1, error: Some("no".into()) };
    /// let d = Delivery { ok: false, attempts: vec![attempt(Some(404))], answer: String::new() };
    /// assert!(!d.failure().unwrap().is_transient());
    /// let d = Delivery { ok: false, attempts: vec![attempt(None)], answer: String::new() };
    /// assert!(d.failure().unwrap().is_transient());
    /// ```
    pub fn failure(&self) -> Option<crate::Failure> {
        if self.ok {
            return None;
        }
        let message = self.summary();
        Some(match self.attempts.last().and_then(|a| a.status) {
            Some(status) => crate::Failure::of_status(status, message),
            None => crate::Failure::transient(message),
        })
    }

    /// One line: `200 after 2 attempts` or the last error.
    pub fn summary(&self) -> String {
        let n = self.attempts.len();
        let tries = if n == 1 { "1 attempt".to_string() } else { format!("{n} attempts") };
        match self.attempts.last() {
            Some(Attempt { status: Some(s), error: None, .. }) => format!("{s} after {tries}"),
            Some(Attempt { error: Some(e), .. }) => format!("{e} (after {tries})"),
            _ => "not attempted".into(),
        }
    }
}

/// The origin of `url` (`scheme://host:port`), for records: never its path or query.
///
/// ```
/// assert_eq!(sluice_sources::outbound::origin("https://hooks.slack.com/services/T0/B0/XYZ"), "https://hooks.slack.com");
/// assert_eq!(sluice_sources::outbound::origin("not a url"), "(not a URL)");
/// ```
pub fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// The client of outbound calls. It follows no redirect: a 3xx is a failure, never a success reached by
/// replaying a POST as a bodiless GET (a login page behind an SSO proxy answers 200), and a plan's secret
/// headers never go to another host.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client with defaults")
}

/// Where a call goes and what signs it: the URL as given (`url`) or read from the secret `url_env`, and
/// the signing secret; each secret read is added to `redactor`.
pub fn target(
    secrets: &crate::Secrets,
    url: Option<String>,
    url_env: Option<&str>,
    secret: Option<&sluice_plan::model::SecretRef>,
    redactor: &mut Redactor,
) -> Result<(String, Option<String>), String> {
    let url = match (url, url_env) {
        (Some(u), _) => u,
        (None, Some(var)) => {
            let r = sluice_plan::model::SecretRef { secret_env: Some(var.to_string()), secret_file: None };
            let url = secrets.resolve(&r)?;
            redactor.add(&url);
            url
        }
        (None, None) => return Err("no `url` to call".into()),
    };
    let secret = match secret {
        Some(r) => {
            let s = secrets.resolve(r)?;
            redactor.add(&s);
            Some(s)
        }
        None => None,
    };
    Ok((url, secret))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Makes `call`, retrying while the receiver is unreachable, times out, answers 5xx, 408 or 429; another
/// 4xx is final (sending it again would not change the answer). Errors pass through `redactor`.
pub async fn send(http: &reqwest::Client, call: &Call, redactor: &Redactor) -> Delivery {
    let target = origin(&call.url);
    let mut attempts = Vec::new();
    let mut answer = String::new();
    for attempt in 0..=call.retries {
        if attempt > 0 {
            // Jittered between half and one and a half times the doubled base (at most 10 minutes), so that
            // receivers coming back up are not hit by every sender at once.
            let base = call.backoff.saturating_mul(2u32.saturating_pow(attempt - 1));
            tokio::time::sleep(base.mul_f64(0.5 + fastrand::f64()).min(Duration::from_secs(600))).await;
        }
        let at = unix_ms();
        let began = Instant::now();
        let mut request = http
            .request(call.method.clone(), &call.url)
            .timeout(call.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, concat!("sluice/", env!("CARGO_PKG_VERSION")));
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        if let Some(key) = &call.idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(secret) = &call.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, at / 1000, &call.body));
        }
        let (status, error, retry) = match request.body(call.body.clone()).send().await {
            Ok(r) => {
                let status = r.status();
                // Redacted whole, then cut: a secret across the cut would otherwise keep its start.
                let text = redactor.redact(&read_start(r).await);
                answer = text.chars().take(500).collect();
                if status.is_success() && !status.is_redirection() {
                    (Some(status.as_u16()), None, false)
                } else {
                    let again = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
                    let said = answer.trim();
                    let error = if said.is_empty() { format!("{status}") } else { format!("{status}: {said}") };
                    (Some(status.as_u16()), Some(error), again)
                }
            }
            Err(e) => {
                let why = if e.is_timeout() {
                    format!("no answer within {:?}", call.timeout)
                } else if e.is_connect() {
                    "cannot connect".to_string()
                } else {
                    // reqwest's message names the URL, which may be a secret.
                    "the request failed".to_string()
                };
                (None, Some(why), true)
            }
        };
        let done = error.is_none() || !retry;
        attempts.push(Attempt {
            at,
            target: target.clone(),
            status,
            duration_ms: began.elapsed().as_millis() as u64,
            error: error.map(|e| redactor.redact(&e)),
        });
        if done {
            break;
        }
    }
    let ok = attempts.last().is_some_and(|a| a.error.is_none());
    Delivery { ok, attempts, answer }
}

async fn read_start(mut r: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ANSWER_BYTES {
            body.truncate(MAX_ANSWER_BYTES);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// `values` as text that can stand inside a JSON string: quotes, backslashes and control characters
/// escaped, so that a reason with a quote in it cannot break a templated body.
///
/// ```
/// let mut v = std::collections::BTreeMap::new();
/// v.insert("reason".to_string(), "trigger \"errors\" fired".to_string());
/// let body = sluice_plan::render(r#"{"why": "{{reason}}"}"#, &sluice_sources::outbound::json_escaped(&v));
/// let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
/// assert_eq!(parsed["why"], "trigger \"errors\" fired");
/// ```
pub fn json_escaped(values: &std::collections::BTreeMap<String, String>) -> std::collections::BTreeMap<String, String> {
    values
        .iter()
        .map(|(k, v)| {
            let quoted = serde_json::to_string(v).expect("a string serializes");
            (k.clone(), quoted[1..quoted.len() - 1].to_string())
        })
        .collect()
}
