//! Moving a whole installation from one store to another (`sluice store copy`): every row as it is, audit
//! hashes included, so that the chain verifies on arrival exactly as it did before.

use crate::audit::AuditRow;
use crate::rollout::RolloutRow;
use crate::{Store, StoreError, Verification};

/// Every row of a store, read in one transaction: what [`Store::restore`] writes into an empty one.
#[derive(Debug, Clone)]
pub struct Dump {
    pub(crate) revision: i64,
    pub(crate) environments: Vec<(String, i64, String)>,
    pub(crate) flags: Vec<(String, String, String, String)>,
    pub(crate) segments: Vec<(i64, String, String)>,
    pub(crate) audit: Vec<AuditRow>,
    #[allow(clippy::type_complexity)]
    pub(crate) tokens: Vec<(String, String, String, String, String, String, Option<String>, Option<String>)>,
    pub(crate) client_metrics: Vec<(String, String, String, i64)>,
    pub(crate) rollouts: Vec<RolloutRow>,
    pub(crate) decisions: Vec<(String, i64, String, i64)>,
    #[allow(clippy::type_complexity)]
    pub(crate) notifications:
        Vec<(String, String, String, String, i64, i64, i64, Option<i64>, Option<String>, Option<i64>)>,
    pub(crate) metrics: Vec<(String, String, String, i64)>,
    pub(crate) server_keys: Vec<(String, String, String)>,
    pub(crate) retired_secrets: Vec<(String, String, String)>,
}

/// A table a copy moves: its columns in the order of the dump's tuples, and an order to read its rows in
/// that makes two dumps of the same store equal. The one list both `dump` and `restore` read, so that a
/// column added to one cannot be forgotten in the other.
pub(crate) struct Table {
    pub(crate) name: &'static str,
    pub(crate) columns: &'static str,
    pub(crate) order: &'static str,
}

impl Table {
    /// `SELECT columns FROM name ORDER BY order`.
    pub(crate) fn select(&self) -> String {
        format!("SELECT {} FROM {} ORDER BY {}", self.columns, self.name, self.order)
    }

    /// `INSERT INTO name (columns) VALUES ($1, …)`.
    pub(crate) fn insert(&self) -> String {
        let places: Vec<String> = (1..=self.columns.split(',').count()).map(|i| format!("${i}")).collect();
        format!("INSERT INTO {} ({}) VALUES ({})", self.name, self.columns, places.join(", "))
    }
}

pub(crate) const ENVIRONMENTS: Table =
    Table { name: "environments", columns: "name, revision, created_at", order: "name" };
pub(crate) const FLAGS: Table = Table { name: "flags", columns: "env, key, body, updated_at", order: "env, key" };
pub(crate) const SEGMENTS: Table = Table { name: "segments", columns: "id, name, body", order: "id" };
pub(crate) const TOKENS: Table = Table {
    name: "tokens",
    columns: "id, name, role, secret_sha256, created_at, created_by, revoked_at, envs",
    order: "created_at, id",
};
pub(crate) const RETIRED_SECRETS: Table =
    Table { name: "retired_secrets", columns: "secret_sha256, token_id, until", order: "token_id, secret_sha256" };
pub(crate) const CLIENT_METRICS: Table =
    Table { name: "client_metrics", columns: "env, flag, variant, count", order: "env, flag, variant" };
pub(crate) const ROLLOUTS: Table = Table {
    name: "rollouts",
    columns: "id, flag, plan_name, plan_text, original_flag, state, status, active, outbox, created_by, \
              created_at, updated_at, env",
    order: "created_at, id",
};
pub(crate) const DECISIONS: Table =
    Table { name: "decisions", columns: "rollout_id, at_ms, body, changed", order: "seq" };
pub(crate) const NOTIFICATIONS: Table = Table {
    name: "notifications",
    columns: "id, destination, rollout_id, body, created_ms, attempts, next_ms, delivered_ms, last_error, dead_ms",
    order: "created_ms, id, destination",
};
pub(crate) const METRICS: Table =
    Table { name: "metrics", columns: "replica, flag, body, saved_at_ms", order: "replica, flag" };
pub(crate) const SERVER_KEYS: Table =
    Table { name: "server_keys", columns: "name, key_hex, created_at", order: "name" };

/// What a copy moved, to print and to compare with the source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Copied {
    /// Environments.
    pub environments: usize,
    /// Flags (one per flag and environment).
    pub flags: usize,
    /// Segments.
    pub segments: usize,
    /// Audit events.
    pub audit_events: usize,
    /// Tokens, revoked ones included.
    pub tokens: usize,
    /// Rollouts, ended ones included.
    pub rollouts: usize,
    /// Kept decisions.
    pub decisions: usize,
    /// Queued or delivered notifications.
    pub notifications: usize,
    /// The chain's head, the same in both stores.
    pub head: String,
}

impl Dump {
    fn counts(&self, head: String) -> Copied {
        Copied {
            environments: self.environments.len(),
            flags: self.flags.len(),
            segments: self.segments.len(),
            audit_events: self.audit.len(),
            tokens: self.tokens.len(),
            rollouts: self.rollouts.len(),
            decisions: self.decisions.len(),
            notifications: self.notifications.len(),
            head,
        }
    }
}

/// Copies every row of `from` into `to`, which must be empty, then verifies the chain in `to` against the
/// head `from` had: a copy that lost or changed an event fails here, not at the next audit.
///
/// ```no_run
/// # async fn run() -> Result<(), sluice_store::StoreError> {
/// let from = sluice_store::open("sqlite:data/sluice.db").await?;
/// let to = sluice_store::open("postgres://sluice@127.0.0.1/sluice").await?;
/// let copied = sluice_store::copy(&*from, &*to).await?;
/// assert_eq!(copied.head, to.head().await?);
/// # Ok(()) }
/// ```
pub async fn copy(from: &dyn Store, to: &dyn Store) -> Result<Copied, StoreError> {
    let dump = from.dump().await?;
    let head = dump.audit.last().map_or_else(|| crate::audit::GENESIS.to_string(), |r| r.hash.clone());
    match from.verify(Some(&head)).await? {
        Verification::Intact { .. } => {}
        broken => {
            return Err(StoreError::Conflict {
                message: format!("the source's audit chain does not verify ({broken:?}); nothing was copied"),
            })
        }
    }
    to.restore(&dump).await?;
    match to.verify(Some(&head)).await? {
        Verification::Intact { .. } => Ok(dump.counts(head)),
        broken => Err(StoreError::Corrupt {
            message: format!("the copied audit chain does not verify ({broken:?}); do not use the destination"),
        }),
    }
}
