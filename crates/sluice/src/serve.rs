//! `sluice serve`: opens the database, makes sure an admin token exists, installs the log subscriber and
//! runs the HTTP server, the rollout controller and the override-expiry announcer until Ctrl-C.

use std::io::IsTerminal;

use sluice_store::{Bootstrap, Role, Store};
use tracing_subscriber::EnvFilter;

use crate::cli::{LogFormat, Output, ServeArgs, StoreCmd};
use crate::client::CliError;

/// A database URL for logs and messages: its password is not shown. Anything that does not parse as a
/// URL (an SQLite path) has no password to hide.
fn redacted(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => text.to_string(),
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
    // Before anything that takes time: a SIGTERM during start-up stops it cleanly too, rather than
    // killing the process with the default action.
    let stopping = stop_signal()?;
    let json_lines = args.log_format == LogFormat::Json;
    // One server per SQLite file: a second one would split the installation in two without a word.
    let _writer = match &args.database {
        Some(url) => match sluice_store::sqlite_file(url) {
            Some(file) => Some(take_writer_lock(std::path::Path::new(file))?),
            None => None,
        },
        None => Some(take_writer_lock(&args.data_dir.join("sluice.db"))?),
    };
    let (store, shown) = open_store(&args).await?;
    tracing::info!(database = %shown, "database open");
    let io = |e: sluice_store::StoreError| CliError(e.to_string());
    match std::env::var("SLUICE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
        Some(text) => match store.bootstrap_token("sluice-serve", "admin", Role::Admin, &text).await.map_err(io)? {
            Bootstrap::Kept => {}
            Bootstrap::Added { name } => {
                tracing::info!(token = %name, "SLUICE_ADMIN_TOKEN is the admin token `{name}`")
            }
            Bootstrap::Replaced { name } => tracing::warn!(
                token = %name,
                "SLUICE_ADMIN_TOKEN changed: the token `{name}` has the new secret, and the one it replaces is revoked (audited)"
            ),
            Bootstrap::Overlapping { name, until } => tracing::warn!(
                token = %name, %until,
                "SLUICE_ADMIN_TOKEN is the old secret of the rotated token `{name}`: it stops working at {until}"
            ),
        },
        None => {
            let has_admin =
                store.tokens().await.map_err(io)?.iter().any(|t| t.role == Role::Admin && t.revoked_at.is_none());
            if !has_admin {
                let (_, token) = store.create_token("sluice-serve", "admin", Role::Admin).await.map_err(io)?;
                if json_lines {
                    let line = serde_json::json!({"admin_token": token, "message": "shown once; keep it"});
                    println!("{line}");
                } else {
                    println!("admin token (shown once; keep it): {token}");
                    println!("  export SLUICE_TOKEN={token}");
                }
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
        replication: Some(sluice_server::Replication {
            name: args.replica_name.clone().unwrap_or_else(|| default_replica_name(addr)),
            address: args.advertise_url.clone().unwrap_or_else(|| format!("http://{addr}")),
            lease: args.lease,
        }),
        limits: sluice_server::limits::Limits {
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections as usize,
            streams_per_token: args.max_streams_per_token as usize,
            anonymous_streams_per_address: args.max_anonymous_streams as usize,
            failed_logins_per_minute: args.failed_logins_per_minute,
            changes_per_minute: args.changes_per_minute,
            trusted_proxies: args.trusted_proxies.clone(),
            drain: args.shutdown_timeout,
        },
    };
    let plugins = sluice_sources::Registry::new(&sluice_sources::Config {
        secrets_dir: args.secrets_dir.clone(),
        public_url: args.public_url.clone(),
        retry_backoff: Some(args.retry_backoff),
        ..sluice_sources::Config::default()
    });
    let seams = sluice_server::Seams { plugins: std::sync::Arc::new(plugins), ..sluice_server::Seams::default() };
    let state = sluice_server::AppState::load_with(store, options, seams).await.map_err(io)?;
    if json_lines {
        tracing::info!(url = %format!("http://{addr}/"), database = %shown, "listening; the dashboard is at the url");
    } else {
        println!("dashboard: http://{addr}/ (log in with a viewer, operator or admin token)");
        println!("sluice listening on http://{addr} (database: {shown})");
    }
    let leading = tokio::spawn(state.cluster().clone().lead());
    tokio::spawn(sluice_server::replica::follow(state.clone()));
    tokio::spawn(state.cluster().clone().share_metrics());
    tokio::spawn(sluice_server::announce_expiries(state.clone()));
    sluice_server::serving::serve(listener, state.clone(), stopping)
        .await
        .map_err(|e| CliError(format!("server error: {e}")))?;
    // No more bids from here on: a bid after the release would take the lease back on the way out.
    leading.abort();
    let _ = leading.await;
    let saved = state.save_metrics().await;
    state.cluster().release().await;
    saved.map_err(|e| CliError(format!("saving the built-in metrics at shutdown: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

/// The lock of the SQLite file, or the error that names who holds it.
fn take_writer_lock(file: &std::path::Path) -> Result<sluice_store::WriterLock, CliError> {
    sluice_store::WriterLock::take(file).map_err(|e| CliError(e.to_string()))
}

/// Resolves at the first SIGTERM (systemd, Docker, Kubernetes) or SIGINT (Ctrl-C). Later ones change
/// nothing: the drain has its own time limit (`--shutdown-timeout`).
fn stop_signal() -> Result<impl std::future::Future<Output = ()> + Send, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen =
        |kind: SignalKind, name: &str| signal(kind).map_err(|e| CliError(format!("cannot listen for {name}: {e}")));
    let (mut term, mut int) = (listen(SignalKind::terminate(), "SIGTERM")?, listen(SignalKind::interrupt(), "SIGINT")?);
    Ok(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "stopping: no new connections; finishing the requests under way");
    })
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
                    "copied {} environments, {} flags, {} segments, {} tokens, {} rollouts, {} decisions, {} notifications \
                     and {} audit events; the chain verifies in the destination (head {})",
                    copied.environments,
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

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_database_urls_password_is_never_shown() {
        assert_eq!(redacted("postgres://sluice:s3cret@db:5432/sluice"), "postgres://sluice:***@db:5432/sluice");
        assert_eq!(redacted("postgres://u:p%40ss:w@h/d?sslmode=require"), "postgres://u:***@h/d?sslmode=require");
        assert_eq!(redacted("postgres://db/sluice"), "postgres://db/sluice");
        assert_eq!(redacted("sqlite:/var/lib/sluice/sluice.db"), "sqlite:/var/lib/sluice/sluice.db");
    }
}
