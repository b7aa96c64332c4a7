//! `sluice plan check`'s rules, one fixture per kind of mistake, each asserted with its exact position and
//! key; and the example plans of the seeds, which must check clean. Plans are checked as `sluice plan
//! check` does: against the plug-ins' registry, which checks each plug-in's own keys.

use std::path::{Path, PathBuf};

use sluice_plan::{Catalog, CatalogFlag, Level, Problem};

/// A plan checked against this build's plug-ins.
fn load(file: &str, text: &str, catalog: Option<&Catalog>) -> Result<(sluice_plan::Plan, Vec<Problem>), Vec<Problem>> {
    sluice_plan::load_with(file, text, catalog, sluice_sources::described())
}

fn catalog() -> Catalog {
    Catalog {
        flags: vec![
            CatalogFlag { key: "bounded_reasoning".into(), variants: vec!["off".into(), "on".into()] },
            CatalogFlag {
                key: "stage_validation".into(),
                variants: vec!["off".into(), "warn".into(), "enforce".into()],
            },
        ],
        segments: vec!["internal_qa".into(), "beta_testers".into()],
    }
}

fn errors(fixture: &str) -> Vec<Problem> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
    let text = std::fs::read_to_string(&path).unwrap();
    let problems = load(fixture, &text, Some(&catalog())).expect_err("the fixture must fail");
    problems.into_iter().filter(|p| p.level == Level::Error).collect()
}

/// Asserts exactly one error, at `line:column`, on `key`, saying `says`.
fn one(fixture: &str, line: u64, column: u64, key: &str, says: &str) {
    let errs = errors(fixture);
    assert_eq!(errs.len(), 1, "{fixture}: {errs:#?}");
    let e = &errs[0];
    assert_eq!((e.line, e.column, e.key.as_str()), (line, column, key), "{e}");
    assert!(e.message.contains(says), "{e}");
    assert!(e.to_string().starts_with(&format!("{fixture}:{line}:{column}: error: ")), "{e}");
}

#[test]
fn an_unknown_key() {
    one("unknown_key.yaml", 5, 5, "phases[0].hodl", "unknown field `hodl`");
}

#[test]
fn a_bad_duration() {
    one("bad_duration.yaml", 5, 11, "phases[0].hold", "`2 days` is not a duration");
}

#[test]
fn percentages_not_increasing() {
    one("percent_not_increasing.yaml", 6, 14, "phases[2].percent", "must increase from phase to phase: 25 after 25");
}

/// A number out of range names the range, not the type it failed to fit ("invalid u8" before).
#[test]
fn a_percentage_out_of_range() {
    one("percent_out_of_range.yaml", 5, 14, "phases[1].percent", "300 is outside 0..100");
    one("percent_negative.yaml", 4, 14, "phases[0].percent", "-1 is outside 0..100");
}

#[test]
fn a_gate_with_no_threshold() {
    one("gate_without_threshold.yaml", 4, 5, "gates[0]", "`golden-suite` has no threshold");
}

#[test]
fn a_soft_trigger_with_no_decision_rule() {
    one("soft_trigger_without_decision.yaml", 6, 5, "triggers[0]", "has no decision rule: add `decide_within");
}

#[test]
fn an_unknown_flag() {
    one("unknown_flag.yaml", 2, 7, "flag", "unknown flag `no_such_flag`");
}

#[test]
fn an_unknown_segment() {
    one("unknown_segment.yaml", 5, 29, "phases[0].segments[1]", "unknown segment `gamma_testers`");
}

#[test]
fn an_unknown_variant() {
    one("unknown_variant.yaml", 3, 29, "ramp.ramped", "flag `stage_validation` has no variant `block`");
}

#[test]
fn a_template_variable_that_does_not_exist() {
    one("unknown_template.yaml", 6, 14, "gates[0].command", "unknown template variable `{{budget}}`");
}

#[test]
fn every_problem_is_reported_at_once() {
    let errs = errors("misc_rules.yaml");
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "analysis.max_source_errors",
            "triggers[0].for",
            "triggers[0].decide_within",
            "triggers[1].severity",
            "triggers[1].name",
            "triggers[2]"
        ],
        "{errs:#?}"
    );
    assert_eq!((errs[0].line, errs[0].column), (3, 46), "{errs:#?}");
    assert!(errs[1].message.contains("shorter than the analysis interval 1m"));
    assert!(errs[4].message.contains("a second check named `too-fast`"));
    assert!(errs[5].message.contains("finite"), "{errs:#?}");
}

/// The flag file the examples are checked against, read as the CLI reads it.
fn example_catalog() -> Catalog {
    #[derive(serde::Deserialize)]
    struct File {
        segments: Vec<Named>,
        flags: Vec<FlagEntry>,
    }
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct FlagEntry {
        key: String,
        #[serde(default)]
        variants: Option<Vec<Named>>,
    }
    let path = examples().join("flags/catalog.yaml");
    let file: File = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Catalog {
        flags: file
            .flags
            .into_iter()
            .map(|f| CatalogFlag {
                key: f.key,
                variants: f
                    .variants
                    .map_or(vec!["off".into(), "on".into()], |v| v.into_iter().map(|n| n.name).collect()),
            })
            .collect(),
        segments: file.segments.into_iter().map(|s| s.name).collect(),
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn every_seed_plan_checks_clean() {
    let catalog = example_catalog();
    let mut checked = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        match load(&name, &text, Some(&catalog)) {
            Ok((plan, notes)) => {
                assert!(notes.iter().all(|n| n.level == Level::Note));
                assert!(!plan.phases.is_empty());
            }
            Err(problems) => {
                panic!("{name}:\n{}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 6, "one plan per seed (seed 002 has two)");
}

/// A PromQL query that does not parse is an error at the query's own line and column, in the parser's
/// words, after templates are filled; the same for an SLO's queries.
#[test]
fn promql_is_parsed_by_a_real_parser() {
    let yaml = "name: p\nflag: f\nanalysis: { prometheus: { url: http://127.0.0.1:9090 } }\nphases: [ { percent: 5 } ]\ngates:\n  - name: ok\n    query: sum(rate(x{variant=\"{{ramped}}\"}[{{interval}}]))\n    below: 1\n  - name: broken\n    query: sum(rate(latency_seconds[1m])\n    below: 1\n  - name: burn\n    slo: { objective: 99.9, good: 'sum(rate(good[{{window}}]))', total: 'sum(rate(all[{{window}}])) by', windows: [5m] }\n    above: 2\n";
    let problems = load("p.yaml", yaml, None).unwrap_err();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0]
            .starts_with("p.yaml:10:12: error: `gates[1].query`: the PromQL does not parse: unclosed left parenthesis"),
        "{text:?}"
    );
    assert!(text[1].contains("`gates[2].slo.total`: the PromQL does not parse"), "{text:?}");
}

/// A comparison with control needs a control: a 100% phase with none before it could never pass its
/// control gate (an error), a plan with no partial phase leaves a control trigger blind, and a bake past
/// the day a measured control stays valid leaves it blind for the rest (notes).
#[test]
fn a_comparison_with_control_needs_a_control() {
    let plan = |phases: &str, bake: &str| {
        format!(
            "name: p\nflag: f\nanalysis: {{ interval: 1m }}\nphases: {phases}\n{bake}gates:\n  - {{ name: g, metric: error_rate, compare: control, max_increase: 0.01 }}\ntriggers:\n  - {{ name: t, metric: error_rate, compare: control, max_increase: 0.01, severity: hard }}\n"
        )
    };
    let problems = load("p.yaml", &plan("[ { percent: 100 } ]", ""), None).unwrap_err();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:#?}");
    assert!(
        text[0].contains("error: `gates[0].compare`: phase 1 serves 100% and no phase before it served a control"),
        "{text:#?}"
    );
    assert!(
        text[1].contains("note: `triggers[0].compare`: no phase serves a percentage between 0 and 100"),
        "{text:#?}"
    );

    let (_, notes) = load("p.yaml", &plan("[ { percent: 10 }, { percent: 100 } ]", "bake: 2d\n"), None).unwrap();
    let text: Vec<String> = notes.iter().map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:#?}");
    assert!(text[0].starts_with("p.yaml:9:"), "at the trigger: {text:#?}");
    assert!(text[0].contains("for 24 h: past that this trigger is inconclusive"), "{text:#?}");

    let (_, notes) = load("p.yaml", &plan("[ { percent: 10 }, { percent: 100 } ]", "bake: 1d\n"), None).unwrap();
    assert!(notes.is_empty(), "{notes:#?}");
}
