//! The soak: `sluice serve` (the real binary, on loopback) under every kind of load at once for a long
//! time, judged by what an SRE would page on. First OFREP alone at the fixed rate (the unloaded p99), then
//! everything together:
//!
//! - OFREP single evaluations at a fixed rate, open-loop: each request is due at its own instant and its
//!   latency counts from that instant, not from when it was sent (no coordinated omission); sent over 64
//!   kept-alive connections (wrk2's design) from a thread of its own, so that the driver's other work
//!   does not count as the server's latency;
//! - built-in ingestion: batches of observations at a fixed rate of observations a second;
//! - rollouts ticking every second, each judged by a built-in gate on its own flag;
//! - one admin write a second (a ramp change);
//! - change-stream clients, each reading `/api/v1/stream` the whole time.
//!
//! Pass: 0 failed requests (every evaluation 200, every batch 202, every write 200, no stream ended),
//! the loaded p99 within 2× of the unloaded one, the server's RSS growing under 10 % from a fifth of the
//! run to its end (minute 2 to minute 10 of the full run), every rollout still running and deciding, and
//! the audit chain intact. Exits 1 when any fails.
//!
//! Run: `bash benches/soak/run.sh` (10 minutes, release) or see that script for the CI version.
//! Args: SECONDS RATE OBSERVATIONS_PER_S ROLLOUTS STREAMS SERVER_BINARY

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

struct Args {
    seconds: u64,
    rate: u64,
    observations: u64,
    rollouts: usize,
    streams: usize,
    server: String,
}

fn args() -> Args {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: u64| a.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    Args {
        seconds: num(0, 600),
        rate: num(1, 10_000),
        observations: num(2, 50_000),
        rollouts: num(3, 100) as usize,
        streams: num(4, 100) as usize,
        server: a.get(5).cloned().unwrap_or_else(|| "target/release/sluice".into()),
    }
}

const ADMIN: &str = "soak-admin-token-0123456789abcdef0123456789abcdef";

/// `sluice serve` as a child process, killed on drop.
struct Served {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(binary: &str, streams: usize) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let child = std::process::Command::new(binary)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .args(["--rate-limit", "1000000", "--max-streams-per-token", &(streams + 8).to_string()])
        .env("SLUICE_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{binary}: {e} (build it: cargo build --release -p sluice)"));
    let url = format!("http://127.0.0.1:{port}");
    let began = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(began.elapsed() < Duration::from_secs(20), "sluice serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Served { child, url, _dir: dir }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn call(http: &reqwest::Client, url: &str, token: &str, method: reqwest::Method, body: Value) -> (u16, Value) {
    let r = http.request(method, url).bearer_auth(token).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Flags, an sdk and a viewer token, and the rollouts, each gated by the built-in error rate of its flag.
async fn prepare(http: &reqwest::Client, url: &str, rollouts: usize) -> (String, String) {
    let put = |key: String| {
        let body = json!({"ramp": {"percent": 0}});
        let u = format!("{url}/api/v1/flags/{key}");
        async move { call(http, &u, ADMIN, reqwest::Method::PUT, body).await }
    };
    for key in ["checkout".to_string(), "admin-toggle".to_string()]
        .into_iter()
        .chain((0..rollouts).map(|i| format!("soak-{i}")))
    {
        let (st, v) = put(key).await;
        assert!(st == 200 || st == 201, "{st} {v}");
    }
    let (_, v) =
        call(http, &format!("{url}/api/v1/flags/checkout/ramp"), ADMIN, reqwest::Method::POST, json!({"percent": 30}))
            .await;
    assert!(v["data"].is_object(), "{v}");
    let token = |name: &str, role: &str| {
        let u = format!("{url}/api/v1/tokens");
        let body = json!({"name": name, "role": role});
        async move { call(http, &u, ADMIN, reqwest::Method::POST, body).await.1["token"].as_str().unwrap().to_string() }
    };
    let (sdk, viewer) = (token("soak-sdk", "sdk").await, token("soak-viewer", "viewer").await);
    for i in 0..rollouts {
        let plan = format!(
            "name: soak-{i}\nflag: soak-{i}\nanalysis: {{ interval: 1s, source: builtin }}\n\
             gates: [ {{ name: errors, metric: error_rate, min_samples: 20, below: 0.5 }} ]\n\
             phases: [ {{ percent: 50, hold: 24h }}, {{ percent: 100 }} ]\n"
        );
        let (st, v) =
            call(http, &format!("{url}/api/v1/rollouts"), ADMIN, reqwest::Method::POST, json!({"plan": plan})).await;
        assert_eq!(st, 201, "starting soak-{i}: {v}");
    }
    (sdk, viewer)
}

/// Connections the OFREP load keeps open, each sending its share of the schedule in turn (wrk2's design):
/// the load stays at the rate with a bounded number of connections, and a request that is late because
/// the one before it on its connection was slow is counted from when it was due.
const OFREP_CONNECTIONS: u64 = 64;

/// `rate` OFREP evaluations a second for `seconds`, open-loop: request `i` is due at `i / rate` s and its
/// latency runs from then (latency correction), whatever the connection was doing.
async fn ofrep_at_rate(
    http: reqwest::Client,
    url: String,
    sdk: String,
    rate: u64,
    seconds: u64,
) -> (Vec<Histogram<u64>>, u64) {
    let empty = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let histograms = Arc::new(parking_lot::Mutex::new(vec![empty(); 10]));
    let failed = Arc::new(AtomicU64::new(0));
    let endpoint: Arc<str> = format!("{url}/ofrep/v1/evaluate/flags/checkout").into();
    let total = rate * seconds;
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..OFREP_CONNECTIONS.min(total) {
        let (http, endpoint, sdk, histograms, failed) =
            (http.clone(), endpoint.clone(), sdk.clone(), histograms.clone(), failed.clone());
        tasks.spawn(async move {
            // One per tenth of the run: a p99 raised throughout and one raised by a few bad seconds call
            // for different fixes.
            let mut mine = vec![empty(); 10];
            for i in (connection..total).step_by(OFREP_CONNECTIONS as usize) {
                let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
                tokio::time::sleep_until(due).await;
                let body = format!(r#"{{"context":{{"targetingKey":"user-{}"}}}}"#, i % 100_000);
                let ok = match http
                    .post(&*endpoint)
                    .bearer_auth(&sdk)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                mine[(i * 10 / total) as usize].saturating_record((due.elapsed().as_micros() as u64).max(1));
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            for (all, mine) in histograms.lock().iter_mut().zip(&mine) {
                all.add(mine).expect("same bounds");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let h = histograms.lock().clone();
    (h, failed.load(Ordering::Relaxed))
}

/// The tenths of a run as one histogram.
fn whole(tenths: &[Histogram<u64>]) -> Histogram<u64> {
    let mut all = tenths[0].clone();
    for h in &tenths[1..] {
        all.add(h).expect("same bounds");
    }
    all
}

/// [`ofrep_at_rate`] on a thread and runtime of its own, with its own client: the latency it measures is
/// the server's, not the wait for a turn behind the driver's other tasks (100 streams reading tens of
/// thousands of lines a second, ingestion batches), which on a shared runtime showed up as the server's.
async fn ofrep_on_own_thread(url: String, sdk: String, rate: u64, seconds: u64) -> (Vec<Histogram<u64>>, u64) {
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(ofrep_at_rate(client(), url, sdk, rate, seconds))
    });
    tokio::task::spawn_blocking(move || thread.join().expect("the OFREP driver")).await.expect("joined")
}

/// A client that lets idle connections go after 5 s: a kept-alive connection the server has closed (it
/// closes one idle for its header-read timeout, 10 s) and the client reuses at that instant is reset.
fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(512).pool_idle_timeout(Duration::from_secs(5)).build().unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let served = serve(&a.server, a.streams);
    let pid = served.child.id();
    let url = served.url.clone();
    let http = client();
    let (sdk, viewer) = prepare(&http, &url, a.rollouts).await;

    // 1. OFREP alone at the same rate: the p99 the loaded run is held to.
    let alone_secs = (a.seconds / 10).clamp(5, 60);
    let (alone, alone_failed) = ofrep_on_own_thread(url.clone(), sdk.clone(), a.rate, alone_secs).await;
    let alone = whole(&alone);

    // 2. Everything at once.
    // Every background task watches this and returns when it turns true.
    let (stop_all, stop) = tokio::sync::watch::channel(false);
    let failures = Arc::new(AtomicU64::new(0));
    let fail = |what: String, failures: &AtomicU64| {
        if failures.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("failed: {what}");
        }
    };
    let mut background = tokio::task::JoinSet::new();

    // Change streams, each read to the end of the run.
    let events = Arc::new(AtomicU64::new(0));
    for _ in 0..a.streams {
        let (http, url, viewer, events, failures, stop) =
            (http.clone(), url.clone(), viewer.clone(), events.clone(), failures.clone(), stop.clone());
        let mut stop = stop;
        background.spawn(async move {
            let mut r = match http.get(format!("{url}/api/v1/stream")).bearer_auth(&viewer).send().await {
                Ok(r) if r.status() == 200 => r,
                other => return fail(format!("stream: {other:?}"), &failures),
            };
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    chunk = r.chunk() => match chunk {
                        Ok(Some(c)) => { events.fetch_add(c.iter().filter(|b| **b == b'\n').count() as u64, Ordering::Relaxed); }
                        other => return fail(format!("stream ended: {other:?}"), &failures),
                    }
                }
            }
        });
    }

    // Ingestion: batches of up to 1,000 observations, on the rollouts' flags, 2 % errors.
    let per_batch = a.observations.clamp(1, 1_000);
    let batches_per_s = (a.observations / per_batch).max(1);
    let bodies: Vec<String> = (0..16u64)
        .map(|b| {
            let mut rng = fastrand::Rng::with_seed(b);
            let list: Vec<Value> = (0..per_batch)
                .map(|i| {
                    let flag = format!("soak-{}", (b * per_batch + i) as usize % a.rollouts.max(1));
                    let on = rng.bool();
                    json!({"flag": flag, "variant": if on { "on" } else { "off" }, "reason": if on { "SPLIT" } else { "DEFAULT" },
                           "key": format!("user-{}", rng.u32(..50_000)), "ok": rng.u8(..100) >= 2, "latency_ms": 20.0 + rng.f64() * 80.0})
                })
                .collect();
            json!({"observations": list}).to_string()
        })
        .collect();
    let ingested = Arc::new(AtomicU64::new(0));
    {
        let (http, url, sdk, ingested, failures, stop) =
            (http.clone(), url.clone(), sdk.clone(), ingested.clone(), failures.clone(), stop.clone());
        let mut stop = stop;
        background.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / batches_per_s));
            for n in 0u64.. {
                tokio::select! { _ = stop.changed() => return, _ = tick.tick() => {} }
                let body = bodies[(n % 16) as usize].clone();
                let r = http
                    .post(format!("{url}/api/v1/metrics"))
                    .bearer_auth(&sdk)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 202 => {
                        ingested.fetch_add(per_batch, Ordering::Relaxed);
                    }
                    other => fail(format!("ingestion: {:?}", other.map(|r| r.status())), &failures),
                }
            }
        });
    }

    // One admin write a second.
    let writes = Arc::new(AtomicU64::new(0));
    {
        let (http, url, writes, failures, stop) =
            (http.clone(), url.clone(), writes.clone(), failures.clone(), stop.clone());
        let mut stop = stop;
        background.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for n in 0u64.. {
                tokio::select! { _ = stop.changed() => return, _ = tick.tick() => {} }
                let u = format!("{url}/api/v1/flags/admin-toggle/ramp?reason=soak");
                let (st, v) = call(&http, &u, ADMIN, reqwest::Method::POST, json!({"percent": n % 101})).await;
                if st == 200 {
                    writes.fetch_add(1, Ordering::Relaxed);
                } else {
                    fail(format!("admin write: {st} {v}"), &failures)
                }
            }
        });
    }

    // RSS every second.
    let samples = Arc::new(parking_lot::Mutex::new(Vec::new()));
    {
        let (samples, mut stop) = (samples.clone(), stop.clone());
        background.spawn(async move {
            let began = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! { _ = stop.changed() => return, _ = tick.tick() => {} }
                samples.lock().push((began.elapsed().as_secs_f64(), rss_kib(pid)));
            }
        });
    }

    let (loaded_tenths, loaded_failed) = ofrep_on_own_thread(url.clone(), sdk.clone(), a.rate, a.seconds).await;
    let loaded = whole(&loaded_tenths);
    let _ = stop_all.send(true);
    // Each task returns at its next turn; one stuck in a request is not waited for.
    let _ =
        tokio::time::timeout(Duration::from_secs(5), async { while background.join_next().await.is_some() {} }).await;
    background.abort_all();

    // The rollouts: still running, each with decisions.
    let (_, list) = call(&http, &format!("{url}/api/v1/rollouts"), ADMIN, reqwest::Method::GET, Value::Null).await;
    let rollouts = list["data"].as_array().cloned().unwrap_or_default();
    let running = rollouts.iter().filter(|r| r["status"]["state"] == "running").count();
    let mut deciding = 0;
    for r in &rollouts {
        let id = r["id"].as_str().unwrap_or_default();
        let (_, d) = call(
            &http,
            &format!("{url}/api/v1/rollouts/{id}/decisions?limit=5"),
            ADMIN,
            reqwest::Method::GET,
            Value::Null,
        )
        .await;
        deciding += usize::from(d["data"].as_array().is_some_and(|d| !d.is_empty()));
    }
    let (_, verdict) =
        call(&http, &format!("{url}/api/v1/audit/verify"), ADMIN, reqwest::Method::GET, Value::Null).await;
    let intact = verdict["data"]["status"] == "intact";

    let samples = samples.lock().clone();
    let from = a.seconds as f64 / 5.0;
    let at = |t: f64| samples.iter().find(|(s, _)| *s >= t).or(samples.last()).map_or(0, |(_, r)| *r);
    let (rss_from, rss_end) = (at(from), samples.last().map_or(0, |(_, r)| *r));
    let growth = if rss_from == 0 { f64::INFINITY } else { (rss_end as f64 / rss_from as f64 - 1.0) * 100.0 };
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
    let failed = alone_failed + loaded_failed + failures.load(Ordering::Relaxed);

    println!(
        "soak: {} s, OFREP {}/s, ingestion {} obs/s, {} rollouts, {} streams",
        a.seconds, a.rate, a.observations, a.rollouts, a.streams
    );
    for (label, h) in [("alone: ", &alone), ("loaded:", &loaded)] {
        println!(
            "  OFREP {label} {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            p99(h),
            h.max() as f64 / 1000.0
        );
    }
    let p99s: Vec<String> = loaded_tenths.iter().map(|h| format!("{:.2}", p99(h))).collect();
    println!("  loaded p99 at each tenth of the run (ms): {}", p99s.join(", "));
    println!("  ingested {} observations, {} admin writes, {} stream lines, {running}/{} rollouts running, {deciding} deciding",
        ingested.load(Ordering::Relaxed), writes.load(Ordering::Relaxed), events.load(Ordering::Relaxed), rollouts.len());
    println!(
        "  RSS {:.1} MiB at {:.0} s, {:.1} MiB at the end: {growth:+.1} %; audit chain {}",
        rss_from as f64 / 1024.0,
        from,
        rss_end as f64 / 1024.0,
        if intact { "intact" } else { "BROKEN" }
    );
    // The shape says whether memory levels off (a cache filling) or keeps climbing (a leak).
    let tenths: Vec<String> =
        (1..=10).map(|i| format!("{:.1}", at(a.seconds as f64 * i as f64 / 10.0) as f64 / 1024.0)).collect();
    println!("  RSS at each tenth of the run (MiB): {}", tenths.join(", "));
    println!("  failed requests: {failed}");
    let mut verdicts = Vec::new();
    if failed > 0 {
        verdicts.push(format!("{failed} failed requests"));
    }
    if p99(&loaded) > 2.0 * p99(&alone) {
        verdicts.push(format!("loaded p99 {:.2} ms is over twice the unloaded {:.2} ms", p99(&loaded), p99(&alone)));
    }
    if growth >= 10.0 {
        verdicts.push(format!("RSS grew {growth:.1} %"));
    }
    if running != a.rollouts || deciding != a.rollouts {
        verdicts.push(format!("{running} of {} rollouts running, {deciding} deciding", a.rollouts));
    }
    if !intact {
        verdicts.push(format!("audit chain: {verdict}"));
    }
    if verdicts.is_empty() {
        println!("PASS");
    } else {
        println!("FAIL: {}", verdicts.join("; "));
        drop(served);
        std::process::exit(1);
    }
}
