//! Moving a whole installation from one store to another (`sluice store copy`): every row as it is, audit
//! hashes included, so that the chain verifies on arrival exactly as it did before.

use crate::audit::AuditRow;
use crate::rollout::RolloutRow;
use crate::{Store, StoreError, Verification};

/// Every row of a store, read in one transaction: what [`Store::restore`] writes into an empty one.
#[derive(Debug, Clone)]
pub struct Dump {
    pub(crate) revision: i64,
    pub(crate) flags: Vec<(String, String, String)>,
    pub(crate) segments: Vec<(i64, String, String)>,
    pub(crate) audit: Vec<AuditRow>,
    #[allow(clippy::type_complexity)]
    pub(crate) tokens: Vec<(String, String, String, String, String, String, Option<String>)>,
    pub(crate) client_metrics: Vec<(String, String, i64)>,
    pub(crate) rollouts: Vec<RolloutRow>,
    pub(crate) decisions: Vec<(String, i64, String, i64)>,
    #[allow(clippy::type_complexity)]
    pub(crate) notifications:
        Vec<(String, String, String, String, i64, i64, i64, Option<i64>, Option<String>, Option<i64>)>,
    pub(crate) metrics: Vec<(String, String, String, i64)>,
    pub(crate) server_keys: Vec<(String, String, String)>,
    pub(crate) retired_secrets: Vec<(String, String, String)>,
}

/// What a copy moved, to print and to compare with the source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Copied {
    /// Flags.
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
