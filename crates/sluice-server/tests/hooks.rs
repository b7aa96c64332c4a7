//! A phase hook that takes a long time (a migration) runs with the rollout's lock let go: the rollout's
//! triggers keep being evaluated, a rollback supersedes the transition, and when the hook finishes it
//! changes nothing more. Driven in virtual time with a hook that finishes when the test says so.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use sluice_engine::{Clock, Measurement, VirtualClock};
use sluice_flags::Flag;
use sluice_plan::model::{Action, Check};
use sluice_server::{AppState, CommandBody, Options, RunnerMemory, Seams};
use sluice_sources::{ActionContext, ActionOutcome, MeasureContext, Plugins};
use sluice_store::{Change, Principal, Role, SqliteStore, Store};
use tokio::sync::Notify;

const PLAN: &str = r#"
name: migrating
flag: f
analysis: { interval: 1m }
phases:
  - { percent: 10, hold: 2m }
  - { percent: 50, hooks: { before: [ { name: migrate, exec: [migrate] } ] } }
triggers:
  - { name: errors-hard, command: [errors], above: 0.5, for: 2m, severity: hard }
rollback:
  actions: [ { name: undo, exec: [undo] } ]
"#;

/// The error rate the trigger reads, a migration that waits for `finish`, and a count of undos.
#[derive(Default)]
struct World {
    errors: std::sync::Mutex<f64>,
    /// The trigger's query returns no data.
    no_data: std::sync::atomic::AtomicBool,
    finish: Notify,
    migrating: AtomicU32,
    undos: AtomicU32,
}

#[async_trait::async_trait]
impl Plugins for World {
    async fn measure(&self, _: &Check, _: &MeasureContext<'_>) -> Measurement {
        if self.no_data.load(Ordering::SeqCst) {
            return Measurement::Empty;
        }
        Measurement::Value(*self.errors.lock().unwrap())
    }

    async fn run(&self, action: &Action, _: &ActionContext<'_>) -> ActionOutcome {
        match action.name.as_deref() {
            Some("migrate") => {
                self.migrating.fetch_add(1, Ordering::SeqCst);
                self.finish.notified().await;
            }
            Some("undo") => {
                self.undos.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        ActionOutcome::done("")
    }
}

/// A store with flag `f`, a controller on a virtual clock acting on `World`, and an operator.
struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    clock: Arc<VirtualClock>,
    world: Arc<World>,
    state: Arc<AppState>,
    who: Principal,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).await.unwrap());
    store.apply("alice", Change::PutFlag(Flag::boolean("f")), None).await.unwrap();
    let clock = Arc::new(VirtualClock::default());
    let world = Arc::new(World::default());
    let seams = Seams { clock: clock.clone() as Arc<dyn Clock>, plugins: world.clone(), faults: None, fence: None };
    let state = AppState::load_with(store.clone() as Arc<dyn Store>, Options::default(), seams).await.unwrap();
    let who = Principal { name: "oncall".into(), role: Role::Operator, envs: None };
    Setup { _dir: dir, store, clock, world, state, who }
}

type Pass = tokio::task::JoinHandle<Result<(), sluice_server::ControllerError>>;

/// Runner passes a minute apart until one starts the migration; that pass is returned still running (it
/// waits for `finish`), as the runner's task for the rollout would be.
async fn tick_until_the_migration_runs(
    state: &Arc<AppState>,
    clock: &Arc<VirtualClock>,
    memory: &Arc<RunnerMemory>,
    world: &World,
) -> Pass {
    for _ in 0..10 {
        clock.advance_ms(60_000);
        let (state, memory) = (state.clone(), memory.clone());
        let pass = tokio::spawn(async move { state.controller().run_due(&memory).await });
        // Either this pass ends, or it is the one that started the migration.
        while world.migrating.load(Ordering::SeqCst) == 0 && !pass.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if world.migrating.load(Ordering::SeqCst) == 1 {
            return pass;
        }
        pass.await.unwrap().unwrap();
    }
    panic!("the migration never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_during_a_long_hook_supersedes_it() {
    let Setup { _dir, store, clock, world, state, who } = setup().await;
    let id = state.controller().start(&admin(), None, "plan.yaml", PLAN).await.unwrap().id;
    let memory = Arc::new(RunnerMemory::default());
    let percent = |state: &AppState| state.live_in(None).unwrap().live().load().flags()[0].ramp.percent;

    // Ticks until phase 2's migration starts; it then runs in its own task, as the runner's ticks do.
    let migration = tick_until_the_migration_runs(&state, &clock, &memory, &world).await;
    assert_eq!(percent(&state), 10, "the raise waits for the hook");

    // A command that would not end the phase is refused; the triggers keep ticking meanwhile.
    let pause = CommandBody { reason: Some("look".into()), ..Default::default() };
    let refused =
        sluice_server::ApiError::from(state.controller().command_named(&id, "pause", pause, &who).await.unwrap_err());
    assert_eq!(refused.error, "hook_running");
    *world.errors.lock().unwrap() = 0.9;
    for _ in 0..3 {
        clock.advance_ms(60_000);
        state.controller().run_due(&memory).await.unwrap();
    }
    let record = store.rollout(&id).await.unwrap().unwrap();
    assert_eq!(record.status().name(), "rolled_back", "the hard trigger acted during the hook");
    assert_eq!(percent(&state), 0);
    assert_eq!(world.undos.load(Ordering::SeqCst), 1);

    // The migration ends: its transition was superseded, so the flag is not raised to 50%.
    world.finish.notify_one();
    migration.await.unwrap().unwrap();
    assert_eq!(percent(&state), 0);
    let record = store.rollout(&id).await.unwrap().unwrap();
    assert_eq!((record.status().name(), record.outbox.clone()), ("rolled_back", vec![]));
    let audit = store.audit(&Default::default()).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "rollout.action"
        && e.after.as_ref().is_some_and(|a| a["superseded"] == true && a["purpose"] == "phases[1].hooks.before[0]")));
    assert!(matches!(store.verify(None).await.unwrap(), sluice_store::Verification::Intact { .. }));
}

/// With `rollback.to: previous-phase`, a trigger that fires during the hook steps back; the hook's
/// transition is then replaced, so the rollout's triggers keep ticking and a second firing rolls back to
/// the start, all while the stale hook still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_step_back_during_a_hook_the_triggers_still_tick() {
    let Setup { _dir, store, clock, world, state, who: _ } = setup().await;
    let plan = PLAN.replace("rollback:\n", "rollback:\n  to: previous-phase\n");
    let id = state.controller().start(&admin(), None, "plan.yaml", &plan).await.unwrap().id;
    let memory = Arc::new(RunnerMemory::default());

    let migration = tick_until_the_migration_runs(&state, &clock, &memory, &world).await;
    *world.errors.lock().unwrap() = 0.9;
    let mut states = Vec::new();
    for _ in 0..6 {
        clock.advance_ms(60_000);
        state.controller().run_due(&memory).await.unwrap();
        states.push(store.rollout(&id).await.unwrap().unwrap().status().name());
    }
    assert!(states.contains(&"paused"), "stepped back first: {states:?}");
    assert_eq!(*states.last().unwrap(), "rolled_back", "then rolled back, the hook still running: {states:?}");
    assert_eq!(world.undos.load(Ordering::SeqCst), 1, "the rollback's action, once");
    assert_eq!(state.live_in(None).unwrap().live().load().flags()[0].ramp.percent, 0);
    world.finish.notify_one();
    migration.await.unwrap().unwrap();
    assert_eq!(state.live_in(None).unwrap().live().load().flags()[0].ramp.percent, 0);
}

/// Plans that run programs are started by an admin; operators decide on them.
fn admin() -> sluice_store::Principal {
    sluice_store::Principal { name: "platform-admin".into(), role: sluice_store::Role::Admin, envs: None }
}

/// A trigger without data while a long hook runs is told to people — and the hook's transition goes on:
/// when the hook ends, the percentage it guards is raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_without_data_during_a_hook_does_not_cancel_the_hook() {
    let Setup { _dir, store, clock, world, state, who: _ } = setup().await;
    let plan = PLAN.replace("analysis: { interval: 1m }", "analysis: { interval: 1m, max_inconclusive: 2 }");
    let id = state.controller().start(&admin(), None, "plan.yaml", &plan).await.unwrap().id;
    let memory = Arc::new(RunnerMemory::default());
    let migration = tick_until_the_migration_runs(&state, &clock, &memory, &world).await;
    world.no_data.store(true, Ordering::SeqCst);
    for _ in 0..4 {
        clock.advance_ms(60_000);
        state.controller().run_due(&memory).await.unwrap();
    }
    let record = store.rollout(&id).await.unwrap().unwrap();
    assert!(record.state.history.iter().any(|e| e.kind == "no_data"), "told");
    assert!(!record.outbox.is_empty(), "the hook's transition is still there");
    world.finish.notify_one();
    migration.await.unwrap().unwrap();
    assert_eq!(
        state.live_in(None).unwrap().live().load().flags()[0].ramp.percent,
        50,
        "the hook's percentage was raised"
    );
}

/// The kill switch pulled while a hook runs pauses the rollout beside the hook's transition, never over
/// it: the hook's outcome and its percentage are kept, and resume waits for the flag to be enabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_during_a_hook_pauses_without_losing_the_hook() {
    let Setup { _dir, store, clock, world, state, who } = setup().await;
    let id = state.controller().start(&admin(), None, "plan.yaml", PLAN).await.unwrap().id;
    let memory = Arc::new(RunnerMemory::default());
    let migration = tick_until_the_migration_runs(&state, &clock, &memory, &world).await;
    let mut flag = state.live_in(None).unwrap().live().load().flags()[0].clone();
    flag.enabled = false;
    state
        .controller()
        .catalog()
        .write("production", "bob", None, |_| Ok::<_, sluice_store::StoreError>(vec![Change::PutFlag(flag.clone())]))
        .await
        .unwrap();
    state.controller().kill_switch_pulled("production", "f", "bob").await.unwrap();
    let record = store.rollout(&id).await.unwrap().unwrap();
    assert_eq!(record.state.status.name(), "paused");
    assert!(!record.outbox.is_empty(), "the hook's transition is kept");
    world.finish.notify_one();
    migration.await.unwrap().unwrap();
    let record = store.rollout(&id).await.unwrap().unwrap();
    assert!(record.outbox.is_empty(), "carried out: {:?}", record.outbox);
    assert_eq!(state.live_in(None).unwrap().live().load().flags()[0].ramp.percent, 50);
    assert!(!state.live_in(None).unwrap().live().load().flags()[0].enabled, "still disabled");
    let resume = CommandBody { reason: Some("go".into()), ..Default::default() };
    assert!(state.controller().command_named(&id, "resume", resume, &who).await.is_err(), "refused while disabled");
}
