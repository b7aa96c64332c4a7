//! `sluice env`: list, create, rename and delete environments.

use reqwest::Method;
use serde_json::json;

use crate::cli::{EnvCmd, Output};
use crate::client::{enc, CliError, Client};
use crate::output::{print_list, print_written, text};

use super::reason_query;

pub async fn run(client: &Client, output: Output, cmd: EnvCmd) -> Result<(), CliError> {
    match cmd {
        EnvCmd::List => {
            let answer = client.get("/api/v1/environments").await?;
            print_list(output, &answer["data"], &["ENVIRONMENT", "REVISION", "FLAGS", "ENABLED"], |e| {
                vec![text(&e["name"]), text(&e["revision"]), text(&e["flags"]), text(&e["enabled"])]
            });
        }
        EnvCmd::Create { name, why } => {
            let path = "/api/v1/environments";
            let answer = client
                .call(Method::POST, &format!("{path}{}", reason_query(path, &why)), Some(&json!({"name": name})))
                .await?;
            print_written(output, &answer, &format!("created environment {name} (every flag in it disabled at 0 %)"));
        }
        EnvCmd::Rename { from, to, why } => {
            let path = format!("/api/v1/environments/{}/rename", enc(&from));
            let answer = client
                .call(Method::POST, &format!("{path}{}", reason_query(&path, &why)), Some(&json!({"to": to})))
                .await?;
            print_written(output, &answer, &format!("renamed environment {from} to {to}"));
        }
        EnvCmd::Delete { name, why } => {
            let path = format!("/api/v1/environments/{}", enc(&name));
            let answer = client.call(Method::DELETE, &format!("{path}{}", reason_query(&path, &why)), None).await?;
            print_written(output, &answer, &format!("deleted environment {name}"));
        }
    }
    Ok(())
}
