//! Notifiers, one file each, each behind [`Notifier`](crate::Notifier). Each delivers once per call and
//! does not retry: the notification queue retries a failed delivery with its own backoff, so a chat
//! outage holds nothing up.

pub mod alertmanager;
pub mod log;
pub mod slack;
pub mod webhook;

use std::time::Duration;

use sluice_plan::model::Endpoint;

use crate::outbound::Call;
use crate::{Redactor, Secrets};

/// Longest one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Adds every notifier of this folder: one line each.
pub(crate) fn register(registry: &mut crate::Registry, config: &crate::Config) {
    registry.add_notifier(log::Log);
    registry.add_notifier(slack::Slack::new(config));
    registry.add_notifier(webhook::Webhook::new(config));
    registry.add_notifier(alertmanager::Alertmanager::new(config));
}

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

/// Delivers `call`: `Ok` on a 2xx, else what went wrong (redacted).
async fn deliver(http: &reqwest::Client, call: Result<(Call, Redactor), String>) -> Result<(), String> {
    let (call, redactor) = call?;
    let delivery = crate::outbound::send(http, &call, &redactor).await;
    if delivery.ok {
        Ok(())
    } else {
        Err(delivery.summary())
    }
}

/// `ms` since the Unix epoch as RFC 3339 (`2026-11-26T17:55:00Z`), for people and for Alertmanager.
///
/// ```
/// assert_eq!(sluice_sources::notifiers::rfc3339(0), "1970-01-01T00:00:00Z");
/// assert_eq!(sluice_sources::notifiers::rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
/// ```
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    match ms % 1000 {
        0 => format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
        frac => format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}Z"),
    }
}
