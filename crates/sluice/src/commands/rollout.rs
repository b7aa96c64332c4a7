//! `sluice rollout`: start a plan, follow it, and steer it (pause, promote, approve, roll back, signal …).

use reqwest::Method;
use serde_json::{json, Value};

use super::read;
use crate::cli::{Output, RolloutCmd};
use crate::client::{enc, CliError, Client};
use crate::output::{bar, offset, print_json, print_list, text};

fn print_rollout(r: &Value) {
    let status = &r["status"];
    let state = status["state"].as_str().unwrap_or("");
    let detail = status.get("reason").and_then(Value::as_str).map(|s| format!(" ({s})")).unwrap_or_default();
    println!(
        "{} {}  flag {} in {}  {state}{detail}",
        r["id"].as_str().unwrap_or(""),
        r["plan"].as_str().unwrap_or(""),
        r["flag"].as_str().unwrap_or(""),
        r["env"].as_str().unwrap_or("")
    );
    let phase = r["phase"].as_u64().unwrap_or(0) as usize;
    let percents: Vec<u64> = r["phase_percents"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    let finished = matches!(state, "completed" | "baking");
    for (i, p) in percents.iter().enumerate() {
        let (mark, fill) = match (i + 1).cmp(&phase) {
            _ if finished => ("done", *p as usize),
            std::cmp::Ordering::Less => ("done", *p as usize),
            std::cmp::Ordering::Equal => ("now ", r["percent"].as_u64().unwrap_or(0) as usize),
            std::cmp::Ordering::Greater => ("    ", 0),
        };
        let mut line = format!("  {mark} phase {:<2} [{}] {p:>3}%", i + 1, bar(fill));
        if i + 1 == phase && !finished {
            if let (Some(hold), Some(started)) = (r["hold_ms"].as_u64(), r["phase_started_ms"].as_u64()) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                line +=
                    &format!("  hold left {}", offset((started + hold).saturating_sub(now)).trim_start_matches('+'));
            }
        }
        println!("{line}");
    }
    if let Some(waiting) = r["waiting_for"].as_str() {
        println!("  waiting: {waiting}");
    }
    let blind: Vec<&str> = r["blind_triggers"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !blind.is_empty() {
        println!("  BLIND: {} — no conclusive value for a while: cannot fire until there is one", blind.join(", "));
    }
    if let Some(baselines) = r["baselines"].as_object().filter(|b| !b.is_empty()) {
        let shown: Vec<String> = baselines.iter().map(|(key, v)| format!("{} = {v}", baseline_name(key))).collect();
        println!("  baselines captured: {}", shown.join(", "));
    }
    let needed: Vec<&str> = r["approvals_needed"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !needed.is_empty() {
        let signed: Vec<&str> =
            r["approvals_signed"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let admin_only: Vec<&str> =
            r["approvals_admin_only"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let marks: Vec<String> = needed
            .iter()
            .map(|n| {
                let by = r["approvals_signed_by"][*n].as_str().map(|b| format!(" ({b})")).unwrap_or_default();
                let admin = if admin_only.contains(n) && by.is_empty() { " (admin)" } else { "" };
                format!("{} {n}{by}{admin}", if signed.contains(n) { "[x]" } else { "[ ]" })
            })
            .collect();
        println!("  approvals: {}", marks.join("  "));
    }
    for item in r["pending"].as_array().into_iter().flatten() {
        let state = match item["state"].as_str() {
            Some("under_way") => "under way",
            Some("unknown") => "outcome unknown: `sluice rollout settle` it",
            Some("failed") => "FAILED for good: `sluice rollout settle --retry` or `--failed` it",
            _ => "waiting",
        };
        let error = item["error"].as_str().map(|e| format!(" — {e}")).unwrap_or_default();
        println!("  {state}: {}{error}", item["what"].as_str().unwrap_or(""));
    }
    for n in r["undelivered"].as_array().into_iter().flatten() {
        println!(
            "  NOT DELIVERED to {} ({}, {} attempt(s)): {} — fix it, then `sluice rollout redeliver {}`",
            n["destination"].as_str().unwrap_or(""),
            n["id"].as_str().unwrap_or(""),
            n["attempts"],
            n["error"].as_str().unwrap_or(""),
            r["id"].as_str().unwrap_or("")
        );
    }
}

/// The latest decision of each check, one line each.
fn print_latest_decisions(decisions: &Value) {
    let mut latest: std::collections::BTreeMap<String, Value> = Default::default();
    for d in decisions.as_array().into_iter().flatten() {
        latest.insert(format!("{}:{}", d["kind"].as_str().unwrap_or(""), d["check"].as_str().unwrap_or("")), d.clone());
    }
    for d in latest.values() {
        println!(
            "  {:<7} {:<28} {:>10} {:<10} {} {}/{}",
            d["kind"].as_str().unwrap_or(""),
            d["check"].as_str().unwrap_or(""),
            d["value"].as_f64().map_or_else(|| d["note"].as_str().unwrap_or("").to_string(), |v| v.to_string()),
            d["threshold"].as_str().unwrap_or(""),
            d["outcome"].as_str().unwrap_or(""),
            d["run"],
            d["needed"],
        );
    }
}

pub async fn run(client: &Client, output: Output, cmd: RolloutCmd) -> Result<(), CliError> {
    let show = |answer: &Value| match output {
        Output::Json => print_json(&answer["data"]),
        Output::Table => print_rollout(&answer["data"]),
    };
    let act = |id: &str, command: &str, body: Value| {
        let path = format!("/api/v1/rollouts/{}/{command}", enc(id));
        async move { client.call(Method::POST, &path, Some(&body)).await }
    };
    match cmd {
        RolloutCmd::Start { plan } => {
            let text = read(&plan)?;
            let body = json!({"plan": text, "file": plan.display().to_string()});
            show(&client.call(Method::POST, "/api/v1/rollouts", Some(&body)).await?);
        }
        RolloutCmd::List => {
            let answer = client.get("/api/v1/rollouts").await?;
            print_list(output, &answer["data"], &["ID", "PLAN", "ENV", "FLAG", "STATE", "PHASE", "PERCENT"], |r| {
                vec![
                    text(&r["id"]),
                    text(&r["plan"]),
                    text(&r["env"]),
                    text(&r["flag"]),
                    text(&r["status"]["state"]),
                    format!("{}/{}", r["phase"], r["phases"]),
                    format!("{}%", r["percent"]),
                ]
            });
        }
        RolloutCmd::Status { id } => show(&client.get(&format!("/api/v1/rollouts/{}", enc(&id))).await?),
        RolloutCmd::Watch { id, every } => {
            // Redrawn on each of the rollout's own events on the change stream (a tick, a transition), and
            // every `every` seconds for the hold's countdown; polling only if the stream cannot be opened.
            let mut events = client.stream("/api/v1/stream").await.ok();
            loop {
                let answer = client.get(&format!("/api/v1/rollouts/{}", enc(&id))).await?;
                let decisions = client.get(&format!("/api/v1/rollouts/{}/decisions?limit=40", enc(&id))).await?;
                print!("\x1b[2J\x1b[H");
                print_rollout(&answer["data"]);
                print_latest_decisions(&decisions["data"]);
                let state = answer["data"]["status"]["state"].as_str().unwrap_or("");
                if matches!(state, "completed" | "rolled_back" | "aborted") {
                    break;
                }
                let rollout_id = answer["data"]["id"].as_str().unwrap_or_default().to_string();
                let refresh = tokio::time::sleep(std::time::Duration::from_secs(every.max(1)));
                match events.as_mut() {
                    Some(stream) => tokio::select! {
                        () = refresh => {}
                        next = stream.next_event_of(&rollout_id) => {
                            if next.is_none() {
                                events = None;
                            }
                        }
                    },
                    None => refresh.await,
                }
            }
        }
        RolloutCmd::Decisions { id, limit } => {
            let answer = client.get(&format!("/api/v1/rollouts/{}/decisions?limit={limit}", enc(&id))).await?;
            print_list(
                output,
                &answer["data"],
                &["AT_MS", "KIND", "CHECK", "VALUE", "THRESHOLD", "OUTCOME", "RUN", "ACTION"],
                |d| {
                    let value = if d["value"].is_null() { text(&d["note"]) } else { text(&d["value"]) };
                    let run = format!("{}/{}", d["run"], d["needed"]);
                    vec![
                        text(&d["at"]),
                        text(&d["kind"]),
                        text(&d["check"]),
                        value,
                        text(&d["threshold"]),
                        text(&d["outcome"]),
                        run,
                        text(&d["action"]),
                    ]
                },
            );
            if output == Output::Table {
                // What the controller did and who it told: every attempt, from the audit log.
                let entity = enc(&format!("rollout:{id}"));
                let mut done = Vec::new();
                for action in ["rollout.action", "rollout.notification"] {
                    let path = format!("/api/v1/audit?entity={entity}&action={action}&limit={limit}");
                    let answer = client.get(&path).await?;
                    done.extend(answer["data"].as_array().cloned().unwrap_or_default());
                }
                done.sort_by(|a, b| a["seq"].as_u64().cmp(&b["seq"].as_u64()));
                if !done.is_empty() {
                    println!();
                    let rows: Vec<Vec<String>> = done.iter().map(delivery_row).collect();
                    crate::output::table(&["AT", "WHAT", "OK", "ATTEMPTS", "DETAIL"], &rows);
                }
            }
        }
        RolloutCmd::Pause { id, reason } => show(&act(&id, "pause", json!({"reason": reason})).await?),
        RolloutCmd::Resume { id, reason } => show(&act(&id, "resume", json!({"reason": reason})).await?),
        RolloutCmd::Promote { id, reason } => show(&act(&id, "promote", json!({"reason": reason})).await?),
        RolloutCmd::Rollback { id, reason, to } => {
            show(&act(&id, "rollback", json!({"reason": reason, "to": to})).await?)
        }
        RolloutCmd::Abort { id, reason } => show(&act(&id, "abort", json!({"reason": reason})).await?),
        RolloutCmd::Approve { id, item } => show(&act(&id, "approve", json!({"item": item})).await?),
        RolloutCmd::Settle { id, reason, ran, retry, failed: _ } => {
            let outcome = if ran {
                "ran"
            } else if retry {
                "retry"
            } else {
                "failed"
            };
            show(&act(&id, "settle", json!({"pending": outcome, "reason": reason})).await?)
        }
        RolloutCmd::Redeliver { id, reason } => show(&act(&id, "redeliver", json!({"reason": reason})).await?),
        RolloutCmd::Signal { id, name, hard, soft: _, reason } => {
            let severity = if hard { "hard" } else { "soft" };
            show(&act(&id, "signal", json!({"name": name, "severity": severity, "reason": reason})).await?)
        }
    }
    Ok(())
}

/// One action or notification attempt, as `rollout decisions` lists it.
fn delivery_row(e: &Value) -> Vec<String> {
    let a = &e["after"];
    let what = if e["action"] == "rollout.notification" {
        format!("notify {} ({})", text(&a["destination"]), text(&a["id"]))
    } else {
        match a["name"].as_str() {
            Some(name) => format!("{} ({name})", text(&a["purpose"])),
            None => text(&a["purpose"]),
        }
    };
    let attempts = match a["attempts"].as_array() {
        Some(list) => list
            .iter()
            .map(|t| t["status"].as_u64().map_or_else(|| text(&t["error"]), |s| s.to_string()))
            .collect::<Vec<_>>()
            .join(" → "),
        None => a["attempt"].as_u64().map_or_else(|| "1".into(), |n| format!("#{n}")),
    };
    let detail = a["error"].as_str().or(a["detail"].as_str()).unwrap_or("");
    let detail: String = detail.chars().take(100).collect();
    vec![text(&e["at"]), what, text(&a["ok"]), attempts, detail]
}

/// `gate:p99@1` → `gate p99 (phase 2)`: the key the engine keeps a captured baseline under, for people.
fn baseline_name(key: &str) -> String {
    let (kind, rest) = key.split_once(':').unwrap_or(("", key));
    match rest.rsplit_once('@').and_then(|(name, phase)| Some((name, phase.parse::<usize>().ok()?))) {
        Some((name, phase)) => format!("{kind} {name} (phase {})", phase + 1),
        None => format!("{kind} {rest}"),
    }
}
