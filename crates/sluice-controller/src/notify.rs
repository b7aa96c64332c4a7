//! Where notifications are delivered: from the durable queue the transitions fill, apart from every
//! rollout's lock and tick, so that a chat outage never holds up a rollback. Each notification is
//! delivered at least once to each destination (keyed by its id), retried with backoff while a
//! destination fails, and never makes a rollout uncertain or paused.

use std::sync::Arc;
use std::time::Duration;

use sluice_sources::Notification;
use sluice_store::QueuedNotification;

use crate::{plan_of, Controller};

/// Longest wait for one delivery; a slower destination counts as failed and is retried later.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most notifications taken from the queue at once.
const BATCH: u32 = 100;
/// How often the conditions of every rollout are posted again to its Alertmanagers (an alert ends three
/// minutes after its last post).
const ALERT_REFRESH: Duration = Duration::from_secs(60);

impl Controller {
    /// Delivers queued notifications for the controller's term.
    pub(crate) async fn deliver_notifications(self: Arc<Self>, term: i64) {
        while self.term() == term {
            let delivered = self.deliver_due().await;
            if delivered < BATCH as usize {
                tokio::select! {
                    () = self.wake_notifier.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    /// Delivers every notification due now, concurrently; returns how many were tried.
    pub async fn deliver_due(&self) -> usize {
        // A replica deposed while it slept must not announce what its successor now owns.
        if let Err(e) = self.store.fence_holds().await {
            tracing::warn!(error = %e, "not delivering notifications");
            return 0;
        }
        let due = match self.store.due_notifications(BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading the notification queue");
                return 0;
            }
        };
        let tried = due.len();
        futures_util::future::join_all(due.into_iter().map(|n| self.deliver(n))).await;
        tried
    }

    async fn deliver(&self, queued: QueuedNotification) {
        let began = std::time::Instant::now();
        let (kind, delivered) = self.delivery(&queued).await;
        self.activity.notification(kind, delivered.is_ok());
        // Every attempt but the log's is on the record: who was told what, when, and what went wrong.
        if queued.destination != "log" {
            let mut detail = serde_json::json!({
                "id": queued.id,
                "destination": queued.destination,
                "ok": delivered.is_ok(),
                "attempt": queued.attempts + 1,
                "duration_ms": began.elapsed().as_millis() as u64,
            });
            if let Err(e) = &delivered {
                detail["error"] = serde_json::json!(e);
            }
            if let Err(e) = self.audit("sluice", "rollout.notification", &queued.rollout_id, detail, None).await {
                tracing::warn!(id = %queued.id, error = %e, "auditing a notification's delivery");
            }
        }
        let outcome = match delivered {
            Ok(()) => self.store.notification_delivered(&queued.id, &queued.destination).await,
            Err(error) => {
                // 2 s, 4 s, 8 s … up to 10 minutes between tries.
                let backoff =
                    Duration::from_secs(2u64.saturating_pow(queued.attempts.saturating_add(1).min(9)).min(600));
                tracing::warn!(id = %queued.id, destination = %queued.destination, attempts = queued.attempts + 1, %error, "a notification was not delivered; retrying in {backoff:?}");
                self.store.notification_failed(&queued.id, &queued.destination, &error, backoff).await
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(id = %queued.id, error = %e, "recording a notification's delivery");
        }
    }

    /// Delivers one queued notification; returns its notifier's kind (`log`, `slack`, …, or `unknown` when
    /// it cannot be told) with the result.
    async fn delivery(&self, queued: &QueuedNotification) -> (&'static str, Result<(), String>) {
        let mut kind = if queued.destination == "log" { "log" } else { "unknown" };
        let result = self.deliver_to(queued, &mut kind).await;
        (kind, result)
    }

    async fn deliver_to(&self, queued: &QueuedNotification, kind: &mut &'static str) -> Result<(), String> {
        let n: Notification = serde_json::from_value(queued.body.clone())
            .map_err(|e| format!("the queued notification does not parse: {e}"))?;
        let plan = match queued.destination.as_str() {
            "log" => None,
            _ => {
                let record = self.store.rollout(&queued.rollout_id).await.map_err(|e| e.to_string())?;
                let record = record.ok_or_else(|| format!("rollout {} is gone", queued.rollout_id))?;
                Some(plan_of(&record).map_err(|e| e.to_string())?)
            }
        };
        let target = match &plan {
            None => None,
            Some(plan) => {
                let index = queued
                    .destination
                    .strip_prefix("notify[")
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|i| i.parse::<usize>().ok())
                    .ok_or_else(|| format!("no destination `{}`", queued.destination))?;
                let target =
                    &plan.notify.get(index).ok_or_else(|| format!("the plan has no {}", queued.destination))?.value;
                if let Some((k, _)) = target.endpoint() {
                    *kind = k.as_str();
                }
                Some(target)
            }
        };
        match tokio::time::timeout(DELIVERY_TIMEOUT, self.plugins.notify(target, &n)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {DELIVERY_TIMEOUT:?}")),
        }
    }

    pub(crate) async fn refresh_alerts_forever(self: Arc<Self>, term: i64) {
        loop {
            tokio::time::sleep(ALERT_REFRESH).await;
            if self.term() != term || self.store.fence_holds().await.is_err() {
                return;
            }
            self.refresh_alerts().await;
        }
    }

    /// Posts every rollout's current conditions to the Alertmanagers its plan names: a paused or
    /// uncertain rollout's alert stays firing while the condition lasts, and a rollback's for an hour.
    /// Returns how many posts were made.
    pub async fn refresh_alerts(&self) -> usize {
        let records = match self.store.rollouts(false).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading rollouts to refresh their alerts");
                return 0;
            }
        };
        let now = self.clock.now();
        let mut posted = 0;
        for record in records {
            let Some(last) = record.state.history.last() else { continue };
            // An ended rollout's alerts are over an hour after it ended (its rollback alert's life).
            if record.state.status.is_terminal()
                && !record.outbox.iter().any(|i| i.uncertain)
                && now.saturating_sub(last.at) > sluice_sources::notifiers::alertmanager::ROLLED_BACK_FOR_MS
            {
                continue;
            }
            let Ok(plan) = plan_of(&record) else { continue };
            let n = crate::transition::notification(
                format!("{}:e{}", record.id, record.state.history.len() - 1),
                &record,
                &plan,
                &record.state,
                &record.outbox,
                last.clone(),
                Vec::new(),
            );
            for target in plan.notify.iter().filter(|t| t.value.alertmanager.is_some()) {
                posted += 1;
                let delivered =
                    tokio::time::timeout(DELIVERY_TIMEOUT, self.plugins.notify(Some(&target.value), &n)).await;
                if !matches!(delivered, Ok(Ok(()))) {
                    let error = match delivered {
                        Ok(Err(e)) => e,
                        _ => format!("no answer within {DELIVERY_TIMEOUT:?}"),
                    };
                    tracing::warn!(rollout = %record.id, %error, "refreshing a rollout's alerts");
                }
            }
        }
        posted
    }
}
