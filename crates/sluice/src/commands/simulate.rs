//! `sluice simulate`: runs a plan in virtual time against a recorded timeline and prints every decision.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::read;
use crate::cli::Output;
use crate::client::CliError;
use crate::output::{offset, print_json};

pub fn run(output: Output, plan_path: PathBuf, metrics: PathBuf, verbose: bool) -> Result<(), CliError> {
    let name = plan_path.display().to_string();
    let text = read(&plan_path)?;
    let (plan, _) = sluice_plan::load(&name, &text, None)
        .map_err(|problems| CliError(problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")))?;
    let csv = read(&metrics)?;
    let mut timeline =
        sluice_engine::timeline::Timeline::parse(&csv).map_err(|e| CliError(format!("{}: {e}", metrics.display())))?;
    let started = std::time::Instant::now();
    let sim = sluice_engine::simulate(&plan, &mut timeline, sluice_engine::time_limit(&plan));
    let took = started.elapsed();
    if output == Output::Json {
        let steps: Vec<Value> = sim
            .steps
            .iter()
            .map(|s| json!({"at_ms": s.at, "decisions": s.decisions, "effects": s.effects.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>()}))
            .collect();
        print_json(
            &json!({"status": sim.rollout.status, "history": sim.rollout.history, "ticks": sim.ticks, "refused": sim.refused, "steps": steps}),
        );
        return Ok(());
    }
    let mut last: std::collections::BTreeMap<String, sluice_engine::Outcome> = Default::default();
    for step in &sim.steps {
        for d in &step.decisions {
            let key = format!("{:?}:{}", d.kind, d.check);
            let changed = last.insert(key, d.outcome) != Some(d.outcome);
            if verbose || changed {
                let value = d.value.map_or_else(|| d.note.clone().unwrap_or_default(), |v| format!("{v}"));
                let kind = if d.kind == sluice_engine::CheckKind::Gate { "gate" } else { "trigger" };
                let dry = if d.dry_run { " (dry run)" } else { "" };
                println!(
                    "{:>12}  {kind:<7} {:<28} {value:>10} {:<10} {:?} {}/{}{dry}",
                    offset(d.at),
                    d.check,
                    d.threshold,
                    d.outcome,
                    d.run,
                    d.needed
                );
            }
        }
        for e in &step.effects {
            match e {
                sluice_engine::Effect::Notify(ev) => println!(
                    "{:>12}  == {} (phase {}, {}%): {}",
                    offset(ev.at),
                    ev.kind.to_uppercase(),
                    ev.phase + 1,
                    ev.percent,
                    ev.reason
                ),
                sluice_engine::Effect::SetRamp { percent, .. } => {
                    println!("{:>12}  -> set {} to {percent}%", offset(step.at), plan.flag.value)
                }
                sluice_engine::Effect::RestoreFlag => {
                    println!("{:>12}  -> restore {} as before the rollout", offset(step.at), plan.flag.value)
                }
                sluice_engine::Effect::FlagsOff { flags } => {
                    println!("{:>12}  -> switch off {}", offset(step.at), flags.join(", "))
                }
                sluice_engine::Effect::ClearOverrides => {
                    println!("{:>12}  -> clear the overrides of {}", offset(step.at), plan.flag.value)
                }
                sluice_engine::Effect::Run { action: purpose, .. } => {
                    let Some(action) = purpose.resolve(&plan) else { continue };
                    let what = action
                        .exec
                        .as_ref()
                        .map(|a| a.value.join(" "))
                        .or_else(|| action.name.clone())
                        .unwrap_or_else(|| "webhook".into());
                    println!("{:>12}  -> run {purpose}: {what}", offset(step.at))
                }
            }
        }
    }
    for (at, why) in &sim.refused {
        println!("{:>12}  refused: {why}", offset(*at));
    }
    println!(
        "result: {:?} after {} ({} ticks, simulated in {:.1} ms)",
        sim.rollout.status,
        offset(sim.ended_at),
        sim.ticks,
        took.as_secs_f64() * 1000.0
    );
    Ok(())
}
