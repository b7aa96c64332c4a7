//! `GET /metrics`: Sluice's own series, in a format `promtool check metrics` accepts, with bounded labels.

#[path = "../../../tests/support/external.rs"]
mod external;
mod support;

use std::io::Write;

use reqwest::Method;
use serde_json::json;
use sluice_server::RunnerMemory;
use support::server::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_flags_rollouts_and_check_values_and_pass_promtool() {
    let s = Server::start(1_000_000, Default::default()).await;
    let (state, clock, url, http, admin, sdk) = (&s.state, &s.clock, &s.url, &s.http, &s.admin, &s.sdk);
    let call = |method: Method, path: &str, body: Option<serde_json::Value>| {
        let mut req = http.request(method, format!("{url}{path}")).bearer_auth(admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move { req.send().await.unwrap() }
    };
    call(Method::PUT, "/api/v1/flags/checkout", Some(json!({"ramp": {"percent": 0}}))).await;
    let plan = "name: shop \"quoted\"\nflag: checkout\nanalysis: { interval: 1m }\nphases: [ { percent: 10, hold: 1h }, { percent: 100 } ]\n\
                gates: [ { name: errors, command: [sh, -c, 'echo 0.004'], value_from: last_number, below: 0.01 } ]\n";
    let r = call(Method::POST, "/api/v1/rollouts", Some(json!({"plan": plan}))).await;
    assert_eq!(r.status(), 201);
    // A second rollout whose first hook fails: an action failure to count.
    call(Method::PUT, "/api/v1/flags/search", Some(json!({"ramp": {"percent": 0}}))).await;
    let failing = "name: search\nflag: search\nanalysis: { interval: 1m }\n\
                   phases: [ { percent: 5, hooks: { before: [ { name: warm, exec: [sh, -c, 'exit 3'] } ] } }, { percent: 100 } ]\n";
    let r = call(Method::POST, "/api/v1/rollouts", Some(json!({"plan": failing}))).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    clock.advance_ms(60_000);
    state.controller().run_due(&RunnerMemory::default()).await.unwrap();
    state.controller().deliver_due().await;

    // OFREP answers, counted by flag and variant: 10% of users get `on`.
    let (mut on, mut off) = (0u64, 0u64);
    for i in 0..200 {
        let body = json!({"context": {"targetingKey": format!("user-{i}")}});
        let r = http
            .post(format!("{url}/ofrep/v1/evaluate/flags/checkout"))
            .bearer_auth(sdk)
            .json(&body)
            .send()
            .await
            .unwrap();
        match r.json::<serde_json::Value>().await.unwrap()["variant"].as_str() {
            Some("on") => on += 1,
            Some("off") => off += 1,
            other => panic!("unexpected variant {other:?}"),
        }
    }
    assert!(on > 0 && off > on, "on {on}, off {off}");
    // Bulk: one more answer for each flag; no targeting key on a partial ramp: an error for `checkout`.
    let r = http
        .post(format!("{url}/ofrep/v1/evaluate/flags"))
        .bearer_auth(sdk)
        .json(&json!({"context": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // What an Unleash SDK reports.
    let report = json!({"appName": "shop", "instanceId": "i1", "bucket": {"start": "2026-11-26T00:00:00Z", "stop": "2026-11-26T00:01:00Z",
        "toggles": {"checkout": {"yes": 7, "no": 3, "variants": {"on": 7, "disabled": 3}}}}});
    let r = http.post(format!("{url}/api/client/metrics")).bearer_auth(sdk).json(&report).send().await.unwrap();
    assert_eq!(r.status(), 202);

    // An sdk token reads no metrics; a viewer or above does.
    let refused = http.get(format!("{url}/metrics")).bearer_auth(sdk).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let r = call(Method::GET, "/metrics", None).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    assert!(text.contains("sluice_flag_percent{env=\"production\",flag=\"checkout\"} 10"), "{text}");
    assert!(text.contains("sluice_rollout_percent{rollout=\"checkout-"), "{text}");
    assert!(text.contains("plan=\"shop \\\"quoted\\\"\""), "label values are escaped: {text}");
    assert!(text.contains("check=\"errors\",kind=\"gate\"} 0.004"), "{text}");
    assert!(text.contains("status=\"running\"} 1"), "{text}");
    assert!(
        text.contains(&format!(
            "sluice_flag_evaluations_total{{env=\"production\",flag=\"checkout\",variant=\"on\"}} {on}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "sluice_flag_evaluations_total{{env=\"production\",flag=\"checkout\",variant=\"off\"}} {off}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("sluice_flag_evaluation_errors_total{env=\"production\",flag=\"checkout\",code=\"TARGETING_KEY_MISSING\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "sluice_unleash_client_evaluations_total{env=\"production\",flag=\"checkout\",enabled=\"true\"} 7\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("sluice_unleash_client_variants_total{env=\"production\",flag=\"checkout\",variant=\"on\"} 7\n"),
        "{text}"
    );
    assert!(text.contains("sluice_decisions_total{kind=\"gate\",outcome=\"holds\"} 1\n"), "{text}");
    assert!(text.contains("sluice_rollout_events_total{event=\"started\"} 2\n"), "{text}");
    assert!(text.contains("sluice_actions_total{kind=\"exec\",result=\"failed\"} 1\n"), "{text}");
    assert!(text.contains("sluice_notifications_total{notifier=\"log\",result=\"ok\"}"), "{text}");
    let single = "method=\"POST\",route=\"/ofrep/v1/evaluate/flags/{key}\"";
    assert!(text.contains(&format!("sluice_http_request_duration_seconds_count{{{single}}} 200\n")), "{text}");
    assert!(
        text.contains(&format!("sluice_http_request_duration_seconds_bucket{{{single},le=\"+Inf\"}} 200\n")),
        "{text}"
    );
    assert!(text.contains(&format!("sluice_http_requests_total{{{single},code=\"2xx\"}} 200\n")), "{text}");
    assert!(text.contains("route=\"/api/v1/rollouts\",code=\"2xx\"} 2\n"), "{text}");

    let promtool = std::process::Command::new("promtool").arg("--version").output();
    if !promtool.is_ok_and(|o| o.status.success()) {
        external::missing("promtool", "Debian: apt-get install prometheus");
        return;
    }
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
