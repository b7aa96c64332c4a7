//! The one write path of the flag catalog: every change, a person's or a rollout's, is computed from the
//! live snapshot, committed with its audit event, then published — evaluations see it from the next
//! request on — and told to the change stream.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;
use sluice_flags::{LiveFlags, Snapshot};
use sluice_store::{AppliedBatch, AuditEvent, Change, EnvChange, Store, StoreError};
use tokio::sync::broadcast;

/// One committed change as the stream tells it: a catalog write, or a rollout's transition or tick.
/// Subscribers share one copy ([`Catalog::subscribe`] hands out an `Arc`) and its JSON, written once.
///
/// ```
/// use sluice_controller::ChangeEvent;
/// let change = ChangeEvent::new(7, Vec::new(), None);
/// assert_eq!(change.to_json(), r#"{"revision":7,"events":[]}"#);
/// let change = ChangeEvent::new(8, Vec::new(), None).in_envs(vec!["staging".into()]);
/// assert_eq!(change.to_json(), r#"{"revision":8,"envs":["staging"],"events":[]}"#);
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct ChangeEvent {
    /// The catalog revision after the change (unchanged by a rollout's own events).
    pub revision: i64,
    /// The environments whose answers may have changed (empty for a rollout's own events, which change
    /// none): an evaluation client of another environment is not woken.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub envs: Vec<String>,
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
        ChangeEvent { revision, envs: Vec::new(), events, rollout, json: Default::default(), sse: Default::default() }
    }

    /// The same change, naming the environments whose answers it changed.
    pub fn in_envs(self, envs: Vec<String>) -> ChangeEvent {
        ChangeEvent { envs, ..self }
    }

    /// Whether it may change the answers of the environment `env`.
    pub fn touches(&self, env: &str) -> bool {
        self.envs.iter().any(|e| e == env)
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

/// Called with each environment's snapshot before it goes live (the environment, the snapshot, its
/// revision), e.g. to serialize what the Unleash client API serves once per revision rather than once per
/// request.
pub type OnPublish = Box<dyn Fn(&str, &Snapshot, i64) + Send + Sync>;

/// One environment's live flags, as evaluations see them, and the revision they are at.
pub struct EnvFlags {
    name: String,
    live: LiveFlags,
    revision: std::sync::atomic::AtomicI64,
}

impl EnvFlags {
    /// The environment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its live flags; lock-free to read.
    pub fn live(&self) -> &LiveFlags {
        &self.live
    }

    /// Its revision (the catalog revision at its last change): its ETag.
    pub fn revision(&self) -> i64 {
        self.revision.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl std::fmt::Debug for EnvFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvFlags").field("name", &self.name).field("revision", &self.revision()).finish()
    }
}

/// The live flag catalog of every environment and its only write path.
pub struct Catalog {
    store: Arc<dyn Store>,
    /// Every environment, in name order: swapped whole when one is added, renamed or removed, so that a
    /// reader takes no lock.
    envs: ArcSwap<Vec<Arc<EnvFlags>>>,
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
    /// Loads every environment's catalog from `store`; `on_publish` sees these snapshots and every later one.
    pub async fn load(store: Arc<dyn Store>, on_publish: OnPublish) -> Result<Catalog, StoreError> {
        let catalogs = store.snapshots().await?;
        let mut envs = Vec::with_capacity(catalogs.envs.len());
        for (env, snapshot) in catalogs.envs {
            on_publish(&env.name, &snapshot, env.revision);
            envs.push(Arc::new(EnvFlags {
                name: env.name,
                live: LiveFlags::new(snapshot),
                revision: env.revision.into(),
            }));
        }
        Ok(Catalog {
            store,
            envs: ArcSwap::from_pointee(envs),
            revision: catalogs.revision.into(),
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

    /// The environment `name`'s live flags, if it exists; lock-free.
    #[inline]
    pub fn env(&self, name: &str) -> Option<Arc<EnvFlags>> {
        self.envs.load().iter().find(|e| e.name == name).cloned()
    }

    /// Every environment, in name order.
    pub fn envs(&self) -> Arc<Vec<Arc<EnvFlags>>> {
        self.envs.load_full()
    }

    /// The environment a call means: `name`, or the only one when it names none. `NotFound` for an unknown
    /// name; `Conflict` (name one) when it names none and there are several.
    pub fn resolve(&self, name: Option<&str>) -> Result<Arc<EnvFlags>, StoreError> {
        let envs = self.envs.load();
        match name {
            Some(name) => envs
                .iter()
                .find(|e| e.name == name)
                .cloned()
                .ok_or_else(|| StoreError::NotFound { entity: format!("environment `{name}`") }),
            None if envs.len() == 1 => Ok(envs[0].clone()),
            None => Err(StoreError::Conflict {
                message: format!(
                    "this server has {} environments ({}): name one (`--env`, `SLUICE_ENV`, or `?env=` in the API)",
                    envs.len(),
                    envs.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    }

    /// The catalog revision last published (of every environment).
    pub fn revision(&self) -> i64 {
        self.revision.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Subscribes to committed changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent>> {
        self.changes.subscribe()
    }

    /// Applies changes computed from the environment `env`'s current catalog by `plan`, all or nothing, then
    /// publishes the new snapshots and tells the stream. `plan`'s error type is the caller's, so it can
    /// refuse in its own terms.
    pub async fn write<E, F>(&self, env: &str, actor: &str, reason: Option<String>, plan: F) -> Result<Written, E>
    where
        F: FnMut(&Snapshot) -> Result<Vec<Change>, E>,
        E: From<StoreError>,
    {
        self.write_through(&*self.store, env, actor, reason, plan).await
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
        env: &str,
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
        let batch = loop {
            tries += 1;
            let here = self.resolve(Some(env))?;
            let changes = plan(&here.live.load())?;
            match store.apply_in(actor, Some(env), changes, reason.clone(), Some(self.revision())).await {
                Err(StoreError::Stale { .. }) if tries < TRIES => {
                    self.load_latest().await?;
                }
                written => break written?,
            }
        };
        let AppliedBatch { events, env, snapshot, others, revision } = batch;
        let mut published = vec![(env, snapshot)];
        published.extend(others);
        self.publish(published, revision, events.clone());
        Ok(Written { events, revision })
    }

    /// Creates, renames or deletes an environment (audited), then publishes the catalogs as they now are.
    pub async fn change_env(
        &self,
        actor: &str,
        change: EnvChange,
        reason: Option<String>,
    ) -> Result<AuditEvent, StoreError> {
        let _one_writer = self.writer.lock().await;
        let event = self.store.change_env(actor, change, reason).await?;
        self.remember_told(std::slice::from_ref(&event));
        self.load_latest_telling(vec![event.clone()]).await?;
        Ok(event)
    }

    /// Loads the catalog again when the store's revision is past the one published (another replica
    /// wrote), publishes it and tells the stream. Returns whether it changed.
    pub async fn reload(&self) -> Result<bool, StoreError> {
        let _one_writer = self.writer.lock().await;
        self.load_latest().await
    }

    /// [`reload`](Self::reload) with the writer lock held.
    async fn load_latest(&self) -> Result<bool, StoreError> {
        self.load_latest_telling(Vec::new()).await
    }

    async fn load_latest_telling(&self, events: Vec<AuditEvent>) -> Result<bool, StoreError> {
        // One small read first: most commits (rollout ticks, saved metrics) leave the catalog as it was.
        if self.store.revision().await? <= self.revision() {
            return Ok(false);
        }
        let catalogs = self.store.snapshots().await?;
        if catalogs.revision <= self.revision() {
            return Ok(false);
        }
        let current = self.envs.load_full();
        let same_names = current.len() == catalogs.envs.len()
            && current.iter().zip(&catalogs.envs).all(|(live, (env, _))| live.name == env.name);
        if same_names {
            let mut changed = Vec::new();
            for (live, (env, snapshot)) in current.iter().zip(catalogs.envs) {
                if env.revision > live.revision() {
                    changed.push((env.name, snapshot, env.revision));
                }
            }
            self.publish_at(changed, catalogs.revision, events);
        } else {
            // An environment was added, renamed or removed: a new list, each environment with the
            // snapshot just read (evaluations of one that stays keep their counts).
            let mut envs = Vec::with_capacity(catalogs.envs.len());
            let mut names = Vec::new();
            for (env, snapshot) in catalogs.envs {
                (self.on_publish)(&env.name, &snapshot, env.revision);
                match current.iter().find(|e| e.name == env.name) {
                    Some(live) if env.revision <= live.revision() => envs.push(live.clone()),
                    Some(live) => {
                        live.live.replace(snapshot);
                        live.revision.store(env.revision, std::sync::atomic::Ordering::Release);
                        names.push(env.name.clone());
                        envs.push(live.clone());
                    }
                    None => {
                        names.push(env.name.clone());
                        envs.push(Arc::new(EnvFlags {
                            name: env.name,
                            live: LiveFlags::new(snapshot),
                            revision: env.revision.into(),
                        }));
                    }
                }
            }
            self.envs.store(Arc::new(envs));
            self.revision.store(catalogs.revision, std::sync::atomic::Ordering::Release);
            let _ = self.changes.send(Arc::new(ChangeEvent::new(catalogs.revision, events, None).in_envs(names)));
        }
        Ok(true)
    }

    fn publish(&self, snapshots: Vec<(String, Snapshot)>, revision: i64, events: Vec<AuditEvent>) {
        let at = snapshots.into_iter().map(|(env, snapshot)| (env, snapshot, revision)).collect();
        self.publish_at(at, revision, events);
    }

    /// Publishes each environment's new snapshot at its revision, then the catalog's revision, then tells
    /// the stream which environments changed.
    fn publish_at(&self, snapshots: Vec<(String, Snapshot, i64)>, revision: i64, events: Vec<AuditEvent>) {
        let envs = self.envs.load();
        let mut names = Vec::with_capacity(snapshots.len());
        for (env, snapshot, env_revision) in snapshots {
            if let Some(live) = envs.iter().find(|e| e.name == env) {
                (self.on_publish)(&env, &snapshot, env_revision);
                live.live.replace(snapshot);
                live.revision.store(env_revision, std::sync::atomic::Ordering::Release);
            }
            names.push(env);
        }
        self.revision.store(revision, std::sync::atomic::Ordering::Release);
        self.remember_told(&events);
        // Nobody listening is fine.
        let _ = self.changes.send(Arc::new(ChangeEvent::new(revision, events, None).in_envs(names)));
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
