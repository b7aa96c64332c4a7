//! The rollout state machine in virtual time, against recorded timelines: DESIGN.md "Rollouts" rule by rule.

use sluice_engine::timeline::Timeline;
use sluice_engine::{simulate, time_limit, Effect, Outcome, Simulation, Status};

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;

fn run(plan_yaml: &str, timeline_csv: &str) -> Simulation {
    let (plan, _) = sluice_plan::load("plan.yaml", plan_yaml, None).unwrap_or_else(|p| panic!("{p:?}"));
    let mut timeline = Timeline::parse(timeline_csv).unwrap();
    simulate(&plan, &mut timeline, time_limit(&plan))
}

/// Transitions, without the approvals people signed along the way.
fn events(sim: &Simulation) -> Vec<(u64, String)> {
    sim.rollout.history.iter().filter(|e| e.kind != "approved").map(|e| (e.at, e.kind.clone())).collect()
}

const RAMP: &str = r#"
name: ramp
flag: f
analysis: { interval: 1m }
gates:
  - { name: error-rate, command: [e], value_from: last_number, below: 0.01 }
phases:
  - { percent: 1, hold: 24h, approvals: [qa-signoff] }
  - { percent: 10, hold: 48h }
  - { percent: 100 }
bake: 7d
triggers:
  - { name: errors-hard, command: [e], value_from: last_number, above: 0.05, for: 5m, severity: hard }
  - { name: latency-soft, command: [l], value_from: last_number, above: 2, for: 3m, severity: soft, decide_within: 1h, default: rollback }
rollback:
  to: start
  flags_off: [other]
  actions: [ { exec: [kubectl, rollout, undo, deployment/x] } ]
"#;

fn healthy() -> String {
    "at,name,value\n0s,error-rate,0.001\n0s,errors-hard,0.001\n0s,latency-soft,0.5\n".to_string()
}

#[test]
fn a_healthy_plan_promotes_after_each_hold_and_completes_after_the_bake() {
    let sim = run(RAMP, &(healthy() + "3h,approve:qa-signoff,\n"));
    assert_eq!(sim.rollout.status, Status::Completed);
    let ev = events(&sim);
    assert_eq!(ev[1], (24 * HOUR, "promoted".into()), "phase 1 holds 24h: {ev:?}");
    assert_eq!(ev[2], (72 * HOUR, "promoted".into()), "phase 2 holds 48h: {ev:?}");
    assert_eq!(ev[3], (72 * HOUR + MIN, "baking".into()));
    assert_eq!(ev[4], (72 * HOUR + MIN + 7 * 24 * HOUR, "completed".into()));
    // A 10-day plan at 1-minute ticks: 14,000+ ticks, run in virtual time.
    assert!(sim.ticks > 14_000, "{}", sim.ticks);
}

#[test]
fn a_missing_approval_blocks_promotion() {
    let sim = run(RAMP, &(healthy() + "30h,approve:qa-signoff,\n40h,approve:no-such-item,\n"));
    assert_eq!(events(&sim)[1], (24 * HOUR, "approval_waiting".into()), "told once the hold was over");
    assert_eq!(events(&sim)[2], (30 * HOUR, "promoted".into()), "promoted at the tick the approval arrived");
    assert_eq!(events(&sim).iter().filter(|e| e.1 == "approval_waiting").count(), 1, "told once per phase");
    assert!(sim
        .rollout
        .history
        .iter()
        .any(|e| e.kind == "approved" && e.reason == "qa-signoff by timeline" && e.at == 30 * HOUR));
    assert_eq!(sim.refused.len(), 1);
    assert!(sim.refused[0].1.contains("no approval item `no-such-item`"), "{:?}", sim.refused);
}

#[test]
fn a_hard_trigger_rolls_back_after_its_for_window_flag_first() {
    // The error rate goes bad at 10h: `for: 5m` at 1m ticks fires on the 5th bad tick.
    let csv = healthy() + "10h,errors-hard,0.2\n10h,error-rate,0.2\n";
    let sim = run(RAMP, &csv);
    assert_eq!(sim.rollout.status, Status::RolledBack { reason: "trigger `errors-hard` fired".into() });
    let (at, kind) = events(&sim).last().cloned().unwrap();
    assert_eq!((at, kind.as_str()), (10 * HOUR + 4 * MIN, "rolled_back"), "the 5th tick from 10h is 10h04m");
    let last = &sim.steps.last().unwrap().effects;
    assert!(matches!(last[0], Effect::RestoreFlag), "the flag first: {last:?}");
    assert!(matches!(&last[1], Effect::FlagsOff { flags: f } if f == &vec!["other".to_string()]));
    assert!(matches!(&last[2], Effect::Run { action, .. } if action.to_string() == "rollback.actions[0]"));
    assert!(matches!(last[3], Effect::Notify(_)), "notifications last");
}

#[test]
fn an_inconclusive_tick_breaks_a_for_run() {
    let csv = healthy() + "10h,errors-hard,0.2\n603m,errors-hard,\n604m,errors-hard,0.2\n";
    let sim = run(RAMP, &csv);
    let (at, kind) = events(&sim).last().cloned().unwrap();
    assert_eq!(kind, "rolled_back");
    assert_eq!(at, 10 * HOUR + 8 * MIN, "no data at 10h03 restarts the 5-tick run at 10h04");
    let inconclusive = sim
        .steps
        .iter()
        .flat_map(|s| &s.decisions)
        .find(|d| d.check == "errors-hard" && d.outcome == Outcome::Inconclusive);
    assert_eq!(inconclusive.unwrap().note.as_deref(), Some("no data"));
}

#[test]
fn a_soft_trigger_pauses_and_its_default_applies_when_nobody_decides() {
    let csv = healthy() + "5h,latency-soft,3\n";
    let sim = run(RAMP, &csv);
    let ev = events(&sim);
    assert_eq!(ev[1], (5 * HOUR + 2 * MIN, "paused".into()), "for: 3m → the 3rd bad tick");
    assert_eq!(
        ev[2],
        (6 * HOUR + 2 * MIN, "rolled_back".into()),
        "decide_within 1h: the default applies at the tick that reaches it"
    );
}

#[test]
fn a_person_can_resume_a_paused_rollout() {
    let csv = healthy() + "5h,latency-soft,3\n330m,latency-soft,1\n330m,decide,resume\n6h,approve:qa-signoff,\n";
    let sim = run(RAMP, &csv);
    assert_eq!(sim.rollout.status, Status::Completed);
    let kinds: Vec<String> = sim.rollout.history.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(&kinds[..4], &["started", "paused", "resumed", "approved"]);
    assert!(kinds.contains(&"resumed".to_string()) && kinds.last().unwrap() == "completed", "{kinds:?}");
}

#[test]
fn gates_block_promotion_until_they_pass() {
    let csv = "0s,error-rate,0.02\n0s,errors-hard,0\n0s,latency-soft,0\n30h,error-rate,0.001\n1s,approve:qa-signoff,\n";
    let sim = run(RAMP, csv);
    assert_eq!(events(&sim)[1], (30 * HOUR, "promoted".into()), "{:?}", events(&sim));
}

#[test]
fn previous_phase_rollback_steps_back_and_resume_retries() {
    let plan = RAMP.replace("to: start", "to: previous-phase");
    // After stepping back, the retried phase asks for its go/no-go again.
    let csv = healthy() + "1s,approve:qa-signoff,\n30h,errors-hard,0.2\n1805m,errors-hard,0\n31h,decide,resume\n32h,approve:qa-signoff,\n";
    let sim = run(&plan, &csv);
    let ev = events(&sim);
    let step = sim.rollout.history.iter().find(|e| e.kind == "stepped_back").expect("stepped back");
    assert_eq!((step.at, step.phase, step.percent), (30 * HOUR + 4 * MIN, 0, 1), "back to phase 1 at 1%");
    // Stepping back is not the rollback: the plan's actions and `flags_off` wait for a real one.
    let stepping: Vec<&Effect> =
        sim.steps.iter().filter(|s| s.at == 30 * HOUR + 4 * MIN).flat_map(|s| &s.effects).collect();
    assert!(stepping.iter().any(|e| matches!(e, Effect::SetRamp { percent: 1, .. })), "{stepping:?}");
    assert!(!stepping.iter().any(|e| matches!(e, Effect::Run { .. } | Effect::FlagsOff { .. })), "{stepping:?}");
    let resumed = ev.iter().find(|e| e.1 == "resumed").unwrap().0;
    assert_eq!(resumed, 31 * HOUR);
    // Retrying phase 1 holds 24h again from the resume.
    let promoted_again = ev.iter().filter(|e| e.1 == "promoted").nth(1).unwrap().0;
    assert_eq!(promoted_again, 31 * HOUR + 24 * HOUR);
    assert_eq!(sim.rollout.status, Status::Completed);
}

#[test]
fn a_trigger_that_fires_again_after_stepping_back_rolls_back_to_the_start_once() {
    let plan = RAMP
        .replace("to: start", "to: previous-phase")
        .replace("{ percent: 100 }", "{ percent: 50, hold: 24h }\n  - { percent: 100 }");
    // Bad from 80h (phase 3, 50%): steps back to 10% at the 5th bad tick, then, still bad, rolls back.
    let csv = healthy() + "1s,approve:qa-signoff,\n80h,errors-hard,0.2\n";
    let sim = run(&plan, &csv);
    let kinds: Vec<String> = events(&sim).into_iter().map(|e| e.1).collect();
    assert_eq!(kinds, ["started", "promoted", "promoted", "stepped_back", "rolled_back"], "{kinds:?}");
    assert!(matches!(sim.rollout.status, Status::RolledBack { .. }));
    let all: Vec<&Effect> = sim.steps.iter().flat_map(|s| &s.effects).collect();
    let undo =
        all.iter().filter(|e| matches!(e, Effect::Run { action, .. } if action.to_string() == "rollback.actions[0]"));
    assert_eq!(undo.count(), 1, "the rollback's action runs once, at the real rollback");
    assert_eq!(all.iter().filter(|e| matches!(e, Effect::RestoreFlag)).count(), 1);
}

#[test]
fn after_a_pause_gates_must_hold_again_for_their_whole_window() {
    let plan = RAMP.replace("below: 0.01 }", "below: 0.01, for: 30m }");
    // Paused by a soft trigger at 23h52m and resumed at 24h10m, after the hold (24h) has ended: the gate's
    // 30-minute window starts again at the resume, however long it had held before the pause.
    let csv = healthy() + "1s,approve:qa-signoff,\n1430m,latency-soft,5\n1433m,latency-soft,0.5\n1450m,decide,resume\n";
    let sim = run(&plan, &csv);
    let ev = events(&sim);
    let resumed = ev.iter().find(|e| e.1 == "resumed").expect("resumed").0;
    let promoted = ev.iter().find(|e| e.1 == "promoted").expect("promoted").0;
    assert!(promoted >= resumed + 29 * MIN, "promoted {} min after the resume", (promoted - resumed) / MIN);
}

#[test]
fn a_failing_dry_run_source_never_pauses_the_rollout() {
    let plan = RAMP.replace(
        "triggers:\n",
        "triggers:\n  - { name: rehearsal, command: [r], value_from: last_number, above: 1, severity: hard, dry_run: true }\n",
    );
    let csv = healthy() + "1s,approve:qa-signoff,\n0s,rehearsal,error\n";
    let sim = run(&plan, &csv);
    assert_eq!(sim.rollout.status, Status::Completed, "{:?}", events(&sim));
}

#[test]
fn dry_run_triggers_are_recorded_but_never_act() {
    let plan =
        RAMP.replace("above: 0.05, for: 5m, severity: hard }", "above: 0.05, for: 5m, severity: hard, dry_run: true }");
    let csv = healthy() + "1s,approve:qa-signoff,\n10h,errors-hard,0.2\n";
    let sim = run(&plan, &csv);
    assert_eq!(sim.rollout.status, Status::Completed);
    assert!(sim.steps.iter().flat_map(|s| &s.decisions).any(|d| d.check == "errors-hard" && d.dry_run && d.run >= 5));
}

#[test]
fn a_source_that_keeps_failing_pauses_or_rolls_back() {
    let csv = healthy() + "2h,error-rate,error\n";
    let sim = run(RAMP, &csv);
    match &sim.rollout.status {
        Status::Paused { reason, .. } => {
            assert!(reason.contains("3 consecutive ticks with a source error"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(events(&sim).last().unwrap().0, 2 * HOUR + 2 * MIN);

    let plan = RAMP.replace(
        "analysis: { interval: 1m }",
        "analysis: { interval: 1m, on_source_down: rollback, max_source_errors: 2 }",
    );
    let sim = run(&plan, &csv);
    assert!(matches!(sim.rollout.status, Status::RolledBack { .. }));
    assert_eq!(events(&sim).last().unwrap().0, 2 * HOUR + MIN);
}

#[test]
fn triggers_stay_armed_through_the_bake() {
    let csv = healthy() + "1s,approve:qa-signoff,\n100h,errors-hard,0.5\n";
    let sim = run(RAMP, &csv);
    let ev = events(&sim);
    assert!(ev.iter().any(|e| e.1 == "baking"));
    assert_eq!(ev.last().unwrap(), &(100 * HOUR + 4 * MIN, "rolled_back".to_string()));
}

#[test]
fn signals_fire_triggers_by_hand() {
    let hard = run(RAMP, &(healthy() + "3h,signal:security-incident,hard\n"));
    assert!(matches!(&hard.rollout.status, Status::RolledBack { reason } if reason.contains("security-incident")));
    let soft = run(RAMP, &(healthy() + "3h,signal:latency-soft,soft\n"));
    // The plan's rule for that trigger applies: roll back after an hour without a decision.
    assert_eq!(events(&soft).last().unwrap(), &(4 * HOUR, "rolled_back".to_string()));
}

#[test]
fn a_pause_during_the_bake_resumes_to_the_bake() {
    let csv = healthy() + "1s,approve:qa-signoff,\n100h,latency-soft,3\n101h,latency-soft,1\n101h,decide,resume\n";
    let sim = run(RAMP, &csv);
    let kinds: Vec<&str> = sim.rollout.history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(&kinds[kinds.len() - 4..], &["baking", "paused", "resumed", "completed"]);
    // The bake ends when it would have: pauses do not extend it.
    assert_eq!(sim.rollout.history.last().unwrap().at, 72 * HOUR + MIN + 7 * 24 * HOUR);
}

/// The example timelines under `examples/timelines` end as their comments say.
#[test]
fn the_example_timelines_simulate_to_their_documented_outcomes() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let load = |plan: &str, timeline: &str| {
        let text = std::fs::read_to_string(examples.join(plan)).unwrap();
        let (plan, _) = sluice_plan::load(plan, &text, None).unwrap();
        let mut t =
            Timeline::parse(&std::fs::read_to_string(examples.join("timelines").join(timeline)).unwrap()).unwrap();
        let limit = time_limit(&plan);
        simulate(&plan, &mut t, limit)
    };
    let healthy = load("top-dog-safety-prefilter.yaml", "top-dog-healthy.csv");
    assert_eq!(healthy.rollout.status, Status::Completed);
    assert_eq!(healthy.ended_at, (16 * 24 + 2) * HOUR + MIN);
    let spike = load("bounded-reasoning.yaml", "bounded-reasoning-errors-spike.csv");
    assert!(matches!(&spike.rollout.status, Status::RolledBack { reason } if reason.contains("errors-hard")));
    assert_eq!(spike.ended_at, 30 * HOUR + 4 * MIN);
}

#[test]
fn a_second_tick_within_one_interval_does_nothing() {
    let (plan, _) = sluice_plan::load("plan.yaml", RAMP, None).unwrap();
    let mut timeline = Timeline::parse(&(healthy() + "0s,errors-hard,0.9\n")).unwrap();
    let mut rollout = sluice_engine::Rollout::new(&plan);
    rollout.start(&plan, 0);
    rollout.tick(&plan, MIN, &mut timeline);
    let (decisions, _) = rollout.tick(&plan, MIN + 10, &mut timeline);
    assert!(decisions.is_empty());
    assert_eq!(rollout.runs["trigger:errors-hard"], 1, "a restarted runner must not count a minute twice");
}

#[test]
fn resume_after_a_failed_hook_retries_that_hook_not_the_phase_before() {
    let yaml = r#"
name: migrate
flag: f
phases:
  - { percent: 10, hold: 48h, hooks: { before: [ { name: warm, exec: [warm] } ] } }
  - { percent: 50, hooks: { before: [ { name: migrate, exec: [migrate] } ], after: [ { name: verify, exec: [verify] } ] } }
  - { percent: 100 }
"#;
    let (plan, _) = sluice_plan::load("plan.yaml", yaml, None).unwrap();
    let purposes = |effects: &[Effect]| -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Run { action, .. } => Some(action.to_string()),
                Effect::SetRamp { percent, .. } => Some(format!("{percent}%")),
                _ => None,
            })
            .collect()
    };
    let mut r = sluice_engine::Rollout::new(&plan);
    r.start(&plan, 0);
    // Promoted into phase 2; its migration failed, so 10% stays in effect.
    r.phase = 1;
    r.hook_failed(&plan, 49 * HOUR, "phases[1].hooks.before[0]".parse().unwrap(), "exit 1");
    assert_eq!((r.phase, r.status.name()), (0, "paused"));
    let retried = r.resume(&plan, 50 * HOUR, "fixed the migration").unwrap();
    assert_eq!(purposes(&retried), ["phases[1].hooks.before[0]", "50%"], "no 48h hold of phase 1 again");
    assert_eq!(r.phase, 1);

    // The after-hook of phase 2 fails on the way to 100%: resume runs it again, then raises.
    r.hook_failed(&plan, 51 * HOUR, "phases[1].hooks.after[0]".parse().unwrap(), "exit 1");
    assert_eq!(r.phase, 1);
    let retried = r.resume(&plan, 52 * HOUR, "verified by hand").unwrap();
    assert_eq!(purposes(&retried), ["phases[1].hooks.after[0]", "100%"]);
    assert_eq!(r.phase, 2);
}
