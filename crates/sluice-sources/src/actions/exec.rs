//! The `exec` action: runs a command (argv, no shell), e.g. `kubectl rollout undo deployment/x`, with the
//! plan's `env` and in its `dir` (templates allowed). The attempt's idempotency key is given to the command
//! as `SLUICE_IDEMPOTENCY_KEY`, so a script that can deduplicate may. What it printed is kept, bounded (its
//! start and its end) and redacted, in the action's record.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_plan::model::{Action, Block, EnvValue, Location, Spanned};
use sluice_plan::Report;

use crate::ActionOutcome;

/// An `exec` action's own keys.
///
/// ```yaml
/// rollback:
///   actions:
///     - { exec: [kubectl, rollout, undo, deployment/agentcore], env: { KUBECONFIG: { secret_file: kube } }, idempotent: true }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecAction {
    /// The command: argv, templates allowed.
    pub exec: Spanned<Vec<String>>,
    /// Environment variables for the program: text (templates allowed) or a secret.
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<EnvValue>>,
    /// The working directory (templates allowed); the server's own by default.
    #[serde(default)]
    pub dir: Option<Spanned<String>>,
}

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
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn hint(&self) -> &'static str {
        "exec: [program, args…]"
    }

    fn check_config(&self, action: &Action, at: Location, report: &mut Report<'_>) {
        let Some(a) = report.parse_block::<ExecAction>(&action.block, at) else { return };
        let argv = &a.exec;
        if argv.value.is_empty() || argv.value[0].trim().is_empty() {
            report.error(argv.referenced, "exec", "needs a command: [program, arg, …]");
        }
        for arg in &argv.value {
            // An action also knows the rollout's id, plan and last event (`checks` is a webhook body's).
            report.templates(argv.referenced, "exec", arg, &sluice_plan::WEBHOOK_TEMPLATES[..4]);
        }
        report.env("", &a.env);
        if let Some(d) = &a.dir {
            report.templates(d.referenced, "dir", &d.value, &[]);
        }
    }

    fn programs(&self, block: &Block) -> Vec<String> {
        block.parse::<ExecAction>(Location::UNKNOWN).ok().and_then(|a| a.exec.value.first().cloned()).into_iter().collect()
    }

    async fn run(&self, action: &Action, cx: &crate::ActionContext<'_>) -> ActionOutcome {
        let spec = match action.block.parse::<ExecAction>(Location::UNKNOWN) {
            Ok(spec) => spec,
            Err(e) => return ActionOutcome::failed(e.to_string()),
        };
        let argv = &spec.exec;
        let timeout = action.timeout.as_ref().map_or(self.timeout, |t| t.value.0);
        let (mut env, redactor) = match self.secrets.environment(&spec.env, cx.values) {
            Ok(env) => env,
            Err(e) => return ActionOutcome::failed(e),
        };
        env.push(("SLUICE_IDEMPOTENCY_KEY".into(), cx.key.into()));
        let dir = spec.dir.as_ref().map(|d| std::path::PathBuf::from(sluice_plan::render(&d.value, cx.values)));
        let outcome = run_with(&argv.value, cx.values, &env, dir.as_deref(), timeout).await;
        ActionOutcome { detail: redactor.redact(&outcome.detail), ..outcome }
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
        return ActionOutcome::done(ran.stdout.text().trim());
    }
    let said = ran.stderr.text();
    let said = if said.trim().is_empty() { ran.stdout.text() } else { said };
    ActionOutcome::failed(format!("{}: {}", ran.status, said.trim()))
}
