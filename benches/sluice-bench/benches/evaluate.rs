//! Sluice's evaluator against `unleash-yggdrasil` on identical inputs. Before timing anything, both engines
//! must give identical answers on those inputs; a benchmark of a wrong engine measures nothing.
//!
//! Run: `cargo bench -p sluice-bench --bench evaluate`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::Value;
use sluice_bench::{context_json, large_dataset, single_flag};
use sluice_flags::{Context, LiveFlags, Snapshot};
use unleash_yggdrasil::{EngineState, UpdateMessage};

fn engines(state: &Value) -> (LiveFlags, EngineState) {
    let sluice = LiveFlags::new(Snapshot::from_unleash(serde_json::from_value(state.clone()).unwrap()));
    let ygg = EngineState::default();
    let warnings = ygg.take_state(UpdateMessage::FullResponse(serde_json::from_value(state.clone()).unwrap()));
    assert!(warnings.as_ref().is_none_or(|w| w.is_empty()), "yggdrasil rejected the input: {warnings:?}");
    (sluice, ygg)
}

fn contexts(n: usize) -> Vec<(Context, unleash_types::client_features::Context)> {
    (0..n)
        .map(|i| {
            let mut json = context_json(&format!("user-{i}"));
            if i % 4 == 1 {
                json["environment"] = "dev".into();
            }
            if i % 5 == 2 {
                json["properties"]["tenant"] = "initech".into();
            }
            (serde_json::from_value(json.clone()).unwrap(), serde_json::from_value(json).unwrap())
        })
        .collect()
}

/// Both engines must agree on every flag for every context before either is timed.
fn assert_same_answers(state: &Value, sluice: &LiveFlags, ygg: &EngineState) {
    let names: Vec<&str> = state["features"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    let snapshot = sluice.load();
    let (mut enabled, mut checked) = (0, 0);
    for (ours, theirs) in contexts(2000) {
        for name in &names {
            let a = snapshot.variant(name, &ours);
            let b = ygg.get_variant(name, &theirs, &None);
            assert_eq!(a.feature_enabled, b.feature_enabled, "{name}: enabled differs");
            assert_eq!(snapshot.is_enabled(name, &ours), ygg.is_enabled(name, &theirs, &None), "{name}");
            assert_eq!(a.name, b.name, "{name}: variant differs");
            assert_eq!(a.payload.map(|p| p.value.as_str()), b.payload.as_ref().map(|p| p.value.as_str()));
            enabled += usize::from(a.feature_enabled);
            checked += 1;
        }
    }
    // Guard against a trivially equal comparison (everything off).
    assert!(enabled > checked / 10 && enabled < checked, "{enabled} of {checked} enabled");
}

fn single(c: &mut Criterion) {
    let state = single_flag();
    let (sluice, ygg) = engines(&state);
    assert_same_answers(&state, &sluice, &ygg);
    let (ours, theirs) = contexts(1).pop().unwrap();
    let mut group = c.benchmark_group("single: flexibleRollout, 2 constraints, 3 variants");
    group.bench_function("sluice", |b| {
        b.iter(|| {
            let snapshot = sluice.load();
            let v = snapshot.variant(black_box("checkout.redesign"), black_box(&ours));
            black_box((v.feature_enabled, v.name.len()));
        })
    });
    group.bench_function("yggdrasil", |b| {
        b.iter(|| {
            let v = ygg.get_variant(black_box("checkout.redesign"), black_box(&theirs), &None);
            black_box((v.feature_enabled, v.name.len()));
        })
    });
    group.finish();
}

fn bulk(c: &mut Criterion) {
    let state = large_dataset();
    let (sluice, ygg) = engines(&state);
    assert_same_answers(&state, &sluice, &ygg);
    let (ours, theirs) = contexts(1).pop().unwrap();
    let mut group = c.benchmark_group("bulk: 350 flags, 200 strategies");
    group.bench_function("sluice", |b| {
        b.iter(|| {
            let snapshot = sluice.load();
            let all: Vec<_> = snapshot.resolve_all(black_box(&ours)).collect();
            black_box(all.len());
        })
    });
    group.bench_function("yggdrasil", |b| {
        b.iter(|| {
            let all = ygg.resolve_all(black_box(&theirs), &None).unwrap();
            black_box(all.len());
        })
    });
    group.finish();
}

/// What counting OFREP answers by flag and variant (`/metrics`) costs the bulk evaluation: the same
/// snapshot, published through `LiveFlags` (counted) and on its own (not counted).
fn counting(c: &mut Criterion) {
    let state = large_dataset();
    let counted = LiveFlags::new(Snapshot::from_unleash(serde_json::from_value(state.clone()).unwrap()));
    let plain = Snapshot::from_unleash(serde_json::from_value(state).unwrap());
    let (ours, _) = contexts(1).pop().unwrap();
    let mut group = c.benchmark_group("OFREP bulk, 350 flags: counting answers by flag and variant");
    group.bench_function("not counted", |b| {
        b.iter(|| {
            let mut n = 0usize;
            plain.evaluate_ofrep_each(black_box(&ours), |o| {
                n += black_box(matches!(o, sluice_flags::OfrepOutcome::Resolved(_))) as usize
            });
            black_box(n);
        })
    });
    group.bench_function("counted", |b| {
        b.iter(|| {
            let snapshot = counted.load();
            let mut n = 0usize;
            snapshot.evaluate_ofrep_each(black_box(&ours), |o| {
                n += black_box(matches!(o, sluice_flags::OfrepOutcome::Resolved(_))) as usize
            });
            black_box(n);
        })
    });
    group.finish();
    let total: u64 = counted.evaluations().counts().iter().map(|(_, _, n)| n).sum();
    assert!(total > 0, "the counted runs counted nothing");
}

criterion_group!(benches, single, bulk, counting);
criterion_main!(benches);
