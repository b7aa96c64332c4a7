//! Where rollouts tick. Live, each rollout has its own task that sleeps until its next tick is due (its
//! plan's `analysis.interval` after the last), so rollouts never wait for each other and nothing polls
//! the store on a fixed beat; a tick's measurements run without the rollout's lock, and a long phase
//! hook never stops its rollout's triggers from ticking. Tests drive the same ticks with [`Controller::run_due`]
//! under a virtual clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_engine::{CheckDecision, CheckKind, CheckRef, Effect, Measurement, Outcome};
use sluice_sources::MeasureContext;
use sluice_store::RolloutRecord;

use crate::transition::change_of;
use crate::{plan_of, template_values, Controller, ControllerError};

/// How often the live runner looks for rollouts it has no task for, in case a wake-up was missed (a
/// rollout started by another process sharing the database).
const RESCAN: Duration = Duration::from_secs(5);

/// Per-rollout memory of the runner: when it last ticked, each check's last outcome (a decision goes to
/// the audit log only when its outcome changes), and which rollouts are ticking now. Lost on a restart,
/// which only means the next tick comes at once and its decisions are audited again.
#[derive(Default)]
pub struct RunnerMemory {
    last_tick: std::sync::Mutex<HashMap<String, u64>>,
    outcomes: std::sync::Mutex<HashMap<(String, String), Outcome>>,
    ticking: std::sync::Mutex<HashSet<String>>,
}

/// Marks a rollout as ticking until dropped, so that the runner never starts a second tick of it while a
/// slow one (a long command) is still going.
pub(crate) struct Ticking<'m> {
    memory: &'m RunnerMemory,
    id: String,
}

impl<'m> Ticking<'m> {
    fn claim(memory: &'m RunnerMemory, id: &str) -> Option<Self> {
        memory.ticking.lock().expect("ticking").insert(id.to_string()).then(|| Ticking { memory, id: id.to_string() })
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.memory.ticking.lock().expect("ticking").remove(&self.id);
    }
}

impl Controller {
    /// Runs the controller for the process's life: finishes what a previous process left undone (each
    /// rollout in its own task, so one long hook holds up no other recovery), gives every active rollout a
    /// task that ticks it on its own timer, and delivers notifications.
    pub async fn run(self: Arc<Self>) {
        match self.store.rollouts(false).await {
            Ok(all) => {
                let mut unfinished = self.unfinished.lock().expect("unfinished");
                unfinished.extend(all.into_iter().filter(|r| !r.outbox.is_empty()).map(|r| r.id));
            }
            Err(e) => tracing::error!(error = %e, "reading rollouts to recover"),
        }
        tokio::spawn(self.clone().deliver_notifications());
        let memory = Arc::new(RunnerMemory::default());
        let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            tasks.retain(|_, t| !t.is_finished());
            match self.runnable().await {
                Ok(records) => {
                    for record in records {
                        if let std::collections::hash_map::Entry::Vacant(slot) = tasks.entry(record.id) {
                            let task = tokio::spawn(self.clone().drive(slot.key().clone(), memory.clone()));
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
    async fn drive(self: Arc<Self>, id: String, memory: Arc<RunnerMemory>) {
        loop {
            let record = match self.store.rollout(&id).await {
                Ok(Some(record)) => record,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(rollout = %id, error = %e, "reading the rollout; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let undone = !record.outbox.is_empty() || self.unfinished.lock().expect("unfinished").contains(&id);
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
            let last = memory.last_tick.lock().expect("last tick").get(&id).copied();
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
        let unfinished: Vec<String> = self.unfinished.lock().expect("unfinished").iter().cloned().collect();
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
            let mut last_tick = memory.last_tick.lock().expect("last tick");
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
        let flag = self.live_flag(&record.flag);
        let values = template_values(&plan, &rollout, flag.as_ref());
        let cx = MeasureContext {
            rollout_id: &record.id,
            plan: &plan,
            started_at: rollout.history.first().map_or(0, |e| e.at),
            now,
            values: &values,
        };
        let mut measured: HashMap<(CheckKind, String), Measurement> = HashMap::new();
        for (kind, check) in rollout.checks_due(&plan) {
            if hook_running && kind == CheckKind::Gate {
                continue;
            }
            measured.insert((kind, check.name.value.clone()), self.plugins.measure(check, &cx).await);
        }
        let guard = self.lock(&record.id).await;
        // Re-read: a person may have acted meanwhile, or the hook finished.
        let Some(record) = self.store.rollout(&record.id).await? else { return Ok(()) };
        let pending = !record.outbox.is_empty();
        // A full tick when no transition is pending; a triggers-only one while the hook measured for runs.
        let as_measured = if hook_running { pending && self.in_hand(&record) } else { !pending };
        if !record.active || !as_measured {
            return Ok(());
        }
        let mut rollout = record.state.clone();
        let mut source = |c: &CheckRef<'_>, _: u64| {
            measured.get(&(c.kind, c.name.to_string())).cloned().unwrap_or(Measurement::Error("not measured".into()))
        };
        let (decisions, effects) = if pending {
            rollout.tick_triggers(&plan, now, &mut source)
        } else {
            rollout.tick(&plan, now, &mut source)
        };
        self.record_tick(&record, &plan, &rollout, now, &decisions, &effects, memory).await?;
        let actor = Self::actor(&record);
        if pending && effects.is_empty() {
            // The hook's effects stay as they are; only the triggers' runs and counts are kept.
            self.save(&record, &plan, &rollout, &actor, &record.outbox, &[], Vec::new()).await?;
            return Ok(());
        }
        // Always written: the state carries the `for` runs and the source-error count between ticks.
        let outbox = self.commit_transition(&record, &plan, &rollout, effects, &actor).await?;
        drop(ticking);
        self.carry_out(guard, &record, &plan, &mut rollout, outbox).await.map(drop)
    }

    /// Keeps a tick's decisions, each with what the tick did, and audits those whose outcome changed.
    #[allow(clippy::too_many_arguments)]
    async fn record_tick(
        &self,
        record: &RolloutRecord,
        plan: &sluice_plan::Plan,
        rollout: &sluice_engine::Rollout,
        now: u64,
        decisions: &[CheckDecision],
        effects: &[Effect],
        memory: &RunnerMemory,
    ) -> Result<(), ControllerError> {
        // What the tick did, beside each decision: `promoted`, `paused`, `rolled_back`, … or `none`.
        let action: Vec<&str> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Notify(ev) => Some(ev.kind.as_str()),
                _ => None,
            })
            .collect();
        let action = if action.is_empty() { "none".to_string() } else { action.join(",") };
        let decision_json: Vec<Value> = decisions
            .iter()
            .map(|d| {
                let mut v = serde_json::to_value(d).expect("json");
                v["action"] = json!(action);
                v
            })
            .collect();
        self.store.record_decisions(&record.id, now as i64, &decision_json).await?;
        let mut audited = Vec::new();
        for d in decisions {
            let key = (record.id.clone(), format!("{:?}:{}", d.kind, d.check));
            let changed = memory.outcomes.lock().expect("outcomes").insert(key, d.outcome) != Some(d.outcome);
            if changed {
                let detail = serde_json::to_value(d).expect("json");
                let event = self
                    .store
                    .record_event(
                        &Self::actor(record),
                        "rollout.decision",
                        &format!("rollout:{}", record.id),
                        detail,
                        None,
                    )
                    .await?;
                audited.push(event);
            }
        }
        self.catalog.tell(audited, change_of(&record.id, plan, rollout, decision_json));
        Ok(())
    }
}
