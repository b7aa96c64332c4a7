//! Crash safety, proven: ten rollouts run together on one SQLite store in virtual time — healthy, a hard
//! rollback, a soft pause then resumed, a soft pause left to its default, a missing approval signed late,
//! a rollback by a person, and four where something fails on demand: a non-idempotent phase hook, an
//! idempotent one, and each kind of rollback action.
//! The uninterrupted run is the reference. Then the controller is killed at every commit and side-effect
//! boundary in turn — dropped, rebuilt from the store, recovered, continued — and each run must end every
//! rollout in the reference's state, with no action lost, no non-idempotent action run twice, and an
//! idempotent one repeated only with the same idempotency key. A local receiver counts every action; the
//! `desk` rollback action is a real webhook call to an HTTP receiver on loopback, counted by its
//! `Idempotency-Key`, and every notification the queue delivers is counted by its event: none is lost, and a
//! repeat is the same event.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sluice_engine::timeline::{Control, Timeline};
use sluice_engine::{CheckKind, CheckRef, Clock, Measurement, MetricSource, VirtualClock};
use sluice_flags::Flag;
use sluice_plan::model::{Action, Check};
use sluice_server::{AppState, CommandBody, Options, RunnerMemory, Seams};
use sluice_sources::{ActionContext, ActionOutcome, MeasureContext, Plugins};
use sluice_store::{Change, Principal, Role, SqliteStore, Store};

const MIN: u64 = 60_000;

fn plan(name: &str) -> String {
    format!(
        r#"name: {name}
flag: {name}
analysis: {{ interval: 1m }}
gates:
  - {{ name: g, command: [measure], below: 1 }}
phases:
  - {{ percent: 10, hold: 2m, approvals: [go] }}
  - {{ percent: 50, hold: 2m, hooks: {{ before: [ {{ name: migrate, exec: [migrate] }}, {{ name: warm, exec: [warm], idempotent: true }} ] }} }}
  - {{ percent: 100 }}
bake: 2m
triggers:
  - {{ name: hard, command: [measure], above: 1, for: 2m, severity: hard }}
  - {{ name: soft, command: [measure], above: 1, severity: soft, decide_within: 3m, default: rollback }}
rollback:
  actions:
    - {{ name: undo, exec: [undo], idempotent: true }}
    - {{ name: page, exec: [page] }}
    - {{ name: desk, webhook: {{ url: "{desk}/{name}", retries: 0 }} }}
notify:
  - webhook: {{ url: "{desk}/events" }}
"#,
        desk = desk()
    )
}

/// The incident desk: an HTTP receiver on loopback that records each webhook's path and idempotency
/// key. One per test process (nextest runs each test in its own).
fn desk() -> &'static str {
    static DESK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DESK.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Its own runtime on its own thread: it outlives every controller the proof builds and kills.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let app =
                    axum::Router::new().fallback(|uri: axum::http::Uri, headers: axum::http::HeaderMap| async move {
                        let key =
                            headers.get("idempotency-key").and_then(|k| k.to_str().ok()).unwrap_or("").to_string();
                        DESK_GOT.lock().unwrap().push((uri.path().trim_start_matches('/').to_string(), key));
                        "ok"
                    });
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        url
    })
}

/// What the desk received: (path, idempotency key).
static DESK_GOT: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Which scenarios a proof runs: the cost of a proof grows with the square of its rollouts (each kill
/// point replays all of them), so the two sets are proven apart, side by side.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Set {
    /// Every way a rollout ends, with every action succeeding.
    Outcomes,
    /// Hooks and actions that fail on demand, beside a healthy rollout.
    Failures,
}

/// The scenarios: each a flag, and its recorded measurements and human decisions.
fn scenarios(set: Set) -> Vec<(&'static str, &'static str)> {
    const OK: &str = "0s,g,0\n0s,hard,0\n0s,soft,0\n";
    let outcomes = vec![
        ("healthy", "1m,approve:go,\n"),
        ("hard_rollback", "1m,approve:go,\n4m,hard,5\n"),
        ("soft_resumed", "1m,approve:go,\n3m,soft,5\n5m,soft,0\n5m,decide,resume\n"),
        ("soft_defaulted", "1m,approve:go,\n3m,soft,5\n"),
        ("late_approval", "8m,approve:go,\n"),
        ("rolled_back_by_hand", "1m,approve:go,\n4m,decide,rollback\n"),
    ];
    let failures = vec![
        ("healthy", "1m,approve:go,\n"),
        // `{action}_fails`: that action fails whenever it runs for this flag.
        ("migrate_fails", "1m,approve:go,\n"),
        ("warm_fails", "1m,approve:go,\n"),
        ("undo_fails", "1m,approve:go,\n4m,hard,5\n"),
        ("page_fails", "1m,approve:go,\n4m,hard,5\n"),
    ];
    match set {
        Set::Outcomes => outcomes,
        Set::Failures => failures,
    }
    .into_iter()
    .map(|(name, rest)| (name, Box::leak(format!("{OK}{rest}").into_boxed_str()) as &str))
    .collect()
}

/// Every action the world received: (flag, action name, idempotency key), and whether it succeeded; every
/// notification delivered: (flag, event's place in the history, kind).
#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<(String, String, String)>>,
    failed: Mutex<Vec<String>>,
    told: Mutex<Vec<(String, String, String)>>,
}

struct Recorded {
    timelines: HashMap<String, Mutex<Timeline>>,
    receiver: Arc<Receiver>,
    webhooks: sluice_sources::actions::webhook::Webhook,
}

#[async_trait::async_trait]
impl Plugins for Recorded {
    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement {
        let timeline = &self.timelines[&cx.values["flag"]];
        let probe = CheckRef {
            name: &check.name.value,
            kind: CheckKind::Gate,
            check,
            phase: 0,
            sequence: None,
            phase_started: 0,
            control_window: None,
        };
        timeline.lock().unwrap().measure(&probe, cx.now)
    }

    async fn run(&self, action: &Action, cx: &ActionContext<'_>) -> ActionOutcome {
        let name = action.name.clone().unwrap_or_default();
        let flag = cx.values["flag"].clone();
        if action.block.has("webhook") {
            // A real call: the desk counts it by its key; here only that it was made.
            use sluice_sources::ActionRunner;
            let outcome = self.webhooks.run(action, cx).await;
            assert!(outcome.ok(), "{}", outcome.detail);
            return outcome;
        }
        let fails = flag == format!("{name}_fails");
        self.receiver.got.lock().unwrap().push((flag, name, cx.key.to_string()));
        if fails {
            self.receiver.failed.lock().unwrap().push(cx.key.to_string());
            return ActionOutcome::failed("failed on demand");
        }
        ActionOutcome::done("")
    }

    async fn notify(
        &self,
        target: Option<&sluice_plan::model::Notifier>,
        n: &sluice_sources::Notification,
    ) -> Result<(), sluice_sources::Failure> {
        if target.is_some() {
            let place = n.id.rsplit_once(":e").map_or("", |(_, i)| i).to_string();
            self.receiver.told.lock().unwrap().push((n.flag.clone(), place, n.event.kind.clone()));
        }
        Ok(())
    }
}

/// How a run ended, per flag.
#[derive(Debug, Clone, PartialEq)]
struct End {
    status: String,
    percent: u8,
}

struct Run {
    ends: BTreeMap<String, End>,
    received: Vec<(String, String, String)>,
    /// Each notification event delivered: (flag, place, kind), with how many times.
    told: BTreeMap<(String, String, String), usize>,
    /// The desk's webhook calls per flag: their idempotency keys.
    desk: BTreeMap<String, Vec<String>>,
    boundaries: usize,
    rollouts: usize,
}

fn operator() -> Principal {
    Principal { name: "oncall".into(), role: Role::Operator, envs: None }
}

fn crashed(e: &sluice_server::ControllerError) -> bool {
    e.is_crash()
}

/// Runs the five rollouts to their end, killing the controller at boundary `crash_at` (counted from 0).
async fn drive(set: Set, dir: &Path, crash_at: Option<usize>) -> Run {
    let path = dir.join("s.db");
    // Rollout ids repeat from run to run: the desk forgets the last run's calls.
    DESK_GOT.lock().unwrap().clear();
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    for (name, _) in scenarios(set) {
        store.apply("alice", Change::PutFlag(Flag::boolean(name)), None).await.unwrap();
    }
    let clock = Arc::new(VirtualClock::default());
    let receiver = Arc::new(Receiver::default());
    let counter = Arc::new(AtomicUsize::new(0));
    let has_crashed = Arc::new(AtomicBool::new(false));
    let make = |store: Arc<SqliteStore>| {
        let timelines = scenarios(set)
            .into_iter()
            .map(|(name, csv)| (name.to_string(), Mutex::new(Timeline::parse(csv).unwrap())))
            .collect();
        let (counter, has_crashed) = (counter.clone(), has_crashed.clone());
        let faults: sluice_server::FaultHook = Arc::new(move |_point: &str| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            Some(n) == crash_at && !has_crashed.swap(true, Ordering::SeqCst)
        });
        let seams = Seams {
            clock: clock.clone() as Arc<dyn Clock>,
            plugins: Arc::new(Recorded {
                timelines,
                receiver: receiver.clone(),
                webhooks: sluice_sources::actions::webhook::Webhook::new(&Default::default()),
            }),
            faults: Some(faults),
            fence: None,
        };
        async move { AppState::load_with(store as Arc<dyn Store>, Options::default(), seams).await.unwrap() }
    };
    let mut state = make(store.clone()).await;
    let who = operator();

    // After a kill: a new controller from the same file recovers; a person settles what is uncertain (the
    // receiver says whether it arrived) and resumes a rollout paused for that reason only.
    async fn restart(
        make: &impl Fn(Arc<SqliteStore>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Arc<AppState>>>>,
        store: &Arc<SqliteStore>,
        receiver: &Receiver,
    ) -> Arc<AppState> {
        // The kill is simulated by dropping the controller's futures, but a commit already handed to
        // SQLite's worker still lands — after the new controller may have read the rollout. A killed
        // process leaves nothing in flight: wait for the file's write lock before starting again.
        let mut conn = store.pool().acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.unwrap();
        sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
        drop(conn);
        let state = make(store.clone()).await;
        state.controller().recover().await.unwrap();
        for record in store.rollouts(false).await.unwrap() {
            let Some(item) = record.outbox.iter().find(|i| i.uncertain).cloned() else {
                continue;
            };
            let key = item.key.as_str();
            let ran = receiver.got.lock().unwrap().iter().any(|(_, _, k)| k == key);
            let failed = receiver.failed.lock().unwrap().iter().any(|k| k == key);
            let said = match (ran, failed) {
                (true, false) => "ran",
                (true, true) => "failed",
                (false, _) => "retry",
            };
            let body = CommandBody { pending: Some(said.into()), ..Default::default() };
            state.controller().command_named(&record.id, "settle", body, &operator()).await.unwrap();
            let after = store.rollout(&record.id).await.unwrap().unwrap();
            let interrupted = matches!(after.status(), sluice_engine::Status::Paused { reason, .. } if reason.contains("interrupted while running"));
            if interrupted {
                let body = CommandBody { reason: Some("checked after the restart".into()), ..Default::default() };
                state.controller().command_named(&record.id, "resume", body, &operator()).await.unwrap();
            }
        }
        state
    }
    let make_boxed = |s: Arc<SqliteStore>| -> std::pin::Pin<Box<dyn std::future::Future<Output = Arc<AppState>>>> {
        Box::pin(make(s))
    };

    // Start the rollouts; a start interrupted before its commit is simply started again.
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for (name, _) in scenarios(set) {
        loop {
            match state.controller().start(&admin(), None, name, &plan(name)).await {
                Ok(r) => {
                    ids.insert(name.to_string(), r.id);
                    break;
                }
                Err(e) if crashed(&e) => {
                    state = restart(&make_boxed, &store, &receiver).await;
                    if let Some(r) = store.rollouts(true).await.unwrap().into_iter().find(|r| r.flag == name) {
                        ids.insert(name.to_string(), r.id);
                        break;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    let controls: Vec<(String, u64, Control)> = scenarios(set)
        .into_iter()
        .flat_map(|(name, csv)| {
            Timeline::parse(csv).unwrap().controls.into_iter().map(move |(at, c)| (name.to_string(), at, c))
        })
        .collect();
    let mut done_controls = 0;
    let mut memory = RunnerMemory::default();
    for _ in 0..40 {
        clock.advance_ms(MIN);
        let now = clock.now();
        for (name, at, control) in &controls[..] {
            if *at > now || *at <= now.saturating_sub(MIN) {
                continue;
            }
            let (command, body) = match control {
                Control::Approve(item) => ("approve", CommandBody { item: Some(item.clone()), ..Default::default() }),
                Control::Decide { resume: true } => ("resume", CommandBody::default()),
                Control::Decide { resume: false } => ("rollback", CommandBody::default()),
                other => panic!("{other:?}"),
            };
            done_controls += 1;
            // A person whose command was cut off by the crash tries again.
            for _ in 0..2 {
                match state.controller().command_named(&ids[name], command, body.clone(), &who).await {
                    Err(e) if crashed(&e) => state = restart(&make_boxed, &store, &receiver).await,
                    _ => break,
                }
            }
        }
        loop {
            match state.controller().run_due(&memory).await {
                Ok(()) => break,
                Err(e) if crashed(&e) => {
                    state = restart(&make_boxed, &store, &receiver).await;
                    memory = RunnerMemory::default();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!(done_controls, controls.len());
    // Whatever the queue holds is delivered (a failed delivery would wait its backoff; none fails here).
    while state.controller().deliver_due().await > 0 {}
    let snapshot = state.live_in(None).unwrap().live().load();
    let mut ends = BTreeMap::new();
    for (name, id) in &ids {
        let record = store.rollout(id).await.unwrap().unwrap();
        // Nothing left undone but an action that failed for good, kept for a person to settle.
        let undone: Vec<_> = record.outbox.iter().filter(|i| !i.done && i.failed.is_none()).collect();
        assert!(undone.is_empty(), "{name}: an outbox left behind: {undone:?}");
        // A tick's decisions are written with its transition: a crash neither loses nor repeats them.
        let decisions = store.decisions(id, 100_000).await.unwrap();
        let ticks: std::collections::BTreeSet<String> =
            decisions.iter().map(|d| format!("{}/{:?}/{}", d.decision.at, d.decision.kind, d.decision.check)).collect();
        assert_eq!(ticks.len(), decisions.len(), "{name}: a tick's decisions were written twice");
        let percent = snapshot.flags().iter().find(|f| &f.key == name).unwrap().ramp.percent;
        ends.insert(name.clone(), End { status: record.status().name().to_string(), percent });
    }
    assert!(matches!(store.verify(None).await.unwrap(), sluice_store::Verification::Intact { .. }));
    let received = receiver.got.lock().unwrap().clone();
    // Every action that ran is in the audit log — its outcome committed with its done mark, or a person's
    // word on it after a crash — and no outcome is audited twice.
    let chain = store.chain(0, 1_000_000).await.unwrap();
    let about = |action: &str, key: &str| {
        chain
            .iter()
            .filter(|e| e.action == action && e.after.as_ref().is_some_and(|a| a["idempotency_key"] == key))
            .count()
    };
    for (flag, action, key) in &received {
        let (outcomes, settled) = (about("rollout.action", key), about("rollout.settled", key));
        assert!(outcomes <= 1, "{flag} {action} {key}: its outcome audited {outcomes} times");
        assert!(outcomes + settled >= 1, "{flag} {action} {key}: ran, and the audit log does not say so");
    }
    let mut told = BTreeMap::new();
    for t in receiver.told.lock().unwrap().iter() {
        *told.entry(t.clone()).or_insert(0) += 1;
    }
    // Every event of every rollout's history was told at least once (it was queued in its transition's
    // commit), and nothing was told that is not in a history (a repeat is the same event).
    let mut history = std::collections::BTreeSet::new();
    for (flag, id) in &ids {
        let record = store.rollout(id).await.unwrap().unwrap();
        for (i, e) in record.state.history.iter().enumerate() {
            history.insert((flag.clone(), i.to_string(), e.kind.clone()));
        }
    }
    let told_events: std::collections::BTreeSet<_> = told.keys().cloned().collect();
    assert_eq!(told_events, history, "crash at {crash_at:?}: notifications lost or invented");
    let ours: BTreeMap<String, String> = ids.iter().map(|(flag, id)| (id.clone(), flag.clone())).collect();
    let mut desk = BTreeMap::new();
    for (path, key) in DESK_GOT.lock().unwrap().iter() {
        let Some(flag) = key.split(':').next().and_then(|id| ours.get(id)) else { continue };
        assert_eq!(path, flag, "the desk call went to its flag's path");
        desk.entry(flag.clone()).or_insert_with(Vec::new).push(key.clone());
    }
    Run { ends, received, told, desk, boundaries: counter.load(Ordering::SeqCst), rollouts: ids.len() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_boundary_every_rollout_ends_as_uninterrupted() {
    prove(Set::Outcomes, 1000).await;
}

/// A failed phase hook is never forgotten by a crash (the ramp never goes on past it), and a failed
/// rollback action never holds back the flag's rollback, wherever the controller is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_boundary_failing_hooks_and_actions_end_as_uninterrupted() {
    prove(Set::Failures, 500).await;
}

/// Runs `set` once uninterrupted, then once killed at each boundary, and compares every run with the first.
async fn prove(set: Set, at_least: usize) {
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = drive(set, reference_dir.path(), None).await;
    let expected: BTreeMap<&str, (&str, u8)> = [
        ("healthy", ("completed", 100)),
        ("hard_rollback", ("rolled_back", 0)),
        ("soft_resumed", ("completed", 100)),
        ("soft_defaulted", ("rolled_back", 0)),
        ("late_approval", ("completed", 100)),
        ("rolled_back_by_hand", ("rolled_back", 0)),
        // A failed hook of phase 2 stops the ramp: stepped back to phase 1's 10%, paused for a person.
        ("migrate_fails", ("paused", 10)),
        ("warm_fails", ("paused", 10)),
        // A failed rollback action never holds back the rollback of the flag.
        ("undo_fails", ("rolled_back", 0)),
        ("page_fails", ("rolled_back", 0)),
    ]
    .into_iter()
    .collect();
    assert_eq!(reference.ends.len(), scenarios(set).len());
    for (name, end) in &reference.ends {
        assert_eq!((end.status.as_str(), end.percent), expected[name.as_str()], "reference run, {name}");
    }
    let count = |received: &[(String, String, String)], flag: &str, action: &str| {
        received.iter().filter(|(f, a, _)| f == flag && a == action).map(|(_, _, k)| k.clone()).collect::<Vec<_>>()
    };

    let mut rollouts = reference.rollouts;
    for k in 0..reference.boundaries {
        let dir = tempfile::tempdir().unwrap();
        let run = drive(set, dir.path(), Some(k)).await;
        rollouts += run.rollouts;
        assert_eq!(run.ends, reference.ends, "killed at boundary {k}");
        // The desk's webhook: as many distinct keys as without the crash, repeats only under one key.
        for (flag, want) in &reference.desk {
            let got = run.desk.get(flag).cloned().unwrap_or_default();
            let distinct = |keys: &[String]| keys.iter().collect::<std::collections::BTreeSet<_>>().len();
            assert_eq!(distinct(&got), distinct(want), "boundary {k}: {flag} desk calls {got:?} vs {want:?}");
        }
        for (flag, _) in scenarios(set) {
            for action in ["migrate", "warm", "undo", "page"] {
                let want = count(&reference.received, flag, action);
                let got = count(&run.received, flag, action);
                if action == "undo" || action == "warm" {
                    // Idempotent: as many distinct runs as without the crash; a run may repeat, but only
                    // under its own key (a receiver that drops repeats sees the same runs).
                    let distinct = |keys: &[String]| keys.iter().collect::<std::collections::BTreeSet<_>>().len();
                    assert_eq!(distinct(&got), distinct(&want), "boundary {k}: {flag} {action}: {got:?} vs {want:?}");
                    assert!(
                        got.windows(2).all(|w| w[0] == w[1]),
                        "boundary {k}: {flag} {action} repeated with new keys: {got:?}"
                    );
                } else {
                    // Not idempotent: exactly as often as without the crash (at most once).
                    assert_eq!(got.len(), want.len(), "boundary {k}: {flag} {action} ran {got:?}, expected {want:?}");
                }
            }
        }
    }
    assert!(rollouts >= at_least, "only {rollouts} rollouts simulated over {} boundaries", reference.boundaries);
    assert!(!reference.told.is_empty() && !reference.desk.is_empty(), "the reference told people and called the desk");
    println!("{} boundaries, {rollouts} rollouts", reference.boundaries);
}

/// Plans that run programs are started by an admin; operators decide on them.
fn admin() -> sluice_store::Principal {
    sluice_store::Principal { name: "platform-admin".into(), role: sluice_store::Role::Admin, envs: None }
}
