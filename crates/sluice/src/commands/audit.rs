//! `sluice audit`: list events, print the head hash, and verify the whole chain here, not on the server's word.

use crate::cli::{AuditCmd, Output};
use crate::client::{enc, CliError, Client};
use crate::output::{print_json, print_list, text};

pub async fn run(client: &Client, output: Output, cmd: AuditCmd) -> Result<(), CliError> {
    match cmd {
        AuditCmd::List { actor, entity, action, since, limit } => {
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [("actor", actor), ("entity", entity), ("action", action), ("since", since)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(&v)));
                }
            }
            let answer = client.get(&format!("/api/v1/audit?{}", q.join("&"))).await?;
            print_list(output, &answer["data"], &["SEQ", "AT", "ACTOR", "ACTION", "ENV", "ENTITY", "REASON"], |e| {
                // An event of no environment (a token's, one written before environments) shows `-`.
                let env = if e["env"].is_null() { "-".to_string() } else { text(&e["env"]) };
                let mut row: Vec<String> = ["seq", "at", "actor", "action"].iter().map(|k| text(&e[*k])).collect();
                row.push(env);
                row.extend(["entity", "reason"].iter().map(|k| text(&e[*k])));
                row
            });
        }
        AuditCmd::Head => {
            let answer = client.get("/api/v1/audit/head").await?;
            match output {
                Output::Json => print_json(&answer),
                Output::Table => println!("{}", answer["head"].as_str().unwrap_or("")),
            }
        }
        AuditCmd::Verify { head, page_size } => {
            let (verdict, _) = verify(client, head.as_deref(), page_size, &Default::default()).await?;
            if output == Output::Json {
                print_json(&serde_json::to_value(&verdict).expect("json"));
            }
            match verdict {
                sluice_store::Verification::Intact { events, head } => {
                    if output == Output::Table {
                        println!("intact: {events} events, head {head}");
                    }
                }
                sluice_store::Verification::Broken { seq, problem } => {
                    return Err(CliError(format!("audit chain broken at record {seq}: {problem}")))
                }
                sluice_store::Verification::HeadMissing { head, .. } => {
                    return Err(CliError(format!(
                        "the anchored head {head} is not in the chain: its tail was rewritten"
                    )))
                }
            }
        }
    }
    Ok(())
}

/// The audit chain, recomputed here page by page rather than trusted from the server's word; `head` is
/// an anchored head the chain must still contain. Also returns the hashes of the events numbered in
/// `keep`, so that a caller can tell events it read elsewhere belong to the chain it verified.
pub(crate) async fn verify(
    client: &Client,
    head: Option<&str>,
    page_size: u32,
    keep: &std::collections::HashSet<i64>,
) -> Result<(sluice_store::Verification, std::collections::HashMap<i64, String>), CliError> {
    let mut check = sluice_store::audit::ChainCheck::new(head);
    let mut kept = std::collections::HashMap::new();
    loop {
        let answer = client.get(&format!("/api/v1/audit/chain?after={}&limit={page_size}", check.last_seq())).await?;
        let page: Vec<sluice_store::AuditEvent> = serde_json::from_value(answer["data"].clone())
            .map_err(|e| CliError(format!("the server sent audit events this CLI cannot read: {e}")))?;
        kept.extend(page.iter().filter(|e| keep.contains(&e.seq)).map(|e| (e.seq, e.hash.clone())));
        if let Some(broken) = page.iter().find_map(|e| check.push(e).err()) {
            return Ok((broken, kept));
        }
        if page.len() < page_size as usize {
            return Ok((check.finish(), kept));
        }
    }
}
