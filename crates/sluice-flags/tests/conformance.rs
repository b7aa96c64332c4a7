//! Runs every case of the Unleash client specification (`@unleash/client-specification` 6.1.0) against
//! the engine, and proves the suite can fail: mutated inputs must break some case.
//!
//! The specification is read from `SLUICE_UNLEASH_SPEC` (the package's `specifications` folder), by default
//! `node_modules/@unleash/client-specification/specifications` at the workspace root, which `npm ci` installs.
//! Missing files fail the test: a conformance suite that silently skips proves nothing.

use std::path::PathBuf;

use serde_json::Value;
use sluice_flags::unleash::{ClientFeatures, DeltaEvent};
use sluice_flags::{Context, Snapshot};

const ENABLE_CASES: usize = 227;
const VARIANT_CASES: usize = 52;

fn spec_dir() -> PathBuf {
    let dir = std::env::var_os("SLUICE_UNLEASH_SPEC").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../node_modules/@unleash/client-specification/specifications")
    });
    assert!(
        dir.join("index.json").is_file(),
        "the Unleash client specification is missing at {}: run `npm ci` at the workspace root, or point \
         SLUICE_UNLEASH_SPEC at the package's specifications folder",
        dir.display()
    );
    let package: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("../package.json")).unwrap()).unwrap();
    assert_eq!(package["version"], "6.1.0", "the specification must be the pinned 6.1.0");
    dir
}

struct Spec {
    name: String,
    state: ClientFeatures,
    tests: Vec<Value>,
    variant_tests: Vec<Value>,
}

fn load_specs() -> Vec<Spec> {
    let dir = spec_dir();
    let index: Vec<String> = serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    index
        .iter()
        .map(|file| {
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
            let state = if let Some(events) = doc["state"].get("events") {
                let events: Vec<DeltaEvent> = serde_json::from_value(events.clone()).unwrap();
                let mut state = ClientFeatures::default();
                state.apply(&events);
                state
            } else {
                serde_json::from_value(doc["state"].clone()).unwrap_or_else(|e| panic!("{file}: {e}"))
            };
            Spec {
                name: file.clone(),
                state,
                tests: doc["tests"].as_array().cloned().unwrap_or_default(),
                variant_tests: doc["variantTests"].as_array().cloned().unwrap_or_default(),
            }
        })
        .collect()
}

/// Runs every case; returns (enable cases run, variant cases run, failures).
fn run(specs: &[Spec]) -> (usize, usize, Vec<String>) {
    let (mut enable, mut variant, mut failures) = (0, 0, Vec::new());
    for spec in specs {
        let snapshot = Snapshot::from_unleash(spec.state.clone());
        for t in &spec.tests {
            enable += 1;
            let ctx: Context = serde_json::from_value(t["context"].clone()).unwrap();
            let got = snapshot.is_enabled(t["toggleName"].as_str().unwrap(), &ctx);
            if Value::Bool(got) != t["expectedResult"] {
                failures.push(format!("{}: {} (got {got})", spec.name, t["description"]));
            }
        }
        for t in &spec.variant_tests {
            variant += 1;
            let ctx: Context = serde_json::from_value(t["context"].clone()).unwrap();
            let got = snapshot.variant(t["toggleName"].as_str().unwrap(), &ctx);
            let want = &t["expectedResult"];
            let mut ok = want["name"] == got.name && want["enabled"] == got.enabled;
            if let Some(fe) = want.get("feature_enabled").or_else(|| want.get("featureEnabled")) {
                ok &= *fe == got.feature_enabled;
            }
            let payload = got.payload.map(|p| serde_json::to_value(p).unwrap());
            ok &= want.get("payload").cloned() == payload;
            if !ok {
                failures.push(format!("{}: {} (got {got:?})", spec.name, t["description"]));
            }
        }
    }
    (enable, variant, failures)
}

#[test]
fn every_specification_case_passes() {
    let specs = load_specs();
    assert_eq!(specs.len(), 22, "6.1.0 has 22 specification files");
    let (enable, variant, failures) = run(&specs);
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), enable + variant, failures.join("\n"));
    assert_eq!(enable, ENABLE_CASES, "enable cases run");
    assert_eq!(variant, VARIANT_CASES, "variant cases run");
}

/// Applies `mutate` to every strategy of every feature and segment constraint.
fn mutated(specs: &[Spec], mutate: impl Fn(&mut sluice_flags::unleash::Feature)) -> Vec<Spec> {
    specs
        .iter()
        .map(|s| {
            let mut state = s.state.clone();
            state.features.iter_mut().for_each(&mutate);
            Spec { name: s.name.clone(), state, tests: s.tests.clone(), variant_tests: s.variant_tests.clone() }
        })
        .collect()
}

#[test]
fn the_suite_catches_a_wrong_hash() {
    // Salting every group id is the same as hashing with another seed: buckets move.
    let specs = load_specs();
    let salted = mutated(&specs, |f| {
        let name = f.name.clone();
        for s in &mut f.strategies {
            let params = s.parameters.get_or_insert_with(Default::default);
            let group = params.get("groupId").cloned().unwrap_or_else(|| name.clone());
            params.insert("groupId".into(), format!("{group}~"));
        }
        f.name = f.name.clone();
    });
    let (_, _, failures) = run(&salted);
    assert!(failures.len() >= 5, "only {} cases noticed a wrong rollout hash", failures.len());

    // Variant hashing too: reorder the weights of every multi-variant list.
    let shuffled = mutated(&specs, |f| {
        if let Some(v) = f.variants.as_mut() {
            v.reverse();
        }
        for s in &mut f.strategies {
            if let Some(v) = s.variants.as_mut() {
                v.reverse();
            }
        }
    });
    let (_, _, failures) = run(&shuffled);
    assert!(failures.len() >= 5, "only {} cases noticed reordered variants", failures.len());
}

#[test]
fn the_suite_catches_ignored_constraints() {
    let specs = load_specs();
    let inverted = mutated(&specs, |f| {
        for s in &mut f.strategies {
            for c in s.constraints.iter_mut().flatten() {
                c.inverted = !c.inverted;
            }
        }
    });
    let (_, _, failures) = run(&inverted);
    assert!(failures.len() >= 50, "only {} cases noticed inverted constraints", failures.len());

    let disabled = mutated(&specs, |f| f.enabled = !f.enabled);
    let (_, _, failures) = run(&disabled);
    assert!(failures.len() >= 100, "only {} cases noticed a flipped kill switch", failures.len());
}
