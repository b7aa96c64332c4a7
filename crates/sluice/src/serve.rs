//! `sluice serve`: opens the database, makes sure an admin token exists, installs the log subscriber and
//! runs the HTTP server, the rollout controller and the override-expiry announcer until Ctrl-C.

use std::io::IsTerminal;

use sluice_store::{Role, Store};
use tracing_subscriber::EnvFilter;

use crate::cli::{LogFormat, ServeArgs};
use crate::client::CliError;

pub async fn serve(args: ServeArgs) -> Result<(), CliError> {
    init_logging(args.log_format)?;
    let db = args.data_dir.join("sluice.db");
    let store = sluice_store::SqliteStore::open(&db)
        .await
        .map_err(|e| CliError(format!("cannot open the database {}: {e}", db.display())))?;
    tracing::info!(database = %db.display(), "database open");
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
        controller: sluice_server::Settings {
            keep_every_decision_for: args.keep_decisions.0,
            allow_exec: args.allow_exec.iter().cloned().collect(),
        },
        secure_cookies: args.public_url.as_deref().is_some_and(|u| u.starts_with("https://")),
    };
    let plugins = sluice_sources::Registry::new(&sluice_sources::Config {
        secrets_dir: args.secrets_dir.clone(),
        public_url: args.public_url.clone(),
        retry_backoff: Some(args.retry_backoff),
        ..sluice_sources::Config::default()
    });
    let seams = sluice_server::Seams { plugins: std::sync::Arc::new(plugins), ..sluice_server::Seams::default() };
    let state = sluice_server::AppState::load_with(std::sync::Arc::new(store), options, seams).await.map_err(io)?;
    println!("dashboard: http://{}/ (log in with a viewer, operator or admin token)", args.listen);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr().map_err(|e| CliError(e.to_string()))?;
    println!("sluice listening on http://{addr} (data: {})", args.data_dir.display());
    tokio::spawn(state.controller().clone().run());
    tokio::spawn(sluice_server::announce_expiries(state.clone()));
    let saver = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(sluice_server::METRICS_SAVE_INTERVAL).await;
            if let Err(e) = saver.save_metrics().await {
                tracing::warn!(error = %e, "saving the built-in metrics; retrying at the next interval");
            }
        }
    });
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
    last.save_metrics().await.map_err(|e| CliError(format!("saving the built-in metrics at shutdown: {e}")))
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
