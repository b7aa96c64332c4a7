//! `sluice simulate`: runs a plan in virtual time and prints every decision, against a recorded timeline
//! or against real history in Prometheus (range queries; approvals count as signed, hooks and actions are
//! printed and not run).

use std::path::PathBuf;

use serde_json::{json, Value};
use sluice_engine::timeline::Timeline;
use sluice_engine::{CheckRef, Measurement, MetricSource, Millis, Replay, Rollout};
use sluice_plan::model::{Node, Spanned};
use sluice_plan::Plan;
use sluice_sources::sources::prometheus::{self, Prometheus};
use sluice_sources::{MeasureContext, Source};

use super::read;
use crate::cli::Output;
use crate::client::CliError;
use crate::output::{offset, print_json};

/// The stretch of Prometheus history a replay reads.
#[derive(Debug, Clone)]
pub struct History {
    url: String,
    from: Millis,
    to: Millis,
}

impl History {
    /// `--prometheus URL --from T --to T`.
    pub fn parse(url: String, from: Option<String>, to: Option<String>) -> Result<History, CliError> {
        let now = chrono::Utc::now().timestamp_millis().max(0) as Millis;
        let from = instant(from.as_deref().unwrap_or_default(), now).map_err(|e| CliError(format!("--from: {e}")))?;
        let to = instant(to.as_deref().unwrap_or_default(), now).map_err(|e| CliError(format!("--to: {e}")))?;
        if from >= to {
            return Err(CliError("--from must be before --to".into()));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(CliError(format!("--prometheus: `{url}` is not an http:// or https:// URL")));
        }
        Ok(History { url, from, to })
    }
}

/// RFC 3339, Unix seconds, `now` or `now-DURATION`, as milliseconds since the epoch.
fn instant(text: &str, now: Millis) -> Result<Millis, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Some(ago) = text.strip_prefix("now-") {
        let d: sluice_plan::Dur = ago.parse()?;
        return Ok(now.saturating_sub(d.0.as_millis() as Millis));
    }
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        return text.parse::<Millis>().map(|s| s * 1000).map_err(|e| e.to_string());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis().max(0) as Millis)
        .map_err(|_| format!("`{text}` is not a time: give RFC 3339 (2026-11-17T14:00:00Z), Unix seconds, or now-6h"))
}

pub async fn run(
    output: Output,
    plan_path: PathBuf,
    metrics: Option<PathBuf>,
    history: Option<History>,
    verbose: bool,
    env: Option<&str>,
) -> Result<(), CliError> {
    let name = plan_path.display().to_string();
    let text = read(&plan_path)?;
    let (mut plan, _) = sluice_plan::load(&name, &text, None)
        .map_err(|problems| CliError(problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")))?;
    super::fill_env(&mut plan, &text, env)?;
    let mut timeline = match &metrics {
        Some(path) => {
            let csv = read(path)?;
            Timeline::parse(&csv).map_err(|e| CliError(format!("{}: {e}", path.display())))?
        }
        None => Timeline::default(),
    };
    let started = std::time::Instant::now();
    let (sim, start) = match &history {
        None => (sluice_engine::simulate(&plan, &mut timeline, sluice_engine::time_limit(&plan)), 0),
        Some(h) => {
            point_at(&mut plan, &h.url)?;
            (replay(&plan, timeline, h).await?, h.from)
        }
    };
    let took = started.elapsed();
    // A replay prints the wall-clock time of each decision, and how far into the history it is.
    let when = |at: Millis| match &history {
        None => offset(at),
        Some(_) => {
            let t = chrono::DateTime::from_timestamp_millis(at as i64).unwrap_or_default();
            format!("{} ({})", t.format("%Y-%m-%d %H:%M:%S"), offset(at - start))
        }
    };
    if output == Output::Json {
        let steps: Vec<Value> = sim
            .steps
            .iter()
            .map(|s| json!({"at_ms": s.at, "decisions": s.decisions, "effects": s.effects.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>()}))
            .collect();
        print_json(
            &json!({"status": sim.rollout.status, "history": sim.rollout.history, "baselines": sim.rollout.baselines, "ticks": sim.ticks, "refused": sim.refused, "steps": steps}),
        );
        return Ok(());
    }
    for (check, value) in &sim.rollout.baselines {
        println!("baseline of {check}: {value}");
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
                    when(d.at),
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
                    when(ev.at),
                    ev.kind.to_uppercase(),
                    ev.phase + 1,
                    ev.percent,
                    ev.reason
                ),
                sluice_engine::Effect::SetRamp { percent, .. } => {
                    println!("{:>12}  -> set {} to {percent}%", when(step.at), plan.flag.value)
                }
                sluice_engine::Effect::RestoreFlag => {
                    println!("{:>12}  -> restore {} as before the rollout", when(step.at), plan.flag.value)
                }
                sluice_engine::Effect::FlagsOff { flags } => {
                    println!("{:>12}  -> switch off {}", when(step.at), flags.join(", "))
                }
                sluice_engine::Effect::ClearOverrides => {
                    println!("{:>12}  -> clear the overrides of {}", when(step.at), plan.flag.value)
                }
                sluice_engine::Effect::Run { action: purpose, .. } => {
                    let Some(action) = purpose.resolve(&plan) else { continue };
                    let exec = action
                        .block
                        .parse::<sluice_sources::actions::exec::ExecAction>(sluice_plan::model::Location::UNKNOWN)
                        .ok();
                    let what = exec
                        .map(|a| a.exec.value.join(" "))
                        .or_else(|| action.name.clone())
                        .unwrap_or_else(|| sluice_sources::described().action_kind(action));
                    println!("{:>12}  -> run {purpose}: {what} (not run in a simulation)", when(step.at))
                }
            }
        }
    }
    for (at, why) in &sim.refused {
        println!("{:>12}  refused: {why}", when(*at));
    }
    println!(
        "result: {:?} after {} ({} ticks, simulated in {:.1} ms)",
        sim.rollout.status,
        offset(sim.ended_at - start),
        sim.ticks,
        took.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// The plan's Prometheus checks ask `url`, with the plan's own credentials and headers.
fn point_at(plan: &mut Plan, url: &str) -> Result<(), CliError> {
    let settings = plan.analysis.settings.entries.iter_mut().find(|(k, _)| k.value == prometheus::KIND);
    let Some((_, settings)) = settings else {
        return Err(CliError("the plan has no `analysis.prometheus`: it has no Prometheus checks to replay".into()));
    };
    let Node::Map(entries) = &mut settings.value else {
        return Err(CliError("`analysis.prometheus` is not a mapping".into()));
    };
    let at = settings.referenced;
    let mut key = None;
    entries.retain(|(k, _)| {
        let url = k.value == "url" || k.value == "url_env";
        if url {
            key = Some(k.clone());
        }
        !url
    });
    let Some(mut key) = key else { return Err(CliError("`analysis.prometheus` has no url".into())) };
    key.value = "url".into();
    entries.push((key, Spanned::new(Node::Str(url.to_string()), at, at)));
    Ok(())
}

/// Runs the plan on `history`: its Prometheus checks read range queries, the others the timeline.
async fn replay(plan: &Plan, timeline: Timeline, history: &History) -> Result<sluice_engine::Simulation, CliError> {
    let prometheus = Prometheus::new(&sluice_sources::Config::default());
    let interval = (plan.analysis.interval.value.0.as_millis() as Millis).max(1000);
    let past = prometheus::History::new(history.from, history.to, interval);
    let start = Rollout::new(plan);
    let flag_ramp = None;
    let values = start.template_values(plan, flag_ramp);
    let mut baselines = std::collections::BTreeMap::new();
    for (key, check) in sluice_engine::baseline_checks(plan) {
        let cx = MeasureContext {
            rollout: None,
            rollout_id: "replay",
            plan,
            started_at: history.from,
            phase_started: history.from,
            now: history.from,
            values: &values,
        };
        match prometheus.baseline(check, &cx).await {
            Ok(v) => {
                baselines.insert(key, v);
            }
            Err(e) => eprintln!("warning: the baseline of `{}` cannot be measured: {e}", check.name.value),
        }
    }
    let controls = timeline.controls.iter().map(|(at, c)| (history.from + at, c.clone())).collect();
    let replay = Replay { start: history.from, until: history.to, controls, approve_all: true, baselines };
    let mut source = ReplaySource {
        plan,
        prometheus: &prometheus,
        past: &past,
        timeline,
        from: history.from,
        handle: tokio::runtime::Handle::current(),
    };
    Ok(sluice_engine::simulate_with(plan, &mut source, &replay))
}

/// A replay's measurements: Prometheus checks from the history's range queries (and a phase gate's
/// baseline from Prometheus, before its phase started), the others from the timeline.
struct ReplaySource<'a> {
    plan: &'a Plan,
    prometheus: &'a Prometheus,
    past: &'a prometheus::History,
    timeline: Timeline,
    from: Millis,
    handle: tokio::runtime::Handle,
}

/// What a replayed Prometheus check is measured with: the rollout as it started at `started_at`.
fn replay_context<'a>(
    plan: &'a Plan,
    values: &'a std::collections::BTreeMap<String, String>,
    started_at: Millis,
    now: Millis,
) -> MeasureContext<'a> {
    MeasureContext { rollout: None, rollout_id: "replay", plan, started_at, phase_started: started_at, now, values }
}

impl MetricSource for ReplaySource<'_> {
    fn measure(&mut self, check: &CheckRef<'_>, now: Millis) -> Measurement {
        let plan = self.plan;
        let kind = check.check.source_kind(plan, sluice_sources::described());
        if kind.as_deref() != Some(prometheus::KIND) {
            return self.timeline.measure(check, now - self.from);
        }
        let mut at = Rollout::new(plan);
        at.phase = check.phase;
        at.status = sluice_engine::Status::Running;
        let values = at.template_values(plan, None);
        let cx = replay_context(plan, &values, self.from, now);
        // The engine is synchronous; each check waits for its (usually cached) range query here.
        tokio::task::block_in_place(|| self.handle.block_on(self.prometheus.replay(check.check, &cx, self.past)))
    }

    fn baseline(&mut self, check: &sluice_plan::model::Check, before: Millis) -> Option<f64> {
        let plan = self.plan;
        if check.source_kind(plan, sluice_sources::described()).as_deref() != Some(prometheus::KIND) {
            return self.timeline.baseline(check, before);
        }
        // Templates as in the gate's own phase (`{{phase}}`, `{{percent}}`).
        let mut at = Rollout::new(plan);
        at.phase =
            plan.phases.iter().position(|p| p.value.gates.iter().any(|g| std::ptr::eq(&g.value, check))).unwrap_or(0);
        at.status = sluice_engine::Status::Running;
        let values = at.template_values(plan, None);
        let cx = replay_context(plan, &values, before, before);
        match tokio::task::block_in_place(|| self.handle.block_on(self.prometheus.baseline(check, &cx))) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("warning: the baseline of `{}` cannot be measured before its phase: {e}", check.name.value);
                None
            }
        }
    }
}
