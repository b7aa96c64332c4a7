//! Live rollouts: the runner that ticks every active rollout on the wall clock, and the API that starts
//! them and takes people's decisions. Every transition is written — engine state, the effects still to
//! carry out (the outbox) and its audit events, in one transaction — before any effect runs; the outbox is
//! emptied as the effects complete. A controller restarted at any instant finds in the store what may have
//! run: flag changes and idempotent actions are carried out again with the same key, and a rollout whose
//! non-idempotent action may or may not have run is paused for a person.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sluice_engine::{Effect, Measurement, Outcome, Rollout};
use sluice_flags::Flag;
use sluice_plan::model::Action;
use sluice_plan::Plan;
use sluice_store::{AuditNote, Change, Principal, Role, RolloutRecord, RolloutSave};

use crate::error::{parse_json, Params};
use crate::{ApiError, AppState};

/// An effect written to the outbox: what the runner still has to do, with its idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OutboxItem {
    key: String,
    effect: OutboxEffect,
    /// A non-idempotent action was about to run.
    #[serde(default)]
    started: bool,
    /// It finished.
    #[serde(default)]
    done: bool,
    /// It started and did not finish before a restart: a person must settle it.
    #[serde(default)]
    uncertain: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum OutboxEffect {
    SetRamp {
        percent: u8,
        base: Option<String>,
        ramped: Option<String>,
        segments: Vec<String>,
    },
    RestoreFlag,
    FlagsOff {
        flags: Vec<String>,
    },
    ClearOverrides,
    /// An action of the plan, named by its path (`rollback.actions[0]`).
    Run {
        purpose: String,
        idempotent: bool,
    },
}

impl OutboxEffect {
    /// Flag changes set a state rather than add to it, so doing them twice is the same as once.
    fn idempotent(&self) -> bool {
        match self {
            OutboxEffect::Run { idempotent, .. } => *idempotent,
            _ => true,
        }
    }
}

/// Per-rollout memory of the runner: when it last ticked, each check's last outcome (a decision goes to
/// the audit log only when its outcome changes), and which rollouts are ticking now. Lost on a restart,
/// which only means the next tick comes at once and its decisions are audited again.
#[derive(Default)]
pub struct RunnerMemory {
    last_tick: std::sync::Mutex<HashMap<String, u64>>,
    outcomes: std::sync::Mutex<HashMap<(String, String), Outcome>>,
    ticking: std::sync::Mutex<HashSet<String>>,
}

/// The lock of one rollout, held while its state changes.
pub(crate) type RolloutGuard = tokio::sync::OwnedMutexGuard<()>;

/// A rollout's outbox being carried out in this process; the mark goes when this is dropped.
struct Carrying<'s> {
    state: &'s AppState,
    id: String,
    keys: Vec<String>,
}

impl Drop for Carrying<'_> {
    fn drop(&mut self) {
        let mut carrying = self.state.carrying.lock().expect("carrying");
        if let Some(keys) = carrying.get_mut(&self.id) {
            for k in &self.keys {
                if let Some(at) = keys.iter().position(|c| c == k) {
                    keys.swap_remove(at);
                }
            }
            if keys.is_empty() {
                carrying.remove(&self.id);
            }
        }
    }
}

/// Marks a rollout as ticking until dropped, so that the runner never starts a second tick of it while a
/// slow one (a long command) is still going.
struct Ticking<'m> {
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

fn plan_of(record: &RolloutRecord) -> Result<Plan, ApiError> {
    sluice_plan::parse(&record.plan_name, &record.plan_text).map_err(|p| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("stored plan no longer parses: {p}"))
    })
}

fn state_of(record: &RolloutRecord) -> Result<Rollout, ApiError> {
    serde_json::from_value(record.state.clone())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("stored rollout state: {e}")))
}

/// The action at a path such as `rollback.actions[0]` or `phases[1].hooks.before[0]`.
fn action_at<'p>(plan: &'p Plan, purpose: &str) -> Option<&'p Action> {
    let index = |s: &str| s.rsplit_once('[').and_then(|(_, i)| i.trim_end_matches(']').parse::<usize>().ok());
    if let Some(rest) = purpose.strip_prefix("rollback.actions") {
        return plan.rollback.actions.get(index(rest)?).map(|a| &a.value);
    }
    let (phase, hook) = purpose.strip_prefix("phases")?.split_once(".hooks.")?;
    let phase = &plan.phases.get(index(phase)?)?.value;
    let list = if hook.starts_with("before") { &phase.hooks.before } else { &phase.hooks.after };
    list.get(index(hook)?).map(|a| &a.value)
}

/// The template values of a rollout at this moment.
fn template_values(plan: &Plan, rollout: &Rollout, flag: Option<&Flag>) -> BTreeMap<String, String> {
    let mut v: BTreeMap<String, String> = plan.vars.iter().map(|(k, s)| (k.clone(), s.0.clone())).collect();
    let phase = plan.phases.get(rollout.phase).map(|p| &p.value);
    let ramp = phase.and_then(|p| p.ramp.as_ref()).or(plan.ramp.as_ref());
    let (base, ramped) = match (ramp, flag) {
        (Some(r), _) => (r.value.base.value.clone(), r.value.ramped.value.clone()),
        (None, Some(f)) => (f.ramp.base.clone(), f.ramp.ramped.clone()),
        (None, None) => ("off".into(), "on".into()),
    };
    v.insert("flag".into(), plan.flag.value.clone());
    v.insert("base".into(), base);
    v.insert("ramped".into(), ramped);
    v.insert("phase".into(), (rollout.phase + 1).to_string());
    v.insert("percent".into(), rollout.percent(plan).to_string());
    v.insert("interval".into(), plan.analysis.interval.value.to_string());
    v
}

impl AppState {
    /// The controller's actor name for what a rollout does by itself.
    fn controller(record: &RolloutRecord) -> String {
        format!("rollout:{}", record.plan_name)
    }

    /// Waits for, then holds, the lock of one rollout (or, with a `start:` key, of starting one on a flag).
    async fn lock_rollout(&self, id: &str) -> RolloutGuard {
        let lock = {
            let mut locks = self.rollout_locks.lock().expect("rollout locks");
            if locks.len() > 1024 {
                // A lock only the map holds is neither held nor awaited: forget it (ended rollouts, starts).
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry(id.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Stops here if the fault hook says so (crash-safety tests): the caller returns at once, as a killed
    /// process would.
    fn fault(&self, point: &str) -> Result<(), ApiError> {
        match &self.faults {
            Some(hook) if hook(point) => {
                Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "crashed", format!("injected crash at {point}")))
            }
            _ => Ok(()),
        }
    }

    fn outbox_of(effects: Vec<Effect>, id: &str, seq: usize) -> (Vec<OutboxItem>, Vec<AuditNote>) {
        let mut events = Vec::new();
        let mut outbox = Vec::new();
        for (i, e) in effects.into_iter().enumerate() {
            let key = format!("{id}:{seq}:{i}");
            let effect = match e {
                Effect::Notify(ev) => {
                    events.push((
                        format!("rollout.{}", ev.kind),
                        serde_json::to_value(&ev).expect("json"),
                        Some(ev.reason.clone()),
                    ));
                    continue;
                }
                Effect::SetRamp { percent, base, ramped, segments } => {
                    OutboxEffect::SetRamp { percent, base, ramped, segments }
                }
                Effect::RestoreFlag => OutboxEffect::RestoreFlag,
                Effect::FlagsOff(flags) => OutboxEffect::FlagsOff { flags },
                Effect::ClearOverrides => OutboxEffect::ClearOverrides,
                Effect::Run { purpose, action } => {
                    OutboxEffect::Run { purpose, idempotent: action.idempotent || action.webhook.is_some() }
                }
            };
            outbox.push(OutboxItem { key, effect, started: false, done: false, uncertain: false });
        }
        (outbox, events)
    }

    /// Writes a transition (state, outbox, audit) and then carries out its effects. The caller holds the
    /// rollout's lock (`guard`) and gets it back.
    pub(crate) async fn transition(
        &self,
        guard: RolloutGuard,
        record: &RolloutRecord,
        plan: &Plan,
        rollout: &mut Rollout,
        effects: Vec<Effect>,
        actor: &str,
    ) -> Result<RolloutGuard, ApiError> {
        let outbox = self.commit_transition(record, rollout, effects, actor).await?;
        self.carry_out(guard, record, plan, rollout, outbox).await
    }

    /// Writes a transition (state, outbox, audit) in one commit and returns the outbox to carry out.
    async fn commit_transition(
        &self,
        record: &RolloutRecord,
        rollout: &Rollout,
        effects: Vec<Effect>,
        actor: &str,
    ) -> Result<Vec<OutboxItem>, ApiError> {
        let (outbox, events) = Self::outbox_of(effects, &record.id, rollout.history.len());
        self.fault("before-save")?;
        self.save(record, rollout, actor, &outbox, &events).await?;
        self.fault("after-save")?;
        Ok(outbox)
    }

    /// Marks the rollout's outbox as being carried out in this process until the mark is dropped.
    fn mark_carrying(&self, id: &str, outbox: &[OutboxItem]) -> Carrying<'_> {
        let keys: Vec<String> = outbox.iter().map(|i| i.key.clone()).collect();
        self.carrying.lock().expect("carrying").entry(id.to_string()).or_default().extend(keys.iter().cloned());
        Carrying { state: self, id: id.to_string(), keys }
    }

    /// Whether the stored outbox of `record` is in hand: this process is carrying it out (a phase hook
    /// runs with the lock let go). A carrier of an outbox that a rollback has since replaced does not count.
    fn in_hand(&self, record: &RolloutRecord) -> bool {
        let carrying = self.carrying.lock().expect("carrying");
        let Some(keys) = carrying.get(&record.id) else { return false };
        record
            .outbox
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["key"].as_str().is_some_and(|k| keys.iter().any(|c| c == k)))
    }

    async fn save(
        &self,
        record: &RolloutRecord,
        rollout: &Rollout,
        actor: &str,
        outbox: &[OutboxItem],
        events: &[AuditNote],
    ) -> Result<(), ApiError> {
        let state = serde_json::to_value(rollout).expect("json");
        let outbox = serde_json::to_value(outbox).expect("json");
        self.store
            .save_rollout(&RolloutSave {
                actor,
                id: &record.id,
                state: &state,
                status: rollout.status.name(),
                active: !rollout.status.is_terminal(),
                outbox: &outbox,
                events,
            })
            .await?;
        Ok(())
    }

    /// Carries out outbox items in order, then empties the outbox. A non-idempotent action is marked
    /// `started` before it runs and `done` after, so that only a crash while it ran leaves it uncertain.
    /// A hook that fails pauses the rollout.
    ///
    /// A phase hook may run for hours (a migration): the rollout's lock is let go while it runs, so that
    /// the runner keeps evaluating the rollout's triggers and a person can still roll back or abort. Either
    /// supersedes this transition, which then stops after the hook.
    async fn carry_out(
        &self,
        guard: RolloutGuard,
        record: &RolloutRecord,
        plan: &Plan,
        rollout: &mut Rollout,
        outbox: Vec<OutboxItem>,
    ) -> Result<RolloutGuard, ApiError> {
        // Marked before, cleared after: if this stops on an error (or is cancelled), the runner retries the
        // stored outbox, even when the rollout has ended.
        self.unfinished.lock().expect("unfinished").insert(record.id.clone());
        let carried = Box::pin(self.carry_out_in_order(guard, record, plan, rollout, outbox)).await;
        if carried.is_ok() {
            self.unfinished.lock().expect("unfinished").remove(&record.id);
        }
        carried
    }

    async fn carry_out_in_order(
        &self,
        mut guard: RolloutGuard,
        record: &RolloutRecord,
        plan: &Plan,
        rollout: &mut Rollout,
        mut outbox: Vec<OutboxItem>,
    ) -> Result<RolloutGuard, ApiError> {
        if outbox.is_empty() {
            return Ok(guard);
        }
        let _carrying = self.mark_carrying(&record.id, &outbox);
        let actor = Self::controller(record);
        let mut failed_hook = None;
        for i in 0..outbox.len() {
            if outbox[i].done {
                continue;
            }
            if failed_hook.is_some() {
                // A phase hook failed: nothing after it runs (the percentage is not raised).
                break;
            }
            self.fault("before-effect")?;
            let reason = Some(format!("rollout {} ({})", record.plan_name, record.id));
            match outbox[i].effect.clone() {
                OutboxEffect::SetRamp { percent, base, ramped, segments } => {
                    self.edit_flag(&record.id, &actor, reason, &record.flag, move |f| {
                        f.ramp.percent = percent;
                        if let Some(b) = base {
                            f.ramp.base = b;
                        }
                        if let Some(r) = ramped {
                            f.ramp.ramped = r;
                        }
                        f.ramp.segments = segments;
                    })
                    .await?;
                }
                OutboxEffect::RestoreFlag => {
                    let original: Flag = serde_json::from_value(record.original_flag.clone()).map_err(|e| {
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            format!("stored original flag: {e}"),
                        )
                    })?;
                    if self.live.load().flags().iter().any(|f| f.key == original.key) {
                        self.write(&actor, reason, |_| Ok(vec![Change::PutFlag(original)])).await?;
                    } else {
                        // Deleted since: restoring it would bring back a flag someone removed.
                        let detail = json!({"flag": original.key, "skipped": "no such flag"});
                        self.store
                            .record_event(
                                &actor,
                                "rollout.flag_missing",
                                &format!("rollout:{}", record.id),
                                detail,
                                None,
                            )
                            .await?;
                    }
                }
                OutboxEffect::FlagsOff { flags } => {
                    for key in flags {
                        self.edit_flag(&record.id, &actor, reason.clone(), &key, |f| f.enabled = false).await?;
                    }
                }
                OutboxEffect::ClearOverrides => {
                    self.edit_flag(&record.id, &actor, reason, &record.flag, |f| f.overrides.clear()).await?
                }
                OutboxEffect::Run { purpose, idempotent } => {
                    let Some(action) = action_at(plan, &purpose) else { continue };
                    if !idempotent {
                        outbox[i].started = true;
                        self.save(record, rollout, &actor, &outbox, &[]).await?;
                        self.fault("after-started")?;
                    }
                    let flag = self.live.load().flags().iter().find(|f| f.key == record.flag).cloned();
                    let values = template_values(plan, rollout, flag.as_ref());
                    let key = outbox[i].key.clone();
                    let hook = purpose.starts_with("phases");
                    let outcome = if hook {
                        drop(guard);
                        let outcome = self.plugins.run(action, &values, &key).await;
                        guard = self.lock_rollout(&record.id).await;
                        outcome
                    } else {
                        self.plugins.run(action, &values, &key).await
                    };
                    self.fault("after-action")?;
                    let detail =
                        json!({"purpose": purpose, "ok": outcome.ok, "detail": outcome.detail, "idempotency_key": key});
                    if hook {
                        // While the hook ran, the runner may have recorded trigger ticks (kept), or a rollback
                        // or an abort may have replaced this transition's effects (then nothing more here).
                        let fresh = self.store.rollout(&record.id).await?.ok_or_else(|| {
                            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the rollout vanished")
                        })?;
                        let stored: Vec<OutboxItem> = serde_json::from_value(fresh.outbox.clone()).unwrap_or_default();
                        if stored.get(i).map(|s| &s.key) != Some(&key) {
                            let mut detail = detail;
                            detail["superseded"] = json!(true);
                            self.store
                                .record_event(&actor, "rollout.action", &format!("rollout:{}", record.id), detail, None)
                                .await?;
                            *rollout = state_of(&fresh)?;
                            return Ok(guard);
                        }
                        *rollout = state_of(&fresh)?;
                    }
                    if !idempotent {
                        outbox[i].done = true;
                        self.save(record, rollout, &actor, &outbox, &[]).await?;
                    }
                    self.store
                        .record_event(&actor, "rollout.action", &format!("rollout:{}", record.id), detail, None)
                        .await?;
                    if !outcome.ok && hook && failed_hook.is_none() {
                        failed_hook = Some((purpose.clone(), outcome.detail.clone()));
                    }
                }
            }
            self.fault("after-effect")?;
        }
        self.save(record, rollout, &actor, &[], &[]).await?;
        self.fault("after-clear")?;
        if let Some((purpose, detail)) = failed_hook {
            let effects = rollout.hook_failed(plan, self.clock.now(), &purpose, &detail);
            guard = Box::pin(self.transition(guard, record, plan, rollout, effects, &actor)).await?;
        }
        Ok(guard)
    }

    /// Changes a flag for a rollout. A flag deleted since the plan was checked is skipped and audited
    /// (`rollout.flag_missing`): the effects after it, a rollback's actions above all, must still run.
    async fn edit_flag(
        &self,
        rollout_id: &str,
        actor: &str,
        reason: Option<String>,
        key: &str,
        edit: impl FnOnce(&mut Flag),
    ) -> Result<(), ApiError> {
        if !self.live.load().flags().iter().any(|f| f.key == key) {
            let detail = json!({"flag": key, "skipped": "no such flag"});
            self.store
                .record_event(actor, "rollout.flag_missing", &format!("rollout:{rollout_id}"), detail, None)
                .await?;
            return Ok(());
        }
        self.write(actor, reason, |snapshot| {
            let mut flag = snapshot
                .flags()
                .iter()
                .find(|f| f.key == key)
                .cloned()
                .ok_or_else(|| ApiError::not_found(format!("no flag `{key}`")))?;
            edit(&mut flag);
            Ok(vec![Change::PutFlag(flag)])
        })
        .await
        .map(|_| ())
    }

    /// After a restart: finish what every rollout's outbox says — finished ones too, since a rollback's
    /// actions are written with the transition that ends the rollout. Flag changes and idempotent actions
    /// are carried out again with the same key; a non-idempotent action that had not started runs now. One
    /// that had started and not finished may or may not have run: the rollout is paused (when live), the
    /// audit log names the action, and the rollout waits until a person settles it (`ran` or `retry`).
    pub async fn recover_rollouts(&self) -> Result<(), ApiError> {
        for record in self.store.rollouts(false).await? {
            let guard = self.lock_rollout(&record.id).await;
            let Some(record) = self.store.rollout(&record.id).await? else { continue };
            // One rollout that cannot be finished now (retried by the runner) does not stop the others.
            match self.finish_outbox(guard, &record).await {
                Err(e) if e.error == "crashed" => return Err(e),
                Err(e) => eprintln!("sluice: recovering rollout {}: {}", record.id, e.message),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Finishes an outbox that nobody is carrying out: after a restart, or when the transition that wrote
    /// it stopped on an error or was cancelled. The caller holds the rollout's lock and has just read
    /// `record`; it gets the lock back, and whether there was such an outbox.
    async fn finish_outbox(
        &self,
        guard: RolloutGuard,
        record: &RolloutRecord,
    ) -> Result<(RolloutGuard, bool), ApiError> {
        let mut outbox: Vec<OutboxItem> = serde_json::from_value(record.outbox.clone()).unwrap_or_default();
        // Being carried out (a phase hook runs with the lock let go), or waiting for a person: not stranded.
        if outbox.is_empty() || outbox.iter().any(|i| i.uncertain) || self.in_hand(record) {
            return Ok((guard, false));
        }
        let plan = plan_of(record)?;
        let mut rollout = state_of(record)?;
        let Some(i) = outbox.iter().position(|i| i.started && !i.done && !i.effect.idempotent()) else {
            let guard = self.carry_out(guard, record, &plan, &mut rollout, outbox).await?;
            return Ok((guard, true));
        };
        outbox[i].uncertain = true;
        let purpose = match &outbox[i].effect {
            OutboxEffect::Run { purpose, .. } => purpose.clone(),
            other => format!("{other:?}"),
        };
        let why = format!(
            "{purpose} (key {}) was interrupted while running; it is not idempotent, so it was not run again: check whether it ran, then `settle` it as `ran` or `retry`",
            outbox[i].key
        );
        let mut events = vec![(
            "rollout.action_unknown".to_string(),
            json!({"purpose": purpose, "idempotency_key": outbox[i].key}),
            Some(why.clone()),
        )];
        if let Ok(effects) = rollout.pause(&plan, self.clock.now(), &why) {
            events.extend(Self::outbox_of(effects, &record.id, rollout.history.len()).1);
        }
        self.save(record, &rollout, "sluice", &outbox, &events).await?;
        Ok((guard, true))
    }

    /// A person says what happened to an uncertain action (`ran`: do not run it again; `retry`: run it), and
    /// the rest of the outbox is carried out.
    pub async fn settle_rollout(&self, id: &str, ran: bool, who: &Principal) -> Result<(), ApiError> {
        let guard = self.lock_rollout(id).await;
        let record = self.store.rollout(id).await?.ok_or_else(|| ApiError::not_found(format!("no rollout `{id}`")))?;
        let mut outbox: Vec<OutboxItem> = serde_json::from_value(record.outbox.clone()).unwrap_or_default();
        let Some(i) = outbox.iter().position(|i| i.uncertain) else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "this rollout has no action waiting to be settled",
            ));
        };
        outbox[i].uncertain = false;
        if ran {
            outbox[i].done = true;
        } else {
            outbox[i].started = false;
        }
        let detail = json!({"idempotency_key": outbox[i].key, "settled": if ran { "ran" } else { "retry" }});
        self.store.record_event(&who.name, "rollout.settled", &format!("rollout:{id}"), detail, None).await?;
        let plan = plan_of(&record)?;
        let mut rollout = state_of(&record)?;
        self.carry_out(guard, &record, &plan, &mut rollout, outbox).await.map(drop)
    }

    /// One pass of the runner: ticks every active rollout whose interval has elapsed. One rollout's
    /// failure is reported and does not hold up the others.
    /// The rollouts tick concurrently and the pass ends when all have; one that is still ticking from
    /// an earlier pass is left alone. An injected crash stops the whole pass at once, as a kill would.
    pub async fn run_due_rollouts(&self, memory: &RunnerMemory) -> Result<(), ApiError> {
        let ticks = self.runnable_rollouts().await?.into_iter().filter_map(|record| {
            let ticking = Ticking::claim(memory, &record.id)?;
            Some(self.tick_logged(record, memory, ticking))
        });
        futures_util::future::try_join_all(ticks).await.map(|_| ())
    }

    /// The active rollouts, and those whose outbox may be unfinished.
    async fn runnable_rollouts(&self) -> Result<Vec<RolloutRecord>, ApiError> {
        let mut records = self.store.rollouts(true).await?;
        let unfinished: Vec<String> = self.unfinished.lock().expect("unfinished").iter().cloned().collect();
        for id in unfinished {
            if !records.iter().any(|r| r.id == id) {
                match self.store.rollout(&id).await? {
                    Some(r) => records.push(r),
                    None => {
                        self.unfinished.lock().expect("unfinished").remove(&id);
                    }
                }
            }
        }
        Ok(records)
    }

    /// Ticks one rollout; its failure is reported and does not hold up the others. Only an injected crash
    /// comes back as an error.
    async fn tick_logged(
        &self,
        record: RolloutRecord,
        memory: &RunnerMemory,
        ticking: Ticking<'_>,
    ) -> Result<(), ApiError> {
        let id = record.id.clone();
        match self.tick_rollout(record, memory, ticking).await {
            Err(e) if e.error == "crashed" => Err(e),
            Err(e) => {
                eprintln!("sluice: rollout {id}: {}", e.message);
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// One tick: measure, decide and write the transition while `ticking` is held, then let it go and
    /// carry out the effects, so that the next tick of this rollout (its triggers) can run while a long
    /// phase hook does.
    async fn tick_rollout(
        &self,
        record: RolloutRecord,
        memory: &RunnerMemory,
        ticking: Ticking<'_>,
    ) -> Result<(), ApiError> {
        let hook_running = self.in_hand(&record);
        let now = self.clock.now();
        let plan = plan_of(&record).inspect_err(|_| {
            // Reported once, not every pass: the plan will not parse better next time.
            self.unfinished.lock().expect("unfinished").remove(&record.id);
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
        if record.outbox.as_array().is_some_and(|o| !o.is_empty()) && !hook_running {
            drop(ticking);
            let guard = self.lock_rollout(&record.id).await;
            if let Some(record) = self.store.rollout(&record.id).await? {
                self.finish_outbox(guard, &record).await?;
            }
            self.unfinished.lock().expect("unfinished").remove(&record.id);
            return Ok(());
        }
        if !record.active {
            self.unfinished.lock().expect("unfinished").remove(&record.id);
            return Ok(());
        }
        // Measure first, without the lock: commands may take a while.
        let rollout = state_of(&record)?;
        let flag = self.live.load().flags().iter().find(|f| f.key == record.flag).cloned();
        let values = template_values(&plan, &rollout, flag.as_ref());
        let default = plan.analysis.source.as_ref().map(|s| s.value);
        let mut measured: HashMap<(sluice_engine::CheckKind, String), Measurement> = HashMap::new();
        for (kind, check) in rollout.checks_due(&plan) {
            if hook_running && kind == sluice_engine::CheckKind::Gate {
                continue;
            }
            measured.insert((kind, check.name.value.clone()), self.plugins.measure(check, default, &values, now).await);
        }
        let guard = self.lock_rollout(&record.id).await;
        // Re-read: a person may have acted meanwhile, or the hook finished.
        let Some(record) = self.store.rollout(&record.id).await? else { return Ok(()) };
        let pending = record.outbox.as_array().is_some_and(|o| !o.is_empty());
        // A full tick when no transition is pending; a triggers-only one while the hook measured for runs.
        let as_measured = if hook_running { pending && self.in_hand(&record) } else { !pending };
        if !record.active || !as_measured {
            return Ok(());
        }
        let mut rollout = state_of(&record)?;
        let mut source = |c: &sluice_engine::CheckRef<'_>, _: u64| {
            measured.get(&(c.kind, c.name.to_string())).cloned().unwrap_or(Measurement::Error("not measured".into()))
        };
        let (decisions, effects) = if pending {
            rollout.tick_triggers(&plan, now, &mut source)
        } else {
            rollout.tick(&plan, now, &mut source)
        };
        self.record_tick(&record, now, &decisions, &effects, memory).await?;
        let actor = Self::controller(&record);
        if pending && effects.is_empty() {
            // The hook's effects stay as they are; only the triggers' runs and counts are kept.
            let outbox: Vec<OutboxItem> = serde_json::from_value(record.outbox.clone()).unwrap_or_default();
            self.save(&record, &rollout, &actor, &outbox, &[]).await?;
            return Ok(());
        }
        // Always written: the state carries the `for` runs and the source-error count between ticks.
        let outbox = self.commit_transition(&record, &rollout, effects, &actor).await?;
        drop(ticking);
        self.carry_out(guard, &record, &plan, &mut rollout, outbox).await.map(drop)
    }

    /// Keeps a tick's decisions, each with what the tick did, and audits those whose outcome changed.
    async fn record_tick(
        &self,
        record: &RolloutRecord,
        now: u64,
        decisions: &[sluice_engine::CheckDecision],
        effects: &[Effect],
        memory: &RunnerMemory,
    ) -> Result<(), ApiError> {
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
        for d in decisions {
            let key = (record.id.clone(), format!("{:?}:{}", d.kind, d.check));
            let changed = memory.outcomes.lock().expect("outcomes").insert(key, d.outcome) != Some(d.outcome);
            if changed {
                let detail = serde_json::to_value(d).expect("json");
                self.store
                    .record_event(
                        &Self::controller(record),
                        "rollout.decision",
                        &format!("rollout:{}", record.id),
                        detail,
                        None,
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Checks a plan against the live catalog and starts it: the rollout, its started state and its first
    /// effects are written in one commit, then carried out.
    pub async fn start_rollout(&self, who: &Principal, file: &str, text: &str) -> Result<RolloutRecord, ApiError> {
        let snapshot = self.live.load();
        let catalog = sluice_plan::Catalog {
            flags: snapshot
                .flags()
                .iter()
                .map(|f| sluice_plan::CatalogFlag {
                    key: f.key.clone(),
                    variants: f.variants.iter().map(|v| v.name.clone()).collect(),
                })
                .collect(),
            segments: snapshot.segments().iter().map(|s| s.name.clone()).collect(),
        };
        let (plan, notes) = sluice_plan::load(file, text, Some(&catalog)).map_err(|problems| {
            let message = problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
        })?;
        let missing: Vec<String> = notes
            .iter()
            .filter(|n| n.message.contains("not available in this version"))
            .map(|p| p.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_available",
                format!("this plan cannot start yet:\n{}", missing.join("\n")),
            ));
        }
        let original =
            snapshot.flags().iter().find(|f| f.key == plan.flag.value).cloned().expect("checked against the catalog");
        drop(snapshot);
        let now = self.clock.now();
        let starting = self.lock_rollout(&format!("start:{}", plan.flag.value)).await;
        // Readable and unique: the flag and the start time, with a suffix in the unlikely case of a second
        // start of the same flag in the same millisecond (no counter: it would restart with the process).
        let mut id = format!("{}-{now:x}", plan.flag.value);
        let mut n = 1;
        while self.store.rollout(&id).await?.is_some() {
            n += 1;
            id = format!("{}-{now:x}-{n}", plan.flag.value);
        }
        // Held while the first effects run (a phase-0 hook may take a while): a command on the new rollout
        // waits for them rather than racing them.
        // A finished rollout of this flag whose rollback is still being carried out would restore the flag
        // under the new one.
        if let Some(r) = self
            .store
            .rollouts(false)
            .await?
            .into_iter()
            .find(|r| r.flag == plan.flag.value && !r.active && r.outbox.as_array().is_some_and(|o| !o.is_empty()))
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "unfinished",
                format!(
                    "rollout `{}` ({}) of this flag still has effects to carry out: retry in a moment",
                    r.plan_name, r.id
                ),
            ));
        }
        let mine = self.lock_rollout(&id).await;
        let mut rollout = Rollout::new(&plan);
        let effects = rollout.start(&plan, now);
        let (outbox, events) = Self::outbox_of(effects, &id, 0);
        let record = RolloutRecord {
            id,
            flag: plan.flag.value.clone(),
            plan_name: plan.name.value.clone(),
            plan_text: text.to_string(),
            original_flag: serde_json::to_value(&original).expect("json"),
            state: serde_json::to_value(&rollout).expect("json"),
            status: rollout.status.name().into(),
            active: true,
            outbox: serde_json::to_value(&outbox).expect("json"),
            created_by: who.name.clone(),
            created_at: String::new(),
            updated_at: String::new(),
        };
        self.fault("before-save")?;
        self.store.create_rollout(&record, &events).await?;
        drop(starting);
        self.fault("after-save")?;
        self.carry_out(mine, &record, &plan, &mut rollout, outbox).await?;
        Ok(record)
    }

    /// A person's command on a rollout: pause, resume, promote, rollback, abort, approve, signal, settle.
    pub async fn rollout_command(
        &self,
        id: &str,
        command: &str,
        b: CommandBody,
        who: &Principal,
    ) -> Result<Value, ApiError> {
        if command == "settle" {
            let ran = match b.pending.as_deref() {
                Some("ran") => true,
                Some("retry") => false,
                _ => {
                    return Err(ApiError::invalid(
                        "pending",
                        "`ran` (it ran: do not run it again) or `retry` (run it now)",
                    ))
                }
            };
            self.settle_rollout(id, ran, who).await?;
            let record = self.store.rollout(id).await?.ok_or_else(|| ApiError::not_found("the rollout vanished"))?;
            return Ok(summary(&record, &plan_of(&record)?, &state_of(&record)?));
        }
        let reason = b.reason.clone().unwrap_or_else(|| format!("{command} by {}", who.name));
        let guard = self.lock_rollout(id).await;
        let mut record = self.store.rollout(id).await?.ok_or_else(|| ApiError::not_found("the rollout vanished"))?;
        let ends_it =
            matches!(command, "rollback" | "abort") || (command == "signal" && b.severity.as_deref() == Some("hard"));
        // What an earlier transition left undone comes first: a command never drops it. If it cannot be
        // finished (a flag deleted under the rollout, a store error), a rollback or an abort still goes
        // ahead: it replaces what was left.
        let guard = match self.finish_outbox(guard, &record).await {
            Ok((guard, finished)) => {
                if finished {
                    record =
                        self.store.rollout(id).await?.ok_or_else(|| ApiError::not_found("the rollout vanished"))?;
                }
                guard
            }
            Err(e) if ends_it && e.error != "crashed" => {
                eprintln!(
                    "sluice: rollout {id}: what the last transition left undone failed ({}); {command} replaces it",
                    e.message
                );
                let guard = self.lock_rollout(id).await;
                record = self.store.rollout(id).await?.ok_or_else(|| ApiError::not_found("the rollout vanished"))?;
                guard
            }
            Err(e) => return Err(e),
        };
        // A phase hook is running (its transition let the lock go): only what ends the phase may interrupt it.
        let hook_running = record.outbox.as_array().is_some_and(|o| !o.is_empty()) && self.in_hand(&record);
        if hook_running && !ends_it {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "hook_running",
                "a phase hook of this rollout is running: wait for it to finish, or `rollback` / `abort` / signal --hard now",
            ));
        }
        if record.outbox.as_array().is_some_and(|o| o.iter().any(|i| i["uncertain"] == true)) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "unsettled",
                "an action's outcome is unknown: `settle` it (ran or retry) first",
            ));
        }
        let plan = plan_of(&record)?;
        let mut rollout = state_of(&record)?;
        let now = self.clock.now();
        let result = match command {
            "pause" => rollout.pause(&plan, now, &reason),
            "resume" => rollout.resume(&plan, now, &reason),
            "promote" => {
                if b.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                    return Err(ApiError::invalid("reason", "promoting past a hold needs a reason"));
                }
                rollout.promote(&plan, now, &reason)
            }
            "rollback" => rollout.rollback(&plan, now, &format!("rolled back by {}: {reason}", who.name)),
            "abort" => rollout.abort(&plan, now, &reason),
            "approve" => {
                let item = b.item.as_deref().ok_or_else(|| ApiError::invalid("item", "say which approval item"))?;
                let needed = plan
                    .phases
                    .get(rollout.phase)
                    .and_then(|p| p.value.approvals.iter().find(|a| a.value.item == item))
                    .map(|a| a.value.role);
                if needed == Some(sluice_plan::model::ApprovalRole::Admin) && who.role != Role::Admin {
                    let detail = json!({"command": "approve", "item": item, "role": who.role.as_str()});
                    self.store
                        .record_event(
                            &who.name,
                            "rollout.refused",
                            &format!("rollout:{id}"),
                            detail,
                            Some(format!("`{item}` is signed by an admin")),
                        )
                        .await?;
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!("`{item}` is signed by an admin; this token is `{}`", who.role.as_str()),
                    ));
                }
                rollout.approve(&plan, now, item, &who.name)
            }
            "signal" => {
                let name =
                    b.name.as_deref().ok_or_else(|| ApiError::invalid("name", "say which trigger the signal fires"))?;
                if b.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                    return Err(ApiError::invalid("reason", "say why the signal fires: it goes to the audit log"));
                }
                let hard = match b.severity.as_deref() {
                    Some("hard") => true,
                    Some("soft") => false,
                    _ => return Err(ApiError::invalid("severity", "`hard` (roll back now) or `soft` (pause and ask)")),
                };
                rollout.signal(&plan, now, name, hard, &reason)
            }
            other => return Err(ApiError::not_found(format!("no rollout command `{other}`"))),
        };
        let effects = result.map_err(|e| ApiError::new(StatusCode::CONFLICT, "conflict", e.0))?;
        self.transition(guard, &record, &plan, &mut rollout, effects, &who.name).await?;
        let record = self.store.rollout(id).await?.ok_or_else(|| ApiError::not_found("the rollout vanished"))?;
        Ok(summary(&record, &plan, &state_of(&record)?))
    }
}

/// Runs the runner forever: four times a second, tick the rollouts that are due.
pub async fn run_forever(state: Arc<AppState>) {
    // What a previous process left undone is finished by each rollout's own task, side by side (a long
    // hook of one does not hold up the others' recovery), finished rollouts included.
    match state.store.rollouts(false).await {
        Ok(all) => state
            .unfinished
            .lock()
            .expect("unfinished")
            .extend(all.into_iter().filter(|r| r.outbox.as_array().is_some_and(|o| !o.is_empty())).map(|r| r.id)),
        Err(e) => eprintln!("sluice: reading rollouts to recover: {e}"),
    }
    let memory = Arc::new(RunnerMemory::default());
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        every.tick().await;
        let records = match state.runnable_rollouts().await {
            Ok(records) => records,
            Err(e) => {
                eprintln!("sluice: rollout runner: {}", e.message);
                continue;
            }
        };
        for record in records {
            let (state, memory) = (state.clone(), memory.clone());
            // A task per rollout: a slow command of one (a gate's query, a hook) never delays another's tick,
            // and so never its rollback.
            tokio::spawn(async move {
                let Some(ticking) = Ticking::claim(&memory, &record.id) else { return };
                let _ = state.tick_logged(record, &memory, ticking).await;
            });
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    /// The plan's YAML.
    plan: String,
    /// The file name, for error messages.
    #[serde(default)]
    file: Option<String>,
}

/// `POST /api/v1/rollouts`: checks the plan against the live catalog and starts it, or says every problem.
pub(crate) async fn start(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = state.require(&headers, Role::Operator)?;
    let b: StartBody = parse_json(&body)?;
    let file = b.file.unwrap_or_else(|| "plan.yaml".into());
    let record = state.start_rollout(&who, &file, &b.plan).await?;
    let record = state.store.rollout(&record.id).await?.unwrap_or(record);
    let data = summary(&record, &plan_of(&record)?, &state_of(&record)?);
    Ok((StatusCode::CREATED, Json(json!({"data": data}))).into_response())
}

fn summary(record: &RolloutRecord, plan: &Plan, rollout: &Rollout) -> Value {
    let phase = plan.phases.get(rollout.phase).map(|p| &p.value);
    json!({
        "id": record.id,
        "plan": record.plan_name,
        "flag": record.flag,
        "status": rollout.status,
        "phase": rollout.phase + 1,
        "phases": plan.phases.len(),
        "phase_percents": plan.phases.iter().map(|p| p.value.percent.value).collect::<Vec<_>>(),
        "percent": rollout.percent(plan),
        "phase_started_ms": rollout.phase_started,
        "hold_ms": phase.and_then(|p| p.hold.as_ref()).map(|h| h.value.0.as_millis() as u64),
        "approvals_needed": phase.map(|p| p.approvals.iter().map(|a| a.value.item.clone()).collect::<Vec<_>>()).unwrap_or_default(),
        "approvals_admin_only": phase.map(|p| p.approvals.iter().filter(|a| a.value.role == sluice_plan::model::ApprovalRole::Admin).map(|a| a.value.item.clone()).collect::<Vec<_>>()).unwrap_or_default(),
        "approvals_signed": rollout.approvals,
        "approvals_signed_by": rollout.signed_by,
        "history": rollout.history,
        "pending": pending(record, plan),
        "created_by": record.created_by,
        "created_at": record.created_at,
    })
}

/// What the last transition still has to carry out, in order: the first is under way (a hook that takes
/// a while shows here, before the percentage it guards is raised), and `unknown` waits for `settle`.
fn pending(record: &RolloutRecord, plan: &Plan) -> Vec<Value> {
    let outbox: Vec<OutboxItem> = serde_json::from_value(record.outbox.clone()).unwrap_or_default();
    let mut first = true;
    outbox
        .iter()
        .filter(|i| !i.done)
        .map(|i| {
            let what = match &i.effect {
                OutboxEffect::SetRamp { percent, .. } => format!("set the flag to {percent}%"),
                OutboxEffect::RestoreFlag => "restore the flag as it was before the rollout".into(),
                OutboxEffect::FlagsOff { flags } => format!("switch off {}", flags.join(", ")),
                OutboxEffect::ClearOverrides => "clear the flag's overrides".into(),
                OutboxEffect::Run { purpose, .. } => match action_at(plan, purpose).and_then(|a| a.name.as_deref()) {
                    Some(name) => format!("{purpose} ({name})"),
                    None => purpose.clone(),
                },
            };
            let state = if i.uncertain {
                "unknown"
            } else if std::mem::take(&mut first) {
                "under_way"
            } else {
                "waiting"
            };
            json!({"what": what, "state": state, "idempotency_key": i.key})
        })
        .collect()
}

async fn find(state: &AppState, id: &str) -> Result<RolloutRecord, ApiError> {
    if let Some(r) = state.store.rollout(id).await? {
        return Ok(r);
    }
    // A plan name or a flag stands for its active rollout, or else its latest one.
    let all = state.store.rollouts(false).await?;
    let matching = || all.iter().filter(|r| r.plan_name == id || r.flag == id);
    matching()
        .find(|r| r.active)
        .or_else(|| matching().next_back())
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no rollout `{id}` (give its id, its plan's name or its flag)")))
}

pub(crate) async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.require(&headers, Role::Viewer)?;
    let mut out = Vec::new();
    for record in state.store.rollouts(false).await? {
        let plan = plan_of(&record)?;
        out.push(summary(&record, &plan, &state_of(&record)?));
    }
    Ok(Json(json!({"data": out})).into_response())
}

pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.require(&headers, Role::Viewer)?;
    let record = find(&state, &id).await?;
    let plan = plan_of(&record)?;
    Ok(Json(json!({"data": summary(&record, &plan, &state_of(&record)?)})).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct Limit {
    limit: Option<u32>,
}

pub(crate) async fn decisions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Params(q): Params<Limit>,
) -> Result<Response, ApiError> {
    state.require(&headers, Role::Viewer)?;
    let record = find(&state, &id).await?;
    let limit = q.limit.unwrap_or(200).min(10_000);
    Ok(Json(json!({"data": state.store.decisions(&record.id, limit).await?})).into_response())
}

/// The body of a rollout command.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    /// Why (audited).
    #[serde(default)]
    pub reason: Option<String>,
    /// `approve`: the item.
    #[serde(default)]
    pub item: Option<String>,
    /// `signal`: the trigger's name.
    #[serde(default)]
    pub name: Option<String>,
    /// `signal`: `hard` or `soft`.
    #[serde(default)]
    pub severity: Option<String>,
    /// `settle`: `ran` or `retry`.
    #[serde(default)]
    pub pending: Option<String>,
}

/// The operator who may decide, or a refusal that is itself audited.
async fn decider(state: &AppState, headers: &HeaderMap, id: &str, command: &str) -> Result<Principal, ApiError> {
    let who = state.require(headers, Role::Viewer)?;
    if !who.role.allows(Role::Operator) {
        let detail = json!({"command": command, "role": who.role.as_str()});
        state
            .store
            .record_event(
                &who.name,
                "rollout.refused",
                &format!("rollout:{id}"),
                detail,
                Some("needs the operator role".into()),
            )
            .await?;
        return Err(ApiError::forbidden("operator"));
    }
    Ok(who)
}

/// `POST /api/v1/rollouts/{id}/{command}`: pause, resume, promote, rollback, abort, approve, signal, settle.
pub(crate) async fn command(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, command)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Who first: an unauthenticated caller learns nothing, not even whether the rollout exists.
    state.require(&headers, Role::Viewer)?;
    let record = find(&state, &id).await?;
    let who = decider(&state, &headers, &record.id, &command).await?;
    let b: CommandBody =
        if body.iter().all(u8::is_ascii_whitespace) { CommandBody::default() } else { parse_json(&body)? };
    let data = state.rollout_command(&record.id, &command, b, &who).await?;
    Ok(Json(json!({"data": data})).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct AlertmanagerBody {
    #[serde(default)]
    alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Alert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// `POST /api/v1/alertmanager`: Alertmanager's webhook. A firing alert labelled `sluice_rollout` (id or
/// plan name) or `sluice_flag` signals that rollout: hard when `sluice_severity=hard` or `severity` is
/// `critical` or `page`, soft otherwise; the trigger's name is the alert's name.
pub(crate) async fn alertmanager(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // A refused caller is audited, as for any rollout decision.
    let who = decider(&state, &headers, "alertmanager", "signal").await?;
    let b: AlertmanagerBody = parse_json(&body)?;
    let mut signalled = Vec::new();
    for alert in b.alerts.iter().filter(|a| a.status == "firing") {
        let Some(target) = alert.labels.get("sluice_rollout").or_else(|| alert.labels.get("sluice_flag")) else {
            continue;
        };
        let Ok(record) = find(&state, target).await else { continue };
        if !record.active {
            continue;
        }
        let name = alert.labels.get("alertname").cloned().unwrap_or_else(|| "alert".into());
        let hard = alert.labels.get("sluice_severity").map(String::as_str) == Some("hard")
            || matches!(alert.labels.get("severity").map(String::as_str), Some("critical" | "page"));
        let reason =
            alert.annotations.get("summary").cloned().unwrap_or_else(|| format!("Alertmanager: {name} firing"));
        let body = CommandBody {
            name: Some(name.clone()),
            severity: Some(if hard { "hard" } else { "soft" }.into()),
            reason: Some(reason),
            ..CommandBody::default()
        };
        if state.rollout_command(&record.id, "signal", body, &who).await.is_ok() {
            signalled.push(json!({"rollout": record.id, "trigger": name, "hard": hard}));
        }
    }
    Ok(Json(json!({"signalled": signalled})).into_response())
}
