//! `sluice export`: every example plan's Prometheus rules pass `promtool check rules`, an exported alert
//! fires in `promtool test rules` on a series that should fire it (and not on one that should not), and
//! every Grafana dashboard has the fields Grafana's dashboard model requires, a panel per gate and
//! trigger, and every threshold value.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::root;
use serde_json::Value;

fn examples() -> Vec<PathBuf> {
    let mut plans: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    plans.sort();
    assert!(plans.len() >= 6, "{plans:?}");
    plans
}

fn export(what: &str, plan: &Path, out: &Path) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["export", what])
        .arg(plan)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    String::from_utf8_lossy(&run.stderr).to_string()
}

fn promtool() -> Option<&'static str> {
    if Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some("promtool");
    }
    common::external::missing("promtool", "Debian: apt-get install prometheus");
    None
}

#[test]
fn every_example_plans_rules_pass_promtool_and_an_exported_alert_fires_on_its_series() {
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    for plan in examples() {
        let file = dir.path().join(format!("{}.rules.yaml", plan.file_stem().unwrap().to_string_lossy()));
        let notes = export("prometheus-rules", &plan, &file);
        let checked = Command::new(promtool).args(["check", "rules"]).arg(&file).output().unwrap();
        assert!(
            checked.status.success(),
            "{}: {}\n{}",
            plan.display(),
            String::from_utf8_lossy(&checked.stdout),
            std::fs::read_to_string(&file).unwrap()
        );
        // A builtin check is named in a note, not silently dropped.
        if std::fs::read_to_string(&plan).unwrap().contains("metric: ") {
            assert!(notes.contains("measured by Sluice, not Prometheus"), "{}: {notes}", plan.display());
        }
    }

    // The enforce plan's hard trigger: 4xx share above 5% for 5 minutes. Half the enforce requests fail
    // with 404 on one series; on the other, 1 in 100 does.
    std::fs::write(
        dir.path().join("test.yaml"),
        r#"rule_files: [ stage-validation-enforce.rules.yaml ]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'http_requests_total{code="404", variant="enforce"}'
        values: '0+60x20'
      - series: 'http_requests_total{code="200", variant="enforce"}'
        values: '0+60x20'
    alert_rule_test:
      - eval_time: 3m
        alertname: SluiceStageValidationEnforceUnexpected4xxShift
        exp_alerts: []
      - eval_time: 12m
        alertname: SluiceStageValidationEnforceUnexpected4xxShift
        exp_alerts:
          - exp_labels: { severity: critical, plan: stage-validation-enforce, flag: stage_validation, check: unexpected-4xx-shift, kind: trigger }
            exp_annotations:
              summary: "stage-validation-enforce: hard trigger `unexpected-4xx-shift` holds (0.5 > 0.05)"
              description: "Sluice rolls back the rollout of flag `stage_validation` when this holds."
  - interval: 1m
    input_series:
      - series: 'http_requests_total{code="404", variant="enforce"}'
        values: '0+1x20'
      - series: 'http_requests_total{code="200", variant="enforce"}'
        values: '0+99x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: SluiceStageValidationEnforceUnexpected4xxShift
        exp_alerts: []
"#,
    )
    .unwrap();
    let tested = Command::new(promtool).args(["test", "rules"]).arg(dir.path().join("test.yaml")).output().unwrap();
    assert!(
        tested.status.success(),
        "{}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
}

#[test]
fn every_example_plans_dashboard_has_grafanas_fields_a_panel_per_check_and_every_threshold() {
    let dir = tempfile::tempdir().unwrap();
    for plan_path in examples() {
        let file = dir.path().join("dashboard.json");
        export("grafana", &plan_path, &file);
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let at = plan_path.display();
        // What Grafana's dashboard model requires to import it.
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{at}");
        assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40), "{at}");
        assert!(d["schemaVersion"].as_u64().is_some(), "{at}");
        assert!(d["templating"]["list"].as_array().unwrap().iter().any(|v| v["type"] == "datasource"), "{at}");
        let panels = d["panels"].as_array().unwrap();
        let mut ids = std::collections::BTreeSet::new();
        for p in panels {
            assert!(ids.insert(p["id"].as_u64().unwrap()), "{at}: panel ids are unique");
            assert!(p["type"].is_string() && p["title"].is_string(), "{at}: {p}");
            for k in ["h", "w", "x", "y"] {
                assert!(p["gridPos"][k].is_u64(), "{at}: gridPos.{k} of {p}");
            }
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{at}: {p}");
            assert!(
                targets.iter().all(|t| t["refId"].is_string() && t["expr"].as_str().is_some_and(|e| !e.contains("{{"))),
                "{at}: a template left: {p}"
            );
        }
        // A panel per gate and trigger, with every threshold value among its steps.
        let text = std::fs::read_to_string(&plan_path).unwrap();
        let (plan, _) = sluice_plan::load(&at.to_string(), &text, None).unwrap();
        let mut checks: Vec<(String, &sluice_plan::model::Check)> =
            plan.gates.iter().map(|g| (format!("gate: {}", g.value.name.value), &g.value)).collect();
        for (i, p) in plan.phases.iter().enumerate() {
            checks.extend(
                p.value.gates.iter().map(|g| (format!("gate: {} (phase {})", g.value.name.value, i + 1), &g.value)),
            );
        }
        checks.extend(plan.triggers.iter().map(|t| (format!("trigger: {}", t.value.name.value), &t.value)));
        for (title, c) in checks {
            let panel = panels
                .iter()
                .find(|p| p["title"] == title.as_str())
                .unwrap_or_else(|| panic!("{at}: no panel `{title}`"));
            let steps: Vec<f64> = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["value"].as_f64())
                .collect();
            let mut want: Vec<f64> = c.above.into_iter().chain(c.below).collect();
            want.extend(c.between.iter().flat_map(|b| b.value.clone()));
            for w in want {
                assert!(steps.contains(&w), "{at}: `{title}` lacks its threshold {w}: {steps:?}");
            }
        }
    }
}
