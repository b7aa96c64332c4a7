//! The server over real HTTP on loopback: OFREP statuses and codes, ETags, the change stream, the Unleash
//! client API, roles, and bad input that must be refused without writing anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sluice_server::{AppState, Options};
use sluice_store::{Role, SqliteStore, Store};

struct Server {
    url: String,
    admin: String,
    state: Arc<AppState>,
    http: Client,
    _dir: tempfile::TempDir,
}

async fn start(options: Options) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("sluice.db")).await.unwrap();
    let (_, admin) = store.create_token("test", "admin", Role::Admin).await.unwrap();
    let state = AppState::load(Arc::new(store), options).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = sluice_server::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { url: format!("http://{addr}"), admin, state, http: Client::new(), _dir: dir }
}

impl Server {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send(method, path, Some(&self.admin.clone()), body).await
    }

    async fn token(&self, name: &str, role: &str) -> String {
        let (s, v) =
            self.admin(reqwest::Method::POST, "/api/v1/tokens", Some(json!({"name": name, "role": role}))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    async fn ofrep(&self, token: &str, key: &str, context: Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::POST,
            &format!("/ofrep/v1/evaluate/flags/{key}"),
            Some(token),
            Some(json!({"context": context})),
        )
        .await
    }

    async fn audit_len(&self) -> usize {
        self.admin(reqwest::Method::GET, "/api/v1/audit?limit=1000", None).await.1["data"].as_array().unwrap().len()
    }
}

use reqwest::Method as M;

fn boolean_flag(key: &str, percent: u8) -> Value {
    json!({"key": key, "ramp": {"percent": percent}})
}

#[tokio::test]
async fn ofrep_answers_with_the_protocols_codes_and_statuses() {
    let s = start(Options::default()).await;
    let sdk = s.token("app", "sdk").await;
    s.admin(M::PUT, "/api/v1/flags/awf_bundle", Some(boolean_flag("awf_bundle", 25))).await;
    let modes = json!({"variants": [{"name": "off", "value": "off"}, {"name": "warn", "value": "warn"}, {"name": "enforce", "value": "enforce"}],
                       "ramp": {"base": "warn", "ramped": "enforce", "percent": 100}});
    s.admin(M::PUT, "/api/v1/flags/stage_validation", Some(modes)).await;

    let (st, v) = s.ofrep(&sdk, "stage_validation", json!({"targetingKey": "u1"})).await;
    assert_eq!(
        (st, &v["value"], &v["variant"], &v["reason"]),
        (StatusCode::OK, &json!("enforce"), &json!("enforce"), &json!("SPLIT"))
    );

    let (st, v) = s.ofrep(&sdk, "missing", json!({"targetingKey": "u1"})).await;
    assert_eq!((st, &v["errorCode"], &v["key"]), (StatusCode::NOT_FOUND, &json!("FLAG_NOT_FOUND"), &json!("missing")));

    let (st, v) = s.ofrep(&sdk, "awf_bundle", json!({})).await;
    assert_eq!((st, &v["errorCode"]), (StatusCode::BAD_REQUEST, &json!("TARGETING_KEY_MISSING")));

    let (st, v) = s.ofrep(&sdk, "awf_bundle", json!({"targetingKey": "u", "nested": {"a": 1}})).await;
    assert_eq!((st, &v["errorCode"]), (StatusCode::BAD_REQUEST, &json!("INVALID_CONTEXT")));

    let resp = s
        .http
        .post(format!("{}/ofrep/v1/evaluate/flags/awf_bundle", s.url))
        .bearer_auth(&sdk)
        .body("{\"context\":")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["errorCode"], "PARSE_ERROR");

    let (st, _) = s.ofrep("slc_wrong", "awf_bundle", json!({"targetingKey": "u"})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // A valid token of another role may not evaluate: 403, saying which token to use.
    let viewer = s.token("dashboard", "viewer").await;
    for token in [&s.admin, &viewer] {
        let (st, v) = s.ofrep(token, "awf_bundle", json!({"targetingKey": "u"})).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
        assert!(v["errorDetails"].as_str().unwrap().contains("--role sdk"), "{v}");
    }
    let (st, _) = s.send(M::GET, "/api/client/features", Some(&s.admin.clone()), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // OFREP's other way to send the key: `X-API-Key`.
    let resp = s
        .http
        .post(format!("{}/ofrep/v1/evaluate/flags/awf_bundle", s.url))
        .header("X-API-Key", &sdk)
        .json(&json!({"context": {"targetingKey": "u"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // The framework's own errors on OFREP paths come in OFREP's shape too.
    let (st, v) = s.send(M::GET, "/ofrep/v1/evaluate/flags/awf_bundle", Some(&sdk), None).await;
    assert_eq!((st, &v["errorCode"]), (StatusCode::METHOD_NOT_ALLOWED, &json!("GENERAL")), "{v}");
    let big = json!({"context": {"targetingKey": "u", "pad": "x".repeat(2 * 1024 * 1024)}});
    let (st, v) = s.send(M::POST, "/ofrep/v1/evaluate/flags/awf_bundle", Some(&sdk), Some(big)).await;
    assert_eq!((st, &v["errorCode"]), (StatusCode::PAYLOAD_TOO_LARGE, &json!("GENERAL")), "{v}");
    let (_, v) = s.send(M::GET, "/ofrep/v1/configuration", Some(&sdk), None).await;
    assert_eq!(v["capabilities"]["flagEvaluation"], json!({"unsupportedTypes": []}), "{v}");

    // The kill switch: DISABLED with the off value (clients need a value to return).
    s.admin(M::POST, "/api/v1/flags/stage_validation/disable", None).await;
    let (st, v) = s.ofrep(&sdk, "stage_validation", json!({"targetingKey": "u1"})).await;
    assert_eq!((st, &v["value"], &v["reason"]), (StatusCode::OK, &json!("off"), &json!("DISABLED")));
}

#[tokio::test]
async fn a_write_is_visible_to_the_next_evaluation_and_the_stream_follows() {
    let s = start(Options::default()).await;
    let sdk = s.token("app", "sdk").await;
    s.admin(M::PUT, "/api/v1/flags/f", Some(boolean_flag("f", 0))).await;

    // Bulk: ETag, then 304 while nothing changed.
    let bulk = |etag: Option<String>| {
        let mut req = s
            .http
            .post(format!("{}/ofrep/v1/evaluate/flags", s.url))
            .bearer_auth(&sdk)
            .json(&json!({"context": {"targetingKey": "u1"}}));
        if let Some(e) = etag {
            req = req.header("If-None-Match", e);
        }
        req.send()
    };
    let first = bulk(None).await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["flags"][0]["value"], false);
    assert_eq!(body["eventStreams"][0]["type"], "sse");
    assert_eq!(bulk(Some(etag.clone())).await.unwrap().status(), StatusCode::NOT_MODIFIED);

    // Listen to the OFREP event stream, then write.
    let mut events = s.http.get(format!("{}/ofrep/v1/events", s.url)).send().await.unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let (st, _) = s.admin(M::POST, "/api/v1/flags/f/ramp", Some(json!({"percent": 100}))).await;
    assert_eq!(st, StatusCode::OK);
    let (_, v) = s.ofrep(&sdk, "f", json!({"targetingKey": "u1"})).await;
    assert_eq!(v["value"], true, "the write is visible to the very next evaluation");
    let changed = bulk(Some(etag)).await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK, "a changed answer has a new ETag");

    let mut seen = String::new();
    while !seen.contains("refetchEvaluation") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), events.chunk())
            .await
            .expect("an event within 5s")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !seen.contains("event:") || seen.contains("event: message"),
        "OFREP providers only read unnamed events: {seen}"
    );
}

/// An override that expires changes answers with no write: listeners are told to refetch when it does.
#[tokio::test]
async fn an_expiring_override_tells_ofrep_listeners_to_refetch() {
    let s = start(Options::default()).await;
    tokio::spawn(sluice_server::announce_expiries(s.state.clone()));
    let sdk = s.token("app", "sdk").await;
    s.admin(M::PUT, "/api/v1/flags/f", Some(boolean_flag("f", 0))).await;
    // Far enough out that, on a loaded machine too, the stream below is open before it expires.
    let expires = chrono::Utc::now() + chrono::Duration::milliseconds(4000);
    let pin = json!({"field": "userId", "value": "u1", "action": "enable", "expires_at": expires.to_rfc3339()});
    let (st, v) = s.admin(M::POST, "/api/v1/flags/f/overrides", Some(pin)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(s.ofrep(&sdk, "f", json!({"targetingKey": "u1"})).await.1["value"], true);

    let mut events = s.http.get(format!("{}/ofrep/v1/events", s.url)).send().await.unwrap();
    let mut seen = String::new();
    while !seen.contains("refetchEvaluation") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), events.chunk())
            .await
            .expect("an event within 5s of the expiry, with no write")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(chrono::Utc::now() >= expires, "not before the expiry: {seen}");
    assert_eq!(s.ofrep(&sdk, "f", json!({"targetingKey": "u1"})).await.1["value"], false);
}

#[tokio::test]
async fn the_unleash_client_api_serves_features_with_etags_and_keeps_metrics() {
    let s = start(Options::default()).await;
    let sdk = s.token("app", "sdk").await;
    s.admin(M::PUT, "/api/v1/flags/f", Some(boolean_flag("f", 50))).await;
    // Unleash SDKs send the bare token.
    let get = |etag: Option<&str>| {
        let mut req = s.http.get(format!("{}/api/client/features", s.url)).header("Authorization", &sdk);
        if let Some(e) = etag {
            req = req.header("If-None-Match", e);
        }
        req.send()
    };
    let resp = get(None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let features: Value = resp.json().await.unwrap();
    assert_eq!(features["features"][0]["strategies"][0]["parameters"]["rollout"], "50");
    assert_eq!(get(Some(&etag)).await.unwrap().status(), StatusCode::NOT_MODIFIED);
    s.admin(M::POST, "/api/v1/flags/f/ramp", Some(json!({"percent": 60}))).await;
    assert_eq!(get(Some(&etag)).await.unwrap().status(), StatusCode::OK);

    let reg = json!({"appName": "checkout", "instanceId": "i-1", "strategies": [], "started": "2026-11-23T10:00:00Z", "interval": 15000});
    let (st, _) = s.send(M::POST, "/api/client/register", Some(&sdk), Some(reg)).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let metrics = json!({"appName": "checkout", "instanceId": "i-1", "bucket": {"start": "2026-11-23T10:00:00Z", "stop": "2026-11-23T10:01:00Z",
        "toggles": {"f": {"yes": 7, "no": 3, "variants": {"on": 7, "off": 3}}}}});
    for _ in 0..2 {
        let (st, _) = s.send(M::POST, "/api/client/metrics", Some(&sdk), Some(metrics.clone())).await;
        assert_eq!(st, StatusCode::ACCEPTED);
    }
    let (_, kept) = s.admin(M::GET, "/api/v1/client-metrics", None).await;
    let on = kept["data"].as_array().unwrap().iter().find(|r| r["flag"] == "f" && r["variant"] == "on").unwrap();
    assert_eq!(on["count"], 14);

    // Huge counts saturate rather than break the table; counts for flags Sluice lacks are not kept.
    let huge = json!({"bucket": {"toggles": {"f": {"yes": i64::MAX}, "typo_flag": {"yes": 1}}}});
    for _ in 0..2 {
        let (st, _) = s.send(M::POST, "/api/client/metrics", Some(&sdk), Some(huge.clone())).await;
        assert_eq!(st, StatusCode::ACCEPTED);
    }
    let (st, kept) = s.admin(M::GET, "/api/v1/client-metrics", None).await;
    assert_eq!(st, StatusCode::OK, "{kept}");
    let rows = kept["data"].as_array().unwrap();
    let yes = rows.iter().find(|r| r["flag"] == "f" && r["variant"] == "(enabled)").unwrap();
    assert_eq!(yes["count"], i64::MAX);
    assert!(!rows.iter().any(|r| r["flag"] == "typo_flag"), "{kept}");

    // A count no store column holds is refused, naming it (schemathesis found it taken as 202 and dropped).
    let beyond = json!({"bucket": {"toggles": {"f": {"yes": 1, "variants": {"on": 9_223_372_036_854_775_808u64}}}}});
    let (st, v) = s.send(M::POST, "/api/client/metrics", Some(&sdk), Some(beyond)).await;
    assert_eq!(
        (st, v["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("bucket.toggles.f.variants.on")),
        "{v}"
    );
    let (_, after) = s.admin(M::GET, "/api/v1/client-metrics", None).await;
    assert_eq!(after["data"], kept["data"], "nothing of the refused report was kept");
}

/// Variant names come from SDKs: only the flag's own variants and Unleash's `disabled` are kept, so the
/// table stays as small as the catalog. The rest are dropped and counted, and the report is still accepted
/// (a refused report is retried by the SDK forever).
#[tokio::test]
async fn client_metrics_keep_only_known_variants_and_count_the_rest() {
    let s = start(Options::default()).await;
    let sdk = s.token("app", "sdk").await;
    let modes = json!({"variants": [{"name": "off", "value": "off"}, {"name": "warn", "value": "warn"}, {"name": "enforce", "value": "enforce"}],
                       "ramp": {"base": "off", "ramped": "enforce"}});
    let (st, v) = s.admin(M::PUT, "/api/v1/flags/modes", Some(modes)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let dropped = |v: &Value| v["dropped"].as_u64();
    let before = dropped(&s.admin(M::GET, "/api/v1/client-metrics", None).await.1);

    let mut variants = serde_json::Map::new();
    for (name, n) in [("off", 1), ("warn", 2), ("enforce", 3), ("disabled", 4)] {
        variants.insert(name.into(), json!(n));
    }
    for i in 0..1000 {
        variants.insert(format!("invented-{i}"), json!(1));
    }
    variants.insert("x".repeat(10_000), json!(1));
    let report = json!({"appName": "checkout", "instanceId": "i-1",
        "bucket": {"start": "2026-11-23T10:00:00Z", "stop": "2026-11-23T10:01:00Z",
            "toggles": {"modes": {"yes": 10, "no": 0, "variants": variants}}}});
    let (st, v) = s.send(M::POST, "/api/client/metrics", Some(&sdk), Some(report)).await;
    assert!(st.is_success(), "{st}: {v}");

    let (st, kept) = s.admin(M::GET, "/api/v1/client-metrics", None).await;
    assert_eq!(st, StatusCode::OK, "{kept}");
    let rows: Vec<(&str, &str, u64)> = kept["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["flag"].as_str().unwrap(), r["variant"].as_str().unwrap(), r["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("modes", "(disabled)", 0),
            ("modes", "(enabled)", 10),
            ("modes", "disabled", 4),
            ("modes", "enforce", 3),
            ("modes", "off", 1),
            ("modes", "warn", 2),
        ]
    );
    // The counter is process-wide: other tests sharing this process may add to it, never subtract.
    let more = dropped(&kept).zip(before).map(|(after, before)| after - before);
    assert!(more.is_some_and(|n| n >= 1001), "1000 invented names and an over-long one were dropped: {kept}");
}

#[tokio::test]
async fn roles_limit_what_a_token_may_do_and_the_actor_is_the_token() {
    let s = start(Options::default()).await;
    let viewer = s.token("auditor", "viewer").await;
    let sdk = s.token("app", "sdk").await;
    let operator = s.token("deployer", "operator").await;

    let (st, v) = s.send(M::PUT, "/api/v1/flags/f", Some(&viewer), Some(boolean_flag("f", 5))).await;
    assert_eq!((st, &v["error"]), (StatusCode::FORBIDDEN, &json!("forbidden")));
    let (st, _) = s.send(M::GET, "/api/v1/flags", Some(&sdk), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "an sdk token only evaluates");
    let (st, _) = s.send(M::POST, "/api/v1/tokens", Some(&operator), Some(json!({"name": "x", "role": "admin"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "only admins make tokens");
    // Without a token, a rollout command says 401 whether or not the rollout exists: nothing leaks.
    let (st, _) = s.send(M::POST, "/api/v1/rollouts/no-such-rollout/pause", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s.send(M::GET, "/api/v1/flags", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    let (st, v) = s.send(M::PUT, "/api/v1/flags/f?reason=ticket-42", Some(&operator), Some(boolean_flag("f", 5))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, audit) = s.send(M::GET, "/api/v1/audit?entity=flag:f", Some(&viewer), None).await;
    let e = &audit["data"][0];
    assert_eq!(
        (&e["actor"], &e["action"], &e["reason"]),
        (&json!("deployer"), &json!("flag.create"), &json!("ticket-42"))
    );

    // Revoked means refused from the next request on.
    s.admin(M::DELETE, "/api/v1/tokens/deployer", None).await;
    let (st, _) = s.send(M::GET, "/api/v1/flags", Some(&operator), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_input_is_refused_precisely_and_writes_nothing() {
    let s = start(Options::default()).await;
    s.admin(M::PUT, "/api/v1/flags/f", Some(boolean_flag("f", 5))).await;
    let before = s.audit_len().await;
    let cases: Vec<(M, &str, Value, StatusCode, &str)> = vec![
        (
            M::PUT,
            "/api/v1/flags/g",
            json!({"ramp": {"percent": 150}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ramp.percent",
        ),
        (M::PUT, "/api/v1/flags/g", json!({"ramp": {"percent": -1}}), StatusCode::UNPROCESSABLE_ENTITY, "ramp.percent"),
        (
            M::PUT,
            "/api/v1/flags/g",
            json!({"ramp": {"segments": ["beta_testers"]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ramp.segments[0]",
        ),
        (
            M::PUT,
            "/api/v1/flags/g",
            json!({"ramp": {"constraints": [{"contextName": "x", "operator": "LIKE", "values": []}]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ramp.constraints[0].operator",
        ),
        (
            M::PUT,
            "/api/v1/flags/g",
            json!({"variants": [{"name": "a", "value": 1}, {"name": "b", "value": "x"}], "ramp": {"base": "a", "ramped": "b"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants[1].value",
        ),
        (
            M::PUT,
            "/api/v1/flags/g",
            // Compiles with the regex crate's defaults, but over the 1 MiB limit evaluation compiles with.
            json!({"ramp": {"constraints": [{"contextName": "x", "operator": "REGEX", "value": "a{1,20000}"}]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ramp.constraints[0].value",
        ),
        (
            M::POST,
            "/api/v1/flags/f/overrides",
            json!({"field": "userId", "value": "u", "action": "disable", "expires_at": "+10000-01-01T00:00:00Z"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "overrides[0].expires_at",
        ),
        (M::PUT, "/api/v1/flags/g", json!({"key": "other"}), StatusCode::UNPROCESSABLE_ENTITY, "key"),
        (M::PUT, "/api/v1/flags/g", json!({"rmap": {}}), StatusCode::UNPROCESSABLE_ENTITY, ""),
        (
            M::POST,
            "/api/v1/flags/f/overrides",
            json!({"field": "userId", "value": "u", "action": {"variant": "ghost"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "overrides[0].action",
        ),
        (
            M::POST,
            "/api/v1/flags/f/overrides",
            json!({"field": "userId", "value": "u", "action": "enable", "expires_in": "soon"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_in",
        ),
        (M::POST, "/api/v1/flags/nope/ramp", json!({"percent": 5}), StatusCode::NOT_FOUND, ""),
        (
            M::PUT,
            "/api/v1/segments/qa",
            json!({"constraints": [{"contextName": "v", "operator": "SEMVER_GT", "value": "v1"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "constraints[0].value",
        ),
    ];
    for (method, path, body, status, field) in cases {
        let (st, v) = s.admin(method, path, Some(body.clone())).await;
        assert_eq!(st, status, "{path} {body}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        if !field.is_empty() {
            assert_eq!(v["field"], field, "{path} {body}: {v}");
        }
    }
    // Not JSON, too large, wrong method: JSON errors too.
    let resp =
        s.http.put(format!("{}/api/v1/flags/g", s.url)).bearer_auth(&s.admin).body("{nope").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "bad_request");
    let big = "x".repeat(sluice_server::MAX_BODY_BYTES + 1);
    let resp = s.http.put(format!("{}/api/v1/flags/g", s.url)).bearer_auth(&s.admin).body(big).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "too_large");
    let resp = s.http.patch(format!("{}/api/v1/flags/g", s.url)).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "method_not_allowed");

    assert_eq!(s.audit_len().await, before, "nothing was written");
    assert_eq!(s.state.live_in(None).unwrap().live().load().len(), 1);
}

#[tokio::test]
async fn imports_are_all_or_nothing() {
    let s = start(Options::default()).await;
    let good = json!({"version": 2, "segments": [{"id": 7, "name": "beta_testers", "constraints": [{"contextName": "tier", "operator": "IN", "values": ["beta"]}]}],
        "features": [
            {"name": "a", "enabled": true, "strategies": [{"name": "flexibleRollout", "parameters": {"rollout": "10", "stickiness": "default", "groupId": "a"}, "segments": [7]}]},
            {"name": "b", "enabled": false, "strategies": []}]});
    let (st, v) = s.admin(M::POST, "/api/v1/import/unleash", Some(good)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["audit"].as_array().unwrap().len(), 3);
    let before = s.audit_len().await;

    let bad = json!({"version": 2, "features": [
        {"name": "c", "enabled": true, "strategies": []},
        {"name": "d", "enabled": true, "strategies": [{"name": "remoteAddress", "parameters": {"IPs": "10.0.0.1"}}]}]});
    let (st, v) = s.admin(M::POST, "/api/v1/import/unleash", Some(bad)).await;
    assert_eq!((st, &v["field"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("strategies[0].name")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("flag `d`"), "{v}");

    let file = json!({"flags": [{"key": "e"}, {"key": "f", "ramp": {"ramped": "missing"}}]});
    let (st, v) = s.admin(M::POST, "/api/v1/import/flags", Some(file)).await;
    assert_eq!((st, &v["field"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("ramp.ramped")), "{v}");
    // Two Unleash segments with one name would merge; a name the API would refuse is refused here too.
    let twins = json!({"version": 2, "segments": [
            {"id": 1, "name": "qa", "constraints": [{"contextName": "tier", "operator": "IN", "values": ["qa"]}]},
            {"id": 2, "name": "qa", "constraints": [{"contextName": "tier", "operator": "IN", "values": ["beta"]}]}],
        "features": [{"name": "g", "enabled": true, "strategies": [{"name": "default", "segments": [1]}]}]});
    let (st, v) = s.admin(M::POST, "/api/v1/import/unleash", Some(twins)).await;
    assert_eq!((st, &v["field"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("segments[1].name")), "{v}");
    let file = json!({"segments": [{"id": 0, "name": "no spaces", "constraints": []}], "flags": []});
    let (st, v) = s.admin(M::POST, "/api/v1/import/flags", Some(file)).await;
    assert_eq!((st, &v["field"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("segments[0].name")), "{v}");
    assert_eq!(s.audit_len().await, before, "nothing of a failed import is written");
    assert_eq!(s.state.live_in(None).unwrap().live().load().keys().collect::<Vec<_>>(), vec!["a", "b"]);

    // Query parameters and token names are refused like any bad input: 422 naming the field.
    let (st, v) = s.admin(M::GET, "/api/v1/audit?limit=abc", None).await;
    assert_eq!((st, &v["field"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("limit")), "{v}");
    let (st, v) = s.admin(M::POST, "/api/v1/tokens", Some(json!({"name": "has space", "role": "sdk"}))).await;
    assert_eq!((st, &v["field"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("name")), "{v}");
}

#[tokio::test]
async fn rate_limited_evaluation_says_when_to_retry() {
    let s = start(Options { evaluation_rate_limit: Some(5), ..Options::default() }).await;
    let sdk = s.token("app", "sdk").await;
    s.admin(M::PUT, "/api/v1/flags/f", Some(boolean_flag("f", 100))).await;
    let mut limited = None;
    for _ in 0..20 {
        let resp = s
            .http
            .post(format!("{}/ofrep/v1/evaluate/flags/f", s.url))
            .bearer_auth(&sdk)
            .json(&json!({"context": {"targetingKey": "u"}}))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(resp.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap());
            break;
        }
    }
    assert!(
        limited.is_some_and(|secs| secs >= 1),
        "20 requests at 5/s must be limited with Retry-After in whole seconds"
    );
}

#[tokio::test]
async fn anonymous_evaluation_only_when_asked_for() {
    let closed = start(Options::default()).await;
    closed.admin(M::PUT, "/api/v1/flags/f", Some(boolean_flag("f", 100))).await;
    let (st, _) =
        closed.send(M::POST, "/ofrep/v1/evaluate/flags/f", None, Some(json!({"context": {"targetingKey": "u"}}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    let open = start(Options { anonymous_evaluation: true, ..Options::default() }).await;
    open.admin(M::PUT, "/api/v1/flags/f", Some(boolean_flag("f", 100))).await;
    let (st, v) =
        open.send(M::POST, "/ofrep/v1/evaluate/flags/f", None, Some(json!({"context": {"targetingKey": "u"}}))).await;
    assert_eq!((st, &v["value"]), (StatusCode::OK, &json!(true)));
    let (st, _) = open.send(M::GET, "/api/v1/flags", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "the admin API always needs a token");
}
