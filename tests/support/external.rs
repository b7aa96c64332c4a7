//! One rule for every test that needs a real component (Prometheus, Alertmanager, PostgreSQL, Chromium,
//! promtool): when it is missing, the test says so and passes on a developer's machine, and fails when
//! `SLUICE_REQUIRE_EXTERNAL` is set (CI), so that a skipped test never passes for a green one. Shared by the
//! test crates through `#[path]`, so that there is one copy of the rule.
//!
//! Set means any value but empty, `0`, `false` or `no`: `=1`, `=true` and `=yes` all require.

#![allow(dead_code)]

/// Whether CI requires every real component (`SLUICE_REQUIRE_EXTERNAL`).
pub fn required() -> bool {
    required_by(std::env::var("SLUICE_REQUIRE_EXTERNAL").ok().as_deref())
}

fn required_by(value: Option<&str>) -> bool {
    value.is_some_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false" | "no"))
}

/// Called when `component` is missing: fails the test when CI requires it, else says the test is skipped.
/// `install` says how to get it (e.g. "Debian: apt-get install prometheus").
pub fn missing(component: &str, install: &str) {
    assert!(
        !required(),
        "{component} is not installed and SLUICE_REQUIRE_EXTERNAL is set: install it ({install}) or unset the variable"
    );
    eprintln!("skipped: {component} is not installed ({install})");
}

#[test]
fn any_value_but_empty_zero_or_false_requires() {
    for value in ["1", "true", "TRUE", "yes", "on", " 1 "] {
        assert!(required_by(Some(value)), "{value:?}");
    }
    for value in [None, Some(""), Some("0"), Some("false"), Some("No")] {
        assert!(!required_by(value), "{value:?}");
    }
}
