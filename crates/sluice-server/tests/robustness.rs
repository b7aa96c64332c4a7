//! No input crashes the server or gets a 5xx: random bytes, random JSON, and valid bodies with one field
//! mutated, sent to every write and evaluation endpoint. Deterministic (seeded) so a failure reproduces.

mod support;

use std::sync::Arc;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use sluice_server::{AppState, Options};
use sluice_store::{Role, SqliteStore, Store, Verification};

#[tokio::test]
async fn no_request_gets_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("sluice.db")).await.unwrap();
    let (_, admin) = store.create_token("test", "admin", Role::Admin).await.unwrap();
    // Evaluation takes an sdk token; the admin API an admin one.
    let (_, sdk) = store.create_token("test", "app", Role::Sdk).await.unwrap();
    let token_for = |path: &str| if path.starts_with("/api/v1/") { admin.clone() } else { sdk.clone() };
    let store = Arc::new(store);
    let state = AppState::load(store.clone(), Options::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, sluice_server::router(state)).await.unwrap() });
    let http = Client::new();
    let valid_flag = json!({"key": "f", "variants": [{"name": "off", "value": false}, {"name": "on", "value": true}],
        "ramp": {"base": "off", "ramped": "on", "percent": 5, "stickiness": "default", "segments": [], "constraints": [
            {"contextName": "email", "operator": "STR_ENDS_WITH", "values": ["@x.io"]}]},
        "overrides": [{"field": "userId", "value": "u", "action": "enable", "expires_at": "2030-01-01T00:00:00Z"}]});
    let res = http.put(format!("{url}/api/v1/flags/f")).bearer_auth(&admin).json(&valid_flag).send().await.unwrap();
    assert!(res.status().is_success());

    let valid: Vec<(Method, &str, Value)> = vec![
        (Method::PUT, "/api/v1/flags/f", valid_flag.clone()),
        (Method::PUT, "/api/v1/flags/g%20h", valid_flag.clone()),
        (Method::POST, "/api/v1/flags/f/ramp", json!({"percent": 10, "stickiness": "tenant"})),
        (
            Method::POST,
            "/api/v1/flags/f/overrides",
            json!({"field": "userId", "value": "u2", "action": {"variant": "on"}, "expires_in": "2h"}),
        ),
        (
            Method::PUT,
            "/api/v1/segments/qa",
            json!({"constraints": [{"contextName": "v", "operator": "SEMVER_GT", "value": "1.2.3"}]}),
        ),
        (
            Method::POST,
            "/api/v1/import/unleash",
            json!({"version": 2, "features": [{"name": "x", "enabled": true, "strategies": [{"name": "default"}]}]}),
        ),
        (Method::POST, "/api/v1/import/flags", json!({"flags": [valid_flag.clone()]})),
        (Method::POST, "/api/v1/tokens", json!({"name": "t", "role": "viewer"})),
        (Method::POST, "/ofrep/v1/evaluate/flags/f", json!({"context": {"targetingKey": "u", "email": "a@x.io"}})),
        (Method::POST, "/ofrep/v1/evaluate/flags", json!({"context": {"targetingKey": "u"}})),
        (Method::POST, "/api/client/register", json!({"appName": "a", "instanceId": "i"})),
        (
            Method::POST,
            "/api/client/metrics",
            json!({"bucket": {"toggles": {"f": {"yes": 1, "no": 2, "variants": {"on": 1}}}}}),
        ),
    ];
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut statuses = std::collections::BTreeMap::new();
    for round in 0..250 {
        for (method, path, body) in &valid {
            let body = match round % 3 {
                0 => support::mutate(&mut rng, body.clone()).to_string().into_bytes(),
                1 => support::random_json(&mut rng, 4).to_string().into_bytes(),
                _ => (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect(),
            };
            let resp = http
                .request(method.clone(), format!("{url}{path}"))
                .bearer_auth(token_for(path))
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = resp.status();
            assert!(
                !status.is_server_error(),
                "{method} {path} with {:?} → {status}: {}",
                String::from_utf8_lossy(&body),
                resp.text().await.unwrap()
            );
            *statuses.entry(status.as_u16()).or_insert(0) += 1;
        }
    }
    // Queries and paths too.
    for q in [
        "/api/v1/audit?limit=-1",
        "/api/v1/audit?since=yesterday",
        "/api/v1/audit?limit=99999999999",
        "/api/v1/flags/%FF%FE",
        "/api/v1/flags/f/overrides?field=userId",
    ] {
        let resp = http.get(format!("{url}{q}")).bearer_auth(&admin).send().await.unwrap();
        assert!(!resp.status().is_server_error(), "{q}: {}", resp.status());
    }
    // Deep nesting is refused, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let resp = http.post(format!("{url}/ofrep/v1/evaluate/flags")).bearer_auth(&sdk).body(deep).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    assert_eq!(http.get(format!("{url}/healthz")).send().await.unwrap().status(), StatusCode::OK);
    assert!(
        statuses.keys().any(|s| (400..500).contains(s)) && statuses.keys().any(|s| (200..300).contains(s)),
        "{statuses:?}"
    );
    // Whatever was accepted is a consistent, audited state.
    assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { .. }));
    let (snapshot, _) = store.snapshot().await.unwrap();
    assert!(!snapshot.is_empty());
}
