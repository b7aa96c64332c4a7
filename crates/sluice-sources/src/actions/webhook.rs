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

use std::time::Duration;

use sluice_plan::model::{Action, ActionKind, Webhook as Spec};

use crate::outbound::{self, Call};
use crate::{ActionContext, ActionOutcome, Secrets};

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
/// let spec = &plan.rollback.actions[0].value.webhook.as_ref().unwrap().value;
/// let values = BTreeMap::from([("reason".to_string(), "trigger \"errors\" fired".to_string()), ("percent".to_string(), "5".to_string())]);
/// let checks = serde_json::json!([{"check": "errors", "value": 0.2}]);
/// let cx = sluice_sources::ActionContext { rollout_id: "r1", plan: &plan, values: &values, key: "r1:3:0", checks: &checks };
/// let body: serde_json::Value = serde_json::from_slice(&sluice_sources::actions::webhook::body(spec, &cx).unwrap()).unwrap();
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
    fn kind(&self) -> ActionKind {
        ActionKind::Webhook
    }

    async fn run(&self, action: &Action, cx: &ActionContext<'_>) -> ActionOutcome {
        let Some(spec) = &action.webhook else { return ActionOutcome::failed("not a webhook action") };
        let (call, redactor) = match self.call(&spec.value, action, cx) {
            Ok(c) => c,
            Err(e) => return ActionOutcome::failed(e),
        };
        let delivery = outbound::send(&self.http, &call, &redactor).await;
        let detail = match delivery.answer.trim() {
            "" => delivery.summary(),
            said => format!("{}: {said}", delivery.summary()),
        };
        ActionOutcome { ok: delivery.ok, detail, attempts: delivery.attempts }
    }
}
