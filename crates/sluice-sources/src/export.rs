//! A plan in the tools on-call already uses: Prometheus recording and alerting rules equivalent to its
//! Prometheus checks ([`prometheus_rules`]), and a Grafana dashboard with a panel per gate and trigger and
//! its threshold drawn ([`grafana_dashboard`]). Pure: both return JSON values (a rules file is YAML, and
//! JSON is YAML) and notes on what could not be exported.
//!
//! Templates become what they can outside a rollout: `flag`, `base`, `ramped`, `interval` and `vars`
//! are filled from the plan (the ramp's variants default to `off` and `on`); a query that uses `phase`
//! or `percent` is exported once per phase, with a `phase` label, in rules, and reads the dashboard
//! variables `$phase` and `$percent` in panels.
//!
//! ```
//! let yaml = "name: checkout\nflag: f\nanalysis: { prometheus: { url: 'http://127.0.0.1:9090' } }\nphases: [ { percent: 10 }, { percent: 100 } ]\ntriggers:\n  - { name: errors, query: 'sum(rate(errors_total{variant=\"{{ramped}}\"}[5m]))', above: 0.05, for: 5m, severity: hard }\n";
//! let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
//! let (rules, notes) = sluice_sources::export::prometheus_rules(&plan);
//! assert!(notes.is_empty(), "{notes:?}");
//! let alert = &rules["groups"][0]["rules"][1];
//! assert_eq!(alert["alert"], "SluiceCheckoutErrors");
//! assert_eq!(alert["expr"], "sluice:checkout:errors > 0.05");
//! assert_eq!(alert["for"], "5m");
//! assert_eq!(rules["groups"][0]["rules"][0]["expr"], "sum(rate(errors_total{variant=\"on\"}[5m]))");
//! ```

use std::collections::BTreeMap;

use serde_json::{json, Value};

use sluice_plan::model::{Check, SIGNAL};
use sluice_plan::Plan;

use crate::sources::prometheus::{PrometheusCheck, Reduce};

/// A check's kind, as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gate,
    Trigger,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gate => "gate",
            Kind::Trigger => "trigger",
        }
    }
}

/// Every check of the plan once: the plan's gates, each phase's own gates (with the phase), the triggers.
fn checks(plan: &Plan) -> Vec<(Kind, &Check, Option<usize>)> {
    let mut out: Vec<(Kind, &Check, Option<usize>)> = plan.gates.iter().map(|g| (Kind::Gate, &g.value, None)).collect();
    for (i, p) in plan.phases.iter().enumerate() {
        out.extend(p.value.gates.iter().map(|g| (Kind::Gate, &g.value, Some(i))));
    }
    out.extend(plan.triggers.iter().map(|t| (Kind::Trigger, &t.value, None)));
    out
}

/// The template values that hold for the whole rollout.
fn static_values(plan: &Plan) -> BTreeMap<String, String> {
    let mut v: BTreeMap<String, String> = plan.vars.iter().map(|(k, s)| (k.clone(), s.0.clone())).collect();
    let (base, ramped) = match &plan.ramp {
        Some(r) => (r.value.base.value.clone(), r.value.ramped.value.clone()),
        None => ("off".to_string(), "on".to_string()),
    };
    v.insert("flag".into(), plan.flag.value.clone());
    v.insert("base".into(), base);
    v.insert("ramped".into(), ramped);
    v.insert("interval".into(), plan.analysis.interval.value.to_string());
    v
}

/// The values of phase `i` on top of `values`.
fn phase_values(plan: &Plan, values: &BTreeMap<String, String>, i: usize) -> BTreeMap<String, String> {
    let mut v = values.clone();
    let phase = &plan.phases[i].value;
    if let Some(r) = &phase.ramp {
        v.insert("base".into(), r.value.base.value.clone());
        v.insert("ramped".into(), r.value.ramped.value.clone());
    }
    v.insert("phase".into(), (i + 1).to_string());
    v.insert("percent".into(), phase.percent.value.to_string());
    v
}

/// Whether `text` reads a value that changes from phase to phase.
fn varies_by_phase(plan: &Plan, text: &str, values: &BTreeMap<String, String>) -> bool {
    // Against the phase-free rendering too: one phase, or phases that render alike, still fill `{{percent}}`.
    let free = sluice_plan::render(text, values);
    (0..plan.phases.len()).any(|i| sluice_plan::render(text, &phase_values(plan, values, i)) != free)
}

fn reduced(expr: String, reduce: Option<Reduce>) -> String {
    match reduce {
        None => expr,
        Some(Reduce::Max) => format!("max({expr})"),
        Some(Reduce::Min) => format!("min({expr})"),
        Some(Reduce::Sum) => format!("sum({expr})"),
        Some(Reduce::Avg) => format!("avg({expr})"),
    }
}

/// A check's PromQL with `values`: one expression, or for an SLO one burn rate per window (with the
/// window's name).
fn expressions(check: &PrometheusCheck, values: &BTreeMap<String, String>) -> Vec<(Option<String>, String)> {
    if let Some(slo) = &check.slo {
        let allowed = 1.0 - slo.value.objective / 100.0;
        return slo
            .value
            .windows
            .iter()
            .map(|w| {
                let mut v = values.clone();
                v.insert("window".into(), w.value.to_string());
                let good = reduced(sluice_plan::render(&slo.value.good.value, &v), check.reduce);
                let total = reduced(sluice_plan::render(&slo.value.total.value, &v), check.reduce);
                (Some(w.value.to_string()), format!("(1 - ({good}) / ({total})) / {allowed}"))
            })
            .collect();
    }
    match &check.query {
        Some(q) => vec![(None, reduced(sluice_plan::render(&q.value, values), check.reduce))],
        None => Vec::new(),
    }
}

/// `[a-z0-9_]`: a name part of a recorded series.
fn snake(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// `CamelCase`: an alert's name part.
fn camel(s: &str) -> String {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The condition under which `check` holds, on the series `e`.
fn condition(check: &Check, e: &str) -> Option<String> {
    if let Some(a) = check.above {
        return Some(format!("{e} > {a}"));
    }
    if let Some(b) = check.below {
        return Some(format!("{e} < {b}"));
    }
    match check.between.as_ref().map(|b| b.value.as_slice()) {
        Some([lo, hi]) => Some(format!("{e} >= {lo} and {e} <= {hi}")),
        _ => None,
    }
}

/// The threshold as people read it: `> 0.05`, `< 0.01`, `within [0.7, 1]`.
fn threshold_text(check: &Check) -> String {
    if let Some(a) = check.above {
        return format!("> {a}");
    }
    if let Some(b) = check.below {
        return format!("< {b}");
    }
    match check.between.as_ref().map(|b| b.value.as_slice()) {
        Some([lo, hi]) => format!("within [{lo}, {hi}]"),
        _ => String::new(),
    }
}

/// Recording rules for every Prometheus check of `plan` (`sluice:PLAN:CHECK`, and `…:burn_WINDOW` per SLO
/// window) and an alerting rule for each Prometheus trigger (`SluicePlanCheck`), equivalent to how Sluice
/// judges it: its threshold on the same query, held for its `for`. Labels: `plan`, `flag`, `check`,
/// `kind`, and `severity` (`critical` for a hard trigger, `warning` for a soft one) on alerts — never
/// `sluice_rollout` or `sluice_flag`, which would make Sluice's own alert receiver act on them. Returns the
/// rules file and notes on the checks left out (other sources, baselines, dry runs).
pub fn prometheus_rules(plan: &Plan) -> (Value, Vec<String>) {
    let values = static_values(plan);
    let plan_name = &plan.name.value;
    let mut rules = Vec::new();
    let mut notes = Vec::new();
    for (kind, check, only_phase) in checks(plan) {
        let name = &check.name.value;
        let source = source_of(check, plan);
        if source == SIGNAL {
            notes.push(format!("trigger `{name}` is a signal (fired by a person or an alert): nothing to export"));
            continue;
        }
        let query = match (source.as_str(), PrometheusCheck::of(check)) {
            (crate::sources::prometheus::KIND, Ok(query)) => query,
            _ => {
                notes.push(format!(
                    "{} `{name}` ({source} source) is measured by Sluice, not Prometheus: not exported (Sluice's /metrics has it as sluice_check_value)",
                    kind.as_str(),
                ));
                continue;
            }
        };
        let text: String = [
            query.query.as_ref().map(|q| q.value.clone()),
            query.slo.as_ref().map(|s| format!("{} {}", s.value.good.value, s.value.total.value)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let phases: Vec<Option<usize>> = match only_phase {
            Some(i) => vec![Some(i)],
            None if varies_by_phase(plan, &text, &values) => (0..plan.phases.len()).map(Some).collect(),
            None => vec![None],
        };
        let record_base = format!("sluice:{}:{}", snake(plan_name), snake(name));
        for phase in phases {
            let v = phase.map_or_else(|| values.clone(), |i| phase_values(plan, &values, i));
            let mut labels = json!({"plan": plan_name, "flag": plan.flag.value, "check": name, "kind": kind.as_str()});
            if let Some(i) = phase {
                labels["phase"] = json!((i + 1).to_string());
            }
            let selector = phase.map_or_else(String::new, |i| format!("{{phase=\"{}\"}}", i + 1));
            let mut recorded = Vec::new();
            for (window, expr) in expressions(&query, &v) {
                let record = match &window {
                    Some(w) => format!("{record_base}:burn_{w}"),
                    None => record_base.clone(),
                };
                rules.push(json!({"record": record, "expr": expr, "labels": labels}));
                recorded.push(format!("{record}{selector}"));
            }
            if check.baseline.is_some() {
                notes.push(format!(
                    "{} `{name}` compares with a baseline captured when a rollout starts: exported as its query only (recorded, no alert)",
                    kind.as_str()
                ));
                continue;
            }
            if kind != Kind::Trigger {
                continue;
            }
            if check.dry_run {
                notes.push(format!("trigger `{name}` is a dry run: recorded, no alert"));
                continue;
            }
            let conditions: Vec<String> = recorded.iter().filter_map(|r| condition(check, r)).collect();
            if conditions.is_empty() {
                continue;
            }
            // Every window must burn that fast: the multi-window rule, as Sluice judges it.
            let expr = conditions.join(" and ");
            let hard = check.severity.as_ref().is_some_and(|s| s.value == sluice_plan::model::Severity::Hard);
            let mut alert_labels = labels.clone();
            alert_labels["severity"] = json!(if hard { "critical" } else { "warning" });
            let suffix = phase.map_or_else(String::new, |i| format!("Phase{}", i + 1));
            let mut alert = json!({
                "alert": format!("Sluice{}{}{suffix}", camel(plan_name), camel(name)),
                "expr": expr,
                "labels": alert_labels,
                "annotations": {
                    "summary": format!("{plan_name}: {} trigger `{name}` holds ({{{{ $value }}}} {})", if hard { "hard" } else { "soft" }, threshold_text(check)),
                    "description": check.description.clone().unwrap_or_else(|| format!(
                        "Sluice {} the rollout of flag `{}` when this holds.",
                        if hard { "rolls back" } else { "pauses" },
                        plan.flag.value
                    )),
                },
            });
            if let Some(f) = &check.for_ {
                alert["for"] = json!(f.value.to_string());
            }
            rules.push(alert);
        }
    }
    let rules_file = json!({
        "groups": [{
            "name": format!("sluice-{}", snake(plan_name)),
            "interval": plan.analysis.interval.value.to_string(),
            "rules": rules,
        }]
    });
    (rules_file, notes)
}

/// A Grafana dashboard for `plan`: a panel per gate and trigger with its threshold drawn as a line (and
/// coloured steps), the rollout's percentage, and variables for the Prometheus data source and the phase.
/// Prometheus checks chart their own query; the other sources chart `sluice_check_value` from Sluice's
/// `/metrics` (Prometheus scraping Sluice).
///
/// ```
/// let yaml = "name: checkout\nflag: f\nphases: [ { percent: 10 }, { percent: 100 } ]\ngates:\n  - { name: errors, metric: error_rate, below: 0.02 }\n";
/// let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
/// let d = sluice_sources::export::grafana_dashboard(&plan);
/// let panel = d["panels"].as_array().unwrap().iter().find(|p| p["title"] == "gate: errors").unwrap();
/// assert_eq!(panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"], 0.02);
/// assert!(panel["targets"][0]["expr"].as_str().unwrap().starts_with("sluice_check_value{"));
/// ```
pub fn grafana_dashboard(plan: &Plan) -> Value {
    let mut values = static_values(plan);
    values.insert("phase".into(), "$phase".into());
    values.insert("percent".into(), "$percent".into());
    let plan_name = &plan.name.value;
    let selector = |extra: &str| format!("{{plan=\"{plan_name}\"{extra}}}");
    let mut panels = vec![json!({
        "type": "timeseries",
        "title": "rollout percentage",
        "description": format!("The percentage of flag `{}` the rollout serves the ramped variant.", plan.flag.value),
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "targets": [{"refId": "A", "expr": format!("sluice_rollout_percent{}", selector("")), "legendFormat": "{{rollout}}"}],
        "fieldConfig": {"defaults": {"unit": "percent", "min": 0, "max": 100}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
    })];
    for (kind, check, phase) in checks(plan) {
        let name = &check.name.value;
        let source = source_of(check, plan);
        let mut targets = Vec::new();
        let query = PrometheusCheck::of(check).ok().filter(|_| source == crate::sources::prometheus::KIND);
        if let Some(query) = &query {
            for (i, (window, expr)) in expressions(query, &values).into_iter().enumerate() {
                let legend = window.map_or_else(|| name.clone(), |w| format!("burn rate {w}"));
                targets.push(
                    json!({"refId": ((b'A' + i as u8) as char).to_string(), "expr": expr, "legendFormat": legend}),
                );
            }
        } else {
            let expr =
                format!("sluice_check_value{}", selector(&format!(",check=\"{name}\",kind=\"{}\"", kind.as_str())));
            targets.push(json!({"refId": "A", "expr": expr, "legendFormat": "{{rollout}}"}));
        }
        let (red, green) = ("red", "green");
        let steps = match (check.above, check.below, check.between.as_ref().map(|b| b.value.clone())) {
            (Some(a), _, _) => {
                // A trigger fires above; a gate passes above.
                let (low, high) = if kind == Kind::Trigger { (green, red) } else { (red, green) };
                json!([{"color": low, "value": null}, {"color": high, "value": a}])
            }
            (None, Some(b), _) => {
                let (low, high) = if kind == Kind::Trigger { (red, green) } else { (green, red) };
                json!([{"color": low, "value": null}, {"color": high, "value": b}])
            }
            (None, None, Some(b)) if b.len() == 2 => {
                let (out, inside) = if kind == Kind::Trigger { (green, red) } else { (red, green) };
                json!([{"color": out, "value": null}, {"color": inside, "value": b[0]}, {"color": out, "value": b[1]}])
            }
            // A comparison's value is how far its confidence bound is past the margin: 0 is the line.
            _ if check.compare.is_some() => json!([{"color": green, "value": null}, {"color": red, "value": 0.0}]),
            _ => json!([{"color": green, "value": null}]),
        };
        let mut description = format!(
            "{} `{name}` ({} source): {}{}",
            kind.as_str(),
            source.as_str(),
            threshold_text(check),
            check.for_.as_ref().map(|f| format!(" for {}", f.value)).unwrap_or_default()
        );
        let margin = match (check.max_increase, check.max_increase_pct) {
            (Some(m), _) => Some(format!("+{m}")),
            (None, Some(p)) => Some(format!("+{p}%")),
            _ => None,
        };
        if let Some(m) = margin {
            if check.compare.is_some() {
                description.push_str(&format!(
                    "; compared with the {} by a margin of {m}: the value is the confidence bound's distance past the margin (0 is the line)",
                    match check.compare.as_ref().map(|c| c.value) {
                        Some(sluice_plan::model::Compare::Control) => "control",
                        _ => "pre-rollout baseline",
                    }
                ));
            } else {
                description.push_str(&format!("; at most {m} over the baseline captured when a rollout starts"));
            }
        }
        if let Some(i) = phase {
            description.push_str(&format!("; phase {} only", i + 1));
        }
        if kind == Kind::Trigger {
            let hard = check.severity.as_ref().is_some_and(|s| s.value == sluice_plan::model::Severity::Hard);
            description.push_str(if hard { "; hard: rolls back" } else { "; soft: pauses and asks" });
        }
        // A phase's own gate may share its name with another phase's: the phase tells them apart.
        let title = match phase {
            Some(i) => format!("{}: {name} (phase {})", kind.as_str(), i + 1),
            None => format!("{}: {name}", kind.as_str()),
        };
        panels.push(json!({
            "type": "timeseries",
            "title": title,
            "description": description,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "targets": targets,
            "fieldConfig": {
                "defaults": {
                    "thresholds": {"mode": "absolute", "steps": steps},
                    "custom": {"thresholdsStyle": {"mode": "line+area"}},
                },
                "overrides": [],
            },
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        }));
    }
    for (i, p) in panels.iter_mut().enumerate() {
        p["id"] = json!(i + 1);
        p["gridPos"] = json!({"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8});
    }
    let phase_options: Vec<String> = (1..=plan.phases.len()).map(|i| i.to_string()).collect();
    let percent_options: Vec<String> = plan.phases.iter().map(|p| p.value.percent.value.to_string()).collect();
    let custom = |name: &str, label: &str, options: &[String]| {
        json!({
            "name": name,
            "label": label,
            "type": "custom",
            "query": options.join(","),
            "current": {"text": options[0], "value": options[0]},
            "options": options.iter().enumerate().map(|(i, o)| json!({"text": o, "value": o, "selected": i == 0})).collect::<Vec<_>>(),
        })
    };
    let uid: String = format!("sluice-{}", snake(plan_name)).chars().take(40).collect();
    json!({
        "title": format!("Sluice: {plan_name}"),
        "uid": uid,
        "description": plan.description.clone().unwrap_or_default(),
        "tags": ["sluice", plan.flag.value],
        "timezone": "utc",
        "editable": true,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"},
            custom("phase", "phase", &phase_options),
            custom("percent", "percent", &percent_options),
        ]},
        "annotations": {"list": []},
        "panels": panels,
    })
}

/// [`prometheus_rules`] as YAML, each rule's keys in the order people read them (`record`/`alert`,
/// `expr`, `for`, `labels`, `annotations`).
pub fn prometheus_rules_yaml(plan: &Plan) -> (String, Vec<String>) {
    #[derive(serde::Serialize)]
    struct Rule {
        #[serde(skip_serializing_if = "Option::is_none")]
        record: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        alert: Option<String>,
        expr: String,
        #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
        for_: Option<String>,
        labels: BTreeMap<String, String>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        annotations: BTreeMap<String, String>,
    }
    #[derive(serde::Serialize)]
    struct Group {
        name: String,
        interval: String,
        rules: Vec<Rule>,
    }
    #[derive(serde::Serialize)]
    struct File {
        groups: Vec<Group>,
    }
    let (rules, notes) = prometheus_rules(plan);
    let text = |v: &Value| v.as_str().map(str::to_string);
    let map = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default()
    };
    let groups = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| Group {
            name: text(&g["name"]).unwrap_or_default(),
            interval: text(&g["interval"]).unwrap_or_default(),
            rules: g["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| Rule {
                    record: text(&r["record"]),
                    alert: text(&r["alert"]),
                    expr: text(&r["expr"]).unwrap_or_default(),
                    for_: text(&r["for"]),
                    labels: map(&r["labels"]),
                    annotations: map(&r["annotations"]),
                })
                .collect(),
        })
        .collect();
    let yaml = serde_saphyr::to_string(&File { groups }).expect("rules serialize");
    (yaml, notes)
}

/// The source of a check as this build's plug-ins tell it (`signal` when nothing names one).
fn source_of(check: &Check, plan: &Plan) -> String {
    check.source_kind(plan, crate::described()).unwrap_or_else(|| "unknown".into())
}
