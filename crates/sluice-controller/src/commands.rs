//! Where people's commands land: starting a plan, and pause, resume, promote, rollback, abort, approve,
//! signal and settle on a running rollout. Each goes through the engine and the same write-ahead
//! transition as a tick.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;
use sluice_engine::Rollout;
use sluice_plan::model::{ApprovalRole, RollbackTo};
use sluice_plan::{Level, Plan};
use sluice_sources::CapabilitiesOf;
use sluice_store::{Principal, Role, RolloutRecord};

use crate::transition::Settled;
use crate::{plan_of, Controller, ControllerError, RolloutSummary};

/// A person's decision on a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Stop ramping; triggers stay armed.
    Pause,
    /// Go on from a pause.
    Resume,
    /// Skip the rest of the current phase's hold (needs a reason).
    Promote,
    /// Roll back: to the start, or one phase back (`previous-phase`) when asked for explicitly.
    Rollback {
        /// Where to.
        to: RollbackTo,
    },
    /// End the rollout where it is.
    Abort,
    /// Sign an approval item of the current phase.
    Approve {
        /// The item.
        item: String,
    },
    /// Fire a trigger by hand or from an alert.
    Signal {
        /// The trigger's name.
        name: String,
        /// Hard (roll back now) or soft (pause and ask).
        hard: bool,
    },
    /// Say what happened to an action whose outcome is unknown after a crash, or that failed for good.
    Settle {
        /// What a person found.
        outcome: Settled,
    },
    /// Send the rollout's dead notifications (given up after a permanent failure or too many) again.
    Redeliver,
}

/// The body of a rollout command, as the API and the CLI send it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Default, Clone, Deserialize)]
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
    /// `settle`: `ran`, `retry` or `failed`.
    #[serde(default)]
    pub pending: Option<String>,
    /// `rollback`: `start` (the default) or `previous-phase`.
    #[serde(default)]
    pub to: Option<String>,
}

impl Command {
    /// The command named `name` with what `body` says, or which field is missing or wrong.
    pub fn parse(name: &str, body: &CommandBody) -> Result<Command, ControllerError> {
        let reason_given = body.reason.as_deref().is_some_and(|r| !r.trim().is_empty());
        Ok(match name {
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "promote" if !reason_given => {
                return Err(ControllerError::invalid("reason", "promoting past a hold needs a reason"))
            }
            "promote" => Command::Promote,
            "rollback" => Command::Rollback {
                to: match body.to.as_deref() {
                    None | Some("start") => RollbackTo::Start,
                    Some("previous-phase") => RollbackTo::PreviousPhase,
                    Some(_) => {
                        return Err(ControllerError::invalid(
                            "to",
                            "`start` (restore the flag as before the rollout) or `previous-phase` (step back one phase and pause)",
                        ))
                    }
                },
            },
            "abort" => Command::Abort,
            "approve" => Command::Approve {
                item: body.item.clone().ok_or_else(|| ControllerError::invalid("item", "say which approval item"))?,
            },
            "signal" => {
                let name = body
                    .name
                    .clone()
                    .ok_or_else(|| ControllerError::invalid("name", "say which trigger the signal fires"))?;
                if !reason_given {
                    return Err(ControllerError::invalid(
                        "reason",
                        "say why the signal fires: it goes to the audit log",
                    ));
                }
                let hard = match body.severity.as_deref() {
                    Some("hard") => true,
                    Some("soft") => false,
                    _ => {
                        return Err(ControllerError::invalid(
                            "severity",
                            "`hard` (roll back now) or `soft` (pause and ask)",
                        ))
                    }
                };
                Command::Signal { name, hard }
            }
            "settle" => Command::Settle {
                outcome: match body.pending.as_deref() {
                    Some("ran") => Settled::Ran,
                    Some("retry") => Settled::Retry,
                    Some("failed") => Settled::Failed,
                    _ => {
                        return Err(ControllerError::invalid(
                            "pending",
                            "`ran` (it ran and succeeded: do not run it again), `retry` (it did not run: run it now) or `failed` (it ran and failed)",
                        ))
                    }
                },
            },
            "redeliver" => Command::Redeliver,
            other => return Err(ControllerError::NotFound(format!("no rollout command `{other}`"))),
        })
    }

    /// Its name, as the API spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Promote => "promote",
            Command::Rollback { .. } => "rollback",
            Command::Abort => "abort",
            Command::Approve { .. } => "approve",
            Command::Signal { .. } => "signal",
            Command::Settle { .. } => "settle",
            Command::Redeliver => "redeliver",
        }
    }

    /// It ends the rollout's current phase: allowed while a phase hook runs, and it replaces what an
    /// earlier transition could not finish.
    fn ends_it(&self) -> bool {
        matches!(self, Command::Rollback { .. } | Command::Abort | Command::Signal { hard: true, .. })
    }
}

impl Controller {
    /// Checks a plan against the live catalog and this server's plug-ins, and starts it: the rollout, its
    /// started state and its first effects are written in one commit, then carried out.
    pub async fn start(
        &self,
        who: &Principal,
        env: Option<&str>,
        file: &str,
        text: &str,
    ) -> Result<RolloutRecord, ControllerError> {
        let env = self.catalog.resolve(env)?;
        if !who.may_act_in(env.name()) {
            return Err(ControllerError::refused(
                "environment",
                format!("the token `{}` may not act in environment `{}`", who.name, env.name()),
            ));
        }
        let snapshot = env.live().load();
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
        let capabilities = CapabilitiesOf(&*self.plugins);
        let (plan, notes) = sluice_plan::load_with(file, text, Some(&catalog), &capabilities).map_err(|problems| {
            ControllerError::PlanInvalid(problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))
        })?;
        let missing: Vec<String> =
            notes.iter().filter(|n| n.level == Level::Unavailable).map(|p| p.to_string()).collect();
        if !missing.is_empty() {
            return Err(ControllerError::PluginsMissing(missing.join("\n")));
        }
        self.may_run_programs(&plan, who).await?;
        let original =
            snapshot.flags().iter().find(|f| f.key == plan.flag.value).cloned().expect("checked against the catalog");
        drop(snapshot);
        let now = self.clock.now();
        let baselines = self.baselines(env.name(), &plan, &original, now).await?;
        let starting = self.lock(&format!("start:{}", plan.flag.value)).await;
        // Readable and unique: the flag and the start time, with a suffix in the unlikely case of a second
        // start of the same flag in the same millisecond (no counter: it would restart with the process).
        let mut id = format!("{}-{now:x}", plan.flag.value);
        let mut n = 1;
        while self.store.rollout(&id).await?.is_some() {
            n += 1;
            id = format!("{}-{now:x}-{n}", plan.flag.value);
        }
        // A finished rollout of this flag whose rollback is still being carried out would restore the flag
        // under the new one.
        if let Some(r) = self
            .store
            .rollouts(false)
            .await?
            .into_iter()
            .find(|r| r.env == env.name() && r.flag == plan.flag.value && !r.active && !r.outbox.is_empty())
        {
            return Err(ControllerError::refused(
                "unfinished",
                format!(
                    "rollout `{}` ({}) of this flag still has effects to carry out: retry in a moment",
                    r.plan_name, r.id
                ),
            ));
        }
        // Held while the first effects run (a phase-0 hook may take a while): a command on the new rollout
        // waits for them rather than racing them.
        let mine = self.lock(&id).await;
        let mut rollout = Rollout::new(&plan);
        rollout.baselines = baselines;
        // The start's confirm gates are asked now: all yes, it starts; otherwise it is created pending,
        // says why on status, and the runner asks again at every interval.
        let start_confirms = rollout.confirms_due(&plan, now);
        let effects = if start_confirms.is_empty() {
            rollout.start(&plan, now)
        } else {
            let answers = self.ask_confirms(&id, env.name(), &plan, &rollout, &start_confirms).await;
            let mut source = crate::runner::Answers { measured: &Default::default(), confirmed: &answers };
            let (_, effects) = rollout.tick(&plan, now, &mut source);
            effects
        };
        let (outbox, events) = self.outbox_of(&id, &plan, 0, effects);
        let record = RolloutRecord {
            id,
            env: env.name().to_string(),
            flag: plan.flag.value.clone(),
            plan_name: plan.name.value.clone(),
            plan_text: text.to_string(),
            original_flag: original,
            active: !rollout.status.is_terminal(),
            state: rollout.clone(),
            outbox: outbox.clone(),
            created_by: who.name.clone(),
            created_at: String::new(),
            updated_at: String::new(),
        };
        let notes: Vec<sluice_store::AuditNote> = events
            .iter()
            .map(|e| (format!("rollout.{}", e.kind), serde_json::to_value(e).expect("json"), Some(e.reason.clone())))
            .collect();
        let notifications = self.notifications_of(&record, &plan, &rollout, &outbox, &events, &[]);
        self.fault("before-save")?;
        let written = self.store.create_rollout(&record, &notes, &notifications).await?;
        for e in &events {
            self.activity.event(&e.kind);
        }
        drop(starting);
        self.catalog.tell(written, crate::transition::change_of(&record.id, &plan, &rollout, Vec::new()));
        self.wake_runner.notify_one();
        self.wake_notifier.notify_one();
        self.fault("after-save")?;
        self.carry_out(mine, &record, &plan, &mut rollout, outbox).await?;
        Ok(record)
    }

    /// Each `baseline` check's reference, measured over its window before `now`: kept with the rollout, so
    /// that a restart compares with the same number. A rollout whose baseline cannot be measured does not
    /// start: it could never pass that gate (or fire that trigger).
    async fn baselines(
        &self,
        env: &str,
        plan: &Plan,
        flag: &sluice_flags::Flag,
        now: sluice_engine::Millis,
    ) -> Result<BTreeMap<String, f64>, ControllerError> {
        let mut baselines = BTreeMap::new();
        let values = crate::template_values(env, plan, &Rollout::new(plan), Some(flag));
        for (key, check) in sluice_engine::baseline_checks(plan) {
            let cx = sluice_sources::MeasureContext {
                rollout: None,
                rollout_id: "",
                plan,
                started_at: now,
                phase_started: now,
                now,
                values: &values,
            };
            let value = self.plugins.baseline(check, &cx).await.map_err(|e| {
                ControllerError::refused(
                    "baseline",
                    format!(
                        "the baseline of `{}` cannot be measured: {e}; fix the query, or start once it has history",
                        check.name.value
                    ),
                )
            })?;
            tracing::info!(check = %key, value, "baseline captured");
            baselines.insert(key, value);
        }
        Ok(baselines)
    }

    /// A rollout by id, or the active (else the latest) rollout of a plan name or a flag.
    pub async fn find(&self, id: &str) -> Result<RolloutRecord, ControllerError> {
        if let Some(r) = self.store.rollout(id).await? {
            return Ok(r);
        }
        let all = self.store.rollouts(false).await?;
        let matching = || all.iter().filter(|r| r.plan_name == id || r.flag == id);
        matching().find(|r| r.active).or_else(|| matching().next_back()).cloned().ok_or_else(|| {
            ControllerError::NotFound(format!("no rollout `{id}` (give its id, its plan's name or its flag)"))
        })
    }

    /// What a rollout looks like now, for people.
    pub async fn summary(&self, id: &str) -> Result<RolloutSummary, ControllerError> {
        let record = self.record(id).await?;
        self.summary_of(&record).await
    }

    /// What a stored rollout looks like now, for people, with its notifications that were given up.
    pub async fn summary_of(&self, record: &RolloutRecord) -> Result<RolloutSummary, ControllerError> {
        let mut summary = RolloutSummary::of(record)?;
        summary.undelivered =
            self.store.dead_notifications(Some(&record.id)).await?.iter().map(crate::status::Undelivered::of).collect();
        Ok(summary)
    }

    /// Every rollout, oldest first, for people.
    pub async fn summaries(&self) -> Result<Vec<RolloutSummary>, ControllerError> {
        let dead = self.store.dead_notifications(None).await?;
        let mut out = Vec::new();
        for record in self.store.rollouts(false).await? {
            let mut summary = RolloutSummary::of(&record)?;
            summary.undelivered =
                dead.iter().filter(|n| n.rollout_id == record.id).map(crate::status::Undelivered::of).collect();
            out.push(summary);
        }
        Ok(out)
    }

    /// Sends a rollout's dead notifications again (a person's decision, audited).
    async fn redeliver(&self, id: &str, who: &Principal, reason: Option<String>) -> Result<(), ControllerError> {
        let record = self.record(id).await?;
        let (n, event) = self.store.redeliver(&who.name, &record.id, reason).await?;
        if n == 0 {
            return Err(ControllerError::conflict("this rollout has no notification that was given up"));
        }
        if let (Some(event), Ok(plan)) = (event, plan_of(&record)) {
            self.catalog.tell(vec![event], crate::transition::change_of(&record.id, &plan, &record.state, Vec::new()));
        }
        self.wake_notifier.notify_one();
        Ok(())
    }

    /// [`Command::parse`] and [`command`](Self::command): the API's and the CLI's way in.
    pub async fn command_named(
        &self,
        id: &str,
        name: &str,
        body: CommandBody,
        who: &Principal,
    ) -> Result<RolloutSummary, ControllerError> {
        let command = Command::parse(name, &body)?;
        self.command(id, command, body.reason, who).await
    }

    /// A person's command on a rollout. `who` is the authenticated principal (an operator or above);
    /// `reason` goes to the audit log.
    pub async fn command(
        &self,
        id: &str,
        command: Command,
        reason: Option<String>,
        who: &Principal,
    ) -> Result<RolloutSummary, ControllerError> {
        if let Command::Settle { outcome } = command {
            self.settle(id, outcome, who).await?;
            return self.summary(id).await;
        }
        if command == Command::Redeliver {
            self.redeliver(id, who, reason).await?;
            return self.summary(id).await;
        }
        let reason = reason.unwrap_or_else(|| format!("{} by {}", command.name(), who.name));
        let guard = self.lock(id).await;
        let mut record = self.record(id).await?;
        // What an earlier transition left undone comes first: a command never drops it. If it cannot be
        // finished (a flag deleted under the rollout, a store error), a rollback or an abort still goes
        // ahead: it replaces what was left.
        let guard = match self.finish_outbox(guard, &record).await {
            Ok((guard, finished)) => {
                if finished {
                    record = self.record(id).await?;
                }
                guard
            }
            Err(e) if command.ends_it() && !e.is_crash() => {
                tracing::warn!(rollout = %id, error = %e, command = command.name(), "what the last transition left undone failed; the command replaces it");
                let guard = self.lock(id).await;
                record = self.record(id).await?;
                guard
            }
            Err(e) => return Err(e),
        };
        // A phase hook is running (its transition let the lock go): only what ends the phase may interrupt it.
        let hook_running = !record.outbox.is_empty() && self.in_hand(&record);
        if hook_running && !command.ends_it() {
            return Err(ControllerError::refused(
                "hook_running",
                "a phase hook of this rollout is running: wait for it to finish, or `rollback` / `abort` / signal --hard now",
            ));
        }
        if record.outbox.iter().any(sluice_engine::OutboxItem::waits_for_settling) {
            return Err(ControllerError::refused(
                "unsettled",
                "an action's outcome is unknown, or it failed for good: `settle` it (ran, retry or failed) first",
            ));
        }
        let plan = plan_of(&record)?;
        let mut rollout = record.state.clone();
        let now = self.clock.now();
        let result = match &command {
            Command::Pause => rollout.pause(&plan, now, &reason),
            Command::Resume => {
                if self.live_flag(&record.env, &record.flag).is_some_and(|f| !f.enabled) {
                    return Err(ControllerError::refused(
                        "kill_switch",
                        format!(
                            "flag `{}` is disabled (its kill switch is pulled): enable it first (`sluice flag enable {}`), then resume",
                            record.flag, record.flag
                        ),
                    ));
                }
                rollout.resume(&plan, now, &reason)
            }
            Command::Promote => rollout.promote(&plan, now, &reason),
            Command::Rollback { to: RollbackTo::Start } => {
                rollout.rollback(&plan, now, &format!("rolled back by {}: {reason}", who.name))
            }
            Command::Rollback { to: RollbackTo::PreviousPhase } => {
                rollout.step_back(&plan, now, &format!("stepped back by {}: {reason}", who.name))
            }
            Command::Abort => rollout.abort(&plan, now, &reason),
            Command::Approve { item } => {
                self.may_sign(id, &plan, &rollout, item, who).await?;
                rollout.approve(&plan, now, item, &who.name)
            }
            Command::Signal { name, hard } => rollout.signal(&plan, now, name, *hard, &reason),
            Command::Settle { .. } | Command::Redeliver => unreachable!("handled above"),
        };
        let effects = result.map_err(|e| ControllerError::conflict(e.0))?;
        self.transition(guard, &record, &plan, &mut rollout, effects, &who.name).await?;
        self.summary(id).await
    }

    /// The kill switch of `flag` was pulled (by `who`): its active rollout, running or baking, pauses and
    /// says why. Nothing re-enables the flag later: a rollback restores the ramp only, and `resume` is
    /// refused while the flag is disabled.
    ///
    /// The flag is read again first, from the database's latest catalog: told late (another replica took
    /// the command), the flag may have been enabled again since, and then nothing pauses.
    pub async fn kill_switch_pulled(&self, env: &str, flag: &str, who: &str) -> Result<(), ControllerError> {
        self.catalog.reload().await?;
        match self.store.rollouts(true).await?.into_iter().find(|r| r.env == env && r.flag == flag) {
            Some(record) => self.pause_if_disabled(&record.id, who).await,
            None => Ok(()),
        }
    }

    /// Pauses every active rollout whose flag is disabled, as a new term of the controller starts: a kill
    /// switch pulled while no replica led (or while this process was down) is not left to the rollout's
    /// next tick, which may be an interval away.
    pub(crate) async fn pause_rollouts_of_disabled_flags(&self) -> Result<(), ControllerError> {
        self.catalog.reload().await?;
        for record in self.store.rollouts(true).await? {
            if self.live_flag(&record.env, &record.flag).is_some_and(|f| !f.enabled) {
                self.pause_if_disabled(&record.id, &Self::actor(&record)).await?;
            }
        }
        Ok(())
    }

    /// Under the rollout's lock, with its record read again: pauses it if its flag is still disabled.
    async fn pause_if_disabled(&self, id: &str, who: &str) -> Result<(), ControllerError> {
        let guard = self.lock(id).await;
        let record = self.record(id).await?;
        if self.live_flag(&record.env, &record.flag).is_some_and(|f| f.enabled) {
            return Ok(());
        }
        self.pause_for_kill_switch(guard, &record, who).await
    }

    /// Pauses a running or baking rollout whose flag is disabled; the caller holds its lock.
    pub(crate) async fn pause_for_kill_switch(
        &self,
        guard: crate::RolloutGuard,
        record: &RolloutRecord,
        who: &str,
    ) -> Result<(), ControllerError> {
        use sluice_engine::Status;
        if !matches!(record.state.status, Status::Running | Status::Baking { .. }) {
            return Ok(());
        }
        let plan = plan_of(record)?;
        let mut rollout = record.state.clone();
        let why = format!("the kill switch of `{}` is pulled ({who}): enable the flag, then resume", record.flag);
        let effects = rollout
            .pause_because(&plan, self.clock.now(), "kill_switch", &why)
            .map_err(|e| ControllerError::conflict(e.0))?;
        if !record.outbox.is_empty() {
            // A transition is still being carried out (a phase hook runs): the pause is written beside it,
            // never over it, so the hook's outcome and the percentage it guards are not lost.
            let (_, events) = sluice_engine::outbox(&record.id, rollout.history.len(), effects);
            let also = crate::transition::Saving { events: &events, ..Default::default() };
            return self.save(record, &plan, &rollout, who, &record.outbox, also).await;
        }
        self.transition(guard, record, &plan, &mut rollout, effects, who).await.map(drop)
    }

    /// A plan that runs programs is started by an admin, or by an operator when the server allows every
    /// program it runs (`--allow-exec`): a plan is code the server executes. A refusal is audited.
    async fn may_run_programs(&self, plan: &Plan, who: &Principal) -> Result<(), ControllerError> {
        if who.role == Role::Admin {
            return Ok(());
        }
        let programs = sluice_plan::programs(plan, &CapabilitiesOf(&*self.plugins));
        let denied: Vec<&String> = programs.iter().filter(|p| !self.settings.allow_exec.contains(*p)).collect();
        if denied.is_empty() {
            return Ok(());
        }
        let names = denied.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ");
        let detail =
            json!({"command": "start", "plan": plan.name.value, "programs": denied, "role": who.role.as_str()});
        self.record_refusal(
            &who.name,
            "rollout.refused",
            &format!("plan:{}", plan.name.value),
            detail,
            Some(format!("runs {names}")),
        )
        .await?;
        Err(ControllerError::Forbidden(format!(
            "this plan runs {names}, which the server does not allow operators to run: an admin may start it, or the server may allow them (sluice serve --allow-exec PROGRAM)"
        )))
    }

    /// An approval item marked `role: admin` is signed by an admin only; a refusal is audited.
    async fn may_sign(
        &self,
        id: &str,
        plan: &Plan,
        rollout: &Rollout,
        item: &str,
        who: &Principal,
    ) -> Result<(), ControllerError> {
        let needed = plan
            .phases
            .get(rollout.phase)
            .and_then(|p| p.value.approvals.iter().find(|a| a.value.item == item))
            .map(|a| a.value.role);
        if needed == Some(ApprovalRole::Admin) && who.role != Role::Admin {
            let detail = json!({"command": "approve", "item": item, "role": who.role.as_str()});
            let reason = Some(format!("`{item}` is signed by an admin"));
            self.record_refusal(&who.name, "rollout.refused", &format!("rollout:{id}"), detail, reason).await?;
            return Err(ControllerError::Forbidden(format!(
                "`{item}` is signed by an admin; this token is `{}`",
                who.role.as_str()
            )));
        }
        Ok(())
    }
}
