//! `sluice flag`: list, show, create, ramp, switch, override and delete flags.

use reqwest::Method;
use serde_json::{json, Value};

use super::{change, reason_query};
use crate::cli::{FlagCmd, Output, OverrideArgs};
use crate::client::{enc, CliError, Client};
use crate::output::{print_json, print_written, table};

fn ramp_summary(f: &Value) -> String {
    let r = &f["ramp"];
    format!("{}% {} → {}", r["percent"], r["base"].as_str().unwrap_or(""), r["ramped"].as_str().unwrap_or(""))
}

fn print_flags(flags: &[Value]) {
    let rows: Vec<Vec<String>> = flags
        .iter()
        .map(|f| {
            vec![
                f["key"].as_str().unwrap_or("").to_string(),
                if f["enabled"] == json!(false) { "DISABLED".into() } else { "enabled".into() },
                ramp_summary(f),
                f["ramp"]["stickiness"].as_str().unwrap_or("").to_string(),
                f["ramp"]["segments"]
                    .as_array()
                    .map(|s| s.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                f["overrides"].as_array().map_or(0, Vec::len).to_string(),
            ]
        })
        .collect();
    table(&["FLAG", "STATE", "RAMP", "STICKINESS", "SEGMENTS", "OVERRIDES"], &rows);
}

pub async fn run(client: &Client, output: Output, cmd: FlagCmd) -> Result<(), CliError> {
    match cmd {
        FlagCmd::List => {
            let answer = client.get("/api/v1/flags").await?;
            match output {
                Output::Json => print_json(&answer["data"]),
                Output::Table => print_flags(answer["data"].as_array().map(Vec::as_slice).unwrap_or(&[])),
            }
        }
        FlagCmd::Get { key } => {
            let answer = client.get(&format!("/api/v1/flags/{}", enc(&key))).await?;
            let f = &answer["data"];
            match output {
                Output::Json => print_json(f),
                Output::Table => {
                    print_flags(std::slice::from_ref(f));
                    let variants: Vec<Vec<String>> = f["variants"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|v| vec![v["name"].as_str().unwrap_or("").into(), v["value"].to_string()])
                        .collect();
                    println!();
                    table(&["VARIANT", "VALUE"], &variants);
                    print_overrides(&f["overrides"]);
                }
            }
        }
        FlagCmd::Create { key, variants, base, ramped, stickiness, segments, percent, description, why } => {
            if variants.len() < 2 {
                return Err(CliError("--variants needs at least two names, e.g. off,on or off,warn,enforce".into()));
            }
            let boolean = variants == ["off", "on"];
            let defs: Vec<Value> = variants
                .iter()
                .map(|n| json!({"name": n, "value": if boolean { json!(n == "on") } else { json!(n) }}))
                .collect();
            let body = json!({
                "key": key,
                "description": description,
                "variants": defs,
                "ramp": {
                    "base": base.unwrap_or_else(|| variants[0].clone()),
                    "ramped": ramped.unwrap_or_else(|| variants[1].clone()),
                    "percent": percent,
                    "stickiness": stickiness,
                    "segments": segments,
                },
            });
            let answer = client
                .create(&format!("/api/v1/flags/{}{}", enc(&key), reason_query("", &why)), &body)
                .await
                .map_err(|e| match e.0.contains("exists") {
                    true => CliError(format!("{}: change it with `sluice flag set {key} …`", e.0)),
                    false => e,
                })?;
            print_written(output, &answer, &format!("created flag {key}"));
        }
        FlagCmd::Set { key, percent, base, ramped, stickiness, segments, force, why } => {
            let mut body = json!({});
            if let Some(p) = percent {
                body["percent"] = json!(p);
            }
            if let Some(v) = base {
                body["base"] = json!(v);
            }
            if let Some(v) = ramped {
                body["ramped"] = json!(v);
            }
            if let Some(v) = stickiness {
                body["stickiness"] = json!(v);
            }
            if let Some(v) = segments {
                body["segments"] = json!(v.into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>());
            }
            if body.as_object().is_some_and(|o| o.is_empty()) {
                return Err(CliError(
                    "nothing to set: give --percent, --base, --ramped, --stickiness or --segments".into(),
                ));
            }
            let path = format!("/api/v1/flags/{}/ramp{}", enc(&key), if force { "?force=true" } else { "" });
            let answer = change(client, Method::POST, &path, &why, Some(&body)).await?;
            print_written(output, &answer, &format!("{key}: {}", ramp_summary(&answer["data"])));
        }
        FlagCmd::Enable { key, why } => {
            let answer =
                change(client, Method::POST, &format!("/api/v1/flags/{}/enable", enc(&key)), &why, None).await?;
            print_written(output, &answer, &format!("{key} enabled"));
        }
        FlagCmd::Disable { key, why } => {
            let answer =
                change(client, Method::POST, &format!("/api/v1/flags/{}/disable", enc(&key)), &why, None).await?;
            print_written(output, &answer, &format!("{key} disabled: everyone gets the off variant"));
        }
        FlagCmd::Override(args) => override_cmd(client, output, args).await?,
        FlagCmd::Delete { key, why } => {
            let answer = change(client, Method::DELETE, &format!("/api/v1/flags/{}", enc(&key)), &why, None).await?;
            print_written(output, &answer, &format!("deleted flag {key}"));
        }
    }
    Ok(())
}

fn print_overrides(list: &Value) {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let action = match &o["action"] {
                Value::String(s) => s.clone(),
                Value::Object(m) => {
                    m.get("variant").and_then(Value::as_str).map(|v| format!("variant {v}")).unwrap_or_default()
                }
                other => other.to_string(),
            };
            vec![
                o["field"].as_str().unwrap_or("").into(),
                o["value"].as_str().unwrap_or("").into(),
                action,
                o["expires_at"].as_str().unwrap_or("never").into(),
            ]
        })
        .collect();
    println!();
    table(&["FIELD", "VALUE", "ACTION", "EXPIRES"], &rows);
}

async fn override_cmd(client: &Client, output: Output, a: OverrideArgs) -> Result<(), CliError> {
    let path = format!("/api/v1/flags/{}/overrides", enc(&a.key));
    let who = match (&a.user, &a.session, &a.field) {
        (Some(u), _, _) => Some(("userId".to_string(), u.clone())),
        (_, Some(s), _) => Some(("sessionId".to_string(), s.clone())),
        (_, _, Some(f)) => Some((f.clone(), a.value.clone().unwrap_or_default())),
        _ => None,
    };
    if a.list {
        let answer = client.get(&path).await?;
        match output {
            Output::Json => print_json(&answer["data"]),
            Output::Table => print_overrides(&answer["data"]),
        }
        return Ok(());
    }
    if a.clear_all {
        let answer = change(client, Method::DELETE, &path, &a.why, None).await?;
        print_written(output, &answer, &format!("cleared every override of {}", a.key));
        return Ok(());
    }
    let Some((field, value)) = who else {
        return Err(CliError("say whose override: --user ID, --session ID, or --field NAME --value V".into()));
    };
    if a.remove {
        let mut q = format!("?field={}&value={}", enc(&field), enc(&value));
        if let Some(r) = &a.why.reason {
            q += &format!("&reason={}", enc(r));
        }
        let answer = client.call(Method::DELETE, &format!("{path}{q}"), None).await?;
        print_written(output, &answer, &format!("removed the override of {field} = {value}"));
        return Ok(());
    }
    let action = match (a.enable, a.disable, &a.variant) {
        (true, _, _) => json!("enable"),
        (_, true, _) => json!("disable"),
        (_, _, Some(v)) => json!({"variant": v}),
        _ => return Err(CliError("say what the override does: --enable, --disable or --variant NAME".into())),
    };
    let mut body = json!({"field": field, "value": value, "action": action});
    if let Some(e) = &a.expires {
        body["expires_in"] = json!(e);
    }
    let answer = change(client, Method::POST, &path, &a.why, Some(&body)).await?;
    print_written(output, &answer, &format!("{}: override {field} = {value} set", a.key));
    Ok(())
}
