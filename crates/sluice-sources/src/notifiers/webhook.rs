//! The generic `webhook` notifier: POSTs the notification as JSON (its id, rollout, plan, flag, event,
//! the state it left the rollout in and the tick's decisions), signed like the webhook action when the
//! plan names a `secret`, with the notification's id as `Idempotency-Key` (a repeat is the same id).
//!
//! ```yaml
//! notify:
//!   - webhook: { url_env: SLUICE_SECRET_AUDIT_WEBHOOK_URL, secret: { secret_env: SLUICE_SECRET_AUDIT_HMAC } }
//!     on: [rolled_back, completed]
//! ```

use sluice_plan::model::Location;
use sluice_plan::Report;

use crate::{Notification, Notifier, Secrets};

/// The generic webhook notifier.
pub struct Webhook {
    http: reqwest::Client,
    secrets: Secrets,
}

impl Webhook {
    /// Built from the server's configuration.
    pub fn new(config: &crate::Config) -> Webhook {
        Webhook { http: super::client(), secrets: Secrets::new(config.secrets_dir.clone()) }
    }
}

#[async_trait::async_trait]
impl Notifier for Webhook {
    fn kind(&self) -> Option<&'static str> {
        Some("webhook")
    }

    fn hint(&self) -> &'static str {
        "webhook: {url_env: …}"
    }

    fn check_config(&self, notifier: &sluice_plan::model::Notifier, at: Location, report: &mut Report<'_>) {
        super::Endpoint::check(notifier, "webhook", at, report)
    }

    async fn notify(&self, target: Option<&sluice_plan::model::Notifier>, n: &Notification) -> Result<(), crate::Failure> {
        let target = target.ok_or("not a webhook notifier")?;
        let endpoint = &super::Endpoint::of(target, "webhook")?;
        let body = serde_json::to_vec(n).map_err(|e| crate::Failure::permanent(e.to_string()))?;
        super::deliver(&self.http, super::call(&self.secrets, endpoint, "", body, &n.id)).await
    }
}
