//! The `prometheus` source against a real Prometheus (Debian's `prometheus`), started on a free loopback
//! port, scraping an exporter in this test every second. Without the binary the test is skipped, unless
//! `SLUICE_REQUIRE_EXTERNAL` is set (CI), where it fails.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::Measurement;
use sluice_sources::{MeasureContext, Plugins, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/prometheus.rs"]
mod support;
use support::free_port;

/// Serves `/metrics` in the text format: counters that grow by 99 good and 1 bad request per scrape (a 1%
/// error ratio), two series of one gauge, and a NaN.
async fn exporter() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scrapes = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let scrapes = scrapes.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let n = scrapes.fetch_add(1, Ordering::SeqCst) + 1;
                let body = format!(
                    "http_requests_total{{variant=\"on\",code=\"200\"}} {}\n\
                     http_requests_total{{variant=\"on\",code=\"500\"}} {}\n\
                     http_requests_total{{variant=\"off\",code=\"200\"}} {}\n\
                     latency_seconds{{endpoint=\"a\"}} 0.2\n\
                     latency_seconds{{endpoint=\"b\"}} 0.9\n\
                     broken_ratio NaN\n",
                    99 * n,
                    n,
                    50 * n
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    addr.to_string()
}

async fn start_prometheus(target: &str) -> Option<support::Server> {
    tokio::task::block_in_place(|| support::scraping(target))
}

fn plan(prometheus: &str, checks: &str) -> sluice_plan::Plan {
    let yaml = format!(
        "name: p\nflag: f\nanalysis: {{ interval: 1m, prometheus: {{ url: {prometheus} }} }}\nphases: [ {{ percent: 5 }} ]\ngates:\n{checks}"
    );
    sluice_plan::load("p.yaml", &yaml, None).unwrap_or_else(|e| panic!("{e:?}")).0
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Measures each gate of `plan` now.
async fn measure(registry: &Registry, plan: &sluice_plan::Plan) -> Vec<Measurement> {
    let values = BTreeMap::from([
        ("flag".to_string(), "f".to_string()),
        ("ramped".to_string(), "on".to_string()),
        ("base".to_string(), "off".to_string()),
        ("interval".to_string(), "1m".to_string()),
    ]);
    let cx = MeasureContext::outside_a_rollout(plan, &values, now_ms());
    let mut out = Vec::new();
    for g in &plan.gates {
        out.push(registry.measure(&g.value, &cx).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_shape_has_one_outcome() {
    let target = exporter().await;
    let Some(prometheus) = start_prometheus(&target).await else { return };
    let registry = Registry::new(&sluice_sources::Config::default());
    // Until five scrapes are in (the 5s window of the burn rate needs two), and Prometheus answers.
    let ready = plan(&prometheus.url, "  - { name: up, query: 'count_over_time(up{job=\"app\"}[1m])', above: 0 }\n");
    let began = Instant::now();
    loop {
        if let [Measurement::Value(n)] = measure(&registry, &ready).await[..] {
            if n >= 5.0 {
                break;
            }
        }
        assert!(began.elapsed() < Duration::from_secs(30), "Prometheus never scraped the exporter");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let checks = plan(
        &prometheus.url,
        r#"  - { name: one, query: 'sum(latency_seconds)', below: 5 }
  - { name: several, query: 'latency_seconds', below: 5 }
  - { name: reduced, query: 'latency_seconds', reduce: max, below: 5 }
  - { name: none, query: 'no_such_metric', below: 5 }
  - { name: nan, query: 'broken_ratio', below: 5 }
  - { name: bad, query: 'sum(latency_seconds)', below: 5 }
  - { name: scalar, query: 'scalar(sum(latency_seconds))', below: 5 }
  - { name: templated, query: 'sum(http_requests_total{variant="{{ramped}}"}) > 0', below: 1000000 }
  - name: burn
    slo: { objective: 99.9, good: 'sum(rate(http_requests_total{variant="{{ramped}}", code!~"5.."}[{{window}}]))', total: 'sum(rate(http_requests_total{variant="{{ramped}}"}[{{window}}]))', windows: [5s, 10s] }
    above: 2
"#,
    );
    // `plan check` refuses a query that does not parse; one can still reach Prometheus (a plan checked by
    // an older version, a `vars:` value that breaks it), and Prometheus' own words must come through.
    let mut checks = checks;
    let bad = checks.gates[5].value.block.entries.iter_mut().find(|(k, _)| k.value == "query").unwrap();
    bad.1.value = sluice_plan::model::Node::Str("sum(rate(latency_seconds[1m]".into());
    let m = measure(&registry, &checks).await;
    assert!(matches!(m[0], Measurement::Value(v) if (v - 1.1).abs() < 1e-9), "one sample: {:?}", m[0]);
    let Measurement::Error(several) = &m[1] else { panic!("several series: {:?}", m[1]) };
    assert!(
        several.contains("2 series") && several.contains("endpoint=\"a\"") && several.contains("reduce"),
        "{several}"
    );
    assert!(matches!(m[2], Measurement::Value(v) if v == 0.9), "reduce max: {:?}", m[2]);
    assert_eq!(m[3], Measurement::Empty, "no data");
    assert!(matches!(m[4], Measurement::Value(v) if v.is_nan()), "NaN is measured as not a number: {:?}", m[4]);
    let Measurement::Error(bad) = &m[5] else { panic!("a query that does not parse: {:?}", m[5]) };
    assert!(bad.contains("bad_data") && bad.contains("parse error"), "Prometheus' words: {bad}");
    assert!(matches!(m[6], Measurement::Value(v) if (v - 1.1).abs() < 1e-9), "scalar: {:?}", m[6]);
    assert!(matches!(m[7], Measurement::Value(v) if v > 0.0), "templates filled: {:?}", m[7]);
    // 1 bad in 100 against an objective allowing 1 in 1000: a burn rate of 10 in both windows.
    assert!(matches!(m[8], Measurement::Value(v) if (v - 10.0).abs() < 0.5), "burn rate: {:?}", m[8]);

    // An answer over the size limit is a source error.
    let small = Registry::new(&sluice_sources::Config { prometheus_max_answer_bytes: Some(200), ..Default::default() });
    let big = plan(&prometheus.url, "  - { name: all, query: 'http_requests_total', reduce: sum, below: 1 }\n");
    let m = measure(&small, &big).await;
    assert!(matches!(&m[0], Measurement::Error(e) if e.contains("larger than 200 bytes")), "{:?}", m[0]);
}

/// A Prometheus that never answers costs the check its timeout, slots included, and delays no other
/// Prometheus; one that is not there is a source error at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_prometheus_delays_only_the_checks_that_ask_it() {
    let target = exporter().await;
    let Some(prometheus) = start_prometheus(&target).await else { return };
    let registry = Arc::new(Registry::new(&sluice_sources::Config::default()));
    let stuck = support::hanging().await;
    let slow = Arc::new(plan(&stuck, "  - { name: q, query: 'up', timeout: 2s, below: 1 }\n"));
    // Six checks at once against four slots: the last two wait for a slot, and that wait is part of
    // their timeout — all six end within it. Each is timed on its own, from its own start, so a busy
    // machine's late spawn is not counted against it (a slot wait outside the timeout would take 4 s).
    let waits: Vec<_> = (0..6)
        .map(|_| {
            let (registry, slow) = (registry.clone(), slow.clone());
            tokio::spawn(async move {
                let began = Instant::now();
                let m = measure(&registry, &slow).await;
                (m, began.elapsed())
            })
        })
        .collect();
    // Meanwhile the real Prometheus answers at once.
    let healthy = plan(&prometheus.url, "  - { name: v, query: 'vector(1)', below: 2 }\n");
    let quick = Instant::now();
    let began_ready = Instant::now();
    let answer = loop {
        let m = measure(&registry, &healthy).await;
        if matches!(m[0], Measurement::Value(_)) || began_ready.elapsed() > Duration::from_secs(20) {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer[0], Measurement::Value(1.0));
    assert!(quick.elapsed() < Duration::from_secs(20));
    for w in waits {
        let (m, took) = w.await.unwrap();
        assert!(matches!(&m[0], Measurement::Error(e) if e.contains("within the timeout")), "{:?}", m[0]);
        assert!(took < Duration::from_millis(3500), "a wait for a slot outlived the timeout: {took:?}");
    }

    let nobody = plan(&format!("http://127.0.0.1:{}", free_port()), "  - { name: q, query: 'up', below: 1 }\n");
    let m = measure(&registry, &nobody).await;
    assert!(matches!(&m[0], Measurement::Error(e) if e.contains("cannot be reached")), "{:?}", m[0]);
}

/// A loopback endpoint that answers every request with `status` and `body`: the faults a real Prometheus
/// does not produce on demand.
async fn answering(status: &'static str, body: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    url
}

/// A 5xx, garbage, Prometheus' error JSON and an answer of 10 MB of series are each a source error that
/// says what happened, and never a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_prometheus_will_not_make_on_demand_are_source_errors() {
    let registry = Registry::new(&sluice_sources::Config::default());
    let gate = "  - { name: q, query: 'up', below: 1 }\n";
    let series: String = (0..160_000)
        .map(|i| format!(r#"{{"metric":{{"__name__":"big","instance":"host-{i:06}"}},"value":[1,"1"]}},"#))
        .collect();
    let big = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        series.trim_end_matches(',')
    );
    assert!(big.len() > 10 << 20, "10 MB of series");
    let cases = [
        (answering("503 Service Unavailable", b"upstream connect error".to_vec()).await, "HTTP 503"),
        (answering("200 OK", b"<html>login</html>".to_vec()).await, "not Prometheus JSON"),
        (
            answering(
                "422 Unprocessable Entity",
                br#"{"status":"error","errorType":"execution","error":"query timed out"}"#.to_vec(),
            )
            .await,
            "query timed out",
        ),
        (answering("200 OK", big.into_bytes()).await, "larger than 4194304 bytes"),
    ];
    for (url, expected) in cases {
        let m = measure(&registry, &plan(&url, gate)).await;
        assert!(matches!(&m[0], Measurement::Error(e) if e.contains(expected)), "{expected}: {:?}", m[0]);
    }
}
