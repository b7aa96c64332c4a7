//! `sluice status`: the replica the CLI talks to, which replica leads the controller, and how current the
//! replica is.

use crate::cli::Output;
use crate::client::{CliError, Client};
use crate::output::{print_json, text};

pub async fn run(client: &Client, output: Output) -> Result<(), CliError> {
    let answer = client.get("/api/v1/status").await?;
    let s = &answer["data"];
    if output == Output::Json {
        print_json(s);
        return Ok(());
    }
    let leader = &s["leader"];
    let leads = if leader.is_null() {
        "nobody yet (the lease is free or changing hands)".to_string()
    } else {
        format!(
            "{} at {} (token {}, since {}, lease expires in {} ms)",
            text(&leader["replica"]),
            text(&leader["address"]),
            text(&leader["token"]),
            text(&leader["since"]),
            text(&leader["expires_in_ms"]),
        )
    };
    let current = match (s["caught_up"].as_bool(), s["database_error"].as_str()) {
        (Some(true), _) => format!("yes (last sync {} ms ago)", text(&s["last_sync_ms_ago"])),
        (_, Some(e)) => format!("no: {e}"),
        _ => "no".to_string(),
    };
    let rows = vec![
        vec!["replica".to_string(), text(&s["replica"])],
        vec!["database".to_string(), text(&s["database"])],
        vec!["leads the controller".to_string(), if s["leading"] == true { "yes" } else { "no" }.to_string()],
        vec!["leader".to_string(), leads],
        vec!["catalog revision".to_string(), text(&s["revision"])],
        vec!["caught up".to_string(), current],
        vec!["listening for changes".to_string(), text(&s["listening"])],
    ];
    for row in rows {
        println!("{:<22} {}", row[0], row[1]);
    }
    Ok(())
}
