//! `sluice-store` keeps Sluice's state: flags, segments and the hash-chained audit log, in an embedded
//! SQLite file (WAL, migrations embedded). Every change is validated against the whole catalog, written
//! with its audit event in one transaction, and returned with the compiled [`Snapshot`] to publish — so a
//! change is either fully committed and audited, or not written at all. The SQL is kept portable so that
//! PostgreSQL can be a second implementation run by the same tests, and the rules — what a change does, what
//! it audits, how the chain links — are backend-neutral code, so that a backend holds only its SQL.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_store::StoreError> {
//! use sluice_store::{Change, SqliteStore, Store};
//! let store = SqliteStore::open("data/sluice.db").await?;
//! let mut flag = sluice_flags::Flag::boolean("awf_bundle");
//! flag.ramp.percent = 25;
//! let applied = store.apply("admin", Change::PutFlag(flag), Some("phase 2".into())).await?;
//! assert_eq!(applied.event.action, "flag.create");
//! assert!(applied.snapshot.resolve("awf_bundle", &sluice_flags::Context::new().user_id("u")).is_some());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod audit;
mod catalog;
mod rollout;
mod sqlite;
mod stored;
mod token;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sluice_engine::{OutboxItem, Rollout, Status};
use sluice_flags::{Flag, FlagError, SegmentDef, Snapshot};

pub use audit::{AuditEvent, Verification};
pub use sqlite::{Durability, SqliteStore};
pub use token::{Principal, Role, TokenInfo, TokenTable};

/// A change to the flag catalog.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Create or replace a flag.
    PutFlag(Flag),
    /// Delete a flag by key.
    DeleteFlag(String),
    /// Create or replace a segment (matched by name; a new one gets the next id).
    PutSegment(SegmentDef),
    /// Delete a segment by name; refused while a flag uses it.
    DeleteSegment(String),
}

/// A committed change: its audit event, the snapshot to publish, and the new revision.
#[derive(Debug)]
pub struct Applied {
    /// The audit event written with the change.
    pub event: AuditEvent,
    /// The whole catalog after the change, compiled.
    pub snapshot: Snapshot,
    /// The catalog's revision after the change.
    pub revision: i64,
}

/// A committed batch: one audit event per change, the snapshot to publish, and the new revision.
#[derive(Debug)]
pub struct AppliedBatch {
    /// The audit events, in the order of the changes.
    pub events: Vec<AuditEvent>,
    /// The whole catalog after the changes, compiled.
    pub snapshot: Snapshot,
    /// The catalog's revision after the changes.
    pub revision: i64,
}

/// Why a change or a read failed.
#[derive(Debug)]
pub enum StoreError {
    /// The change would make a flag invalid; nothing was written.
    Invalid(FlagError),
    /// The change would make another entity (a segment) invalid; nothing was written.
    InvalidField {
        /// e.g. `segment internal_qa`.
        entity: String,
        /// The field path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No such entity.
    NotFound {
        /// e.g. `flag:awf_bundle`.
        entity: String,
    },
    /// The change conflicts with the state, e.g. deleting a segment a flag uses.
    Conflict {
        /// What conflicts and what to do.
        message: String,
    },
    /// A stored row does not parse: the database was edited by hand or by a newer Sluice.
    Corrupt {
        /// Which row and why.
        message: String,
    },
    /// The database failed.
    Database(sqlx::Error),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Invalid(e) => write!(f, "{e}"),
            StoreError::InvalidField { entity, field, message } => write!(f, "{entity}, field `{field}`: {message}"),
            StoreError::NotFound { entity } => write!(f, "{entity} does not exist"),
            StoreError::Conflict { message } => write!(f, "{message}"),
            StoreError::Corrupt { message } => write!(f, "stored data is corrupt: {message}"),
            StoreError::Database(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Database(sqlx::Error::Migrate(Box::new(e)))
    }
}

/// Filters of [`Store::audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this entity, e.g. `flag:awf_bundle`.
    pub entity: Option<String>,
    /// Only actions starting with this, e.g. `flag.`.
    pub action_prefix: Option<String>,
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many, newest first; 100 when zero.
    pub limit: u32,
}

/// Sluice's persistence, behind one trait so that the server runs on any backend (SQLite now; PostgreSQL for
/// several replicas). Every method that changes state writes its audit event in the same transaction.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The current catalog compiled into a snapshot, and its revision (the ETag of the flag state).
    async fn snapshot(&self) -> Result<(Snapshot, i64), StoreError>;

    /// Applies several changes all or nothing (imports): one transaction, one audit event per change, and the
    /// catalog validated once at the end, so that a batch may, say, create a segment and the flags using it.
    async fn apply_all(
        &self,
        actor: &str,
        changes: Vec<Change>,
        reason: Option<String>,
    ) -> Result<AppliedBatch, StoreError>;

    /// Applies one change as `actor`: validates the resulting catalog, writes the change and its audit event
    /// in one transaction, and returns the event and the new snapshot to publish.
    async fn apply(&self, actor: &str, change: Change, reason: Option<String>) -> Result<Applied, StoreError> {
        let mut batch = self.apply_all(actor, vec![change], reason).await?;
        Ok(Applied { event: batch.events.remove(0), snapshot: batch.snapshot, revision: batch.revision })
    }

    /// Audit events matching `filter`, newest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;

    /// A page of the chain in order: at most `limit` events with a sequence number above `after_seq`.
    async fn chain(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError>;

    /// Recomputes the whole chain, a page at a time; with `anchored_head`, also requires that hash to be in it.
    async fn verify(&self, anchored_head: Option<&str>) -> Result<Verification, StoreError> {
        const PAGE: u32 = 5_000;
        let mut check = audit::ChainCheck::new(anchored_head);
        loop {
            let page = self.chain(check.last_seq(), PAGE).await?;
            for e in &page {
                if let Err(broken) = check.push(e) {
                    return Ok(broken);
                }
            }
            if page.len() < PAGE as usize {
                return Ok(check.finish());
            }
        }
    }

    /// The last event's hash ([`audit::GENESIS`] when there is none), to anchor elsewhere.
    async fn head(&self) -> Result<String, StoreError>;

    /// Creates a token named `name` with `role`, audited as `actor`. Returns the token text, shown only now:
    /// the store keeps its SHA-256.
    async fn create_token(&self, actor: &str, name: &str, role: Role) -> Result<(TokenInfo, String), StoreError>;

    /// Makes `text` (e.g. from `SLUICE_ADMIN_TOKEN`) an active token named `name` with `role`, unless an
    /// active token with that text exists. Returns whether it was added.
    async fn ensure_token(&self, actor: &str, name: &str, role: Role, text: &str) -> Result<bool, StoreError>;

    /// Revokes the token named `name`, audited as `actor`.
    async fn revoke_token(&self, actor: &str, name: &str) -> Result<AuditEvent, StoreError>;

    /// Every token, revoked ones included, oldest first; never a secret.
    async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;

    /// The signing key called `name` (64 hex digits), made at random the first time it is asked for and
    /// the same ever after, for every replica on this store (the dashboard's session key).
    async fn server_key(&self, name: &str) -> Result<String, StoreError>;

    /// Every active token, for authenticating requests from memory.
    async fn token_table(&self) -> Result<TokenTable, StoreError>;

    /// The principal a token stands for, or `None` for an unknown, malformed or revoked token.
    async fn authenticate(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        Ok(self.token_table().await?.authenticate(token).cloned())
    }

    /// Adds evaluation counts reported by an SDK: (flag, variant) → count.
    async fn record_client_metrics(&self, counts: &[(String, String, u64)]) -> Result<(), StoreError>;

    /// The evaluation counts kept so far: (flag, variant, count), by flag then variant.
    async fn client_metrics(&self) -> Result<Vec<(String, String, u64)>, StoreError>;

    /// Records a new active rollout with the audit events of its start and its queued notifications,
    /// refused (`Conflict`, naming it) when its flag already has one. Returns the audit events written.
    async fn create_rollout(
        &self,
        rollout: &RolloutRecord,
        events: &[AuditNote],
        notifications: &[NewNotification],
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Writes a rollout's new state and outbox, with one audit event per transition event and its queued
    /// notifications, in one transaction.
    async fn save_rollout(&self, save: &RolloutSave<'_>) -> Result<Vec<AuditEvent>, StoreError>;

    /// Queued notifications whose next try is due, oldest first, at most `limit`.
    async fn due_notifications(&self, limit: u32) -> Result<Vec<QueuedNotification>, StoreError>;

    /// Marks a notification delivered to `destination`: it is not tried again.
    async fn notification_delivered(&self, id: &str, destination: &str) -> Result<(), StoreError>;

    /// Records a failed delivery; the next try is due after `retry_in`.
    async fn notification_failed(
        &self,
        id: &str,
        destination: &str,
        error: &str,
        retry_in: std::time::Duration,
    ) -> Result<(), StoreError>;

    /// Rollouts, oldest first; only the active ones with `active_only`.
    async fn rollouts(&self, active_only: bool) -> Result<Vec<RolloutRecord>, StoreError>;

    /// One rollout.
    async fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError>;

    /// Appends one tick's decisions of a rollout (each counted as changed).
    async fn record_decisions(&self, id: &str, at_ms: i64, decisions: &[Value]) -> Result<(), StoreError>;

    /// Drops the decisions older than `before_ms` whose outcome did not change; returns how many.
    async fn prune_decisions(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Saves built-in metric aggregates, one JSON body per flag (replacing what was saved for it).
    async fn save_metrics(&self, flags: &[(String, String)], at_ms: i64) -> Result<(), StoreError>;

    /// Every flag's saved built-in metric aggregates.
    async fn load_metrics(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// The last `limit` decisions of a rollout, oldest first.
    async fn decisions(&self, id: &str, limit: u32) -> Result<Vec<Value>, StoreError>;

    /// Appends one audit event that is not a catalog change (e.g. a decision whose outcome changed).
    async fn record_event(
        &self,
        actor: &str,
        action: &str,
        entity: &str,
        after: Value,
        reason: Option<String>,
    ) -> Result<AuditEvent, StoreError>;
}

/// An audit event to write with a rollout's change: (action, details, reason).
pub type AuditNote = (String, Value, Option<String>);

/// A rollout as stored: typed, so that the controller never pokes at JSON. The engine state and the outbox
/// are kept as JSON columns; a row that does not parse is reported as [`StoreError::Corrupt`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RolloutRecord {
    /// Its id.
    pub id: String,
    /// The flag it ramps.
    pub flag: String,
    /// The plan's name.
    pub plan_name: String,
    /// The plan, as started.
    pub plan_text: String,
    /// The flag before the rollout: what `rollback.to: start` restores.
    pub original_flag: Flag,
    /// The engine's state; its status is the rollout's.
    pub state: Rollout,
    /// Not finished.
    pub active: bool,
    /// Effects committed but not known to be done.
    pub outbox: Vec<OutboxItem>,
    /// Who started it.
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

impl RolloutRecord {
    /// Where it is: running, paused, baking, completed, rolled back, aborted.
    pub fn status(&self) -> &Status {
        &self.state.status
    }
}

/// A rollout's transition, as written.
#[derive(Debug)]
pub struct RolloutSave<'a> {
    /// Who acted: a person's token name, or the controller.
    pub actor: &'a str,
    /// The rollout.
    pub id: &'a str,
    /// The engine's new state (its status says whether the rollout is still active).
    pub state: &'a Rollout,
    /// The effects to carry out, not yet done.
    pub outbox: &'a [OutboxItem],
    /// Audit events.
    pub events: &'a [AuditNote],
    /// Notifications to queue with the transition.
    pub notifications: &'a [NewNotification],
    /// The tick's decisions, when the save is a tick's (at that time, in ms): kept in the same commit, so a
    /// crash can neither lose nor repeat them.
    pub decisions: Option<(i64, &'a [NewDecision])>,
}

/// One check's decision of a tick, as kept.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision {
    /// The decision (JSON: check, value, threshold, outcome, …).
    pub body: Value,
    /// Its outcome differs from the check's previous one: kept beyond the retention time.
    pub changed: bool,
}

/// A notification to queue: delivered at least once to `destination`, keyed by (`id`, `destination`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// The event's id.
    pub id: String,
    /// `log`, or the plan's `notify[i]`.
    pub destination: String,
    /// The rollout it is about.
    pub rollout_id: String,
    /// What to deliver.
    pub body: Value,
}

/// A queued notification not yet delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedNotification {
    /// The event's id.
    pub id: String,
    /// `log`, or the plan's `notify[i]`.
    pub destination: String,
    /// The rollout it is about.
    pub rollout_id: String,
    /// What to deliver.
    pub body: Value,
    /// Failed tries so far.
    pub attempts: u32,
    /// The last try's error.
    pub last_error: Option<String>,
}
