//! `sluice-store` keeps Sluice's state: flags, segments, tokens, rollouts and the hash-chained audit log, in
//! an embedded SQLite file (WAL) or in PostgreSQL when several replicas share one database (migrations
//! embedded for both). Every change is validated against the whole catalog, written
//! with its audit event in one transaction, and returned with the compiled [`Snapshot`] to publish — so a
//! change is either fully committed and audited, or not written at all. The SQL is written once, as plain
//! functions (`sql.rs`, over a [`session::Backend`]), and run by both backends under the same tests; the rules — what a change does, what it audits, how the chain
//! links — are backend-neutral code. Replicas elect one controller through a lease ([`Store::take_lease`]);
//! the controller's writes carry a [`Fence`] that the database checks in the same transaction.
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
mod copy;
mod environment;
mod postgres;
mod rollout;
pub mod session;
mod sql;
mod sqlite;
mod stored;
mod token;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sluice_engine::{CheckDecision, OutboxItem, Rollout, Status};
use sluice_flags::{Flag, FlagError, SegmentDef, Snapshot};

pub use audit::{AuditEvent, Verification};
pub use copy::{copy, Copied, Dump};
pub use environment::check_env_name;
pub use postgres::PgStore;
pub use sqlite::{Durability, SqliteStore};
pub use token::{Principal, Role, TokenInfo, TokenTable};

/// What [`Store::bootstrap_token`] did with `SLUICE_ADMIN_TOKEN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// It is an active token's secret already.
    Kept,
    /// It is a secret rotated away whose overlap has not ended: it works until `until` (RFC 3339).
    Overlapping {
        /// The token it belongs to.
        name: String,
        /// When it stops working.
        until: String,
    },
    /// It replaced the secret of the token `name`, which no longer works.
    Replaced {
        /// The token.
        name: String,
    },
    /// A new token `name` was made with it.
    Added {
        /// The token.
        name: String,
    },
}

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
    /// The environment the changes were made in.
    pub env: String,
    /// The whole catalog of that environment after the changes, compiled.
    pub snapshot: Snapshot,
    /// Other environments whose state changed too (a new flag appears in each, a definition or a segment
    /// is shared), each compiled; they are at `revision` too.
    pub others: Vec<(String, Snapshot)>,
    /// The catalog's revision after the changes.
    pub revision: i64,
}

/// One environment: a named set of flag states with its own revision (its ETag).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Environment {
    /// Its name (`staging`, `production`).
    pub name: String,
    /// The catalog revision at its last change.
    pub revision: i64,
    /// When it was made (RFC 3339; for `production` of a store from before environments, the upgrade).
    pub created_at: String,
}

/// Every environment's catalog, compiled, read in one transaction.
#[derive(Debug)]
pub struct Catalogs {
    /// The catalog revision (of all environments: any change bumps it).
    pub revision: i64,
    /// Each environment with its snapshot, in name order.
    pub envs: Vec<(Environment, Snapshot)>,
}

/// A change to the environments themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvChange {
    /// A new environment, with every flag in it disabled at 0 %.
    Create(String),
    /// A new name for an environment: its flags, tokens, rollouts and counts follow.
    Rename {
        /// The name now.
        from: String,
        /// The new name.
        to: String,
    },
    /// Removes an environment; refused while a flag is enabled in it, a rollout runs in it, an active token
    /// belongs to it only, or it is the last one.
    Delete(String),
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
    /// The catalog changed since the caller read it (another replica wrote): read again and retry.
    Stale {
        /// The revision the caller planned from.
        expected: i64,
        /// The revision in the store.
        revision: i64,
    },
    /// A controller write whose fence no longer holds the controller lease: another replica leads now.
    Fenced {
        /// The fencing token the writer held (0: none).
        held: i64,
        /// Who holds the lease now, and its token.
        current: Option<(String, i64)>,
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
            StoreError::Stale { expected, revision } => {
                write!(f, "the flag catalog changed meanwhile (revision {expected} → {revision}); read it again and retry")
            }
            StoreError::Fenced { held, current: Some((holder, token)) } => write!(
                f,
                "this replica no longer leads the controller (its fencing token {held}; `{holder}` holds token {token}): \
                 the write was refused"
            ),
            StoreError::Fenced { held, current: None } => {
                write!(f, "this replica does not lead the controller (fencing token {held}): the write was refused")
            }
            StoreError::Database(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The error of a database call that did not answer in time (counted as the database being out of reach).
pub fn timed_out() -> sqlx::Error {
    sqlx::Error::PoolTimedOut
}

impl StoreError {
    /// The database is out of reach (down, restarting, the network): not this data's fault, and worth
    /// retrying.
    pub fn is_unreachable(&self) -> bool {
        use sqlx::Error;
        match self {
            StoreError::Database(Error::Io(_) | Error::PoolTimedOut | Error::PoolClosed | Error::Tls(_)) => true,
            // PostgreSQL's "operator intervention" (57P: shutting down) and "connection exception" (08).
            StoreError::Database(Error::Database(d)) => {
                d.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
            }
            _ => false,
        }
    }
}

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
    /// The catalog of the only environment compiled into a snapshot, and the catalog's revision;
    /// `Conflict` when there are several (read [`snapshots`](Self::snapshots)).
    async fn snapshot(&self) -> Result<(Snapshot, i64), StoreError> {
        let catalogs = self.snapshots().await?;
        let revision = catalogs.revision;
        let only = environment::only(catalogs.envs.into_iter().map(|(e, s)| (e.name, s)).collect())?;
        Ok((only, revision))
    }

    /// Every environment's catalog compiled, with its revision, and the catalog's revision.
    async fn snapshots(&self) -> Result<Catalogs, StoreError>;

    /// The environments, in name order.
    async fn environments(&self) -> Result<Vec<Environment>, StoreError>;

    /// Creates, renames or deletes an environment as `actor`, audited (`env.create`, `env.rename`,
    /// `env.delete`) in the same transaction; bumps the catalog's revision.
    async fn change_env(
        &self,
        actor: &str,
        change: EnvChange,
        reason: Option<String>,
    ) -> Result<AuditEvent, StoreError>;

    /// The catalog's revision now: one small read, to learn whether another replica changed it.
    async fn revision(&self) -> Result<i64, StoreError>;

    /// Applies several changes all or nothing (imports): one transaction, one audit event per change, and the
    /// catalog validated once at the end, so that a batch may, say, create a segment and the flags using it.
    async fn apply_all(
        &self,
        actor: &str,
        changes: Vec<Change>,
        reason: Option<String>,
    ) -> Result<AppliedBatch, StoreError> {
        self.apply_all_at(actor, changes, reason, None).await
    }

    /// [`apply_all`](Self::apply_all), refused with [`StoreError::Stale`] unless the catalog is still at
    /// `expect_revision`: changes planned from a replica's copy of the catalog must not overwrite a change
    /// another replica committed meanwhile. Made in the only environment (`Conflict` when there are
    /// several: use [`apply_in`](Self::apply_in)).
    async fn apply_all_at(
        &self,
        actor: &str,
        changes: Vec<Change>,
        reason: Option<String>,
        expect_revision: Option<i64>,
    ) -> Result<AppliedBatch, StoreError> {
        self.apply_in(actor, None, changes, reason, expect_revision).await
    }

    /// [`apply_all_at`](Self::apply_all_at) in the environment `env` (`None`: the only one).
    async fn apply_in(
        &self,
        actor: &str,
        env: Option<&str>,
        changes: Vec<Change>,
        reason: Option<String>,
        expect_revision: Option<i64>,
    ) -> Result<AppliedBatch, StoreError>;

    /// The same store, whose every write first checks in its transaction that `fence` still holds the
    /// controller lease ([`StoreError::Fenced`] otherwise). The controller writes through this.
    fn fenced(&self, fence: Fence) -> std::sync::Arc<dyn Store>;

    /// Takes, renews or fails to take a lease, judged by the database's clock; taking it from another
    /// holder makes a new, larger token and writes an audit event (`lease.acquire`). The answer says
    /// whether the bidder holds the lease now, with the lease as it stands after.
    async fn take_lease(&self, bid: &LeaseBid<'_>) -> Result<LeaseAnswer, StoreError>;

    /// The lease called `name`, if anyone ever took it (expired or not).
    async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError>;

    /// Lets a lease go at once (a replica shutting down), so that another takes it without waiting for
    /// it to expire. Returns whether `holder` with `token` still held it.
    async fn release_lease(&self, name: &str, holder: &str, token: i64) -> Result<bool, StoreError>;

    /// Whether a fenced store's fence still holds the lease (always, for a store without a fence): asked
    /// before an effect runs, so that a deposed replica that wakes up does not act twice.
    async fn fence_holds(&self) -> Result<(), StoreError>;

    /// Where other replicas' commits are announced (`LISTEN`), when the database is shared: PostgreSQL's URL.
    fn change_feed(&self) -> Option<ChangeFeed> {
        None
    }

    /// Every row, read in one transaction (for [`copy`]).
    async fn dump(&self) -> Result<Dump, StoreError>;

    /// Writes a [`Dump`] into this store, which must be empty (`Conflict` otherwise), in one transaction.
    async fn restore(&self, dump: &Dump) -> Result<(), StoreError>;

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
    /// the store keeps its SHA-256. An `sdk` token belongs to the only environment (`Conflict` when there
    /// are several: use [`create_token_in`](Self::create_token_in)); any other may act in every one.
    async fn create_token(&self, actor: &str, name: &str, role: Role) -> Result<(TokenInfo, String), StoreError> {
        self.create_token_in(actor, name, role, None).await
    }

    /// [`create_token`](Self::create_token), limited to the environments `envs` (`None`: every one; an
    /// `sdk` token must name exactly one, or there must be only one).
    async fn create_token_in(
        &self,
        actor: &str,
        name: &str,
        role: Role,
        envs: Option<Vec<String>>,
    ) -> Result<(TokenInfo, String), StoreError>;

    /// Makes `text` (`SLUICE_ADMIN_TOKEN`) an active token named `name` with `role`: kept when it is one
    /// already; the new secret of the token `name` when that exists (the secret it replaces is revoked,
    /// audited as `token.rotate`); a new token otherwise. A text that was revoked or rotated away is
    /// refused (`Conflict`): a replica started with a leaked, replaced token must not bring it back.
    async fn bootstrap_token(&self, actor: &str, name: &str, role: Role, text: &str) -> Result<Bootstrap, StoreError>;

    /// Gives the token `name` a new secret, returned once; the old one keeps working for `overlap` (so that
    /// its users can switch) and is revoked after. Audited as `token.rotate`.
    async fn rotate_token(
        &self,
        actor: &str,
        name: &str,
        overlap: std::time::Duration,
    ) -> Result<(TokenInfo, String, AuditEvent), StoreError>;

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

    /// Adds evaluation counts reported by an SDK of the environment `env`: (flag, variant) → count.
    async fn record_client_metrics(&self, env: &str, counts: &[(String, String, u64)]) -> Result<(), StoreError>;

    /// The evaluation counts kept so far in `env`: (flag, variant, count), by flag then variant.
    async fn client_metrics(&self, env: &str) -> Result<Vec<(String, String, u64)>, StoreError>;

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
    async fn notification_delivered(&self, id: &str, destination: &Destination) -> Result<(), StoreError>;

    /// Records a failed delivery; the next try is due after `retry_in`.
    async fn notification_failed(
        &self,
        id: &str,
        destination: &Destination,
        error: &str,
        retry_in: std::time::Duration,
    ) -> Result<(), StoreError>;

    /// Records a last failed delivery and gives the notification up: it is dead, no longer tried, and the
    /// audit event saying so (`rollout.notification_dead`) is written in the same transaction, once.
    async fn notification_dead(
        &self,
        id: &str,
        destination: &Destination,
        error: &str,
        detail: Value,
    ) -> Result<AuditEvent, StoreError>;

    /// Dead notifications, oldest first: of one rollout, or of all.
    async fn dead_notifications(&self, rollout: Option<&str>) -> Result<Vec<QueuedNotification>, StoreError>;

    /// Sends a rollout's dead notifications again (a person's decision, audited as
    /// `rollout.notification_redeliver` by `actor` with `reason`): each is due now with its attempts reset.
    /// Returns how many, and the audit event when there were any.
    async fn redeliver(
        &self,
        actor: &str,
        rollout: &str,
        reason: Option<String>,
    ) -> Result<(usize, Option<AuditEvent>), StoreError>;

    /// Rollouts, oldest first; only the active ones with `active_only`.
    async fn rollouts(&self, active_only: bool) -> Result<Vec<RolloutRecord>, StoreError>;

    /// One rollout.
    async fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError>;

    /// Appends one tick's decisions of a rollout (each counted as changed).
    async fn record_decisions(&self, id: &str, at_ms: i64, decisions: &[Decided]) -> Result<(), StoreError>;

    /// Drops the decisions older than `before_ms` whose outcome did not change; returns how many.
    async fn prune_decisions(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Saves the built-in metric aggregates `replica` gathered, one JSON body per flag (replacing what it
    /// saved for that flag before). Each replica keeps its own rows, so that the leader can merge them all.
    async fn save_metrics(&self, replica: &str, flags: &[(String, String)], at_ms: i64) -> Result<(), StoreError>;

    /// Saved built-in metric aggregates: (replica, flag, body), of every replica.
    async fn load_metrics(&self) -> Result<Vec<(String, String, String)>, StoreError>;

    /// The last `limit` decisions of a rollout, oldest first.
    async fn decisions(&self, id: &str, limit: u32) -> Result<Vec<Decided>, StoreError>;

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

/// Where to listen for other replicas' commits ([`Store::change_feed`]).
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    url: String,
}

/// A connection that wakes whenever any replica commits a write.
pub struct ChangeListener(sqlx::postgres::PgListener);

impl ChangeFeed {
    /// Connects and listens.
    pub async fn listen(&self) -> Result<ChangeListener, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen(postgres::CHANGES_CHANNEL).await?;
        Ok(ChangeListener(listener))
    }
}

impl ChangeListener {
    /// Waits for the next commit; an error means the connection is lost (listen again).
    pub async fn next(&mut self) -> Result<(), StoreError> {
        // A lost connection shows as `None` once (sqlx then reconnects by itself): reported as an error,
        // so that the caller listens again and reads what it may have missed meanwhile.
        match self.0.try_recv().await? {
            Some(_) => Ok(()),
            None => Err(StoreError::Database(sqlx::Error::PoolClosed)),
        }
    }
}

/// The name of the lease whose holder runs the rollout controller.
pub const CONTROLLER_LEASE: &str = "controller";

/// A controller's proof of leadership: the fencing token of the lease it holds (0 while it holds none).
/// Shared between the replica's lease loop, which sets it, and the controller's store, whose every write
/// checks it against the database ([`Store::fenced`]).
///
/// ```
/// let fence = sluice_store::Fence::default();
/// assert_eq!(fence.token(), 0);
/// fence.set(7);
/// assert_eq!(fence.clone().token(), 7);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Fence(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl Fence {
    /// The token held; 0 for none.
    pub fn token(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Holds `token` (0 lets go).
    pub fn set(&self, token: i64) {
        self.0.store(token, std::sync::atomic::Ordering::Release)
    }
}

/// A bid for a lease ([`Store::take_lease`]).
#[derive(Debug, Clone)]
pub struct LeaseBid<'a> {
    /// Which lease ([`CONTROLLER_LEASE`]).
    pub name: &'a str,
    /// Who bids: a name unique among the replicas (e.g. host and port).
    pub holder: &'a str,
    /// Where the bidder answers, for replicas that forward to the holder.
    pub address: &'a str,
    /// The token the bidder holds now (0: none); a bidder renews with the token it holds.
    pub held: i64,
    /// How long the lease lasts from now, by the database's clock.
    pub ttl: std::time::Duration,
    /// Take it even from a live holder: only for a store one process uses alone (SQLite), where a lease
    /// left by a killed process must not delay the restarted one.
    pub takeover: bool,
    /// The bidder's first bid since it started: a lease held under its own name with another token was
    /// left by its previous process (killed), and is taken at once. Only then: two live processes given
    /// the same name must not take it from each other at every renewal.
    pub fresh: bool,
}

/// A lease as the database has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    /// Which lease.
    pub name: String,
    /// Its holder.
    pub holder: String,
    /// Where the holder answers.
    pub address: String,
    /// The fencing token: larger with each new holder.
    pub token: i64,
    /// Milliseconds until it expires (negative: expired that long ago), by the database's clock.
    pub expires_in_ms: i64,
    /// When this holder took it (ms since the epoch, the database's clock).
    pub since_ms: i64,
}

/// What a bid for a lease got ([`Store::take_lease`]).
///
/// The holder's name alone does not say: a live lease under the bidder's own name may be a term the
/// bidder gave up (it stepped down when it could not renew) or another process's of the same name, and
/// neither is renewed by the bid.
///
/// ```
/// use sluice_store::{Lease, LeaseAnswer};
/// let lease = Lease { name: "controller".into(), holder: "r1".into(), address: String::new(), token: 3,
///     expires_in_ms: 15_000, since_ms: 0 };
/// let answer = LeaseAnswer::Refused(lease);
/// assert!(!answer.held());
/// assert_eq!(answer.lease().holder, "r1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// The bidder holds the lease: it renewed its term, or took a new one (a larger token).
    Held(Lease),
    /// The bid wrote nothing: the lease stands as it was, live, in another term than the bid's.
    Refused(Lease),
}

impl LeaseAnswer {
    /// Whether the bidder holds the lease now.
    pub fn held(&self) -> bool {
        matches!(self, LeaseAnswer::Held(_))
    }

    /// The lease as it stands after the bid.
    pub fn lease(&self) -> &Lease {
        match self {
            LeaseAnswer::Held(lease) | LeaseAnswer::Refused(lease) => lease,
        }
    }

    /// The lease as it stands after the bid, taken out of the answer.
    pub fn into_lease(self) -> Lease {
        match self {
            LeaseAnswer::Held(lease) | LeaseAnswer::Refused(lease) => lease,
        }
    }
}

/// Opens the store a `--database` value names: `postgres://…` (or `postgresql://…`) for PostgreSQL, and
/// `sqlite:PATH` or a plain path for a SQLite file.
///
/// ```no_run
/// # async fn run() -> Result<(), sluice_store::StoreError> {
/// let store = sluice_store::open("data/sluice.db").await?;
/// # Ok(()) }
/// ```
pub async fn open(database: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    match sqlite_file(database) {
        Some(path) => Ok(std::sync::Arc::new(SqliteStore::open(path).await?)),
        None => Ok(std::sync::Arc::new(PgStore::connect(database).await?)),
    }
}

/// The SQLite file a `--database` value names, or `None` for a PostgreSQL URL.
///
/// ```
/// assert_eq!(sluice_store::sqlite_file("sqlite:data/sluice.db"), Some("data/sluice.db"));
/// assert_eq!(sluice_store::sqlite_file("postgres://db.internal/sluice"), None);
/// ```
pub fn sqlite_file(database: &str) -> Option<&str> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        return None;
    }
    Some(database.strip_prefix("sqlite://").or_else(|| database.strip_prefix("sqlite:")).unwrap_or(database))
}

/// The one server writing a SQLite file: held by `sluice serve` for its life (an advisory lock on
/// `FILE.lock`, released by the kernel when the process ends, however it ends). Two servers on one file
/// would each serve their own flags and tokens from memory and never hear of the other's changes.
#[derive(Debug)]
pub struct WriterLock {
    _file: std::fs::File,
}

impl WriterLock {
    /// Takes the lock of the SQLite file `database`, or says which process holds it.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = dir.path().join("sluice.db");
    /// let held = sluice_store::WriterLock::take(&db).unwrap();
    /// let refused = sluice_store::WriterLock::take(&db).unwrap_err();
    /// assert!(refused.to_string().contains(&format!("pid {}", std::process::id())), "{refused}");
    /// drop(held);
    /// sluice_store::WriterLock::take(&db).unwrap();
    /// ```
    pub fn take(database: &std::path::Path) -> Result<WriterLock, StoreError> {
        use std::io::{Read, Seek, Write};
        let path = {
            let mut p = database.as_os_str().to_owned();
            p.push(".lock");
            std::path::PathBuf::from(p)
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let io = |e: std::io::Error| StoreError::Database(sqlx::Error::Io(e));
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "another process".to_string() } else { holder.to_string() };
                return Err(StoreError::Conflict {
                    message: format!(
                        "{} is in use by another Sluice server ({holder}): one SQLite file has one server. \
                         Stop that one first, or give this one its own --data-dir; several replicas of one \
                         installation need PostgreSQL (--database postgres://…, see docs/deploy.md)",
                        database.display()
                    ),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "pid {}, started {started}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(WriterLock { _file: file })
    }
}

/// An audit event to write with a rollout's change: (action, details, reason).
pub type AuditNote = (String, Value, Option<String>);

/// A rollout as stored: typed, so that the controller never pokes at JSON. The engine state and the outbox
/// are kept as JSON columns; a row that does not parse is reported as [`StoreError::Corrupt`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RolloutRecord {
    /// Its id.
    pub id: String,
    /// The environment it runs in.
    pub env: String,
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

/// One check's decision of a tick, as kept: the engine's decision and what the tick did.
///
/// ```
/// let json = r#"{"at": 1, "check": "errors", "kind": "gate", "value": 0.01, "threshold": "< 0.02",
///   "rule": {"below": {"limit": 0.02}}, "outcome": "holds", "note": null, "run": 1, "needed": 1,
///   "dry_run": false, "action": "promoted"}"#;
/// let d: sluice_store::Decided = serde_json::from_str(json).unwrap();
/// assert_eq!(d.decision.threshold, sluice_engine::Threshold::Below { limit: 0.02 });
/// assert_eq!(d.action, "promoted");
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decided {
    /// The decision.
    #[serde(flatten)]
    pub decision: CheckDecision,
    /// What the tick did: `promoted`, `paused`, `rolled_back`, … or `none`.
    #[serde(default)]
    pub action: String,
}

/// One check's decision of a tick, to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision {
    /// The decision and what the tick did.
    pub decided: Decided,
    /// Its outcome differs from the check's previous one: kept beyond the retention time.
    pub changed: bool,
}

/// Where a notification goes: the server's log, or the plan's `notify[i]`. Stored as its text (`log`,
/// `notify[2]`), which is also how people read it; typed in memory, so nothing parses it twice.
///
/// ```
/// use sluice_store::Destination;
/// let d: Destination = "notify[2]".parse().unwrap();
/// assert_eq!(d, Destination::Notifier(2));
/// assert_eq!(d.to_string(), "notify[2]");
/// assert!("notify[x]".parse::<Destination>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Destination {
    /// The server's log: every notification goes there.
    Log,
    /// The plan's `notify[i]`.
    Notifier(usize),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Log => f.write_str("log"),
            Destination::Notifier(i) => write!(f, "notify[{i}]"),
        }
    }
}

impl std::str::FromStr for Destination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "log" {
            return Ok(Destination::Log);
        }
        s.strip_prefix("notify[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|i| i.parse().ok())
            .map(Destination::Notifier)
            .ok_or_else(|| format!("`{s}` is not a destination (`log`, `notify[0]`)"))
    }
}

impl From<Destination> for String {
    fn from(d: Destination) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Destination {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A notification to queue: delivered at least once to `destination`, keyed by (`id`, `destination`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// The event's id.
    pub id: String,
    /// The log, or the plan's `notify[i]`.
    pub destination: Destination,
    /// The rollout it is about.
    pub rollout_id: String,
    /// What to deliver.
    pub body: Value,
}

/// A queued notification not yet delivered (or given up: dead).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueuedNotification {
    /// The event's id.
    pub id: String,
    /// The log, or the plan's `notify[i]`.
    pub destination: Destination,
    /// The rollout it is about.
    pub rollout_id: String,
    /// What to deliver.
    pub body: Value,
    /// Failed tries so far.
    pub attempts: u32,
    /// The last try's error.
    pub last_error: Option<String>,
    /// When it was queued (ms since the epoch).
    pub created_ms: i64,
    /// When it was given up, if it was.
    pub dead_ms: Option<i64>,
}
