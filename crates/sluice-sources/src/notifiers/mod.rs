//! Notifiers, one file each, each behind [`Notifier`](crate::Notifier): one line each below. Each delivers
//! once per call and does not retry: the notification queue retries a transient failure with its own
//! backoff, so a chat outage holds nothing up, and gives a permanent one up at once.

plugins! { add_notifier:
    alertmanager => alertmanager::Alertmanager::new,
    log => |_: &crate::Config| log::Log,
    slack => slack::Slack::new,
    webhook => webhook::Webhook::new,
}

use std::time::Duration;

use serde::Deserialize;
use sluice_plan::model::{Location, SecretRef, Spanned};
use sluice_plan::Report;

use crate::outbound::Call;
use crate::{Failure, Redactor, Secrets};

/// A URL, given directly or through an environment variable (for secrets).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The URL.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// The environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<Spanned<String>>,
    /// `webhook` notifiers: signs each request as a webhook action does (`Sluice-Signature`).
    #[serde(default)]
    pub secret: Option<Spanned<SecretRef>>,
}

impl Endpoint {
    /// The endpoint under `kind` in a notifier's keys (`slack: {url_env: …}`).
    pub fn of(notifier: &sluice_plan::model::Notifier, kind: &str) -> Result<Endpoint, Failure> {
        let node = notifier.block.get(kind).ok_or_else(|| Failure::permanent(format!("not a {kind} notifier")))?;
        sluice_plan::block::parse(node).map_err(|e| Failure::permanent(format!("`{kind}`: {e}")))
    }

    /// Checks a notifier's keys: exactly `kind: {url | url_env, secret?}`.
    pub fn check(notifier: &sluice_plan::model::Notifier, kind: &str, at: Location, report: &mut Report<'_>) {
        for k in notifier.block.keys().filter(|k| k.value != kind) {
            report.error(
                k.referenced,
                &k.value,
                format!("unknown field `{}`: a notifier is `{kind}: {{url | url_env, secret}}` and `on`", k.value),
            );
        }
        let Some(node) = notifier.block.get(kind) else { return };
        let Some(e) = report.parse::<Endpoint>(node, kind) else { return };
        let mut r = report.within(kind);
        match (&e.url, &e.url_env) {
            (Some(_), Some(_)) => r.error(at, "", "give `url` or `url_env`, not both"),
            (None, None) => r.error(at, "", "needs `url` or `url_env` (an environment variable holding the URL)"),
            (None, Some(var)) => r.secret_env(var.referenced, "url_env", &var.value),
            _ => {}
        }
        if let Some(secret) = &e.secret {
            r.secret_ref(secret.referenced, "secret", &secret.value);
        }
    }
}

/// Longest one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP client every notifier uses.
fn client() -> reqwest::Client {
    crate::outbound::client()
}

/// A POST of `body` to `endpoint` (its URL given, or read from a secret), signed when it names a
/// secret, and the redactor of the secrets in it.
fn call(
    secrets: &Secrets,
    endpoint: &Endpoint,
    path: &str,
    body: Vec<u8>,
    key: &str,
) -> Result<(Call, Redactor), String> {
    let mut redactor = Redactor::default();
    let (url, secret) = crate::outbound::target(
        secrets,
        endpoint.url.as_ref().map(|u| u.value.clone()),
        endpoint.url_env.as_ref().map(|v| v.value.as_str()),
        endpoint.secret.as_ref().map(|s| &s.value),
        &mut redactor,
    )?;
    let url = if path.is_empty() { url } else { format!("{}{path}", url.trim_end_matches('/')) };
    let call = Call {
        method: reqwest::Method::POST,
        url,
        headers: Vec::new(),
        body,
        secret,
        idempotency_key: Some(key.to_string()),
        timeout: TIMEOUT,
        retries: 0,
        backoff: Duration::ZERO,
    };
    Ok((call, redactor))
}

/// Delivers `call`: `Ok` on a 2xx, else what went wrong (redacted) and whether trying later may help.
async fn deliver(http: &reqwest::Client, call: Result<(Call, Redactor), String>) -> Result<(), Failure> {
    let (call, redactor) = call.map_err(Failure::permanent)?;
    let delivery = crate::outbound::send(http, &call, &redactor).await;
    match delivery.failure() {
        None => Ok(()),
        Some(f) => Err(f),
    }
}

/// `ms` since the Unix epoch as RFC 3339 (`2026-11-26T17:55:00Z`), for people and for Alertmanager.
///
/// ```
/// assert_eq!(sluice_sources::notifiers::rfc3339(0), "1970-01-01T00:00:00Z");
/// assert_eq!(sluice_sources::notifiers::rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
/// ```
pub fn rfc3339(ms: u64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default();
    let digits = if ms.is_multiple_of(1000) { chrono::SecondsFormat::Secs } else { chrono::SecondsFormat::Millis };
    at.to_rfc3339_opts(digits, true)
}
