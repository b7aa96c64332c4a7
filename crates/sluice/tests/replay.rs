//! `sluice simulate --prometheus`: a plan replayed on real history in a real Prometheus (loaded with
//! promtool: two healthy hours, then an incident) finds the incident at the tick computed by hand, signs
//! approvals, prints hooks without running them, and compares with a baseline taken before `--from`.

use std::process::Command;

#[path = "../../sluice-sources/tests/support/prometheus.rs"]
mod support;
use support::Series;

/// Errors per second of the ramped variant, out of 100 requests per second: 0.1 for two hours, then 5.
fn errors(t: u64) -> f64 {
    let (t, at) = (t as f64, 7200.0);
    if t < at {
        0.1 * t
    } else {
        0.1 * at + 5.0 * (t - at)
    }
}

const PLAN: &str = r#"name: replayed
flag: checkout
analysis:
  interval: 1m
  prometheus: { url_env: SLUICE_SECRET_PROMETHEUS_URL }
phases:
  - { percent: 1, hold: 1h, approvals: [ { item: ops-sign-off, role: operator } ] }
  - percent: 10
    hold: 1h
    hooks: { before: [ { name: warm cache, exec: [./warm-cache.sh] } ] }
  - { percent: 50, hold: 2h }
gates:
  - { name: latency, query: 'latency_seconds{variant="{{ramped}}"}', baseline: { window: 30m }, max_increase_pct: 20 }
triggers:
  - name: errors
    severity: hard
    query: 'sum(rate(http_requests_total{variant="{{ramped}}", code="500"}[5m])) / sum(rate(http_requests_total{variant="{{ramped}}"}[5m]))'
    above: 0.01
"#;

#[test]
fn a_replay_on_real_history_catches_the_incident_at_the_tick_computed_by_hand() {
    let t0 = support::this_hour() - 4 * 3600;
    let on_ok = Series {
        name: r#"http_requests_total{variant="on",code="200"}"#.into(),
        value: Box::new(move |t| 100.0 * (t - t0) as f64 - errors(t - t0)),
    };
    let on_err = Series {
        name: r#"http_requests_total{variant="on",code="500"}"#.into(),
        value: Box::new(move |t| errors(t - t0)),
    };
    let latency = Series { name: r#"latency_seconds{variant="on"}"#.into(), value: Box::new(|_| 0.2) };
    let history = support::openmetrics(
        &[("http_requests", "counter", vec![on_ok, on_err]), ("latency_seconds", "gauge", vec![latency])],
        t0,
        t0 + 3 * 3600,
        30,
    );
    let Some(prometheus) = support::with_history(&history) else { return };
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, PLAN).unwrap();

    // From an hour in (so the 30m baseline has history) to the end.
    let run = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["--output", format, "simulate"])
            .arg(&plan)
            .args(["--prometheus", &prometheus.url, "--from", &(t0 + 3600).to_string(), "--to"])
            .arg((t0 + 3 * 3600).to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    let baseline = json["baselines"]["gate:latency"].as_f64().unwrap();
    assert!((baseline - 0.2).abs() < 1e-9, "{}", json["baselines"]);
    // The 5m ratio first exceeds 1% at 2h01m: its samples (every 30 s, from 1h56m) hold 240 s at 0.1
    // errors/s and 60 s at 5, 1.1% of 100 requests/s. At 2h00m it is 0.1%.
    let history = json["history"].as_array().unwrap();
    let kinds: Vec<&str> = history.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["started", "approved", "promoted", "rolled_back"], "{history:?}");
    let rolled_back = &history[3];
    assert_eq!(rolled_back["at"].as_u64().unwrap(), (t0 + 7260) * 1000, "{rolled_back}");
    assert!(rolled_back["reason"].as_str().unwrap().contains("errors"), "{rolled_back}");
    assert_eq!(rolled_back["percent"], 10);
    // Every tick measured both checks, the trigger with a value.
    let steps = json["steps"].as_array().unwrap();
    let errors: Vec<f64> = steps
        .iter()
        .flat_map(|s| s["decisions"].as_array().unwrap())
        .filter(|d| d["check"] == "errors")
        .map(|d| d["value"].as_f64().expect("a value at every tick"))
        .collect();
    assert_eq!(errors.len(), 61, "one decision a minute from 1h01m to 2h01m");
    assert!((errors[59] - 0.001).abs() < 1e-9 && errors[60] > 0.01, "{:?}", &errors[58..]);

    let text = run("table");
    assert!(text.contains("run phases[1].hooks.before[0]: ./warm-cache.sh (not run in a simulation)"), "{text}");
    assert!(text.contains("ROLLED_BACK (phase 2, 10%)"), "{text}");
    assert!(text.contains("result: RolledBack"), "{text}");

    // Bad times are refused before anything is asked.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["simulate"])
        .arg(&plan)
        .args(["--prometheus", &prometheus.url, "--from", "yesterday", "--to", "now"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from: `yesterday` is not a time"));
}
