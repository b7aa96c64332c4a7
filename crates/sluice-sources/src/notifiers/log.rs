//! The log notifier: every rollout's transitions go to the server's log (target `sluice::notify`),
//! always, whatever else the plan names — the record on-call can grep when a chat tool was down.

use crate::{Notification, Notifier};

/// Writes each notification as one `tracing` event at INFO (WARN for a rollback or a pause).
#[derive(Debug, Clone, Copy, Default)]
pub struct Log;

#[async_trait::async_trait]
impl Notifier for Log {
    fn kind(&self) -> Option<&'static str> {
        None
    }

    async fn notify(&self, _target: Option<&sluice_plan::model::Notifier>, n: &Notification) -> Result<(), crate::Failure> {
        let e = &n.event;
        let urgent = matches!(e.kind.as_str(), "rolled_back" | "paused" | "stepped_back" | "hook_failed");
        if urgent {
            tracing::warn!(target: "sluice::notify", id = %n.id, rollout = %n.rollout, plan = %n.plan, flag = %n.flag, event = %e.kind, phase = e.phase + 1, percent = e.percent, reason = %e.reason, "{}", n.summary());
        } else {
            tracing::info!(target: "sluice::notify", id = %n.id, rollout = %n.rollout, plan = %n.plan, flag = %n.flag, event = %e.kind, phase = e.phase + 1, percent = e.percent, reason = %e.reason, "{}", n.summary());
        }
        Ok(())
    }
}
