//! Built-in metrics ingestion: in-process aggregation on one core, HTTP batch ingestion on loopback, and
//! OFREP single throughput (wrk) with and without 100,000 observations a second being ingested at the same
//! time on the same machine.
//!
//! Run: `cargo run --release -p sluice-bench --bin ingest -- 10` (seconds per HTTP measurement; needs wrk)

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_sources::metrics::{Metrics, Observation};
use sluice_store::{Role, SqliteStore, Store};

fn observations(n: usize, seed: u64) -> Vec<Observation> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            let on = rng.u8(..10) == 0;
            let body = json!({"flag": "f", "variant": if on { "on" } else { "off" }, "reason": if on { "SPLIT" } else { "DEFAULT" },
                "key": format!("user-{}", rng.u32(..100_000)), "ok": rng.u8(..100) != 0, "latency_ms": 20.0 + rng.f64() * 80.0,
                "values": {"basket_items": (i % 7) as f64}});
            serde_json::from_value(body).unwrap()
        })
        .collect()
}

fn batch_json(obs: &[Observation], seed: u64) -> Value {
    let mut rng = fastrand::Rng::with_seed(seed);
    let list: Vec<Value> = obs
        .iter()
        .map(|o| {
            json!({"flag": o.flag, "variant": o.variant, "reason": if o.variant == "on" { "SPLIT" } else { "DEFAULT" },
            "key": o.key, "ok": o.ok, "latency_ms": o.latency_ms, "values": {"basket_items": rng.u8(..7)}})
        })
        .collect();
    json!({ "observations": list })
}

/// OFREP single requests per second, by wrk on loopback.
fn wrk(url: &str, token: &str, seconds: u64) -> Option<f64> {
    let script = std::env::temp_dir().join(format!("sluice-ingest-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "wrk.method = 'POST'\nwrk.body = '{{\"context\":{{\"targetingKey\":\"user-42\"}}}}'\nwrk.headers['Content-Type'] = 'application/json'\nwrk.headers['Authorization'] = 'Bearer {token}'\n"
        ),
    )
    .ok()?;
    let out = std::process::Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{seconds}s"), "-s"])
        .arg(&script)
        .arg(format!("{url}/ofrep/v1/evaluate/flags/f"))
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find(|l| l.starts_with("Requests/sec:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(10);

    // 1. In-process aggregation, one thread.
    let metrics = Metrics::default();
    let batches: Vec<Vec<Observation>> = (0..20).map(|s| observations(1000, s)).collect();
    let began = Instant::now();
    let mut n = 0u64;
    let mut now = 1_800_000_000_000u64;
    while began.elapsed() < Duration::from_secs(3) {
        for b in &batches {
            metrics.record(b, now).unwrap();
            now += 10;
            n += b.len() as u64;
        }
    }
    let per_core = n as f64 / began.elapsed().as_secs_f64();
    println!("aggregation in process, one thread: {:.2} M observations/s", per_core / 1e6);

    // 2. A server on loopback.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).await.unwrap());
    let (_, admin) = store.create_token("bench", "admin", Role::Admin).await.unwrap();
    let (_, sdk) = store.create_token("app", "sdk", Role::Sdk).await.unwrap();
    let state = sluice_server::AppState::load(store.clone() as Arc<dyn Store>, sluice_server::Options::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, sluice_server::router(state.clone())).into_future());
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{url}/api/v1/flags/f"))
        .bearer_auth(&admin)
        .json(&json!({"ramp": {"percent": 10}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // Serialized once: the applications that send them run elsewhere in production; here they share the
    // machine, so the generator should cost as little as it can.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        batches.iter().enumerate().map(|(i, b)| serde_json::to_vec(&batch_json(b, i as u64)).unwrap()).collect(),
    );

    // HTTP batch ingestion: four clients posting 1,000-observation batches as fast as they are accepted.
    let sent = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let until = began + Duration::from_secs(seconds);
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (http, url, sdk, bodies, sent) = (http.clone(), url.clone(), sdk.clone(), bodies.clone(), sent.clone());
            tokio::spawn(async move {
                let mut i = c;
                while Instant::now() < until {
                    let r = http
                        .post(format!("{url}/api/v1/metrics"))
                        .bearer_auth(&sdk)
                        .header("content-type", "application/json")
                        .body(bodies[i % bodies.len()].clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    sent.fetch_add(1000, Ordering::Relaxed);
                    i += 4;
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    println!(
        "HTTP batch ingestion on loopback (4 clients, 1,000 per batch): {:.0} k observations/s",
        sent.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64() / 1e3
    );

    // 3. OFREP single with and without 100k observations/s ingested meanwhile.
    let Some(alone) = wrk(&url, &sdk, seconds) else {
        println!("wrk is not installed: OFREP figures skipped (Debian: apt-get install wrk)");
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let ingested = Arc::new(AtomicU64::new(0));
    let pacer = {
        let (http, url, sdk, bodies, stop, ingested) =
            (http.clone(), url.clone(), sdk.clone(), bodies.clone(), stop.clone(), ingested.clone());
        tokio::spawn(async move {
            // 100 batches of 1,000 a second, on a 10 ms beat.
            let mut beat = tokio::time::interval(Duration::from_millis(10));
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                beat.tick().await;
                let r = http
                    .post(format!("{url}/api/v1/metrics"))
                    .bearer_auth(&sdk)
                    .header("content-type", "application/json")
                    .body(bodies[i % bodies.len()].clone())
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == 202) {
                    ingested.fetch_add(1000, Ordering::Relaxed);
                }
                i += 1;
            }
        })
    };
    let began = Instant::now();
    let with = tokio::task::spawn_blocking({
        let (url, sdk) = (url.clone(), sdk.clone());
        move || wrk(&url, &sdk, seconds)
    })
    .await
    .unwrap()
    .unwrap_or(0.0);
    let rate = ingested.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = pacer.await;
    println!("OFREP single (wrk -t1 -c16): {alone:.0} req/s alone; {with:.0} req/s while ingesting {:.0} k observations/s ({:.0}%)", rate / 1e3, with / alone * 100.0);
}
