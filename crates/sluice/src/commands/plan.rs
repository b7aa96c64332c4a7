//! `sluice plan check`: every problem of each plan, against the server's flags and segments, a flag file
//! (`--catalog`) or nothing (`--offline`), and against the plug-ins this build of Sluice has.

use std::path::PathBuf;

use serde_json::{json, Value};
use sluice_plan::Level;

use super::read;
use crate::cli::{Output, PlanCmd};
use crate::client::{CliError, Client};
use crate::output::print_json;

/// What to say when the server cannot give its flags and segments.
const WITHOUT_SERVER: &str = "  plan check can run without the server: --offline checks the plan alone, \
--catalog FILE checks it against a flag file (YAML or JSON) instead of the server's flags and segments.";

pub async fn run(client: &Client, output: Output, cmd: PlanCmd) -> Result<(), CliError> {
    match cmd {
        PlanCmd::Check { files, catalog, offline } => check(client, output, files, catalog, offline).await,
    }
}

/// Reads a flag file (YAML or JSON) or the server's flags and segments into what plans are checked against.
fn catalog_of(flags: &Value, segments: &Value) -> sluice_plan::Catalog {
    let names = |v: &Value, key: &str| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|x| x[key].as_str().map(str::to_string)).collect()
    };
    sluice_plan::Catalog {
        flags: flags
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                let mut variants = names(&f["variants"], "name");
                if f.get("variants").is_none() {
                    variants = vec!["off".into(), "on".into()];
                }
                sluice_plan::CatalogFlag { key: f["key"].as_str().unwrap_or("").to_string(), variants }
            })
            .collect(),
        segments: names(segments, "name"),
    }
}

/// The server's flags and segments; a failure says how to check without the server.
async fn server_catalog(client: &Client) -> Result<sluice_plan::Catalog, CliError> {
    let get = |path| async move { client.get(path).await.map_err(|e| CliError(format!("{e}\n{WITHOUT_SERVER}"))) };
    let flags = get("/api/v1/flags").await?;
    let segments = get("/api/v1/segments").await?;
    Ok(catalog_of(&flags["data"], &segments["data"]))
}

async fn check(
    client: &Client,
    output: Output,
    files: Vec<PathBuf>,
    catalog: Option<PathBuf>,
    offline: bool,
) -> Result<(), CliError> {
    let catalog = match (catalog, offline) {
        (_, true) => None,
        (Some(path), _) => {
            let file: Value =
                serde_saphyr::from_str(&read(&path)?).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
            Some(catalog_of(&file["flags"], &file["segments"]))
        }
        (None, false) => Some(server_catalog(client).await?),
    };
    // The plug-ins `sluice serve` builds: a plan that needs another one is valid but cannot start.
    let plugins = sluice_sources::Registry::new(&sluice_sources::Config::default());
    let mut failed = 0;
    let mut report = Vec::new();
    for path in &files {
        let name = path.display().to_string();
        let text = read(path)?;
        let mut programs = Vec::new();
        let (problems, summary) = match sluice_plan::load_with(&name, &text, catalog.as_ref(), &plugins) {
            Ok((plan, notes)) => {
                // Who may start it depends on them: admins, or operators where the server allows each.
                programs = sluice_plan::programs(&plan, &plugins).into_iter().collect();
                let runs = if programs.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; runs {} (an admin starts it, or operators with sluice serve --allow-exec)",
                        programs.join(", ")
                    )
                };
                let gates = plan.gates.len() + plan.phases.iter().map(|p| p.value.gates.len()).sum::<usize>();
                let lacking = if notes.iter().any(|p| p.level == Level::Unavailable) {
                    "; it uses what this server lacks (see the notes): it cannot start here"
                } else {
                    ""
                };
                (
                    notes,
                    Some(format!(
                        "{name}: ok — {} phases, {gates} gates, {} triggers{runs}{lacking}",
                        plan.phases.len(),
                        plan.triggers.len()
                    )),
                )
            }
            Err(problems) => {
                failed += 1;
                (problems, None)
            }
        };
        if output == Output::Table {
            for p in &problems {
                println!("{p}");
            }
            if let Some(s) = &summary {
                println!("{s}");
            }
        }
        report.push(json!({
            "file": name,
            "ok": summary.is_some(),
            "programs": programs,
            "problems": problems.iter().map(|p| json!({
                "level": if p.level == Level::Error { "error" } else { "note" },
                "unavailable": p.level == Level::Unavailable,
                "line": p.line, "column": p.column, "key": p.key, "message": p.message,
            })).collect::<Vec<_>>(),
        }));
    }
    if output == Output::Json {
        print_json(&json!(report));
    }
    if catalog.is_none() && output == Output::Table {
        println!("(flags, variants and segments were not checked: --offline)");
    }
    if failed > 0 {
        return Err(CliError(format!("{failed} of {} plan(s) cannot start", files.len())));
    }
    Ok(())
}
