//! Several replicas on one database, as the controller sees them. Each replica evaluates from its own
//! snapshot; what makes them one service is here:
//!
//! - **Leading** ([`Cluster::lead`]): one replica holds the controller lease (by the database's clock) and
//!   runs the rollout controller, whose every write carries the lease's fencing token. A replica that
//!   loses the lease (or cannot renew it for as long as it lasts) stops its controller; one that takes it
//!   runs the controller again, which starts by finishing what the last holder left in the outboxes.
//! - **Following** ([`Cluster::follow`]): every commit on any replica is announced (`NOTIFY`); each replica
//!   then reads what changed — the catalog's revision and the audit events after the last it saw — loads a
//!   new snapshot when it changed, tells its watchers, and has the token table reloaded when tokens changed.
//!   A lost listening connection falls back to polling until it is back. A kill switch pulled on another
//!   replica pauses the flag's rollout here when this replica leads.
//! - **Sharing metrics** ([`Cluster::share_metrics`]): every replica saves its built-in metric aggregates;
//!   the leader merges the others' into the windows it measures.
//!
//! With SQLite the same code runs with one replica: it takes the lease at once (`takeover`), and has no
//! one to follow. Forwarding a rollout command to the leader and `/readyz` are HTTP's (`sluice-server`),
//! from what [`Cluster::leader`] and [`Cluster::health`] say.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sluice_sources::metrics::Metrics;
use sluice_store::{AuditEvent, Fence, Lease, LeaseAnswer, LeaseBid, Store, StoreError, CONTROLLER_LEASE};

use crate::Controller;

/// How this process shares its database with other replicas (`sluice serve --replica-name …`).
#[derive(Debug, Clone)]
pub struct Replication {
    /// This replica's name, unique among the replicas on the database (e.g. `host:port`).
    pub name: String,
    /// Where the other replicas reach it (`http://10.0.0.5:4242`): rollout commands are forwarded there.
    pub address: String,
    /// How long the controller lease lasts without renewal (renewed every third of it).
    pub lease: Duration,
}

impl Default for Replication {
    fn default() -> Self {
        Replication { name: String::new(), address: String::new(), lease: Duration::from_secs(15) }
    }
}

/// Polling interval while the listening connection is down.
const POLL: Duration = Duration::from_secs(1);
/// A sync even without a notification: a notification lost between two listens costs at most this.
const SAFETY_SYNC: Duration = Duration::from_secs(5);
/// How often replicas save their built-in metrics, and the leader reads the others'.
pub const METRICS_SHARE_INTERVAL: Duration = Duration::from_secs(2);

/// This replica among the others: the lease, what it has read of their commits, the built-in metrics it
/// shares. One per process.
pub struct Cluster {
    controller: Arc<Controller>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    fence: Fence,
    options: Option<Replication>,
    /// Other replicas may share the database (it announces commits: PostgreSQL): wait for the lease,
    /// follow their commits. A SQLite process takes the lease at once.
    shared: bool,
    leader: Mutex<Option<(Lease, Instant)>>,
    sync: Mutex<SyncState>,
}

#[derive(Default)]
struct SyncState {
    /// When the last sync with the database succeeded.
    synced_at: Option<Instant>,
    /// Whether the listening connection is up.
    listening: bool,
    /// The last failure, while failing.
    error: Option<String>,
    /// The last failure was the database being out of reach (not this replica falling behind).
    unreachable: bool,
    /// The last audit event seen.
    seen_seq: i64,
    /// Token events were seen and the table not yet reloaded (kept across a failed sync, so that a
    /// revoked token never stays valid here because a reload failed).
    tokens_dirty: bool,
}

/// How current this replica is, for `/readyz` and `sluice status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// In the load balancer: caught up, or nobody can commit (the database is out of reach) and this
    /// replica serves the last state there was, as every other replica does.
    pub ready: bool,
    /// It has every committed change (always, alone on its database).
    pub caught_up: bool,
    /// The listening connection is up.
    pub listening: bool,
    /// How long ago the last sync with the database succeeded.
    pub last_sync: Option<Duration>,
    /// The last sync's failure, while failing.
    pub database_error: Option<String>,
}

impl Cluster {
    /// This replica, running `controller` under the lease that `fence` carries when `options` say it
    /// shares the database (the controller must have been built with the same fence in its seams).
    pub fn new(
        controller: Arc<Controller>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        options: Option<Replication>,
        fence: Fence,
    ) -> Arc<Cluster> {
        Arc::new(Cluster {
            shared: store.change_feed().is_some(),
            controller,
            store,
            metrics,
            fence,
            options,
            leader: Mutex::new(None),
            sync: Mutex::new(SyncState::default()),
        })
    }

    /// Whether other replicas may share the database (a replica on PostgreSQL).
    pub fn shared(&self) -> bool {
        self.options.is_some() && self.shared
    }

    /// Whether this replica's controller runs now.
    pub fn leading(&self) -> bool {
        self.options.is_none() || self.fence.token() != 0
    }

    /// This replica's options (`None`: the caller runs the controller itself).
    pub fn options(&self) -> Option<&Replication> {
        self.options.as_ref()
    }

    /// This replica's name (empty when it is not one of several).
    pub fn name(&self) -> &str {
        self.options.as_ref().map_or("", |o| o.name.as_str())
    }

    /// The leader as last seen, with how long ago.
    pub fn leader(&self) -> Option<(Lease, Duration)> {
        self.leader.lock().as_ref().map(|(l, at)| (l.clone(), at.elapsed()))
    }

    /// How current this replica is.
    pub fn health(&self) -> Health {
        let sync = self.sync.lock();
        let last_sync = sync.synced_at.map(|t| t.elapsed());
        let limit = if sync.listening { SAFETY_SYNC * 3 } else { POLL * 5 };
        let fresh = last_sync.is_some_and(|d| d <= limit);
        let caught_up = !self.shared() || fresh;
        Health {
            ready: caught_up || sync.unreachable,
            caught_up,
            listening: sync.listening,
            last_sync,
            database_error: sync.error.clone(),
        }
    }

    /// Holds the controller lease for this replica's life, running the controller while it holds it.
    /// Takes the lease at once with SQLite; with PostgreSQL, when it is free or its holder let it expire.
    /// Without [`Replication`] options it just runs the controller.
    pub async fn lead(self: Arc<Self>) {
        let Some(options) = self.options.clone() else {
            self.controller.clone().run().await;
            return;
        };
        let renew = options.lease / 3;
        let mut renewed_at: Option<Instant> = None;
        let mut running: Option<tokio::task::JoinHandle<()>> = None;
        let mut first_bid = true;
        loop {
            // A follower bids again as soon as the leader's lease runs out, not at its next renewal time:
            // the failover takes the lease time, not the lease time plus a renewal.
            let mut next_bid = renew;
            let held = self.fence.token();
            let bid = LeaseBid {
                name: CONTROLLER_LEASE,
                holder: &options.name,
                address: &options.address,
                held,
                ttl: options.lease,
                // A SQLite process takes the lease from its killed predecessor at start, and only then.
                takeover: !self.shared() && renewed_at.is_none(),
                fresh: first_bid,
            };
            // A bid that hangs (a black-holed connection, a long write holding the lock) must not keep this
            // replica believing it leads past its lease: it counts as a failed renewal.
            let answer = match tokio::time::timeout(renew, self.store.take_lease(&bid)).await {
                Ok(answer) => answer,
                Err(_) => Err(StoreError::Database(sluice_store::timed_out())),
            };
            if answer.is_ok() {
                first_bid = false;
            }
            match answer {
                // Held, as the store says, never judged by the holder's name. A live lease under this name
                // that the bid did not renew is another process's of the same name (leading on it would run
                // two controllers with one token), or the term this replica gave up when it could not renew
                // (leading on it would mean leading on a lease about to run out): it waits, as a follower.
                Ok(LeaseAnswer::Held(lease)) => {
                    renewed_at = Some(Instant::now());
                    if lease.token != held {
                        tracing::info!(replica = %options.name, token = lease.token, "this replica leads: the controller runs here");
                        self.fence.set(lease.token);
                        if let Some(old) = running.take() {
                            old.abort();
                        }
                        running = Some(tokio::spawn(self.controller.clone().run()));
                    }
                    *self.leader.lock() = Some((lease, Instant::now()));
                }
                Ok(LeaseAnswer::Refused(lease)) => {
                    let expires = Duration::from_millis(lease.expires_in_ms.max(0) as u64);
                    next_bid = next_bid.min(expires + Duration::from_millis(20));
                    if held != 0 {
                        tracing::warn!(replica = %options.name, leader = %lease.holder, token = lease.token,
                            "another replica took the controller lease: this one stops running rollouts");
                        self.step_down(&mut running);
                    }
                    // The term this replica gave up leads nobody: not a leader to name or forward commands to.
                    let given_up = lease.holder == options.name && lease.address == options.address;
                    *self.leader.lock() = (!given_up).then(|| (lease, Instant::now()));
                }
                Err(e) => {
                    let lapsed = renewed_at.is_none_or(|at| at.elapsed() + renew >= options.lease);
                    if held != 0 && lapsed {
                        tracing::error!(replica = %options.name, error = %e,
                            "cannot renew the controller lease before it expires: stepping down");
                        self.step_down(&mut running);
                    } else {
                        tracing::warn!(replica = %options.name, error = %e, "renewing the controller lease; retrying");
                    }
                }
            }
            tokio::time::sleep(next_bid).await;
        }
    }

    fn step_down(&self, running: &mut Option<tokio::task::JoinHandle<()>>) {
        self.fence.set(0);
        if let Some(task) = running.take() {
            task.abort();
        }
    }

    /// Lets the lease go (shutting down), so that another replica takes over at once.
    pub async fn release(&self) {
        let (Some(options), token) = (&self.options, self.fence.token()) else { return };
        if token == 0 {
            return;
        }
        self.fence.set(0);
        match self.store.release_lease(CONTROLLER_LEASE, &options.name, token).await {
            Ok(_) => tracing::info!(replica = %options.name, "let the controller lease go"),
            Err(e) => {
                tracing::warn!(error = %e, "letting the controller lease go; another replica takes it when it expires")
            }
        }
    }

    /// Follows the other replicas' commits for this replica's life (see the module's doc), calling
    /// `reload_tokens` when a token changed. Returns after the first sync when the store is not shared.
    pub async fn follow<F, Fut>(self: Arc<Self>, reload_tokens: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        // Where to start: the audit head, then what was committed before it and after the state was loaded
        // (a token revoked meanwhile) is read again.
        let head = loop {
            match self.store.audit(&sluice_store::AuditFilter { limit: 1, ..Default::default() }).await {
                Ok(events) => break events.first().map_or(0, |e| e.seq),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the audit head to follow other replicas; retrying");
                    tokio::time::sleep(POLL).await;
                }
            }
        };
        {
            let mut sync = self.sync.lock();
            sync.seen_seq = head;
            sync.tokens_dirty = true;
        }
        self.sync(&reload_tokens).await;
        let Some(feed) = self.store.change_feed() else { return };
        loop {
            // Bounded: connecting to a database that is down retries for as long as the driver's pool
            // allows (30 s), and meanwhile nothing here would notice that nobody can commit.
            let listening = tokio::time::timeout(SAFETY_SYNC, feed.listen()).await;
            let listener = match listening.unwrap_or_else(|_| Err(StoreError::Database(sluice_store::timed_out()))) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for other replicas' changes: polling until it can");
                    None
                }
            };
            self.sync.lock().listening = listener.is_some();
            // Whatever was committed while nobody listened.
            self.sync(&reload_tokens).await;
            match listener {
                Some(mut listener) => loop {
                    tokio::select! {
                        heard = listener.next() => if let Err(e) = heard {
                            tracing::warn!(error = %e, "the listening connection was lost: polling until it is back");
                            // At once, not after listening again: a database that went away shows in
                            // `/readyz` and `sluice status` as out of reach within one sync's timeout.
                            self.sync(&reload_tokens).await;
                            break;
                        },
                        () = tokio::time::sleep(SAFETY_SYNC) => {}
                    }
                    self.sync(&reload_tokens).await;
                },
                None => tokio::time::sleep(POLL).await,
            }
            self.sync.lock().listening = false;
        }
    }

    /// Reads what other replicas committed since the last sync; records whether it could.
    async fn sync<F, Fut>(&self, reload_tokens: &F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        // A query that hangs (a black-holed connection) is the database out of reach, not this replica behind.
        let outcome = match tokio::time::timeout(SAFETY_SYNC, self.catch_up(reload_tokens)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Database(sluice_store::timed_out())),
        };
        let mut sync = self.sync.lock();
        match outcome {
            Ok(()) => {
                sync.synced_at = Some(Instant::now());
                sync.error = None;
                sync.unreachable = false;
            }
            Err(e) => {
                sync.unreachable = e.is_unreachable();
                sync.error = Some(e.to_string());
            }
        }
    }

    async fn catch_up<F, Fut>(&self, reload_tokens: &F) -> Result<(), StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        const PAGE: u32 = 1000;
        self.controller.catalog().reload().await?;
        let mut seen = self.sync.lock().seen_seq;
        loop {
            let page = self.store.chain(seen, PAGE).await?;
            let Some(last) = page.last() else { break };
            seen = last.seq;
            let full = page.len() == PAGE as usize;
            // One message per entity, in order, as a committing replica tells its own watchers.
            let mut start = 0;
            while start < page.len() {
                let entity = &page[start].entity;
                let end = page[start..].iter().position(|e| &e.entity != entity).map_or(page.len(), |n| start + n);
                let events = page[start..end].to_vec();
                // Tokens name environments: a renamed or deleted one changes the table too.
                if entity.starts_with("token:") || entity.starts_with("env:") {
                    self.sync.lock().tokens_dirty = true;
                }
                // Built-in aggregates are kept under `flag@env`: a rename on another replica re-keys this
                // one's too (a no-op on the replica that took it, which re-keyed as it did).
                for e in events.iter().filter(|e| e.action == "env.rename") {
                    let names = e.after.as_ref().map(|a| (a["from"].as_str(), a["to"].as_str()));
                    if let Some((Some(from), Some(to))) = names {
                        self.metrics.rename_env(from, to);
                    }
                }
                match entity.strip_prefix("rollout:") {
                    // The leader's own controller told its watchers already (every rollout write is its own).
                    Some(_) if self.leading() => {}
                    Some(id) => {
                        let rollout = self.store.rollout(id).await?;
                        self.controller
                            .catalog()
                            .tell_replicated(events, rollout.as_ref().and_then(Controller::change_of_record));
                    }
                    None => {
                        if let Some(key) = entity.strip_prefix("flag:") {
                            self.pause_if_killed_elsewhere(key, &events);
                        }
                        self.controller.catalog().tell_replicated(events, None)
                    }
                }
                start = end;
            }
            self.sync.lock().seen_seq = seen;
            if !full {
                break;
            }
        }
        if self.sync.lock().tokens_dirty {
            reload_tokens().await?;
            self.sync.lock().tokens_dirty = false;
        }
        Ok(())
    }

    /// A kill switch pulled on another replica pauses the flag's rollout as soon as the leader reads it, as
    /// one pulled on the leader does, not at the rollout's next tick (which may be minutes away): the
    /// replica that took the command cannot write the pause, its store being fenced. The group's last event
    /// decides (disabled then enabled again is no kill switch), and the controller reads the flag again
    /// before it pauses anything; the sync is not held up.
    fn pause_if_killed_elsewhere(&self, key: &str, events: &[AuditEvent]) {
        let Some(last) = events.last() else { return };
        let disabled = last.after.as_ref().is_some_and(|flag| flag["enabled"] == false);
        if !disabled || !self.leading() {
            return;
        }
        let (controller, key, who) = (self.controller.clone(), key.to_string(), last.actor.clone());
        let Some(env) = last.env.clone() else { return };
        tokio::spawn(async move {
            if let Err(e) = controller.kill_switch_pulled(&env, &key, &who).await {
                tracing::warn!(flag = %key, error = %e, "pausing the rollout of a flag disabled on another replica; its next tick pauses it");
            }
        });
    }

    /// Saves this replica's built-in metrics, and (leading) merges the other replicas' into its own
    /// windows, every [`METRICS_SHARE_INTERVAL`].
    pub async fn share_metrics(self: Arc<Self>) {
        loop {
            tokio::time::sleep(METRICS_SHARE_INTERVAL).await;
            if let Err(e) = self.save_metrics().await {
                tracing::warn!(error = %e, "saving the built-in metrics; retrying at the next interval");
            }
            if self.leading() {
                match self.store.load_metrics().await {
                    Ok(rows) => self.metrics.set_peers(rows.into_iter().filter(|(r, _, _)| r != self.name()).collect()),
                    Err(e) => tracing::warn!(error = %e, "reading the other replicas' built-in metrics"),
                }
            }
        }
    }

    /// Saves the built-in metrics changed since the last save (every [`METRICS_SHARE_INTERVAL`] while
    /// serving, and at shutdown): a restart loses at most one interval of observations.
    pub async fn save_metrics(&self) -> Result<(), StoreError> {
        // A busy server's bodies are megabytes of text, written on the threads that answer flag
        // evaluations: a flag at a time, letting them in between, and saved a few flags at a time (each
        // flag's body stands alone), so that the text never piles up.
        const FLAGS_PER_WRITE: usize = 8;
        let dirty = self.metrics.take_dirty();
        let mut result = Ok(());
        for (i, names) in dirty.chunks(FLAGS_PER_WRITE).enumerate() {
            let mut bodies = Vec::with_capacity(names.len());
            for name in names {
                if let Some(body) = self.metrics.saved_body(name) {
                    bodies.push((name.clone(), body));
                }
                tokio::task::yield_now().await;
            }
            if bodies.is_empty() {
                continue;
            }
            if let Err(e) = self.store.save_metrics(self.name(), &bodies, self.controller.now() as i64).await {
                self.metrics.unsaved(dirty[i * FLAGS_PER_WRITE..].iter().cloned());
                result = Err(e);
                break;
            }
        }
        result
    }
}
