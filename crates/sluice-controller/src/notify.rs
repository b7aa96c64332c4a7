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

impl Controller {
    /// Delivers queued notifications for the process's life.
    pub(crate) async fn deliver_notifications(self: Arc<Self>) {
        loop {
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
        let outcome = match self.delivery(&queued).await {
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

    async fn delivery(&self, queued: &QueuedNotification) -> Result<(), String> {
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
                Some(&plan.notify.get(index).ok_or_else(|| format!("the plan has no {}", queued.destination))?.value)
            }
        };
        match tokio::time::timeout(DELIVERY_TIMEOUT, self.plugins.notify(target, &n)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {DELIVERY_TIMEOUT:?}")),
        }
    }
}
