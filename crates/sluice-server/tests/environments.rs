//! Environments over real HTTP on loopback: one server, a flag's definition shared and its state per
//! environment; the token picks the environment for OFREP, the Unleash client API and the change stream;
//! tokens limited to some environments are refused elsewhere (and the refusal audited); environments are
//! created, renamed and deleted with their rules.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use sluice_server::{AppState, Options};
use sluice_store::{Role, SqliteStore, Store};

struct Server {
    url: String,
    admin: String,
    store: Arc<dyn Store>,
    http: Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("sluice.db")).await.unwrap());
    let (_, admin) = store.create_token("test", "admin", Role::Admin).await.unwrap();
    let state = AppState::load(store.clone(), Options::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(sluice_server::serving::serve(listener, state, std::future::pending()));
    Server { url: format!("http://{addr}"), admin, store, http: Client::new(), _dir: dir }
}

impl Server {
    async fn send(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send(method, path, &self.admin, body).await
    }

    async fn token(&self, name: &str, role: &str, envs: Option<&[&str]>) -> String {
        let mut body = json!({"name": name, "role": role});
        if let Some(envs) = envs {
            body["envs"] = json!(envs);
        }
        let (status, answer) = self.admin(Method::POST, "/api/v1/tokens", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer["token"].as_str().unwrap().to_string()
    }

    async fn ofrep(&self, token: &str, key: &str, user: &str) -> Value {
        let body = json!({"context": {"targetingKey": user}});
        let (status, answer) =
            self.send(Method::POST, &format!("/ofrep/v1/evaluate/flags/{key}"), token, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["value"].clone()
    }
}

/// Opens `/ofrep/v1/events` with `token` and returns a receiver of its `data:` lines.
async fn listen(s: &Server, token: &str) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let mut response = s.http.get(format!("{}/ofrep/v1/events", s.url)).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                for data in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                    let _ = tx.send(data.trim().to_string());
                }
            }
        }
    });
    rx
}

#[tokio::test]
async fn each_environment_answers_its_own_clients_and_a_staging_change_never_wakes_production() {
    let s = start().await;
    // A store from before holds one environment, `production`; every call works without naming it.
    let (status, flag) =
        s.admin(Method::PUT, "/api/v1/flags/checkout", Some(json!({"enabled": true, "ramp": {"percent": 100}}))).await;
    assert_eq!(status, StatusCode::CREATED, "{flag}");
    let (status, created) = s.admin(Method::POST, "/api/v1/environments", Some(json!({"name": "staging"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["data"]["enabled"], 0, "a new environment starts with every flag off: {created}");

    // Two environments now: a call that names none is refused with the choices, not guessed.
    let (status, refused) = s.admin(Method::GET, "/api/v1/flags", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("production, staging"), "{refused}");

    // The definition is shared (staging has the flag), its state is not (disabled there).
    let (_, staged) = s.admin(Method::GET, "/api/v1/flags/checkout?env=staging", None).await;
    assert_eq!(
        (staged["data"]["enabled"].clone(), staged["data"]["ramp"]["percent"].clone()),
        (json!(false), json!(0))
    );

    let prod = s.token("prod-app", "sdk", Some(&["production"])).await;
    let staging = s.token("staging-app", "sdk", Some(&["staging"])).await;
    // An sdk token belongs to exactly one environment, which must exist.
    let (status, _) = s
        .admin(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "x", "role": "sdk", "envs": ["staging", "production"]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = s.admin(Method::POST, "/api/v1/tokens", Some(json!({"name": "y", "role": "sdk"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "two environments: an sdk token must name one");

    assert_eq!(s.ofrep(&prod, "checkout", "u1").await, json!(true));
    assert_eq!(s.ofrep(&staging, "checkout", "u1").await, json!(false));

    // The Unleash client API per token: different documents, different ETags.
    let features = |token: &str| {
        let request = s.http.get(format!("{}/api/client/features", s.url)).header("authorization", token.to_string());
        async move {
            let r = request.send().await.unwrap();
            let etag = r.headers()["etag"].to_str().unwrap().to_string();
            (etag, r.json::<Value>().await.unwrap())
        }
    };
    let (prod_etag, prod_doc) = features(&prod).await;
    let (staging_etag, staging_doc) = features(&staging).await;
    assert_ne!(prod_etag, staging_etag);
    assert_eq!(prod_doc["features"][0]["enabled"], true);
    assert_eq!(staging_doc["features"][0]["enabled"], false);

    // Change streams: a staging change reaches the staging client and not the production one.
    let mut prod_events = listen(&s, &prod).await;
    let mut staging_events = listen(&s, &staging).await;
    let (status, _) = s.admin(Method::POST, "/api/v1/flags/checkout/enable?env=staging", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        s.admin(Method::POST, "/api/v1/flags/checkout/ramp?env=staging", Some(json!({"percent": 100}))).await;
    assert_eq!(status, StatusCode::OK);
    let woke = tokio::time::timeout(Duration::from_secs(5), staging_events.recv()).await.unwrap().unwrap();
    assert!(woke.contains("refetchEvaluation"), "{woke}");
    assert!(
        tokio::time::timeout(Duration::from_millis(700), prod_events.recv()).await.is_err(),
        "a staging change woke a production client"
    );
    assert_eq!(s.ofrep(&staging, "checkout", "u1").await, json!(true));
    assert_eq!(features(&prod).await.0, prod_etag, "production's ETag moved with a staging change");
    // …and a production change reaches production.
    let (status, _) = s.admin(Method::POST, "/api/v1/flags/checkout/disable?env=production", None).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(5), prod_events.recv()).await.unwrap().unwrap();
    assert_eq!(s.ofrep(&prod, "checkout", "u1").await, json!(false));

    // Built-in metrics: a staging app's outcomes count for staging only.
    let batch =
        json!({"observations": [{"flag": "checkout", "variant": "on", "reason": "SPLIT", "key": "u1", "ok": false}]});
    let (status, answer) = s.send(Method::POST, "/api/v1/metrics", &staging, Some(batch)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let exposition =
        s.http.get(format!("{}/metrics", s.url)).bearer_auth(&s.admin).send().await.unwrap().text().await.unwrap();
    assert!(
        exposition.contains("sluice_builtin_observations_total{env=\"staging\",flag=\"checkout\"} 1\n"),
        "{exposition}"
    );
    assert!(
        exposition.contains("sluice_builtin_observations_total{env=\"production\",flag=\"checkout\"} 0\n"),
        "{exposition}"
    );

    // A definition change (a new variant) reaches every environment; state stays apart.
    let (status, body) = s
        .admin(
            Method::PUT,
            "/api/v1/flags/checkout?env=staging",
            Some(json!({"enabled": true, "description": "new checkout", "ramp": {"percent": 100}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, in_prod) = s.admin(Method::GET, "/api/v1/flags/checkout?env=production", None).await;
    assert_eq!(
        (in_prod["data"]["description"].clone(), in_prod["data"]["enabled"].clone()),
        (json!("new checkout"), json!(false))
    );

    // Every write names its environment inside the hashed record, and the one chain verifies.
    let (_, audit) = s.admin(Method::GET, "/api/v1/audit?action=flag.&limit=10", None).await;
    let envs: Vec<&str> = audit["data"].as_array().unwrap().iter().filter_map(|e| e["env"].as_str()).collect();
    assert!(envs.contains(&"staging") && envs.contains(&"production"), "{audit}");
    let (_, verified) = s.admin(Method::GET, "/api/v1/audit/verify", None).await;
    assert_eq!(verified["data"]["status"], "intact", "{verified}");
}

#[tokio::test]
async fn a_token_limited_to_staging_cannot_touch_production_and_the_refusal_is_audited() {
    let s = start().await;
    let (status, _) = s.admin(Method::PUT, "/api/v1/flags/search", Some(json!({"enabled": false}))).await;
    assert_eq!(status, StatusCode::CREATED);
    s.admin(Method::POST, "/api/v1/environments", Some(json!({"name": "staging"}))).await;
    let operator = s.token("staging-operator", "operator", Some(&["staging"])).await;

    // Its own environment needs no name: the token is limited to one.
    let (status, answer) = s.send(Method::POST, "/api/v1/flags/search/enable", &operator, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = s.send(Method::POST, "/api/v1/flags/search/enable?env=production", &operator, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"], "forbidden_environment");
    let (_, in_prod) = s.admin(Method::GET, "/api/v1/flags/search?env=production", None).await;
    assert_eq!(in_prod["data"]["enabled"], false, "the refused change was not made");
    let refusals = s
        .store
        .audit(&sluice_store::AuditFilter { action_prefix: Some("access.refused".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(refusals.len(), 1);
    assert_eq!((refusals[0].actor.as_str(), refusals[0].entity.as_str()), ("staging-operator", "env:production"));

    // What every environment shares is out of its reach: a segment, a flag's removal, a wider token.
    let (status, _) = s.send(Method::PUT, "/api/v1/segments/qa", &operator, Some(json!({"constraints": []}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s.send(Method::DELETE, "/api/v1/flags/search", &operator, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // It sees only its environment in the list.
    let (_, envs) = s.send(Method::GET, "/api/v1/environments", &operator, None).await;
    assert_eq!(envs["data"].as_array().unwrap().len(), 1, "{envs}");

    // Production's rollout is out of its sight and out of its hands.
    let plan = "name: search-ramp\nflag: search\nphases: [ { percent: 10, hold: 1h }, { percent: 100 } ]\n";
    s.admin(Method::POST, "/api/v1/flags/search/enable?env=production", None).await;
    let (status, started) = s.admin(Method::POST, "/api/v1/rollouts?env=production", Some(json!({"plan": plan}))).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let id = started["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(started["data"]["env"], "production");
    let (_, listed) = s.send(Method::GET, "/api/v1/rollouts", &operator, None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 0, "{listed}");
    let (status, _) = s.send(Method::GET, &format!("/api/v1/rollouts/{id}"), &operator, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s
        .send(Method::POST, &format!("/api/v1/rollouts/{id}/rollback"), &operator, Some(json!({"reason": "mine?"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, state) = s.admin(Method::GET, &format!("/api/v1/rollouts/{id}"), None).await;
    assert_eq!(state["data"]["status"]["state"], "running", "{state}");
    // Nor may a change made in staging alter the variants production's rollout ramps (the definition is
    // shared), while staging's own ramp stays its to change.
    let two = json!({"enabled": true, "variants": [{"name": "off", "value": false}, {"name": "on", "value": true}, {"name": "x", "value": true}]});
    let (status, refused) = s.send(Method::PUT, "/api/v1/flags/search", &operator, Some(two)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("in environment `production`"), "{refused}");
    let (status, _) = s.send(Method::POST, "/api/v1/flags/search/ramp", &operator, Some(json!({"percent": 30}))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn environments_are_renamed_with_their_tokens_and_deleted_only_when_nothing_lives_in_them() {
    let s = start().await;
    s.admin(Method::PUT, "/api/v1/flags/f", Some(json!({"enabled": true, "ramp": {"percent": 100}}))).await;
    s.admin(Method::POST, "/api/v1/environments", Some(json!({"name": "preprod"}))).await;
    let (status, bad) = s.admin(Method::POST, "/api/v1/environments", Some(json!({"name": "pre prod"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (status, _) = s.admin(Method::POST, "/api/v1/environments", Some(json!({"name": "preprod"}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let app = s.token("preprod-app", "sdk", Some(&["preprod"])).await;
    s.admin(Method::POST, "/api/v1/flags/f/enable?env=preprod", None).await;
    s.admin(Method::POST, "/api/v1/flags/f/ramp?env=preprod", Some(json!({"percent": 100}))).await;

    // Renamed: the token follows, and keeps answering.
    let (status, renamed) =
        s.admin(Method::POST, "/api/v1/environments/preprod/rename", Some(json!({"to": "staging"}))).await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(s.ofrep(&app, "f", "u").await, json!(true));
    let (_, tokens) = s.admin(Method::GET, "/api/v1/tokens", None).await;
    let mine = tokens["data"].as_array().unwrap().iter().find(|t| t["name"] == "preprod-app").unwrap().clone();
    assert_eq!(mine["envs"], json!(["staging"]));

    // Deleting: refused while a flag is enabled in it, then while a token belongs to it alone.
    let (status, refused) = s.admin(Method::DELETE, "/api/v1/environments/staging", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(refused["message"].as_str().unwrap().contains("enabled"), "{refused}");
    s.admin(Method::POST, "/api/v1/flags/f/disable?env=staging", None).await;
    let (status, refused) = s.admin(Method::DELETE, "/api/v1/environments/staging", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(refused["message"].as_str().unwrap().contains("preprod-app"), "{refused}");
    s.admin(Method::DELETE, "/api/v1/tokens/preprod-app", None).await;
    s.token("both", "operator", Some(&["staging", "production"])).await;
    let (status, deleted) = s.admin(Method::DELETE, "/api/v1/environments/staging", None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let (_, tokens) = s.admin(Method::GET, "/api/v1/tokens", None).await;
    let both = tokens["data"].as_array().unwrap().iter().find(|t| t["name"] == "both").unwrap().clone();
    assert_eq!(both["envs"], json!(["production"]), "a deleted environment leaves the tokens' lists");
    // The last one cannot go; with one left, calls need no name again.
    let (status, _) = s.admin(Method::DELETE, "/api/v1/environments/production", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, flags) = s.admin(Method::GET, "/api/v1/flags", None).await;
    assert_eq!((status, flags["env"].clone()), (StatusCode::OK, json!("production")));
    let (_, verified) = s.admin(Method::GET, "/api/v1/audit/verify", None).await;
    assert_eq!(verified["data"]["status"], "intact");
}

/// The `{{env}}` each check was measured with.
#[derive(Default)]
struct Recorded {
    envs: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl sluice_sources::Plugins for Recorded {
    async fn measure(
        &self,
        _: &sluice_plan::model::Check,
        cx: &sluice_sources::MeasureContext<'_>,
    ) -> sluice_engine::Measurement {
        // What a Prometheus query of the plan reads as `{{env}}`.
        let query = sluice_plan::render(r#"errors_total{env="{{env}}"}"#, cx.values);
        self.envs.lock().unwrap().push(query);
        sluice_engine::Measurement::Value(0.0)
    }

    async fn run(
        &self,
        _: &sluice_plan::model::Action,
        _: &sluice_sources::ActionContext<'_>,
    ) -> sluice_sources::ActionOutcome {
        sluice_sources::ActionOutcome::done("")
    }
}

#[tokio::test]
async fn a_rollout_runs_in_one_environment_and_its_queries_get_env() {
    use sluice_engine::{Clock, VirtualClock};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).await.unwrap());
    store.apply("alice", sluice_store::Change::PutFlag(sluice_flags::Flag::boolean("f")), None).await.unwrap();
    store.change_env("alice", sluice_store::EnvChange::Create("staging".into()), None).await.unwrap();
    let clock = Arc::new(VirtualClock::default());
    let recorded = Arc::new(Recorded::default());
    let seams = sluice_server::Seams {
        clock: clock.clone() as Arc<dyn Clock>,
        plugins: recorded.clone(),
        faults: None,
        fence: None,
    };
    let state = AppState::load_with(store.clone() as Arc<dyn Store>, Options::default(), seams).await.unwrap();
    let who = sluice_store::Principal::new("oncall", Role::Operator);
    let plan = r#"
name: canary
flag: f
analysis: { interval: 1m, prometheus: { url: "http://127.0.0.1:9" } }
phases: [ { percent: 20, hold: 5m }, { percent: 100 } ]
gates:
  - { name: errors, query: 'sum(rate(errors_total{env="{{env}}"}[5m]))', below: 0.1 }
"#;
    let staging = state.controller().start(&who, Some("staging"), "p.yaml", plan).await.unwrap();
    assert_eq!(staging.env, "staging");
    // One active rollout per flag and environment: production's may run beside staging's.
    let production = state.controller().start(&who, Some("production"), "p.yaml", plan).await.unwrap();
    assert_eq!(production.env, "production");
    let refused = state.controller().start(&who, Some("staging"), "p.yaml", plan).await.unwrap_err();
    assert!(refused.to_string().contains("already has an active rollout"), "{refused}");
    // A staging operator cannot start one in production.
    let mut limited = sluice_store::Principal::new("staging-oncall", Role::Operator);
    limited.envs = Some(vec!["staging".into()]);
    assert!(state.controller().start(&limited, Some("production"), "p.yaml", plan).await.is_err());

    let memory = Arc::new(sluice_server::RunnerMemory::default());
    clock.advance_ms(60_000);
    state.controller().run_due(&memory).await.unwrap();
    let asked = recorded.envs.lock().unwrap().clone();
    assert!(asked.iter().any(|q| q.contains(r#"env="staging""#)), "{asked:?}");
    assert!(asked.iter().any(|q| q.contains(r#"env="production""#)), "{asked:?}");
    // Each rollout set its own environment's flag.
    for (env, id) in [("staging", &staging.id), ("production", &production.id)] {
        let live = state.live_in(Some(env)).unwrap();
        assert_eq!(live.live().load().flags()[0].ramp.percent, 20, "{env}");
        let events = store
            .audit(&sluice_store::AuditFilter { entity: Some(format!("rollout:{id}")), ..Default::default() })
            .await
            .unwrap();
        assert!(events.iter().all(|e| e.env.as_deref() == Some(env)), "{events:?}");
    }
}
