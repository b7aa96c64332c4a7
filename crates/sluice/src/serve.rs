//! `sluice serve`: opens the database, makes sure an admin token exists, installs the log subscriber and
//! runs the HTTP server, the rollout controller and the override-expiry announcer until Ctrl-C.

use std::io::IsTerminal;

use sluice_store::{Role, Store};
use tracing_subscriber::EnvFilter;

use crate::cli::{LogFormat, Output, ServeArgs, StoreCmd};
use crate::client::CliError;

/// A database URL for logs and messages: its password is not shown.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{}{user}{hidden}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Opens the store `--database` names (or the SQLite file in `--data-dir`).
async fn open_store(args: &ServeArgs) -> Result<(std::sync::Arc<dyn Store>, String), CliError> {
    let database = match &args.database {
        Some(url) => url.clone(),
        None => format!("sqlite:{}", args.data_dir.join("sluice.db").display()),
    };
    let shown = redacted(&database);
    let store = sluice_store::open(&database).await.map_err(|e| {
        let hint = match sluice_store::sqlite_file(&database) {
            None => " (is PostgreSQL running, and does the database exist?)",
            Some(_) => "",
        };
        CliError(format!("cannot open the database {shown}: {e}{hint}"))
    })?;
    Ok((store, shown))
}

pub async fn serve(args: ServeArgs) -> Result<(), CliError> {
    init_logging(args.log_format)?;
    let (store, shown) = open_store(&args).await?;
    tracing::info!(database = %shown, "database open");
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
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr().map_err(|e| CliError(e.to_string()))?;
    let options = sluice_server::Options {
        anonymous_evaluation: args.anonymous_evaluation,
        evaluation_rate_limit: args.rate_limit,
        controller: sluice_server::Settings {
            keep_every_decision_for: args.keep_decisions.0,
            allow_exec: args.allow_exec.iter().cloned().collect(),
            delivery_attempts: args.delivery_attempts,
            delivery_give_up: args.delivery_give_up.0,
        },
        secure_cookies: args.public_url.as_deref().is_some_and(|u| u.starts_with("https://")),
        replication: Some(sluice_server::replica::Replication {
            name: args.replica_name.clone().unwrap_or_else(|| default_replica_name(addr)),
            address: args.advertise_url.clone().unwrap_or_else(|| format!("http://{addr}")),
            lease: args.lease,
        }),
    };
    let plugins = sluice_sources::Registry::new(&sluice_sources::Config {
        secrets_dir: args.secrets_dir.clone(),
        public_url: args.public_url.clone(),
        retry_backoff: Some(args.retry_backoff),
        ..sluice_sources::Config::default()
    });
    let seams = sluice_server::Seams { plugins: std::sync::Arc::new(plugins), ..sluice_server::Seams::default() };
    let state = sluice_server::AppState::load_with(store, options, seams).await.map_err(io)?;
    println!("dashboard: http://{addr}/ (log in with a viewer, operator or admin token)");
    println!("sluice listening on http://{addr} (database: {shown})");
    let leading = tokio::spawn(sluice_server::replica::lead(state.clone()));
    tokio::spawn(sluice_server::replica::follow(state.clone()));
    tokio::spawn(sluice_server::replica::share_metrics(state.clone()));
    tokio::spawn(sluice_server::announce_expiries(state.clone()));
    let last = state.clone();
    axum::serve(listener, sluice_server::router(state))
        .with_graceful_shutdown(async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => tracing::info!("Ctrl-C: finishing the requests under way, then stopping"),
                Err(e) => tracing::error!(error = %e, "cannot listen for Ctrl-C; stopping"),
            }
        })
        .await
        .map_err(|e| CliError(format!("server error: {e}")))?;
    // No more bids from here on: a bid after the release would take the lease back on the way out.
    leading.abort();
    let _ = leading.await;
    sluice_server::replica::release(&last).await;
    last.save_metrics().await.map_err(|e| CliError(format!("saving the built-in metrics at shutdown: {e}")))
}

/// The host's name and the port: unique among replicas on one network.
fn default_replica_name(listen: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "sluice".into());
    format!("{host}:{}", listen.port())
}

/// `sluice store …`: work on stores directly.
pub async fn store(output: Output, cmd: StoreCmd) -> Result<(), CliError> {
    match cmd {
        StoreCmd::Copy { from, to } => {
            let open = |what: &'static str, url: String| async move {
                sluice_store::open(&url)
                    .await
                    .map_err(|e| CliError(format!("cannot open the {what} store {}: {e}", redacted(&url))))
            };
            if sluice_store::sqlite_file(&from).is_some_and(|file| !std::path::Path::new(file).is_file()) {
                return Err(CliError(format!(
                    "{from}: no such SQLite file (give the file itself, e.g. sqlite:sluice-data/sluice.db)"
                )));
            }
            let (source, destination) = (open("source", from.clone()).await?, open("destination", to.clone()).await?);
            let copied = sluice_store::copy(&*source, &*destination)
                .await
                .map_err(|e| CliError(format!("copying {} to {}: {e}", redacted(&from), redacted(&to))))?;
            match output {
                Output::Json => crate::output::print_json(&serde_json::to_value(&copied).expect("json")),
                Output::Table => println!(
                    "copied {} flags, {} segments, {} tokens, {} rollouts, {} decisions, {} notifications and {} audit events; \
                     the chain verifies in the destination (head {})",
                    copied.flags,
                    copied.segments,
                    copied.tokens,
                    copied.rollouts,
                    copied.decisions,
                    copied.notifications,
                    copied.audit_events,
                    copied.head
                ),
            }
            Ok(())
        }
    }
}

/// Sends `tracing` events to stderr, as text or one JSON object a line. Which: `SLUICE_LOG`, else
/// `RUST_LOG` (an `EnvFilter`: `debug`, `sluice::http=warn,info`), else `info`.
fn init_logging(format: LogFormat) -> Result<(), CliError> {
    let (var, spec) = ["SLUICE_LOG", "RUST_LOG"]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|s| !s.trim().is_empty()).map(|s| (var, s)))
        .unwrap_or(("the default", "info".to_string()));
    let filter = EnvFilter::try_new(&spec).map_err(|e| {
        CliError(format!("{var} `{spec}` is not a log filter: {e} (e.g. `info`, `debug` or `sluice::http=warn,info`)"))
    })?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
    installed.map_err(|e| CliError(format!("cannot install the logger: {e}")))
}
