//! A controller that stopped between writing a transition and finishing its effects: on restart the
//! outbox is finished — flag changes and idempotent actions again (with the same key), a non-idempotent
//! action never again (a person is asked) — for running and for finished rollouts alike.

use std::sync::Arc;

use serde_json::json;
use sluice_flags::Flag;
use sluice_server::{AppState, Options};
use sluice_store::{Change, RolloutRecord, SqliteStore, Store};

fn plan(log: &std::path::Path) -> String {
    format!(
        r#"name: crashy
flag: f
analysis: {{ interval: 1m }}
phases:
  - {{ percent: 10, hold: 1h }}
  - {{ percent: 50, hooks: {{ before: [ {{ exec: [sh, -c, "echo migrate $SLUICE_IDEMPOTENCY_KEY >> {l}"] }} ] }} }}
rollback:
  actions:
    - {{ exec: [sh, -c, "echo undo $SLUICE_IDEMPOTENCY_KEY >> {l}"], idempotent: true }}
"#,
        l = log.display()
    )
}

/// A store in a temporary directory holding flag `f`, and the file the plan's actions write to.
struct Scene {
    dir: tempfile::TempDir,
    log: std::path::PathBuf,
    store: SqliteStore,
    flag: Flag,
}

impl Scene {
    async fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("actions.log");
        let store = SqliteStore::open(dir.path().join("s.db")).await.unwrap();
        let flag = Flag::boolean("f");
        store.apply("alice", Change::PutFlag(flag.clone()), None).await.unwrap();
        Scene { dir, log, store, flag }
    }

    /// `f` at 0%, raised to 10% by the rollout that crashed: what its rollback must restore.
    async fn raised_by_a_crashed_rollout() -> Scene {
        let mut scene = Scene::new().await;
        scene.flag.ramp.percent = 0;
        scene.store.apply("alice", Change::PutFlag(scene.flag.clone()), None).await.unwrap();
        let mut raised = scene.flag.clone();
        raised.ramp.percent = 10;
        scene.store.apply("rollout:crashy", Change::PutFlag(raised), None).await.unwrap();
        scene
    }
}

fn oncall() -> sluice_store::Principal {
    sluice_store::Principal { name: "oncall".into(), role: sluice_store::Role::Operator, envs: None }
}

async fn crashed_rollout(
    store: &SqliteStore,
    id: &str,
    flag: &Flag,
    plan: &str,
    status: &str,
    outbox: serde_json::Value,
) {
    let (parsed, _) = sluice_plan::load("p.yaml", plan, None).unwrap();
    let mut rollout = sluice_engine::Rollout::new(&parsed);
    rollout.start(&parsed, 0);
    if status == "rolled_back" {
        rollout.rollback(&parsed, 1, "errors").unwrap();
    }
    let record = RolloutRecord {
        env: "production".into(),
        id: id.into(),
        flag: flag.key.clone(),
        plan_name: "crashy".into(),
        plan_text: plan.into(),
        original_flag: flag.clone(),
        state: rollout.clone(),
        active: true,
        outbox: Vec::new(),
        created_by: "alice".into(),
        created_at: String::new(),
        updated_at: String::new(),
    };
    store.create_rollout(&record, &[], &[]).await.unwrap();
    // Written as the version before typed records wrote it: the outbox must still read.
    let outbox: Vec<sluice_engine::OutboxItem> = serde_json::from_value(outbox).unwrap();
    store
        .save_rollout(&sluice_store::RolloutSave {
            actor: "test",
            id,
            state: &rollout,
            outbox: &outbox,
            events: &[],
            notifications: &[],
            decisions: None,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn an_interrupted_promotion_is_finished_and_an_uncertain_hook_asks_a_person() {
    let Scene { dir: _dir, log, store, flag } = Scene::new().await;
    // Stopped while promoting to phase 2, with the hook (not idempotent) running: the new percentage after
    // it was still pending.
    let outbox = json!([
        {"key": "r1:3:0", "effect": {"kind": "run", "purpose": "phases[1].hooks.before[0]", "idempotent": false}, "started": true},
        {"key": "r1:3:1", "effect": {"kind": "set_ramp", "percent": 50, "base": null, "ramped": null, "segments": []}},
    ]);
    crashed_rollout(&store, "r1", &flag, &plan(&log), "running", outbox).await;

    let store = Arc::new(store);
    let state = AppState::load(store.clone(), Options::default()).await.unwrap();
    state.controller().recover().await.unwrap();

    assert!(!log.exists(), "the hook that may have run was not run again");
    let r = store.rollout("r1").await.unwrap().unwrap();
    assert_eq!(r.status().name(), "paused");
    assert!(r.outbox[0].uncertain, "it waits to be settled: {:?}", r.outbox);
    assert_eq!(
        state.live_in(None).unwrap().live().load().flags()[0].ramp.percent,
        0,
        "nothing after it runs before it is settled"
    );
    let audit = store.audit(&Default::default()).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "rollout.action_unknown"
        && e.reason.as_deref().unwrap_or("").contains("phases[1].hooks.before[0]")));

    // A second restart does nothing more.
    let state = AppState::load(store.clone(), Options::default()).await.unwrap();
    state.controller().recover().await.unwrap();
    assert!(!log.exists());

    // A person checked: it did not run. Retry runs it once, then the rest of the outbox.
    let who = oncall();
    let body = sluice_server::CommandBody { pending: Some("retry".into()), ..Default::default() };
    state.controller().command_named("r1", "settle", body, &who).await.unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "migrate r1:3:0\n");
    assert_eq!(state.live_in(None).unwrap().live().load().flags()[0].ramp.percent, 50);
    assert_eq!(store.rollout("r1").await.unwrap().unwrap().outbox, vec![]);
}

#[tokio::test]
async fn a_non_idempotent_action_that_had_not_started_runs_on_recovery() {
    let Scene { dir: _dir, log, store, flag } = Scene::new().await;
    let outbox = json!([{"key": "r3:3:0", "effect": {"kind": "run", "purpose": "phases[1].hooks.before[0]", "idempotent": false}}]);
    crashed_rollout(&store, "r3", &flag, &plan(&log), "running", outbox).await;
    let state = AppState::load(Arc::new(store), Options::default()).await.unwrap();
    state.controller().recover().await.unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "migrate r3:3:0\n", "it never started, so it is safe to run");
}

#[tokio::test]
async fn a_rollback_interrupted_after_its_transition_still_runs_its_actions_once() {
    let Scene { dir: _dir, log, store, flag } = Scene::raised_by_a_crashed_rollout().await;
    // The rollback was written (the rollout is finished), then the controller stopped before any effect.
    let outbox = json!([
        {"key": "r2:2:0", "effect": {"kind": "restore_flag"}},
        {"key": "r2:2:1", "effect": {"kind": "run", "purpose": "rollback.actions[0]", "idempotent": true}},
    ]);
    crashed_rollout(&store, "r2", &flag, &plan(&log), "rolled_back", outbox).await;

    let store = Arc::new(store);
    let state = AppState::load(store.clone(), Options::default()).await.unwrap();
    state.controller().recover().await.unwrap();
    assert_eq!(state.live_in(None).unwrap().live().load().flags()[0].ramp.percent, 0, "the flag is back as it was");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "undo r2:2:1\n", "the rollback action ran, with its key");
    let state = AppState::load(store.clone(), Options::default()).await.unwrap();
    state.controller().recover().await.unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1, "and only once");
}

/// A transition whose effects stopped on an error (or whose request was cancelled) is finished by the
/// running controller at the rollout's next tick, without a restart; a command on it finishes it first.
#[tokio::test]
async fn a_stranded_outbox_is_finished_by_the_running_controller() {
    let Scene { dir: _dir, log, store, flag } = Scene::new().await;
    let outbox = json!([
        {"key": "r5:3:0", "effect": {"kind": "run", "purpose": "phases[1].hooks.before[0]", "idempotent": false}},
        {"key": "r5:3:1", "effect": {"kind": "set_ramp", "percent": 50, "base": null, "ramped": null, "segments": []}},
    ]);
    crashed_rollout(&store, "r5", &flag, &plan(&log), "running", outbox.clone()).await;
    store.apply("alice", Change::PutFlag(Flag::boolean("g")), None).await.unwrap();
    let store = Arc::new(store);
    let state = AppState::load(store.clone(), Options::default()).await.unwrap();
    state.controller().run_due(&sluice_server::RunnerMemory::default()).await.unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "migrate r5:3:0\n");
    assert_eq!(state.live_in(None).unwrap().live().load().flags()[0].ramp.percent, 50);
    assert_eq!(store.rollout("r5").await.unwrap().unwrap().outbox, vec![]);

    // The same stranded outbox under a person's `pause`: carried out first, then the pause.
    std::fs::remove_file(&log).unwrap();
    let outbox = serde_json::to_string(&outbox).unwrap().replace("r5:", "r6:");
    let g = Flag::boolean("g");
    let plan_g = plan(&log).replace("flag: f", "flag: g");
    crashed_rollout(&store, "r6", &g, &plan_g, "running", serde_json::from_str(&outbox).unwrap()).await;
    let who = oncall();
    let body = sluice_server::CommandBody { reason: Some("look".into()), ..Default::default() };
    state.controller().command_named("r6", "pause", body, &who).await.unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "migrate r6:3:0\n", "its own key, run once");
    let r6 = store.rollout("r6").await.unwrap().unwrap();
    assert_eq!((r6.status().name(), r6.outbox.clone()), ("paused", vec![]));
}

/// A rollback whose `flags_off` names a flag deleted since the plan was checked still runs the rest.
#[tokio::test]
async fn a_rollback_runs_its_actions_even_when_a_flag_to_switch_off_is_gone() {
    let Scene { dir: _dir, log, store, flag } = Scene::new().await;
    let plan = plan(&log).replace("rollback:\n", "rollback:\n  flags_off: [gone]\n");
    crashed_rollout(&store, "r7", &flag, &plan, "running", json!([])).await;
    let store = Arc::new(store);
    let state = AppState::load(store.clone(), Options::default()).await.unwrap();
    let who = oncall();
    let body = sluice_server::CommandBody { reason: Some("errors".into()), ..Default::default() };
    state.controller().command_named("r7", "rollback", body, &who).await.unwrap();
    let r7 = store.rollout("r7").await.unwrap().unwrap();
    assert_eq!((r7.status().name(), r7.outbox.clone()), ("rolled_back", vec![]));
    assert!(std::fs::read_to_string(&log).unwrap().starts_with("undo r7:"), "the rollback action ran");
    let audit = store.audit(&Default::default()).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "rollout.flag_missing"));
}

/// The runner started on a store whose finished rollout still has effects to carry out (its rollback was
/// written, the process stopped): it restores the flag and runs the rollback's action, in the rollout's own
/// task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_finishes_a_finished_rollouts_rollback() {
    let Scene { dir: _dir, log, store, flag } = Scene::raised_by_a_crashed_rollout().await;
    let outbox = json!([
        {"key": "r8:2:0", "effect": {"kind": "restore_flag"}},
        {"key": "r8:2:1", "effect": {"kind": "run", "purpose": "rollback.actions[0]", "idempotent": true}},
    ]);
    crashed_rollout(&store, "r8", &flag, &plan(&log), "rolled_back", outbox).await;
    let store = Arc::new(store);
    let state = AppState::load(store.clone(), Options::default()).await.unwrap();
    // Until that rollback is carried out, a new rollout of the flag would have it restored underneath.
    let refused: sluice_server::ApiError =
        state.controller().start(&admin(), None, "p.yaml", &plan(&log)).await.unwrap_err().into();
    assert_eq!(refused.error, "unfinished", "{}", refused.message);
    tokio::spawn(state.controller().clone().run());
    let begun = std::time::Instant::now();
    while !store.rollout("r8").await.unwrap().unwrap().outbox.is_empty() {
        assert!(begun.elapsed() < std::time::Duration::from_secs(10), "the runner never finished it");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state.live_in(None).unwrap().live().load().flags()[0].ramp.percent, 0, "restored");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "undo r8:2:1\n");
    // Then it may start.
    state.controller().start(&admin(), None, "p.yaml", &plan(&log)).await.unwrap();
}

/// Plans that run programs are started by an admin; operators decide on them.
fn admin() -> sluice_store::Principal {
    sluice_store::Principal { name: "platform-admin".into(), role: sluice_store::Role::Admin, envs: None }
}
