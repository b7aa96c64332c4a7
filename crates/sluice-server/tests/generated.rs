//! Generated inputs for every parser a caller can reach: rollout plans, flag definitions and their
//! constraints, OFREP evaluation contexts, built-in metrics batches and the Unleash client metrics body.
//! Each target starts from valid inputs and breaks them in seeded, random ways (`support`): nothing may
//! panic, an HTTP answer is never a 5xx, and each target must see both accepted and refused inputs (a
//! generator that only ever produced garbage would prove nothing).
//!
//! CI runs a short pass (`SLUICE_GENERATED_CASES`, default below); `scripts/generated-inputs` runs a
//! million inputs per target in a release build and records its time and peak memory (BENCHMARKS.md).

mod support;

use std::sync::Arc;

use reqwest::Client;
use serde_json::{json, Value};
use sluice_flags::{Context, Flag, SegmentDef, Snapshot};
use sluice_server::{AppState, Options};
use sluice_store::{Role, SqliteStore, Store};

/// YAML's own pieces, for edits that still reach the checks.
const YAML: &[&str] =
    &[": ", "- ", "\n", "\n  ", "{", "}", "[", "]", ", ", "'", "\"", "&a ", "*a", "!!str ", "#", "|\n", "? "];
/// JSON's own pieces.
const JSON: &[&str] = &["{", "}", "[", "]", ",", ":", "\"", "\\u0000", "\\ud800", "null", "true", "1e400", "-0"];

/// Counts accepted and refused inputs: both must happen.
#[derive(Debug, Default)]
struct Seen {
    accepted: usize,
    refused: usize,
}

impl Seen {
    fn check(&self, what: &str) {
        assert!(self.accepted > 0 && self.refused > 0, "{what}: the generator must reach both outcomes: {self:?}");
        eprintln!("{what}: {} accepted, {} refused", self.accepted, self.refused);
    }
}

fn examples() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut plans: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    plans.sort();
    assert!(plans.len() >= 5, "the seed plans are the generator's starting points");
    plans
}

#[test]
fn rollout_plans() {
    let plans = examples();
    let registry = sluice_sources::Registry::new(&sluice_sources::Config::default());
    let mut rng = fastrand::Rng::with_seed(support::seed());
    let mut seen = Seen::default();
    for i in 0..support::cases(3_000) {
        let (file, text) = &plans[i % plans.len()];
        let text = if i < plans.len() { text.clone() } else { support::edit(&mut rng, text, YAML) };
        match sluice_plan::load_with(file, &text, None, &registry) {
            Ok(_) => seen.accepted += 1,
            Err(problems) => {
                assert!(!problems.is_empty(), "a refusal names its problem: {text}");
                seen.refused += 1;
            }
        }
    }
    seen.check("plans");
}

/// A flag with a constraint of every operator, a segment, overrides and a ramp.
fn valid_flag() -> Value {
    let operators = [
        ("email", "STR_ENDS_WITH", json!(["@x.io"])),
        ("email", "STR_CONTAINS", json!(["x"])),
        ("email", "STR_STARTS_WITH", json!(["a"])),
        ("userId", "IN", json!(["u1", "u2"])),
        ("userId", "NOT_IN", json!(["u3"])),
        ("age", "NUM_GT", json!(["18"])),
        ("age", "NUM_LTE", json!(["65.5"])),
        ("age", "NUM_EQ", json!(["30"])),
        ("version", "SEMVER_GT", json!(["1.2.3"])),
        ("version", "SEMVER_EQ", json!(["2.0.0-beta.1"])),
        ("currentTime", "DATE_AFTER", json!(["2026-01-01T00:00:00Z"])),
        ("currentTime", "DATE_BEFORE", json!(["2030-01-01T00:00:00Z"])),
    ];
    let constraints: Vec<Value> = operators
        .iter()
        .map(|(field, op, values)| {
            let single = op.starts_with("NUM") || op.starts_with("SEMVER") || op.starts_with("DATE");
            if single {
                json!({"contextName": field, "operator": op, "value": values[0]})
            } else {
                json!({"contextName": field, "operator": op, "values": values, "caseInsensitive": true})
            }
        })
        .collect();
    json!({"key": "f", "variants": [{"name": "off", "value": false}, {"name": "on", "value": true}],
        "ramp": {"base": "off", "ramped": "on", "percent": 50, "stickiness": "default", "segments": ["qa"],
                 "constraints": constraints},
        "overrides": [{"field": "userId", "value": "u", "action": "enable", "expires_at": "2030-01-01T00:00:00Z"}]})
}

#[test]
fn flag_definitions_and_constraints() {
    let flag = valid_flag();
    let segment: SegmentDef = serde_json::from_value(json!({"id": 1, "name": "qa",
        "constraints": [{"contextName": "tenant", "operator": "IN", "values": ["t1"]}]}))
    .unwrap();
    let mut rng = fastrand::Rng::with_seed(support::seed());
    let mut seen = Seen::default();
    for i in 0..support::cases(5_000) {
        let value = match i % 3 {
            0 if i > 0 => support::mutate(&mut rng, flag.clone()),
            1 => {
                // As text: JSON's own pieces in the wrong places.
                let text = support::edit(&mut rng, &flag.to_string(), JSON);
                match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(_) => {
                        seen.refused += 1;
                        continue;
                    }
                }
            }
            _ => flag.clone(),
        };
        let parsed: Result<Flag, _> = serde_json::from_value(value);
        let Ok(parsed) = parsed else {
            seen.refused += 1;
            continue;
        };
        if parsed.validate(std::slice::from_ref(&segment)).is_err() {
            seen.refused += 1;
            continue;
        }
        let Ok(snapshot) = Snapshot::from_flags(vec![parsed], vec![segment.clone()]) else {
            seen.refused += 1;
            continue;
        };
        seen.accepted += 1;
        for _ in 0..4 {
            let mut ctx = Context::new().user_id(format!("u{}", rng.u32(0..5)));
            for field in ["email", "age", "version", "currentTime", "tenant"] {
                if rng.bool() {
                    let v =
                        ["a@x.io", "18", "30", "1.2.4", "2.0.0-beta.1", "2027-06-01T00:00:00Z", "t1", "", "💥", "NaN"]
                            [rng.usize(0..10)];
                    ctx = ctx.property(field, v);
                }
            }
            let _ = snapshot.evaluate_ofrep("f", &ctx);
        }
    }
    seen.check("flag definitions");
}

/// A server with one flag, and an sdk token: what evaluation and ingestion take.
async fn server() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("sluice.db")).await.unwrap();
    let (_, sdk) = store.create_token("test", "app", Role::Sdk).await.unwrap();
    let flag: Flag = serde_json::from_value(valid_flag()).unwrap();
    let qa: SegmentDef = serde_json::from_value(json!({"id": 1, "name": "qa", "constraints": []})).unwrap();
    store.apply("test", sluice_store::Change::PutSegment(qa), None).await.unwrap();
    store.apply("test", sluice_store::Change::PutFlag(flag), None).await.unwrap();
    let state = AppState::load(Arc::new(store), Options::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, sluice_server::router(state)).await.unwrap() });
    (dir, url, sdk)
}

/// Sends `cases` bodies made from `valid` to `path`: none may get a 5xx, some must be taken.
async fn post_generated(path: &str, valid: Value, default: usize) {
    let (_dir, url, sdk) = server().await;
    let http = Client::new();
    let mut rng = fastrand::Rng::with_seed(support::seed());
    let mut seen = Seen::default();
    for i in 0..support::cases(default) {
        let body = match i % 4 {
            0 => valid.to_string().into_bytes(),
            1 => support::mutate(&mut rng, valid.clone()).to_string().into_bytes(),
            2 => support::edit(&mut rng, &valid.to_string(), JSON).into_bytes(),
            _ => support::random_json(&mut rng, 4).to_string().into_bytes(),
        };
        let answer = http
            .post(format!("{url}{path}"))
            .bearer_auth(&sdk)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        assert!(!status.is_server_error(), "{path} with {} → {status}: {text}", String::from_utf8_lossy(&body));
        if i == 0 {
            assert!(status.is_success(), "{path}: the valid body is taken: {status} {text}");
        }
        if status.is_success() {
            seen.accepted += 1;
        } else {
            assert!(serde_json::from_str::<Value>(&text).is_ok(), "{path}: a refusal is JSON: {status} {text}");
            seen.refused += 1;
        }
    }
    seen.check(path);
}

#[tokio::test]
async fn ofrep_contexts() {
    let valid = json!({"context": {"targetingKey": "u1", "email": "a@x.io", "age": 30, "version": "1.2.4",
        "tenant": "t1", "beta": true}});
    post_generated("/ofrep/v1/evaluate/flags/f", valid, 1_500).await;
}

#[tokio::test]
async fn builtin_metrics_batches() {
    let valid = json!({"observations": [
        {"flag": "f", "variant": "on", "reason": "SPLIT", "key": "u1", "ok": true, "latency_ms": 12.5},
        {"flag": "f", "variant": "off", "reason": "SPLIT", "key": "u2", "ok": false, "latency_ms": 40.0,
         "values": {"checkout_value": 19.99}}]});
    post_generated("/api/v1/metrics", valid, 1_500).await;
}

#[tokio::test]
async fn unleash_client_metrics() {
    let valid = json!({"appName": "shop", "instanceId": "i-1", "bucket": {"start": "2026-12-07T10:00:00Z",
        "stop": "2026-12-07T10:01:00Z", "toggles": {"f": {"yes": 3, "no": 1, "variants": {"on": 3}}}}});
    post_generated("/api/client/metrics", valid, 1_500).await;
}
