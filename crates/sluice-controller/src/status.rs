//! What a rollout looks like to people: the status the API, the CLI and the dashboard show.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sluice_engine::{Effect, Event, Millis, Status};
use sluice_plan::model::ApprovalRole;
use sluice_plan::Plan;
use sluice_store::RolloutRecord;

use crate::{plan_of, ControllerError};

/// A rollout's status, phase, approvals, history and what it still has to carry out.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutSummary {
    /// Its id.
    pub id: String,
    /// The plan's name.
    pub plan: String,
    /// The environment it runs in.
    pub env: String,
    /// The flag it ramps.
    pub flag: String,
    /// Where it is.
    pub status: Status,
    /// The current phase, 1-based.
    pub phase: usize,
    /// How many phases the plan has.
    pub phases: usize,
    /// Each phase's percentage.
    pub phase_percents: Vec<u8>,
    /// The percentage in effect.
    pub percent: u8,
    /// When the current phase started (ms).
    pub phase_started_ms: Millis,
    /// The current phase's hold (ms).
    pub hold_ms: Option<u64>,
    /// The current phase's approval items.
    pub approvals_needed: Vec<String>,
    /// Those only an admin may sign.
    pub approvals_admin_only: Vec<String>,
    /// Those signed.
    pub approvals_signed: BTreeSet<String>,
    /// Who signed each.
    pub approvals_signed_by: BTreeMap<String, String>,
    /// Every transition so far.
    pub history: Vec<Event>,
    /// What the last transition still has to carry out.
    pub pending: Vec<Pending>,
    /// Triggers that have had no conclusive value for `analysis.max_inconclusive` ticks in a row: they
    /// cannot fire until they have one.
    pub blind_triggers: Vec<String>,
    /// What the next step waits for besides gates and approvals: a confirm gate that said no.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Notifications given up (a permanent failure, or too many): nobody heard them until a person sends
    /// them again (`sluice rollout redeliver`).
    pub undelivered: Vec<Undelivered>,
    /// The baselines captured so far, by check (`trigger:NAME`; a phase's own gate `gate:NAME@PHASE`,
    /// phases from 0): each check's own average over its window before the start (or before its phase).
    pub baselines: BTreeMap<String, f64>,
    /// Who started it.
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
}

/// One effect of the last transition not yet carried out.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    /// What, for people.
    pub what: String,
    /// `under_way` (the first), `waiting`, `unknown` (interrupted; waits for `settle`) or `failed` (failed
    /// for good; waits for `settle`).
    pub state: &'static str,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A notification given up.
#[derive(Debug, Clone, Serialize)]
pub struct Undelivered {
    /// The event's id (`{rollout}:e{n}`).
    pub id: String,
    /// Where it was going: `notify[i]`.
    pub destination: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: Option<String>,
    /// When it was given up (ms).
    pub given_up_ms: Option<i64>,
}

impl Undelivered {
    /// A dead notification, for people.
    pub fn of(n: &sluice_store::QueuedNotification) -> Undelivered {
        Undelivered {
            id: n.id.clone(),
            destination: n.destination.to_string(),
            attempts: n.attempts,
            error: n.last_error.clone(),
            given_up_ms: n.dead_ms,
        }
    }
}

impl RolloutSummary {
    /// The summary of a stored rollout.
    pub fn of(record: &RolloutRecord) -> Result<RolloutSummary, ControllerError> {
        let plan = plan_of(record)?;
        let rollout = &record.state;
        let phase = plan.phases.get(rollout.phase).map(|p| &p.value);
        let items = |admin_only: bool| -> Vec<String> {
            phase
                .map(|p| {
                    p.approvals
                        .iter()
                        .filter(|a| !admin_only || a.value.role == ApprovalRole::Admin)
                        .map(|a| a.value.item.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(RolloutSummary {
            id: record.id.clone(),
            plan: record.plan_name.clone(),
            env: record.env.clone(),
            flag: record.flag.clone(),
            status: rollout.status.clone(),
            phase: rollout.phase + 1,
            phases: plan.phases.len(),
            phase_percents: plan.phases.iter().map(|p| p.value.percent()).collect(),
            percent: rollout.percent(&plan),
            phase_started_ms: rollout.phase_started,
            hold_ms: phase.and_then(|p| p.hold.as_ref()).map(|h| h.value.0.as_millis() as u64),
            approvals_needed: items(false),
            approvals_admin_only: items(true),
            approvals_signed: rollout.approvals.clone(),
            approvals_signed_by: rollout.signed_by.clone(),
            history: rollout.history.clone(),
            pending: pending(record, &plan),
            blind_triggers: rollout.blind_triggers(&plan),
            waiting_for: rollout.waiting_for.clone(),
            undelivered: Vec::new(),
            baselines: rollout.baselines.clone(),
            created_by: record.created_by.clone(),
            created_at: record.created_at.clone(),
        })
    }
}

/// What the last transition still has to carry out, in order: the first is under way (a hook that takes
/// a while shows here, before the percentage it guards is raised), and `unknown` waits for `settle`.
fn pending(record: &RolloutRecord, plan: &Plan) -> Vec<Pending> {
    let mut first = true;
    record
        .outbox
        .iter()
        .filter(|i| !i.done)
        .map(|i| {
            let what = match &i.effect {
                Effect::SetRamp { percent, .. } => format!("set the flag to {percent}%"),
                Effect::RestoreFlag => "restore the flag as it was before the rollout".into(),
                Effect::FlagsOff { flags } => format!("switch off {}", flags.join(", ")),
                Effect::ClearOverrides => "clear the flag's overrides".into(),
                Effect::Run { action, .. } => match action.resolve(plan).and_then(|a| a.name.as_deref()) {
                    Some(name) => format!("{action} ({name})"),
                    None => action.to_string(),
                },
                Effect::Notify(e) => format!("tell people: {}", e.kind),
            };
            let state = if i.uncertain {
                "unknown"
            } else if i.failed.is_some() {
                "failed"
            } else if std::mem::take(&mut first) {
                "under_way"
            } else {
                "waiting"
            };
            Pending { what, state, idempotency_key: i.key.clone(), error: i.failed.clone() }
        })
        .collect()
}
