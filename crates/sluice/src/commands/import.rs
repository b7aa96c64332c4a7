//! `sluice import`: an Unleash export or a Sluice flag file, all or nothing.

use reqwest::Method;
use serde_json::Value;

use super::{change, read};
use crate::cli::{ImportCmd, Output};
use crate::client::{CliError, Client};
use crate::output::print_written;

pub async fn run(client: &Client, output: Output, cmd: ImportCmd) -> Result<(), CliError> {
    let (file, why, path) = match &cmd {
        ImportCmd::Unleash { file, why } => (file, why, "/api/v1/import/unleash"),
        ImportCmd::Flags { file, why } => (file, why, "/api/v1/import/flags"),
    };
    let text = read(file)?;
    let body: Value = if matches!(cmd, ImportCmd::Flags { .. }) && !text.trim_start().starts_with('{') {
        serde_saphyr::from_str(&text).map_err(|e| CliError(format!("{}: {e}", file.display())))?
    } else {
        serde_json::from_str(&text).map_err(|e| CliError(format!("{}: {e}", file.display())))?
    };
    let answer = change(client, Method::POST, path, why, Some(&body)).await?;
    let n = &answer["data"];
    print_written(
        output,
        &answer,
        &format!("imported {} flags and {} segments from {}", n["flags"], n["segments"], file.display()),
    );
    Ok(())
}
