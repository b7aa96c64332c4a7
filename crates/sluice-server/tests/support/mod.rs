//! Generated inputs for the parsers' tests: random JSON in the shapes Sluice reads, a valid value with one
//! part replaced, and text with random edits. Seeded, so that a failure reproduces. Shared by
//! `robustness.rs` and `generated.rs` (`mod support`).

#![allow(dead_code)]

pub mod server;

use serde_json::{json, Value};

/// Random JSON up to `depth` levels, with the keys and awkward values Sluice's bodies have.
pub fn random_json(rng: &mut fastrand::Rng, depth: u32) -> Value {
    match rng.u32(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!([0i64, -1, 101, 255, 256, i64::MAX, i64::MIN][rng.usize(0..7)]),
        3 => json!([0.5f64, -0.0, 1e308, 99.999][rng.usize(0..4)]),
        4 => json!(["", "off", "on", "userId", "IN", "💥", "a\u{0000}b", &"x".repeat(300)][rng.usize(0..8)]),
        5 => Value::Array((0..rng.usize(0..4)).map(|_| random_json(rng, depth - 1)).collect()),
        _ => {
            let keys = [
                "key",
                "ramp",
                "percent",
                "variants",
                "overrides",
                "field",
                "value",
                "action",
                "constraints",
                "contextName",
                "operator",
                "values",
                "context",
                "targetingKey",
                "segments",
                "features",
                "flags",
                "name",
                "role",
                "strategies",
                "parameters",
                "expires_in",
                "expires_at",
                "bucket",
                "toggles",
            ];
            Value::Object(
                (0..rng.usize(0..5))
                    .map(|_| (keys[rng.usize(0..keys.len())].to_string(), random_json(rng, depth - 1)))
                    .collect(),
            )
        }
    }
}

/// A valid body with one value somewhere replaced by random JSON.
pub fn mutate(rng: &mut fastrand::Rng, mut v: Value) -> Value {
    fn walk(rng: &mut fastrand::Rng, v: &mut Value) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                let k = m.keys().nth(rng.usize(0..m.len())).unwrap().clone();
                if rng.u32(0..3) == 0 {
                    m[&k] = random_json(rng, 2)
                } else {
                    walk(rng, m.get_mut(&k).unwrap())
                }
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.usize(0..a.len());
                if rng.u32(0..3) == 0 {
                    a[i] = random_json(rng, 2)
                } else {
                    walk(rng, &mut a[i])
                }
            }
            other => *other = random_json(rng, 2),
        }
    }
    walk(rng, &mut v);
    v
}

/// Text with a few random edits: a span deleted or repeated, a token of the format inserted, a byte
/// replaced. `tokens` are the format's own pieces (`": "`, `"- "`, `"{"` …), so that most edits still
/// parse as far as the next check, and reach it.
pub fn edit(rng: &mut fastrand::Rng, text: &str, tokens: &[&str]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..rng.usize(1..5) {
        let at = rng.usize(0..=bytes.len());
        match rng.u32(0..6) {
            0 if !bytes.is_empty() => {
                let end = (at + rng.usize(1..40)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            1 if !bytes.is_empty() => {
                let from = rng.usize(0..bytes.len());
                let span: Vec<u8> = bytes[from..(from + rng.usize(1..80)).min(bytes.len())].to_vec();
                bytes.splice(at..at, span).for_each(drop);
            }
            2 => {
                let token = tokens[rng.usize(0..tokens.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied()).for_each(drop);
            }
            3 if at < bytes.len() => bytes[at] = rng.u8(..),
            4 => bytes.splice(at..at, "x".repeat(rng.usize(1..400)).into_bytes()).for_each(drop),
            _ => {
                let word = ["0", "-1", "1e999", "300", "null", "~", "''", "\"\"", "0x10", ".nan"][rng.usize(0..10)];
                bytes.splice(at..at, word.bytes()).for_each(drop);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// How many inputs each generated test tries: `SLUICE_GENERATED_CASES` (the long runs of
/// `scripts/generated-inputs` ask for a million), else `default`.
pub fn cases(default: usize) -> usize {
    std::env::var("SLUICE_GENERATED_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The seed: `SLUICE_GENERATED_SEED`, else a fixed one (CI's runs repeat exactly).
pub fn seed() -> u64 {
    std::env::var("SLUICE_GENERATED_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed)
}
