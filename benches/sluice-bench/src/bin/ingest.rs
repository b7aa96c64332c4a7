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
use sluice_flags::ofrep::Reason;
use sluice_sources::metrics::{Metrics, Observation, Values};
use sluice_store::{Role, SqliteStore, Store};

fn observations(n: usize, seed: u64) -> Vec<Observation<'static>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            let on = rng.u8(..10) == 0;
            Observation {
                flag: "f".into(),
                variant: if on { "on" } else { "off" }.into(),
                reason: if on { Reason::Split } else { Reason::Default },
                key: Some(format!("user-{}", rng.u32(..100_000)).into()),
                ok: rng.u8(..100) != 0,
                latency_ms: Some(20.0 + rng.f64() * 80.0),
                values: Values(vec![("basket_items".into(), (i % 7) as f64)]),
            }
        })
        .collect()
}

fn batch_json(obs: &[Observation], seed: u64) -> Value {
    let mut rng = fastrand::Rng::with_seed(seed);
    let list: Vec<Value> = obs
        .iter()
        .map(|o| {
            json!({"flag": &*o.flag, "variant": &*o.variant, "reason": if &*o.variant == "on" { "SPLIT" } else { "DEFAULT" },
            "key": o.key.as_deref(), "ok": o.ok, "latency_ms": o.latency_ms, "values": {"basket_items": rng.u8(..7)}})
        })
        .collect();
    json!({ "observations": list })
}

#[derive(serde::Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    observations: Vec<Observation<'a>>,
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

/// This process's user and system CPU time, in seconds (Linux `/proc/self/stat`, 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; here 0-based after the name, from field 3.
    (ticks(11) + ticks(12)) / 100.0
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

    // What a batch costs the server besides aggregating it: parsing its body.
    let sample = serde_json::to_vec(&batch_json(&batches[0], 0)).unwrap();
    let began = Instant::now();
    let mut parsed = 0u64;
    while began.elapsed() < Duration::from_secs(2) {
        let b: Batch = serde_json::from_str(std::str::from_utf8(&sample).unwrap()).unwrap();
        parsed += b.observations.len() as u64;
    }
    println!(
        "parsing batches in process, one thread: {:.2} M observations/s ({:.0} bytes each)",
        parsed as f64 / began.elapsed().as_secs_f64() / 1e6,
        sample.len() as f64 / 1000.0
    );

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

    // 3. OFREP single with and without 100k observations/s ingested meanwhile, in alternating rounds so
    // that drift in the machine's speed does not fall on one side.
    if wrk(&url, &sdk, 1).is_none() {
        println!("wrk is not installed: OFREP figures skipped (Debian: apt-get install wrk)");
        return;
    }
    let sending = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ingested = Arc::new(AtomicU64::new(0));
    // The sender writes ready-made HTTP/1.1 requests on one keep-alive connection, as wrk does: the
    // applications that send batches run elsewhere in production, so here the generator should cost as
    // little as it can, and it should not share the server's runtime.
    let addr = url.trim_start_matches("http://").to_string();
    let requests: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| {
            let mut r = format!(
                "POST /api/v1/metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {sdk}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )
            .into_bytes();
            r.extend_from_slice(b);
            r
        })
        .collect();
    let pacer = {
        let (sending, stop, ingested) = (sending.clone(), stop.clone(), ingested.clone());
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
            conn.set_nodelay(true).ok();
            let mut buf = vec![0u8; 4096];
            // 100 batches of 1,000 a second, on a 10 ms beat.
            let mut next = Instant::now();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                next += Duration::from_millis(10);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if !sending.load(Ordering::Relaxed) {
                    continue;
                }
                conn.write_all(&requests[i % requests.len()]).expect("send");
                // The answer is small and comes in one read; its status says whether the batch counted.
                let n = conn.read(&mut buf).expect("answer");
                if buf[..n].starts_with(b"HTTP/1.1 202") {
                    ingested.fetch_add(1000, Ordering::Relaxed);
                }
                i += 1;
            }
        })
    };
    // What the ingestion costs on its own (server and sender, this process): CPU seconds per second.
    sending.store(true, Ordering::Relaxed);
    let cpu_before = cpu_seconds();
    let idle_began = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "ingesting 100 k observations/s alone costs {:.1}% of one core (server and sender)",
        (cpu_seconds() - cpu_before) / idle_began.elapsed().as_secs_f64() * 100.0
    );
    let mut ratios = Vec::new();
    for round in 1..=3 {
        sending.store(false, Ordering::Relaxed);
        let alone = measure(&url, &sdk, seconds).await;
        sending.store(true, Ordering::Relaxed);
        let began = Instant::now();
        let counted = ingested.load(Ordering::Relaxed);
        let with = measure(&url, &sdk, seconds).await;
        let rate = (ingested.load(Ordering::Relaxed) - counted) as f64 / began.elapsed().as_secs_f64();
        ratios.push(with / alone);
        println!(
            "round {round}, OFREP single (wrk -t1 -c16): {alone:.0} req/s alone; {with:.0} req/s while ingesting {:.0} k observations/s ({:.0}%)",
            rate / 1e3,
            with / alone * 100.0
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = pacer.join();
    ratios.sort_by(f64::total_cmp);
    println!(
        "OFREP single while ingesting 100 k observations/s: {:.0}% of alone (median of 3 rounds)",
        ratios[1] * 100.0
    );
}

/// [`wrk`] off the runtime's threads, which serve the requests it sends.
async fn measure(url: &str, token: &str, seconds: u64) -> f64 {
    let (url, token) = (url.to_string(), token.to_string());
    tokio::task::spawn_blocking(move || wrk(&url, &token, seconds)).await.unwrap().unwrap_or(0.0)
}
