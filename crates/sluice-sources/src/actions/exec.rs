//! The `exec` action: runs a command (argv, no shell), e.g. `kubectl rollout undo deployment/x`, with the
//! plan's `env` and in its `dir` (templates allowed). The attempt's idempotency key is given to the command
//! as `SLUICE_IDEMPOTENCY_KEY`, so a script that can deduplicate may. What it printed is kept, bounded (its
//! start and its end) and redacted, in the action's record.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_plan::model::{Action, ActionKind};

use crate::ActionOutcome;

/// The `exec` action.
#[derive(Debug, Clone)]
pub struct Exec {
    timeout: Duration,
    secrets: crate::Secrets,
}

impl Exec {
    /// Built from the server's configuration.
    pub fn new(config: &crate::Config) -> Exec {
        Exec {
            timeout: config.command_timeout.unwrap_or(crate::DEFAULT_TIMEOUT),
            secrets: crate::Secrets::new(config.secrets_dir.clone()),
        }
    }
}

#[async_trait::async_trait]
impl crate::ActionRunner for Exec {
    fn kind(&self) -> ActionKind {
        ActionKind::Exec
    }

    async fn run(&self, action: &Action, cx: &crate::ActionContext<'_>) -> ActionOutcome {
        let Some(argv) = &action.exec else { return ActionOutcome::failed("not an exec action") };
        let timeout = action.timeout.as_ref().map_or(self.timeout, |t| t.value.0);
        let (mut env, redactor) = match self.secrets.environment(&action.env, cx.values) {
            Ok(env) => env,
            Err(e) => return ActionOutcome::failed(e),
        };
        env.push(("SLUICE_IDEMPOTENCY_KEY".into(), cx.key.into()));
        let dir = action.dir.as_ref().map(|d| std::path::PathBuf::from(sluice_plan::render(&d.value, cx.values)));
        let outcome = run_with(&argv.value, cx.values, &env, dir.as_deref(), timeout).await;
        ActionOutcome { ok: outcome.ok, detail: redactor.redact(&outcome.detail), attempts: Vec::new() }
    }
}

/// Runs `argv` with templates filled, within `timeout`, reading all it prints. The detail is what it
/// printed, bounded (its start and its end): stdout when it succeeded; when it failed, its exit status and
/// stderr (stdout when stderr is empty), since that is where the reason is.
pub async fn run(argv: &[String], values: &BTreeMap<String, String>, timeout: Duration, key: &str) -> ActionOutcome {
    run_with(argv, values, &[("SLUICE_IDEMPOTENCY_KEY".into(), key.into())], None, timeout).await
}

async fn run_with(
    argv: &[String],
    values: &BTreeMap<String, String>,
    env: &[(String, String)],
    dir: Option<&std::path::Path>,
    timeout: Duration,
) -> ActionOutcome {
    let ran = match crate::output::run(argv, values, env, dir, timeout).await {
        Ok(ran) => ran,
        Err(e) => return ActionOutcome::failed(e),
    };
    if ran.status.success() {
        return ActionOutcome { ok: true, detail: ran.stdout.text().trim().to_string(), attempts: Vec::new() };
    }
    let said = ran.stderr.text();
    let said = if said.trim().is_empty() { ran.stdout.text() } else { said };
    ActionOutcome::failed(format!("{}: {}", ran.status, said.trim()))
}
