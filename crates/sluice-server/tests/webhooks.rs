//! Actions and notifications against receivers on loopback: a recording HTTP server in the test that
//! fails on demand, and a real Alertmanager (Debian `prometheus-alertmanager`) started by the test.

#[path = "../../../tests/support/external.rs"]
mod external;
mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{json, Value};
use sluice_server::{AppState, Options, RunnerMemory, Seams};
use sluice_sources::outbound::verify;
use sluice_store::{Role, SqliteStore, Store};
use support::server::Server;

const HOOK_SECRET: &str = "whsec-planted-for-webhooks-5d1e";

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A receiver that records every request and answers each path with the next scripted status (200 once
/// the script is used up).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Vec<Script>>>,
}

/// A path and the statuses it answers, in order.
type Script = (String, VecDeque<u16>);

impl Receiver {
    async fn start(&self) -> String {
        let me = self.clone();
        let app =
            axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let me = me.clone();
                async move {
                    let path = uri.path().to_string();
                    me.got.lock().unwrap().push(Received { path: path.clone(), headers, body: body.to_vec() });
                    let mut script = me.script.lock().unwrap();
                    let status =
                        script.iter_mut().find(|(p, _)| *p == path).and_then(|(_, s)| s.pop_front()).unwrap_or(200);
                    (StatusCode::from_u16(status).unwrap(), format!("answered {status}"))
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn fail(&self, path: &str, statuses: &[u16]) {
        self.script.lock().unwrap().push((path.to_string(), statuses.iter().copied().collect()));
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.got.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }
}

/// A server whose clock is now (webhook signatures carry timestamps a receiver checks), retrying fast.
async fn start(public_url: Option<String>) -> Server {
    let config =
        sluice_sources::Config { retry_backoff: Some(Duration::from_millis(10)), public_url, ..Default::default() };
    Server::start(unix_now() * 1000, config).await
}

impl Server {
    async fn start_plan(&self, plan: &str) -> String {
        self.call(Method::PUT, "/api/v1/flags/f", Some(json!({"ramp": {"percent": 0}}))).await;
        let (st, v) = self.call(Method::POST, "/api/v1/rollouts", Some(json!({"plan": plan}))).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v["data"]["id"].as_str().unwrap().to_string()
    }

    async fn status(&self, id: &str) -> Value {
        self.call(Method::GET, &format!("/api/v1/rollouts/{id}"), None).await.1["data"].clone()
    }

    /// One interval on, and the runner's pass.
    async fn tick(&self, memory: &RunnerMemory) {
        self.clock.advance_ms(60_000);
        self.state.controller().run_due(memory).await.unwrap();
    }

    async fn deliver(&self) {
        while self.state.controller().deliver_due().await > 0 {}
    }

    async fn audit(&self, action: &str) -> Vec<Value> {
        let (_, v) = self.call(Method::GET, "/api/v1/audit?limit=1000", None).await;
        v["data"].as_array().unwrap().iter().filter(|e| e["action"] == action).cloned().collect()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_webhook_is_signed_keyed_templated_and_retried_and_notifiers_hear_their_events() {
    std::env::set_var("SLUICE_SECRET_HOOK_KEY", HOOK_SECRET);
    let receiver = Receiver::default();
    let recv = receiver.start().await;
    // The receiver fails twice, then takes it.
    receiver.fail("/incident", &[500, 503]);
    let s = start(Some("https://sluice.example.com".into())).await;
    let plan = format!(
        r#"name: hooked
flag: f
analysis: {{ interval: 1m }}
phases:
  - {{ percent: 10, hold: 1h }}
  - {{ percent: 100 }}
triggers:
  - {{ name: errors, command: [sh, -c, 'echo 0.2'], value_from: last_number, above: 0.5, severity: hard }}
rollback:
  actions:
    - name: tell the incident desk
      webhook:
        url: "{recv}/incident"
        body: '{{"flag": "{{{{flag}}}}", "why": "{{{{reason}}}}", "percent": {{{{percent}}}}, "checks": {{{{checks}}}}}}'
        secret: {{ secret_env: SLUICE_SECRET_HOOK_KEY }}
        headers: {{ X-Team: sre }}
        retries: 3
      timeout: 2s
notify:
  - slack: {{ url: "{recv}/slack" }}
    on: [rolled_back]
  - webhook: {{ url: "{recv}/events", secret: {{ secret_env: SLUICE_SECRET_HOOK_KEY }} }}
"#
    );
    let id = s.start_plan(&plan).await;
    let memory = RunnerMemory::default();
    s.clock.advance_ms(60_000);
    s.state.controller().run_due(&memory).await.unwrap();
    let why = r#"on-call said "stop", twice"#;
    let (st, v) = s.call(Method::POST, &format!("/api/v1/rollouts/{id}/rollback"), Some(json!({"reason": why}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.deliver().await;

    // Three attempts, each signed afresh, each with the same key; the body survived the quotes.
    let calls = receiver.at("/incident");
    assert_eq!(calls.len(), 3, "two failures then a success: {calls:?}");
    let key = calls[0].headers["idempotency-key"].to_str().unwrap().to_string();
    assert!(key.starts_with(&format!("{id}:")), "{key}");
    for c in &calls {
        assert_eq!(c.headers["idempotency-key"], key.as_str());
        assert_eq!(c.headers["x-team"], "sre");
        let sig = c.headers["sluice-signature"].to_str().unwrap();
        assert!(verify(HOOK_SECRET, sig, &c.body, unix_now(), 300), "a valid signature: {sig}");
        assert!(!verify("another-secret", sig, &c.body, unix_now(), 300));
        let body: Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(body["flag"], "f");
        assert!(body["why"].as_str().unwrap().contains(r#""stop""#), "{body}");
        assert_eq!(body["percent"], 10);
        assert!(body["checks"].as_array().unwrap().iter().any(|c| c["check"] == "errors"), "{body}");
    }
    // Every attempt is on the record.
    let actions = s.audit("rollout.action").await;
    let done = actions.iter().find(|a| a["after"]["name"] == "tell the incident desk").expect("audited");
    assert_eq!(done["after"]["ok"], true, "{done}");
    let statuses: Vec<u64> =
        done["after"]["attempts"].as_array().unwrap().iter().map(|a| a["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![500, 503, 200], "{done}");
    assert!(done["after"]["attempts"][0]["target"].as_str().unwrap().starts_with("http://127.0.0.1:"));

    // Slack heard the rollback only, with the values, in words and with links.
    let slack = receiver.at("/slack");
    assert_eq!(slack.len(), 1, "only `on: [rolled_back]`");
    let text = serde_json::from_slice::<Value>(&slack[0].body).unwrap()["text"].as_str().unwrap().to_string();
    assert!(text.starts_with("*ROLLED BACK* hooked (flag `f`)"), "{text}");
    assert!(text.contains(&format!("<https://sluice.example.com/rollouts/{id}|Open the rollout>")), "{text}");
    // The generic webhook heard every event, signed.
    let events = receiver.at("/events");
    // Delivered concurrently: in no set order (a receiver orders by the event's `at` or id).
    let mut kinds: Vec<String> = events
        .iter()
        .map(|e| {
            let sig = e.headers["sluice-signature"].to_str().unwrap();
            assert!(verify(HOOK_SECRET, sig, &e.body, unix_now(), 300));
            serde_json::from_slice::<Value>(&e.body).unwrap()["event"]["kind"].as_str().unwrap().to_string()
        })
        .collect();
    kinds.sort();
    assert_eq!(kinds, vec!["rolled_back", "started"], "{kinds:?}");
    let rolled: Value = events
        .iter()
        .map(|e| serde_json::from_slice::<Value>(&e.body).unwrap())
        .find(|e| e["event"]["kind"] == "rolled_back")
        .unwrap();
    assert_eq!(rolled["status"], "rolled_back");
    // Each delivery is audited too.
    let told = s.audit("rollout.notification").await;
    assert_eq!(told.iter().filter(|t| t["after"]["ok"] == true).count(), 3, "{told:?}");
    // The rollback itself never waited on the receiver: the flag is back.
    let flag = s.state.live_in(None).unwrap().live().load();
    assert_eq!(flag.flags().iter().find(|f| f.key == "f").unwrap().ramp.percent, 0);
    assert_eq!(s.store.rollout(&id).await.unwrap().unwrap().state.status.name(), "rolled_back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_rollback_webhook_is_reported_and_a_rejected_one_is_not_retried() {
    let receiver = Receiver::default();
    let recv = receiver.start().await;
    receiver.fail("/down", &[500, 500, 500]);
    receiver.fail("/reject", &[400]);
    // A redirect (an SSO proxy's login page) is a failure, never followed into a 200.
    receiver.fail("/moved", &[302]);
    let s = start(None).await;
    let plan = format!(
        r#"name: failing
flag: f
phases: [ {{ percent: 10, hold: 1h }}, {{ percent: 100 }} ]
rollback:
  actions:
    - {{ name: down, webhook: {{ url: "{recv}/down", retries: 2 }} }}
    - {{ name: reject, webhook: {{ url: "{recv}/reject" }} }}
    - {{ name: moved, webhook: {{ url: "{recv}/moved" }} }}
"#
    );
    let id = s.start_plan(&plan).await;
    let (st, v) =
        s.call(Method::POST, &format!("/api/v1/rollouts/{id}/rollback"), Some(json!({"reason": "test"}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(receiver.at("/down").len(), 3, "the first try and two retries");
    assert_eq!(receiver.at("/reject").len(), 1, "a 400 will not change: no retry");
    let actions = s.audit("rollout.action").await;
    assert_eq!(receiver.at("/moved").len(), 1, "not followed, not retried");
    for name in ["down", "reject", "moved"] {
        let a = actions.iter().find(|a| a["after"]["name"] == name).unwrap();
        assert_eq!(a["after"]["ok"], false, "{a}");
    }
    // The flag rollback happened anyway, before the actions.
    let record = s.store.rollout(&id).await.unwrap().unwrap();
    assert_eq!(record.state.status.name(), "rolled_back");
    assert_eq!(
        s.state.live_in(None).unwrap().live().load().flags().iter().find(|f| f.key == "f").unwrap().ramp.percent,
        0
    );
    // Each failed for good: kept as failed until a person settles it, told once each, and shown on status.
    assert_eq!(record.outbox.iter().filter(|i| i.failed.is_some()).count(), 3, "{:?}", record.outbox);
    assert_eq!(record.state.history.iter().filter(|e| e.kind == "action_failed").count(), 3);
    let status = s.status(&id).await;
    let failed: Vec<&serde_json::Value> =
        status["pending"].as_array().unwrap().iter().filter(|p| p["state"] == "failed").collect();
    assert_eq!(failed.len(), 3, "{status}");
    assert!(failed[1]["error"].as_str().unwrap().contains("400"), "{status}");
    // A person accepts each as it is; then nothing is left to carry out.
    for _ in 0..3 {
        let body = json!({"pending": "failed", "reason": "done by hand"});
        let (st, v) = s.call(Method::POST, &format!("/api/v1/rollouts/{id}/settle"), Some(body)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    assert!(s.store.rollout(&id).await.unwrap().unwrap().outbox.is_empty());
    assert_eq!(receiver.at("/down").len(), 3, "accepting a failure does not run it again");
}

/// A notifier whose receiver answers 404 is tried once — a 404 will not change — and given up: audited
/// once, shown on the rollout's status and in `/metrics`, never tried again, until a person sends it again;
/// one that keeps answering 503 is retried, and given up after the server's attempts; neither holds up the
/// rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_answering_404_is_tried_once_and_given_up_visibly_until_sent_again() {
    let receiver = Receiver::default();
    let recv = receiver.start().await;
    receiver.fail("/gone", &[404; 5]);
    receiver.fail("/busy", &[503; 20]);
    let s = start(None).await;
    let plan = format!(
        r#"name: told
flag: f
phases: [ {{ percent: 10, hold: 1h }}, {{ percent: 100 }} ]
notify:
  - webhook: {{ url: "{recv}/gone" }}
    on: [started]
  - slack: {{ url: "{recv}/busy" }}
    on: [started]
"#
    );
    let id = s.start_plan(&plan).await;
    s.deliver().await;
    assert_eq!(receiver.at("/gone").len(), 1, "a 404 is not retried");
    let status = s.status(&id).await;
    let undelivered = status["undelivered"].as_array().unwrap();
    assert_eq!(undelivered.len(), 1, "{status}");
    assert_eq!(undelivered[0]["destination"], "notify[0]");
    assert_eq!(undelivered[0]["attempts"], 1);
    assert!(undelivered[0]["error"].as_str().unwrap().contains("404"), "{status}");
    assert_eq!(status["status"]["state"], "running", "a notification never holds up the rollout");
    let dead = s.audit("rollout.notification_dead").await;
    assert_eq!(dead.len(), 1, "given up, audited once: {dead:?}");
    assert_eq!(dead[0]["after"]["failure"], "permanent");
    // The busy one is retried with backoff (due again later, not now).
    assert_eq!(receiver.at("/busy").len(), 1);
    // Later passes never try the dead one again.
    for _ in 0..3 {
        let queue = s.store.due_notifications(100).await.unwrap();
        for n in &queue {
            assert_ne!(n.destination.to_string(), "notify[0]", "the dead one is no longer due");
        }
        s.deliver().await;
    }
    assert_eq!(receiver.at("/gone").len(), 1);
    let metrics =
        s.http.get(format!("{}/metrics", s.url)).bearer_auth(&s.admin).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(&format!("sluice_notifications_undelivered{{rollout=\"{id}\",destination=\"notify[0]\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_notifications_given_up_total{kind=\"webhook\"} 1"), "{metrics}");

    // A person sends it again (the receiver still says 404 once more, then takes it).
    receiver.script.lock().unwrap().retain(|(p, _)| p != "/gone");
    let (st, v) =
        s.call(Method::POST, &format!("/api/v1/rollouts/{id}/redeliver"), Some(json!({"reason": "hook fixed"}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["data"]["undelivered"].as_array().unwrap().is_empty(), "{v}");
    s.deliver().await;
    assert_eq!(receiver.at("/gone").len(), 2, "sent again once");
    let redelivered = s.audit("rollout.notification_redeliver").await;
    assert_eq!(redelivered[0]["reason"], "hook fixed");
    let (st, v) = s.call(Method::POST, &format!("/api/v1/rollouts/{id}/redeliver"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "nothing left to send again: {v}");
}

/// A notification failing transiently (503) is retried until the server's attempts are used up, then given
/// up as a dead one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_failing_transiently_is_given_up_after_its_attempts() {
    let receiver = Receiver::default();
    let recv = receiver.start().await;
    receiver.fail("/busy", &[503; 20]);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("sluice.db")).await.unwrap());
    let (_, admin) = store.create_token("root", "admin", Role::Admin).await.unwrap();
    let plugins = sluice_sources::Registry::new(&sluice_sources::Config::default());
    let seams = Seams { plugins: Arc::new(plugins), ..Seams::default() };
    let options = Options {
        controller: sluice_server::Settings { delivery_attempts: 3, ..Default::default() },
        ..Options::default()
    };
    let state = AppState::load_with(store.clone() as Arc<dyn Store>, options, seams).await.unwrap();
    let plan = format!(
        "name: told\nflag: f\nphases: [ {{ percent: 10, hold: 1h }} ]\nnotify:\n  - slack: {{ url: \"{recv}/busy\" }}\n    on: [started]\n"
    );
    let who = sluice_store::Principal { name: admin.clone(), role: Role::Admin, envs: None };
    store.apply("root", sluice_store::Change::PutFlag(sluice_flags::Flag::boolean("f")), None).await.unwrap();
    state.controller().catalog().reload().await.unwrap();
    let id = state.controller().start(&who, None, "told.yaml", &plan).await.unwrap().id;
    for _ in 0..3 {
        // Each failed try is due again after its backoff: make it due now.
        sqlx::query("UPDATE notifications SET next_ms = 0 WHERE delivered_ms IS NULL")
            .execute(store.pool())
            .await
            .unwrap();
        state.controller().deliver_due().await;
    }
    assert_eq!(receiver.at("/busy").len(), 3, "three attempts, then no more");
    let dead = store.dead_notifications(Some(&id)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    sqlx::query("UPDATE notifications SET next_ms = 0").execute(store.pool()).await.unwrap();
    state.controller().deliver_due().await;
    assert_eq!(receiver.at("/busy").len(), 3, "given up: not tried again");
}

/// A real Alertmanager on a free loopback port, stopped on drop.
struct RealAlertmanager {
    url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for RealAlertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn alertmanager() -> Option<RealAlertmanager> {
    let binary = ["prometheus-alertmanager", "alertmanager"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(binary) = binary else {
        external::missing("Alertmanager", "Debian: apt-get install prometheus-alertmanager");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(&config, "route: { receiver: nobody }\nreceivers: [ { name: nobody } ]\n").unwrap();
    let port = free_port();
    let child = std::process::Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let am = RealAlertmanager { url: format!("http://127.0.0.1:{port}"), child, _dir: dir };
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{}/-/ready", am.url)).send().await.is_ok_and(|r| r.status().is_success()) {
            return Some(am);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Alertmanager did not become ready on {}", am.url);
}

/// The rollout's alerts that Alertmanager holds as active.
async fn active_alerts(am: &str, rollout: &str) -> Vec<Value> {
    let v: Value = reqwest::get(format!("{am}/api/v2/alerts")).await.unwrap().json().await.unwrap();
    v.as_array().unwrap().iter().filter(|a| a["labels"]["rollout"] == rollout).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_rollout_fires_an_alert_in_a_real_alertmanager_kept_up_while_it_lasts_and_resolved_after() {
    let Some(am) = alertmanager().await else { return };
    let s = start(Some("https://sluice.example.com".into())).await;
    let plan = format!(
        r#"name: alerting
flag: f
phases: [ {{ percent: 10, hold: 1h }}, {{ percent: 100 }} ]
triggers:
  - {{ name: support-tickets, source: signal, severity: soft, decide_within: 30m, default: rollback }}
notify:
  - alertmanager: {{ url: "{}" }}
"#,
        am.url
    );
    let id = s.start_plan(&plan).await;
    s.deliver().await;
    assert!(active_alerts(&am.url, &id).await.is_empty(), "a running rollout raises nothing");

    let (st, v) = s
        .call(
            Method::POST,
            &format!("/api/v1/rollouts/{id}/signal"),
            Some(json!({"name": "support-tickets", "severity": "soft", "reason": "tickets doubled"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.deliver().await;
    let firing = active_alerts(&am.url, &id).await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    let alert = &firing[0];
    assert_eq!(alert["labels"]["alertname"], "SluiceRolloutPaused");
    assert_eq!(alert["labels"]["flag"], "f");
    assert_eq!(alert["labels"]["phase"], "1");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["status"]["state"], "active");
    assert!(alert["labels"].get("sluice_rollout").is_none() && alert["labels"].get("sluice_flag").is_none());
    assert!(alert["annotations"]["summary"].as_str().unwrap().contains("tickets doubled"), "{alert}");
    assert_eq!(alert["generatorURL"], format!("https://sluice.example.com/rollouts/{id}"));
    let ends = alert["endsAt"].as_str().unwrap().to_string();

    // While it lasts, the refresh posts it again: it stays active and its end moves on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(s.state.controller().refresh_alerts().await >= 1);
    let kept = active_alerts(&am.url, &id).await;
    assert_eq!(kept.len(), 1);
    assert!(kept[0]["endsAt"].as_str().unwrap() > ends.as_str(), "{} then {ends}", kept[0]["endsAt"]);

    // Resumed: resolved.
    let (st, v) =
        s.call(Method::POST, &format!("/api/v1/rollouts/{id}/resume"), Some(json!({"reason": "false alarm"}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.deliver().await;
    let mut left = active_alerts(&am.url, &id).await;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = active_alerts(&am.url, &id).await;
    }
    assert!(left.is_empty(), "resolved: {left:?}");
    let told = s.audit("rollout.notification").await;
    assert!(told.iter().all(|t| t["after"]["ok"] == true), "{told:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_action_sets_another_flag_audited_and_is_refused_on_a_flag_another_rollout_drives() {
    let s = start(None).await;
    for key in ["g", "h"] {
        let (st, v) = s.call(Method::PUT, &format!("/api/v1/flags/{key}"), Some(json!({"ramp": {"percent": 0}}))).await;
        assert!(st.is_success(), "{v}");
    }
    // Another rollout drives `g`.
    let (st, v) = s
        .call(
            Method::POST,
            "/api/v1/rollouts",
            Some(json!({"plan": "name: g-driver\nflag: g\nphases: [ { percent: 5, hold: 1d }, { percent: 100 } ]\n"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let plan = r#"name: companion
flag: f
phases:
  - percent: 10
    hooks: { before: [ { name: h on, flag: { key: h, percent: 30, variant: on } } ] }
  - percent: 50
    hooks: { before: [ { name: g half, flag: { key: g, percent: 50 } } ] }
  - percent: 100
"#;
    let id = s.start_plan(plan).await;
    let flags = s.state.live_in(None).unwrap().live().load();
    let h = flags.flags().iter().find(|f| f.key == "h").unwrap();
    assert_eq!((h.ramp.percent, h.ramp.ramped.as_str()), (30, "on"), "set before phase 1");
    drop(flags);
    let (_, v) = s.call(Method::GET, "/api/v1/audit?limit=1000", None).await;
    let edit = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entity"] == "flag:h" && e["after"]["ramp"]["percent"] == 30)
        .cloned()
        .expect("the edit of h is audited like a person's");
    assert!(
        edit["reason"].as_str().unwrap().contains("companion") && edit["reason"].as_str().unwrap().contains("h on"),
        "{edit}"
    );

    s.clock.advance_ms(60_000);
    s.state.controller().run_due(&RunnerMemory::default()).await.unwrap();
    let record = s.store.rollout(&id).await.unwrap().unwrap();
    assert_eq!(record.state.status.name(), "paused", "the refused hook stepped the rollout back");
    let g = s.state.live_in(None).unwrap().live().load().flags().iter().find(|f| f.key == "g").unwrap().ramp.percent;
    assert_eq!(g, 5, "g stays where its own rollout put it");
    let actions = s.audit("rollout.action").await;
    let refused = actions.iter().find(|a| a["after"]["name"] == "g half").expect("reported");
    assert_eq!(refused["after"]["ok"], false);
    assert!(refused["after"]["detail"].as_str().unwrap().contains("driven by rollout `g-driver`"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_gates_hold_the_start_and_each_step_until_their_webhook_says_yes() {
    let receiver = Receiver::default();
    let recv = receiver.start().await;
    // The change freeze says no twice at the start, then yes; the promotion desk says no once.
    receiver.fail("/freeze", &[403, 403]);
    receiver.fail("/final", &[409]);
    let s = start(None).await;
    let plan = format!(
        r#"name: confirmed
flag: f
analysis: {{ interval: 1m }}
phases: [ {{ percent: 10 }}, {{ percent: 100 }} ]
confirm:
  - {{ name: change-freeze, before: [start, increase], webhook: {{ url: "{recv}/freeze", body: '{{"flag": "{{{{flag}}}}", "percent": {{{{percent}}}}}}' }} }}
  - {{ name: release-desk, before: [promotion], webhook: {{ url: "{recv}/final" }} }}
"#
    );
    let id = s.start_plan(&plan).await;
    let st = s.status(&id).await;
    assert_eq!(st["status"]["state"], "pending", "{st}");
    assert!(st["waiting_for"].as_str().unwrap().contains("confirm `change-freeze`"), "{st}");
    assert!(st["waiting_for"].as_str().unwrap().contains("403"), "{st}");
    let memory = RunnerMemory::default();
    s.tick(&memory).await; // the second 403: still pending
    assert_eq!(s.status(&id).await["status"]["state"], "pending");
    s.tick(&memory).await; // yes: started at 10%
    let st = s.status(&id).await;
    assert_eq!((st["status"]["state"].as_str(), st["percent"].as_u64()), (Some("running"), Some(10)), "{st}");
    assert!(st.get("waiting_for").is_none(), "{st}");
    s.tick(&memory).await; // the increase asks the freeze again: yes → 100%
    let st = s.status(&id).await;
    assert_eq!(st["percent"], 100, "{st}");
    s.tick(&memory).await; // the final promotion: the desk says 409
    let st = s.status(&id).await;
    assert_eq!(st["status"]["state"], "running", "{st}");
    assert!(
        st["waiting_for"].as_str().unwrap().starts_with("the final promotion waits for confirm `release-desk`"),
        "{st}"
    );
    s.tick(&memory).await; // yes: completed
    assert_eq!(s.status(&id).await["status"]["state"], "completed");
    // Every question was a signed-or-not webhook call with a stable key per gate and step.
    let freeze = receiver.at("/freeze");
    assert_eq!(freeze.len(), 4, "three for the start, one for the increase");
    let body: Value = serde_json::from_slice(&freeze[0].body).unwrap();
    assert_eq!(body["flag"], "f");
    // Each ask is a new question: a receiver that replays a key's first answer must not say "no" forever.
    let keys: std::collections::BTreeSet<_> = freeze.iter().map(|r| r.headers["idempotency-key"].clone()).collect();
    assert_eq!(keys.len(), freeze.len());
    assert_eq!(receiver.at("/final").len(), 2);
    let (_, d) = s.call(Method::GET, &format!("/api/v1/rollouts/{id}/decisions?limit=100"), None).await;
    let refusals = d["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["check"] == "confirm:release-desk" && d["outcome"] == "clear")
        .count();
    assert_eq!(refusals, 1, "{d}");
}
