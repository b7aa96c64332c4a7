//! Runs a plan against a recorded [`Timeline`] in virtual time: every tick of the analysis interval, the
//! timeline's human actions at their times, until the rollout ends or the time limit passes.

use crate::timeline::{Control, Timeline};
use crate::{CheckDecision, Clock, Effect, MetricSource, Millis, Rollout, VirtualClock};
use sluice_plan::Plan;

/// Everything that happened in a simulation.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The rollout at the end.
    pub rollout: Rollout,
    /// Each tick's decisions and effects, and the effects of human actions, in order.
    pub steps: Vec<Step>,
    /// Ticks run.
    pub ticks: u64,
    /// Virtual time at the end.
    pub ended_at: Millis,
    /// Human actions the rollout refused, with why.
    pub refused: Vec<(Millis, String)>,
}

/// One moment of a simulation.
#[derive(Debug, Clone)]
pub struct Step {
    /// When.
    pub at: Millis,
    /// The checks' decisions (empty for a human action).
    pub decisions: Vec<CheckDecision>,
    /// What the engine asked the world to do.
    pub effects: Vec<Effect>,
}

/// The longest a simulation runs: every hold, the bake, and 30 days of pauses.
pub fn time_limit(plan: &Plan) -> Millis {
    let holds: Millis =
        plan.phases.iter().filter_map(|p| p.value.hold.as_ref()).map(|h| h.value.0.as_millis() as Millis).sum();
    let bake = plan.bake.as_ref().map_or(0, |b| b.value.0.as_millis() as Millis);
    holds + bake + 30 * 86_400_000
}

/// How a simulation runs besides its measurements.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Virtual time at the start (ms): 0 for a recorded timeline, the first instant of real history for a
    /// replay against Prometheus.
    pub start: Millis,
    /// Virtual time past which the simulation stops.
    pub until: Millis,
    /// People's and alerts' actions, in time order.
    pub controls: Vec<(Millis, Control)>,
    /// Every approval item counts as signed when its phase needs it ("would the checks have caught it?").
    pub approve_all: bool,
    /// Baselines captured before the start, as [`Rollout::baselines`].
    pub baselines: std::collections::BTreeMap<String, f64>,
}

/// Simulates `plan` against `timeline` from time 0 for at most `limit`.
pub fn simulate(plan: &Plan, timeline: &mut Timeline, limit: Millis) -> Simulation {
    let baselines = crate::baseline_checks(plan)
        .filter_map(|(key, c)| timeline.baselines.get(&c.name.value).map(|v| (key, *v)))
        .collect();
    let replay = Replay { until: limit, controls: timeline.controls.clone(), baselines, ..Replay::default() };
    simulate_with(plan, timeline, &replay)
}

/// Simulates `plan` against any source of measurements: every tick of the analysis interval from
/// `replay.start`, the controls at their times, until the rollout ends or `replay.until` passes.
pub fn simulate_with(plan: &Plan, source: &mut dyn MetricSource, replay: &Replay) -> Simulation {
    let clock = VirtualClock::default();
    clock.advance_ms(replay.start);
    let limit = replay.until;
    let interval = (plan.analysis.interval.value.0.as_millis() as Millis).max(1);
    let mut rollout = Rollout::new(plan);
    rollout.baselines = replay.baselines.clone();
    let mut steps = vec![Step { at: replay.start, decisions: Vec::new(), effects: rollout.start(plan, replay.start) }];
    let mut refused = Vec::new();
    let controls = &replay.controls;
    let mut next_control = 0;
    let mut ticks = 0;
    while !rollout.status.is_terminal() && clock.now() < limit {
        clock.advance_ms(interval);
        let now = clock.now();
        if replay.approve_all {
            let items: Vec<String> = plan.phases[rollout.phase]
                .value
                .approvals
                .iter()
                .map(|a| a.value.item.clone())
                .filter(|item| !rollout.approvals.contains(item))
                .collect();
            for item in items {
                if let Ok(effects) = rollout.approve(plan, now, &item, "replay") {
                    steps.push(Step { at: now, decisions: Vec::new(), effects });
                }
            }
        }
        while next_control < controls.len() && controls[next_control].0 <= now {
            let (at, control) = &controls[next_control];
            next_control += 1;
            let result = match control {
                Control::Approve(item) => rollout.approve(plan, *at, item, "timeline"),
                Control::Signal { name, hard } => rollout.signal(plan, *at, name, *hard, "recorded in the timeline"),
                Control::Decide { resume: true } => rollout.resume(plan, *at, "decided: resume"),
                Control::Decide { resume: false } => rollout.rollback(plan, *at, "decided: roll back"),
                Control::Promote => rollout.promote(plan, *at, "promoted by hand"),
                Control::Abort => rollout.abort(plan, *at, "aborted by hand"),
            };
            match result {
                Ok(effects) => steps.push(Step { at: *at, decisions: Vec::new(), effects }),
                Err(e) => refused.push((*at, e.to_string())),
            }
        }
        for (key, check) in rollout.baselines_due(plan) {
            if let Some(v) = source.baseline(check, rollout.phase_started) {
                rollout.baselines.insert(key, v);
            }
        }
        let (decisions, effects) = rollout.tick(plan, now, source);
        ticks += 1;
        steps.push(Step { at: now, decisions, effects });
    }
    Simulation { rollout, steps, ticks, ended_at: clock.now(), refused }
}
