//! The `command` source: a command's exit status, or the last number it printed, is the value
//! (migration invariants, golden suites, anything a script can measure).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use sluice_engine::Measurement;
use sluice_plan::model::{Check, SourceKind, ValueFrom};
use tokio::io::AsyncReadExt;

/// Most output read from a command; the rest is ignored.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// The `command` source.
#[derive(Debug, Clone)]
pub struct Command {
    timeout: Duration,
}

impl Command {
    /// Built from the server's configuration.
    pub fn new(config: &crate::Config) -> Command {
        Command { timeout: config.command_timeout.unwrap_or(crate::DEFAULT_TIMEOUT) }
    }
}

#[async_trait::async_trait]
impl crate::Source for Command {
    fn kind(&self) -> SourceKind {
        SourceKind::Command
    }

    async fn measure(&self, check: &Check, cx: &crate::MeasureContext<'_>) -> Measurement {
        measure(check, cx.values, self.timeout).await
    }
}

/// Runs the check's command (argv, no shell) within `timeout`; a command that cannot start, times out,
/// or prints no number is a source error, never a pass.
pub async fn measure(check: &Check, values: &BTreeMap<String, String>, timeout: Duration) -> Measurement {
    let Some(argv) = &check.command else { return Measurement::Error("no command".into()) };
    let argv: Vec<String> = argv.value.iter().map(|a| sluice_plan::render(a, values)).collect();
    let Some((program, args)) = argv.split_first() else { return Measurement::Error("empty command".into()) };
    let mut child = match tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Measurement::Error(format!("cannot run `{program}`: {e}")),
    };
    let mut stdout = child.stdout.take().expect("piped");
    let run = async {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(MAX_OUTPUT as u64).read_to_end(&mut out).await;
        let status = child.wait().await;
        (out, status)
    };
    let (out, status) = match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => return Measurement::Error(format!("`{program}` took longer than {timeout:?}")),
    };
    let status = match status {
        Ok(s) => s,
        Err(e) => return Measurement::Error(format!("`{program}`: {e}")),
    };
    match check.value_from.unwrap_or(ValueFrom::ExitStatus) {
        ValueFrom::ExitStatus => match status.code() {
            Some(code) => Measurement::Value(f64::from(code)),
            None => Measurement::Error(format!("`{program}` was killed by a signal")),
        },
        ValueFrom::LastNumber => {
            if !status.success() {
                return Measurement::Error(format!("`{program}` exited with {status}"));
            }
            let text = String::from_utf8_lossy(&out);
            match text.split_whitespace().rev().find_map(|w| w.parse::<f64>().ok()) {
                Some(v) => Measurement::Value(v),
                None => Measurement::Error(format!("`{program}` printed no number")),
            }
        }
    }
}
