//! Where rollouts tick. Live, each rollout has its own task that sleeps until its next tick is due (its
//! plan's `analysis.interval` after the last), so rollouts never wait for each other and nothing polls
//! the store on a fixed beat; a tick's measurements run without the rollout's lock, and a long phase
//! hook never stops its rollout's triggers from ticking. Tests drive the same ticks with [`Controller::run_due`]
//! under a virtual clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sluice_engine::{CheckDecision, CheckKind, CheckRef, Effect, Measurement, Outcome};
use sluice_sources::MeasureContext;
use sluice_store::{AuditNote, Decided, NewDecision, RolloutRecord};

use crate::transition::Saving;
use crate::{plan_of, template_values, Controller, ControllerError};

/// How often the live runner looks for rollouts it has no task for, in case a wake-up was missed (a
/// rollout started by another process sharing the database).
const RESCAN: Duration = Duration::from_secs(5);

/// What the server allows and keeps, set when it starts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Every tick's decisions are kept this long (default 7 days); after that, only those whose outcome
    /// changed. A two-week bake at one-minute ticks would otherwise keep about 200k rows per rollout.
    pub keep_every_decision_for: Duration,
    /// The programs an operator may start a plan with (its `exec` actions and hooks, its `command`
    /// checks); plans running others are started by admins. Empty by default.
    pub allow_exec: std::collections::BTreeSet<String>,
    /// Attempts at delivering a notification that keeps failing transiently before it is given up (dead)
    /// (default 10).
    pub delivery_attempts: u32,
    /// How long after it was queued a notification that keeps failing transiently is given up (default
    /// 24 h).
    pub delivery_give_up: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keep_every_decision_for: Duration::from_secs(7 * 24 * 3600),
            allow_exec: Default::default(),
            delivery_attempts: 10,
            delivery_give_up: Duration::from_secs(24 * 3600),
        }
    }
}

/// Per-rollout memory of the runner: when it last ticked, each check's last outcome (a decision goes to
/// the audit log only when its outcome changes), and which rollouts are ticking now. Lost on a restart,
/// which only means the next tick comes at once and its decisions are audited again.
#[derive(Default)]
pub struct RunnerMemory {
    last_tick: parking_lot::Mutex<HashMap<String, u64>>,
    outcomes: parking_lot::Mutex<HashMap<(String, String), Outcome>>,
    ticking: parking_lot::Mutex<HashSet<String>>,
}

/// Marks a rollout as ticking until dropped, so that the runner never starts a second tick of it while a
/// slow one (a long command) is still going.
pub(crate) struct Ticking<'m> {
    memory: &'m RunnerMemory,
    id: String,
}

impl<'m> Ticking<'m> {
    fn claim(memory: &'m RunnerMemory, id: &str) -> Option<Self> {
        memory.ticking.lock().insert(id.to_string()).then(|| Ticking { memory, id: id.to_string() })
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.memory.ticking.lock().remove(&self.id);
    }
}

impl Controller {
    /// Runs the controller for the process's life: finishes what a previous process left undone (each
    /// rollout in its own task, so one long hook holds up no other recovery), gives every active rollout a
    /// task that ticks it on its own timer, and delivers notifications.
    ///
    /// With a lease ([`crate::Seams::fence`]), it runs for the term it starts in: when the replica loses the
    /// lease, every loop ends, and the replica calls `run` again once it leads again.
    pub async fn run(self: Arc<Self>) {
        let term = self.term();
        if term == 0 {
            return;
        }
        match self.store.rollouts(false).await {
            Ok(all) => {
                let mut unfinished = self.unfinished.lock();
                unfinished.extend(all.into_iter().filter(|r| !r.outbox.is_empty()).map(|r| r.id));
            }
            Err(e) => tracing::error!(error = %e, "reading rollouts to recover"),
        }
        let sweep = self.clone();
        tokio::spawn(async move {
            if let Err(e) = sweep.pause_rollouts_of_disabled_flags().await {
                tracing::warn!(error = %e, "pausing the rollouts of disabled flags; their next ticks pause them");
            }
        });
        tokio::spawn(self.clone().deliver_notifications(term));
        tokio::spawn(self.clone().refresh_alerts_forever(term));
        tokio::spawn(self.clone().prune_decisions(self.settings.keep_every_decision_for, term));
        // Shared across terms: a tick of the last term still under way (a replica that lost the lease and
        // took it back) keeps this term's tick of that rollout from starting beside it.
        let memory = self.memory.clone();
        let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            if self.term() != term {
                tracing::info!(term, "the controller's term is over: its rollouts are left to the next leader");
                return;
            }
            tasks.retain(|_, t| !t.is_finished());
            match self.runnable().await {
                Ok(records) => {
                    for record in records {
                        if let std::collections::hash_map::Entry::Vacant(slot) = tasks.entry(record.id) {
                            let task = tokio::spawn(self.clone().drive(slot.key().clone(), memory.clone(), term));
                            slot.insert(task);
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "rollout runner: listing rollouts"),
            }
            tokio::select! {
                () = self.wake_runner.notified() => {}
                () = tokio::time::sleep(RESCAN) => {}
            }
        }
    }

    /// One rollout's timer: a tick when one is due, as its own task (a tick that carries out a long hook
    /// must not delay the next tick's triggers), until the rollout has ended and left nothing undone.
    async fn drive(self: Arc<Self>, id: String, memory: Arc<RunnerMemory>, term: i64) {
        loop {
            if self.term() != term {
                return;
            }
            let record = match self.store.rollout(&id).await {
                Ok(Some(record)) => record,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(rollout = %id, error = %e, "reading the rollout; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let undone = !record.outbox.is_empty() || self.unfinished.lock().contains(&id);
            if !record.active && !undone {
                return;
            }
            let interval = match plan_of(&record) {
                Ok(plan) => plan.analysis.interval.value.0.as_millis() as u64,
                Err(e) => {
                    tracing::error!(rollout = %id, error = %e, "the rollout cannot run");
                    self.unfinished_remove(&id);
                    return;
                }
            };
            let now = self.clock.now();
            let last = memory.last_tick.lock().get(&id).copied();
            let due = last.map_or(now, |t| t + interval);
            if due <= now {
                let (controller, memory, id) = (self.clone(), memory.clone(), id.clone());
                tokio::spawn(async move {
                    let Some(ticking) = Ticking::claim(&memory, &id) else { return };
                    let _ = controller.tick_logged(record, &memory, ticking).await;
                });
                // Let the tick stamp its time before the next look; if it could not (still measuring the
                // last one), look again soon.
                tokio::time::sleep(Duration::from_millis(interval.clamp(10, 250))).await;
            } else {
                tokio::time::sleep(Duration::from_millis(due - now)).await;
            }
        }
    }

    /// One pass over every rollout: ticks each active one whose interval has elapsed (and finishes what an
    /// interrupted transition left undone). The rollouts tick concurrently and the pass ends when all have;
    /// one still ticking from an earlier pass is left alone; one rollout's failure is logged and does not
    /// hold up the others. An injected crash stops the whole pass at once, as a kill would.
    pub async fn run_due(&self, memory: &RunnerMemory) -> Result<(), ControllerError> {
        let ticks = self.runnable().await?.into_iter().filter_map(|record| {
            let ticking = Ticking::claim(memory, &record.id)?;
            Some(self.tick_logged(record, memory, ticking))
        });
        futures_util::future::try_join_all(ticks).await.map(|_| ())
    }

    /// The active rollouts, and those whose outbox may be unfinished.
    async fn runnable(&self) -> Result<Vec<RolloutRecord>, ControllerError> {
        let mut records = self.store.rollouts(true).await?;
        let unfinished: Vec<String> = self.unfinished.lock().iter().cloned().collect();
        for id in unfinished {
            if !records.iter().any(|r| r.id == id) {
                match self.store.rollout(&id).await? {
                    Some(r) => records.push(r),
                    None => self.unfinished_remove(&id),
                }
            }
        }
        Ok(records)
    }

    /// Ticks one rollout; its failure is logged and does not hold up the others. Only an injected crash
    /// comes back as an error.
    async fn tick_logged(
        &self,
        record: RolloutRecord,
        memory: &RunnerMemory,
        ticking: Ticking<'_>,
    ) -> Result<(), ControllerError> {
        let id = record.id.clone();
        match self.tick(record, memory, ticking).await {
            Err(e) if e.is_crash() => Err(e),
            Err(e) => {
                tracing::warn!(rollout = %id, error = %e, "rollout tick failed; retried at its next tick");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// One tick: measure, decide and write the transition while `ticking` is held, then let it go and
    /// carry out the effects, so that the next tick of this rollout (its triggers) can run while a long
    /// phase hook does.
    async fn tick(
        &self,
        record: RolloutRecord,
        memory: &RunnerMemory,
        ticking: Ticking<'_>,
    ) -> Result<(), ControllerError> {
        let hook_running = self.in_hand(&record);
        let now = self.clock.now();
        let plan = plan_of(&record).inspect_err(|_| {
            // Reported once, not every pass: the plan will not parse better next time.
            self.unfinished_remove(&record.id);
        })?;
        let interval = plan.analysis.interval.value.0.as_millis() as u64;
        {
            let mut last_tick = memory.last_tick.lock();
            if last_tick.get(&record.id).is_some_and(|t| now < t + interval) {
                return Ok(());
            }
            last_tick.insert(record.id.clone(), now);
        }
        // Effects left undone by a transition that stopped (an error, a cancelled request, a restart) are
        // finished first, at most once an interval; one waiting for a person to settle an action stays as
        // it is. The claim goes first: a phase hook among them must not keep the triggers from ticking.
        if !record.outbox.is_empty() && !hook_running {
            drop(ticking);
            let guard = self.lock(&record.id).await;
            if let Some(record) = self.store.rollout(&record.id).await? {
                self.finish_outbox(guard, &record).await?;
            }
            self.unfinished_remove(&record.id);
            return Ok(());
        }
        if !record.active {
            self.unfinished_remove(&record.id);
            return Ok(());
        }
        // Measure first, without the lock: commands may take a while.
        let rollout = record.state.clone();
        let measured_state = Epoch::of(&rollout);
        let flag = self.live_flag(&record.env, &record.flag);
        let values = template_values(&record.env, &plan, &rollout, flag.as_ref());
        let cx = MeasureContext {
            rollout: Some(&rollout),
            rollout_id: &record.id,
            plan: &plan,
            started_at: rollout.history.first().map_or(0, |e| e.at),
            phase_started: rollout.phase_started,
            now,
            values: &values,
        };
        // A phase's own baseline gates are captured once, when the phase is first measured: over the
        // window before the phase started.
        let captured = if hook_running { Vec::new() } else { self.phase_baselines(&plan, &rollout, &cx).await };
        // All at once: a tick takes as long as its slowest check, not the sum of their timeouts.
        let due: Vec<_> = rollout
            .checks_due(&plan)
            .into_iter()
            .filter(|(kind, _)| !(hook_running && *kind == CheckKind::Gate))
            .collect();
        let values_measured =
            futures_util::future::join_all(due.iter().map(|(_, c)| self.plugins.measure(c, &cx))).await;
        let mut measured: HashMap<(CheckKind, String), Measurement> =
            due.iter().map(|(kind, c)| (*kind, c.name.value.clone())).zip(values_measured).collect();
        // A baseline that could not be captured: its gate cannot decide, and says why (a source error).
        for (key, got) in &captured {
            if let Err(e) = got {
                let name = key.trim_start_matches("gate:").rsplit_once('@').map_or(key.as_str(), |(n, _)| n);
                measured.insert((CheckKind::Gate, name.to_string()), Measurement::Error(e.clone()));
            }
        }
        // The confirm gates of the step this tick may take, asked beside the checks (not while a hook runs:
        // no step is taken then).
        let confirms = if hook_running { Vec::new() } else { rollout.confirms_due(&plan, now) };
        let confirmed = self.ask_confirms(&record.id, &record.env, &plan, &rollout, &confirms).await;
        let guard = self.lock(&record.id).await;
        // Re-read: a person may have acted meanwhile, or the hook finished.
        let Some(record) = self.store.rollout(&record.id).await? else { return Ok(()) };
        let pending = !record.outbox.is_empty();
        // A full tick when no transition is pending; a triggers-only one while the hook measured for runs.
        let as_measured = if hook_running { pending && self.in_hand(&record) } else { !pending };
        if !record.active || !as_measured {
            return Ok(());
        }
        if self.live_flag(&record.env, &record.flag).is_some_and(|f| !f.enabled) && !pending {
            // Disabled by any path (the kill switch, an import, a PUT): the rollout must not ramp a flag
            // nobody is served.
            return self.pause_for_kill_switch(guard, &record, &Self::actor(&record)).await;
        }
        if Epoch::of(&record.state) != measured_state {
            // A person (or another tick) moved the rollout while this one measured: what was measured may
            // not be what is due now (a resumed rollout's gates were never measured). Discarded, never
            // charged as a source error; the next pass measures again.
            memory.last_tick.lock().remove(&record.id);
            return Ok(());
        }
        let mut rollout = record.state.clone();
        for (key, got) in captured {
            if let Ok(value) = got {
                rollout.baselines.insert(key, value);
            }
        }
        let mut source = Answers { measured: &measured, confirmed: &confirmed };
        let (decisions, effects) = if pending {
            rollout.tick_triggers(&plan, now, &mut source)
        } else {
            rollout.tick(&plan, now, &mut source)
        };
        let (kept, notes, outcomes) = self.decisions_of(&record, &decisions, &effects, memory);
        let actor = Self::actor(&record);
        let also = Saving { notes, decisions: Some((now, &kept)), ..Saving::default() };
        if pending && effects.iter().all(|e| matches!(e, Effect::Notify(_))) {
            // The hook's effects stay as they are: only the triggers' runs and counts are kept, and what the
            // tick has to tell (a trigger without data) is told — it must not replace the hook's outbox.
            let (_, events) = self.outbox_of(&record.id, &plan, rollout.history.len(), effects);
            self.save(&record, &plan, &rollout, &actor, &record.outbox, Saving { events: &events, ..also }).await?;
            memory.outcomes.lock().extend(outcomes);
            return Ok(());
        }
        // Always written: the state carries the `for` runs and the source-error count between ticks.
        let outbox = self.commit_with(&record, &plan, &rollout, effects, &actor, also).await?;
        memory.outcomes.lock().extend(outcomes);
        drop(ticking);
        self.carry_out(guard, &record, &plan, &mut rollout, outbox).await.map(drop)
    }

    /// A tick's decisions as kept (each with what the tick did, and whether its outcome changed), the
    /// audit events of those whose outcome changed, and the outcomes to remember once they are written.
    #[allow(clippy::type_complexity)]
    fn decisions_of(
        &self,
        record: &RolloutRecord,
        decisions: &[CheckDecision],
        effects: &[Effect],
        memory: &RunnerMemory,
    ) -> (Vec<NewDecision>, Vec<AuditNote>, Vec<((String, String), Outcome)>) {
        // What the tick did, beside each decision: `promoted`, `paused`, `rolled_back`, … or `none`.
        let action: Vec<&str> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Notify(ev) => Some(ev.kind.as_str()),
                _ => None,
            })
            .collect();
        let action = if action.is_empty() { "none".to_string() } else { action.join(",") };
        let last = memory.outcomes.lock();
        let mut kept = Vec::new();
        let mut notes = Vec::new();
        let mut outcomes = Vec::new();
        for d in decisions {
            let key = (record.id.clone(), d.key());
            let changed = last.get(&key) != Some(&d.outcome);
            if changed {
                notes.push(("rollout.decision".to_string(), serde_json::to_value(d).expect("json"), None));
            }
            kept.push(NewDecision { decided: Decided { decision: d.clone(), action: action.clone() }, changed });
            outcomes.push((key, d.outcome));
        }
        (kept, notes, outcomes)
    }

    /// The baselines of the current phase's own gates not captured yet, each measured over its window
    /// before the phase started: (key, value or why not).
    async fn phase_baselines(
        &self,
        plan: &sluice_plan::Plan,
        rollout: &sluice_engine::Rollout,
        cx: &MeasureContext<'_>,
    ) -> Vec<(String, Result<f64, String>)> {
        let mut out = Vec::new();
        for (key, check) in rollout.baselines_due(plan) {
            let at_phase = MeasureContext { started_at: rollout.phase_started, ..*cx };
            let got = self.plugins.baseline(check, &at_phase).await.map_err(|e| {
                format!("the baseline of `{}` cannot be measured before its phase: {e}", check.name.value)
            });
            if let Ok(v) = &got {
                tracing::info!(check = %key, value = v, "a phase's baseline captured");
            }
            out.push((key, got));
        }
        out
    }

    /// Drops, every hour, the decisions older than `keep_for` whose outcome did not change.
    pub(crate) async fn prune_decisions(self: Arc<Self>, keep_for: Duration, term: i64) {
        while self.term() == term {
            let before = self.clock.now().saturating_sub(keep_for.as_millis() as u64);
            match self.store.prune_decisions(before as i64).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(dropped = n, "old decisions whose outcome did not change were dropped"),
                Err(e) => tracing::warn!(error = %e, "pruning old decisions"),
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

/// Where a rollout stands, as far as what a tick measures goes: a transition (any event) or a change of
/// status or phase makes an earlier measurement stale.
#[derive(Debug, Clone, PartialEq)]
struct Epoch {
    events: usize,
    status: &'static str,
    phase: usize,
}

impl Epoch {
    fn of(rollout: &sluice_engine::Rollout) -> Epoch {
        Epoch { events: rollout.history.len(), status: rollout.status.name(), phase: rollout.phase }
    }
}

/// A tick's measurements and confirm answers, as the engine reads them.
pub(crate) struct Answers<'a> {
    pub(crate) measured: &'a HashMap<(CheckKind, String), Measurement>,
    pub(crate) confirmed: &'a HashMap<String, Result<(), String>>,
}

impl sluice_engine::MetricSource for Answers<'_> {
    fn measure(&mut self, c: &CheckRef<'_>, _now: u64) -> Measurement {
        self.measured.get(&(c.kind, c.name.to_string())).cloned().unwrap_or(Measurement::Error("not measured".into()))
    }

    fn confirmed(&mut self, name: &str, _now: u64) -> Result<(), String> {
        self.confirmed.get(name).cloned().unwrap_or_else(|| Err("not asked at this tick".into()))
    }
}

impl Controller {
    /// Asks confirm gates, all at once: each a webhook call (signed, keyed, retried as a webhook action).
    pub(crate) async fn ask_confirms(
        &self,
        id: &str,
        env: &str,
        plan: &sluice_plan::Plan,
        rollout: &sluice_engine::Rollout,
        confirms: &[&sluice_plan::model::Confirm],
    ) -> HashMap<String, Result<(), String>> {
        if confirms.is_empty() {
            return HashMap::new();
        }
        let flag = self.live_flag(env, &rollout.flag);
        let values = crate::action_values(id, env, plan, rollout, flag.as_ref());
        let checks = serde_json::Value::Array(Vec::new());
        let asked = futures_util::future::join_all(confirms.iter().map(|c| {
            let (action, values, checks) = (c.action(), &values, &checks);
            // A question, asked afresh each tick: a receiver that replays a key's first answer must not
            // keep saying its first "no".
            let key = format!("{id}:confirm:{}:{}:{}", c.name.value, rollout.phase, self.clock.now());
            async move {
                let cx = sluice_sources::ActionContext { rollout_id: id, plan, values, key: &key, checks };
                let outcome = self.plugins.run(&action, &cx).await;
                (c.name.value.clone(), if outcome.ok() { Ok(()) } else { Err(outcome.detail) })
            }
        }))
        .await;
        asked.into_iter().collect()
    }
}
