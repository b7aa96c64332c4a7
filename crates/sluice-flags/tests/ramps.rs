//! Properties of ramps, overrides and the kill switch, and the promise that the compiled Unleash feature
//! answers exactly as Sluice does.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;
use sluice_flags::ofrep::Reason;
use sluice_flags::unleash::{ClientFeatures, Constraint};
use sluice_flags::{Context, Flag, Override, SegmentDef, Snapshot};

fn ramped(key: &str, percent: u8) -> Flag {
    let mut f = Flag::boolean(key);
    f.ramp.percent = percent;
    f
}

fn snapshot(flags: Vec<Flag>) -> Snapshot {
    Snapshot::from_flags(flags, vec![]).unwrap()
}

fn at(ctx: Context, t: DateTime<Utc>) -> Context {
    ctx.current_time(t.to_rfc3339())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Raising the percentage only ever adds contexts: nobody flips back and forth.
    #[test]
    fn raising_the_percentage_only_adds(key in "[a-z_]{1,20}", ids in prop::collection::vec("[a-zA-Z0-9-]{1,24}", 50), p in 0u8..=100, q in 0u8..=100) {
        let (lo, hi) = (p.min(q), p.max(q));
        let low = snapshot(vec![ramped(&key, lo)]);
        let high = snapshot(vec![ramped(&key, hi)]);
        for id in &ids {
            let ctx = Context::new().user_id(id.as_str());
            if low.is_enabled(&key, &ctx) {
                prop_assert!(high.is_enabled(&key, &ctx), "{id} left the ramp going from {lo}% to {hi}%");
            }
        }
    }

    /// The compiled Unleash JSON, parsed back as any Unleash SDK would, answers exactly as Sluice does.
    #[test]
    fn the_unleash_form_agrees(percent in 0u8..=100, ids in prop::collection::btree_set("[a-z0-9]{1,12}", 40), pinned in 0usize..40, disabled in 0usize..40) {
        // Distinct ids: a flag refuses two overrides for one user, which is not the property under test.
        let ids: Vec<String> = ids.into_iter().collect();
        let mut flag = Flag::modes("mode", &["off", "warn", "enforce"]);
        flag.ramp.base = "warn".into();
        flag.ramp.ramped = "enforce".into();
        flag.ramp.percent = percent;
        flag.overrides.push(Override::variant("userId", &ids[pinned], "off"));
        if disabled != pinned {
            flag.overrides.push(Override::disable("userId", &ids[disabled]));
        }
        let sluice = snapshot(vec![flag]);
        let json = serde_json::to_string(sluice.client_features()).unwrap();
        let unleash = Snapshot::from_unleash(serde_json::from_str::<ClientFeatures>(&json).unwrap());
        for id in &ids {
            let ctx = Context::new().user_id(id.as_str());
            prop_assert_eq!(sluice.variant("mode", &ctx), unleash.variant("mode", &ctx));
            prop_assert_eq!(sluice.is_enabled("mode", &ctx), unleash.is_enabled("mode", &ctx));
        }
    }
}

/// Over 100,000 random ids the ramped share is within one point of the percentage.
#[test]
fn the_ramped_share_matches_the_percentage() {
    let mut rng = fastrand::Rng::with_seed(7);
    let ids: Vec<String> = (0..100_000).map(|_| format!("{:016x}", rng.u64(..))).collect();
    for percent in [1u8, 5, 10, 20, 25, 50, 75, 99, 100] {
        let snap = snapshot(vec![ramped("bounded_reasoning", percent)]);
        let on =
            ids.iter().filter(|id| snap.is_enabled("bounded_reasoning", &Context::new().user_id(id.as_str()))).count();
        let share = on as f64 * 100.0 / ids.len() as f64;
        assert!((share - percent as f64).abs() <= 1.0, "{percent}%: {share:.2}% of ids ramped");
    }
    let none = snapshot(vec![ramped("bounded_reasoning", 0)]);
    assert!(!ids.iter().any(|id| none.is_enabled("bounded_reasoning", &Context::new().user_id(id.as_str()))));
}

#[test]
fn an_expired_enable_override_stops_at_its_expiry() {
    let t = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let mut flag = ramped("awf_bundle", 0);
    flag.overrides.push(Override::enable("userId", "user-123").until(t));
    let snap = snapshot(vec![flag]);
    let user = Context::new().user_id("user-123");
    assert!(snap.is_enabled("awf_bundle", &at(user.clone(), t - Duration::milliseconds(1))));
    assert!(!snap.is_enabled("awf_bundle", &at(user.clone(), t)));
    assert!(!snap.is_enabled("awf_bundle", &at(user, t + Duration::hours(1))));
}

#[test]
fn expiring_disable_overrides_are_exact_at_every_instant() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let mut flag = ramped("awf_bundle", 100);
    let expiries = [t0, t0 + Duration::hours(2), t0 + Duration::hours(2), t0 + Duration::days(1)];
    for (i, t) in expiries.iter().enumerate() {
        flag.overrides.push(Override::disable("userId", &format!("u{i}")).until(*t));
    }
    flag.overrides.push(Override::disable("sessionId", "s-forever"));
    let snap = snapshot(vec![flag]);
    for (i, t) in expiries.iter().enumerate() {
        let ctx = Context::new().user_id(format!("u{i}"));
        assert!(!snap.is_enabled("awf_bundle", &at(ctx.clone(), *t - Duration::milliseconds(1))), "u{i} before expiry");
        assert!(snap.is_enabled("awf_bundle", &at(ctx.clone(), *t)), "u{i} at expiry");
        assert!(snap.is_enabled("awf_bundle", &at(ctx, *t + Duration::days(3))), "u{i} long after");
        // Every other user is unaffected at every boundary.
        for t2 in expiries {
            assert!(snap.is_enabled("awf_bundle", &at(Context::new().user_id("bystander"), t2)));
        }
    }
    let forever = Context::new().user_id("u9").session_id("s-forever");
    assert!(!snap.is_enabled("awf_bundle", &at(forever, t0 + Duration::days(365))));
}

#[test]
fn precedence_is_kill_switch_then_overrides_then_ramp() {
    let mut flag = ramped("f", 100);
    flag.overrides.push(Override::disable("userId", "blocked"));
    flag.overrides.push(Override::enable("sessionId", "s1"));
    flag.overrides.push(Override::variant("userId", "pinned", "off"));
    let snap = snapshot(vec![flag.clone()]);
    let r = |ctx: &Context| snap.resolve("f", ctx).unwrap();

    // The ramp serves everyone at 100%, as the ramp's assignment still (`SPLIT`: the canary, whom the
    // rollout's checks keep counting through the bake).
    assert_eq!(r(&Context::new().user_id("anyone")).variant, "on");
    assert_eq!(r(&Context::new().user_id("anyone")).reason, Reason::Split);
    // A pin beats the ramp, and says it was targeted.
    assert_eq!(r(&Context::new().user_id("pinned")).variant, "off");
    assert_eq!(r(&Context::new().user_id("pinned")).reason, Reason::TargetingMatch);
    // A disable beats another key's enable.
    let both = Context::new().user_id("blocked").session_id("s1");
    assert_eq!(r(&both).variant, "off");
    assert!(!snap.is_enabled("f", &both));

    // The kill switch beats everything.
    flag.enabled = false;
    let killed = snapshot(vec![flag]);
    for ctx in [Context::new().user_id("anyone"), Context::new().session_id("s1")] {
        let res = killed.resolve("f", &ctx).unwrap();
        assert_eq!((res.variant, res.reason, res.value), ("off", Reason::Disabled, &json!(false)));
    }
}

#[test]
fn modes_ramp_from_warn_to_enforce_and_report_reasons() {
    let mut flag = Flag::modes("stage_validation", &["off", "warn", "enforce"]);
    flag.ramp.base = "warn".into();
    flag.ramp.ramped = "enforce".into();
    flag.ramp.percent = 30;
    flag.overrides.push(Override::disable("userId", "legacy-client"));
    let snap = snapshot(vec![flag]);
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..2000 {
        let r = snap.resolve("stage_validation", &Context::new().user_id(format!("u{i}"))).unwrap();
        let expected_reason = if r.variant == "enforce" { Reason::Split } else { Reason::Default };
        assert_eq!(r.reason, expected_reason);
        assert_eq!(r.value, &json!(r.variant));
        *seen.entry(r.variant).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    let legacy = snap.resolve("stage_validation", &Context::new().user_id("legacy-client")).unwrap();
    assert_eq!((legacy.variant, legacy.reason), ("off", Reason::TargetingMatch));
}

#[test]
fn segments_limit_the_ramp_and_outsiders_keep_the_base() {
    let qa = SegmentDef {
        id: 1,
        name: "internal_qa".into(),
        description: String::new(),
        constraints: vec![Constraint {
            context_name: "email".into(),
            operator: "STR_ENDS_WITH".into(),
            values: Some(vec!["@example.com".into()]),
            ..Default::default()
        }],
    };
    let mut flag = ramped("bounded_reasoning", 100);
    flag.ramp.segments = vec!["internal_qa".into()];
    let snap = Snapshot::from_flags(vec![flag.clone()], vec![qa.clone()]).unwrap();
    let insider = Context::new().user_id("a").property("email", "a@example.com");
    let outsider = Context::new().user_id("b").property("email", "b@gmail.com");
    assert!(snap.is_enabled("bounded_reasoning", &insider));
    let out = snap.resolve("bounded_reasoning", &outsider).unwrap();
    assert_eq!((out.variant, out.reason), ("off", Reason::Default));

    flag.ramp.segments = vec!["beta_testers".into()];
    let err = Snapshot::from_flags(vec![flag], vec![qa]).unwrap_err();
    assert_eq!(err.field, "ramp.segments[0]");
    assert!(err.to_string().contains("unknown segment `beta_testers`"), "{err}");
}

#[test]
fn stickiness_by_session_or_any_field() {
    let mut flag = ramped("f", 50);
    flag.ramp.stickiness = "tenant".into();
    let snap = snapshot(vec![flag]);
    // Everybody in one tenant gets the same answer, whoever the user.
    for tenant in ["acme", "globex", "initech", "umbrella"] {
        let first = snap.is_enabled("f", &Context::new().user_id("u0").property("tenant", tenant));
        for u in 1..50 {
            assert_eq!(
                first,
                snap.is_enabled("f", &Context::new().user_id(format!("u{u}")).property("tenant", tenant))
            );
        }
    }
    // Without the field a custom-stickiness ramp does not apply (as in Unleash).
    assert!(!snap.is_enabled("f", &Context::new().user_id("u1")));
}

#[test]
fn invalid_flags_name_the_field() {
    type Mutation = Box<dyn Fn(&mut Flag)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|f| f.key = "bad key".into()), "key"),
        (Box::new(|f| f.ramp.percent = 101), "ramp.percent"),
        (Box::new(|f| f.ramp.ramped = "nope".into()), "ramp.ramped"),
        (Box::new(|f| f.variants[1].value = json!("text")), "variants[1].value"),
        (Box::new(|f| f.variants[1].name = "off".into()), "variants[1].name"),
        (Box::new(|f| f.overrides.push(Override::variant("userId", "u", "ghost"))), "overrides[0].action"),
        (
            Box::new(|f| {
                f.ramp.constraints.push(Constraint {
                    context_name: "x".into(),
                    operator: "LIKE".into(),
                    values: Some(vec![]),
                    ..Default::default()
                })
            }),
            "ramp.constraints[0].operator",
        ),
        (
            Box::new(|f| {
                f.ramp.constraints.push(Constraint {
                    context_name: "version".into(),
                    operator: "SEMVER_GT".into(),
                    value: Some("v1".into()),
                    ..Default::default()
                })
            }),
            "ramp.constraints[0].value",
        ),
    ];
    for (mutate, field) in cases {
        let mut flag = Flag::boolean("f");
        mutate(&mut flag);
        let err = flag.validate(&[]).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}

#[test]
fn bulk_resolution_covers_every_flag_once() {
    let flags: Vec<Flag> = (0..20).map(|i| ramped(&format!("f{i}"), (i * 5) as u8)).collect();
    let snap = snapshot(flags);
    let ctx = Context::new().user_id("u");
    let all: Vec<_> = snap.resolve_all(&ctx).collect();
    assert_eq!(all.len(), 20);
    for r in all {
        assert_eq!(Some(r), snap.resolve(r.key, &ctx));
    }
    assert!(snap.resolve("missing", &ctx).is_none());
}
