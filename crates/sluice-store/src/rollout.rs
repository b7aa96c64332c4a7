//! The rollout rules, the same for every backend: one active rollout per flag, the audit events written with
//! a rollout's start and transitions, and reading a stored rollout back.

use chrono::{DateTime, Utc};

use crate::audit::NewEvent;
use crate::stored::{parse_json, Columns};
use crate::{AuditNote, RolloutRecord, RolloutSave, StoreError};

/// Why a rollout cannot start: its flag already has the active rollout `id` of the plan `plan_name`.
pub(crate) fn already_active(flag: &str, id: &str, plan_name: &str) -> StoreError {
    StoreError::Conflict {
        message: format!(
            "flag `{flag}` already has an active rollout: `{plan_name}` ({id}); finish, roll back or abort it first"
        ),
    }
}

/// Refuses deleting a flag that a rollout still ramps (active, or with effects to carry out), or a segment
/// that the current or a later phase of an active rollout names: the rollout would stick when it gets there.
pub(crate) fn refuse_deleting_what_rollouts_need(
    changes: &[crate::Change],
    busy: &[RolloutRecord],
) -> Result<(), StoreError> {
    for change in changes {
        match change {
            crate::Change::DeleteFlag(key) => {
                if let Some(r) = busy.iter().find(|r| &r.flag == key) {
                    return Err(StoreError::Conflict {
                        message: format!(
                            "flag `{key}` has an active rollout `{}` ({}): finish, roll back or abort it first",
                            r.plan_name, r.id
                        ),
                    });
                }
            }
            crate::Change::DeleteSegment(name) => {
                for r in busy {
                    // Any phase may be set again (a promotion, a step back), and a rollback restores the
                    // ramp as it was: each of them must still validate.
                    let Ok(plan) = sluice_plan::parse(&r.plan_name, &r.plan_text) else { continue };
                    let phase = plan.phases.iter().position(|p| p.value.segments.iter().any(|s| &s.value == name));
                    let restored = r.original_flag.ramp.segments.iter().any(|s| s == name);
                    let needed_by = match (phase, restored) {
                        (Some(i), _) => format!("phase {} of", i + 1),
                        (None, true) => "the ramp a rollback restores, of".to_string(),
                        (None, false) => continue,
                    };
                    return Err(StoreError::Conflict {
                        message: format!(
                            "segment `{name}` is needed by {needed_by} the rollout `{}` ({}): finish, roll back or abort it first",
                            r.plan_name, r.id
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Why a rollout cannot be saved: there is none with that id.
pub(crate) fn not_found(id: &str) -> StoreError {
    StoreError::NotFound { entity: entity(id) }
}

/// The audit events of a rollout's start: `rollout.create`, then the caller's notes.
pub(crate) fn created_events(r: &RolloutRecord, notes: &[AuditNote], at: DateTime<Utc>) -> Vec<NewEvent> {
    let created = serde_json::json!({"id": r.id, "plan": r.plan_name, "flag": r.flag, "env": r.env});
    let mut events =
        vec![NewEvent::note(at, &r.created_by, "rollout.create", &entity(&r.id), created, None).in_env(&r.env)];
    events.extend(note_events(&r.created_by, &r.id, &r.env, notes, at));
    events
}

/// The audit events of a rollout's transition, in its environment `env`.
pub(crate) fn saved_events(save: &RolloutSave<'_>, env: &str, at: DateTime<Utc>) -> Vec<NewEvent> {
    note_events(save.actor, save.id, env, save.events, at)
}

fn note_events(actor: &str, id: &str, env: &str, notes: &[AuditNote], at: DateTime<Utc>) -> Vec<NewEvent> {
    let entity = entity(id);
    notes
        .iter()
        .map(|(action, after, reason)| {
            NewEvent::note(at, actor, action, &entity, after.clone(), reason.clone()).in_env(env)
        })
        .collect()
}

fn entity(id: &str) -> String {
    format!("rollout:{id}")
}

/// A rollout row: JSON columns as text, `active` as 0 or 1.
#[derive(Debug, Clone)]
pub(crate) struct RolloutRow {
    pub(crate) id: String,
    pub(crate) flag: String,
    pub(crate) plan_name: String,
    pub(crate) plan_text: String,
    pub(crate) original_flag: String,
    pub(crate) state: String,
    pub(crate) status: String,
    pub(crate) active: i64,
    pub(crate) outbox: String,
    pub(crate) created_by: String,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) env: String,
}

impl crate::session::Values for RolloutRow {
    fn bind_to<'a>(&'a self, q: crate::session::Query<'a>) -> crate::session::Query<'a> {
        q.bind(&self.id)
            .bind(&self.flag)
            .bind(&self.plan_name)
            .bind(&self.plan_text)
            .bind(&self.original_flag)
            .bind(&self.state)
            .bind(&self.status)
            .bind(self.active)
            .bind(&self.outbox)
            .bind(&self.created_by)
            .bind(&self.created_at)
            .bind(&self.updated_at)
            .bind(&self.env)
    }
}

impl<'r, R: sqlx::Row + Columns<'r>> sqlx::FromRow<'r, R> for RolloutRow {
    fn from_row(r: &'r R) -> Result<Self, sqlx::Error> {
        Ok(RolloutRow {
            id: r.text("id")?,
            flag: r.text("flag")?,
            plan_name: r.text("plan_name")?,
            plan_text: r.text("plan_text")?,
            original_flag: r.text("original_flag")?,
            state: r.text("state")?,
            status: r.text("status")?,
            active: r.int("active")?,
            outbox: r.text("outbox")?,
            created_by: r.text("created_by")?,
            created_at: r.text("created_at")?,
            updated_at: r.text("updated_at")?,
            env: r.text("env")?,
        })
    }
}

impl RolloutRow {
    /// The rollout it stores; `Corrupt` when a JSON column does not parse.
    pub(crate) fn into_record(self) -> Result<RolloutRecord, StoreError> {
        let id = self.id;
        let what = |col: &'static str| {
            let id = &id;
            move || format!("rollout {id}, `{col}`")
        };
        Ok(RolloutRecord {
            original_flag: parse_json(&self.original_flag, what("original_flag"))?,
            state: parse_json(&self.state, what("state"))?,
            outbox: parse_json(&self.outbox, what("outbox"))?,
            flag: self.flag,
            plan_name: self.plan_name,
            plan_text: self.plan_text,
            active: self.active == 1,
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
            env: self.env,
            id,
        })
    }
}

/// A stored decision of the rollout `id`.
pub(crate) fn parse_decision(id: &str, body: &str) -> Result<crate::Decided, StoreError> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Corrupt { message: format!("a decision of {id} does not parse: {e}") })
}

/// A queued notification row.
#[derive(Debug, Clone)]
pub(crate) struct NotificationRow {
    id: String,
    destination: String,
    rollout_id: String,
    body: String,
    attempts: i64,
    last_error: Option<String>,
    created_ms: i64,
    dead_ms: Option<i64>,
}

impl<'r, R: sqlx::Row + Columns<'r>> sqlx::FromRow<'r, R> for NotificationRow {
    fn from_row(r: &'r R) -> Result<Self, sqlx::Error> {
        Ok(NotificationRow {
            id: r.text("id")?,
            destination: r.text("destination")?,
            rollout_id: r.text("rollout_id")?,
            body: r.text("body")?,
            attempts: r.int("attempts")?,
            last_error: r.text_or_null("last_error")?,
            created_ms: r.int("created_ms")?,
            dead_ms: r.int_or_null("dead_ms")?,
        })
    }
}

impl NotificationRow {
    /// The notification it queues; `Corrupt` when its body does not parse.
    pub(crate) fn into_queued(self) -> Result<crate::QueuedNotification, StoreError> {
        let body = parse_json(&self.body, || format!("notification {} to {}", self.id, self.destination))?;
        let destination = self
            .destination
            .parse()
            .map_err(|e| StoreError::Corrupt { message: format!("notification {}: {e}", self.id) })?;
        Ok(crate::QueuedNotification {
            body,
            id: self.id,
            destination,
            rollout_id: self.rollout_id,
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            last_error: self.last_error,
            created_ms: self.created_ms,
            dead_ms: self.dead_ms,
        })
    }
}
