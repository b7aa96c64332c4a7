//! The plug-in seam: a kind of plug-in is its own file and one registration line. Shown three ways: a
//! source defined here, in this test file, and added to a registry (plan check knows it, refuses its
//! unknown keys with its own known ones, reports its errors at their line and column, and measures with
//! it); the `json` source, one file and one line in `sources/mod.rs`, measured against a real HTTP server
//! on loopback; and the plan format's code, which names no kind of plug-in at all.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_engine::Measurement;
use sluice_plan::model::{Check, Location};
use sluice_plan::{Capabilities, Family, Level, Report};
use sluice_sources::{Config, MeasureContext, Plugins, Registry};

/// A source made here: `constant: {value: N}` measures N.
struct Constant;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConstantCheck {
    constant: sluice_plan::model::Spanned<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Value {
    value: f64,
}

#[async_trait::async_trait]
impl sluice_sources::Source for Constant {
    fn kind(&self) -> &'static str {
        "constant"
    }
    fn keys(&self) -> &'static [&'static str] {
        &["constant"]
    }
    fn hint(&self) -> &'static str {
        "constant: {value: N}"
    }
    fn check_config(&self, check: &Check, _trigger: bool, at: Location, report: &mut Report<'_>) {
        if let Some(c) = report.parse_block::<ConstantCheck>(&check.block, at) {
            if c.constant.value.value < 0.0 {
                report.error(c.constant.referenced, "constant.value", "a constant here is never negative");
            }
        }
    }
    async fn measure(&self, check: &Check, _cx: &MeasureContext<'_>) -> Measurement {
        match check.block.parse::<ConstantCheck>(Location::UNKNOWN) {
            Ok(c) => Measurement::Value(c.constant.value.value),
            Err(e) => Measurement::Error(e.to_string()),
        }
    }
}

fn registry_with_constant() -> Registry {
    let mut registry = Registry::new(&Config::default());
    registry.add_source(Constant);
    registry
}

const PLAN: &str =
    "name: p\nflag: f\nphases: [ { percent: 5 } ]\ngates:\n  - name: c\n    constant: { value: 3 }\n    below: 5\n";

#[tokio::test]
async fn a_source_added_to_a_registry_is_checked_resolved_and_measured() {
    let registry = registry_with_constant();
    let (plan, notes) = sluice_plan::load_with("p.yaml", PLAN, None, &registry).expect("a plan using the new source");
    assert!(notes.is_empty(), "{notes:?}");
    let check = &plan.gates[0].value;
    assert_eq!(check.source_kind(&plan, &registry).as_deref(), Some("constant"));
    let values = BTreeMap::new();
    let cx = MeasureContext::outside_a_rollout(&plan, &values, 0);
    assert_eq!(Plugins::measure(&registry, check, &cx).await, Measurement::Value(3.0));

    // Its own rule, at its line and column.
    let bad = PLAN.replace("value: 3", "value: -3");
    let problems = sluice_plan::load_with("p.yaml", &bad, None, &registry).unwrap_err();
    assert_eq!(
        problems[0].to_string(),
        "p.yaml:6:15: error: `gates[0].constant.value`: a constant here is never negative"
    );
    // An unknown key is refused by the plug-in, with its known keys listed.
    let typo = PLAN.replace("value: 3", "valeu: 3");
    let problems = sluice_plan::load_with("p.yaml", &typo, None, &registry).unwrap_err();
    let text = problems[0].to_string();
    assert!(
        text.starts_with("p.yaml:6:17: error: `gates[0].constant.valeu`: unknown field `valeu`, expected `value`"),
        "{text}"
    );

    // A registry without it: the keys name no source here, and plan check says which ones there are.
    let without = Registry::new(&Config::default());
    let problems = sluice_plan::load_with("p.yaml", PLAN, None, &without).unwrap_err();
    let text = problems[0].to_string();
    assert!(text.contains("`constant` is not a key of a check"), "{text}");
    assert!(text.contains("`query: PROMQL`") && text.contains("`json: {url, pointer}`"), "{text}");
    // Named explicitly, an unknown source is refused with the ones this server has.
    let named = PLAN.replace("constant: { value: 3 }", "source: constant");
    let problems = sluice_plan::load_with("p.yaml", &named, None, &without).unwrap_err();
    assert!(
        problems[0]
            .to_string()
            .contains("unknown source `constant`: this server has builtin, command, http, json, prometheus"),
        "{problems:?}"
    );
}

#[test]
fn every_kind_is_listed_by_the_registry_with_the_keys_that_name_it() {
    let registry = registry_with_constant();
    let sources = registry.kinds(Family::Source).unwrap();
    let names: Vec<&str> = sources.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["builtin", "command", "constant", "http", "json", "prometheus"]);
    let keys: Vec<&str> = sources.iter().flat_map(|k| k.keys.iter().copied()).collect();
    let mut unique = keys.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), keys.len(), "a key names one source: {keys:?}");
    let actions: Vec<String> = registry.kinds(Family::Action).unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(actions, ["exec", "webhook"]);
    let notifiers: Vec<String> = registry.kinds(Family::Notifier).unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(notifiers, ["alertmanager", "slack", "webhook"]);
}

/// The plan crate's code names no kind of plug-in, nor any key of one: those live in the plug-ins' files.
/// (Its documentation shows plans, which name them; comments are left out.)
#[test]
fn the_plan_format_keeps_no_list_of_kinds() {
    let registry = Registry::new(&Config::default());
    let mut words: Vec<String> = Vec::new();
    for family in [Family::Source, Family::Action, Family::Notifier] {
        for k in registry.kinds(family).unwrap() {
            words.push(k.name.clone());
            words.extend(k.keys.iter().map(|s| s.to_string()));
        }
    }
    words.extend(["reduce", "slo", "min_samples", "value_from", "env", "dir"].map(String::from));
    words.sort();
    words.dedup();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sluice-plan/src");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // Code only: up to the unit tests, without comment lines.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            let line = line.trim_start();
            // The template names every plan has (`{{env}}` among them) are the engine's, not a plug-in's,
            // though `exec`'s `env:` key is spelled the same.
            if line.starts_with("//") || line.starts_with("pub const BUILTIN_TEMPLATES") {
                continue;
            }
            for w in &words {
                if line.contains(&format!("\"{w}\"")) {
                    found.push(format!("{}:{}: \"{w}\"", path.file_name().unwrap().to_string_lossy(), n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "the plan crate names plug-ins' kinds or keys: {found:#?}");
}

/// A JSON document on loopback, answering each path as scripted.
async fn documents() -> String {
    let app = axum::Router::new()
        .route(
            "/stats",
            axum::routing::get(|| async {
                r#"{"queues": {"checkout": {"depth": 42, "lag": "1.5"}, "old": null}, "list": [1]}"#
            }),
        )
        .route("/broken", axum::routing::get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "oops") }))
        .route("/text", axum::routing::get(|| async { "not json" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn the_json_source_reads_a_number_at_a_pointer_over_http() {
    let url = documents().await;
    let registry = Registry::new(&Config::default());
    let gate = |path: &str, pointer: &str| {
        format!(
            "  - name: g{}\n    json: {{ url: '{url}{path}', pointer: '{pointer}' }}\n    below: 100\n",
            pointer.len() + path.len()
        )
    };
    let yaml = format!(
        "name: p\nflag: f\nphases: [ {{ percent: 5 }} ]\ngates:\n{}{}{}{}{}{}",
        gate("/stats", "/queues/checkout/depth"),
        gate("/stats", "/queues/checkout/lag"),
        gate("/stats", "/queues/old"),
        gate("/stats", "/list"),
        gate("/broken", "/x"),
        gate("/text", "/y"),
    );
    let (plan, _) = sluice_plan::load_with("p.yaml", &yaml, None, &registry).unwrap();
    let values = BTreeMap::new();
    let cx = MeasureContext::outside_a_rollout(&plan, &values, 0);
    let mut got = Vec::new();
    for g in &plan.gates {
        got.push(Plugins::measure(&registry, &g.value, &cx).await);
    }
    assert_eq!(got[0], Measurement::Value(42.0));
    assert_eq!(got[1], Measurement::Value(1.5), "a number written as text");
    assert_eq!(got[2], Measurement::Empty, "null is no data");
    assert!(matches!(&got[3], Measurement::Error(e) if e.contains("not a number")), "{:?}", got[3]);
    assert!(matches!(&got[4], Measurement::Error(e) if e.contains("500")), "{:?}", got[4]);
    assert!(matches!(&got[5], Measurement::Error(e) if e.contains("not JSON")), "{:?}", got[5]);

    // Its own mistakes, at their place, with the keys it knows.
    let bad = "name: p\nflag: f\nphases: [ { percent: 5 } ]\ngates:\n  - name: g\n    json: { url: 'http://127.0.0.1:1/s', pointer: depth }\n    below: 1\n  - name: h\n    json: { url: 'http://127.0.0.1:1/s', pointr: /depth }\n    below: 1\n";
    let problems = sluice_plan::load_with("p.yaml", bad, None, &registry).unwrap_err();
    let text: Vec<String> = problems.iter().filter(|p| p.level == Level::Error).map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0].starts_with("p.yaml:6:51: error: `gates[0].json.pointer`: `depth` is not a JSON pointer"),
        "{text:?}"
    );
    assert!(text[1].starts_with("p.yaml:9:42: error: `gates[1].json.pointr`: unknown field `pointr`, expected one of `url`, `pointer`, `headers`"), "{text:?}");
}
