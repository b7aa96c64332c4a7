//! The `command` source: a command's exit status, or the last number it printed, is the value
//! (migration invariants, golden suites, anything a script can measure).

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_engine::Measurement;
use sluice_plan::model::{Check, SourceKind, ValueFrom};

/// The `command` source.
#[derive(Debug, Clone)]
pub struct Command {
    timeout: Duration,
    secrets: crate::Secrets,
}

impl Command {
    /// Built from the server's configuration.
    pub fn new(config: &crate::Config) -> Command {
        Command {
            timeout: config.command_timeout.unwrap_or(crate::DEFAULT_TIMEOUT),
            secrets: crate::Secrets::new(config.secrets_dir.clone()),
        }
    }
}

#[async_trait::async_trait]
impl crate::Source for Command {
    fn kind(&self) -> SourceKind {
        SourceKind::Command
    }

    async fn measure(&self, check: &Check, cx: &crate::MeasureContext<'_>) -> Measurement {
        let (env, redactor) = match self.secrets.environment(&check.env, cx.values) {
            Ok(env) => env,
            Err(e) => return Measurement::Error(e),
        };
        match measure_with(check, cx.values, &env, self.timeout).await {
            Measurement::Error(e) => Measurement::Error(redactor.redact(&e)),
            measured => measured,
        }
    }
}

/// Runs the check's command (argv, no shell) within the check's `timeout`, or `default_timeout` when it
/// has none; a command that cannot start, times out, or prints no number is a source error, never a pass.
/// The whole output is read, however long, so the last number is the one printed last.
pub async fn measure(check: &Check, values: &BTreeMap<String, String>, default_timeout: Duration) -> Measurement {
    measure_with(check, values, &[], default_timeout).await
}

async fn measure_with(
    check: &Check,
    values: &BTreeMap<String, String>,
    env: &[(String, String)],
    default_timeout: Duration,
) -> Measurement {
    let Some(argv) = &check.command else { return Measurement::Error("no command".into()) };
    let timeout = check.timeout.as_ref().map_or(default_timeout, |t| t.value.0);
    let ran = match crate::output::run(&argv.value, values, env, None, timeout).await {
        Ok(ran) => ran,
        Err(e) => return Measurement::Error(e),
    };
    let program = &ran.program;
    match check.value_from.unwrap_or(ValueFrom::ExitStatus) {
        ValueFrom::ExitStatus => match ran.status.code() {
            Some(code) => Measurement::Value(f64::from(code)),
            None => Measurement::Error(format!("`{program}` was killed by a signal")),
        },
        ValueFrom::LastNumber => {
            if !ran.status.success() {
                return Measurement::Error(format!("`{program}` exited with {}", ran.status));
            }
            match ran.stdout.end().split_whitespace().rev().find_map(|w| w.parse::<f64>().ok()) {
                Some(v) => Measurement::Value(v),
                None if ran.stdout.omitted() > 0 => Measurement::Error(format!(
                    "`{program}` printed no number in the last {} KiB of its output",
                    crate::output::TAIL / 1024
                )),
                None => Measurement::Error(format!("`{program}` printed no number")),
            }
        }
    }
}
