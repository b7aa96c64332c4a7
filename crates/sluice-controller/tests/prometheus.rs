//! The controller against a real Prometheus serving a loaded history (`promtool tsdb create-blocks-from
//! openmetrics`), in virtual time inside that history:
//! - every example plan (the seeds), with its notifications and webhook actions removed and its programs
//!   replaced by `true`, checks without a word about `prometheus` or `http`, starts, and records a
//!   decision with a value for every Prometheus check; every Prometheus check of every phase has a value;
//! - a baseline is captured at the start, kept across a restart, and compared with at each tick.
//!
//! The history is made to fit the plans' queries: every selector of every query (parsed with a PromQL
//! parser) gets a series with the labels it asks for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;
use serde_json::Value;
use sluice_controller::{Catalog, Controller, RunnerMemory, Seams};
use sluice_engine::{Clock, Measurement, Rollout, Status, VirtualClock};
use sluice_flags::{Flag, SegmentDef};
use sluice_plan::{Level, Plan};
use sluice_sources::sources::prometheus::PrometheusCheck;
use sluice_sources::{MeasureContext, Plugins, Registry};
use sluice_store::{Change, Principal, Role, SqliteStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../../sluice-sources/tests/support/prometheus.rs"]
mod support;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn admin() -> Principal {
    Principal { name: "platform-admin".into(), role: Role::Admin, envs: None }
}

#[derive(serde::Deserialize)]
struct FlagFile {
    #[serde(default)]
    segments: Vec<SegmentDef>,
    flags: Vec<Flag>,
}

fn flag_file() -> FlagFile {
    serde_saphyr::from_str(&std::fs::read_to_string(examples().join("flags/catalog.yaml")).unwrap()).unwrap()
}

fn plan_catalog(file: &FlagFile) -> sluice_plan::Catalog {
    sluice_plan::Catalog {
        flags: file
            .flags
            .iter()
            .map(|f| sluice_plan::CatalogFlag {
                key: f.key.clone(),
                variants: f.variants.iter().map(|v| v.name.clone()).collect(),
            })
            .collect(),
        segments: file.segments.iter().map(|s| s.name.clone()).collect(),
    }
}

/// Each Prometheus check of `plan` with the template values of the phase it is measured in: the plan's
/// gates and triggers at every phase, a phase's own gates at that phase.
fn prometheus_checks<'p>(
    plan: &'p Plan,
    flag: &Flag,
) -> Vec<(usize, &'p sluice_plan::model::Check, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for (i, phase) in plan.phases.iter().enumerate() {
        let mut at = Rollout::new(plan);
        at.phase = i;
        at.status = Status::Running;
        let values = at.template_values(plan, Some((&flag.ramp.base, &flag.ramp.ramped)));
        let checks = plan.gates.iter().chain(plan.triggers.iter()).chain(phase.value.gates.iter());
        for c in checks {
            if c.value.source_kind(plan, sluice_sources::described()).as_deref() == Some("prometheus") {
                out.push((i, &c.value, values.clone()));
            }
        }
    }
    out
}

/// The queries a check asks, templates filled.
fn queries(check: &sluice_plan::model::Check, values: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let check = PrometheusCheck::of(check).expect("a prometheus check");
    if let Some(q) = &check.query {
        out.push(sluice_plan::render(&q.value, values));
    }
    if let Some(slo) = &check.slo {
        for w in &slo.value.windows {
            let mut values = values.clone();
            values.insert("window".into(), w.value.to_string());
            out.push(sluice_plan::render(&slo.value.good.value, &values));
            out.push(sluice_plan::render(&slo.value.total.value, &values));
        }
    }
    out
}

/// Every vector selector of a query: its metric name and the labels that satisfy its matchers.
fn selectors(expr: &Expr, out: &mut BTreeSet<(String, BTreeMap<String, String>)>) {
    match expr {
        Expr::Aggregate(a) => selectors(&a.expr, out),
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, out)),
        Expr::MatrixSelector(m) => selector(&m.vs, out),
        Expr::VectorSelector(v) => selector(v, out),
        _ => {}
    }
}

fn selector(v: &promql_parser::parser::VectorSelector, out: &mut BTreeSet<(String, BTreeMap<String, String>)>) {
    let mut name = v.name.clone();
    let mut labels = BTreeMap::new();
    for m in &v.matchers.matchers {
        let value = match &m.op {
            MatchOp::Equal => m.value.clone(),
            // `5..` → `500`; `A|B` → `A`.
            MatchOp::Re(_) => m.value.split('|').next().unwrap().replace('.', "0"),
            MatchOp::NotEqual => format!("{}_other", m.value),
            MatchOp::NotRe(_) => "200".to_string(),
        };
        if m.name == "__name__" {
            name = Some(value);
        } else {
            labels.insert(m.name.clone(), value);
        }
    }
    out.insert((name.expect("a selector names its metric"), labels));
}

/// A healthy history: for each selector a series (three buckets for a histogram's `_bucket`), traffic
/// counters growing at 100/s, error-like counters at 0.001/s, gauges at 1, and no alert firing, over
/// three hours from `t0`.
fn history(selected: &BTreeSet<(String, BTreeMap<String, String>)>, t0: u64) -> String {
    let mut families: BTreeMap<String, Vec<support::Series<'static>>> = BTreeMap::new();
    for (name, labels) in selected {
        if name == "ALERTS" {
            continue;
        }
        let failing = labels.get("code").is_some_and(|c| c.starts_with('4') || c.starts_with('5'));
        let traffic = ["requests", "validations", "_count", "_sum", "_bucket"].iter().any(|w| name.contains(w));
        let counter = ["_total", "_count", "_sum", "_bucket"].iter().any(|w| name.ends_with(w));
        let buckets: Vec<(Option<&str>, f64)> = if name.ends_with("_bucket") {
            vec![(Some("0.5"), 50.0), (Some("1"), 90.0), (Some("+Inf"), 100.0)]
        } else if name.ends_with("_sum") {
            vec![(None, 30.0)]
        } else if counter && traffic && !failing {
            vec![(None, 100.0)]
        } else if counter {
            vec![(None, 0.001)]
        } else {
            vec![(None, 0.0)]
        };
        for (le, rate) in buckets {
            let mut labels = labels.clone();
            if let Some(le) = le {
                labels.insert("le".into(), le.into());
            }
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let series = format!("{name}{{{}}}", inner.join(","));
            let value: Box<dyn Fn(u64) -> f64> =
                if rate > 0.0 { Box::new(move |t| rate * (t - t0) as f64) } else { Box::new(|_| 1.0) };
            families.entry(name.clone()).or_default().push(support::Series { name: series, value });
        }
    }
    let families: Vec<(&str, &str, Vec<support::Series<'_>>)> =
        families.into_iter().map(|(name, series)| (leak(name), "unknown", series)).collect();
    support::openmetrics(&families, t0, t0 + 3 * 3600, 60)
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A loopback stub for the plans' golden probes: every request gets `200 {}`.
async fn probe_target() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                    .await;
            });
        }
    });
    url
}

/// The plan as JSON (which is YAML), without notifications and webhook actions, its programs replaced
/// by `true` (they are not on this machine), its Prometheus `prometheus` and its probes' hosts `probes`.
fn runnable(text: &str, prometheus: &str, probes: &str) -> String {
    fn walk(v: &mut Value, probes: &str) {
        match v {
            Value::Array(items) => {
                items.retain(|i| i.get("webhook").is_none());
                items.iter_mut().for_each(|i| walk(i, probes));
            }
            Value::Object(map) => {
                if let Some(exec) = map.get_mut("exec") {
                    *exec = serde_json::json!(["true"]);
                }
                if let Some(Value::String(url)) = map.get_mut("url") {
                    if let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) {
                        let path = rest.find('/').map_or("", |i| &rest[i..]);
                        *url = format!("{probes}{path}");
                    }
                }
                map.values_mut().for_each(|i| walk(i, probes));
            }
            _ => {}
        }
    }
    let mut plan: Value = serde_saphyr::from_str(text).unwrap();
    let map = plan.as_object_mut().unwrap();
    map.remove("notify");
    walk(&mut plan, probes);
    plan["analysis"]["prometheus"] = serde_json::json!({ "url": prometheus });
    serde_json::to_string_pretty(&plan).unwrap()
}

async fn controller_at(
    file: &FlagFile,
    now_ms: u64,
) -> (tempfile::TempDir, Arc<dyn Store>, Arc<Controller>, Arc<VirtualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("s.db")).await.unwrap());
    for s in &file.segments {
        store.apply("test", Change::PutSegment(s.clone()), None).await.unwrap();
    }
    for f in &file.flags {
        store.apply("test", Change::PutFlag(f.clone()), None).await.unwrap();
    }
    let clock = Arc::new(VirtualClock::at(now_ms));
    let catalog = Arc::new(Catalog::load(store.clone(), Box::new(|_, _, _| {})).await.unwrap());
    let seams = Seams { clock: clock.clone() as Arc<dyn Clock>, ..Seams::default() };
    (dir, store, Controller::new(catalog, seams), clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_plan_starts_against_a_real_prometheus_and_measures_each_check() {
    let file = flag_file();
    let catalog = plan_catalog(&file);
    let registry = Registry::new(&sluice_sources::Config::default());
    let mut plans = Vec::new();
    let mut selected = BTreeSet::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let (plan, notes) = sluice_plan::load_with(&name, &text, Some(&catalog), &registry)
            .unwrap_or_else(|p| panic!("{name} does not check: {p:?}"));
        for note in &notes {
            let words = note.to_string();
            assert!(
                !words.contains("prometheus") && !words.contains("`http`"),
                "{name}: plan check notes something about prometheus or http: {words}"
            );
        }
        let flag = file.flags.iter().find(|f| f.key == plan.flag.value).unwrap().clone();
        for (_, check, values) in prometheus_checks(&plan, &flag) {
            for q in queries(check, &values) {
                let expr = promql_parser::parser::parse(&q).unwrap_or_else(|e| panic!("{name}: {q}: {e}"));
                selectors(&expr, &mut selected);
            }
        }
        let unavailable = notes.iter().any(|n| n.level == Level::Unavailable && n.to_string().contains("builtin"));
        plans.push((name, text, plan, flag, unavailable));
    }
    let t0 = support::this_hour() - 4 * 3600;
    let Some(prometheus) = tokio::task::block_in_place(|| support::with_history(&history(&selected, t0))) else {
        return;
    };
    let probes = probe_target().await;
    let now = (t0 + 2 * 3600) * 1000;

    let mut started = 0;
    for (name, text, plan, flag, unavailable) in &plans {
        // Every Prometheus check of every phase has a value in the history.
        let runnable_text = runnable(text, &prometheus.url, &probes);
        let (runnable_plan, _) = sluice_plan::load(name, &runnable_text, None).unwrap();
        let checks = prometheus_checks(&runnable_plan, flag);
        for (phase, check, values) in &checks {
            let cx = MeasureContext {
                rollout: None,
                rollout_id: "r",
                plan: &runnable_plan,
                started_at: now,
                phase_started: now,
                now,
                values,
            };
            let m = registry.measure(check, &cx).await;
            let zero = check.on_empty == Some(sluice_plan::model::OnEmpty::Zero);
            assert!(
                matches!(m, Measurement::Value(v) if v.is_finite()) || (zero && m == Measurement::Empty),
                "{name}: `{}` in phase {} has no value: {m:?}",
                check.name.value,
                phase + 1
            );
        }

        let (_dir, store, controller, clock) = controller_at(&file, now).await;
        let record = match controller.start(&admin(), None, name, &runnable_text).await {
            Ok(r) => r,
            Err(e) => {
                // A plan that needs a source this build lacks (the built-in metrics) cannot start yet,
                // and says which.
                assert!(*unavailable, "{name} does not start: {e}");
                assert!(e.to_string().contains("builtin"), "{name}: {e}");
                continue;
            }
        };
        started += 1;
        let memory = RunnerMemory::default();
        clock.advance_ms(plan.analysis.interval.value.0.as_millis() as u64);
        controller.run_due(&memory).await.unwrap();
        let decisions = store.decisions(&record.id, 1000).await.unwrap();
        let due: BTreeSet<&str> = plan
            .gates
            .iter()
            .chain(plan.triggers.iter())
            .chain(plan.phases[0].value.gates.iter())
            .filter(|c| c.value.source_kind(plan, sluice_sources::described()).as_deref() == Some("prometheus"))
            .map(|c| c.value.name.value.as_str())
            .collect();
        let mut measured = BTreeSet::new();
        for d in decisions.iter().map(|d| &d.decision) {
            let check = d.check.as_str();
            if due.contains(check) {
                assert!(d.value.is_some(), "{name}: `{check}` decided without a value: {d:?}");
                measured.insert(check.to_string());
            }
        }
        let due: BTreeSet<String> = due.into_iter().map(String::from).collect();
        assert_eq!(measured, due, "{name}: a decision for every Prometheus check due at the first tick");
    }
    // The plans that also use the built-in metrics start once that source exists; every other one did.
    let startable = plans.iter().filter(|p| !p.4).count();
    assert_eq!(started, startable);
    assert!(started >= 3, "only {started} example plans started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_is_captured_at_the_start_and_kept_across_a_restart() {
    let t0 = support::this_hour() - 4 * 3600;
    let latency = support::Series {
        name: r#"latency_seconds{variant="on"}"#.into(),
        value: Box::new(move |t| if t - t0 >= 7200 { 0.5 } else { 0.2 }),
    };
    let history = support::openmetrics(&[("latency_seconds", "gauge", vec![latency])], t0, t0 + 3 * 3600, 30);
    let Some(prometheus) = tokio::task::block_in_place(|| support::with_history(&history)) else { return };
    let file = FlagFile { segments: Vec::new(), flags: vec![Flag::boolean("f")] };
    let plan = format!(
        "name: p\nflag: f\nanalysis: {{ interval: 1m, prometheus: {{ url: '{}' }} }}\n\
         phases: [ {{ percent: 10, hold: 2h }}, {{ percent: 100 }} ]\n\
         triggers: [ {{ name: slower, severity: hard, query: 'latency_seconds{{variant=\"{{{{ramped}}}}\"}}', baseline: {{ window: 1h }}, max_increase_pct: 50 }} ]\n",
        prometheus.url
    );
    // Started an hour into the history: the baseline is the hour before, all at 0.2.
    let start = (t0 + 3600) * 1000;
    let (dir, store, controller, clock) = controller_at(&file, start).await;
    let id = controller.start(&admin(), None, "p.yaml", &plan).await.unwrap().id;
    let stored = store.rollout(&id).await.unwrap().unwrap();
    assert!((stored.state.baselines["trigger:slower"] - 0.2).abs() < 1e-9, "{:?}", stored.state.baselines);

    // A restart: a new controller on the same store ticks with the stored baseline, not a new one.
    drop(controller);
    let catalog = Arc::new(Catalog::load(store.clone(), Box::new(|_, _, _| {})).await.unwrap());
    clock.advance_ms(58 * 60_000);
    let seams = Seams { clock: clock.clone() as Arc<dyn Clock>, ..Seams::default() };
    let controller = Controller::new(catalog, seams);
    controller.recover().await.unwrap();
    let memory = RunnerMemory::default();
    clock.advance_ms(60_000);
    controller.run_due(&memory).await.unwrap();
    let decisions = store.decisions(&id, 10).await.unwrap();
    let text = serde_json::to_string(&decisions).unwrap();
    assert!(text.contains("baseline 0.2"), "{text}");
    assert_eq!(store.rollout(&id).await.unwrap().unwrap().state.status, Status::Running);

    // From 2h the latency is 0.5, over 0.2 × 1.5: the trigger fires and the rollout rolls back.
    clock.advance_ms(60_000);
    controller.run_due(&memory).await.unwrap();
    let state = store.rollout(&id).await.unwrap().unwrap().state;
    assert!(matches!(state.status, Status::RolledBack { .. }), "{:?}", state.status);
    drop(dir);
}

/// A `baseline:` gate of a later phase captures its baseline when that phase starts — over the window
/// before it — keeps it with the rollout (shown on status), and the gate then decides: the rollout
/// completes. (Before, only plan-wide checks had their baselines captured, and such a gate waited forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_gates_baseline_is_captured_when_its_phase_starts() {
    let t0 = support::this_hour() - 4 * 3600;
    // 0.2 for the first two and a half hours, then 0.25 (within +50 % of what the phase started with).
    let latency = support::Series {
        name: r#"latency_seconds{variant="on"}"#.into(),
        value: Box::new(move |t| if t - t0 >= 9000 { 0.25 } else { 0.2 }),
    };
    let history = support::openmetrics(&[("latency_seconds", "gauge", vec![latency])], t0, t0 + 4 * 3600, 30);
    let Some(prometheus) = tokio::task::block_in_place(|| support::with_history(&history)) else { return };
    let file = FlagFile { segments: Vec::new(), flags: vec![Flag::boolean("f")] };
    let plan = format!(
        "name: p\nflag: f\nanalysis: {{ interval: 1m, prometheus: {{ url: '{}' }} }}\n\
         phases:\n  - {{ percent: 10, hold: 30m }}\n  - percent: 100\n    hold: 1h\n    gates: [ {{ name: p99, query: 'latency_seconds{{variant=\"{{{{ramped}}}}\"}}', baseline: {{ window: 30m }}, max_increase_pct: 50 }} ]\n",
        prometheus.url
    );
    let start = (t0 + 3600 + 30 * 60) * 1000;
    let (dir, store, controller, clock) = controller_at(&file, start).await;
    let id = controller.start(&admin(), None, "p.yaml", &plan).await.unwrap().id;
    assert!(store.rollout(&id).await.unwrap().unwrap().state.baselines.is_empty(), "nothing captured at the start");
    let memory = RunnerMemory::default();
    let mut summary = controller.summary(&id).await.unwrap();
    for _ in 0..120 {
        clock.advance_ms(60_000);
        controller.run_due(&memory).await.unwrap();
        summary = controller.summary(&id).await.unwrap();
        if summary.status.is_terminal() {
            break;
        }
    }
    // Phase 2 started about 30 minutes in (t0 + 2h): the baseline is the 30 minutes before it, all at 0.2,
    // and it stays 0.2 through the hour's hold although the series rose to 0.25 half-way (a rolling
    // baseline would have followed it up and ended at 0.25).
    assert!((summary.baselines["gate:p99@1"] - 0.2).abs() < 1e-9, "{:?}", summary.baselines);
    assert_eq!(summary.status, Status::Completed, "{:?}", summary.history);
    let decisions = store.decisions(&id, 100).await.unwrap();
    let p99 = decisions.iter().rev().find(|d| d.decision.check == "p99").unwrap();
    assert!((p99.decision.value.unwrap() - 0.25).abs() < 1e-9, "the last reading saw the rise: {p99:?}");
    assert!((p99.decision.threshold.baseline().unwrap() - 0.2).abs() < 1e-9, "{p99:?}");
    drop(dir);
}
