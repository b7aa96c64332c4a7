//! Many rollouts against one real Prometheus: N active rollouts (default 1,000) of five Prometheus checks
//! each (three gates, two triggers) at a 10 s interval, run by the controller in real time for a while
//! (default 60 s). Prometheus (Debian's `prometheus`) scrapes an in-process exporter every 5 s whose
//! counters carry `flag`, `variant` and `code` labels: 4 series per flag.
//!
//! Reports the checks measured per second, each rollout's tick lateness (the gap between two of its ticks
//! beyond the interval) p50/p99/max, and the query time p50/p99 (one check, slot wait included).
//!
//! Run: `cargo run --release -p sluice-bench --bin prometheus_load -- 1000 60`

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_controller::{Catalog, Controller, Seams};
use sluice_engine::Measurement;
use sluice_flags::Flag;
use sluice_plan::model::{Action, Check};
use sluice_sources::{ActionContext, ActionOutcome, MeasureContext, Plugins, Registry};
use sluice_store::{Change, Principal, Role, SqliteStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The real plug-ins, with every measurement timed.
struct Timed {
    registry: Registry,
    took: Mutex<Vec<Duration>>,
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
}

#[async_trait::async_trait]
impl Plugins for Timed {
    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement {
        let began = Instant::now();
        let m = self.registry.measure(check, cx).await;
        self.took.lock().unwrap().push(began.elapsed());
        let kind = match &m {
            Measurement::Value(_) | Measurement::Bounded { .. } => "value",
            Measurement::Empty | Measurement::Inconclusive(_) => "no data",
            Measurement::Error(_) => "error",
        };
        *self.outcomes.lock().unwrap().entry(kind).or_default() += 1;
        m
    }
    async fn run(&self, action: &Action, cx: &ActionContext<'_>) -> ActionOutcome {
        self.registry.run(action, cx).await
    }
}

/// `/metrics` for `flags` flags: requests by variant and code, growing at every scrape.
async fn exporter(flags: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let scrapes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let n = scrapes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let mut body = String::with_capacity(flags * 300);
                body.push_str("# TYPE app_requests_total counter\n");
                for f in 0..flags {
                    for variant in ["off", "on"] {
                        body.push_str(&format!(
                            "app_requests_total{{flag=\"f{f}\",variant=\"{variant}\",code=\"200\"}} {}\n",
                            n * 999
                        ));
                        body.push_str(&format!(
                            "app_requests_total{{flag=\"f{f}\",variant=\"{variant}\",code=\"500\"}} {}\n",
                            n
                        ));
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
            });
        }
    });
    addr
}

/// A Prometheus scraping `target` every 5 s, killed on drop.
struct Prometheus(std::process::Child, String, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus(target: &str) -> Prometheus {
    let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("prometheus is not installed (Debian: apt-get install prometheus)");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global: {{ scrape_interval: 5s }}\nscrape_configs:\n  - job_name: app\n    static_configs: [ {{ targets: ['{target}'] }} ]\n"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Prometheus(child, format!("http://127.0.0.1:{port}"), dir)
}

fn plan(i: usize, url: &str) -> String {
    let ratio = r#"sum(rate(app_requests_total{flag="{{flag}}",variant="{{ramped}}",code="500"}[1m])) / sum(rate(app_requests_total{flag="{{flag}}",variant="{{ramped}}"}[1m]))"#;
    format!(
        r#"name: load-{i}
flag: f{i}
analysis: {{ interval: 10s, prometheus: {{ url: "{url}" }} }}
phases: [ {{ percent: 10, hold: 24h }}, {{ percent: 100 }} ]
gates:
  - {{ name: error-ratio, query: '{ratio}', below: 0.5 }}
  - {{ name: traffic, query: 'sum(rate(app_requests_total{{flag="{{{{flag}}}}"}}[1m]))', above: 0 }}
  - {{ name: errors-5m, query: 'sum(increase(app_requests_total{{flag="{{{{flag}}}}",code="500"}}[5m]))', below: 1000000000 }}
triggers:
  - {{ name: errors-hard, severity: hard, query: '{ratio}', above: 0.9 }}
  - {{ name: base-silent, severity: soft, query: 'sum(rate(app_requests_total{{flag="{{{{flag}}}}",variant="{{{{base}}}}"}}[1m]))', below: -1, decide_within: 1h, default: resume }}
"#
    )
}

fn pct<T: Ord + Copy>(v: &mut [T], p: f64) -> T {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).saturating_sub(1).min(v.len() - 1)]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rollouts: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let seconds: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(60);
    let target = exporter(rollouts).await;
    let prom = prometheus(&target);
    let http = reqwest::Client::new();
    // Until Prometheus has two scrapes of the exporter: rates need two samples.
    let began = Instant::now();
    loop {
        let q = format!("{}/api/v1/query?query=count_over_time(up%5B1m%5D)", prom.1);
        if let Ok(r) = http.get(&q).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0) >= 2.0
                {
                    break;
                }
            }
        }
        assert!(began.elapsed() < Duration::from_secs(60), "Prometheus never scraped the exporter");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("s.db")).await.unwrap());
    for i in 0..rollouts {
        let mut flag = Flag::boolean(&format!("f{i}"));
        flag.ramp.percent = 0;
        store.apply("bench", Change::PutFlag(flag), None).await.unwrap();
    }
    let timed = Arc::new(Timed {
        registry: Registry::new(&sluice_sources::Config::default()),
        took: Mutex::new(Vec::new()),
        outcomes: Mutex::new(BTreeMap::new()),
    });
    let catalog = Arc::new(Catalog::load(store.clone(), Box::new(|_, _, _| {})).await.unwrap());
    let seams = Seams { plugins: timed.clone(), ..Seams::default() };
    let controller = Controller::new(catalog, seams);
    tokio::spawn(controller.clone().run());
    let admin = Principal { name: "bench".into(), role: Role::Admin, envs: None };
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..rollouts {
        ids.push(controller.start(&admin, None, "load.yaml", &plan(i, &prom.1)).await.unwrap().id);
    }
    let start_took = started.elapsed();
    timed.took.lock().unwrap().clear();
    let measuring = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = measuring.elapsed();
    let mut took = std::mem::take(&mut *timed.took.lock().unwrap());
    let checks = took.len();

    let mut late = Vec::new();
    let mut ticks = 0;
    for id in &ids {
        let decisions = store.decisions(id, 100_000).await.unwrap();
        let mut at: Vec<u64> = decisions.iter().map(|d| d.decision.at).collect();
        at.sort_unstable();
        at.dedup();
        ticks += at.len();
        late.extend(at.windows(2).map(|w| (w[1] - w[0]).saturating_sub(10_000)));
    }
    let outcomes = timed.outcomes.lock().unwrap().clone();
    println!("rollouts: {rollouts} (5 Prometheus checks each, 10 s interval), started in {start_took:.1?}");
    println!(
        "checks measured: {checks} in {:.1} s = {:.0} checks/s ({outcomes:?})",
        elapsed.as_secs_f64(),
        checks as f64 / elapsed.as_secs_f64()
    );
    if !took.is_empty() {
        println!(
            "query time: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
            pct(&mut took, 0.5),
            pct(&mut took, 0.99),
            pct(&mut took, 1.0)
        );
    }
    if !late.is_empty() {
        println!(
            "tick lateness over {} gaps ({ticks} ticks): p50 {} ms, p99 {} ms, max {} ms",
            late.len(),
            pct(&mut late, 0.5),
            pct(&mut late, 0.99),
            pct(&mut late, 1.0)
        );
    }
    drop(prom);
}
