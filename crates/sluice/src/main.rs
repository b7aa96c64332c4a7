//! `sluice`: progressive delivery in one binary. `sluice serve` is the server; every other command is a
//! client that talks to a running server over HTTP (`--server`/`SLUICE_SERVER`, `--token`/`SLUICE_TOKEN`),
//! so that its actor is the token's principal and the server audits every change. Tables by default,
//! `--output json` everywhere (errors too, on stderr).
//!
//! - `demo`: a server on a temporary store, a synthetic service reporting its requests, a good canary
//!   promoted to 100% and a bad one rolled back on the evidence, in about a minute.
//! - `serve`: the HTTP server (OFREP, Unleash client API, admin API, SSE) and the rollout controller, on an
//!   SQLite file (one server per file) or PostgreSQL (`--database postgres://…`, several replicas); logs to
//!   stderr (`SLUICE_LOG`, else `RUST_LOG`, else `info`; `--log-format text|json`); `--allow-exec PROGRAM`
//!   (what operators' plans may run), `--secrets-dir DIR`, `--keep-decisions 7d`; limits
//!   (`--max-connections`, `--header-read-timeout`, `--changes-per-minute` …, `--trusted-proxy`). SIGTERM
//!   or SIGINT drains within `--shutdown-timeout` and exits 0.
//! - `status`: this replica, which replica leads the controller, and whether this one is caught up.
//! - `store copy --from URL --to URL`: move an installation between stores (SQLite to PostgreSQL), without
//!   a server.
//! - `flag list`: every flag with its state, ramp, stickiness, segments and overrides.
//! - `flag get KEY`: one flag, its variants and overrides.
//! - `flag create KEY`: a new flag (`--variants`, `--base`, `--ramped`, `--percent`, `--segments` …).
//! - `flag set KEY`: change a ramp's percentage, base / ramped variant, stickiness or segments (`--force
//!   --reason …` while a rollout drives the flag).
//! - `flag enable KEY`: turn the kill switch off; the flag serves its variants again.
//! - `flag disable KEY`: kill switch: everyone gets the off variant.
//! - `flag override KEY`: pin a user, session or field value (`--enable`, `--disable`, `--variant`), or
//!   `--list`, `--remove`, `--clear-all` the flag's overrides.
//! - `flag delete KEY`: delete a flag.
//! - `segment list`: every segment and its constraints.
//! - `segment set NAME --constraint …`: create or replace a segment.
//! - `segment delete NAME`: delete a segment no flag uses.
//! - `token create NAME --role ROLE`: a new API token, printed once.
//! - `token list`: every token, never its secret.
//! - `token revoke NAME`: revoke a token.
//! - `token rotate NAME [--overlap 1h]`: a new secret, printed once; the old one works for the overlap.
//! - `audit list`: audit events, newest first (`--actor`, `--entity`, `--action`, `--since`, `--limit`).
//! - `audit verify`: fetch the whole chain and recompute every hash here (`--head` to check an anchor).
//! - `audit head`: the head hash, to anchor elsewhere.
//! - `import unleash FILE`: an Unleash client-API export, all or nothing.
//! - `import flags FILE`: a Sluice flag file (YAML or JSON), all or nothing.
//! - `plan check FILE…`: every problem of each plan, against the server's flags, a flag file (`--catalog`)
//!   or none (`--offline`), and against the plug-ins this build has.
//! - `rollout start PLAN`: check a plan against the server and start it.
//! - `rollout list`: every rollout.
//! - `rollout status ID`: one rollout's phase, percentage, hold, approvals and pending effects.
//! - `rollout watch ID`: follow a rollout and its latest decisions until it ends.
//! - `rollout decisions ID`: each tick's gates and triggers with value, threshold and outcome.
//! - `rollout pause ID` / `rollout resume ID`: pause (triggers stay armed) and resume.
//! - `rollout promote ID --reason …`: skip the rest of the current hold.
//! - `rollout rollback ID`: roll back now, to the start (`--to previous-phase`: one phase back, paused).
//! - `rollout abort ID`: end the rollout where it is.
//! - `rollout approve ID ITEM`: sign a go/no-go item of the current phase.
//! - `rollout settle ID --ran|--retry|--failed`: after a restart, say what became of an action that was running.
//! - `rollout signal ID NAME --hard|--soft --reason …`: fire a trigger by hand.
//! - `rollout redeliver ID --reason …`: send again the notifications that were given up.
//! - `simulate PLAN --metrics FILE`: run a plan in virtual time against a recorded timeline, or
//!   `--prometheus URL --from T --to T` against real history (no server).
//! - `probe record|verify|test SUITE`: golden suites of HTTP requests (no server).
//! - `export prometheus-rules|grafana PLAN`: a plan as Prometheus alerting rules or a Grafana dashboard (no
//!   server).
//! - `report ROLLOUT --format md|html`: the post-rollout review.
//!
//! Layout: [`cli`] holds the clap definitions, [`serve`] the server command, [`commands`] one module per
//! command family, [`output`] the tables and JSON printing they share, [`client`] the HTTP client.

mod cli;
mod client;
mod commands;
mod demo;
mod output;
mod report;
mod serve;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use serde_json::json;

use cli::{Cli, Command, Output};
use client::{CliError, Client};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if asks_for_json_logs() && !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            // `serve --log-format json` under a log collector: a usage error is one JSON line too.
            eprintln!(
                "{}",
                json!({"level": "ERROR", "error": e.kind().to_string(), "message": e.to_string().trim_end()})
            );
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let json_errors =
        cli.output == Output::Json || matches!(&cli.command, Command::Serve(a) if a.log_format == cli::LogFormat::Json);
    let result = match cli.command {
        Command::Serve(args) => serve::serve(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Store(cmd) => serve::store(cli.output, cmd).await,
        command => {
            let client = Client::new(&cli.server, cli.token.clone(), cli.env.clone());
            run(&client, cli.output, command).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json_errors => {
            // A script (or a log collector) asked for JSON: the error is JSON too (on stderr, with the
            // failing exit status).
            eprintln!("{}", json!({"level": "ERROR", "error": e.to_string()}));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the command line or the environment asks `serve` for JSON logs: read before clap, whose own
/// usage errors would otherwise be the one plain line a log collector sees.
fn asks_for_json_logs() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let by_flag = args.iter().enumerate().any(|(i, a)| {
        a == "--log-format=json" || (a == "--log-format" && args.get(i + 1).is_some_and(|v| v == "json"))
    });
    by_flag || std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|v| v == "json")
}

/// Runs a client command against the server.
async fn run(client: &Client, output: Output, command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve(_) | Command::Demo(_) | Command::Store(_) => unreachable!("handled in main"),
        Command::Status => commands::status::run(client, output).await,
        Command::Flag(cmd) => commands::flag::run(client, output, cmd).await,
        Command::Segment(cmd) => commands::segment::run(client, output, cmd).await,
        Command::Token(cmd) => commands::token::run(client, output, cmd).await,
        Command::Env(cmd) => commands::env::run(client, output, cmd).await,
        Command::Audit(cmd) => commands::audit::run(client, output, cmd).await,
        Command::Import(cmd) => commands::import::run(client, output, cmd).await,
        Command::Plan(cmd) => commands::plan::run(client, output, cmd).await,
        Command::Simulate { plan, metrics, prometheus, from, to, verbose } => {
            let replay = match prometheus {
                Some(url) => Some(commands::simulate::History::parse(url, from, to)?),
                None => None,
            };
            commands::simulate::run(output, plan, metrics, replay, verbose, client.env()).await
        }
        Command::Rollout(cmd) => commands::rollout::run(client, output, cmd).await,
        Command::Probe(cmd) => commands::probe::run(output, cmd).await,
        Command::Export(cmd) => commands::export::run(cmd, client.env()),
        Command::Report { rollout, format, out } => commands::report::run(client, &rollout, format, out).await,
    }
}
