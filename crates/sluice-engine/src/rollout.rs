//! Where gates and triggers are evaluated and a rollout moves: the state of one run of a plan and its
//! transitions (DESIGN.md "Rollouts").

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sluice_plan::model::{
    Action, ActionRef, Check, Confirm, ConfirmStep, Decision, HookWhen, OnEmpty, OnSourceDown, RollbackTo, Severity,
};
use sluice_plan::Plan;

use crate::decision::{Bound, CheckDecision, CheckKind, Outcome, Threshold};
use crate::Millis;
pub use sluice_stats::{Sample, Sequence};

/// A comparison's sequence as a rollout keeps it: its closed windows, and what the current one has
/// contributed so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Carried {
    /// The closed windows.
    pub closed: Sequence,
    /// The current window, as last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<Sample>,
}

/// The key of a check's sequence in [`Rollout::sequences`]: a trigger keeps one for the whole rollout
/// (`trigger:NAME`); a gate one per phase (`gate:NAME@2`), carried across that phase's retries — a gate
/// judges the canary at its phase's percentage, never at another.
pub fn sequence_key(kind: CheckKind, name: &str, phase: usize) -> String {
    match kind {
        CheckKind::Trigger => check_key(kind, name),
        CheckKind::Gate => format!("{}@{phase}", check_key(kind, name)),
    }
}

/// What a source measured for one check at one tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Measurement {
    /// A number.
    Value(f64),
    /// No data (an empty query result, no samples yet).
    Empty,
    /// The source failed; counts towards `max_source_errors`.
    Error(String),
    /// Data, but nothing can be concluded from it, and why (too few samples, a traffic split that does not
    /// match the percentage): inconclusive, never a pass, not a source error.
    Inconclusive(String),
    /// A comparison's bound (`value`, judged like any value) with the confidence interval it is a bound of,
    /// `lower..=upper` of `canary − k × reference − margin`: kept beside the decision so that people can see
    /// the interval narrow against the margin (0).
    Bounded {
        /// The bound the check judges: the upper one for a gate, the lower one for a trigger.
        value: f64,
        /// The interval's lower bound.
        lower: f64,
        /// Its upper bound.
        upper: f64,
        /// What the current window contributed to the check's sequence, which the rollout keeps: when the
        /// window closes (a new percentage, a retried phase) it joins the closed ones, so the sequence goes
        /// on across phases, retries, resumes and restarts instead of starting again.
        sample: Option<Sample>,
    },
}

/// The check a source is asked to measure, with the plan's templates filled in.
#[derive(Debug, Clone)]
pub struct CheckRef<'a> {
    /// The check's name.
    pub name: &'a str,
    /// Gate or trigger.
    pub kind: CheckKind,
    /// The check as written.
    pub check: &'a Check,
    /// The rollout's current phase (from 0): what `{{phase}}` and `{{percent}}` in the check's templates
    /// stand for.
    pub phase: usize,
    /// The check's sequence so far (its closed windows), for a comparison carried across windows.
    pub sequence: Option<&'a Sequence>,
    /// When the current window (the phase's percentage) took effect.
    pub phase_started: Millis,
    /// Where the control was last measured, at 100% ([`Rollout::control_window`]).
    pub control_window: Option<(Millis, Millis)>,
}

/// Where measurements come from; a closure works too.
pub trait MetricSource {
    /// Measures one check now.
    fn measure(&mut self, check: &CheckRef<'_>, now: Millis) -> Measurement;

    /// Whether the confirm gate `name` said yes (its webhook answered 2xx) for the step this tick would
    /// take; `Err` says why not. The default says yes: a simulation counts confirm gates as given, as it
    /// signs approvals.
    fn confirmed(&mut self, name: &str, now: Millis) -> Result<(), String> {
        let _ = (name, now);
        Ok(())
    }
    /// A baseline gate's value over its window before `before` (a phase's start), for a replay; `None`
    /// when the source has none (the gate is then inconclusive). The controller captures them itself,
    /// asynchronously ([`Rollout::baselines_due`]).
    fn baseline(&mut self, check: &Check, before: Millis) -> Option<f64> {
        let _ = (check, before);
        None
    }
}

impl<F: FnMut(&CheckRef<'_>, Millis) -> Measurement> MetricSource for F {
    fn measure(&mut self, check: &CheckRef<'_>, now: Millis) -> Measurement {
        self(check, now)
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// Created, not started.
    Pending,
    /// Ramping: at phase `phase`.
    Running,
    /// Waiting for a person.
    Paused {
        /// Why.
        reason: String,
        /// When the default decision applies, if there is one.
        decide_by: Option<Millis>,
        /// The default decision.
        default: Option<DecisionKind>,
        /// When the rollout was baking: when its bake ends, so that resuming goes back to baking.
        #[serde(skip_serializing_if = "Option::is_none")]
        bake_until: Option<Millis>,
    },
    /// After the last phase, triggers armed, until `until`.
    Baking {
        /// When the bake ends.
        until: Millis,
    },
    /// Done: the flag stays at the last phase.
    Completed,
    /// Rolled back to where it started.
    RolledBack {
        /// Why.
        reason: String,
    },
    /// Ended by a person.
    Aborted {
        /// Why.
        reason: String,
    },
}

/// A decision on a paused rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Go on.
    Resume,
    /// Roll back.
    Rollback,
}

impl DecisionKind {
    /// What it does, as a verb: `resume`, `roll back`.
    pub fn as_verb(self) -> &'static str {
        match self {
            DecisionKind::Resume => "resume",
            DecisionKind::Rollback => "roll back",
        }
    }
}

impl From<Decision> for DecisionKind {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Resume => DecisionKind::Resume,
            Decision::Rollback => DecisionKind::Rollback,
        }
    }
}

impl Status {
    /// The state's name: `pending`, `running`, `paused`, `baking`, `completed`, `rolled_back`, `aborted`.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Paused { .. } => "paused",
            Status::Baking { .. } => "baking",
            Status::Completed => "completed",
            Status::RolledBack { .. } => "rolled_back",
            Status::Aborted { .. } => "aborted",
        }
    }

    /// Completed, rolled back or aborted.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Status::Completed | Status::RolledBack { .. } | Status::Aborted { .. })
    }
}

/// Something the caller must do to the world, in order. The controller writes every effect but
/// [`Effect::Notify`] to the rollout's outbox as it is (serialized), before carrying any out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// Set the flag's ramp.
    SetRamp {
        /// The percentage.
        percent: u8,
        /// The base variant, when the plan names it.
        base: Option<String>,
        /// The ramped variant, when the plan names it.
        ramped: Option<String>,
        /// Eligibility segments.
        segments: Vec<String>,
    },
    /// Put the flag back exactly as it was before the rollout started.
    RestoreFlag,
    /// Switch these other flags off.
    FlagsOff {
        /// Their keys.
        flags: Vec<String>,
    },
    /// Remove the flag's overrides.
    ClearOverrides,
    /// Run an action of the plan (a hook or a rollback action).
    Run {
        /// Which: `phases[1].hooks.before[0]`, `rollback.actions[0]`. (Stored as `purpose` before typed
        /// addresses; both read.)
        #[serde(alias = "purpose")]
        action: ActionRef,
        /// Safe to run again with the same key after a crash ([`Action::is_idempotent`]).
        #[serde(default)]
        idempotent: bool,
    },
    /// Tell people. Never stored in an outbox: the controller audits it with the transition and queues
    /// its notifications.
    #[serde(skip)]
    Notify(Event),
}

impl Effect {
    /// Doing it twice is the same as once: flag changes set a state rather than add to it, and an action
    /// that says so.
    pub fn is_idempotent(&self) -> bool {
        match self {
            Effect::Run { idempotent, .. } => *idempotent,
            _ => true,
        }
    }

    fn run(action: ActionRef, plan: &Plan) -> Effect {
        let idempotent = action.resolve(plan).is_some_and(Action::is_idempotent);
        Effect::Run { action, idempotent }
    }
}

/// A transition, as notifications and the audit log tell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When.
    pub at: Millis,
    /// One of [`EVENTS`](sluice_plan::EVENTS): `started`, `promoted`, `paused`, `rolled_back`, …
    pub kind: String,
    /// The phase index at that moment.
    pub phase: usize,
    /// The percentage at that moment.
    pub percent: u8,
    /// Why.
    pub reason: String,
}

/// A command refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError(pub String);

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One run of a plan: everything the engine needs to continue after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The plan's name.
    pub plan: String,
    /// The flag.
    pub flag: String,
    /// Where it is.
    pub status: Status,
    /// The current phase.
    pub phase: usize,
    /// When the current phase started.
    pub phase_started: Millis,
    /// The current phase's hold was skipped by a person.
    pub hold_skipped: bool,
    /// Signed approval items of the current phase.
    pub approvals: BTreeSet<String>,
    /// Who signed each of them.
    #[serde(default)]
    pub signed_by: BTreeMap<String, String>,
    /// Consecutive ticks each check (`gate:NAME`, `trigger:NAME`) has held.
    pub runs: BTreeMap<String, u32>,
    /// Consecutive ticks with a source error.
    pub source_errors: u32,
    /// When the last tick ran: a second tick within one interval (a restarted runner) does nothing.
    #[serde(default)]
    pub last_tick: Option<Millis>,
    /// Paused after stepping back a phase (`rollback.to: previous-phase`, or a failed hook): `resume`
    /// retries the phase; another hard trigger or a person's `rollback` rolls back to the start.
    #[serde(default)]
    pub stepped_back: bool,
    /// The phase hook whose failure stepped the rollout back (`phases[2].hooks.before[0]`): `resume`
    /// retries from that hook, not from the start of the phase before it.
    #[serde(default)]
    pub failed_hook: Option<ActionRef>,
    /// Phase hooks that succeeded in this rollout: entering a phase again (after a step back) does not run
    /// them twice — a migration runs once.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub hooks_done: BTreeSet<ActionRef>,
    /// Consecutive inconclusive ticks of each trigger (`trigger:NAME`): one that can never fire is told to
    /// people once it reaches `analysis.max_inconclusive`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inconclusive: BTreeMap<String, u32>,
    /// Each baseline check's reference (`gate:NAME`, `trigger:NAME`): its source's average before the
    /// start, captured once by the caller of [`Rollout::start`] and kept for the rollout's life.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub baselines: BTreeMap<String, f64>,
    /// What the next step waits for besides its gates and approvals: a confirm gate that said no.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Each comparison's sequence ([`sequence_key`]): one error rate per trigger for the whole rollout,
    /// and per gate and phase across that phase's retries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sequences: BTreeMap<String, Carried>,
    /// Every transition so far.
    pub history: Vec<Event>,
}

impl Rollout {
    /// A pending rollout of `plan`.
    pub fn new(plan: &Plan) -> Rollout {
        Rollout {
            plan: plan.name.value.clone(),
            flag: plan.flag.value.clone(),
            status: Status::Pending,
            phase: 0,
            phase_started: 0,
            hold_skipped: false,
            approvals: BTreeSet::new(),
            signed_by: BTreeMap::new(),
            runs: BTreeMap::new(),
            source_errors: 0,
            last_tick: None,
            stepped_back: false,
            failed_hook: None,
            hooks_done: BTreeSet::new(),
            inconclusive: BTreeMap::new(),
            baselines: BTreeMap::new(),
            waiting_for: None,
            sequences: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    /// The current phase's percentage (0 before the start).
    pub fn percent(&self, plan: &Plan) -> u8 {
        match self.status {
            Status::Pending => 0,
            _ => plan.phases.get(self.phase).map_or(0, |p| p.value.percent()),
        }
    }

    /// A pause that remembers whether the rollout was baking.
    fn pause_status(&self, reason: String, decide_by: Option<Millis>, default: Option<DecisionKind>) -> Status {
        let bake_until = match self.status {
            Status::Baking { until } => Some(until),
            Status::Paused { bake_until, .. } => bake_until,
            _ => None,
        };
        Status::Paused { reason, decide_by, default, bake_until }
    }

    fn event(&mut self, plan: &Plan, at: Millis, kind: &str, reason: impl Into<String>) -> Effect {
        let e = Event { at, kind: kind.into(), phase: self.phase, percent: self.percent(plan), reason: reason.into() };
        self.history.push(e.clone());
        Effect::Notify(e)
    }

    /// The current phase starts over at `now`: its hold, approvals and gates' `for` runs (triggers keep theirs).
    /// The step a promotion of the current phase takes: a percentage increase, or the final promotion.
    fn next_step(&self, plan: &Plan) -> ConfirmStep {
        if self.phase + 1 < plan.phases.len() {
            ConfirmStep::Increase
        } else {
            ConfirmStep::Promotion
        }
    }

    /// The confirm gates to ask before this tick: those of the step the rollout would take if its gates
    /// pass — the start of one created waiting for confirmation, or the promotion of a running phase whose
    /// hold is over and whose approvals are signed.
    pub fn confirms_due<'p>(&self, plan: &'p Plan, now: Millis) -> Vec<&'p Confirm> {
        let step = match self.status {
            Status::Pending => ConfirmStep::Start,
            Status::Running => {
                if !(self.held(plan, now) && self.signed(plan)) {
                    return Vec::new();
                }
                self.next_step(plan)
            }
            _ => return Vec::new(),
        };
        plan.confirm.iter().map(|c| &c.value).filter(|c| c.steps().contains(&step)).collect()
    }

    /// Asks `step`'s confirm gates through `source`, recording each answer as a decision
    /// (`confirm:NAME`); the first refusal, for status, or `None` when all said yes.
    fn unconfirmed(
        &self,
        plan: &Plan,
        step: ConfirmStep,
        now: Millis,
        source: &mut dyn MetricSource,
        decisions: &mut Vec<CheckDecision>,
    ) -> Option<String> {
        let mut refused = None;
        for c in plan.confirm.iter().map(|c| &c.value).filter(|c| c.steps().contains(&step)) {
            let answer = source.confirmed(&c.name.value, now);
            let ok = answer.is_ok();
            decisions.push(CheckDecision {
                at: now,
                check: format!("confirm:{}", c.name.value),
                kind: CheckKind::Gate,
                value: Some(if ok { 1.0 } else { 0.0 }),
                threshold: Threshold::Confirmed,
                outcome: if ok { Outcome::Holds } else { Outcome::Clear },
                note: answer.as_ref().err().cloned(),
                run: u32::from(ok),
                needed: 1,
                dry_run: false,
                interval: None,
            });
            if let (Err(why), None) = (answer, &refused) {
                let what = match step {
                    ConfirmStep::Start => "the start",
                    ConfirmStep::Increase => "the next percentage",
                    ConfirmStep::Promotion => "the final promotion",
                };
                refused = Some(format!("{what} waits for confirm `{}`: {why}", c.name.value));
            }
        }
        refused
    }

    /// The current phase's hold is over (or was skipped).
    fn held(&self, plan: &Plan, now: Millis) -> bool {
        let hold = plan.phases[self.phase].value.hold.as_ref();
        self.hold_skipped || hold.is_none_or(|h| now.saturating_sub(self.phase_started) >= h.value.0.as_millis() as u64)
    }

    /// Every approval item of the current phase is signed.
    fn signed(&self, plan: &Plan) -> bool {
        plan.phases[self.phase].value.approvals.iter().all(|a| self.approvals.contains(&a.value.item))
    }

    /// People were told this phase waits for approvals (once per phase).
    fn told_approval_waiting(&self) -> bool {
        self.history
            .iter()
            .rev()
            .take_while(|e| e.at >= self.phase_started)
            .any(|e| e.kind == "approval_waiting" && e.phase == self.phase)
    }

    /// A new window starts at `now` (a new percentage, or the same one again): each comparison's current
    /// window joins its closed ones.
    fn new_window(&mut self, now: Millis) {
        self.phase_started = now;
        for carried in self.sequences.values_mut() {
            if let Some(open) = carried.open.take() {
                carried.closed.close(&open);
            }
        }
    }

    /// The window the control was last measured over before the rollout reached 100%: the last stay at
    /// a percentage between 0 and 100, from its start to the start of the next one. A comparison with
    /// control at 100% (and through the bake) compares with it, for [`CONTROL_AT_100_VALID_FOR`] after
    /// 100% took effect; `None` before 100%, past that, or when the rollout never served a control.
    pub fn control_window(&self, plan: &Plan, now: Millis) -> Option<(Millis, Millis)> {
        if self.percent(plan) < 100 || self.status == Status::Pending {
            return None;
        }
        // Stays at one percentage: where each started, and at what percentage.
        let mut stays: Vec<(Millis, u8)> = Vec::new();
        for e in &self.history {
            if stays.last().is_none_or(|(_, p)| *p != e.percent) {
                stays.push((e.at, e.percent));
            }
        }
        let full_since = stays.last().filter(|(_, p)| *p >= 100)?.0;
        if now.saturating_sub(full_since) > CONTROL_AT_100_VALID_FOR {
            return None;
        }
        let i = stays.iter().rposition(|(_, p)| *p > 0 && *p < 100)?;
        let end = stays.get(i + 1).map_or(full_since, |(at, _)| *at);
        Some((stays[i].0, end))
    }

    /// The sequence a check carries, so far: its closed windows.
    pub fn sequence(&self, kind: CheckKind, name: &str) -> Option<&Sequence> {
        self.sequences.get(&sequence_key(kind, name, self.phase)).map(|c| &c.closed)
    }

    fn restart_phase(&mut self, now: Millis) {
        self.new_window(now);
        self.hold_skipped = false;
        self.approvals.clear();
        self.signed_by.clear();
        self.runs.retain(|k, _| k.starts_with("trigger:"));
    }

    /// The actions of phase `i`'s `before` or `after` hooks that have not succeeded yet in this rollout.
    fn hook_effects(&self, plan: &Plan, i: usize, when: HookWhen) -> Vec<Effect> {
        let hooks = &plan.phases[i].value.hooks;
        let count = match when {
            HookWhen::Before => hooks.before.len(),
            HookWhen::After => hooks.after.len(),
        };
        (0..count)
            .map(|index| ActionRef::Hook { phase: i, when, index })
            .filter(|hook| !self.hooks_done.contains(hook))
            .map(|hook| Effect::run(hook, plan))
            .collect()
    }

    /// A phase hook succeeded: it is not run again in this rollout, even when its phase is entered again.
    pub fn hook_succeeded(&mut self, hook: ActionRef) {
        if hook.is_hook() {
            self.hooks_done.insert(hook);
        }
    }

    /// The values of a check's or action's templates now: `flag`, `base`, `ramped` (the plan's ramp, else
    /// `flag_ramp` — the flag's own `(base, ramped)` — else `off`/`on`), `phase` (from 1), `percent`,
    /// `interval` and the plan's `vars`.
    pub fn template_values(&self, plan: &Plan, flag_ramp: Option<(&str, &str)>) -> BTreeMap<String, String> {
        let mut v: BTreeMap<String, String> = plan.vars.iter().map(|(k, s)| (k.clone(), s.0.clone())).collect();
        let phase = plan.phases.get(self.phase).map(|p| &p.value);
        let ramp = phase.and_then(|p| p.ramp.as_ref()).or(plan.ramp.as_ref());
        let (base, ramped) = match (ramp, flag_ramp) {
            (Some(r), _) => (r.value.base.value.clone(), r.value.ramped.value.clone()),
            (None, Some((b, r))) => (b.to_string(), r.to_string()),
            (None, None) => ("off".into(), "on".into()),
        };
        v.insert("flag".into(), plan.flag.value.clone());
        v.insert("base".into(), base);
        v.insert("ramped".into(), ramped);
        v.insert("phase".into(), (self.phase + 1).to_string());
        v.insert("percent".into(), self.percent(plan).to_string());
        v.insert("interval".into(), plan.analysis.interval.value.to_string());
        v
    }

    /// The effects of entering phase `i`: its before-hooks, then the flag.
    fn enter_phase(&mut self, plan: &Plan, i: usize, now: Millis) -> Vec<Effect> {
        self.phase = i;
        self.restart_phase(now);
        let phase = &plan.phases[i].value;
        let mut effects = self.hook_effects(plan, i, HookWhen::Before);
        let ramp = phase.ramp.as_ref().or(plan.ramp.as_ref());
        effects.push(Effect::SetRamp {
            percent: phase.percent(),
            base: ramp.map(|r| r.value.base.value.clone()),
            ramped: ramp.map(|r| r.value.ramped.value.clone()),
            segments: phase.segments.iter().map(|s| s.value.clone()).collect(),
        });
        effects
    }

    /// Starts the rollout at its first phase.
    pub fn start(&mut self, plan: &Plan, now: Millis) -> Vec<Effect> {
        if self.status != Status::Pending {
            return Vec::new();
        }
        self.status = Status::Running;
        let mut effects = self.enter_phase(plan, 0, now);
        effects.push(self.event(plan, now, "started", "started"));
        effects
    }

    /// The tick while a phase hook (a migration, a golden suite) of the last transition is still running:
    /// the triggers only. A hard trigger (or a source down with `on_source_down: rollback`) rolls back at
    /// once; a soft trigger keeps its run and fires at the first full tick after the hook. Gates wait: the
    /// percentage they would judge is not in effect yet.
    pub fn tick_triggers(
        &mut self,
        plan: &Plan,
        now: Millis,
        source: &mut dyn MetricSource,
    ) -> (Vec<CheckDecision>, Vec<Effect>) {
        let mut decisions = Vec::new();
        if self.status.is_terminal() || self.status == Status::Pending {
            return (decisions, Vec::new());
        }
        let Some(interval) = self.take_tick(plan, now) else {
            return (decisions, Vec::new());
        };
        let mut errored = false;
        let control = self.control_window(plan, now);
        let fired = self.measure_triggers(plan, interval, now, control, source, &mut errored, &mut decisions);
        // A soft trigger keeps its run: it fires at the first full tick after the hook.
        if let Some(hard) = fired.into_iter().find(|t| is_hard(t)) {
            let reason = self.fire(hard);
            return (decisions, self.rollback_inner(plan, now, &reason));
        }
        let mut effects = Vec::new();
        self.note_inconclusive(plan, now, &decisions, &mut effects);
        if let Some((_, reason)) = self.source_down(plan, errored, false) {
            effects.extend(self.rollback_inner(plan, now, &reason));
        }
        (decisions, effects)
    }

    /// One analysis tick: triggers first, then the current phase's gates. Returns every check's decision
    /// and the effects to carry out, in order.
    pub fn tick(
        &mut self,
        plan: &Plan,
        now: Millis,
        source: &mut dyn MetricSource,
    ) -> (Vec<CheckDecision>, Vec<Effect>) {
        let mut decisions = Vec::new();
        let mut effects = Vec::new();
        if self.status == Status::Pending && plan.confirm.iter().any(|c| c.value.steps().contains(&ConfirmStep::Start))
        {
            // Created waiting for its start's confirm gates: it starts at the first tick they all say yes.
            match self.unconfirmed(plan, ConfirmStep::Start, now, source, &mut decisions) {
                Some(why) => self.waiting_for = Some(why),
                None => {
                    self.waiting_for = None;
                    effects = self.start(plan, now);
                }
            }
            return (decisions, effects);
        }
        if self.status.is_terminal() || self.status == Status::Pending {
            return (decisions, effects);
        }
        let Some(interval) = self.take_tick(plan, now) else {
            return (decisions, effects);
        };
        // Said again by this tick if a confirm gate still says no; anything else it waited on is over.
        self.waiting_for = None;
        // Resumed by the soft trigger's default in this very tick: the gates were not due (the rollout was
        // paused) so nobody measured them; they are judged from the next tick on, never charged now.
        let mut gates_measured = self.status == Status::Running;
        if let Status::Paused { decide_by: Some(by), default: Some(d), reason, .. } = self.status.clone() {
            if now >= by {
                let default = match d {
                    DecisionKind::Resume => "resume",
                    DecisionKind::Rollback => "roll back",
                };
                let why = format!("nobody decided in time after {reason}: the plan's default applies ({default})");
                effects.extend(match d {
                    DecisionKind::Resume => self.resume_inner(plan, now, &why),
                    DecisionKind::Rollback => self.rollback_inner(plan, now, &why),
                });
                if self.status.is_terminal() {
                    return (decisions, effects);
                }
            }
        }
        let mut errored = false;
        let control = self.control_window(plan, now);

        // Triggers, armed from start to completion.
        for t in self.measure_triggers(plan, interval, now, control, source, &mut errored, &mut decisions) {
            let reason = self.fire(t);
            match t.severity.as_ref().map(|s| s.value) {
                Some(Severity::Hard) => {
                    effects.extend(self.rollback_inner(plan, now, &reason));
                    return (decisions, effects);
                }
                _ if !matches!(self.status, Status::Paused { .. }) => {
                    let decide_by = t.decide_within.as_ref().map(|d| now + d.value.0.as_millis() as u64);
                    let default = t.default.as_ref().map(|d| d.value.into());
                    self.status = self.pause_status(reason.clone(), decide_by, default);
                    // People read the deadline and what happens at it in the notification itself.
                    let told = match (&t.decide_within, default) {
                        (Some(within), Some(d)) => {
                            format!("{reason}; decide within {} or it will {}", within.value, d.as_verb())
                        }
                        _ => format!("{reason}; it waits for a person to resume or roll back"),
                    };
                    effects.push(self.event(plan, now, "paused", told));
                }
                _ => {}
            }
        }

        // Gates, while running.
        let mut all_pass = gates_measured;
        gates_measured &= self.status == Status::Running;
        if gates_measured {
            let phase = &plan.phases[self.phase].value;
            let applying: Vec<&Check> = plan.gates.iter().chain(phase.gates.iter()).map(|g| &g.value).collect();
            for g in applying {
                let d = self.evaluate(g, CheckKind::Gate, interval, now, control, source);
                errored |= counts_as_source_error(&d);
                all_pass &= d.dry_run || (d.outcome == Outcome::Holds && d.run >= d.needed);
                decisions.push(d);
            }
        }

        self.note_inconclusive(plan, now, &decisions, &mut effects);

        if let Some((down, reason)) = self.source_down(plan, errored, true) {
            match down {
                OnSourceDown::Rollback => effects.extend(self.rollback_inner(plan, now, &reason)),
                OnSourceDown::Pause => {
                    self.status = self.pause_status(reason.clone(), None, None);
                    effects.push(self.event(plan, now, "source_down", reason));
                }
            }
            return (decisions, effects);
        }

        match self.status.clone() {
            Status::Running => {
                let phase = &plan.phases[self.phase].value;
                let (held, signed) = (self.held(plan, now), self.signed(plan));
                if held && all_pass && signed {
                    let step = self.next_step(plan);
                    match self.unconfirmed(plan, step, now, source, &mut decisions) {
                        Some(why) => self.waiting_for = Some(why),
                        None => {
                            self.waiting_for = None;
                            effects.extend(self.promote_inner(plan, now));
                        }
                    }
                } else if held && all_pass && !self.told_approval_waiting() {
                    let missing: Vec<&str> = phase
                        .approvals
                        .iter()
                        .map(|a| a.value.item.as_str())
                        .filter(|i| !self.approvals.contains(*i))
                        .collect();
                    let reason = format!("phase {} waits for approval: {}", self.phase + 1, missing.join(", "));
                    effects.push(self.event(plan, now, "approval_waiting", reason));
                }
            }
            Status::Baking { until } if now >= until => {
                self.status = Status::Completed;
                effects.push(self.event(plan, now, "completed", "bake finished with no trigger firing"));
            }
            _ => {}
        }
        (decisions, effects)
    }

    /// Counts each trigger's consecutive inconclusive ticks and tells people once, when one reaches
    /// `analysis.max_inconclusive`: a trigger that never gets a value can never fire, and a bake "with no
    /// trigger firing" would mean nothing.
    fn note_inconclusive(&mut self, plan: &Plan, now: Millis, decisions: &[CheckDecision], effects: &mut Vec<Effect>) {
        let limit = plan.analysis.max_inconclusive.value.max(1);
        for d in decisions.iter().filter(|d| d.kind == CheckKind::Trigger) {
            let key = format!("trigger:{}", d.check);
            if d.outcome != Outcome::Inconclusive {
                self.inconclusive.remove(&key);
                continue;
            }
            let count = self.inconclusive.entry(key).or_insert(0);
            *count += 1;
            if *count == limit {
                let why = d.note.as_deref().unwrap_or("no value");
                let reason = format!(
                    "trigger `{}` has had no conclusive value for {limit} ticks ({why}): it cannot fire until it has one",
                    d.check
                );
                effects.push(self.event(plan, now, "no_data", reason));
            }
        }
    }

    /// The triggers that have been inconclusive for at least `analysis.max_inconclusive` ticks in a row.
    pub fn blind_triggers(&self, plan: &Plan) -> Vec<String> {
        let limit = plan.analysis.max_inconclusive.value.max(1);
        self.inconclusive
            .iter()
            .filter(|(_, n)| **n >= limit)
            .filter_map(|(k, _)| k.strip_prefix("trigger:").map(str::to_string))
            .collect()
    }

    /// The analysis interval when a tick is due at `now` (which this takes), `None` less than one interval
    /// after the last tick.
    fn take_tick(&mut self, plan: &Plan, now: Millis) -> Option<u64> {
        let interval = plan.analysis.interval.value.0.as_millis() as u64;
        if self.last_tick.is_some_and(|t| now < t + interval) {
            return None;
        }
        self.last_tick = Some(now);
        Some(interval)
    }

    /// Measures the armed triggers (not the signals: those arrive from outside) in the plan's order,
    /// adding each decision, and returns those that fired, stopping after the first hard one: it rolls
    /// back, and nothing after it is measured.
    #[allow(clippy::too_many_arguments)]
    fn measure_triggers<'p>(
        &mut self,
        plan: &'p Plan,
        interval: u64,
        now: Millis,
        control: Option<(Millis, Millis)>,
        source: &mut dyn MetricSource,
        errored: &mut bool,
        decisions: &mut Vec<CheckDecision>,
    ) -> Vec<&'p Check> {
        let mut fired = Vec::new();
        for t in plan.triggers.iter().map(|t| &t.value).filter(|t| !is_signal(plan, t)) {
            let (d, fires) = self.evaluate_trigger(t, interval, now, control, source, errored);
            decisions.push(d);
            if fires {
                fired.push(t);
                if is_hard(t) {
                    break;
                }
            }
        }
        fired
    }

    /// A trigger acted on: its run starts again, and the reason its pause or rollback gives.
    fn fire(&mut self, t: &Check) -> String {
        self.runs.insert(format!("trigger:{}", t.name.value), 0);
        format!("trigger `{}` fired", t.name.value)
    }

    /// Evaluates one measured trigger: its decision, and whether it fires (held for its `for`, and not a
    /// rehearsal). Its source error, if any, is added to `errored`.
    fn evaluate_trigger(
        &mut self,
        t: &Check,
        interval: u64,
        now: Millis,
        control: Option<(Millis, Millis)>,
        source: &mut dyn MetricSource,
        errored: &mut bool,
    ) -> (CheckDecision, bool) {
        let d = self.evaluate(t, CheckKind::Trigger, interval, now, control, source);
        *errored |= counts_as_source_error(&d);
        let fired = d.outcome == Outcome::Holds && d.run >= d.needed && !d.dry_run;
        (d, fired)
    }

    fn evaluate(
        &mut self,
        c: &Check,
        kind: CheckKind,
        interval: u64,
        now: Millis,
        control_window: Option<(Millis, Millis)>,
        source: &mut dyn MetricSource,
    ) -> CheckDecision {
        let key = check_key(kind, &c.name.value);
        let needed =
            c.for_.as_ref().map_or(1, |f| (f.value.0.as_millis() as u64).div_ceil(interval.max(1)) as u32).max(1);
        let seq_key = sequence_key(kind, &c.name.value, self.phase);
        let sequence = self.sequences.get(&seq_key).map(|s| &s.closed);
        let probe = CheckRef {
            name: &c.name.value,
            kind,
            check: c,
            phase: self.phase,
            sequence,
            phase_started: self.phase_started,
            control_window,
        };
        let measured = source.measure(&probe, now);
        let interval = match measured {
            Measurement::Bounded { lower, upper, .. } if lower.is_finite() && upper.is_finite() => Some([lower, upper]),
            _ => None,
        };
        if let Measurement::Bounded { sample: Some(sample), .. } = &measured {
            self.sequences.entry(seq_key).or_default().open = Some(*sample);
        }
        let (value, note) = match measured {
            Measurement::Value(v) | Measurement::Bounded { value: v, .. } if v.is_finite() => (Some(v), None),
            Measurement::Bounded { value: v, .. } => (None, Some(format!("not a number: {v}"))),
            Measurement::Value(v) => (None, Some(format!("not a number: {v}"))),
            Measurement::Empty if c.on_empty == Some(OnEmpty::Zero) => (Some(0.0), None),
            Measurement::Empty => (None, Some("no data".to_string())),
            Measurement::Error(e) => (None, Some(format!("source error: {e}"))),
            Measurement::Inconclusive(why) => (None, Some(why)),
        };
        // A phase's own baseline gate has its phase's capture; a plan-wide check the start's.
        let baseline =
            self.baselines.get(&phase_baseline_key(&c.name.value, self.phase)).or(self.baselines.get(&key)).copied();
        let (value, note) = match (value, baseline) {
            (Some(_), None) if c.baseline.is_some() => (None, Some("no baseline was captured at the start".into())),
            other => (other.0, note),
        };
        let threshold = threshold_of(c, kind, baseline);
        let outcome = match value {
            None => Outcome::Inconclusive,
            Some(v) if threshold.holds(v) => Outcome::Holds,
            Some(_) => Outcome::Clear,
        };
        let run = self.runs.entry(key).or_insert(0);
        *run = if outcome == Outcome::Holds { *run + 1 } else { 0 };
        CheckDecision {
            at: now,
            check: c.name.value.clone(),
            kind,
            value,
            threshold,
            outcome,
            note,
            run: *run,
            needed,
            dry_run: c.dry_run,
            interval: interval.filter(|_| value.is_some()),
        }
    }

    fn promote_inner(&mut self, plan: &Plan, now: Millis) -> Vec<Effect> {
        let i = self.phase;
        let mut effects = self.hook_effects(plan, i, HookWhen::After);
        if i + 1 < plan.phases.len() {
            effects.extend(self.enter_phase(plan, i + 1, now));
            effects.push(self.event(plan, now, "promoted", format!("phase {} passed", i + 1)));
        } else {
            match &plan.bake {
                Some(b) => {
                    self.status = Status::Baking { until: now + b.value.0.as_millis() as u64 };
                    effects.push(self.event(plan, now, "baking", format!("last phase passed; baking {}", b.value)));
                }
                None => {
                    self.status = Status::Completed;
                    effects.push(self.event(plan, now, "completed", "last phase passed"));
                }
            }
        }
        effects
    }

    /// Rolls back as the plan says (a trigger, an alert, a soft trigger's default, a source that stays
    /// down): the flag first, then the rollback actions, then notifications.
    ///
    /// With `rollback.to: previous-phase`, the first rollback only steps back ([`step_back`](Self::step_back));
    /// the rollback's actions, `flags_off` and `clear_overrides` are kept for a real rollback. A second hard
    /// trigger while stepped back rolls back to the start: one incident never walks the flag down phase by
    /// phase, nor runs `kubectl rollout undo` twice.
    fn rollback_inner(&mut self, plan: &Plan, now: Millis, reason: &str) -> Vec<Effect> {
        if plan.rollback.to == RollbackTo::PreviousPhase && !self.stepped_back {
            return self.step_back_inner(plan, now, reason);
        }
        self.rollback_to_start(plan, now, reason)
    }

    /// The previous phase's percentage (the flag as it was, from the first phase), and a pause for a
    /// person: `resume` retries the phase, `rollback` goes to the start.
    fn step_back_inner(&mut self, plan: &Plan, now: Millis, reason: &str) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.phase > 0 {
            let i = self.phase - 1;
            effects.extend(self.enter_phase(plan, i, now).into_iter().filter(|e| matches!(e, Effect::SetRamp { .. })));
        } else {
            // Before the first phase is the flag as it was: resume retries the first phase.
            self.restart_phase(now);
            effects.push(Effect::RestoreFlag);
        }
        self.stepped_back = true;
        self.status = Status::Paused {
            reason: format!("{reason}; stepped back"),
            decide_by: None,
            default: None,
            bake_until: None,
        };
        effects.push(self.event(plan, now, "stepped_back", reason));
        effects
    }

    /// Restores the flag's ramp as it was before the rollout, switches off `flags_off`, clears overrides
    /// when asked, runs the rollback's actions, and ends the rollout `rolled_back`.
    fn rollback_to_start(&mut self, plan: &Plan, now: Millis, reason: &str) -> Vec<Effect> {
        let mut effects = vec![Effect::RestoreFlag];
        if !plan.rollback.flags_off.is_empty() {
            effects.push(Effect::FlagsOff { flags: plan.rollback.flags_off.iter().map(|f| f.value.clone()).collect() });
        }
        if plan.rollback.clear_overrides {
            effects.push(Effect::ClearOverrides);
        }
        effects.extend((0..plan.rollback.actions.len()).map(|index| Effect::run(ActionRef::Rollback { index }, plan)));
        self.stepped_back = false;
        self.status = Status::RolledBack { reason: reason.to_string() };
        effects.push(self.event(plan, now, "rolled_back", reason));
        effects
    }

    fn resume_inner(&mut self, plan: &Plan, now: Millis, why: &str) -> Vec<Effect> {
        let stepped_back = std::mem::take(&mut self.stepped_back);
        let failed_hook = self.failed_hook.take();
        // Gates start their `for` runs again: what held before the pause says nothing about now.
        self.runs.retain(|k, _| k.starts_with("trigger:"));
        self.status = match self.status {
            Status::Paused { bake_until: Some(until), .. } => Status::Baking { until },
            _ => Status::Running,
        };
        let mut effects = vec![self.event(plan, now, "resumed", why)];
        let failed_hook = match failed_hook {
            Some(ActionRef::Hook { phase, when, .. }) => Some((phase, when)),
            _ => None,
        };
        match failed_hook {
            // A failed hook is retried where it failed: the promotion out of phase `k` (its after-hooks
            // and what follows), or the entry into phase `k` (its before-hooks, then its percentage).
            Some((k, HookWhen::After)) if k < plan.phases.len() => {
                self.phase = k;
                effects.extend(self.promote_inner(plan, now));
            }
            Some((k, HookWhen::Before)) if k < plan.phases.len() => {
                effects.extend(self.enter_phase(plan, k, now));
                effects.push(self.event(plan, now, "promoted", format!("retrying phase {}", k + 1)));
            }
            // Stepped back by a trigger: the phase stepped back to is tried again from its start.
            _ if stepped_back => {
                let i = self.phase;
                effects.extend(self.enter_phase(plan, i, now));
            }
            _ => {}
        }
        effects
    }

    fn paused(&self) -> Result<(), CommandError> {
        match self.status {
            Status::Paused { .. } => Ok(()),
            ref s => Err(CommandError(format!("the rollout is not paused (it is {})", status_name(s)))),
        }
    }

    fn live(&self) -> Result<(), CommandError> {
        if self.status.is_terminal() || self.status == Status::Pending {
            Err(CommandError(format!("the rollout is {}", status_name(&self.status))))
        } else {
            Ok(())
        }
    }

    /// The current phase's own baseline gates not captured yet, while the rollout runs: the caller measures
    /// each over its window before [`Rollout::phase_started`] and keeps it in [`Rollout::baselines`] under
    /// its key, before the tick (until then the gate is inconclusive).
    pub fn baselines_due<'p>(&self, plan: &'p Plan) -> Vec<(String, &'p Check)> {
        if self.status != Status::Running {
            return Vec::new();
        }
        phase_baseline_checks(plan, self.phase).filter(|(key, _)| !self.baselines.contains_key(key)).collect()
    }

    /// The checks the next tick will evaluate, so that a caller can measure them (asynchronously) first:
    /// the measured triggers while the rollout is live, and the current phase's gates while it runs.
    pub fn checks_due<'p>(&self, plan: &'p Plan) -> Vec<(CheckKind, &'p Check)> {
        if self.status.is_terminal() || self.status == Status::Pending {
            return Vec::new();
        }
        let mut due: Vec<(CheckKind, &Check)> = plan
            .triggers
            .iter()
            .map(|t| &t.value)
            .filter(|t| !is_signal(plan, t))
            .map(|t| (CheckKind::Trigger, t))
            .collect();
        if self.status == Status::Running {
            let phase = &plan.phases[self.phase].value;
            due.extend(plan.gates.iter().chain(phase.gates.iter()).map(|g| (CheckKind::Gate, &g.value)));
        }
        due
    }

    /// A person pauses a running or baking rollout; triggers stay armed.
    pub fn pause(&mut self, plan: &Plan, now: Millis, reason: &str) -> Result<Vec<Effect>, CommandError> {
        self.live()?;
        if matches!(self.status, Status::Paused { .. }) {
            return Err(CommandError("the rollout is paused already".into()));
        }
        self.status = self.pause_status(format!("paused by hand: {reason}"), None, None);
        Ok(vec![self.event(plan, now, "paused", reason)])
    }

    /// The controller pauses a running or baking rollout for a reason of its own, told as event `kind`
    /// (`kill_switch`, `uncertain`: one of [`EVENTS`](sluice_plan::EVENTS)). One paused already stays paused as it was (its
    /// deadline and reason stand), and the event is still told.
    pub fn pause_because(
        &mut self,
        plan: &Plan,
        now: Millis,
        kind: &str,
        reason: &str,
    ) -> Result<Vec<Effect>, CommandError> {
        self.live()?;
        if !matches!(self.status, Status::Paused { .. }) {
            self.status = self.pause_status(reason.to_string(), None, None);
        }
        Ok(vec![self.event(plan, now, kind, reason)])
    }

    /// An action of the plan failed for good (a permanent error, or its retries used up) and waits for a
    /// person to settle it: a live rollout pauses, since the action's effect is not what the plan meant;
    /// an ended one stays ended. Either way people are told (`action_failed`).
    pub fn action_failed(&mut self, plan: &Plan, now: Millis, action: ActionRef, detail: &str) -> Vec<Effect> {
        let reason = format!("{action} failed for good: {detail}; `settle` it (retry, or accept it as it is)");
        if !self.status.is_terminal() && self.status != Status::Pending && !matches!(self.status, Status::Paused { .. })
        {
            self.status = self.pause_status(reason.clone(), None, None);
        }
        vec![self.event(plan, now, "action_failed", reason)]
    }

    /// A phase hook failed (the runner stopped there: nothing after it ran, so the percentage was not
    /// raised). The rollout steps back to the phase whose percentage is in effect and pauses; `resume`
    /// retries that phase, hooks included.
    pub fn hook_failed(&mut self, plan: &Plan, now: Millis, hook: ActionRef, detail: &str) -> Vec<Effect> {
        let (before_of_current, after_of_previous) = match hook {
            ActionRef::Hook { phase, when: HookWhen::Before, .. } => (phase == self.phase, false),
            ActionRef::Hook { phase, when: HookWhen::After, .. } => (false, self.phase > 0 && phase == self.phase - 1),
            ActionRef::Rollback { .. } => (false, false),
        };
        if (before_of_current || after_of_previous) && self.phase > 0 {
            self.phase -= 1;
        }
        self.new_window(now);
        self.hold_skipped = false;
        self.stepped_back = true;
        self.failed_hook = Some(hook);
        let reason = format!("{hook} failed: {detail}");
        self.status = Status::Paused {
            reason: format!("{reason}; stepped back"),
            decide_by: None,
            default: None,
            bake_until: None,
        };
        vec![self.event(plan, now, "hook_failed", reason)]
    }

    /// A person resumes a paused rollout.
    pub fn resume(&mut self, plan: &Plan, now: Millis, reason: &str) -> Result<Vec<Effect>, CommandError> {
        self.paused()?;
        Ok(self.resume_inner(plan, now, reason))
    }

    /// A person rolls back: to the start, whatever the plan's `rollback.to` (that is the policy of
    /// automatic rollbacks); stepping back one phase is [`step_back`](Self::step_back).
    pub fn rollback(&mut self, plan: &Plan, now: Millis, reason: &str) -> Result<Vec<Effect>, CommandError> {
        self.live()?;
        Ok(self.rollback_to_start(plan, now, reason))
    }

    /// A person steps back one phase (the flag as it was, from the first phase) and the rollout pauses.
    pub fn step_back(&mut self, plan: &Plan, now: Millis, reason: &str) -> Result<Vec<Effect>, CommandError> {
        self.live()?;
        Ok(self.step_back_inner(plan, now, reason))
    }

    /// A person ends the rollout where it is.
    pub fn abort(&mut self, plan: &Plan, now: Millis, reason: &str) -> Result<Vec<Effect>, CommandError> {
        self.live()?;
        self.status = Status::Aborted { reason: reason.to_string() };
        Ok(vec![self.event(plan, now, "aborted", reason)])
    }

    /// A person skips the rest of the current phase's hold (gates and approvals still apply).
    pub fn promote(&mut self, plan: &Plan, now: Millis, reason: &str) -> Result<Vec<Effect>, CommandError> {
        if self.status != Status::Running {
            return Err(CommandError(format!(
                "only a running rollout can be promoted (it is {})",
                status_name(&self.status)
            )));
        }
        self.hold_skipped = true;
        Ok(vec![self.event(plan, now, "hold_skipped", reason)])
    }

    /// A person (`by`) signs an approval item of the current phase. Whether their role may sign it is the
    /// caller's to check: the engine knows items, not tokens.
    pub fn approve(&mut self, plan: &Plan, now: Millis, item: &str, by: &str) -> Result<Vec<Effect>, CommandError> {
        self.live()?;
        let phase = &plan.phases[self.phase].value;
        if !phase.approvals.iter().any(|a| a.value.item == item) {
            let items: Vec<&str> = phase.approvals.iter().map(|a| a.value.item.as_str()).collect();
            return Err(CommandError(format!(
                "phase {} has no approval item `{item}` (it has: {})",
                self.phase + 1,
                if items.is_empty() { "none".to_string() } else { items.join(", ") }
            )));
        }
        if !self.approvals.insert(item.to_string()) {
            // Signed already (e.g. a command sent again after a lost answer): nothing changes.
            return Ok(Vec::new());
        }
        self.signed_by.insert(item.to_string(), by.to_string());
        Ok(vec![self.event(plan, now, "approved", format!("{item} by {by}"))])
    }

    /// A person or an alert fires a trigger: `hard` rolls back at once, `soft` pauses (with the trigger's
    /// decision rule when the plan names it).
    pub fn signal(
        &mut self,
        plan: &Plan,
        now: Millis,
        name: &str,
        hard: bool,
        reason: &str,
    ) -> Result<Vec<Effect>, CommandError> {
        self.live()?;
        let why = format!("signal `{name}`: {reason}");
        if hard {
            return Ok(self.rollback_inner(plan, now, &why));
        }
        if matches!(self.status, Status::Paused { .. }) {
            // Paused already: a repeated alert neither restarts the time to decide nor hides why it paused.
            return Ok(Vec::new());
        }
        let rule = plan.triggers.iter().find(|t| t.value.name.value == name).map(|t| &t.value);
        let decide_by = rule.and_then(|t| t.decide_within.as_ref()).map(|d| now + d.value.0.as_millis() as u64);
        let default = rule.and_then(|t| t.default.as_ref()).map(|d| d.value.into());
        self.status = self.pause_status(why.clone(), decide_by, default);
        Ok(vec![self.event(plan, now, "paused", why)])
    }
}

/// How long after 100% took effect a comparison with control still compares with the control captured
/// before (24 h: one daily cycle of traffic); after that it no longer guards, and `plan check` says so of a
/// longer bake.
pub const CONTROL_AT_100_VALID_FOR: Millis = 24 * 3_600_000;

/// A check's key in [`Rollout::runs`] and [`Rollout::baselines`]: `gate:NAME` or `trigger:NAME`.
pub fn check_key(kind: CheckKind, name: &str) -> String {
    format!("{}:{name}", if kind == CheckKind::Gate { "gate" } else { "trigger" })
}

/// The checks with a `baseline`, keyed as in [`Rollout::baselines`]: the caller of [`Rollout::start`]
/// measures each over its window before the start.
///
/// ```
/// let yaml = "name: p\nflag: f\nanalysis: { prometheus: { url: 'http://127.0.0.1:9090' } }\nphases: [ { percent: 5 } ]\ngates:\n  - { name: p99, query: 'vector(1)', baseline: { window: 1h }, max_increase_pct: 10 }\n";
/// let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
/// let keys: Vec<String> = sluice_engine::baseline_checks(&plan).map(|(k, _)| k).collect();
/// assert_eq!(keys, ["gate:p99"]);
/// ```
pub fn baseline_checks(plan: &Plan) -> impl Iterator<Item = (String, &Check)> {
    let gates = plan.gates.iter().map(|g| (CheckKind::Gate, &g.value));
    let triggers = plan.triggers.iter().map(|t| (CheckKind::Trigger, &t.value));
    gates.chain(triggers).filter(|(_, c)| c.baseline.is_some()).map(|(kind, c)| (check_key(kind, &c.name.value), c))
}

/// The key of a phase gate's baseline in [`Rollout::baselines`]: `gate:NAME@PHASE`, captured when that
/// phase starts, over the window before it.
pub fn phase_baseline_key(name: &str, phase: usize) -> String {
    format!("{}@{phase}", check_key(CheckKind::Gate, name))
}

/// The gates of phase `phase` with a `baseline`, keyed as in [`Rollout::baselines`]
/// ([`phase_baseline_key`]): the caller measures each over its window before the phase started, once, and
/// keeps it with the rollout.
///
/// ```
/// let yaml = "name: p\nflag: f\nanalysis: { prometheus: { url: 'http://127.0.0.1:9090' } }\nphases:\n  - { percent: 5 }\n  - percent: 50\n    gates: [ { name: p99, query: 'vector(1)', baseline: { window: 1h }, max_increase_pct: 10 } ]\n";
/// let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
/// let keys: Vec<String> = sluice_engine::phase_baseline_checks(&plan, 1).map(|(k, _)| k).collect();
/// assert_eq!(keys, ["gate:p99@1"]);
/// assert_eq!(sluice_engine::phase_baseline_checks(&plan, 0).count(), 0);
/// ```
pub fn phase_baseline_checks(plan: &Plan, phase: usize) -> impl Iterator<Item = (String, &Check)> {
    plan.phases
        .get(phase)
        .into_iter()
        .flat_map(|p| p.value.gates.iter())
        .map(|g| &g.value)
        .filter(|c| c.baseline.is_some())
        .map(move |c| (phase_baseline_key(&c.name.value, phase), c))
}

impl Rollout {
    /// The one rule for a source that keeps failing, at every tick (`full`) and at a tick of the triggers
    /// only while a phase hook runs: this tick's source errors are counted in a row, and past
    /// `max_source_errors` the rollout stops, because unknown is never a pass. It says how
    /// (`on_source_down`) and why, and starts counting again. `rollback` acts at any tick and while paused
    /// too: the flag is still exposed at its percentage. `pause` acts at a full tick of a rollout not
    /// paused already; during a hook the count carries to the next full tick.
    fn source_down(&mut self, plan: &Plan, errored: bool, full: bool) -> Option<(OnSourceDown, String)> {
        self.source_errors = if errored { self.source_errors + 1 } else { 0 };
        let down = plan.analysis.on_source_down;
        let acts = match down {
            OnSourceDown::Rollback => true,
            OnSourceDown::Pause => full && !matches!(self.status, Status::Paused { .. }),
        };
        if self.source_errors < plan.analysis.max_source_errors.value.max(1) || !acts {
            return None;
        }
        let reason = format!("{} consecutive ticks with a source error", self.source_errors);
        self.source_errors = 0;
        Some((down, reason))
    }
}

/// A source error counts toward `max_source_errors`, except a rehearsed (dry-run) check's: a rehearsal
/// never acts, its source failing included.
fn counts_as_source_error(d: &CheckDecision) -> bool {
    !d.dry_run && d.note.as_deref().is_some_and(|n| n.starts_with("source error"))
}

/// A trigger only a person or an alert fires: never measured.
fn is_hard(t: &Check) -> bool {
    t.severity.as_ref().map(|s| s.value) == Some(Severity::Hard)
}

fn is_signal(plan: &Plan, c: &Check) -> bool {
    c.is_signal(plan.analysis.source.as_ref().map(|s| s.value.as_str()))
}

/// The state's name for a person's message (`rolled back`, not `rolled_back`).
fn status_name(s: &Status) -> String {
    s.name().replace('_', " ")
}

/// What a check's value is held against: its comparison's bound, its captured baseline plus its margin, or
/// its plain threshold.
pub fn threshold_of(c: &Check, kind: CheckKind, baseline: Option<f64>) -> Threshold {
    let bound = if kind == CheckKind::Gate { Bound::Upper } else { Bound::Lower };
    let margin = c.margin().unwrap_or(sluice_plan::model::Margin::Absolute(0.0));
    if c.baseline.is_some() {
        return Threshold::Baseline { baseline, margin, bound };
    }
    if let Some(cmp) = &c.compare {
        return Threshold::Compared { reference: cmp.value, margin, bound };
    }
    match (c.below, c.above, &c.between) {
        (Some(limit), _, _) => Threshold::Below { limit },
        (_, Some(limit), _) => Threshold::Above { limit },
        (_, _, Some(r)) if r.value.len() == 2 => Threshold::Between { low: r.value[0], high: r.value[1] },
        _ => Threshold::Written { text: String::new() },
    }
}
