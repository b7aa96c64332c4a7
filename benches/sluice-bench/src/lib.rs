//! Inputs for Sluice's flag benchmarks, generated deterministically so that every run, and both engines
//! (Sluice and `unleash-yggdrasil`), evaluate exactly the same flags and contexts.

use serde_json::{json, Value};

/// One `flexibleRollout` flag with two constraints and three variants (the single-evaluation case).
pub fn single_flag() -> Value {
    json!({
        "version": 2,
        "features": [{
            "name": "checkout.redesign",
            "enabled": true,
            "strategies": [{
                "name": "flexibleRollout",
                "parameters": {"rollout": "75", "stickiness": "default", "groupId": "checkout.redesign"},
                "constraints": [
                    {"contextName": "environment", "operator": "IN", "values": ["production", "staging"]},
                    {"contextName": "tenant", "operator": "STR_STARTS_WITH", "values": ["acme", "globex"]}
                ],
                "variants": [
                    {"name": "blue", "weight": 333, "stickiness": "default", "payload": {"type": "string", "value": "blue"}},
                    {"name": "green", "weight": 333, "stickiness": "default", "payload": {"type": "string", "value": "green"}},
                    {"name": "red", "weight": 334, "stickiness": "default", "payload": {"type": "string", "value": "red"}}
                ]
            }]
        }]
    })
}

/// 350 flags carrying 200 strategies between them — the shape Unleash Edge publishes as its large dataset:
/// a mix of strategy kinds, constraint operators, variants and disabled flags.
pub fn large_dataset() -> Value {
    let mut rng = fastrand::Rng::with_seed(350_200);
    let mut features = Vec::new();
    for i in 0..350 {
        let name = format!("team{}.feature{i}", i % 12);
        let mut strategies = Vec::new();
        if i < 200 {
            let constraints = match rng.u32(0..6) {
                0 => json!([]),
                1 => {
                    json!([{"contextName": "environment", "operator": "IN", "values": ["production", "staging", "dev"]}])
                }
                2 => {
                    json!([{"contextName": "tenant", "operator": "STR_CONTAINS", "values": ["acme"], "caseInsensitive": true}])
                }
                3 => {
                    json!([{"contextName": "seats", "operator": "NUM_GT", "value": format!("{}", rng.u32(0..50))}])
                }
                4 => {
                    json!([{"contextName": "appVersion", "operator": "SEMVER_GTE", "value": "2.3.0"},
                            {"contextName": "environment", "operator": "NOT_IN", "values": ["dev"]}])
                }
                _ => {
                    json!([{"contextName": "userId", "operator": "IN", "values": (0..20).map(|u| format!("user-{u}")).collect::<Vec<_>>()}])
                }
            };
            let variants = if i % 3 == 0 {
                json!([
                    {"name": "a", "weight": 500, "stickiness": "default", "payload": {"type": "string", "value": "A"}},
                    {"name": "b", "weight": 300, "stickiness": "default", "payload": {"type": "json", "value": "{\"b\":1}"}},
                    {"name": "c", "weight": 200, "stickiness": "default"}
                ])
            } else {
                json!([])
            };
            strategies.push(json!({
                "name": "flexibleRollout",
                "parameters": {"rollout": format!("{}", rng.u32(0..=100)), "stickiness": "default", "groupId": name},
                "constraints": constraints,
                "variants": variants,
            }));
        }
        features.push(json!({
            "name": name,
            "enabled": i % 10 != 9,
            "type": "release",
            "project": "default",
            "strategies": strategies,
            "variants": [],
        }));
    }
    json!({"version": 2, "features": features})
}

/// A context that matches most constraints of both datasets.
pub fn context_json(user: &str) -> Value {
    json!({
        "userId": user,
        "environment": "production",
        "appName": "checkout",
        "properties": {"tenant": "acme-corp", "seats": "25", "appVersion": "2.4.1"}
    })
}
