//! `sluice token`: create, list and revoke API tokens.

use reqwest::Method;
use serde_json::json;

use crate::cli::{Output, TokenCmd};
use crate::client::{enc, CliError, Client};
use crate::output::{print_json, print_list, print_written, text};

pub async fn run(client: &Client, output: Output, cmd: TokenCmd) -> Result<(), CliError> {
    match cmd {
        TokenCmd::Create { name, role, envs } => {
            let mut body = json!({"name": name, "role": role.as_str()});
            match (envs.is_empty(), client.env()) {
                (false, _) => body["envs"] = json!(envs),
                (true, Some(env)) => body["envs"] = json!([env]),
                (true, None) => {}
            }
            let answer = client.call(Method::POST, "/api/v1/tokens", Some(&body)).await?;
            match output {
                Output::Json => print_json(&answer),
                Output::Table => {
                    println!("token {name} ({}) — shown once, keep it:", role.as_str());
                    println!("{}", answer["token"].as_str().unwrap_or(""));
                }
            }
        }
        TokenCmd::List => {
            let answer = client.get("/api/v1/tokens").await?;
            print_list(output, &answer["data"], &["TOKEN", "ROLE", "ENVIRONMENTS", "CREATED", "BY", "REVOKED"], |t| {
                let revoked = if t["revoked_at"].is_null() { "-".to_string() } else { text(&t["revoked_at"]) };
                let envs = t["envs"]
                    .as_array()
                    .map_or_else(|| "all".to_string(), |e| e.iter().map(text).collect::<Vec<_>>().join(","));
                vec![text(&t["name"]), text(&t["role"]), envs, text(&t["created_at"]), text(&t["created_by"]), revoked]
            });
        }
        TokenCmd::Revoke { name } => {
            let answer = client.call(Method::DELETE, &format!("/api/v1/tokens/{}", enc(&name)), None).await?;
            print_written(output, &answer, &format!("revoked token {name}"));
        }
        TokenCmd::Rotate { name, overlap } => {
            let body = json!({"overlap_secs": overlap.map_or(0, |d| d.as_secs())});
            let answer =
                client.call(Method::POST, &format!("/api/v1/tokens/{}/rotate", enc(&name)), Some(&body)).await?;
            match output {
                Output::Json => print_json(&answer),
                Output::Table => {
                    let until = answer["old_secret_valid_until"].as_str().unwrap_or("now");
                    println!("token {name} has a new secret — shown once, keep it (the old one works until {until}):");
                    println!("{}", answer["token"].as_str().unwrap_or(""));
                }
            }
        }
    }
    Ok(())
}
