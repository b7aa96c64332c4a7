//! `sluice report ROLLOUT`: gathers the rollout, its decisions, its audit trail (and its flag's while it
//! ran) from the server, verifies the audit chain here, and writes the review (see [`crate::report`]).

use std::path::PathBuf;

use serde_json::Value;
use sluice_store::AuditEvent;

use crate::cli::ReportFormat;
use crate::client::{enc, CliError, Client};
use crate::report::{html, markdown, Review};

/// Audit events read per entity: a rollout's trail is far shorter.
const AUDIT_LIMIT: u32 = 10_000;

pub async fn run(client: &Client, rollout: &str, format: ReportFormat, out: Option<PathBuf>) -> Result<(), CliError> {
    let summary = client.get(&format!("/api/v1/rollouts/{}", enc(rollout))).await?["data"].take();
    let id = summary["id"].as_str().unwrap_or(rollout).to_string();
    let flag = summary["flag"].as_str().unwrap_or_default().to_string();
    let decisions = client.get(&format!("/api/v1/rollouts/{}/decisions?limit=10000", enc(&id))).await?["data"].take();
    let decisions: Vec<sluice_store::Decided> = serde_json::from_value(decisions)
        .map_err(|e| CliError(format!("the server's decisions of {id} do not read as decisions: {e}")))?;
    let history: Vec<&Value> = summary["history"].as_array().into_iter().flatten().collect();
    let start = history.first().and_then(|e| e["at"].as_i64()).unwrap_or(0);
    let terminal = matches!(summary["status"]["state"].as_str(), Some("completed" | "rolled_back" | "aborted"));
    let end = if terminal { history.last().and_then(|e| e["at"].as_i64()) } else { None };

    let mut audit = events(client, &format!("entity={}", enc(&format!("rollout:{id}")))).await?;
    // The flag's own trail while the rollout ran: its ramps, and any edit by a person beside them.
    let since = chrono::DateTime::from_timestamp_millis(start).unwrap_or_default();
    let flag_events = events(
        client,
        &format!(
            "entity={}&since={}",
            enc(&format!("flag:{flag}")),
            enc(&since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        ),
    )
    .await?;
    let flag_count = flag_events.len();
    // An ended rollout's flag events after its end (plus the minute its last effects take) are not its own.
    audit.extend(flag_events.into_iter().filter(|e| end.is_none_or(|end| e.at.timestamp_millis() <= end + 60_000)));
    audit.sort_by_key(|e| e.seq);
    audit.dedup_by_key(|e| e.seq);

    let mut notes = Vec::new();
    if flag_count == AUDIT_LIMIT as usize {
        notes.push(format!(
            "the flag `{flag}` has more than {AUDIT_LIMIT} audit events since the rollout started: only the newest are read, so some of its ramps during the rollout may be missing"
        ));
    }
    // The excerpt is checked against the chain the CLI verified: each event must be in it, hash for hash.
    let wanted = audit.iter().map(|e| e.seq).collect();
    let chain = match super::audit::verify(client, None, 1_000, &wanted).await {
        Ok((verdict, hashes)) => {
            let strays: Vec<i64> =
                audit.iter().filter(|e| hashes.get(&e.seq) != Some(&e.hash)).map(|e| e.seq).collect();
            if !strays.is_empty() {
                notes.push(format!("audit events {strays:?} of this excerpt do not match the verified chain"));
            }
            Some(verdict)
        }
        Err(e) => {
            notes.push(format!("the audit chain could not be verified for this review: {e}"));
            None
        }
    };
    for note in &notes {
        eprintln!("note: {note}");
    }
    let review = Review { rollout: summary, decisions, audit, chain, notes, written_at: chrono::Utc::now() };
    let text = match format {
        ReportFormat::Md => markdown(&review),
        ReportFormat::Html => html(&review),
    }
    .map_err(|e| CliError(format!("rendering the review: {e:#} (a bug in Sluice's templates: please report it)")))?;
    match out {
        Some(path) => {
            std::fs::write(&path, text).map_err(|e| CliError(format!("cannot write {}: {e}", path.display())))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Audit events matching `query`, oldest first.
async fn events(client: &Client, query: &str) -> Result<Vec<AuditEvent>, CliError> {
    let answer = client.get(&format!("/api/v1/audit?{query}&limit={AUDIT_LIMIT}")).await?;
    let mut events: Vec<AuditEvent> = serde_json::from_value(answer["data"].clone())
        .map_err(|e| CliError(format!("the server sent audit events this CLI cannot read: {e}")))?;
    events.reverse();
    Ok(events)
}
