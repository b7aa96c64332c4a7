//! The one write path of the flag catalog: every change, a person's or a rollout's, is computed from the
//! live snapshot, committed with its audit event, then published — evaluations see it from the next
//! request on — and told to the change stream.

use std::sync::Arc;

use serde::Serialize;
use sluice_flags::{LiveFlags, Snapshot};
use sluice_store::{AppliedBatch, AuditEvent, Change, Store, StoreError};
use tokio::sync::broadcast;

/// One committed change as the stream tells it: a catalog write, or a rollout's transition or tick.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeEvent {
    /// The catalog revision after the change (unchanged by a rollout's own events).
    pub revision: i64,
    /// The audit events the change wrote.
    pub events: Vec<AuditEvent>,
    /// Set when a rollout changed (a transition, a tick's decisions); `None` for a catalog write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutChange>,
}

/// What a rollout did, for a dashboard or `rollout watch` to follow without polling.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutChange {
    /// The rollout's id.
    pub id: String,
    /// Its status name after the change.
    pub status: &'static str,
    /// Its phase (1-based) and percentage after the change.
    pub phase: usize,
    /// The percentage of the phase.
    pub percent: u8,
    /// The tick's decisions, when the change is a tick.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<serde_json::Value>,
}

/// Called with each snapshot before it goes live, e.g. to serialize what the Unleash client API serves
/// once per revision rather than once per request.
pub type OnPublish = Box<dyn Fn(&Snapshot, i64) + Send + Sync>;

/// The live flag catalog and its only write path.
pub struct Catalog {
    store: Arc<dyn Store>,
    live: LiveFlags,
    revision: std::sync::atomic::AtomicI64,
    /// Writes are read-modify-write over the live catalog: one at a time, published before the next.
    writer: tokio::sync::Mutex<()>,
    changes: broadcast::Sender<ChangeEvent>,
    on_publish: OnPublish,
}

/// What a committed write returns; the snapshot itself is already published.
#[derive(Debug, Serialize)]
pub struct Written {
    /// The audit events the write made.
    pub events: Vec<AuditEvent>,
    /// The catalog's revision after it.
    pub revision: i64,
}

impl Catalog {
    /// Loads the catalog from `store`; `on_publish` sees this snapshot and every later one.
    pub async fn load(store: Arc<dyn Store>, on_publish: OnPublish) -> Result<Catalog, StoreError> {
        let (snapshot, revision) = store.snapshot().await?;
        on_publish(&snapshot, revision);
        Ok(Catalog {
            store,
            live: LiveFlags::new(snapshot),
            revision: revision.into(),
            writer: tokio::sync::Mutex::new(()),
            changes: broadcast::channel(1024).0,
            on_publish,
        })
    }

    /// The store behind it.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The live flags, as evaluations see them.
    pub fn live(&self) -> &LiveFlags {
        &self.live
    }

    /// The revision last published.
    pub fn revision(&self) -> i64 {
        self.revision.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Subscribes to committed changes.
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.changes.subscribe()
    }

    /// Applies changes computed from the current catalog by `plan`, all or nothing, then publishes the new
    /// snapshot and tells the stream. `plan`'s error type is the caller's, so it can refuse in its own terms.
    pub async fn write<E, F>(&self, actor: &str, reason: Option<String>, plan: F) -> Result<Written, E>
    where
        F: FnOnce(&Snapshot) -> Result<Vec<Change>, E>,
        E: From<StoreError>,
    {
        let _one_writer = self.writer.lock().await;
        let changes = plan(&self.live.load())?;
        let AppliedBatch { events, snapshot, revision } = self.store.apply_all(actor, changes, reason).await?;
        (self.on_publish)(&snapshot, revision);
        self.live.replace(snapshot);
        self.revision.store(revision, std::sync::atomic::Ordering::Release);
        // Nobody listening is fine.
        let _ = self.changes.send(ChangeEvent { revision, events: events.clone(), rollout: None });
        Ok(Written { events, revision })
    }

    /// Tells the stream about a rollout's change (its audit events were written by the store already).
    pub(crate) fn tell(&self, events: Vec<AuditEvent>, rollout: RolloutChange) {
        let _ = self.changes.send(ChangeEvent { revision: self.revision(), events, rollout: Some(rollout) });
    }
}
