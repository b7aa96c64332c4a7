//! `sluice`: the server (`sluice serve`) and the CLI that drives it (`flag`, `segment`, `token`, `audit`,
//! `import`). Every CLI command talks to a running server over HTTP, so that its actor is the token's
//! principal and every change is audited by the server.

mod client;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{json, Value};
use sluice_store::{Role, Store};

use client::{enc, CliError, Client};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Progressive delivery in one binary: serve flags, ramp them, roll back on SLOs"
)]
struct Cli {
    /// The Sluice server the CLI talks to.
    #[arg(long, global = true, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:4242")]
    server: String,
    /// API token (`sluice serve` prints the admin token on first start).
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: OFREP, the Unleash client API, the admin API, on an embedded SQLite file.
    Serve(ServeArgs),
    /// Manage flags.
    #[command(subcommand)]
    Flag(FlagCmd),
    /// Manage segments (named, reusable constraint lists).
    #[command(subcommand)]
    Segment(SegmentCmd),
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Read and check the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Import flags, all or nothing.
    #[command(subcommand)]
    Import(ImportCmd),
    /// Rollout plans.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Run and steer rollouts.
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// Run a plan in virtual time against a recorded timeline and print every decision.
    Simulate {
        /// The plan.
        plan: PathBuf,
        /// CSV of `at,name,value`: check values over time, and `approve:ITEM`, `signal:NAME`, `decide`,
        /// `promote`, `abort` rows for what people and alerts did.
        #[arg(long)]
        metrics: PathBuf,
        /// Print every check at every tick, not only when its outcome changes.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Subcommand)]
enum RolloutCmd {
    /// Check a plan against the server's flags and start it.
    Start { plan: PathBuf },
    /// Every rollout.
    List,
    /// One rollout: phase, percentage, hold, approvals, history.
    Status { id: String },
    /// Follow a rollout until it ends (Ctrl-C to stop watching).
    Watch {
        id: String,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2)]
        every: u64,
    },
    /// Every tick's decisions: each gate and trigger with value, threshold, outcome.
    Decisions {
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Pause (triggers stay armed).
    Pause {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused rollout.
    Resume {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Skip the rest of the current hold (gates and approvals still apply).
    Promote {
        id: String,
        #[arg(long, required = true)]
        reason: String,
    },
    /// Roll back now.
    Rollback {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// End the rollout where it is.
    Abort {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Sign a go/no-go item of the current phase.
    Approve { id: String, item: String },
    /// After a restart, say what happened to an action that was running: --ran (do not run it again) or
    /// --retry (run it now). The rest of the rollout's pending effects then go on.
    Settle {
        id: String,
        #[arg(long, conflicts_with = "retry", required_unless_present = "retry")]
        ran: bool,
        #[arg(long)]
        retry: bool,
    },
    /// Fire a trigger by hand: --hard rolls back now, --soft pauses and asks.
    Signal {
        id: String,
        name: String,
        #[arg(long, conflicts_with = "soft", required_unless_present = "soft")]
        hard: bool,
        #[arg(long)]
        soft: bool,
        /// Why (required): it goes to the audit log and the notifications.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum PlanCmd {
    /// Check plans: every problem with file, line, column and key. Exit 1 when one cannot start.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Check flags, variants and segments against this flag file (YAML or JSON) instead of the server.
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Do not check flags, variants and segments at all.
        #[arg(long, conflicts_with = "catalog")]
        offline: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:4242")]
    listen: SocketAddr,
    /// Folder of the SQLite database, created on first start.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "sluice-data")]
    data_dir: PathBuf,
    /// Serve OFREP and the Unleash client API without a token (local use only).
    #[arg(long)]
    anonymous_evaluation: bool,
    /// Most evaluation requests per second per token; beyond it, 429 with Retry-After.
    #[arg(long)]
    rate_limit: Option<u32>,
}

#[derive(Args)]
struct Reason {
    /// Why: recorded in the audit log.
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Subcommand)]
enum FlagCmd {
    /// List flags.
    List,
    /// Show one flag.
    Get { key: String },
    /// Create a flag. `--variants off,on` is a boolean flag; other names are string modes (off,warn,enforce).
    Create {
        key: String,
        /// Variant names; the first is served when the flag is off.
        #[arg(long, value_delimiter = ',', default_value = "off,on")]
        variants: Vec<String>,
        /// The variant outside the ramp (default: the first).
        #[arg(long)]
        base: Option<String>,
        /// The variant inside the ramp (default: the second).
        #[arg(long)]
        ramped: Option<String>,
        /// Context field that picks the bucket: default, userId, sessionId, random, or a property.
        #[arg(long, default_value = "default")]
        stickiness: String,
        /// Limit the ramp to these segments.
        #[arg(long, value_delimiter = ',')]
        segments: Vec<String>,
        /// Starting percentage.
        #[arg(long, default_value_t = 0)]
        percent: u8,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        why: Reason,
    },
    /// Change a flag's ramp: percentage, base / ramped variant, stickiness, segments.
    Set {
        key: String,
        #[arg(long)]
        percent: Option<u8>,
        #[arg(long)]
        base: Option<String>,
        #[arg(long)]
        ramped: Option<String>,
        #[arg(long)]
        stickiness: Option<String>,
        /// Replace the ramp's segments (empty string: none).
        #[arg(long, value_delimiter = ',')]
        segments: Option<Vec<String>>,
        #[command(flatten)]
        why: Reason,
    },
    /// Turn the kill switch off: the flag serves its variants again.
    Enable {
        key: String,
        #[command(flatten)]
        why: Reason,
    },
    /// Kill switch: everyone gets the off variant.
    Disable {
        key: String,
        #[command(flatten)]
        why: Reason,
    },
    /// Pin one user, session or property value: --enable, --disable or --variant; or --list, --clear-all, --remove.
    Override(OverrideArgs),
    /// Delete a flag.
    Delete {
        key: String,
        #[command(flatten)]
        why: Reason,
    },
}

#[derive(Args)]
struct OverrideArgs {
    key: String,
    #[arg(long, group = "who")]
    user: Option<String>,
    #[arg(long, group = "who")]
    session: Option<String>,
    /// Another context field, with --value.
    #[arg(long, group = "who", requires = "value")]
    field: Option<String>,
    #[arg(long)]
    value: Option<String>,
    #[arg(long, group = "what")]
    enable: bool,
    #[arg(long, group = "what")]
    disable: bool,
    /// Pin this variant.
    #[arg(long, group = "what")]
    variant: Option<String>,
    /// Remove the override of --user / --session / --field.
    #[arg(long, group = "what", conflicts_with = "expires")]
    remove: bool,
    /// List the flag's overrides.
    #[arg(long, group = "what", conflicts_with_all = ["user", "session", "field", "expires"])]
    list: bool,
    /// Remove every override of the flag.
    #[arg(long, group = "what", conflicts_with_all = ["user", "session", "field", "expires"])]
    clear_all: bool,
    /// Expire after this long: 30m, 2h, 7d.
    #[arg(long)]
    expires: Option<String>,
    #[command(flatten)]
    why: Reason,
}

#[derive(Subcommand)]
enum SegmentCmd {
    /// List segments.
    List,
    /// Create or replace a segment. Each --constraint is `FIELD [NOT] OPERATOR VALUE[,VALUE…]`,
    /// e.g. `email STR_ENDS_WITH @example.com`.
    Set {
        name: String,
        #[arg(long = "constraint", required = true)]
        constraints: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        why: Reason,
    },
    /// Delete a segment no flag uses.
    Delete {
        name: String,
        #[command(flatten)]
        why: Reason,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token; its text is printed once.
    Create {
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// List audit events, newest first.
    List {
        #[arg(long)]
        actor: Option<String>,
        /// e.g. flag:awf_bundle
        #[arg(long)]
        entity: Option<String>,
        /// Action prefix, e.g. `flag.` or `token.create`.
        #[arg(long)]
        action: Option<String>,
        /// RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Fetch the whole chain and recompute every hash here, naming the first broken record.
    Verify {
        /// A head hash anchored earlier: catches a consistent rewrite of the tail.
        #[arg(long)]
        head: Option<String>,
        /// Events fetched per request.
        #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        page_size: u32,
    },
    /// Print the head hash, to anchor elsewhere.
    Head,
}

#[derive(Subcommand)]
enum ImportCmd {
    /// An Unleash client-API export (`/api/client/features` JSON).
    Unleash {
        file: PathBuf,
        #[command(flatten)]
        why: Reason,
    },
    /// A Sluice flag file (YAML or JSON): `segments:` and `flags:`.
    Flags {
        file: PathBuf,
        #[command(flatten)]
        why: Reason,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        command => {
            let client = Client::new(&cli.server, cli.token.clone());
            run(&client, cli.output, command).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cli.output == Output::Json => {
            // A script asked for JSON: the error is JSON too (on stderr, with the failing exit status).
            eprintln!("{}", json!({"error": e.to_string()}));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let db = args.data_dir.join("sluice.db");
    let store = sluice_store::SqliteStore::open(&db)
        .await
        .map_err(|e| CliError(format!("cannot open the database {}: {e}", db.display())))?;
    let io = |e: sluice_store::StoreError| CliError(e.to_string());
    match std::env::var("SLUICE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
        Some(text) => {
            store.ensure_token("sluice-serve", "admin", Role::Admin, &text).await.map_err(io)?;
        }
        None => {
            let has_admin =
                store.tokens().await.map_err(io)?.iter().any(|t| t.role == Role::Admin && t.revoked_at.is_none());
            if !has_admin {
                let (_, token) = store.create_token("sluice-serve", "admin", Role::Admin).await.map_err(io)?;
                println!("admin token (shown once; keep it): {token}");
                println!("  export SLUICE_TOKEN={token}");
            }
        }
    }
    let options = sluice_server::Options {
        anonymous_evaluation: args.anonymous_evaluation,
        evaluation_rate_limit: args.rate_limit,
    };
    let state = sluice_server::AppState::load(std::sync::Arc::new(store), options).await.map_err(io)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr().map_err(|e| CliError(e.to_string()))?;
    println!("sluice listening on http://{addr} (data: {})", args.data_dir.display());
    tokio::spawn(state.controller().clone().run());
    tokio::spawn(sluice_server::announce_expiries(state.clone()));
    axum::serve(listener, sluice_server::router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| CliError(format!("server error: {e}")))
}

fn reason_query(why: &Reason) -> String {
    why.reason.as_ref().map(|r| format!("?reason={}", enc(r))).unwrap_or_default()
}

/// A field as text for a table cell: strings as they are, other values as JSON, missing as empty.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Prints a list answer: the JSON as it is, or a table with one row per item.
fn print_list(output: Output, data: &Value, header: &[&str], row: impl Fn(&Value) -> Vec<String>) {
    match output {
        Output::Json => print_json(data),
        Output::Table => table::print(header, &data.as_array().into_iter().flatten().map(row).collect::<Vec<_>>()),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

/// Prints what a write answered: the audit event(s) it recorded.
fn print_written(output: Output, answer: &Value, what: &str) {
    if output == Output::Json {
        return print_json(answer);
    }
    println!("{what}");
    for e in answer["audit"].as_array().into_iter().flatten() {
        println!(
            "  audit #{} {} {} by {}",
            e["seq"],
            e["action"].as_str().unwrap_or(""),
            e["entity"].as_str().unwrap_or(""),
            e["actor"].as_str().unwrap_or("")
        );
    }
}

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
    table::print(&["FLAG", "STATE", "RAMP", "STICKINESS", "SEGMENTS", "OVERRIDES"], &rows);
}

async fn run(client: &Client, output: Output, command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve(_) => unreachable!("handled in main"),
        Command::Flag(cmd) => flag(client, output, cmd).await,
        Command::Segment(cmd) => segment(client, output, cmd).await,
        Command::Token(cmd) => token(client, output, cmd).await,
        Command::Audit(cmd) => audit(client, output, cmd).await,
        Command::Import(cmd) => import(client, output, cmd).await,
        Command::Plan(PlanCmd::Check { files, catalog, offline }) => {
            plan_check(client, output, files, catalog, offline).await
        }
        Command::Simulate { plan, metrics, verbose } => simulate(output, plan, metrics, verbose),
        Command::Rollout(cmd) => rollout(client, output, cmd).await,
    }
}

async fn flag(client: &Client, output: Output, cmd: FlagCmd) -> Result<(), CliError> {
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
                    table::print(&["VARIANT", "VALUE"], &variants);
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
                .create(&format!("/api/v1/flags/{}{}", enc(&key), reason_query(&why)), &body)
                .await
                .map_err(|e| match e.0.contains("exists") {
                    true => CliError(format!("{}: change it with `sluice flag set {key} …`", e.0)),
                    false => e,
                })?;
            print_written(output, &answer, &format!("created flag {key}"));
        }
        FlagCmd::Set { key, percent, base, ramped, stickiness, segments, why } => {
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
            let answer = client
                .call(Method::POST, &format!("/api/v1/flags/{}/ramp{}", enc(&key), reason_query(&why)), Some(&body))
                .await?;
            print_written(output, &answer, &format!("{key}: {}", ramp_summary(&answer["data"])));
        }
        FlagCmd::Enable { key, why } => {
            let answer = client
                .call(Method::POST, &format!("/api/v1/flags/{}/enable{}", enc(&key), reason_query(&why)), None)
                .await?;
            print_written(output, &answer, &format!("{key} enabled"));
        }
        FlagCmd::Disable { key, why } => {
            let answer = client
                .call(Method::POST, &format!("/api/v1/flags/{}/disable{}", enc(&key), reason_query(&why)), None)
                .await?;
            print_written(output, &answer, &format!("{key} disabled: everyone gets the off variant"));
        }
        FlagCmd::Override(args) => override_cmd(client, output, args).await?,
        FlagCmd::Delete { key, why } => {
            let answer = client
                .call(Method::DELETE, &format!("/api/v1/flags/{}{}", enc(&key), reason_query(&why)), None)
                .await?;
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
    table::print(&["FIELD", "VALUE", "ACTION", "EXPIRES"], &rows);
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
        let q = a.why.reason.as_ref().map(|r| format!("?reason={}", enc(r))).unwrap_or_default();
        let answer = client.call(Method::DELETE, &format!("{path}{q}"), None).await?;
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
    let answer = client.call(Method::POST, &format!("{path}{}", reason_query(&a.why)), Some(&body)).await?;
    print_written(output, &answer, &format!("{}: override {field} = {value} set", a.key));
    Ok(())
}

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

async fn segment(client: &Client, output: Output, cmd: SegmentCmd) -> Result<(), CliError> {
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
                    table::print(&["ID", "SEGMENT", "CONSTRAINTS"], &rows);
                }
            }
        }
        SegmentCmd::Set { name, constraints, description, why } => {
            let constraints = constraints.iter().map(|c| parse_constraint(c)).collect::<Result<Vec<_>, _>>()?;
            let body = json!({"description": description, "constraints": constraints});
            let answer = client
                .call(Method::PUT, &format!("/api/v1/segments/{}{}", enc(&name), reason_query(&why)), Some(&body))
                .await?;
            print_written(output, &answer, &format!("segment {name} saved"));
        }
        SegmentCmd::Delete { name, why } => {
            let answer = client
                .call(Method::DELETE, &format!("/api/v1/segments/{}{}", enc(&name), reason_query(&why)), None)
                .await?;
            print_written(output, &answer, &format!("deleted segment {name}"));
        }
    }
    Ok(())
}

async fn token(client: &Client, output: Output, cmd: TokenCmd) -> Result<(), CliError> {
    match cmd {
        TokenCmd::Create { name, role } => {
            let answer = client
                .call(Method::POST, "/api/v1/tokens", Some(&json!({"name": name, "role": role.as_str()})))
                .await?;
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
            print_list(output, &answer["data"], &["TOKEN", "ROLE", "CREATED", "BY", "REVOKED"], |t| {
                let revoked = if t["revoked_at"].is_null() { "-".to_string() } else { text(&t["revoked_at"]) };
                vec![text(&t["name"]), text(&t["role"]), text(&t["created_at"]), text(&t["created_by"]), revoked]
            });
        }
        TokenCmd::Revoke { name } => {
            let answer = client.call(Method::DELETE, &format!("/api/v1/tokens/{}", enc(&name)), None).await?;
            print_written(output, &answer, &format!("revoked token {name}"));
        }
    }
    Ok(())
}

async fn audit(client: &Client, output: Output, cmd: AuditCmd) -> Result<(), CliError> {
    match cmd {
        AuditCmd::List { actor, entity, action, since, limit } => {
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [("actor", actor), ("entity", entity), ("action", action), ("since", since)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(&v)));
                }
            }
            let answer = client.get(&format!("/api/v1/audit?{}", q.join("&"))).await?;
            print_list(output, &answer["data"], &["SEQ", "AT", "ACTOR", "ACTION", "ENTITY", "REASON"], |e| {
                ["seq", "at", "actor", "action", "entity", "reason"].iter().map(|k| text(&e[*k])).collect()
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
            // The chain is recomputed here, page by page, not trusted from the server's word.
            let mut check = sluice_store::audit::ChainCheck::new(head.as_deref());
            let verdict = loop {
                let answer =
                    client.get(&format!("/api/v1/audit/chain?after={}&limit={page_size}", check.last_seq())).await?;
                let page: Vec<sluice_store::AuditEvent> = serde_json::from_value(answer["data"].clone())
                    .map_err(|e| CliError(format!("the server sent audit events this CLI cannot read: {e}")))?;
                if let Some(broken) = page.iter().find_map(|e| check.push(e).err()) {
                    break broken;
                }
                if page.len() < page_size as usize {
                    break check.finish();
                }
            };
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

async fn import(client: &Client, output: Output, cmd: ImportCmd) -> Result<(), CliError> {
    let (file, why, path) = match &cmd {
        ImportCmd::Unleash { file, why } => (file, why, "/api/v1/import/unleash"),
        ImportCmd::Flags { file, why } => (file, why, "/api/v1/import/flags"),
    };
    let text = std::fs::read_to_string(file).map_err(|e| CliError(format!("cannot read {}: {e}", file.display())))?;
    let body: Value = if matches!(cmd, ImportCmd::Flags { .. }) && !text.trim_start().starts_with('{') {
        serde_saphyr::from_str(&text).map_err(|e| CliError(format!("{}: {e}", file.display())))?
    } else {
        serde_json::from_str(&text).map_err(|e| CliError(format!("{}: {e}", file.display())))?
    };
    let answer = client.call(Method::POST, &format!("{path}{}", reason_query(why)), Some(&body)).await?;
    let n = &answer["data"];
    print_written(
        output,
        &answer,
        &format!("imported {} flags and {} segments from {}", n["flags"], n["segments"], file.display()),
    );
    Ok(())
}

/// Reads a flag file (YAML or JSON) or the server's flags and segments into what plans are checked against.
fn catalog_of(flags: &Value, segments: &Value) -> sluice_plan::Catalog {
    let names = |v: &Value, key: &str| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|x| x[key].as_str().map(str::to_string)).collect()
    };
    sluice_plan::Catalog {
        flags: flags
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                let mut variants = names(&f["variants"], "name");
                if f.get("variants").is_none() {
                    variants = vec!["off".into(), "on".into()];
                }
                sluice_plan::CatalogFlag { key: f["key"].as_str().unwrap_or("").to_string(), variants }
            })
            .collect(),
        segments: names(segments, "name"),
    }
}

async fn plan_check(
    client: &Client,
    output: Output,
    files: Vec<PathBuf>,
    catalog: Option<PathBuf>,
    offline: bool,
) -> Result<(), CliError> {
    let catalog = match (catalog, offline) {
        (_, true) => None,
        (Some(path), _) => {
            let text =
                std::fs::read_to_string(&path).map_err(|e| CliError(format!("cannot read {}: {e}", path.display())))?;
            let file: Value =
                serde_saphyr::from_str(&text).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
            Some(catalog_of(&file["flags"], &file["segments"]))
        }
        (None, false) => {
            let flags = client.get("/api/v1/flags").await.map_err(|e| {
                CliError(format!("{e}\n  (plan check reads flags and segments from the server; use --catalog FILE or --offline without one)"))
            })?;
            let segments = client.get("/api/v1/segments").await?;
            Some(catalog_of(&flags["data"], &segments["data"]))
        }
    };
    let mut failed = 0;
    let mut report = Vec::new();
    for path in &files {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| CliError(format!("cannot read {name}: {e}")))?;
        let (problems, summary) = match sluice_plan::load(&name, &text, catalog.as_ref()) {
            Ok((plan, notes)) => {
                let gates = plan.gates.len() + plan.phases.iter().map(|p| p.value.gates.len()).sum::<usize>();
                (
                    notes,
                    Some(format!(
                        "{name}: ok — {} phases, {gates} gates, {} triggers",
                        plan.phases.len(),
                        plan.triggers.len()
                    )),
                )
            }
            Err(problems) => {
                failed += 1;
                (problems, None)
            }
        };
        if output == Output::Table {
            for p in &problems {
                println!("{p}");
            }
            if let Some(s) = &summary {
                println!("{s}");
            }
        }
        report.push(json!({
            "file": name,
            "ok": summary.is_some(),
            "problems": problems.iter().map(|p| json!({
                "level": if p.level == sluice_plan::Level::Error { "error" } else { "note" },
                "line": p.line, "column": p.column, "key": p.key, "message": p.message,
            })).collect::<Vec<_>>(),
        }));
    }
    if output == Output::Json {
        print_json(&json!(report));
    }
    if catalog.is_none() && output == Output::Table {
        println!("(flags, variants and segments were not checked: --offline)");
    }
    if failed > 0 {
        return Err(CliError(format!("{failed} of {} plan(s) cannot start", files.len())));
    }
    Ok(())
}

/// `+2d 03:04` from the start.
fn offset(ms: u64) -> String {
    let m = ms / 60_000;
    let (d, h, min) = (m / 1440, (m % 1440) / 60, m % 60);
    if d > 0 {
        format!("+{d}d {h:02}:{min:02}")
    } else {
        format!("+{h:02}:{min:02}")
    }
}

fn simulate(output: Output, plan_path: PathBuf, metrics: PathBuf, verbose: bool) -> Result<(), CliError> {
    let name = plan_path.display().to_string();
    let text = std::fs::read_to_string(&plan_path).map_err(|e| CliError(format!("cannot read {name}: {e}")))?;
    let (plan, _) = sluice_plan::load(&name, &text, None)
        .map_err(|problems| CliError(problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")))?;
    let csv =
        std::fs::read_to_string(&metrics).map_err(|e| CliError(format!("cannot read {}: {e}", metrics.display())))?;
    let mut timeline =
        sluice_engine::timeline::Timeline::parse(&csv).map_err(|e| CliError(format!("{}: {e}", metrics.display())))?;
    let started = std::time::Instant::now();
    let sim = sluice_engine::simulate(&plan, &mut timeline, sluice_engine::time_limit(&plan));
    let took = started.elapsed();
    if output == Output::Json {
        let steps: Vec<Value> = sim
            .steps
            .iter()
            .map(|s| json!({"at_ms": s.at, "decisions": s.decisions, "effects": s.effects.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>()}))
            .collect();
        print_json(
            &json!({"status": sim.rollout.status, "history": sim.rollout.history, "ticks": sim.ticks, "refused": sim.refused, "steps": steps}),
        );
        return Ok(());
    }
    let mut last: std::collections::BTreeMap<String, sluice_engine::Outcome> = Default::default();
    for step in &sim.steps {
        for d in &step.decisions {
            let key = format!("{:?}:{}", d.kind, d.check);
            let changed = last.insert(key, d.outcome) != Some(d.outcome);
            if verbose || changed {
                let value = d.value.map_or_else(|| d.note.clone().unwrap_or_default(), |v| format!("{v}"));
                let kind = if d.kind == sluice_engine::CheckKind::Gate { "gate" } else { "trigger" };
                let dry = if d.dry_run { " (dry run)" } else { "" };
                println!(
                    "{:>12}  {kind:<7} {:<28} {value:>10} {:<10} {:?} {}/{}{dry}",
                    offset(d.at),
                    d.check,
                    d.threshold,
                    d.outcome,
                    d.run,
                    d.needed
                );
            }
        }
        for e in &step.effects {
            match e {
                sluice_engine::Effect::Notify(ev) => println!(
                    "{:>12}  == {} (phase {}, {}%): {}",
                    offset(ev.at),
                    ev.kind.to_uppercase(),
                    ev.phase + 1,
                    ev.percent,
                    ev.reason
                ),
                sluice_engine::Effect::SetRamp { percent, .. } => {
                    println!("{:>12}  -> set {} to {percent}%", offset(step.at), plan.flag.value)
                }
                sluice_engine::Effect::RestoreFlag => {
                    println!("{:>12}  -> restore {} as before the rollout", offset(step.at), plan.flag.value)
                }
                sluice_engine::Effect::FlagsOff { flags } => {
                    println!("{:>12}  -> switch off {}", offset(step.at), flags.join(", "))
                }
                sluice_engine::Effect::ClearOverrides => {
                    println!("{:>12}  -> clear the overrides of {}", offset(step.at), plan.flag.value)
                }
                sluice_engine::Effect::Run { action: purpose, .. } => {
                    let Some(action) = purpose.resolve(&plan) else { continue };
                    let what = action
                        .exec
                        .as_ref()
                        .map(|a| a.value.join(" "))
                        .or_else(|| action.name.clone())
                        .unwrap_or_else(|| "webhook".into());
                    println!("{:>12}  -> run {purpose}: {what}", offset(step.at))
                }
            }
        }
    }
    for (at, why) in &sim.refused {
        println!("{:>12}  refused: {why}", offset(*at));
    }
    println!(
        "result: {:?} after {} ({} ticks, simulated in {:.1} ms)",
        sim.rollout.status,
        offset(sim.ended_at),
        sim.ticks,
        took.as_secs_f64() * 1000.0
    );
    Ok(())
}

fn print_rollout(r: &Value) {
    let status = &r["status"];
    let state = status["state"].as_str().unwrap_or("");
    let detail = status.get("reason").and_then(Value::as_str).map(|s| format!(" ({s})")).unwrap_or_default();
    println!(
        "{} {}  flag {}  {state}{detail}",
        r["id"].as_str().unwrap_or(""),
        r["plan"].as_str().unwrap_or(""),
        r["flag"].as_str().unwrap_or("")
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
        let bar: String = (0..20).map(|j| if j * 5 < fill { '█' } else { '·' }).collect();
        let mut line = format!("  {mark} phase {:<2} [{bar}] {p:>3}%", i + 1);
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
            _ => "waiting",
        };
        println!("  {state}: {}", item["what"].as_str().unwrap_or(""));
    }
}

async fn rollout(client: &Client, output: Output, cmd: RolloutCmd) -> Result<(), CliError> {
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
            let text =
                std::fs::read_to_string(&plan).map_err(|e| CliError(format!("cannot read {}: {e}", plan.display())))?;
            let body = json!({"plan": text, "file": plan.display().to_string()});
            show(&client.call(Method::POST, "/api/v1/rollouts", Some(&body)).await?);
        }
        RolloutCmd::List => {
            let answer = client.get("/api/v1/rollouts").await?;
            print_list(output, &answer["data"], &["ID", "PLAN", "FLAG", "STATE", "PHASE", "PERCENT"], |r| {
                vec![
                    text(&r["id"]),
                    text(&r["plan"]),
                    text(&r["flag"]),
                    text(&r["status"]["state"]),
                    format!("{}/{}", r["phase"], r["phases"]),
                    format!("{}%", r["percent"]),
                ]
            });
        }
        RolloutCmd::Status { id } => show(&client.get(&format!("/api/v1/rollouts/{}", enc(&id))).await?),
        RolloutCmd::Watch { id, every } => loop {
            let answer = client.get(&format!("/api/v1/rollouts/{}", enc(&id))).await?;
            let decisions = client.get(&format!("/api/v1/rollouts/{}/decisions?limit=40", enc(&id))).await?;
            print!("\x1b[2J\x1b[H");
            print_rollout(&answer["data"]);
            let mut latest: std::collections::BTreeMap<String, Value> = Default::default();
            for d in decisions["data"].as_array().into_iter().flatten() {
                latest.insert(
                    format!("{}:{}", d["kind"].as_str().unwrap_or(""), d["check"].as_str().unwrap_or("")),
                    d.clone(),
                );
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
            let state = answer["data"]["status"]["state"].as_str().unwrap_or("");
            if matches!(state, "completed" | "rolled_back" | "aborted") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(every.max(1))).await;
        },
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
        }
        RolloutCmd::Pause { id, reason } => show(&act(&id, "pause", json!({"reason": reason})).await?),
        RolloutCmd::Resume { id, reason } => show(&act(&id, "resume", json!({"reason": reason})).await?),
        RolloutCmd::Promote { id, reason } => show(&act(&id, "promote", json!({"reason": reason})).await?),
        RolloutCmd::Rollback { id, reason } => show(&act(&id, "rollback", json!({"reason": reason})).await?),
        RolloutCmd::Abort { id, reason } => show(&act(&id, "abort", json!({"reason": reason})).await?),
        RolloutCmd::Approve { id, item } => show(&act(&id, "approve", json!({"item": item})).await?),
        RolloutCmd::Settle { id, ran, retry: _ } => {
            show(&act(&id, "settle", json!({"pending": if ran { "ran" } else { "retry" }})).await?)
        }
        RolloutCmd::Signal { id, name, hard, soft: _, reason } => {
            let severity = if hard { "hard" } else { "soft" };
            show(&act(&id, "signal", json!({"name": name, "severity": severity, "reason": reason})).await?)
        }
    }
    Ok(())
}
