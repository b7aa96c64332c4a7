//! Runs a plan against a recorded [`Timeline`] in virtual time: every tick of the analysis interval, the
//! timeline's human actions at their times, until the rollout ends or the time limit passes.

use crate::timeline::{Control, Timeline};
use crate::{CheckDecision, Clock, Effect, Millis, Rollout, VirtualClock};
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

/// Simulates `plan` against `timeline` from time 0 for at most `limit`.
pub fn simulate(plan: &Plan, timeline: &mut Timeline, limit: Millis) -> Simulation {
    let clock = VirtualClock::default();
    let interval = (plan.analysis.interval.value.0.as_millis() as Millis).max(1);
    let mut rollout = Rollout::new(plan);
    let mut steps = vec![Step { at: 0, decisions: Vec::new(), effects: rollout.start(plan, 0) }];
    let mut refused = Vec::new();
    let controls = timeline.controls.clone();
    let mut next_control = 0;
    let mut ticks = 0;
    while !rollout.status.is_terminal() && clock.now() < limit {
        clock.advance_ms(interval);
        let now = clock.now();
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
        let (decisions, effects) = rollout.tick(plan, now, timeline);
        ticks += 1;
        steps.push(Step { at: now, decisions, effects });
    }
    Simulation { rollout, steps, ticks, ended_at: clock.now(), refused }
}
