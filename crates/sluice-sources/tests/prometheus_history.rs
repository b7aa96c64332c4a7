//! The `prometheus` source on a known history: a real Prometheus serving blocks that `promtool tsdb
//! create-blocks-from openmetrics` built from a healthy period and an incident. Burn rates and baselines
//! are checked against values computed by hand from that history. Credentials and headers are checked on a
//! stub that records what it is sent (a real Prometheus does not check bearer tokens).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sluice_engine::Measurement;
use sluice_sources::{MeasureContext, Plugins, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/prometheus.rs"]
mod support;
use support::Series;

/// Requests per second of every variant.
const RATE: f64 = 100.0;
/// Errors per second before and during the incident.
const HEALTHY: f64 = 0.1;
const INCIDENT: f64 = 5.0;
/// The incident starts two hours into the history.
const INCIDENT_AT: u64 = 2 * 3600;

/// Errors of the `on` variant up to `t` seconds into the history.
fn errors(t: u64) -> f64 {
    let t = t as f64;
    let at = INCIDENT_AT as f64;
    if t < at {
        HEALTHY * t
    } else {
        HEALTHY * at + INCIDENT * (t - at)
    }
}

/// Four hours ago, on the hour: three hours of history, ending an hour before now.
fn history_start() -> u64 {
    support::this_hour() - 4 * 3600
}

fn history(t0: u64) -> String {
    let on_ok = Series {
        name: r#"http_requests_total{variant="on",code="200"}"#.into(),
        value: Box::new(move |t| RATE * (t - t0) as f64 - errors(t - t0)),
    };
    let on_err = Series {
        name: r#"http_requests_total{variant="on",code="500"}"#.into(),
        value: Box::new(move |t| errors(t - t0)),
    };
    let off_ok = Series {
        name: r#"http_requests_total{variant="off",code="200"}"#.into(),
        value: Box::new(move |t| (RATE - HEALTHY) * (t - t0) as f64),
    };
    let off_err = Series {
        name: r#"http_requests_total{variant="off",code="500"}"#.into(),
        value: Box::new(move |t| HEALTHY * (t - t0) as f64),
    };
    let latency = Series {
        name: r#"latency_seconds{variant="on"}"#.into(),
        value: Box::new(move |t| if t - t0 >= INCIDENT_AT { 0.3 } else { 0.2 }),
    };
    support::openmetrics(
        &[
            ("http_requests", "counter", vec![on_ok, on_err, off_ok, off_err]),
            ("latency_seconds", "gauge", vec![latency]),
        ],
        t0,
        t0 + 3 * 3600,
        30,
    )
}

fn plan(prometheus: &str, analysis: &str, checks: &str) -> sluice_plan::Plan {
    let yaml = format!(
        "name: p\nflag: f\nanalysis: {{ interval: 1m, prometheus: {{ url: {prometheus} {analysis} }} }}\nphases: [ {{ percent: 5 }} ]\ngates:\n{checks}"
    );
    sluice_plan::load("p.yaml", &yaml, None).unwrap_or_else(|e| panic!("{e:?}")).0
}

fn values() -> BTreeMap<String, String> {
    BTreeMap::from([("flag".to_string(), "f".to_string()), ("ramped".to_string(), "on".to_string())])
}

async fn measure_at(registry: &Registry, plan: &sluice_plan::Plan, at_s: u64) -> Vec<Measurement> {
    let values = values();
    let cx = MeasureContext {
        rollout: None,
        rollout_id: "r",
        plan,
        started_at: at_s * 1000,
        phase_started: at_s * 1000,
        now: at_s * 1000,
        values: &values,
    };
    let mut out = Vec::new();
    for g in &plan.gates {
        out.push(registry.measure(&g.value, &cx).await);
    }
    out
}

fn close(m: &Measurement, want: f64) -> bool {
    matches!(m, Measurement::Value(v) if (v - want).abs() < 1e-6 * want.abs().max(1.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burn_rates_and_baselines_match_the_history_computed_by_hand() {
    let t0 = history_start();
    let Some(prometheus) = tokio::task::block_in_place(|| support::with_history(&history(t0))) else { return };
    let registry = Registry::new(&sluice_sources::Config::default());
    let burn = |windows: &str, name: &str| {
        format!(
            "  - name: {name}\n    slo: {{ objective: 99.9, good: 'sum(rate(http_requests_total{{variant=\"{{{{ramped}}}}\", code!~\"5..\"}}[{{{{window}}}}]))', total: 'sum(rate(http_requests_total{{variant=\"{{{{ramped}}}}\"}}[{{{{window}}}}]))', windows: {windows} }}\n    above: 2\n"
        )
    };
    let checks = [burn("[5m]", "short"), burn("[1h]", "long"), burn("[5m, 1h]", "both")].concat();
    let p = plan(&prometheus.url, "", &checks);

    // An hour in, all healthy: 0.1% errors against an objective allowing 0.1% — a burn rate of 1.
    let m = measure_at(&registry, &p, t0 + 3600).await;
    assert!(m.iter().all(|m| close(m, 1.0)), "healthy: {m:?}");

    // Ten minutes into the incident. The 5m window is all incident: 5% errors, a burn rate of 50. The 1h
    // window holds 3,000 s at 0.1 errors/s and 600 s at 5: Prometheus 2 selects the samples of [t−1h, t]
    // (every 30 s, 1h10m to 2h10m); Prometheus 3 leaves out the first, so its samples span 3,570 s of
    // which 2,970 s healthy. rate() extrapolates both counters by the same factor, so the ratio is the
    // errors' average over the samples' span.
    let m = measure_at(&registry, &p, t0 + INCIDENT_AT + 600).await;
    let v2 = ((3000.0 * HEALTHY + 600.0 * INCIDENT) / 3600.0 / RATE) / 0.001;
    let v3 = ((2970.0 * HEALTHY + 600.0 * INCIDENT) / 3570.0 / RATE) / 0.001;
    assert!(close(&m[0], 50.0), "5m: {:?}", m[0]);
    assert!(close(&m[1], v2) || close(&m[1], v3), "1h: {:?} against {v2} (or {v3})", m[1]);
    // Both windows: the slower burn, so that `above: X` means every window burns faster than X.
    assert_eq!(m[2], m[1], "both windows");

    // A baseline: the latency's average at each minute of the hour before a start 30 minutes into the
    // incident — 30 minutes at 0.2 (1h30m … 1h59m) and 31 at 0.3 (2h00m … 2h30m).
    let p = plan(
        &prometheus.url,
        "",
        "  - { name: latency, query: 'latency_seconds{variant=\"{{ramped}}\"}', baseline: { window: 1h }, max_increase_pct: 20 }\n",
    );
    let values = values();
    let start = (t0 + INCIDENT_AT + 1800) * 1000;
    let cx = MeasureContext {
        rollout: None,
        rollout_id: "r",
        plan: &p,
        started_at: start,
        phase_started: start,
        now: start,
        values: &values,
    };
    let baseline = registry.baseline(&p.gates[0].value, &cx).await.unwrap();
    let want = (30.0 * 0.2 + 31.0 * 0.3) / 61.0;
    assert!((baseline - want).abs() < 1e-9, "baseline {baseline} against {want}");
    // Before the history there is nothing to compare with, and the start is refused for it.
    let early = (t0 - 7200) * 1000;
    let cx = MeasureContext { rollout: None, started_at: early, now: early, ..cx };
    let e = registry.baseline(&p.gates[0].value, &cx).await.unwrap_err();
    assert!(e.contains("no value in the 1h before the start"), "{e}");
}

/// A loopback stub that records each request's head and answers one sample.
async fn recording_stub() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                log.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).to_string());
                let body =
                    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"7"]}]}}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_headers_reach_prometheus_and_nowhere_else() {
    std::env::set_var("SLUICE_SECRET_PROM_TOKEN", "t0ken-of-the-test");
    std::env::set_var("SLUICE_SECRET_PROM_BASIC", "sluice:pa55word-of-the-test");
    std::env::set_var("SLUICE_SECRET_TENANT", "tenant-secret-1");
    let (url, seen) = recording_stub().await;
    let registry = Registry::new(&sluice_sources::Config::default());
    let gate = "  - { name: q, query: 'up', below: 10 }\n";

    let bearer = plan(
        &url,
        ", bearer_env: SLUICE_SECRET_PROM_TOKEN, headers: { X-Scope-OrgID: team-a, X-Tenant-Key: { secret_env: SLUICE_SECRET_TENANT } }",
        gate,
    );
    assert_eq!(measure_at(&registry, &bearer, 1_700_000_000).await, [Measurement::Value(7.0)]);
    let basic = plan(&url, ", basic_env: SLUICE_SECRET_PROM_BASIC", gate);
    assert_eq!(measure_at(&registry, &basic, 1_700_000_000).await, [Measurement::Value(7.0)]);
    let requests = seen.lock().unwrap().clone();
    let lower: Vec<String> = requests.iter().map(|r| r.to_ascii_lowercase()).collect();
    assert!(lower[0].contains("authorization: bearer t0ken-of-the-test"), "{}", requests[0]);
    assert!(lower[0].contains("x-scope-orgid: team-a") && lower[0].contains("x-tenant-key: tenant-secret-1"));
    // base64("sluice:pa55word-of-the-test")
    assert!(lower[1].contains("authorization: basic c2x1awnlonbhntv3b3jklw9mlxrozs10zxn0"), "{}", requests[1]);

    // A failure names no secret, even when the endpoint's answer would have echoed it.
    let missing = plan(&url, ", bearer_env: SLUICE_SECRET_NOT_SET", gate);
    let m = measure_at(&registry, &missing, 1_700_000_000).await;
    assert!(
        matches!(&m[0], Measurement::Error(e) if e.contains("SLUICE_SECRET_NOT_SET") && e.contains("not set")),
        "{m:?}"
    );

    // `analysis.prometheus.timeout` is the default of every check; a check's own `timeout` wins.
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck_url = format!("http://{}", stuck.local_addr().unwrap());
    let slow = plan(&stuck_url, ", timeout: 1s", gate);
    let began = std::time::Instant::now();
    let m = measure_at(&registry, &slow, 1_700_000_000).await;
    assert!(matches!(&m[0], Measurement::Error(e) if e.contains("within the timeout of 1s")), "{m:?}");
    // Unanswered, without the timeout it would wait for ever; wide enough for a loaded machine.
    assert!(began.elapsed() < std::time::Duration::from_secs(8), "took {:?}", began.elapsed());
    drop(stuck);
}
