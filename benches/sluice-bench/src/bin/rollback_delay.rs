//! Rollback delay, end to end: from a hard trigger's condition becoming true to an OFREP client on
//! loopback seeing the base variant.
//!
//! The server runs in process on loopback (real HTTP, SQLite on disk) with a virtual clock, so the two
//! parts are measured apart: the virtual part (the trigger's `for` plus the wait for the next tick) and
//! the wall-clock part (from the firing tick starting to the client reading the base variant: measure,
//! decide, write the transition, restore the flag, publish the snapshot, answer the request).
//!
//! Run: `cargo run --release -p sluice-bench --bin rollback_delay -- 100`

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_engine::{Clock, Measurement, VirtualClock};
use sluice_plan::model::{Action, Check};
use sluice_server::{AppState, Options, RunnerMemory, Seams};
use sluice_sources::{ActionContext, ActionOutcome, MeasureContext, Plugins};
use sluice_store::{Change, Principal, Role, SqliteStore, Store};

const MIN: u64 = 60_000;

/// The error rate every trigger reads, in thousandths.
struct Level(AtomicU64);

#[async_trait::async_trait]
impl Plugins for Level {
    async fn measure(&self, _: &Check, _: &MeasureContext<'_>) -> Measurement {
        Measurement::Value(self.0.load(Ordering::SeqCst) as f64 / 1000.0)
    }
    async fn run(&self, _: &Action, _: &ActionContext<'_>) -> ActionOutcome {
        ActionOutcome::done("")
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).saturating_sub(1).min(v.len() - 1)]
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(100);
    let dir = std::env::temp_dir().join(format!("sluice-rollback-delay-{}", std::process::id()));
    let store = Arc::new(SqliteStore::open(dir.join("s.db")).await.unwrap());
    let clock = Arc::new(VirtualClock::default());
    let level = Arc::new(Level(AtomicU64::new(0)));
    let seams = Seams { clock: clock.clone() as Arc<dyn Clock>, plugins: level.clone(), faults: None, fence: None };
    let state = AppState::load_with(store.clone() as Arc<dyn Store>, Options::default(), seams).await.unwrap();
    let (_, sdk) = store.create_token("bench", "sdk", Role::Sdk).await.unwrap();
    state.reload_tokens().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, sluice_server::router(state.clone())).into_future());
    let http = reqwest::Client::new();
    let who = Principal { name: "bench".into(), role: Role::Admin, envs: None };

    let (mut virtual_delays, mut wall) = (Vec::new(), Vec::new());
    let memory = RunnerMemory::default();
    for i in 0..runs {
        let flag = format!("f{i}");
        store.apply("bench", Change::PutFlag(sluice_flags::Flag::boolean(&flag)), None).await.unwrap();
        let snapshot = store.snapshot().await.unwrap().0;
        state.live_in(None).unwrap().live().replace(snapshot);
        let plan = format!(
            "name: p{i}\nflag: {flag}\nanalysis: {{ interval: 1m }}\nphases:\n  - {{ percent: 100, hold: 1h }}\nbake: 1h\n\
             triggers:\n  - {{ name: errors, command: [x], value_from: last_number, above: 0.05, for: 2m, severity: hard }}\n"
        );
        level.0.store(1, Ordering::SeqCst);
        state.controller().start(&who, None, "p.yaml", &plan).await.unwrap();
        // A few healthy ticks, then the condition turns true at a moment between two ticks.
        for _ in 0..3 {
            clock.advance_ms(MIN);
            state.controller().run_due(&memory).await.unwrap();
        }
        let ofrep = || {
            http.post(format!("{url}/ofrep/v1/evaluate/flags/{flag}"))
                .bearer_auth(&sdk)
                .json(&json!({"context": {"targetingKey": "u"}}))
                .send()
        };
        let served: serde_json::Value = ofrep().await.unwrap().json().await.unwrap();
        assert_eq!(served["value"], true, "ramped before the incident");
        let offset = (i as u64 * 7_919) % MIN;
        clock.advance_ms(offset);
        let became_true = clock.now();
        level.0.store(900, Ordering::SeqCst);
        clock.advance_ms(MIN - offset);
        loop {
            let started = Instant::now();
            state.controller().run_due(&memory).await.unwrap();
            let served: serde_json::Value = ofrep().await.unwrap().json().await.unwrap();
            if served["value"] == false {
                wall.push(started.elapsed());
                virtual_delays.push(clock.now() - became_true);
                break;
            }
            clock.advance_ms(MIN);
        }
        level.0.store(1, Ordering::SeqCst);
    }
    let (min_v, max_v) = (virtual_delays.iter().min().unwrap(), virtual_delays.iter().max().unwrap());
    println!("runs: {runs}");
    println!(
        "virtual: from {:.1} min to {:.1} min (for: 2m; interval 1m: at most for + one interval = 3 min)",
        *min_v as f64 / MIN as f64,
        *max_v as f64 / MIN as f64
    );
    assert!(*max_v <= 3 * MIN, "more than for + one interval");
    println!(
        "wall clock, firing tick to the client reading the base variant: p50 {:?}  p99 {:?}  max {:?}",
        pct(&mut wall, 0.5),
        pct(&mut wall, 0.99),
        pct(&mut wall, 1.0)
    );
    let _ = std::fs::remove_dir_all(dir);
}
