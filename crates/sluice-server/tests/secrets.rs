//! A plan's secrets reach the program that needs them and nothing else: planted in the environment and in
//! the secrets directory, then searched for in every answer, the audit log, the decisions, the change
//! stream, the logs and the database files.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::json;
use sluice_server::RunnerMemory;
use support::server::Server;

const FROM_ENV: &str = "pl4nted-env-s3cret-7f3a";
const FROM_FILE: &str = "pl4nted-file-s3cret-91c2";
/// In the server's environment, named by no plan: programs must not see them.
const ADMIN_TOKEN: &str = "slc_server-admin-token-never-shown-0123456789";
const UNNAMED: &str = "unnamed-s3cret-of-another-plan";

/// The log, as `sluice serve` would write it.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_secret_is_never_echoed() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt().with_writer(move || writer.clone()).with_max_level(tracing::Level::TRACE).init();
    // SAFETY of the test: nextest runs each test in its own process, and nothing else reads the variable.
    std::env::set_var("SLUICE_SECRET_PLANTED", FROM_ENV);
    std::env::set_var("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN);
    std::env::set_var("SLUICE_SECRET_UNNAMED", UNNAMED);
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("db-password"), format!("{FROM_FILE}\n")).unwrap();
    let received = dir.path().join("received");
    // A receiver that answers 500 with every header and the body it got: what a careless endpoint might
    // echo into an error. The path of its URL is a secret too (as a chat webhook's is).
    let echo = axum::Router::new().fallback(|headers: axum::http::HeaderMap, body: String| async move {
        let said: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or(""))).collect();
        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("{}\n{body}", said.join("\n")))
    });
    let echo_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook-path-s3cret-88aa", echo_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(echo_listener, echo).await.unwrap() });
    std::env::set_var("SLUICE_SECRET_HOOK_URL", &hook_url);

    let config = sluice_sources::Config {
        secrets_dir: Some(secrets.clone()),
        retry_backoff: Some(std::time::Duration::from_millis(10)),
        ..Default::default()
    };
    let s = Server::start(1_000_000, config).await;
    let (state, clock, url, http, admin) = (&s.state, &s.clock, &s.url, &s.http, &s.admin);
    let call = |method: Method, path: &str, body: Option<serde_json::Value>| {
        let mut req = http.request(method, format!("{url}{path}")).bearer_auth(admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move { req.send().await.unwrap().text().await.unwrap() }
    };

    // The change stream, read from the start.
    let (into, mut stream_text) = tokio::sync::watch::channel(String::new());
    let mut stream = http.get(format!("{url}/api/v1/stream")).bearer_auth(admin).send().await.unwrap();
    tokio::spawn(async move {
        while let Ok(Some(chunk)) = stream.chunk().await {
            into.send_modify(|text| text.push_str(&String::from_utf8_lossy(&chunk)));
        }
    });

    call(Method::PUT, "/api/v1/flags/f", Some(json!({"ramp": {"percent": 0}}))).await;
    let env = r#"{ TOKEN: { secret_env: SLUICE_SECRET_PLANTED }, DB: { secret_file: db-password } }"#;
    let plan = format!(
        r#"name: secretive
flag: f
analysis: {{ interval: 1m }}
phases:
  - {{ percent: 10, hold: 1m }}
  - percent: 50
    hooks:
      before:
        - name: deploy
          exec: [sh, -c, 'echo "$TOKEN $DB" > {received}; echo "using $TOKEN"; echo "denied for $TOKEN / $DB" >&2; env >&2; exit 3']
          env: {env}
triggers:
  - {{ name: probe, command: [sh, -c, 'echo "probe $TOKEN $DB"; echo 0'], value_from: last_number, above: 1, severity: hard, env: {env} }}
rollback:
  actions:
    - name: page
      webhook:
        url_env: SLUICE_SECRET_HOOK_URL
        secret: {{ secret_env: SLUICE_SECRET_PLANTED }}
        headers: {{ Authorization: {{ secret_file: db-password }}, X-Token: {{ secret_env: SLUICE_SECRET_PLANTED }} }}
        retries: 1
notify:
  - webhook: {{ url_env: SLUICE_SECRET_HOOK_URL, secret: {{ secret_env: SLUICE_SECRET_PLANTED }} }}
  - slack: {{ url_env: SLUICE_SECRET_HOOK_URL }}
"#,
        received = received.display()
    );
    let started = call(Method::POST, "/api/v1/rollouts", Some(json!({"plan": plan}))).await;
    let id = serde_json::from_str::<serde_json::Value>(&started).unwrap()["data"]["id"].as_str().unwrap().to_string();
    let memory = RunnerMemory::default();
    for _ in 0..3 {
        clock.advance_ms(60_000);
        state.controller().run_due(&memory).await.unwrap();
    }
    // A rollback runs the webhook, which fails echoing what it was sent; the notifiers fail the same way.
    let rolled = call(Method::POST, &format!("/api/v1/rollouts/{id}/rollback"), Some(json!({"reason": "test"}))).await;
    assert!(rolled.contains("rolled_back"), "{rolled}");
    // Each failed delivery waits its backoff: one pass tries every notification once.
    state.controller().deliver_due().await;
    let audit = call(Method::GET, "/api/v1/audit?limit=1000", None).await;
    assert!(audit.contains("rollout.notification") && audit.contains("500 Internal Server Error"), "{audit}");
    assert!(
        audit.contains("\"page\"") && audit.contains("[secret]"),
        "the webhook's failure is kept, redacted: {audit}"
    );

    // The hook got both secrets, and failed saying them.
    assert_eq!(std::fs::read_to_string(&received).unwrap().trim(), format!("{FROM_ENV} {FROM_FILE}"));
    let status = call(Method::GET, &format!("/api/v1/rollouts/{id}"), None).await;
    assert!(status.contains("deploy") || status.contains("hooks.before[0] failed"), "{status}");
    assert!(status.contains("[secret]"), "the failure's detail is kept, redacted: {status}");

    let mut seen = vec![
        ("the rollout's status", status),
        ("the rollouts list", call(Method::GET, "/api/v1/rollouts", None).await),
        ("the decisions", call(Method::GET, &format!("/api/v1/rollouts/{id}/decisions"), None).await),
        ("the audit log", call(Method::GET, "/api/v1/audit?limit=1000", None).await),
        ("the audit chain", call(Method::GET, "/api/v1/audit/chain", None).await),
        ("the flags", call(Method::GET, "/api/v1/flags", None).await),
    ];
    // Only a stream that carried the rollout's events can show that they hold no secret.
    let carried = stream_text.wait_for(|text| text.contains(id.as_str()));
    let carried = tokio::time::timeout(std::time::Duration::from_secs(10), carried).await;
    let streamed = carried.expect("the change stream never carried the rollout").unwrap().clone();
    seen.push(("the change stream", streamed));
    seen.push(("the logs", String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string()));
    assert!(seen.last().unwrap().1.contains("secretive"), "the logs were captured");
    let before = seen.len();
    for file in std::fs::read_dir(s.dir.path()).unwrap() {
        let path = file.unwrap().path();
        if path.to_string_lossy().contains("sluice.db") {
            seen.push(("a database file", String::from_utf8_lossy(&std::fs::read(&path).unwrap()).to_string()));
        }
    }
    assert!(seen.len() > before, "the database's files were read");
    for (place, text) in &seen {
        for secret in [FROM_ENV, FROM_FILE, ADMIN_TOKEN, UNNAMED, hook_url.as_str(), "hook-path-s3cret-88aa"] {
            assert!(!text.contains(secret), "{place} shows a secret: {text}");
        }
    }
}
