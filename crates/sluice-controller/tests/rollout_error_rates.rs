//! Whole rollouts keep their error rates. A four-phase plan (5 → 20 → 50 → 100 %, each held, a gate and a
//! hard trigger comparing the canary's error ratio with control, the trigger with `for:`) runs in virtual
//! time through the engine, each check measured by the builtin source's own judging
//! (`sluice_sources::sources::builtin::judge`) on simulated traffic: 2,000 requests a tick, every user new.
//!
//! - **A/A** (canary and control both at 1 %): the rollout may be rolled back by its trigger in at most
//!   α = 5 % of runs, however many phases, retries and ticks it takes — the trigger keeps one sequence for
//!   the whole rollout.
//! - **At the gate's margin** (canary at 1.5 %, the margin 0.5 point), with the gate alone: it may be
//!   promoted to 100 % in at most α of runs.
//! - **The same runs through the real controller** — a SQLite store in a temporary directory, the
//!   observations recorded through the ingestion path (`Metrics::record`), the real `builtin` source, the
//!   controller's ticks — **decide exactly as the engine did**, decision by decision.
//!
//! `SLUICE_ROLLOUT_RUNS` sets the engine's runs per scenario (1,000 by default, as CI runs;
//! `scripts/error-rates` runs 10,000 and writes `docs/rollout-error-rates.json`, from which
//! `docs/metrics.md`'s rollout table is generated); `SLUICE_CONTROLLER_RUNS` the controller's (10 by
//! default; 200 in the full run).

#[path = "../../sluice-stats/tests/support/sim.rs"]
mod sim;
use sim::{binomial, published_table, repo, wilson_upper};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_controller::{Catalog, Controller, RunnerMemory, Seams};
use sluice_engine::{CheckDecision, CheckKind, CheckRef, Clock, Measurement, Rollout, Status, VirtualClock};
use sluice_plan::Plan;
use sluice_sources::metrics::{Aggregate, Observation};
use sluice_sources::sources::builtin::{alpha_of, judge, margin_of, split_mismatch, Judging, Metric};
use sluice_stats::Moments;
use sluice_store::{Change, Principal, Role, SqliteStore, Store};

const REQUESTS: u64 = 2_000;
const START: u64 = 1_800_000_000_000;
const HORIZON: usize = 600;
const ALPHA: f64 = 0.05;

const FULL_PLAN: &str = "name: guarded
flag: f
analysis: { interval: 1s }
phases:
  - { percent: 5, hold: 30s }
  - { percent: 20, hold: 30s }
  - { percent: 50, hold: 30s }
  - { percent: 100, hold: 30s }
gates:
  - { name: errors-within, metric: error_rate, compare: control, max_increase: 0.005 }
triggers:
  - { name: errors-worse, metric: error_rate, compare: control, max_increase: 0, for: 3s, severity: hard }
";

fn gate_only_plan() -> String {
    FULL_PLAN.split("triggers:").next().unwrap().to_string()
}

fn env_runs(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|r| r.parse().ok()).unwrap_or(default)
}

fn plan(text: &str) -> Plan {
    sluice_plan::load_with("plan.yaml", text, None, sluice_sources::described()).expect("a valid plan").0
}

/// One tick's traffic, as the app reported it before the tick.
#[derive(Debug, Clone, Copy)]
struct Traffic {
    canary: u64,
    canary_errors: u64,
    control: u64,
    control_errors: u64,
}

/// Tick `k`'s traffic at `percent`.
fn traffic(rng: &mut fastrand::Rng, percent: u8, p_canary: f64, p_control: f64) -> Traffic {
    let canary = if percent >= 100 { REQUESTS } else { binomial(rng, REQUESTS, f64::from(percent) / 100.0) };
    let control = REQUESTS - canary;
    Traffic {
        canary,
        canary_errors: binomial(rng, canary, p_canary),
        control,
        control_errors: binomial(rng, control, p_control),
    }
}

/// When tick `k` (from 1) runs; its traffic was recorded half a second before, in the second before it.
fn at(k: usize) -> u64 {
    START + k as u64 * 1000
}

/// The traffic of ticks `1..=done` in the window `[from, to)` as the built-in metrics cut it: the seconds
/// that started at or after `from` and, with `to`, ended by it.
fn window(traffic: &[Traffic], from: u64, to: Option<u64>, canary: bool) -> Aggregate {
    let mut m = Moments::default();
    for (i, t) in traffic.iter().enumerate() {
        let second = at(i + 1) - 1000;
        if second >= from && to.is_none_or(|to| second + 1000 <= to) {
            let (n, e) = if canary { (t.canary, t.canary_errors) } else { (t.control, t.control_errors) };
            m.n += n;
            m.sum += e as f64;
            m.sum_sq += e as f64;
        }
    }
    Aggregate { errors: m, ..Aggregate::default() }
}

/// The traffic split's key counts as the built-in metrics keep them: counting starts (empty) at the first
/// look of a window, and takes in what is recorded after it.
#[derive(Default)]
struct Keys {
    since: Option<u64>,
    /// The tick at whose look the count started.
    from_tick: usize,
}

/// One run through the engine alone; its decisions, how it ended, and whether it reached 100 %.
struct Run {
    decisions: Vec<CheckDecision>,
    status: Status,
    reached_full: bool,
    /// The furthest phase it reached (from 0).
    furthest: usize,
}

fn engine_run(plan: &Plan, seed: u64, p_canary: f64, p_control: f64) -> Run {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut rollout = Rollout::new(plan);
    rollout.start(plan, START);
    let mut seen: Vec<Traffic> = Vec::new();
    let mut keys = Keys::default();
    let mut decisions = Vec::new();
    let mut reached_full = false;
    let mut furthest = 0;
    for k in 1..=HORIZON {
        seen.push(traffic(&mut rng, rollout.percent(plan), p_canary, p_control));
        let now = at(k);
        let mut source = |c: &CheckRef<'_>, _now: u64| measure(plan, c, &seen, &mut keys, k);
        let (d, _) = rollout.tick(plan, now, &mut source);
        decisions.extend(d);
        reached_full |= rollout.percent(plan) >= 100;
        furthest = furthest.max(rollout.phase);
        if rollout.status.is_terminal() {
            break;
        }
    }
    Run { decisions, status: rollout.status, reached_full, furthest }
}

/// What the `builtin` source measures for check `c` at tick `k`, on the traffic seen so far.
fn measure(plan: &Plan, c: &CheckRef<'_>, seen: &[Traffic], keys: &mut Keys, k: usize) -> Measurement {
    let percent = plan.phases[c.phase].value.percent();
    let check = c.check;
    if 0 < percent && percent < 100 {
        let counts = if keys.since != Some(c.phase_started) {
            *keys = Keys { since: Some(c.phase_started), from_tick: k };
            (0, 0)
        } else {
            let after = &seen[keys.from_tick.min(seen.len())..];
            (after.iter().map(|t| t.canary).sum(), after.iter().map(|t| t.control).sum())
        };
        let mut map = std::collections::BTreeMap::new();
        if counts.0 + counts.1 > 0 {
            map.insert("on".to_string(), counts.0);
            map.insert("off".to_string(), counts.1);
        }
        let alpha = check.alpha.or(plan.analysis.alpha).unwrap_or(ALPHA);
        if let Some(mismatch) = split_mismatch(&map, "on", f64::from(percent), alpha) {
            return mismatch;
        }
    }
    let canary = window(seen, c.phase_started, None, true);
    let (reference, reference_window) = if percent < 100 {
        (window(seen, c.phase_started, None, false), c.phase_started)
    } else {
        match c.control_window {
            Some((from, to)) => (window(seen, from, Some(to), false), from),
            None => return Measurement::Inconclusive("no control".into()),
        }
    };
    judge(
        &Metric::ErrorRate,
        &canary,
        &reference,
        Judging {
            margin: margin_of(check.margin().unwrap()),
            min_samples: 100,
            reference_window,
            sequence: c.sequence,
            alpha: alpha_of(check, plan),
            trigger: c.kind == CheckKind::Trigger,
        },
    )
}

/// The same run through the real controller: its decisions as the store kept them, and how it ended.
async fn controller_run(plan_text: &str, seed: u64, p_canary: f64, p_control: f64) -> (Vec<CheckDecision>, Status) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with(dir.path().join("s.db"), sluice_store::Durability::ProcessCrash).await.unwrap(),
    );
    let mut flag = sluice_flags::Flag::boolean("f");
    flag.ramp.percent = 0;
    store.apply("alice", Change::PutFlag(flag), None).await.unwrap();
    let clock = Arc::new(VirtualClock::at(START));
    let registry = sluice_sources::Registry::new(&sluice_sources::Config::default());
    let metrics = sluice_sources::Plugins::metrics(&registry).unwrap();
    let catalog = Arc::new(Catalog::load(store.clone(), Box::new(|_, _, _| {})).await.unwrap());
    let seams =
        Seams { clock: clock.clone() as Arc<dyn Clock>, plugins: Arc::new(registry), faults: None, fence: None };
    let controller = Controller::new(catalog, seams);
    let admin = Principal { name: "admin".into(), role: Role::Admin, envs: None };
    let id = controller.start(&admin, None, "plan.yaml", plan_text).await.unwrap().id;
    let memory = RunnerMemory::default();
    let mut rng = fastrand::Rng::with_seed(seed);
    let plan = plan(plan_text);
    for k in 1..=HORIZON {
        let state = store.rollout(&id).await.unwrap().unwrap().state;
        if state.status.is_terminal() {
            break;
        }
        let t = traffic(&mut rng, state.percent(&plan), p_canary, p_control);
        // Every user new: a key each, as the app would report it with its stickiness key.
        let keys: Vec<String> = (0..REQUESTS).map(|i| format!("u{k}-{i}")).collect();
        let mut batch = Vec::with_capacity(REQUESTS as usize);
        for (i, key) in keys.iter().enumerate() {
            let i = i as u64;
            let (variant, reason, ok) = if i < t.canary {
                ("on", sluice_flags::ofrep::Reason::Split, i >= t.canary_errors)
            } else {
                ("off", sluice_flags::ofrep::Reason::Default, i - t.canary >= t.control_errors)
            };
            batch.push(Observation {
                flag: sluice_sources::metrics::key("production", "f").into(),
                variant: variant.into(),
                reason,
                key: Some(key.as_str().into()),
                ok,
                latency_ms: None,
                values: Default::default(),
            });
        }
        metrics.record(&batch, at(k) - 500).unwrap();
        clock.advance_ms(at(k) - clock.now());
        controller.run_due(&memory).await.unwrap();
    }
    let decisions = store.decisions(&id, 1_000_000).await.unwrap().into_iter().map(|d| d.decision).collect();
    (decisions, store.rollout(&id).await.unwrap().unwrap().state.status)
}

/// A scenario's outcome over its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    scenario: String,
    what: String,
    runs: usize,
    count: usize,
    rate: f64,
    wilson: f64,
    /// Ticks (seconds) to the end of the rollouts that completed: median.
    median_ticks: u64,
}

fn scenarios() -> Vec<Row> {
    let runs = env_runs("SLUICE_ROLLOUT_RUNS", 1_000);
    let full = plan(FULL_PLAN);
    let gate_only = plan(&gate_only_plan());
    let mut rows = Vec::new();
    let mut tally = |scenario: &str, what: &str, plan: &Plan, seed: u64, p_canary: f64, hit: &dyn Fn(&Run) -> bool| {
        let (mut count, mut ticks) = (0, Vec::new());
        for r in 0..runs {
            let run = engine_run(plan, seed * 1_000_003 + r as u64, p_canary, 0.01);
            let counted = hit(&run);
            count += usize::from(counted);
            if counted && run.status == Status::Completed {
                ticks.push(run.decisions.last().map_or(0, |d| (d.at - START) / 1000));
            }
        }
        ticks.sort_unstable();
        rows.push(Row {
            scenario: scenario.into(),
            what: what.into(),
            runs,
            count,
            rate: count as f64 / runs as f64,
            wilson: wilson_upper(count, runs),
            median_ticks: ticks.get(ticks.len() / 2).copied().unwrap_or(0),
        });
    };
    let aa = "A/A: canary and control at 1 %, gate and hard trigger";
    tally(aa, "rolled back", &full, 1, 0.01, &|r| matches!(r.status, Status::RolledBack { .. }));
    tally(aa, "completed", &full, 1, 0.01, &|r| r.status == Status::Completed);
    let margin = "canary at the gate's margin (1.5 % against 1 %), gate alone";
    tally(margin, "promoted to 100 %", &gate_only, 2, 0.015, &|r| r.reached_full);
    tally(margin, "promoted past 5 %", &gate_only, 2, 0.015, &|r| r.furthest >= 1);
    rows
}

fn render(rows: &[Row]) -> String {
    let runs = rows.first().map_or(0, |r| r.runs);
    let mut t = format!(
        "Whole rollouts in virtual time, {runs} seeded runs each: phases 5 → 20 → 50 → 100 %, each held 30 ticks, 2,000 requests a tick; the gate `error_rate` against control within 0.005, the hard trigger `error_rate` against control with `for` 3 ticks. The rate must stay at or under α = 5 % with the upper end of its Wilson 95 % interval (W≤).\n\n| scenario | outcome | rate (W≤) | median ticks to complete |\n|---|---|---|---|\n"
    );
    for r in rows {
        let ticks = if r.median_ticks > 0 { r.median_ticks.to_string() } else { "–".into() };
        t.push_str(&format!(
            "| {} | {} | {:.2} % ({:.2} %) | {ticks} |\n",
            r.scenario,
            r.what,
            r.rate * 100.0,
            r.wilson * 100.0
        ));
    }
    t
}

const BEGIN: &str =
    "<!-- rollout-error-rates: generated from docs/rollout-error-rates.json by `scripts/error-rates`; do not edit -->";
const END: &str = "<!-- rollout-error-rates: end -->";

#[test]
fn whole_rollouts_keep_their_error_rates() {
    let rows = scenarios();
    println!("{}", render(&rows));
    if let Ok(out) = std::env::var("SLUICE_ROLLOUT_OUT") {
        std::fs::write(out, serde_json::to_string_pretty(&rows).unwrap() + "\n").unwrap();
    }
    let rate = |what: &str| rows.iter().find(|r| r.what == what).unwrap();
    assert!(rate("rolled back").wilson <= ALPHA, "A/A rolled back: {:?}", rate("rolled back"));
    assert!(rate("promoted to 100 %").wilson <= ALPHA, "{:?}", rate("promoted to 100 %"));
    assert!(rate("completed").rate >= 0.9, "A/A rollouts complete: {:?}", rate("completed"));
}

#[test]
fn published_rollout_table_matches_the_simulations() {
    let rows: Vec<Row> =
        serde_json::from_str(&std::fs::read_to_string(repo("docs/rollout-error-rates.json")).unwrap()).unwrap();
    assert!(rows.iter().all(|r| r.runs >= 10_000), "the published run has at least 10,000 runs per scenario");
    let expected = render(&rows);
    assert_eq!(
        published_table(BEGIN, END, &expected),
        expected.trim(),
        "docs/metrics.md differs from docs/rollout-error-rates.json: run scripts/error-rates"
    );
}

/// The controller, the store and the ingestion path decide exactly as the engine alone did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_controller_reproduces_the_engines_decisions_exactly() {
    let runs = env_runs("SLUICE_CONTROLLER_RUNS", 10);
    let full = plan(FULL_PLAN);
    let gate_only_text = gate_only_plan();
    let gate_only = plan(&gate_only_text);
    for r in 0..runs {
        // Alternately the A/A case and the canary at the margin; one in five a canary twice worse, so that
        // the trigger's rollback is reproduced too.
        let (text, plan, p_canary) = match r % 5 {
            0 => (FULL_PLAN, &full, 0.02),
            1 | 3 => (FULL_PLAN, &full, 0.01),
            _ => (gate_only_text.as_str(), &gate_only, 0.015),
        };
        let seed = 77_000 + r as u64;
        let engine = engine_run(plan, seed, p_canary, 0.01);
        let (decisions, status) = controller_run(text, seed, p_canary, 0.01).await;
        assert_eq!(status, engine.status, "run {r}: how it ended");
        assert_eq!(decisions.len(), engine.decisions.len(), "run {r}: the number of decisions");
        for (i, (live, alone)) in decisions.iter().zip(&engine.decisions).enumerate() {
            assert_eq!(live, alone, "run {r}, decision {i}");
        }
    }
}
