//! What `synchronous=FULL` costs a commit: N flag writes (each with its audit event) and N rollout
//! transitions (state, outbox, audit event, a queued notification) on SQLite in WAL mode, with each
//! durability, on the same disk.
//!
//! Run: `cargo run --release -p sluice-bench --bin store_commit -- 500`

use std::time::{Duration, Instant};

use sluice_store::{Change, Durability, RolloutRecord, RolloutSave, SqliteStore, Store};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).saturating_sub(1).min(v.len() - 1)]
}

async fn measure(durability: Durability, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let store = SqliteStore::open_with(dir.path().join("s.db"), durability).await.unwrap();
    let mut flag = sluice_flags::Flag::boolean("f");
    let mut writes = Vec::with_capacity(n);
    for i in 0..n {
        flag.ramp.percent = (i % 100) as u8;
        let began = Instant::now();
        store.apply("bench", Change::PutFlag(flag.clone()), None).await.unwrap();
        writes.push(began.elapsed());
    }
    let (plan, _) = sluice_plan::load("p.yaml", "name: p\nflag: f\nphases: [ { percent: 100 } ]\n", None).unwrap();
    let mut state = sluice_engine::Rollout::new(&plan);
    state.start(&plan, 0);
    let record = RolloutRecord {
        env: "production".into(),
        id: "r".into(),
        flag: "f".into(),
        plan_name: "p".into(),
        plan_text: "name: p".into(),
        original_flag: flag.clone(),
        state: state.clone(),
        active: true,
        outbox: Vec::new(),
        created_by: "bench".into(),
        created_at: String::new(),
        updated_at: String::new(),
    };
    store.create_rollout(&record, &[], &[]).await.unwrap();
    let outbox = vec![sluice_engine::OutboxItem::new("r:1:0", sluice_engine::Effect::RestoreFlag)];
    let mut transitions = Vec::with_capacity(n);
    for i in 0..n {
        let note = [("rollout.paused".to_string(), serde_json::json!({"i": i}), None)];
        let queued = [sluice_store::NewNotification {
            id: format!("r:{i}"),
            destination: sluice_store::Destination::Log,
            rollout_id: "r".into(),
            body: serde_json::json!({"i": i}),
        }];
        let began = Instant::now();
        store
            .save_rollout(&RolloutSave {
                actor: "bench",
                id: "r",
                state: &state,
                outbox: &outbox,
                events: &note,
                notifications: &queued,
                decisions: None,
            })
            .await
            .unwrap();
        transitions.push(began.elapsed());
    }
    (writes, transitions)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(500);
    println!("{n} commits of each kind, SQLite WAL, in a folder under the current directory");
    for (name, durability) in
        [("NORMAL (process crash)", Durability::ProcessCrash), ("FULL (power loss)", Durability::PowerLoss)]
    {
        let (mut w, mut t) = measure(durability, n).await;
        println!(
            "{name:>24}: flag write p50 {:?} p99 {:?} | rollout transition p50 {:?} p99 {:?}",
            pct(&mut w, 0.5),
            pct(&mut w, 0.99),
            pct(&mut t, 0.5),
            pct(&mut t, 0.99)
        );
    }
}
