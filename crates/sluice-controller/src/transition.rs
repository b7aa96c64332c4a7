//! Where a transition is written and carried out: the write-ahead outbox. Every transition — engine state,
//! the effects still to carry out, the audit events and the queued notifications — is one commit; the
//! effects run only after it, and the outbox is emptied as they complete. After a crash, the stored
//! outbox says what may have run.

use serde_json::json;
use sluice_engine::{CheckDecision, Effect, Event, OutboxItem, Rollout};
use sluice_flags::Flag;
use sluice_plan::Plan;
use sluice_sources::ActionContext;
use sluice_store::{
    AuditNote, Change, Decided, Destination, NewDecision, NewNotification, Principal, RolloutRecord, RolloutSave,
};

use crate::{plan_of, Controller, ControllerError, RolloutChange, RolloutGuard};

/// What happened to an action interrupted by a crash, as a person found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// It ran and succeeded: it is not run again and the rollout goes on.
    Ran,
    /// It did not run: it runs now.
    Retry,
    /// It ran and failed: as if the controller had seen it fail (a phase hook steps the rollout back).
    Failed,
}

impl Controller {
    /// Writes a transition (state, outbox, audit, notifications) and then carries out its effects. The
    /// caller holds the rollout's lock (`guard`) and gets it back.
    pub(crate) async fn transition(
        &self,
        guard: RolloutGuard,
        record: &RolloutRecord,
        plan: &Plan,
        rollout: &mut Rollout,
        effects: Vec<Effect>,
        actor: &str,
    ) -> Result<RolloutGuard, ControllerError> {
        let outbox = self.commit_transition(record, plan, rollout, effects, actor).await?;
        self.carry_out(guard, record, plan, rollout, outbox).await
    }

    /// Writes a transition in one commit and returns the outbox to carry out.
    pub(crate) async fn commit_transition(
        &self,
        record: &RolloutRecord,
        plan: &Plan,
        rollout: &Rollout,
        effects: Vec<Effect>,
        actor: &str,
    ) -> Result<Vec<OutboxItem>, ControllerError> {
        self.commit_with(record, plan, rollout, effects, actor, Saving::default()).await
    }

    /// [`commit_transition`](Self::commit_transition) with more to write in the same commit: a hook's
    /// audit event, a tick's decisions.
    pub(crate) async fn commit_with(
        &self,
        record: &RolloutRecord,
        plan: &Plan,
        rollout: &Rollout,
        effects: Vec<Effect>,
        actor: &str,
        also: Saving<'_>,
    ) -> Result<Vec<OutboxItem>, ControllerError> {
        let (outbox, events) = self.outbox_of(&record.id, plan, rollout.history.len(), effects);
        self.fault("before-save")?;
        self.save(record, plan, rollout, actor, &outbox, Saving { events: &events, ..also }).await?;
        self.fault("after-save")?;
        Ok(outbox)
    }

    /// A transition's outbox and events: each action marked idempotent when its plug-in says it always is
    /// (a webhook's `Idempotency-Key`), which the pure engine cannot know.
    pub(crate) fn outbox_of(
        &self,
        id: &str,
        plan: &Plan,
        transition: usize,
        effects: Vec<Effect>,
    ) -> (Vec<OutboxItem>, Vec<Event>) {
        let (mut outbox, events) = sluice_engine::outbox(id, transition, effects);
        for item in &mut outbox {
            if let Effect::Run { action, idempotent } = &mut item.effect {
                if let Some(a) = action.resolve(plan) {
                    *idempotent |= self.plugins.described().idempotent(a);
                }
            }
        }
        (outbox, events)
    }

    /// Writes the rollout's state and outbox, with an audit event per transition event (after `also.notes`),
    /// its notifications and the tick's decisions, in one commit, then tells the change stream.
    pub(crate) async fn save(
        &self,
        record: &RolloutRecord,
        plan: &Plan,
        rollout: &Rollout,
        actor: &str,
        outbox: &[OutboxItem],
        also: Saving<'_>,
    ) -> Result<(), ControllerError> {
        let mut notes = also.notes;
        notes.extend(
            also.events.iter().map(|e| {
                (format!("rollout.{}", e.kind), serde_json::to_value(e).expect("json"), Some(e.reason.clone()))
            }),
        );
        let checks: Vec<CheckDecision> =
            also.decisions.map(|(_, d)| d.iter().map(|d| d.decided.decision.clone()).collect()).unwrap_or_default();
        let notifications = self.notifications_of(record, plan, rollout, outbox, also.events, &checks);
        let written = self
            .store
            .save_rollout(&RolloutSave {
                actor,
                id: &record.id,
                state: rollout,
                outbox,
                events: &notes,
                notifications: &notifications,
                decisions: also.decisions.map(|(at, d)| (at as i64, d)),
            })
            .await?;
        let decisions: Vec<Decided> =
            also.decisions.map(|(_, d)| d.iter().map(|d| d.decided.clone()).collect()).unwrap_or_default();
        for d in &decisions {
            self.activity.decision(d.decision.kind.as_str(), d.decision.outcome.as_str());
        }
        for e in also.events {
            self.activity.event(&e.kind);
        }
        if !written.is_empty() || !decisions.is_empty() {
            self.catalog.tell(written, change_of(&record.id, plan, rollout, decisions));
        }
        if !notifications.is_empty() {
            self.wake_notifier.notify_one();
        }
        Ok(())
    }

    /// The notifications of a transition's events: each to the log, and to every notifier of the plan
    /// that listens for its kind. An event's id is its place in the rollout's history (`{rollout}:e{n}`),
    /// the last of which `events` are: unique however close two transitions come, and the same when a
    /// transition is written again after a crash.
    pub(crate) fn notifications_of(
        &self,
        record: &RolloutRecord,
        plan: &Plan,
        rollout: &Rollout,
        outbox: &[OutboxItem],
        events: &[Event],
        checks: &[CheckDecision],
    ) -> Vec<NewNotification> {
        let first = rollout.history.len().saturating_sub(events.len());
        let mut out = Vec::new();
        for (n, event) in events.iter().enumerate() {
            let id = format!("{}:e{}", record.id, first + n);
            let body = notification(id.clone(), record, plan, rollout, outbox, event.clone(), checks.to_vec());
            let body = serde_json::to_value(&body).expect("json");
            let listening = plan
                .notify
                .iter()
                .enumerate()
                .filter(|(_, t)| t.value.on.is_empty() || t.value.on.contains(&event.kind))
                .map(|(i, _)| Destination::Notifier(i));
            for destination in std::iter::once(Destination::Log).chain(listening) {
                out.push(NewNotification {
                    id: id.clone(),
                    destination,
                    rollout_id: record.id.clone(),
                    body: body.clone(),
                });
            }
        }
        out
    }

    /// Appends an audit event about a rollout and tells the change stream.
    pub(crate) async fn audit(
        &self,
        actor: &str,
        action: &str,
        rollout_id: &str,
        detail: serde_json::Value,
        reason: Option<String>,
    ) -> Result<(), ControllerError> {
        let event = self.store.record_event(actor, action, &format!("rollout:{rollout_id}"), detail, reason).await?;
        if let Ok(Some(record)) = self.store.rollout(rollout_id).await {
            if let Ok(plan) = plan_of(&record) {
                self.catalog.tell(vec![event], change_of(rollout_id, &plan, &record.state, Vec::new()));
            }
        }
        Ok(())
    }

    /// Carries out outbox items in order, then empties the outbox. A non-idempotent action is marked
    /// `started` before it runs and `done` after, so that only a crash while it ran leaves it uncertain.
    /// A hook that fails pauses the rollout.
    ///
    /// A phase hook may run for hours (a migration): the rollout's lock is let go while it runs, so that
    /// the runner keeps evaluating the rollout's triggers and a person can still roll back or abort. Either
    /// supersedes this transition, which then stops after the hook.
    pub(crate) async fn carry_out(
        &self,
        guard: RolloutGuard,
        record: &RolloutRecord,
        plan: &Plan,
        rollout: &mut Rollout,
        outbox: Vec<OutboxItem>,
    ) -> Result<RolloutGuard, ControllerError> {
        // Marked before, cleared after: if this stops on an error (or is cancelled), the runner retries the
        // stored outbox, even when the rollout has ended.
        self.unfinished_insert(&record.id);
        let carried = Box::pin(self.carry_out_in_order(guard, record, plan, rollout, outbox)).await;
        if carried.is_ok() {
            self.unfinished_remove(&record.id);
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
    ) -> Result<RolloutGuard, ControllerError> {
        if outbox.is_empty() {
            return Ok(guard);
        }
        let _carrying = self.mark_carrying(&record.id, &outbox);
        let actor = Self::actor(record);
        for i in 0..outbox.len() {
            // Done, or failed for good and waiting for a person: not carried out again here.
            if outbox[i].done || outbox[i].failed.is_some() {
                continue;
            }
            self.fault("before-effect")?;
            // A replica deposed while it slept must not act on a transition its successor now owns.
            self.store.fence_holds().await?;
            let reason = Some(format!("rollout {} ({})", record.plan_name, record.id));
            match outbox[i].effect.clone() {
                Effect::SetRamp { percent, base, ramped, segments } => {
                    self.edit_flag(record, &actor, reason, &record.flag, move |f| {
                        f.ramp.percent = percent;
                        if let Some(b) = &base {
                            f.ramp.base.clone_from(b);
                        }
                        if let Some(r) = &ramped {
                            f.ramp.ramped.clone_from(r);
                        }
                        f.ramp.segments.clone_from(&segments);
                    })
                    .await?;
                }
                Effect::RestoreFlag => {
                    // The ramp as it was, and only the ramp: a kill switch pulled during the rollout stays
                    // pulled, and per-user overrides added meanwhile stay (unless the plan clears them).
                    let ramp = record.original_flag.ramp.clone();
                    self.edit_flag(record, &actor, reason, &record.flag, move |f| f.ramp = ramp.clone()).await?;
                }
                Effect::FlagsOff { flags } => {
                    for key in flags {
                        self.edit_flag(record, &actor, reason.clone(), &key, |f| f.enabled = false).await?;
                    }
                }
                Effect::ClearOverrides => {
                    self.edit_flag(record, &actor, reason, &record.flag, |f| f.overrides.clear()).await?
                }
                Effect::Run { action: at, idempotent } => {
                    let Some(action) = at.resolve(plan) else { continue };
                    if !idempotent {
                        outbox[i].started = true;
                        self.save(record, plan, rollout, &actor, &outbox, Saving::default()).await?;
                        self.fault("after-started")?;
                    }
                    let flag = self.live_flag(&record.env, &record.flag);
                    let values = crate::action_values(&record.id, &record.env, plan, rollout, flag.as_ref());
                    let checks = self.last_checks(&record.id).await;
                    let key = outbox[i].key.clone();
                    let cx =
                        ActionContext { rollout_id: &record.id, plan, values: &values, key: &key, checks: &checks };
                    let hook = at.is_hook();
                    // No action holds the rollout's lock while it runs: a hook may take hours (a migration)
                    // and a webhook retries with backoff for minutes, while the runner keeps evaluating
                    // triggers and people can still roll back or abort.
                    drop(guard);
                    let outcome = match &action.flag {
                        Some(spec) => self.flag_action(record, &actor, action, &spec.value).await,
                        None => self.plugins.run(action, &cx).await,
                    };
                    guard = self.lock(&record.id).await;
                    self.activity.action(&self.plugins.described().action_kind(action), outcome.ok());
                    self.fault("after-action")?;
                    let mut detail = json!({"purpose": at.to_string(), "ok": outcome.ok(), "detail": outcome.detail, "idempotency_key": key});
                    if let Some(kind) = outcome.failure {
                        detail["failure"] = json!(kind);
                    }
                    if let Some(name) = &action.name {
                        detail["name"] = json!(name);
                    }
                    if !outcome.attempts.is_empty() {
                        detail["attempts"] = json!(outcome.attempts);
                    }
                    // While it ran, the runner may have recorded trigger ticks (kept), or a rollback or an
                    // abort may have replaced this transition's effects (then nothing more here).
                    let fresh = self.record(&record.id).await?;
                    let superseded = fresh.outbox.get(i).map(|s| &s.key) != Some(&key);
                    *rollout = fresh.state;
                    if superseded {
                        detail["superseded"] = json!(true);
                        self.audit(&actor, "rollout.action", &record.id, detail, None).await?;
                        return Ok(guard);
                    }
                    let note = ("rollout.action".to_string(), detail, None);
                    if hook && !outcome.ok() {
                        // The hook's outcome and the step back it causes are one commit, replacing what was
                        // left of this outbox: no crash can forget the failure and raise the percentage.
                        let effects = rollout.hook_failed(plan, self.clock.now(), at, &outcome.detail);
                        let next =
                            self.commit_with(record, plan, rollout, effects, &actor, Saving::notes(vec![note])).await?;
                        return Box::pin(self.carry_out_in_order(guard, record, plan, rollout, next)).await;
                    }
                    if !outcome.ok() {
                        // Failed for good (its plug-in retried what was worth retrying): it stays in the outbox
                        // as failed until a person settles it, the rollout pauses if it can, and people are
                        // told, in one commit. The rollback's other actions still run: each does what it can.
                        outbox[i].failed = Some(outcome.detail.clone());
                        let effects = rollout.action_failed(plan, self.clock.now(), at, &outcome.detail);
                        let (_, events) = self.outbox_of(&record.id, plan, rollout.history.len(), effects);
                        let also = Saving { events: &events, ..Saving::notes(vec![note]) };
                        self.save(record, plan, rollout, &actor, &outbox, also).await?;
                        self.fault("after-effect")?;
                        continue;
                    }
                    rollout.hook_succeeded(at);
                    // Done, with its audit event, in one commit: after a crash it is neither run again nor
                    // missing from the audit log.
                    outbox[i].done = true;
                    self.save(record, plan, rollout, &actor, &outbox, Saving::notes(vec![note])).await?;
                }
                // Never written to an outbox: events are audited and queued with their transition.
                Effect::Notify(_) => {}
            }
            // Marked in memory only (written with the next save): a flag change is carried out again after a
            // crash anyway, and an outbox kept for a failed action must not list it as still to do.
            outbox[i].done = true;
            self.fault("after-effect")?;
        }
        if outbox.iter().any(OutboxItem::waits_for_settling) {
            // Kept with what failed: `settle` finishes it.
            return Ok(guard);
        }
        self.save(record, plan, rollout, &actor, &[], Saving::default()).await?;
        self.fault("after-clear")?;
        Ok(guard)
    }

    /// A `flag` action: sets another flag through the audited write path a person's edit takes, refused
    /// (and reported as the action's failure) while another active rollout drives that flag.
    async fn flag_action(
        &self,
        record: &RolloutRecord,
        actor: &str,
        action: &sluice_plan::model::Action,
        spec: &sluice_plan::model::FlagAction,
    ) -> sluice_sources::ActionOutcome {
        use sluice_sources::ActionOutcome;
        let key = spec.key.value.as_str();
        if key == record.flag {
            return ActionOutcome::failed("a flag action cannot set the rollout's own flag: its phases do");
        }
        // Held across the check and the edit: a rollout of `key` cannot start in between.
        let _starting = self.lock(&format!("start:{key}")).await;
        match self.store.rollouts(false).await {
            Ok(all) => {
                // Active, or ended with its flag restore still to carry out.
                let driving = |r: &&RolloutRecord| {
                    r.env == record.env && r.flag == key && r.id != record.id && (r.active || !r.outbox.is_empty())
                };
                if let Some(other) = all.iter().find(driving) {
                    return ActionOutcome::failed(format!(
                        "flag `{key}` is driven by rollout `{}` ({}): not changed; finish or roll that rollout back first",
                        other.plan_name, other.id
                    ));
                }
            }
            Err(e) => return ActionOutcome::failed(format!("cannot tell which rollouts drive `{key}`: {e}")),
        }
        let Some(flag) = self.live_flag(&record.env, key) else {
            return ActionOutcome::failed(format!("no flag `{key}`"));
        };
        if let Some(v) = &spec.variant {
            if !flag.variants.iter().any(|fv| fv.name == v.value) {
                let names: Vec<&str> = flag.variants.iter().map(|fv| fv.name.as_str()).collect();
                return ActionOutcome::failed(format!(
                    "flag `{key}` has no variant `{}` (it has {})",
                    v.value,
                    names.join(", ")
                ));
            }
        }
        let (enabled, percent, variant) =
            (spec.enabled, spec.percent(), spec.variant.as_ref().map(|v| v.value.clone()));
        let what = [
            enabled.map(|e| format!("enabled={e}")),
            percent.map(|p| format!("percent={p}")),
            variant.as_ref().map(|v| format!("variant={v}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        let name = action.name.as_deref().unwrap_or("flag action");
        let reason = Some(format!("rollout {} ({}): {name}", record.plan_name, record.id));
        let edited = self
            .edit_flag(record, actor, reason, key, move |f| {
                if let Some(e) = enabled {
                    f.enabled = e;
                }
                if let Some(p) = percent {
                    f.ramp.percent = p;
                }
                if let Some(v) = &variant {
                    f.ramp.ramped.clone_from(v);
                }
            })
            .await;
        match edited {
            Ok(()) => ActionOutcome::done(format!("flag `{key}`: {what}")),
            Err(e) => ActionOutcome::failed(format!("flag `{key}` was not changed: {e}")),
        }
    }

    /// The last tick's decisions of a rollout, for an action's body: check, kind, value, threshold,
    /// outcome, note.
    pub(crate) async fn last_checks(&self, id: &str) -> serde_json::Value {
        let recent = self.store.decisions(id, 64).await.unwrap_or_default();
        let last_at = recent.iter().map(|d| d.decision.at).max();
        let checks: Vec<serde_json::Value> = recent
            .iter()
            .map(|d| &d.decision)
            .filter(|d| Some(d.at) == last_at)
            .map(|d| {
                json!({"check": d.check, "kind": d.kind, "value": d.value, "threshold": d.threshold.to_string(), "outcome": d.outcome, "note": d.note})
            })
            .collect();
        serde_json::Value::Array(checks)
    }

    /// Changes a flag for a rollout. A flag deleted since the plan was checked is skipped and audited
    /// (`rollout.flag_missing`): the effects after it, a rollback's actions above all, must still run.
    async fn edit_flag(
        &self,
        record: &RolloutRecord,
        actor: &str,
        reason: Option<String>,
        key: &str,
        edit: impl Fn(&mut Flag),
    ) -> Result<(), ControllerError> {
        if self.live_flag(&record.env, key).is_none() {
            let detail = json!({"flag": key, "skipped": "no such flag"});
            return self.audit(actor, "rollout.flag_missing", &record.id, detail, None).await;
        }
        self.catalog
            .write_through(&*self.store, &record.env, actor, reason, |snapshot| {
                let mut flag = snapshot
                    .flags()
                    .iter()
                    .find(|f| f.key == key)
                    .cloned()
                    .ok_or_else(|| ControllerError::NotFound(format!("no flag `{key}`")))?;
                edit(&mut flag);
                Ok(vec![Change::PutFlag(flag)])
            })
            .await
            .map(drop)
    }

    /// After a restart: finish what every rollout's outbox says — finished ones too, since a rollback's
    /// actions are written with the transition that ends the rollout. Flag changes and idempotent actions
    /// are carried out again with the same key; a non-idempotent action that had not started runs now. One
    /// that had started and not finished may or may not have run: the rollout is paused (when live), the
    /// audit log names the action, and the rollout waits until a person settles it (`ran` or `retry`).
    pub async fn recover(&self) -> Result<(), ControllerError> {
        for record in self.store.rollouts(false).await? {
            let guard = self.lock(&record.id).await;
            let Some(record) = self.store.rollout(&record.id).await? else { continue };
            // One rollout that cannot be finished now (retried by the runner) does not stop the others.
            match self.finish_outbox(guard, &record).await {
                Err(e) if e.is_crash() => return Err(e),
                Err(e) => {
                    tracing::warn!(rollout = %record.id, error = %e, "recovering a rollout failed; the runner retries it")
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Finishes an outbox that nobody is carrying out: after a restart, or when the transition that wrote
    /// it stopped on an error or was cancelled. The caller holds the rollout's lock and has just read
    /// `record`; it gets the lock back, and whether there was such an outbox.
    pub(crate) async fn finish_outbox(
        &self,
        guard: RolloutGuard,
        record: &RolloutRecord,
    ) -> Result<(RolloutGuard, bool), ControllerError> {
        let mut outbox = record.outbox.clone();
        // Being carried out (a phase hook runs with the lock let go), or waiting for a person: not stranded.
        if outbox.is_empty() || outbox.iter().any(|i| i.uncertain) || self.in_hand(record) {
            return Ok((guard, false));
        }
        // Only actions that failed for good are left: they wait for a person, and the rest was carried out.
        if outbox.iter().all(|i| i.done || i.failed.is_some()) {
            return Ok((guard, false));
        }
        let plan = plan_of(record)?;
        let mut rollout = record.state.clone();
        let Some(i) = outbox.iter().position(OutboxItem::may_have_run_unfinished) else {
            let guard = self.carry_out(guard, record, &plan, &mut rollout, outbox).await?;
            return Ok((guard, true));
        };
        outbox[i].uncertain = true;
        let purpose = match &outbox[i].effect {
            Effect::Run { action, .. } => action.to_string(),
            other => format!("{other:?}"),
        };
        let why = format!(
            "{purpose} (key {}) was interrupted while running; it is not idempotent, so it was not run again: check whether it ran, then `settle` it as `ran` or `retry`",
            outbox[i].key
        );
        let unknown = (
            "rollout.action_unknown".to_string(),
            json!({"purpose": purpose, "idempotency_key": outbox[i].key}),
            Some(why.clone()),
        );
        let events = match rollout.pause_because(&plan, self.clock.now(), "uncertain", &why) {
            Ok(effects) => self.outbox_of(&record.id, &plan, rollout.history.len(), effects).1,
            Err(_) => Vec::new(),
        };
        self.save(
            record,
            &plan,
            &rollout,
            "sluice",
            &outbox,
            Saving { events: &events, ..Saving::notes(vec![unknown]) },
        )
        .await?;
        Ok((guard, true))
    }

    /// A person says what happened to an uncertain action — it ran (not run again), it did not (run it),
    /// or it ran and failed (a phase hook then steps the rollout back, as if the failure had been seen) —
    /// and the rest of the outbox is carried out.
    pub async fn settle(&self, id: &str, outcome: Settled, who: &Principal) -> Result<(), ControllerError> {
        let guard = self.lock(id).await;
        let record = self.record(id).await?;
        let mut outbox = record.outbox.clone();
        // What was interrupted first (nothing after it ran), then what failed for good.
        let interrupted = outbox.iter().position(|i| i.uncertain);
        let Some(i) = interrupted.or_else(|| outbox.iter().position(OutboxItem::waits_for_settling)) else {
            return Err(ControllerError::conflict("this rollout has no action waiting to be settled"));
        };
        outbox[i].uncertain = false;
        outbox[i].failed = None;
        let said = match outcome {
            Settled::Ran => "ran",
            Settled::Retry => "retry",
            Settled::Failed => "failed",
        };
        let note = ("rollout.settled".to_string(), json!({"idempotency_key": outbox[i].key, "settled": said}), None);
        let plan = plan_of(&record)?;
        let mut rollout = record.state.clone();
        match (outcome, &outbox[i].effect) {
            (Settled::Failed, Effect::Run { action, .. }) if action.is_hook() => {
                // The failure and the step back it causes, in one commit with the person's word.
                let detail = format!("it ran and failed (settled by {})", who.name);
                let effects = rollout.hook_failed(&plan, self.clock.now(), *action, &detail);
                let next =
                    self.commit_with(&record, &plan, &rollout, effects, &who.name, Saving::notes(vec![note])).await?;
                return self.carry_out(guard, &record, &plan, &mut rollout, next).await.map(drop);
            }
            (Settled::Ran, Effect::Run { action, .. }) => {
                rollout.hook_succeeded(*action);
                outbox[i].done = true;
            }
            (Settled::Ran | Settled::Failed, _) => outbox[i].done = true,
            (Settled::Retry, _) => outbox[i].started = false,
        }
        self.save(&record, &plan, &rollout, &who.name, &outbox, Saving::notes(vec![note])).await?;
        self.carry_out(guard, &record, &plan, &mut rollout, outbox).await.map(drop)
    }
}

/// What the stream says about a rollout after a change.
pub(crate) fn change_of(id: &str, plan: &Plan, rollout: &Rollout, decisions: Vec<Decided>) -> RolloutChange {
    RolloutChange {
        id: id.to_string(),
        status: rollout.status.name(),
        phase: rollout.phase + 1,
        percent: rollout.percent(plan),
        decisions,
    }
}

/// What a save writes besides the state and the outbox, in the same commit.
#[derive(Default)]
pub(crate) struct Saving<'a> {
    /// The transition's events (audited, notified).
    pub events: &'a [Event],
    /// Audit events before them (an action's outcome, a refusal).
    pub notes: Vec<AuditNote>,
    /// A tick's decisions, with the tick's time.
    pub decisions: Option<(u64, &'a [NewDecision])>,
}

impl Saving<'_> {
    pub(crate) fn notes(notes: Vec<AuditNote>) -> Self {
        Saving { notes, ..Saving::default() }
    }
}

/// A rollout's event as people hear about it, with the state it left the rollout in.
pub(crate) fn notification(
    id: String,
    record: &RolloutRecord,
    plan: &Plan,
    rollout: &Rollout,
    outbox: &[OutboxItem],
    event: Event,
    checks: Vec<CheckDecision>,
) -> sluice_sources::Notification {
    let (paused_because, decide_by, default) = match &rollout.status {
        sluice_engine::Status::Paused { reason, decide_by, default, .. } => (
            Some(reason.clone()),
            *decide_by,
            default
                .map(|d| serde_json::to_value(d).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()),
        ),
        _ => (None, None, None),
    };
    sluice_sources::Notification {
        id,
        rollout: record.id.clone(),
        plan: record.plan_name.clone(),
        flag: record.flag.clone(),
        event,
        status: rollout.status.name().to_string(),
        phases: plan.phases.len(),
        paused_because,
        decide_by,
        default,
        uncertain: outbox.iter().any(OutboxItem::waits_for_settling),
        checks,
    }
}
