//! Rollout defects a review reproduced, each with the test that failed before its fix: run in virtual time
//! against a scripted world (each check's value, actions that count their runs or fail on demand).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use sluice_controller::{Catalog, CommandBody, Controller, RunnerMemory, Seams};
use sluice_engine::{Clock, Measurement, Status, VirtualClock};
use sluice_flags::Flag;
use sluice_plan::model::{Action, Check};
use sluice_sources::{ActionContext, ActionOutcome, MeasureContext, Plugins};
use sluice_store::{Change, Principal, Role, SqliteStore, Store};

const MIN: u64 = 60_000;

/// Each check's value by name (absent: `Empty`), how often each action ran, and a measurement that can
/// be held until the test lets it go.
#[derive(Default)]
struct World {
    values: Mutex<HashMap<String, Measurement>>,
    runs: Mutex<HashMap<String, u32>>,
    hold_measurements: AtomicBool,
    measuring: AtomicU32,
    release: tokio::sync::Notify,
}

impl World {
    fn set(&self, check: &str, m: Measurement) {
        self.values.lock().unwrap().insert(check.to_string(), m);
    }
    fn runs(&self, action: &str) -> u32 {
        self.runs.lock().unwrap().get(action).copied().unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl Plugins for World {
    async fn measure(&self, check: &Check, _: &MeasureContext<'_>) -> Measurement {
        if self.hold_measurements.load(Ordering::SeqCst) {
            // Waiting before saying so: a `Notified` hears `notify_waiters` from its creation, so the test's
            // release cannot fall between the count and the wait and leave this pass hanging.
            let released = self.release.notified();
            self.measuring.fetch_add(1, Ordering::SeqCst);
            released.await;
        }
        self.values.lock().unwrap().get(&check.name.value).cloned().unwrap_or(Measurement::Empty)
    }

    async fn run(&self, action: &Action, _: &ActionContext<'_>) -> ActionOutcome {
        let name = action.name.clone().unwrap_or_default();
        *self.runs.lock().unwrap().entry(name.clone()).or_default() += 1;
        if name.ends_with("-fails") {
            ActionOutcome::failed("")
        } else {
            ActionOutcome::done("")
        }
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    clock: Arc<VirtualClock>,
    world: Arc<World>,
    controller: Arc<Controller>,
    memory: RunnerMemory,
}

impl Setup {
    async fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("s.db")).await.unwrap());
        let mut flag = Flag::boolean("f");
        flag.ramp.percent = 0;
        store.apply("alice", Change::PutFlag(flag), None).await.unwrap();
        let clock = Arc::new(VirtualClock::default());
        let world = Arc::new(World::default());
        let catalog = Arc::new(Catalog::load(store.clone(), Box::new(|_, _, _| {})).await.unwrap());
        let seams = Seams { clock: clock.clone() as Arc<dyn Clock>, plugins: world.clone(), faults: None, fence: None };
        let controller = Controller::new(catalog, seams);
        Setup { _dir: dir, store, clock, world, controller, memory: RunnerMemory::default() }
    }

    async fn start(&self, plan: &str) -> String {
        self.controller.start(&admin(), None, "plan.yaml", plan).await.unwrap().id
    }

    /// `n` minutes, one tick each.
    async fn ticks(&self, n: usize) {
        for _ in 0..n {
            self.clock.advance_ms(MIN);
            self.controller.run_due(&self.memory).await.unwrap();
        }
    }

    async fn command(
        &self,
        id: &str,
        name: &str,
        body: CommandBody,
    ) -> Result<Status, sluice_controller::ControllerError> {
        self.controller.command_named(id, name, body, &operator()).await.map(|s| s.status)
    }

    async fn status(&self, id: &str) -> Status {
        self.store.rollout(id).await.unwrap().unwrap().state.status
    }

    fn flag(&self) -> Flag {
        self.controller
            .catalog()
            .resolve(None)
            .unwrap()
            .live()
            .load()
            .flags()
            .iter()
            .find(|f| f.key == "f")
            .cloned()
            .unwrap()
    }
}

/// A person's edit of flag `f`, through the same write path as the admin API.
async fn edit_flag(s: &Setup, edit: impl Fn(&mut Flag)) {
    s.controller
        .catalog()
        .write("production", "bob", None, |snapshot| {
            let mut f = snapshot.flags()[0].clone();
            edit(&mut f);
            Ok::<_, sluice_store::StoreError>(vec![Change::PutFlag(f)])
        })
        .await
        .unwrap();
}

fn operator() -> Principal {
    Principal { name: "oncall".into(), role: Role::Operator, envs: None }
}

fn because(reason: &str) -> CommandBody {
    CommandBody { reason: Some(reason.into()), ..Default::default() }
}

/// Defect 3: a tick measured the checks due for a paused rollout (its triggers); a person resumed it
/// before the tick decided. The gates it never measured must not count as source errors (here one error
/// would pause it again), nor break their `for` runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_measurement_taken_against_a_stale_state_is_not_charged() {
    let s = Setup::new().await;
    let id = s
        .start(
            "name: p\nflag: f\nanalysis: { interval: 1m, max_source_errors: 1 }\n\
             gates: [ { name: g, command: [g], below: 1 } ]\n\
             phases: [ { percent: 10, hold: 1h }, { percent: 100 } ]\n\
             triggers: [ { name: t, command: [t], above: 1, severity: hard } ]\n",
        )
        .await;
    s.world.set("g", Measurement::Value(0.0));
    s.world.set("t", Measurement::Value(0.0));
    s.command(&id, "pause", because("look")).await.unwrap();
    s.world.hold_measurements.store(true, Ordering::SeqCst);
    s.clock.advance_ms(MIN);
    let (controller, memory) = (s.controller.clone(), Arc::new(RunnerMemory::default()));
    let pass = tokio::spawn({
        let memory = memory.clone();
        async move { controller.run_due(&memory).await }
    });
    while s.world.measuring.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(s.command(&id, "resume", because("fine")).await.unwrap(), Status::Running);
    s.world.hold_measurements.store(false, Ordering::SeqCst);
    s.world.release.notify_waiters();
    pass.await.unwrap().unwrap();
    let record = s.store.rollout(&id).await.unwrap().unwrap();
    assert_eq!(record.state.status, Status::Running, "a gate never measured was charged as a source error");
    assert_eq!(record.state.source_errors, 0);
    let decisions = s.store.decisions(&id, 100).await.unwrap();
    assert!(
        decisions.iter().all(|d| d.decision.note.as_deref() != Some("source error: not measured")),
        "{decisions:?}"
    );
    // The next tick measures again and counts.
    controller_ticks(&s, &memory).await;
    assert_eq!(s.store.rollout(&id).await.unwrap().unwrap().state.runs.get("gate:g"), Some(&1));
}

async fn controller_ticks(s: &Setup, memory: &RunnerMemory) {
    s.clock.advance_ms(MIN);
    s.controller.run_due(memory).await.unwrap();
}

/// Defect 6: after a `previous-phase` step back, resuming retries the phase; a before-hook that already
/// succeeded in this rollout (a migration) does not run again.
#[tokio::test]
async fn a_hook_that_succeeded_is_not_run_again_after_a_step_back() {
    let s = Setup::new().await;
    let id = s
        .start(
            "name: p\nflag: f\nanalysis: { interval: 1m }\n\
             phases:\n  - { percent: 10, hold: 2m }\n  - { percent: 50, hold: 2m, hooks: { before: [ { name: migrate, exec: [migrate] } ] } }\n  - { percent: 100 }\n\
             triggers: [ { name: t, command: [t], above: 1, severity: hard } ]\n\
             rollback: { to: previous-phase }\n",
        )
        .await;
    s.world.set("t", Measurement::Value(0.0));
    s.ticks(3).await;
    assert_eq!((s.flag().ramp.percent, s.world.runs("migrate")), (50, 1));
    s.world.set("t", Measurement::Value(5.0));
    s.ticks(1).await;
    assert!(matches!(s.status(&id).await, Status::Paused { .. }));
    assert_eq!(s.flag().ramp.percent, 10, "stepped back");
    s.world.set("t", Measurement::Value(0.0));
    s.command(&id, "resume", because("fixed")).await.unwrap();
    s.ticks(6).await;
    assert_eq!(s.flag().ramp.percent, 100);
    assert_eq!(s.world.runs("migrate"), 1, "the migration ran twice");
}

/// Defect 7: a person's `rollback` goes to the start even when the plan's automatic rollbacks step back
/// a phase; stepping back is asked for with `to: previous-phase`.
#[tokio::test]
async fn a_persons_rollback_goes_to_the_start_and_a_step_back_is_asked_for() {
    let plan = "name: p\nflag: f\nanalysis: { interval: 1m }\n\
                phases: [ { percent: 10, hold: 2m }, { percent: 50, hold: 2m }, { percent: 100 } ]\n\
                rollback: { to: previous-phase, actions: [ { name: undo, exec: [undo], idempotent: true } ] }\n";
    let s = Setup::new().await;
    let id = s.start(plan).await;
    s.ticks(3).await;
    assert_eq!(s.flag().ramp.percent, 50);
    let step = CommandBody { to: Some("previous-phase".into()), ..because("look closer") };
    assert!(matches!(s.command(&id, "rollback", step).await.unwrap(), Status::Paused { .. }));
    assert_eq!((s.flag().ramp.percent, s.world.runs("undo")), (10, 0));
    let back = s.command(&id, "rollback", because("enough")).await.unwrap();
    assert!(matches!(back, Status::RolledBack { .. }), "{back:?}");
    assert_eq!((s.flag().ramp.percent, s.world.runs("undo")), (0, 1));

    // From the start too, on a fresh rollout: one command, straight to the start.
    let s = Setup::new().await;
    let id = s.start(plan).await;
    s.ticks(3).await;
    assert!(matches!(s.command(&id, "rollback", because("bad")).await.unwrap(), Status::RolledBack { .. }));
    assert_eq!((s.flag().ramp.percent, s.world.runs("undo")), (0, 1));
    let wrong = CommandBody { to: Some("sideways".into()), ..because("x") };
    let s2 = Setup::new().await;
    let id2 = s2.start(plan).await;
    assert!(matches!(
        s2.command(&id2, "rollback", wrong).await,
        Err(sluice_controller::ControllerError::Invalid { field: "to", .. })
    ));
}

/// Defect 8: `on_source_down: rollback` applies while paused too — the flag is still exposed.
#[tokio::test]
async fn on_source_down_rollback_applies_while_paused() {
    let s = Setup::new().await;
    let id = s
        .start(
            "name: p\nflag: f\nanalysis: { interval: 1m, max_source_errors: 2, on_source_down: rollback }\n\
             phases: [ { percent: 10, hold: 1h }, { percent: 100 } ]\n\
             triggers: [ { name: t, command: [t], above: 1, severity: hard } ]\n",
        )
        .await;
    s.world.set("t", Measurement::Value(0.0));
    s.ticks(1).await;
    s.command(&id, "pause", because("waiting for a deploy")).await.unwrap();
    s.world.set("t", Measurement::Error("prometheus is down".into()));
    s.ticks(2).await;
    assert!(matches!(s.status(&id).await, Status::RolledBack { .. }), "{:?}", s.status(&id).await);
    assert_eq!(s.flag().ramp.percent, 0);
}

/// Defect 11: the kill switch is always allowed; it pauses the rollout and says why, `resume` is refused
/// while it is pulled, and a rollback restores the ramp only — the flag stays disabled and overrides added
/// during the rollout stay.
#[tokio::test]
async fn the_kill_switch_pauses_the_rollout_and_no_rollback_re_enables_the_flag() {
    let s = Setup::new().await;
    let id = s
        .start(
            "name: p\nflag: f\nanalysis: { interval: 1m }\n\
             phases: [ { percent: 10, hold: 1h }, { percent: 100 } ]\n",
        )
        .await;
    s.ticks(1).await;
    // A person pulls the kill switch and pins one user on.
    edit_flag(&s, |f| f.enabled = false).await;
    edit_flag(&s, |f| {
        f.overrides.push(sluice_flags::Override {
            field: "userId".into(),
            value: "u-1".into(),
            action: sluice_flags::OverrideAction::Enable,
            expires_at: None,
        })
    })
    .await;
    s.controller.kill_switch_pulled("production", "f", "bob").await.unwrap();
    let Status::Paused { reason, .. } = s.status(&id).await else { panic!("not paused") };
    assert!(reason.contains("kill switch"), "{reason}");
    let refused = s.command(&id, "resume", because("go")).await.unwrap_err();
    assert!(matches!(refused, sluice_controller::ControllerError::Refused { code: "kill_switch", .. }), "{refused:?}");
    s.command(&id, "rollback", because("abandon")).await.unwrap();
    let flag = s.flag();
    assert!(!flag.enabled, "a rollback re-enabled a flag a person disabled");
    assert_eq!(flag.ramp.percent, 0);
    assert_eq!(flag.overrides.len(), 1, "the override added during the rollout stays");
}

/// The kill switch pulled by any path (an import, a PUT) pauses the rollout at its next tick.
#[tokio::test]
async fn a_disabled_flag_pauses_its_rollout_at_the_next_tick() {
    let s = Setup::new().await;
    let id = s
        .start(
            "name: p\nflag: f\nanalysis: { interval: 1m }\nphases: [ { percent: 10, hold: 1h }, { percent: 100 } ]\n",
        )
        .await;
    edit_flag(&s, |f| f.enabled = false).await;
    s.ticks(1).await;
    assert!(matches!(s.status(&id).await, Status::Paused { .. }));
}

/// Defect 13: a trigger whose query never returns data is inconclusive for the whole bake; after
/// `max_inconclusive` ticks people are told, once, and status shows it.
#[tokio::test]
async fn a_trigger_that_never_has_data_is_told_once_and_shown() {
    let s = Setup::new().await;
    let id = s
        .start(
            "name: p\nflag: f\nanalysis: { interval: 1m, max_inconclusive: 5 }\n\
             phases: [ { percent: 100 } ]\nbake: 1h\n\
             triggers: [ { name: errors, command: [errors], above: 1, severity: hard } ]\n",
        )
        .await;
    s.ticks(12).await;
    let record = s.store.rollout(&id).await.unwrap().unwrap();
    let told: Vec<_> = record.state.history.iter().filter(|e| e.kind == "no_data").collect();
    assert_eq!(told.len(), 1, "{:?}", record.state.history);
    assert!(told[0].reason.contains("errors"));
    assert_eq!(s.controller.summary(&id).await.unwrap().blind_triggers, ["errors"]);
    let queued = s.store.due_notifications(100).await.unwrap();
    assert!(queued.iter().any(|n| n.body["event"]["kind"] == "no_data"), "{queued:?}");
    // A value clears it.
    s.world.set("errors", Measurement::Value(0.0));
    s.ticks(1).await;
    assert!(s.controller.summary(&id).await.unwrap().blind_triggers.is_empty());
}

/// Defect 14: every decision is kept for the retention time, then only those whose outcome changed.
#[tokio::test]
async fn old_decisions_are_kept_only_where_the_outcome_changed() {
    let s = Setup::new().await;
    let id = s
        .start(
            "name: p\nflag: f\nanalysis: { interval: 1m }\nphases: [ { percent: 100 } ]\nbake: 1h\n\
             triggers: [ { name: t, command: [t], above: 1, severity: soft, decide_within: 1h, default: resume } ]\n",
        )
        .await;
    s.world.set("t", Measurement::Value(0.0));
    s.ticks(10).await;
    s.world.set("t", Measurement::Value(0.5));
    s.ticks(10).await;
    assert_eq!(s.store.decisions(&id, 1000).await.unwrap().len(), 20);
    let gone = s.store.prune_decisions(s.clock.now() as i64 + 1).await.unwrap();
    let left = s.store.decisions(&id, 1000).await.unwrap();
    // The first decision (nothing before it) and none other changed outcome: 0.5 is still under 1.
    assert_eq!((gone, left.len()), (19, 1), "{left:?}");
    s.world.set("t", Measurement::Value(3.0));
    s.ticks(1).await;
    assert_eq!(s.store.prune_decisions(s.clock.now() as i64 + 1).await.unwrap(), 0, "a change is kept");
}

/// Plans that run programs are started by an admin; operators decide on them.
fn admin() -> sluice_store::Principal {
    sluice_store::Principal { name: "platform-admin".into(), role: sluice_store::Role::Admin, envs: None }
}

/// Plans that run programs are started by admins, or by operators only for programs the server allows.
#[tokio::test]
async fn operators_start_only_plans_whose_programs_the_server_allows() {
    let plan = "name: p\nflag: f\nphases: [ { percent: 10 } ]\n\
                triggers: [ { name: t, command: [check-errors], above: 1, severity: hard } ]\n\
                rollback: { actions: [ { exec: [kubectl, rollout, undo, deployment/x] } ] }\n";
    let s = Setup::new().await;
    let refused = s.controller.start(&operator(), None, "plan.yaml", plan).await.unwrap_err();
    let sluice_controller::ControllerError::Forbidden(why) = &refused else { panic!("{refused:?}") };
    assert!(why.contains("`check-errors`") && why.contains("`kubectl`") && why.contains("--allow-exec"), "{why}");
    let audited = sluice_store::AuditFilter { action_prefix: Some("rollout.refused".into()), ..Default::default() };
    assert_eq!(s.store.audit(&audited).await.unwrap().len(), 1);
    assert!(s.store.rollouts(false).await.unwrap().is_empty(), "nothing half-started");

    // The same server allowing both programs lets an operator start it.
    let catalog = s.controller.catalog().clone();
    let seams = Seams { clock: s.clock.clone() as Arc<dyn Clock>, plugins: s.world.clone(), faults: None, fence: None };
    let settings = sluice_controller::Settings {
        allow_exec: ["check-errors".to_string(), "kubectl".to_string()].into(),
        ..Default::default()
    };
    let allowing = Controller::with_settings(catalog, seams, settings);
    allowing.start(&operator(), None, "plan.yaml", plan).await.unwrap();
}

/// Defect 3, the automatic way: a soft trigger's `default: resume` resumes the rollout inside a tick whose
/// gates were not measured (it was paused); they are not charged as source errors.
#[tokio::test]
async fn a_default_resume_does_not_charge_the_gates_it_did_not_measure() {
    let s = Setup::new().await;
    let id = s
        .start(
            "name: p\nflag: f\nanalysis: { interval: 1m, max_source_errors: 1 }\n\
             gates: [ { name: g, command: [g], below: 1 } ]\n\
             phases: [ { percent: 10, hold: 1h }, { percent: 100 } ]\n\
             triggers: [ { name: soft, command: [soft], above: 1, severity: soft, decide_within: 2m, default: resume } ]\n",
        )
        .await;
    s.world.set("g", Measurement::Value(0.0));
    s.world.set("soft", Measurement::Value(5.0));
    s.ticks(1).await;
    assert!(matches!(s.status(&id).await, Status::Paused { .. }));
    s.world.set("soft", Measurement::Value(0.0));
    s.ticks(3).await;
    let record = s.store.rollout(&id).await.unwrap().unwrap();
    assert_eq!(record.state.status, Status::Running, "{:?}", record.state.history);
    let decisions = s.store.decisions(&id, 100).await.unwrap();
    assert!(
        decisions.iter().all(|d| d.decision.note.as_deref() != Some("source error: not measured")),
        "{decisions:?}"
    );
}
