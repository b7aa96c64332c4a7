//! One module per command family. Each takes the parsed subcommand, talks to the server through the
//! [`Client`](crate::client::Client) (all but `simulate`, `probe` and `export`) and prints through [`output`](crate::output).

pub mod audit;
pub mod env;
pub mod export;
pub mod flag;
pub mod import;
pub mod plan;
pub mod probe;
pub mod report;
pub mod rollout;
pub mod segment;
pub mod simulate;
pub mod status;
pub mod token;

use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use crate::cli::Reason;
use crate::client::{enc, CliError, Client};

/// `{{env}}` for a plan used here, without a server (simulate, export): the environment `--env` names, as a
/// value of the plan's own. A plan that reads `{{env}}` needs one: a guess would put another environment's
/// series into its rules.
pub(crate) fn fill_env(plan: &mut sluice_plan::Plan, text: &str, env: Option<&str>) -> Result<(), CliError> {
    let reads_env = text.split("{{").skip(1).any(|t| t.split("}}").next().is_some_and(|name| name.trim() == "env"));
    match env {
        Some(env) => {
            plan.vars.insert("env".into(), sluice_plan::model::Scalar(env.to_string()));
            Ok(())
        }
        None if reads_env => Err(CliError(format!(
            "the plan `{}` reads {{{{env}}}}: name the environment it runs in with --env (or SLUICE_ENV)",
            plan.name.value
        ))),
        None => Ok(()),
    }
}

/// `reason=…` for a write's query, after `path`'s own query if it has one; or nothing.
fn reason_query(path: &str, why: &Reason) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    why.reason.as_ref().map(|r| format!("{sep}reason={}", enc(r))).unwrap_or_default()
}

/// Sends a change with its `--reason`, which the server records in the audit log.
async fn change(
    client: &Client,
    method: Method,
    path: &str,
    why: &Reason,
    body: Option<&Value>,
) -> Result<Value, CliError> {
    client.call(method, &format!("{path}{}", reason_query(path, why)), body).await
}

/// A file the user named, or an error that names it.
fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError(format!("cannot read {}: {e}", path.display())))
}
