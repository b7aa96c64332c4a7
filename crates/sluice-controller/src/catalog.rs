//! The one write path of the flag catalog: every change, a person's or a rollout's, is computed from the
//! live snapshot, committed with its audit event, then published — evaluations see it from the next
//! request on — and told to the change stream.

use std::sync::Arc;

use serde::Serialize;
use sluice_flags::{LiveFlags, Snapshot};
use sluice_store::{AppliedBatch, AuditEvent, Change, Store, StoreError};
use tokio::sync::broadcast;

/// One committed change as the stream tells it: a catalog write, or a rollout's transition or tick.
/// Subscribers share one copy ([`Catalog::subscribe`] hands out an `Arc`) and its JSON, written once.
///
/// ```
/// use sluice_controller::ChangeEvent;
/// let change = ChangeEvent::new(7, Vec::new(), None);
/// assert_eq!(change.to_json(), r#"{"revision":7,"events":[]}"#);
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct ChangeEvent {
    /// The catalog revision after the change (unchanged by a rollout's own events).
    pub revision: i64,
    /// The audit events the change wrote.
    pub events: Vec<AuditEvent>,
    /// Set when a rollout changed (a transition, a tick's decisions); `None` for a catalog write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutChange>,
    /// The JSON above, written by the first subscriber that needs it: a hundred rollouts ticking each
    /// second to a hundred watchers would otherwise serialize ten thousand times a second.
    #[serde(skip)]
    json: std::sync::OnceLock<String>,
    /// The server-sent event that carries it, written once for every watcher likewise.
    #[serde(skip)]
    sse: std::sync::OnceLock<String>,
}

impl ChangeEvent {
    /// A change to tell.
    pub fn new(revision: i64, events: Vec<AuditEvent>, rollout: Option<RolloutChange>) -> ChangeEvent {
        ChangeEvent { revision, events, rollout, json: Default::default(), sse: Default::default() }
    }

    /// The change as JSON (the stream's `data:`).
    pub fn to_json(&self) -> &str {
        self.json.get_or_init(|| serde_json::to_string(self).expect("a change serializes"))
    }

    /// The change as one server-sent event: `rollout` for a rollout's change, `change` for a catalog
    /// write, the revision as its id and the JSON as its data (JSON text has no raw line break, so one
    /// `data:` line holds it).
    ///
    /// ```
    /// use sluice_controller::ChangeEvent;
    /// let change = ChangeEvent::new(7, Vec::new(), None);
    /// assert_eq!(change.to_sse(), "event: change\nid: 7\ndata: {\"revision\":7,\"events\":[]}\n\n");
    /// ```
    pub fn to_sse(&self) -> &str {
        self.sse.get_or_init(|| {
            let kind = if self.rollout.is_some() { "rollout" } else { "change" };
            format!("event: {kind}\nid: {}\ndata: {}\n\n", self.revision, self.to_json())
        })
    }
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
    pub decisions: Vec<sluice_store::Decided>,
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
    changes: broadcast::Sender<Arc<ChangeEvent>>,
    on_publish: OnPublish,
    /// The audit events this process told the stream itself (the latest few thousand): a replica that
    /// follows the shared audit log does not tell its watchers about them twice.
    told: parking_lot::Mutex<std::collections::VecDeque<i64>>,
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
            told: Default::default(),
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
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent>> {
        self.changes.subscribe()
    }

    /// Applies changes computed from the current catalog by `plan`, all or nothing, then publishes the new
    /// snapshot and tells the stream. `plan`'s error type is the caller's, so it can refuse in its own terms.
    pub async fn write<E, F>(&self, actor: &str, reason: Option<String>, plan: F) -> Result<Written, E>
    where
        F: FnMut(&Snapshot) -> Result<Vec<Change>, E>,
        E: From<StoreError>,
    {
        self.write_through(&*self.store, actor, reason, plan).await
    }

    /// [`write`](Self::write) through another handle on the same store: the controller's, whose writes
    /// carry its fence.
    ///
    /// The changes are planned from this replica's copy of the catalog, which may be a few milliseconds
    /// behind another replica's write: the store refuses a plan made from an older revision
    /// ([`StoreError::Stale`]), and the write is planned again from the catalog as it now is.
    pub async fn write_through<E, F>(
        &self,
        store: &dyn Store,
        actor: &str,
        reason: Option<String>,
        mut plan: F,
    ) -> Result<Written, E>
    where
        F: FnMut(&Snapshot) -> Result<Vec<Change>, E>,
        E: From<StoreError>,
    {
        const TRIES: usize = 5;
        let _one_writer = self.writer.lock().await;
        let mut tries = 0;
        let AppliedBatch { events, snapshot, revision } = loop {
            tries += 1;
            let changes = plan(&self.live.load())?;
            match store.apply_all_at(actor, changes, reason.clone(), Some(self.revision())).await {
                Err(StoreError::Stale { .. }) if tries < TRIES => {
                    self.load_latest().await?;
                }
                written => break written?,
            }
        };
        self.publish(snapshot, revision, events.clone());
        Ok(Written { events, revision })
    }

    /// Loads the catalog again when the store's revision is past the one published (another replica
    /// wrote), publishes it and tells the stream. Returns whether it changed.
    pub async fn reload(&self) -> Result<bool, StoreError> {
        let _one_writer = self.writer.lock().await;
        self.load_latest().await
    }

    /// [`reload`](Self::reload) with the writer lock held.
    async fn load_latest(&self) -> Result<bool, StoreError> {
        // One small read first: most commits (rollout ticks, saved metrics) leave the catalog as it was.
        if self.store.revision().await? <= self.revision() {
            return Ok(false);
        }
        let (snapshot, revision) = self.store.snapshot().await?;
        if revision <= self.revision() {
            return Ok(false);
        }
        self.publish(snapshot, revision, Vec::new());
        Ok(true)
    }

    fn publish(&self, snapshot: Snapshot, revision: i64, events: Vec<AuditEvent>) {
        (self.on_publish)(&snapshot, revision);
        self.live.replace(snapshot);
        self.revision.store(revision, std::sync::atomic::Ordering::Release);
        self.remember_told(&events);
        // Nobody listening is fine.
        let _ = self.changes.send(Arc::new(ChangeEvent::new(revision, events, None)));
    }

    fn remember_told(&self, events: &[AuditEvent]) {
        const KEPT: usize = 4096;
        let mut told = self.told.lock();
        told.extend(events.iter().map(|e| e.seq));
        while told.len() > KEPT {
            told.pop_front();
        }
    }

    /// Tells the stream about changes another replica committed (their audit events), so that this
    /// replica's dashboards and watchers see them too.
    pub fn tell_replicated(&self, mut events: Vec<AuditEvent>, rollout: Option<RolloutChange>) {
        {
            let told = self.told.lock();
            events.retain(|e| !told.contains(&e.seq));
        }
        if !events.is_empty() {
            let _ = self.changes.send(Arc::new(ChangeEvent::new(self.revision(), events, rollout)));
        }
    }

    /// Tells the stream about a rollout's change (its audit events were written by the store already).
    pub(crate) fn tell(&self, events: Vec<AuditEvent>, rollout: RolloutChange) {
        self.remember_told(&events);
        let _ = self.changes.send(Arc::new(ChangeEvent::new(self.revision(), events, Some(rollout))));
    }
}
