//! The `exec` action: runs a command (argv, no shell), e.g. `kubectl rollout undo deployment/x`. The
//! attempt's idempotency key is given to the command as `SLUICE_IDEMPOTENCY_KEY`, so a script that can
//! deduplicate may.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use sluice_plan::model::{Action, ActionKind};

use crate::ActionOutcome;

/// The `exec` action.
#[derive(Debug, Clone)]
pub struct Exec {
    timeout: Duration,
}

impl Exec {
    /// Built from the server's configuration.
    pub fn new(config: &crate::Config) -> Exec {
        Exec { timeout: config.command_timeout.unwrap_or(crate::DEFAULT_TIMEOUT) }
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
        run(&argv.value, cx.values, timeout, cx.key).await
    }
}

/// Runs `argv` with templates filled, within `timeout`.
pub async fn run(argv: &[String], values: &BTreeMap<String, String>, timeout: Duration, key: &str) -> ActionOutcome {
    let argv: Vec<String> = argv.iter().map(|a| sluice_plan::render(a, values)).collect();
    let Some((program, args)) = argv.split_first() else {
        return ActionOutcome { ok: false, detail: "empty command".into() };
    };
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .env("SLUICE_IDEMPOTENCY_KEY", key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return ActionOutcome { ok: false, detail: format!("cannot run `{program}`: {e}") },
    };
    let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let work = async {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let (mut out_limited, mut err_limited) = ((&mut out).take(64 * 1024), (&mut err).take(64 * 1024));
        let _ = tokio::join!(out_limited.read_to_end(&mut o), err_limited.read_to_end(&mut e));
        (child.wait().await, o, e)
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => ActionOutcome { ok: false, detail: format!("`{program}` took longer than {timeout:?}") },
        Ok((Err(e), _, _)) => ActionOutcome { ok: false, detail: format!("`{program}`: {e}") },
        Ok((Ok(status), o, e)) => {
            let text = String::from_utf8_lossy(if status.success() { &o } else { &e });
            let tail: String = text.trim().chars().rev().take(400).collect::<Vec<_>>().into_iter().rev().collect();
            ActionOutcome {
                ok: status.success(),
                detail: if status.success() { tail } else { format!("{status}: {tail}") },
            }
        }
    }
}
