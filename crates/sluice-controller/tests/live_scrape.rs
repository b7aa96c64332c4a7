//! Two rollouts in real time against a real Prometheus scraping, every second, a small service this test
//! runs: its counters and latency histogram carry `flag` and `variant` labels. The healthy flag's rollout
//! is promoted through its phases on the numbers; the other's service starts failing mid-rollout and the
//! rollout rolls back on its hard trigger.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
#[path = "../../sluice-sources/tests/support/prometheus.rs"]
mod support;

#[derive(Default)]
struct Service {
    scrapes: AtomicU64,
    /// Flag `b`'s ramped variant fails half its requests.
    failing: AtomicBool,
}

/// `/metrics`: per flag and variant, 100 requests per scrape (errors: 0.1% healthy, 50% once failing) and
/// a latency histogram whose requests take 0.1–0.25 s.
async fn exporter(service: Arc<Service>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        // Counters as the service would keep them: cumulative since it started.
        let totals = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<String, f64>::new()));
        while let Ok((mut socket, _)) = listener.accept().await {
            let service = service.clone();
            let totals = totals.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                service.scrapes.fetch_add(1, Ordering::SeqCst);
                let mut body = String::new();
                {
                    let mut totals = totals.lock().unwrap();
                    for flag in ["a", "b"] {
                        for variant in ["off", "on"] {
                            let failing = flag == "b" && variant == "on" && service.failing.load(Ordering::SeqCst);
                            let errors = if failing { 50.0 } else { 0.1 };
                            let labels = format!("flag=\"{flag}\",variant=\"{variant}\"");
                            let mut add = |name: String, by: f64| {
                                let v = totals.entry(name.clone()).or_insert(0.0);
                                *v += by;
                                body.push_str(&format!("{name} {v}\n"));
                            };
                            add(format!("app_requests_total{{{labels},code=\"200\"}}"), 100.0 - errors);
                            add(format!("app_requests_total{{{labels},code=\"500\"}}"), errors);
                            for (le, count) in [("0.1", 20.0), ("0.25", 100.0), ("+Inf", 100.0)] {
                                add(format!("app_request_duration_seconds_bucket{{{labels},le=\"{le}\"}}"), count);
                            }
                            add(format!("app_request_duration_seconds_sum{{{labels}}}"), 15.0);
                            add(format!("app_request_duration_seconds_count{{{labels}}}"), 100.0);
                        }
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// `second_hold`: how long phase 2 holds (the failing rollout's is long, so that however slowly a loaded
/// machine scrapes and queries, the failure is seen before the hold could end).
fn plan(flag: &str, prometheus: &str, second_hold: &str) -> String {
    format!(
        r#"name: live-{flag}
flag: {flag}
analysis: {{ interval: 1s, prometheus: {{ url: "{prometheus}" }} }}
phases:
  - {{ percent: 10, hold: 3s }}
  - {{ percent: 50, hold: {second_hold} }}
  - {{ percent: 100 }}
gates:
  - name: error-ratio
    query: 'sum(rate(app_requests_total{{flag="{{{{flag}}}}", variant="{{{{ramped}}}}", code="500"}}[5s])) / sum(rate(app_requests_total{{flag="{{{{flag}}}}", variant="{{{{ramped}}}}"}}[5s]))'
    below: 0.01
  - name: p95
    query: 'histogram_quantile(0.95, sum by (le) (rate(app_request_duration_seconds_bucket{{flag="{{{{flag}}}}", variant="{{{{ramped}}}}"}}[5s])))'
    below: 0.5
triggers:
  - name: errors
    severity: hard
    query: 'sum(rate(app_requests_total{{flag="{{{{flag}}}}", variant="{{{{ramped}}}}", code="500"}}[5s])) / sum(rate(app_requests_total{{flag="{{{{flag}}}}", variant="{{{{ramped}}}}"}}[5s]))'
    above: 0.05
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_rollout_is_promoted_and_a_failing_one_rolls_back_on_live_numbers() {
    let service = Arc::new(Service::default());
    let target = exporter(service.clone()).await;
    let Some(prometheus) = tokio::task::block_in_place(|| support::scraping(&target)) else { return };
    // Until Prometheus has a few scrapes: the 5s rates need two samples.
    let began = Instant::now();
    while service.scrapes.load(Ordering::SeqCst) < 4 {
        assert!(began.elapsed() < Duration::from_secs(30), "Prometheus does not scrape the service");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (_dir, store, controller) = common::running_with_flags(&["a", "b"]).await;
    let admin = common::admin();
    let a = controller.start(&admin, None, "a.yaml", &plan("a", &prometheus.url, "3s")).await.unwrap().id;
    let b = controller.start(&admin, None, "b.yaml", &plan("b", &prometheus.url, "30s")).await.unwrap().id;

    // Four seconds in, flag b's service starts failing; a keeps going.
    tokio::time::sleep(Duration::from_secs(4)).await;
    service.failing.store(true, Ordering::SeqCst);
    let began = Instant::now();
    let (mut status_a, mut status_b);
    loop {
        status_a = store.rollout(&a).await.unwrap().unwrap().state.status;
        status_b = store.rollout(&b).await.unwrap().unwrap().state.status;
        if (status_a.is_terminal() && status_b.is_terminal()) || began.elapsed() > Duration::from_secs(40) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status_a, Status::Completed, "the healthy rollout");
    assert!(
        matches!(&status_b, Status::RolledBack { reason } if reason.contains("errors")),
        "the failing rollout: {status_b:?}"
    );
    let flags = controller.catalog().resolve(None).unwrap().live().load();
    let percent = |key: &str| flags.flags().iter().find(|f| f.key == key).unwrap().ramp.percent;
    assert_eq!((percent("a"), percent("b")), (100, 0));
    // The healthy one's gates passed on values, not on silence.
    let decisions = store.decisions(&a, 1000).await.unwrap();
    let text = serde_json::to_string(&decisions).unwrap();
    assert!(text.contains("\"check\":\"p95\"") && text.contains("\"outcome\":\"holds\""), "{text}");
}
