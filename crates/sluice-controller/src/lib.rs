//! `sluice-controller` runs rollouts. Each active rollout ticks on its own timer: the controller measures
//! the checks due through the plug-ins ([`sluice_sources::Plugins`]), hands the numbers to the engine's
//! pure tick, writes the transition — engine state, the effects still to carry out (the outbox), audit
//! events and queued notifications, in one commit — and only then carries the effects out. A controller
//! killed at any instant finds in the store what may have run: flag changes and idempotent actions are
//! carried out again under the same key, and a rollout whose non-idempotent action may or may not have run
//! is paused for a person. People's commands (start, pause, resume, promote, rollback, abort, approve,
//! signal, settle) go through the same path. Notifications are delivered apart, from a durable queue, so
//! a chat outage never holds up a rollback. No HTTP here: the server maps [`ControllerError`] to answers.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use sluice_controller::{Catalog, Controller, Seams};
//! let store: Arc<dyn sluice_store::Store> = Arc::new(sluice_store::SqliteStore::open("data/sluice.db").await?);
//! let catalog = Arc::new(Catalog::load(store, Box::new(|_, _, _| {})).await?);
//! let controller = Controller::new(catalog, Seams::default());
//! tokio::spawn(controller.clone().run());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod activity;
mod catalog;
pub mod cluster;
mod commands;
mod error;
mod notify;
mod refusals;
mod runner;
mod status;
mod transition;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

use sluice_engine::{Clock, OutboxItem, Rollout};
use sluice_flags::Flag;
use sluice_plan::Plan;
use sluice_sources::Plugins;
use sluice_store::{Fence, RolloutRecord, Store};

pub use activity::Activity;
pub use catalog::{Catalog, ChangeEvent, EnvFlags, OnPublish, RolloutChange, Written};
pub use commands::{Command, CommandBody};
pub use error::ControllerError;
pub use refusals::Refusals;
pub use runner::{RunnerMemory, Settings};
pub use status::{Pending, RolloutSummary, Undelivered};
pub use transition::Settled;

/// Called at every commit and side-effect boundary of a rollout with the boundary's name; `true` makes the
/// controller stop there as if killed (crash-safety tests).
pub type FaultHook = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What a controller measures, acts and keeps time with; [`Seams::default`] is the real world.
pub struct Seams {
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Sources, actions and notifiers.
    pub plugins: Arc<dyn Plugins>,
    /// Injected crashes.
    pub faults: Option<FaultHook>,
    /// The controller lease's fence, when replicas share the database: the controller writes only through
    /// a store that checks it, and runs only while it holds a token. `None`: this process alone runs
    /// rollouts on its database (tests, `sluice demo`).
    pub fence: Option<Fence>,
}

impl Default for Seams {
    fn default() -> Self {
        Seams {
            clock: Arc::new(sluice_engine::SystemClock),
            plugins: Arc::new(sluice_sources::Registry::new(&sluice_sources::Config::default())),
            faults: None,
            fence: None,
        }
    }
}

/// The lock of one rollout, held while its state changes.
type RolloutGuard = tokio::sync::OwnedMutexGuard<()>;

/// The rollout controller. One per process (one per database, when replicas share one).
pub struct Controller {
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    plugins: Arc<dyn Plugins>,
    faults: Option<FaultHook>,
    /// One lock per rollout: its transitions (ticks, people's commands) happen one at a time, while a slow
    /// action of one rollout never holds up another's rollback.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Outbox items this process is carrying out right now, by rollout: a stored outbox whose items are
    /// here is in hand (a phase hook is running); one whose items are not is stranded.
    carrying: Mutex<HashMap<String, Vec<String>>>,
    /// Rollouts whose outbox may have been left unfinished (an error while carrying it out, or found at
    /// start-up), finished ones included: the runner visits them beside the active ones.
    unfinished: Mutex<BTreeSet<String>>,
    /// Something new to run (a rollout started): the runner looks at once instead of at its next scan.
    wake_runner: tokio::sync::Notify,
    /// Notifications were queued: the deliverer looks at once.
    wake_notifier: tokio::sync::Notify,
    settings: Settings,
    /// What it has done since the process started, for `/metrics`.
    activity: Activity,
    /// Refused attempts, coalesced in the audit log.
    refusals: Refusals,
    /// The lease's fence, when it must lead to run (see [`Seams::fence`]).
    fence: Option<Fence>,
    /// The live runner's memory, kept across terms.
    memory: Arc<RunnerMemory>,
}

impl Controller {
    /// A controller over `catalog` (and its store) with `seams`, and the default [`Settings`].
    pub fn new(catalog: Arc<Catalog>, seams: Seams) -> Arc<Controller> {
        Self::with_settings(catalog, seams, Settings::default())
    }

    /// [`new`](Self::new) with the server's [`Settings`].
    pub fn with_settings(catalog: Arc<Catalog>, seams: Seams, settings: Settings) -> Arc<Controller> {
        let store = match &seams.fence {
            Some(fence) => catalog.store().fenced(fence.clone()),
            None => catalog.store().clone(),
        };
        Arc::new(Controller {
            store,
            catalog,
            clock: seams.clock,
            plugins: seams.plugins,
            faults: seams.faults,
            locks: Mutex::new(HashMap::new()),
            carrying: Mutex::new(HashMap::new()),
            unfinished: Mutex::new(BTreeSet::new()),
            wake_runner: tokio::sync::Notify::new(),
            wake_notifier: tokio::sync::Notify::new(),
            settings,
            activity: Activity::default(),
            refusals: Refusals::default(),
            fence: seams.fence,
            memory: Arc::default(),
        })
    }

    /// The term it runs in: the fencing token of the lease it holds, 0 while it holds none (it does not
    /// run then), and 1 for a controller that needs no lease. Every loop of the controller ends when the
    /// term it started in is over, so that a replica that lost the lease and took it again never runs
    /// two copies of a rollout's timer.
    pub fn term(&self) -> i64 {
        self.fence.as_ref().map_or(1, Fence::token)
    }

    /// What the controller has done since the process started (decisions, events, actions,
    /// notifications), for `/metrics`.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Records a refused attempt in the audit log, coalesced per caller and kind of refusal
    /// ([`Refusals`]).
    pub async fn record_refusal(
        &self,
        actor: &str,
        action: &str,
        entity: &str,
        detail: serde_json::Value,
        reason: Option<String>,
    ) -> Result<(), sluice_store::StoreError> {
        self.refusals.record(&*self.store, actor, action, entity, detail, reason).await
    }

    /// Refusals recorded in the audit log, and those coalesced into later events.
    pub fn refusal_counts(&self) -> (u64, u64) {
        self.refusals.counts()
    }

    /// The catalog it ramps flags through.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// What the stream says about a rollout as stored (for a replica telling its watchers about another
    /// replica's transition); `None` when its plan no longer parses.
    pub fn change_of_record(record: &RolloutRecord) -> Option<RolloutChange> {
        let plan = plan_of(record).ok()?;
        Some(transition::change_of(&record.id, &plan, &record.state, Vec::new()))
    }

    /// The controller's actor name for what a rollout does by itself.
    fn actor(record: &RolloutRecord) -> String {
        format!("rollout:{}", record.plan_name)
    }

    /// Waits for, then holds, the lock of one rollout (or, with a `start:` key, of starting one on a flag).
    async fn lock(&self, id: &str) -> RolloutGuard {
        let lock = {
            let mut locks = self.locks.lock();
            if locks.len() > 1024 {
                // A lock only the map holds is neither held nor awaited: forget it (ended rollouts, starts).
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry(id.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Stops here if the fault hook says so (crash-safety tests): the caller returns at once, as a killed
    /// process would.
    fn fault(&self, point: &str) -> Result<(), ControllerError> {
        match &self.faults {
            Some(hook) if hook(point) => Err(ControllerError::Crashed(format!("injected crash at {point}"))),
            _ => Ok(()),
        }
    }

    /// A rollout by id.
    async fn record(&self, id: &str) -> Result<RolloutRecord, ControllerError> {
        self.store.rollout(id).await?.ok_or_else(|| ControllerError::NotFound(format!("no rollout `{id}`")))
    }

    /// The flag a rollout ramps, as evaluations see it now.
    fn live_flag(&self, env: &str, key: &str) -> Option<Flag> {
        self.catalog.env(env)?.live().load().flags().iter().find(|f| f.key == key).cloned()
    }

    fn unfinished_insert(&self, id: &str) {
        self.unfinished.lock().insert(id.to_string());
    }

    fn unfinished_remove(&self, id: &str) {
        self.unfinished.lock().remove(id);
    }

    /// Whether the stored outbox of `record` is in hand: this process is carrying it out (a phase hook
    /// runs with the lock let go). A carrier of an outbox that a rollback has since replaced does not count.
    fn in_hand(&self, record: &RolloutRecord) -> bool {
        let carrying = self.carrying.lock();
        let Some(keys) = carrying.get(&record.id) else { return false };
        record.outbox.iter().any(|i| keys.contains(&i.key))
    }

    /// Marks the rollout's outbox as being carried out in this process until the mark is dropped.
    fn mark_carrying(&self, id: &str, outbox: &[OutboxItem]) -> Carrying<'_> {
        let keys: Vec<String> = outbox.iter().map(|i| i.key.clone()).collect();
        self.carrying.lock().entry(id.to_string()).or_default().extend(keys.iter().cloned());
        Carrying { controller: self, id: id.to_string(), keys }
    }
}

/// A rollout's outbox being carried out in this process; the mark goes when this is dropped.
struct Carrying<'c> {
    controller: &'c Controller,
    id: String,
    keys: Vec<String>,
}

impl Drop for Carrying<'_> {
    fn drop(&mut self) {
        let mut carrying = self.controller.carrying.lock();
        if let Some(keys) = carrying.get_mut(&self.id) {
            keys.retain(|k| !self.keys.contains(k));
            if keys.is_empty() {
                carrying.remove(&self.id);
            }
        }
    }
}

impl Controller {
    /// The controller's time (ms): the real clock, or a test's virtual one.
    pub fn now(&self) -> sluice_engine::Millis {
        self.clock.now()
    }
}

/// The stored plan of a rollout.
pub fn plan_of(record: &RolloutRecord) -> Result<Plan, ControllerError> {
    sluice_plan::parse(&record.plan_name, &record.plan_text)
        .map_err(|p| ControllerError::Corrupt(format!("rollout {}: its stored plan no longer parses: {p}", record.id)))
}

/// An action's template values: a check's, and the rollout's `id`, `plan` and last `event` and `reason`
/// (`sluice_plan::WEBHOOK_TEMPLATES`).
fn action_values(id: &str, env: &str, plan: &Plan, rollout: &Rollout, flag: Option<&Flag>) -> BTreeMap<String, String> {
    let mut values = template_values(env, plan, rollout, flag);
    values.insert("id".into(), id.to_string());
    values.insert("plan".into(), plan.name.value.clone());
    if let Some(last) = rollout.history.last() {
        values.insert("event".into(), last.kind.clone());
        values.insert("reason".into(), last.reason.clone());
    }
    values
}

/// The template values of a rollout at this moment; the flag's own ramp when the plan names none, and the
/// environment it runs in as `{{env}}`.
fn template_values(env: &str, plan: &Plan, rollout: &Rollout, flag: Option<&Flag>) -> BTreeMap<String, String> {
    let mut values = rollout.template_values(plan, flag.map(|f| (f.ramp.base.as_str(), f.ramp.ramped.as_str())));
    values.insert("env".into(), env.to_string());
    values
}
