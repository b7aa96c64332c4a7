//! `sluice segment`: named, reusable constraint lists.

use reqwest::Method;
use serde_json::{json, Value};

use super::change;
use crate::cli::{Output, SegmentCmd};
use crate::client::{enc, CliError, Client};
use crate::output::{print_json, print_written, table};

/// `FIELD [NOT] OPERATOR VALUE[,VALUE…]`.
fn parse_constraint(s: &str) -> Result<Value, CliError> {
    let mut words = s.split_whitespace();
    let bad = || {
        CliError(format!(
            "`{s}`: a constraint is `FIELD [NOT] OPERATOR VALUE[,VALUE…]`, e.g. `email STR_ENDS_WITH @example.com`"
        ))
    };
    let field = words.next().ok_or_else(bad)?;
    let mut op = words.next().ok_or_else(bad)?;
    let inverted = op == "NOT";
    if inverted {
        op = words.next().ok_or_else(bad)?;
    }
    let rest: Vec<&str> = words.collect();
    let values: Vec<String> =
        rest.join(" ").split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
    let single = op.starts_with("NUM_") || op.starts_with("DATE_") || op.starts_with("SEMVER_") || op == "REGEX";
    let mut c = json!({"contextName": field, "operator": op, "inverted": inverted});
    if single {
        c["value"] = json!(rest.join(" "));
    } else {
        c["values"] = json!(values);
    }
    Ok(c)
}

pub async fn run(client: &Client, output: Output, cmd: SegmentCmd) -> Result<(), CliError> {
    match cmd {
        SegmentCmd::List => {
            let answer = client.get("/api/v1/segments").await?;
            match output {
                Output::Json => print_json(&answer["data"]),
                Output::Table => {
                    let rows: Vec<Vec<String>> = answer["data"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| {
                            let cs: Vec<String> = s["constraints"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|c| {
                                    let vals = c
                                        .get("values")
                                        .filter(|v| !v.is_null())
                                        .or(c.get("value"))
                                        .cloned()
                                        .unwrap_or_default();
                                    format!(
                                        "{} {} {}",
                                        c["contextName"].as_str().unwrap_or(""),
                                        c["operator"].as_str().unwrap_or(""),
                                        vals
                                    )
                                })
                                .collect();
                            vec![s["id"].to_string(), s["name"].as_str().unwrap_or("").into(), cs.join(" AND ")]
                        })
                        .collect();
                    table(&["ID", "SEGMENT", "CONSTRAINTS"], &rows);
                }
            }
        }
        SegmentCmd::Set { name, constraints, description, why } => {
            let constraints = constraints.iter().map(|c| parse_constraint(c)).collect::<Result<Vec<_>, _>>()?;
            let body = json!({"description": description, "constraints": constraints});
            let answer =
                change(client, Method::PUT, &format!("/api/v1/segments/{}", enc(&name)), &why, Some(&body)).await?;
            print_written(output, &answer, &format!("segment {name} saved"));
        }
        SegmentCmd::Delete { name, why } => {
            let answer =
                change(client, Method::DELETE, &format!("/api/v1/segments/{}", enc(&name)), &why, None).await?;
            print_written(output, &answer, &format!("deleted segment {name}"));
        }
    }
    Ok(())
}
