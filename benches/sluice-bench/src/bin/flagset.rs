//! Prints a Sluice flag file (JSON) of 350 flags for the HTTP benchmarks: the same deterministic mix of
//! constraints as the in-process large dataset, expressed as Sluice ramps (booleans and off/warn/enforce
//! modes, some within a segment, some with overrides).
//!
//! Run: `cargo run --release -p sluice-bench --bin flagset > flags.json`

use serde_json::json;

fn main() {
    let mut rng = fastrand::Rng::with_seed(350_200);
    let mut flags = Vec::new();
    for i in 0..350 {
        let key = format!("team{}.feature{i}", i % 12);
        let constraints = match rng.u32(0..5) {
            0 => json!([]),
            1 => json!([{"contextName": "environment", "operator": "IN", "values": ["production", "staging", "dev"]}]),
            2 => {
                json!([{"contextName": "tenant", "operator": "STR_CONTAINS", "values": ["acme"], "caseInsensitive": true}])
            }
            3 => json!([{"contextName": "seats", "operator": "NUM_GT", "value": format!("{}", rng.u32(0..50))}]),
            _ => json!([{"contextName": "appVersion", "operator": "SEMVER_GTE", "value": "2.3.0"}]),
        };
        let mut flag = json!({
            "key": key,
            "enabled": i % 10 != 9,
            "ramp": {"percent": rng.u32(0..=100), "constraints": constraints},
        });
        if i % 3 == 0 {
            flag["variants"] = json!([{"name": "off", "value": "off"}, {"name": "warn", "value": "warn"}, {"name": "enforce", "value": "enforce"}]);
            flag["ramp"]["base"] = json!("warn");
            flag["ramp"]["ramped"] = json!("enforce");
        }
        if i % 7 == 0 {
            flag["ramp"]["segments"] = json!(["beta_testers"]);
        }
        if i % 5 == 0 {
            flag["overrides"] = json!([{"field": "userId", "value": "user-1", "action": "enable"}, {"field": "userId", "value": "user-2", "action": "disable"}]);
        }
        flags.push(flag);
    }
    let file = json!({
        "segments": [{"id": 1, "name": "beta_testers", "constraints": [{"contextName": "tier", "operator": "IN", "values": ["beta"]}]}],
        "flags": flags,
    });
    println!("{file}");
}
