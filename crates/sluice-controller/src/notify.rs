//! Where notifications are delivered: from the durable queue the transitions fill, apart from every
//! rollout's lock and tick, so that a chat outage never holds up a rollback. Each notification is
//! delivered at least once to each destination (keyed by its id), retried with backoff while a
//! destination fails transiently, and given up (dead) at once when it fails permanently (a bad URL, a 404,
//! a plan that no longer has the destination) or after its attempts or its time (10, 24 h by default):
//! audited once, shown on the rollout, sent again only when a person says so. A notification never makes
//! a rollout uncertain or paused.

use std::sync::Arc;
use std::time::Duration;

use sluice_sources::{Failure, Notification};
use sluice_store::{Destination, QueuedNotification};

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
        self.activity.notification(&kind, delivered.is_ok());
        let attempt = queued.attempts + 1;
        let mut detail = serde_json::json!({
            "id": queued.id,
            "destination": queued.destination,
            "ok": delivered.is_ok(),
            "attempt": attempt,
            "duration_ms": began.elapsed().as_millis() as u64,
        });
        let failure = match delivered {
            Ok(()) => {
                self.audit_attempt(&queued, detail).await;
                if let Err(e) = self.store.notification_delivered(&queued.id, &queued.destination).await {
                    tracing::warn!(id = %queued.id, error = %e, "recording a notification's delivery");
                }
                return;
            }
            Err(failure) => failure,
        };
        detail["error"] = serde_json::json!(failure.message);
        detail["failure"] = serde_json::json!(failure.kind);
        // Given up: a permanent failure at once; a transient one after its attempts or its time.
        let age = std::time::Duration::from_millis(
            (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
                .saturating_sub(queued.created_ms)
                .max(0) as u64,
        );
        let gave_up = if !failure.is_transient() {
            Some("it failed permanently: trying again would not change the answer".to_string())
        } else if attempt >= self.settings.delivery_attempts {
            Some(format!("{attempt} attempts failed"))
        } else if age >= self.settings.delivery_give_up {
            Some(format!("it kept failing for {}s after it was queued", age.as_secs()))
        } else {
            None
        };
        let Some(why) = gave_up else {
            self.audit_attempt(&queued, detail).await;
            // 2 s, 4 s, 8 s … up to 10 minutes between tries.
            let backoff = Duration::from_secs(2u64.saturating_pow(attempt.min(9)).min(600));
            tracing::warn!(id = %queued.id, destination = %queued.destination, attempts = attempt, error = %failure, "a notification was not delivered; retrying in {backoff:?}");
            if let Err(e) =
                self.store.notification_failed(&queued.id, &queued.destination, &failure.message, backoff).await
            {
                tracing::warn!(id = %queued.id, error = %e, "recording a notification's delivery");
            }
            return;
        };
        detail["given_up"] = serde_json::json!(why);
        tracing::warn!(id = %queued.id, destination = %queued.destination, attempts = attempt, error = %failure, "a notification was given up ({why}): `sluice rollout redeliver {}` sends it again", queued.rollout_id);
        self.activity.dead_letter(&kind);
        match self.store.notification_dead(&queued.id, &queued.destination, &failure.message, detail).await {
            Ok(event) => {
                if let Ok(Some(record)) = self.store.rollout(&queued.rollout_id).await {
                    if let Ok(plan) = plan_of(&record) {
                        let change = crate::transition::change_of(&record.id, &plan, &record.state, Vec::new());
                        self.catalog.tell(vec![event], change);
                    }
                }
            }
            Err(e) => tracing::warn!(id = %queued.id, error = %e, "recording a dead notification"),
        }
    }

    /// Every attempt but the log's is on the record: who was told what, when, and what went wrong.
    async fn audit_attempt(&self, queued: &QueuedNotification, detail: serde_json::Value) {
        if queued.destination == Destination::Log {
            return;
        }
        if let Err(e) = self.audit("sluice", "rollout.notification", &queued.rollout_id, detail, None).await {
            tracing::warn!(id = %queued.id, error = %e, "auditing a notification's delivery");
        }
    }

    /// Delivers one queued notification; returns its notifier's kind (`log`, `slack`, …, or `unknown` when
    /// it cannot be told) with the result.
    async fn delivery(&self, queued: &QueuedNotification) -> (String, Result<(), Failure>) {
        let mut kind = match queued.destination {
            Destination::Log => "log".to_string(),
            Destination::Notifier(_) => "unknown".to_string(),
        };
        let result = self.deliver_to(queued, &mut kind).await;
        (kind, result)
    }

    async fn deliver_to(&self, queued: &QueuedNotification, kind: &mut String) -> Result<(), Failure> {
        let n: Notification = serde_json::from_value(queued.body.clone())
            .map_err(|e| Failure::permanent(format!("the queued notification does not parse: {e}")))?;
        let plan = match queued.destination {
            Destination::Log => None,
            Destination::Notifier(_) => {
                let record =
                    self.store.rollout(&queued.rollout_id).await.map_err(|e| Failure::transient(e.to_string()))?;
                let record =
                    record.ok_or_else(|| Failure::permanent(format!("rollout {} is gone", queued.rollout_id)))?;
                Some(plan_of(&record).map_err(|e| Failure::permanent(e.to_string()))?)
            }
        };
        let target = match (&plan, queued.destination) {
            (Some(plan), Destination::Notifier(index)) => {
                let target = &plan
                    .notify
                    .get(index)
                    .ok_or_else(|| Failure::permanent(format!("the plan has no {}", queued.destination)))?
                    .value;
                *kind = self.plugins.described().notifier_kind(Some(target));
                Some(target)
            }
            _ => None,
        };
        match tokio::time::timeout(DELIVERY_TIMEOUT, self.plugins.notify(target, &n)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::transient(format!("no answer within {DELIVERY_TIMEOUT:?}"))),
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
                && !record.outbox.iter().any(sluice_engine::OutboxItem::waits_for_settling)
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
            for target in plan.notify.iter().filter(|t| self.plugins.described().refreshed(&t.value)) {
                posted += 1;
                let delivered =
                    tokio::time::timeout(DELIVERY_TIMEOUT, self.plugins.notify(Some(&target.value), &n)).await;
                if !matches!(delivered, Ok(Ok(()))) {
                    let error = match delivered {
                        Ok(Err(e)) => e.message,
                        _ => format!("no answer within {DELIVERY_TIMEOUT:?}"),
                    };
                    tracing::warn!(rollout = %record.id, %error, "refreshing a rollout's alerts");
                }
            }
        }
        posted
    }
}
