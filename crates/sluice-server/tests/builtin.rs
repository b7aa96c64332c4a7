//! The built-in metrics end to end, over real HTTP on loopback with a virtual clock: users evaluated
//! through OFREP, their outcomes reported through `POST /api/v1/metrics`, and rollouts judged by the
//! `builtin` source — a bad canary rolled back by its canary-vs-control trigger, a broken traffic split
//! made inconclusive — and the ingestion's refusals.

mod support;

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_engine::{Clock, Status};
use sluice_server::{AppState, Options, RunnerMemory, Seams};
use sluice_store::Store;
use support::server::Server;

/// The clock starts in 2027: built-in windows are judged on the virtual clock only.
async fn start() -> Server {
    Server::start(1_800_000_000_000, Default::default()).await
}

impl Server {
    /// Each user's variant and reason, as OFREP serves them.
    async fn evaluate(&self, flag: &str, users: usize) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for u in 0..users {
            let key = format!("user-{u}");
            let (s, v) = self
                .call_as(
                    &self.sdk,
                    Method::POST,
                    &format!("/ofrep/v1/evaluate/flags/{flag}"),
                    Some(json!({"context": {"targetingKey": key}})),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            out.push((key, v["variant"].as_str().unwrap().to_string(), v["reason"].as_str().unwrap().to_string()));
        }
        out
    }
}

/// One minute of traffic: every user once, failing at the rate of the variant they were served.
fn minute(
    users: &[(String, String, String)],
    flag: &str,
    error_rate: impl Fn(&str) -> f64,
    rng: &mut fastrand::Rng,
) -> Value {
    let observations: Vec<Value> = users
        .iter()
        .map(|(key, variant, reason)| {
            json!({"flag": flag, "variant": variant, "reason": reason, "key": key,
                   "ok": rng.f64() >= error_rate(variant), "latency_ms": 20.0 + rng.f64() * 10.0})
        })
        .collect();
    json!({ "observations": observations })
}

const PLAN: &str = r#"name: canary
flag: f
analysis: { interval: 1m }
phases: [ { percent: 10, hold: 2h }, { percent: 100 } ]
gates:
  - { name: errors-within-a-point, metric: error_rate, compare: control, max_increase: 0.01 }
triggers:
  - { name: errors-vs-control, metric: error_rate, compare: control, max_increase: 0, severity: hard }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_is_rolled_back_on_evidence_from_the_builtin_metrics() {
    let s = start().await;
    let (st, v) = s.call(Method::PUT, "/api/v1/flags/f", Some(json!({"ramp": {"percent": 0}}))).await;
    assert!(st.is_success(), "{v}");
    let (st, v) = s.call(Method::POST, "/api/v1/rollouts", Some(json!({"plan": PLAN}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let users = s.evaluate("f", 2000).await;
    let canary = users.iter().filter(|u| u.1 == "on").count();
    assert!((120..=280).contains(&canary), "10% of 2,000 users on the canary: {canary}");

    // The canary fails 6% of requests, control 1%.
    let mut rng = fastrand::Rng::with_seed(7);
    let memory = RunnerMemory::default();
    let mut ticks = 0;
    while ticks < 30 {
        let batch = minute(&users, "f", |v| if v == "on" { 0.06 } else { 0.01 }, &mut rng);
        let (st, v) = s.call_as(&s.sdk, Method::POST, "/api/v1/metrics", Some(batch)).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        s.clock.advance_ms(60_000);
        s.state.controller().run_due(&memory).await.unwrap();
        ticks += 1;
        if s.store.rollout(&id).await.unwrap().unwrap().state.status.is_terminal() {
            break;
        }
    }
    let state = s.store.rollout(&id).await.unwrap().unwrap().state;
    let (_, decisions) = s.call(Method::GET, &format!("/api/v1/rollouts/{id}/decisions"), None).await;
    assert!(
        matches!(&state.status, Status::RolledBack { reason } if reason.contains("errors-vs-control")),
        "after {ticks} ticks: {:?}: {decisions}",
        state.status
    );
    let text = decisions.to_string();
    assert!(text.contains("lower bound of canary − control − 0 > 0"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traffic_split_that_does_not_match_the_percentage_makes_comparisons_inconclusive() {
    let s = start().await;
    s.call(Method::PUT, "/api/v1/flags/f", Some(json!({"ramp": {"percent": 0}}))).await;
    let (st, v) = s.call(Method::POST, "/api/v1/rollouts", Some(json!({"plan": PLAN}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    // An application that assigns half its users to the canary itself, whatever the flag said.
    let users: Vec<(String, String, String)> = (0..2000)
        .map(|u| (format!("user-{u}"), if u % 2 == 0 { "on" } else { "off" }.to_string(), "SPLIT".to_string()))
        .collect();
    let mut rng = fastrand::Rng::with_seed(8);
    let memory = RunnerMemory::default();
    // The first tick starts the sequence; the next ones see the split.
    for _ in 0..4 {
        let batch = minute(&users, "f", |_| 0.01, &mut rng);
        let (st, v) = s.call_as(&s.sdk, Method::POST, "/api/v1/metrics", Some(batch)).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        s.clock.advance_ms(60_000);
        s.state.controller().run_due(&memory).await.unwrap();
    }
    let (_, decisions) = s.call(Method::GET, &format!("/api/v1/rollouts/{id}/decisions"), None).await;
    let text = decisions.to_string();
    assert!(text.contains("sample ratio mismatch"), "{text}");
    assert_eq!(s.store.rollout(&id).await.unwrap().unwrap().state.status, Status::Running);
}

/// A plan 10 → 100 % with a bake: at 100 % OFREP still says `SPLIT` for the ramp's users, so a plain
/// trigger keeps counting them through the bake (never blind for want of a cohort), and a comparison with
/// control compares with the control measured at 10 % — which catches a canary that only goes bad during
/// the bake, below the plain trigger's threshold: rolled back before the bake ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_keep_watching_at_100_percent_and_through_the_bake() {
    let s = start().await;
    s.call(Method::PUT, "/api/v1/flags/f", Some(json!({"ramp": {"percent": 0}}))).await;
    let plan = r#"name: baked
flag: f
analysis: { interval: 1m }
phases: [ { percent: 10, hold: 10m }, { percent: 100, hold: 10m } ]
bake: 2h
triggers:
  - { name: errors-high, metric: error_rate, above: 0.05, severity: hard }
  - { name: errors-vs-control, metric: error_rate, compare: control, max_increase: 0.01, severity: hard }
"#;
    let (st, v) = s.call(Method::POST, "/api/v1/rollouts", Some(json!({"plan": plan}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let mut rng = fastrand::Rng::with_seed(9);
    let memory = RunnerMemory::default();
    let (mut users, mut served_at) = (Vec::new(), None);
    let (mut ticks, mut baking) = (0, 0);
    loop {
        let state = s.store.rollout(&id).await.unwrap().unwrap().state;
        if state.status.is_terminal() || ticks > 200 {
            break;
        }
        // Users are evaluated again whenever the percentage moves (what their clients do on the change).
        let percent =
            state.percent(&sluice_controller::plan_of(&s.store.rollout(&id).await.unwrap().unwrap()).unwrap());
        if served_at != Some(percent) {
            users = s.evaluate("f", 1000).await;
            served_at = Some(percent);
        }
        if let Status::Baking { .. } = state.status {
            baking += 1;
            // Every user is served the ramped variant as the ramp's assignment.
            assert!(users.iter().all(|(_, v, r)| v == "on" && r == "SPLIT"), "{:?}", &users[..3]);
        }
        if baking == 20 {
            // Well into the bake: neither trigger is blind, and both measure the canary.
            let (_, status) = s.call(Method::GET, &format!("/api/v1/rollouts/{id}"), None).await;
            assert_eq!(status["data"]["blind_triggers"], json!([]), "{status}");
            let (_, d) = s.call(Method::GET, &format!("/api/v1/rollouts/{id}/decisions?limit=2"), None).await;
            for decision in d["data"].as_array().unwrap() {
                assert!(decision["value"].is_number(), "a value during the bake: {decision}");
                assert_eq!(decision["outcome"], "clear", "{decision}");
            }
        }
        // Five minutes into the bake the canary goes bad: 3.5 % errors, under the plain trigger's 5 % but
        // past the 1 % control had plus the margin of one point.
        let canary_rate = if baking > 5 { 0.035 } else { 0.01 };
        let batch = minute(&users, "f", |v| if v == "on" { canary_rate } else { 0.01 }, &mut rng);
        let (st, v) = s.call_as(&s.sdk, Method::POST, "/api/v1/metrics", Some(batch)).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        s.clock.advance_ms(60_000);
        s.state.controller().run_due(&memory).await.unwrap();
        ticks += 1;
    }
    let state = s.store.rollout(&id).await.unwrap().unwrap().state;
    assert!(baking > 20, "it baked: {:?}", state.history);
    assert!(
        matches!(&state.status, Status::RolledBack { reason } if reason.contains("errors-vs-control")),
        "the canary that went bad during the bake was rolled back by the comparison with the control of 10 %: {:?}",
        state.status
    );
    let (_, d) = s.call(Method::GET, &format!("/api/v1/rollouts/{id}/decisions?limit=4"), None).await;
    assert!(d.to_string().contains("lower bound of canary − control − 0.01 > 0"), "{d}");
}

#[tokio::test]
async fn ingestion_refuses_a_bad_batch_whole_and_names_the_entry() {
    let s = start().await;
    s.call(Method::PUT, "/api/v1/flags/f", Some(json!({"ramp": {"percent": 10}}))).await;
    let good = json!({"flag": "f", "variant": "on", "reason": "SPLIT", "key": "u1", "ok": true, "latency_ms": 3.5});
    let cases = [
        (
            json!([good, {"flag": "nope", "variant": "on", "reason": "SPLIT", "ok": true}]),
            "observations[1].flag",
            "no flag `nope`",
        ),
        (
            json!([{"flag": "f", "variant": "blue", "reason": "SPLIT", "ok": true}]),
            "observations[0].variant",
            "no variant `blue`",
        ),
        (
            json!([good, {"flag": "f", "variant": "on", "reason": "SPLIT", "ok": true, "latency_ms": -1}]),
            "observations[1]",
            "latency_ms is -1",
        ),
        (
            json!([{"flag": "f", "variant": "on", "reason": "SPLIT", "ok": true, "values": {"score": -0.5}}]),
            "observations[0]",
            "values.score",
        ),
    ];
    for (batch, field, words) in cases {
        let (st, v) = s.call_as(&s.sdk, Method::POST, "/api/v1/metrics", Some(json!({"observations": batch}))).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["field"], field, "{v}");
        assert!(v["message"].as_str().unwrap().contains(words), "{v}");
    }
    let big: Vec<Value> = (0..10_001).map(|_| good.clone()).collect();
    let (st, v) = s.call_as(&s.sdk, Method::POST, "/api/v1/metrics", Some(json!({"observations": big}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("observations")), "{v}");
    let (st, v) =
        s.call_as(&s.sdk, Method::POST, "/api/v1/metrics", Some(json!({"observations": [{"flag": "f"}]}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("observations[0]")), "{v}");
    // Raw bodies: a value named twice (a JSON object may repeat a key; a count must not silently drop one),
    // escapes undone in names, and bytes that are not UTF-8.
    let raw = |body: &'static [u8]| {
        s.http
            .post(format!("{}/api/v1/metrics", s.url))
            .bearer_auth(&s.sdk)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = raw(br#"{"observations": [{"flag": "f", "variant": "on", "reason": "SPLIT", "ok": true, "values": {"a": 1, "a": 2}}]}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = r.json().await.unwrap();
    assert!(v["field"].as_str().unwrap().starts_with("observations[0]"), "{v}");
    assert!(v["message"].as_str().unwrap().contains("given twice"), "{v}");
    let r = raw(br#"{"observations": [{"flag": "\u0066", "variant": "o\u006e", "reason": "SPLIT", "ok": true, "values": {"sc\u006fre": 1}}]}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
    let r = raw(b"{\"observations\": [{\"flag\": \"f\xff\"}]}").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("not UTF-8"), "{v}");
    // Only applications report: an admin token is not an sdk token.
    let (st, _) = s.call(Method::POST, "/api/v1/metrics", Some(json!({"observations": [good]}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = s.call_as(&s.sdk, Method::POST, "/api/v1/metrics", Some(json!({"observations": [good]}))).await;
    assert_eq!((st, v["accepted"].as_u64()), (StatusCode::ACCEPTED, Some(1)), "{v}");
}

/// The count in a decision's note: `too few samples: N canary, …`.
fn canary_count(decisions: &Value) -> u64 {
    let note = decisions["data"].as_array().unwrap().last().unwrap()["note"].as_str().unwrap().to_string();
    note.trim_start_matches("too few samples: ").split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("{note}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_evidence_but_for_the_last_unsaved_interval() {
    let s = start().await;
    s.call(Method::PUT, "/api/v1/flags/f", Some(json!({"ramp": {"percent": 0}}))).await;
    // A gate that never has enough samples, so that its note tells the count.
    let plan = "name: counted\nflag: f\nanalysis: { interval: 1m }\nphases: [ { percent: 10, hold: 2h }, { percent: 100 } ]\n\
                gates: [ { name: errors, metric: error_rate, compare: control, max_increase: 0.01, min_samples: 1000000000 } ]\n";
    let (st, v) = s.call(Method::POST, "/api/v1/rollouts", Some(json!({"plan": plan}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let users = s.evaluate("f", 500).await;
    let mut rng = fastrand::Rng::with_seed(9);
    let memory = RunnerMemory::default();
    for minute_no in 0..4 {
        s.clock.advance_ms(60_000);
        let (st, v) =
            s.call_as(&s.sdk, Method::POST, "/api/v1/metrics", Some(minute(&users, "f", |_| 0.01, &mut rng))).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        if minute_no == 2 {
            s.state.save_metrics().await.unwrap();
        }
    }
    s.clock.advance_ms(60_000);
    s.state.controller().run_due(&memory).await.unwrap();
    let (_, decisions) = s.call(Method::GET, &format!("/api/v1/rollouts/{id}/decisions"), None).await;
    let before = canary_count(&decisions);
    let unsaved = users.iter().filter(|u| u.1 == "on").count() as u64;
    assert!(before > 3 * unsaved / 2, "four minutes of the canary counted: {before}");

    // A new server on the same store, as after a crash: the minute after the save is lost, no more.
    let seams = Seams { clock: s.clock.clone() as Arc<dyn Clock>, ..Seams::default() };
    let again = AppState::load_with(s.store.clone() as Arc<dyn Store>, Options::default(), seams).await.unwrap();
    again.controller().recover().await.unwrap();
    s.clock.advance_ms(60_000);
    again.controller().run_due(&RunnerMemory::default()).await.unwrap();
    let decisions = json!({"data": s.store.decisions(&id, 100).await.unwrap()});
    let after = canary_count(&decisions);
    assert!(after >= before - unsaved && after < before + 1, "before {before}, after {after}, unsaved {unsaved}");
}
