//! The `webhook` action: calls a URL with a JSON body — the plan's `body` with its templates filled (each
//! value JSON-escaped, so a quote in a reason cannot break it), or the rollout as JSON — signed with the
//! plan's `secret`, with the effect's `Idempotency-Key` on every attempt, retried with backoff. A 2xx is
//! success.
//!
//! ```yaml
//! rollback:
//!   actions:
//!     - name: disable elite features
//!       webhook:
//!         url: http://recoveryos.internal/elite/config/disable
//!         body: '{"features": ["edge_ai"], "reason": "{{reason}}", "checks": {{checks}}}'
//!         secret: { secret_env: SLUICE_SECRET_RECOVERYOS_HOOK }
//!         retries: 5
//!       timeout: 10s
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_plan::model::{Action, EnvValue, Location, SecretRef, Spanned};
use sluice_plan::{Report, BUILTIN_TEMPLATES, WEBHOOK_TEMPLATES};

use crate::outbound::{self, Call};
use crate::{ActionContext, ActionOutcome, Secrets};

/// A `webhook` action's own keys: `webhook: {url, body, secret, headers, retries}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookAction {
    /// The call.
    pub webhook: Spanned<Spec>,
}

/// A webhook call: what a `webhook` action's key holds (and a confirm gate's `webhook`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The URL.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// The environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<Spanned<String>>,
    /// `POST` by default.
    #[serde(default)]
    pub method: Option<String>,
    /// JSON body (templates allowed, each value JSON-escaped); without it, the rollout as JSON.
    #[serde(default)]
    pub body: Option<Spanned<String>>,
    /// Signs each request: `Sluice-Signature: t=UNIX_SECONDS,v1=HEX`, HEX the HMAC-SHA256 of `"{t}.{body}"`
    /// with this secret.
    #[serde(default)]
    pub secret: Option<Spanned<SecretRef>>,
    /// Headers sent with each request: text (templates allowed), or a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<EnvValue>>,
    /// Attempts after the first when the receiver fails or does not answer (default 3, at most 10), with
    /// exponential backoff and jitter.
    #[serde(default)]
    pub retries: Option<Spanned<u32>>,
}

/// Headers Sluice sets itself.
pub const RESERVED_HEADERS: &[&str] = &["content-type", "content-length", "host", "idempotency-key", "sluice-signature"];

/// Longest one attempt may take when the action sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts after the first when the plan says nothing.
pub const DEFAULT_RETRIES: u32 = 3;

/// The `webhook` action.
pub struct Webhook {
    http: reqwest::Client,
    secrets: Secrets,
    backoff: Duration,
}

impl Webhook {
    /// Built from the server's configuration.
    pub fn new(config: &crate::Config) -> Webhook {
        Webhook {
            http: super::super::outbound::client(),
            secrets: Secrets::new(config.secrets_dir.clone()),
            backoff: config.retry_backoff.unwrap_or(Duration::from_secs(1)),
        }
    }

    /// The call `spec` makes in `cx`, and the redactor of the secrets in it.
    fn call(&self, spec: &Spec, action: &Action, cx: &ActionContext<'_>) -> Result<(Call, crate::Redactor), String> {
        let (headers, mut redactor) = self.secrets.environment(&spec.headers, cx.values)?;
        let (url, secret) = outbound::target(
            &self.secrets,
            spec.url.as_ref().map(|u| sluice_plan::render(&u.value, cx.values)),
            spec.url_env.as_ref().map(|v| v.value.as_str()),
            spec.secret.as_ref().map(|s| &s.value),
            &mut redactor,
        )?;
        let body = body(spec, cx)?;
        let method = spec.method.as_deref().unwrap_or("POST").to_ascii_uppercase();
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| format!("`{method}` is not an HTTP method"))?;
        let call = Call {
            method,
            url,
            headers,
            body,
            secret,
            idempotency_key: Some(cx.key.to_string()),
            timeout: action.timeout.as_ref().map_or(DEFAULT_TIMEOUT, |t| t.value.0),
            retries: spec.retries.as_ref().map_or(DEFAULT_RETRIES, |r| r.value.min(10)),
            backoff: self.backoff,
        };
        Ok((call, redactor))
    }
}

/// The body of a webhook: the plan's template filled, or the rollout's facts as JSON.
///
/// ```
/// use std::collections::BTreeMap;
/// let yaml = "name: p\nflag: f\nphases: [ { percent: 5 } ]\nrollback:\n  actions:\n    - webhook: { url: 'http://127.0.0.1:1/x', body: '{\"why\": \"{{reason}}\", \"at\": {{percent}}, \"checks\": {{checks}}}' }\n";
/// let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
/// let action = &plan.rollback.actions[0].value;
/// let spec = action.block.parse::<sluice_sources::actions::webhook::WebhookAction>(action.block.keys().next().unwrap().referenced).unwrap().webhook.value;
/// let values = BTreeMap::from([("reason".to_string(), "trigger \"errors\" fired".to_string()), ("percent".to_string(), "5".to_string())]);
/// let checks = serde_json::json!([{"check": "errors", "value": 0.2}]);
/// let cx = sluice_sources::ActionContext { rollout_id: "r1", plan: &plan, values: &values, key: "r1:3:0", checks: &checks };
/// let body: serde_json::Value = serde_json::from_slice(&sluice_sources::actions::webhook::body(&spec, &cx).unwrap()).unwrap();
/// assert_eq!(body["why"], "trigger \"errors\" fired");
/// assert_eq!(body["checks"][0]["value"], 0.2);
/// ```
pub fn body(spec: &Spec, cx: &ActionContext<'_>) -> Result<Vec<u8>, String> {
    match &spec.body {
        Some(template) => {
            let mut values = outbound::json_escaped(cx.values);
            values.insert("checks".into(), cx.checks.to_string());
            let text = sluice_plan::render(&template.value, &values);
            // Checked again here: a template can only be known JSON once filled with real values.
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| format!("the webhook body is not JSON once filled: {e}"))?;
            Ok(text.into_bytes())
        }
        None => {
            let v = |k: &str| cx.values.get(k).cloned().unwrap_or_default();
            let facts = serde_json::json!({
                "id": cx.rollout_id,
                "plan": v("plan"),
                "flag": v("flag"),
                "phase": v("phase").parse::<u64>().ok(),
                "percent": v("percent").parse::<u64>().ok(),
                "event": v("event"),
                "reason": v("reason"),
                "idempotency_key": cx.key,
                "checks": cx.checks,
            });
            Ok(serde_json::to_vec(&facts).expect("json"))
        }
    }
}

#[async_trait::async_trait]
impl crate::ActionRunner for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn hint(&self) -> &'static str {
        "webhook: {url: …}"
    }

    /// Always: every attempt carries the effect's `Idempotency-Key`.
    fn idempotent(&self, _action: &Action) -> bool {
        true
    }

    fn check_config(&self, action: &Action, at: Location, report: &mut Report<'_>) {
        let Some(a) = report.parse_block::<WebhookAction>(&action.block, at) else { return };
        let w = &a.webhook;
        let mut r = report.within("webhook");
        r.url(w.referenced, w.value.url.as_ref(), w.value.url_env.as_ref());
        if let Some(b) = &w.value.body {
            r.templates(b.referenced, "body", &b.value, WEBHOOK_TEMPLATES);
            // Filled with a stand-in for every value, the body must be JSON: a quote or comma out of place is
            // found now, not when a rollback calls the receiver. Numbers stand in for numbers, `[]` for the
            // checks, the plan's own values for its vars, and a bare word for text: so a text value left
            // outside quotes is caught too.
            let mut stand_in: BTreeMap<String, String> = BUILTIN_TEMPLATES
                .iter()
                .chain(WEBHOOK_TEMPLATES)
                .map(|n| {
                    let v = match *n {
                        "percent" | "phase" => "0",
                        "checks" => "[]",
                        _ => "text",
                    };
                    (n.to_string(), v.to_string())
                })
                .collect();
            for (k, v) in &r.plan().vars {
                let quoted = serde_json::to_string(&v.0).expect("a string serializes");
                stand_in.insert(k.clone(), quoted[1..quoted.len() - 1].to_string());
            }
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&sluice_plan::render(&b.value, &stand_in)) {
                r.error(b.referenced, "body", format!("not JSON once its templates are filled: {e} (a text value goes in quotes: \"{{{{reason}}}}\"; a number or `{{{{checks}}}}` does not)"));
            }
        }
        if let Some(m) = &w.value.method {
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                r.error(w.referenced, "method", format!("`{m}` is not one of GET, POST, PUT, PATCH, DELETE"));
            }
        }
        if let Some(secret) = &w.value.secret {
            r.secret_ref(secret.referenced, "secret", &secret.value);
        }
        r.headers("headers", &w.value.headers, RESERVED_HEADERS);
        if let Some(n) = &w.value.retries {
            if n.value > 10 {
                r.error(n.referenced, "retries", "at most 10 retries (the last waits about 8 minutes)");
            }
        }
        if action.idempotent {
            report.note(
                at,
                "idempotent",
                "webhooks are always retried with the same Idempotency-Key; `idempotent` is for exec actions",
            );
        }
    }

    async fn run(&self, action: &Action, cx: &ActionContext<'_>) -> ActionOutcome {
        let spec = match action.block.parse::<WebhookAction>(Location::UNKNOWN) {
            Ok(a) => a.webhook,
            Err(e) => return ActionOutcome::failed(e.to_string()),
        };
        let (call, redactor) = match self.call(&spec.value, action, cx) {
            Ok(c) => c,
            Err(e) => return ActionOutcome::failed(e),
        };
        let delivery = outbound::send(&self.http, &call, &redactor).await;
        let detail = match delivery.answer.trim() {
            "" => delivery.summary(),
            said => format!("{}: {said}", delivery.summary()),
        };
        let failure = delivery.failure().map(|f| f.kind);
        ActionOutcome { detail, failure, attempts: delivery.attempts }
    }
}
