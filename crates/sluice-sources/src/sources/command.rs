//! The `command` source: a command's exit status, or the last number it printed, is the value
//! (migration invariants, golden suites, anything a script can measure).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_engine::Measurement;
use sluice_plan::model::{Block, Check, EnvValue, Location, Spanned};
use sluice_plan::Report;

/// A `command` check's own keys.
///
/// ```yaml
/// gates:
///   - { name: invariants, command: [./check-invariants.sh, '{{phase}}'], value_from: last_number, below: 1 }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandCheck {
    /// argv (templates allowed).
    pub command: Spanned<Vec<String>>,
    /// `exit_status` (0 passes as value 0) or `last_number` printed.
    #[serde(default)]
    pub value_from: Option<ValueFrom>,
    /// Environment variables for the program: text (templates allowed) or a secret.
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<EnvValue>>,
}

impl CommandCheck {
    /// The check's keys as this source reads them.
    pub fn of(check: &Check) -> Result<CommandCheck, String> {
        check.block.parse(Location::UNKNOWN).map_err(|e| e.to_string())
    }
}

/// Where a command check's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFrom {
    /// The exit status.
    ExitStatus,
    /// The last number the command printed.
    LastNumber,
}

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
    fn kind(&self) -> &'static str {
        "command"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["command"]
    }

    fn hint(&self) -> &'static str {
        "command: [program, args…]"
    }

    fn check_config(&self, check: &Check, _trigger: bool, at: Location, report: &mut Report<'_>) {
        if !check.block.has("command") {
            report.error(at, "", "a command check needs `command: [program, args…]`");
            return;
        }
        let Some(c) = report.parse_block::<CommandCheck>(&check.block, at) else { return };
        let argv = &c.command;
        if argv.value.is_empty() || argv.value[0].trim().is_empty() {
            report.error(argv.referenced, "command", "needs a command: [program, arg, …]");
        }
        for arg in &argv.value {
            report.templates(argv.referenced, "command", arg, &[]);
        }
        report.env("", &c.env);
    }

    fn programs(&self, block: &Block) -> Vec<String> {
        block.parse::<CommandCheck>(Location::UNKNOWN).ok().and_then(|c| c.command.value.first().cloned()).into_iter().collect()
    }

    async fn measure(&self, check: &Check, cx: &crate::MeasureContext<'_>) -> Measurement {
        let config = match CommandCheck::of(check) {
            Ok(c) => c,
            Err(e) => return Measurement::Error(e),
        };
        let (env, redactor) = match self.secrets.environment(&config.env, cx.values) {
            Ok(env) => env,
            Err(e) => return Measurement::Error(e),
        };
        match measure_with(&config, check, cx.values, &env, self.timeout).await {
            Measurement::Error(e) => Measurement::Error(redactor.redact(&e)),
            measured => measured,
        }
    }
}

/// Runs the check's command (argv, no shell) within the check's `timeout`, or `default_timeout` when it
/// has none; a command that cannot start, times out, or prints no number is a source error, never a pass.
/// The whole output is read, however long, so the last number is the one printed last.
pub async fn measure(check: &Check, values: &BTreeMap<String, String>, default_timeout: Duration) -> Measurement {
    match CommandCheck::of(check) {
        Ok(config) => measure_with(&config, check, values, &[], default_timeout).await,
        Err(e) => Measurement::Error(e),
    }
}

async fn measure_with(
    config: &CommandCheck,
    check: &Check,
    values: &BTreeMap<String, String>,
    env: &[(String, String)],
    default_timeout: Duration,
) -> Measurement {
    let argv = &config.command;
    let timeout = check.timeout.as_ref().map_or(default_timeout, |t| t.value.0);
    let ran = match crate::output::run(&argv.value, values, env, None, timeout).await {
        Ok(ran) => ran,
        Err(e) => return Measurement::Error(e),
    };
    let program = &ran.program;
    match config.value_from.unwrap_or(ValueFrom::ExitStatus) {
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
