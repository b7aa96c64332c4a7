//! `sluice export prometheus-rules|grafana PLAN`: a plan as Prometheus rules or a Grafana dashboard, so
//! on-call sees its checks where they already look. Runs here, without a server.

use std::path::Path;

use crate::cli::ExportCmd;
use crate::client::CliError;

pub fn run(cmd: ExportCmd, env: Option<&str>) -> Result<(), CliError> {
    let (plan_path, out, text, notes) = match cmd {
        ExportCmd::PrometheusRules { plan, out } => {
            let loaded = load(&plan, env)?;
            let (yaml, notes) = sluice_sources::export::prometheus_rules_yaml(&loaded);
            let header = format!(
                "# Prometheus rules equivalent to the Prometheus checks of {} (sluice export prometheus-rules).\n# Check: promtool check rules FILE\n",
                plan.display()
            );
            (plan, out, format!("{header}{yaml}"), notes)
        }
        ExportCmd::Grafana { plan, out } => {
            let loaded = load(&plan, env)?;
            let dashboard = sluice_sources::export::grafana_dashboard(&loaded);
            let json = serde_json::to_string_pretty(&dashboard).expect("json") + "\n";
            (plan, out, json, Vec::new())
        }
    };
    match out {
        Some(path) => {
            std::fs::write(&path, text).map_err(|e| CliError(format!("cannot write {}: {e}", path.display())))?
        }
        None => print!("{text}"),
    }
    for note in notes {
        eprintln!("{}: note: {note}", plan_path.display());
    }
    Ok(())
}

fn load(path: &Path, env: Option<&str>) -> Result<sluice_plan::Plan, CliError> {
    let text = super::read(path)?;
    let name = path.display().to_string();
    let mut plan = sluice_plan::load(&name, &text, None)
        .map(|(plan, _)| plan)
        .map_err(|problems| CliError(problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")))?;
    super::fill_env(&mut plan, &text, env)?;
    Ok(plan)
}
