//! Who rolls back to where, with which actions — the table in docs/plans.md ("Rollback semantics"), each
//! row run against a plan with `rollback.to: start` and one with `rollback.to: previous-phase`. Automatic
//! rollbacks follow the plan's policy; a person's `rollback` goes to the start, and a step back is asked
//! for explicitly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sluice_controller::{Catalog, CommandBody, Controller, RunnerMemory, Seams};
use sluice_engine::{Clock, Measurement, VirtualClock};
use sluice_flags::Flag;
use sluice_plan::model::{Action, Check};
use sluice_sources::{ActionContext, ActionOutcome, MeasureContext, Plugins};
use sluice_store::{Change, Principal, Role, SqliteStore, Store};

#[derive(Default)]
struct World {
    values: Mutex<HashMap<String, Measurement>>,
    undos: Mutex<u32>,
}

#[async_trait::async_trait]
impl Plugins for World {
    async fn measure(&self, check: &Check, _: &MeasureContext<'_>) -> Measurement {
        self.values.lock().unwrap().get(&check.name.value).cloned().unwrap_or(Measurement::Value(0.0))
    }
    async fn run(&self, _: &Action, _: &ActionContext<'_>) -> ActionOutcome {
        *self.undos.lock().unwrap() += 1;
        ActionOutcome::done("")
    }
}

#[derive(Debug, Clone, Copy)]
enum Row {
    HardTrigger,
    SoftTriggerDefault,
    PersonDecidesOnSoftPause,
    PersonsRollback,
    PersonsStepBack,
    SourceDown,
    HardSignal,
}

/// Where a rollout at 50% (phase 2) ends after `row`: its status, the flag's percentage, and how often the
/// rollback's action ran.
async fn run(row: Row, policy: &str) -> (&'static str, u8, u32) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("s.db")).await.unwrap());
    store.apply("alice", Change::PutFlag(Flag::boolean("f")), None).await.unwrap();
    let clock = Arc::new(VirtualClock::default());
    let world = Arc::new(World::default());
    let catalog = Arc::new(Catalog::load(store.clone(), Box::new(|_, _, _| {})).await.unwrap());
    let seams = Seams { clock: clock.clone() as Arc<dyn Clock>, plugins: world.clone(), faults: None, fence: None };
    let controller = Controller::new(catalog, seams);
    let plan = format!(
        "name: p\nflag: f\nanalysis: {{ interval: 1m, max_source_errors: 2, on_source_down: rollback }}\n\
         phases: [ {{ percent: 10, hold: 2m }}, {{ percent: 50, hold: 1h }}, {{ percent: 100 }} ]\n\
         triggers:\n  - {{ name: hard, command: [hard], above: 1, severity: hard }}\n  \
         - {{ name: soft, command: [soft], above: 1, severity: soft, decide_within: 2m, default: rollback }}\n\
         rollback: {{ to: {policy}, actions: [ {{ name: undo, exec: [undo], idempotent: true }} ] }}\n"
    );
    let admin = Principal { name: "admin".into(), role: Role::Admin, envs: None };
    let person = Principal { name: "oncall".into(), role: Role::Operator, envs: None };
    let id = controller.start(&admin, None, "p.yaml", &plan).await.unwrap().id;
    let memory = RunnerMemory::default();
    let tick = |n: usize| {
        let (controller, clock, memory) = (&controller, &clock, &memory);
        async move {
            for _ in 0..n {
                clock.advance_ms(60_000);
                controller.run_due(memory).await.unwrap();
            }
        }
    };
    let set = |check: &str, m: Measurement| world.values.lock().unwrap().insert(check.to_string(), m);
    let say = |command: &'static str, body: CommandBody| {
        let (controller, id, person) = (&controller, &id, &person);
        async move { controller.command_named(id, command, body, person).await.unwrap() }
    };
    let why = |r: &str| CommandBody { reason: Some(r.into()), ..Default::default() };
    tick(3).await;
    assert_eq!(controller.summary(&id).await.unwrap().percent, 50);
    match row {
        Row::HardTrigger => {
            set("hard", Measurement::Value(5.0));
            tick(1).await;
        }
        Row::SoftTriggerDefault => {
            set("soft", Measurement::Value(5.0));
            tick(4).await;
        }
        Row::PersonDecidesOnSoftPause => {
            set("soft", Measurement::Value(5.0));
            tick(1).await;
            say("rollback", why("the soft trigger is right")).await;
        }
        Row::PersonsRollback => {
            say("rollback", why("bad")).await;
        }
        Row::PersonsStepBack => {
            say("rollback", CommandBody { to: Some("previous-phase".into()), ..why("look closer") }).await;
        }
        Row::SourceDown => {
            set("hard", Measurement::Error("down".into()));
            tick(2).await;
        }
        Row::HardSignal => {
            let body = CommandBody { name: Some("PagerFired".into()), severity: Some("hard".into()), ..why("page") };
            say("signal", body).await;
        }
    }
    let summary = controller.summary(&id).await.unwrap();
    let undos = *world.undos.lock().unwrap();
    (summary.status.name(), controller_flag(&controller), undos)
}

/// The flag's percentage as served (the summary's percent is the phase's).
fn controller_flag(controller: &Controller) -> u8 {
    controller.catalog().resolve(None).unwrap().live().load().flags()[0].ramp.percent
}

#[tokio::test]
async fn every_row_of_the_rollback_table() {
    const TO_START: (&str, u8, u32) = ("rolled_back", 0, 1);
    const STEPPED_BACK: (&str, u8, u32) = ("paused", 10, 0);
    let table = [
        (Row::HardTrigger, TO_START, STEPPED_BACK),
        (Row::SoftTriggerDefault, TO_START, STEPPED_BACK),
        (Row::PersonDecidesOnSoftPause, TO_START, TO_START),
        (Row::PersonsRollback, TO_START, TO_START),
        (Row::PersonsStepBack, STEPPED_BACK, STEPPED_BACK),
        (Row::SourceDown, TO_START, STEPPED_BACK),
        (Row::HardSignal, TO_START, STEPPED_BACK),
    ];
    for (row, start, previous_phase) in table {
        assert_eq!(run(row, "start").await, start, "{row:?} with rollback.to: start");
        assert_eq!(run(row, "previous-phase").await, previous_phase, "{row:?} with rollback.to: previous-phase");
    }
}
