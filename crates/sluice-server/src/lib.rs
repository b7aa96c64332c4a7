//! `sluice-server` is Sluice's HTTP surface: OpenFeature OFREP (`/ofrep/v1`), the Unleash client API
//! (`/api/client`), the admin API (`/api/v1`) with its server-sent change stream, and health checks. Flag
//! reads are served from the lock-free [`LiveFlags`] snapshot and an in-memory token table; only writes
//! touch the store, and each write publishes the new snapshot before it answers.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = std::sync::Arc::new(sluice_store::SqliteStore::open("data/sluice.db").await?);
//! let state = sluice_server::AppState::load(store, sluice_server::Options::default()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4242").await?;
//! axum::serve(listener, sluice_server::router(state)).await?;
//! # Ok(()) }
//! ```

mod admin;
mod auth;
mod client_api;
mod error;
mod ofrep;
mod rollouts;
mod stream;

pub use rollouts::{run_forever as run_rollouts, CommandBody, RunnerMemory};
pub use stream::announce_expiries;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode};
use axum::routing::{delete, get, post, put};
use axum::Router;
use sluice_flags::LiveFlags;
use sluice_store::{AppliedBatch, AuditEvent, Change, Store, StoreError, TokenTable};
use tokio::sync::broadcast;

pub use error::ApiError;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Server options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve OFREP and the Unleash client API without a token (local use only).
    pub anonymous_evaluation: bool,
    /// Most evaluation requests per second per token before answering 429; unlimited when `None`.
    pub evaluation_rate_limit: Option<u32>,
}

/// What the server publishes for each committed revision of the flag catalog.
#[derive(Debug)]
pub(crate) struct Published {
    pub revision: i64,
    /// `/api/client/features`, serialized once per revision.
    pub client_features: axum::body::Bytes,
    pub etag: HeaderValue,
}

/// One committed change, as the stream tells it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChangeEvent {
    /// The catalog revision after the change.
    pub revision: i64,
    /// The audit events the change wrote.
    pub events: Vec<AuditEvent>,
}

/// Shared server state.
pub struct AppState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) live: LiveFlags,
    pub(crate) published: ArcSwap<Published>,
    pub(crate) tokens: ArcSwap<TokenTable>,
    /// Token reloads, one at a time: each reads the table after the one before has stored its copy, so a
    /// slow reload can never put back a token that a later revoke removed.
    pub(crate) tokens_reload: tokio::sync::Mutex<()>,
    pub(crate) changes: broadcast::Sender<ChangeEvent>,
    /// An override's expiry time (ms) once it has passed: answers changed with no write, so OFREP clients
    /// that listen instead of polling are told to refetch.
    pub(crate) expiries: broadcast::Sender<i64>,
    /// Writes are read-modify-write over the live catalog: one at a time, published before the next.
    pub(crate) writer: tokio::sync::Mutex<()>,
    pub(crate) options: Options,
    pub(crate) limiter: auth::RateLimiter,
    pub(crate) client_apps: Mutex<BTreeMap<String, serde_json::Value>>,
    /// One lock per rollout: its transitions (the runner's ticks, people's commands) happen one at a time,
    /// while a slow action of one rollout never holds up another's rollback.
    pub(crate) rollout_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Outbox items this process is carrying out right now, by rollout: a stored outbox whose items are
    /// here is in hand (a phase hook is running); one whose items are not is stranded.
    pub(crate) carrying: Mutex<HashMap<String, Vec<String>>>,
    /// Rollouts whose outbox may have been left unfinished (an error while carrying it out, or found at
    /// start-up), finished ones included: the runner visits them beside the active ones.
    pub(crate) unfinished: Mutex<std::collections::BTreeSet<String>>,
    pub(crate) clock: Arc<dyn sluice_engine::Clock>,
    pub(crate) plugins: Arc<dyn sluice_sources::Plugins>,
    pub(crate) faults: Option<FaultHook>,
}

/// Called at every commit and side-effect boundary of a rollout with the boundary's name; `true` makes the
/// controller stop there as if killed (crash-safety tests).
pub type FaultHook = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What a controller measures, acts and keeps time with; [`Seams::default`] is the real world.
pub struct Seams {
    /// Time.
    pub clock: Arc<dyn sluice_engine::Clock>,
    /// Sources and actions.
    pub plugins: Arc<dyn sluice_sources::Plugins>,
    /// Injected crashes.
    pub faults: Option<FaultHook>,
}

impl Default for Seams {
    fn default() -> Self {
        Seams { clock: Arc::new(sluice_engine::SystemClock), plugins: Arc::new(sluice_sources::Registry), faults: None }
    }
}

impl AppState {
    /// Loads the catalog and the tokens from `store`.
    pub async fn load(store: Arc<dyn Store>, options: Options) -> Result<Arc<AppState>, StoreError> {
        Self::load_with(store, options, Seams::default()).await
    }

    /// [`load`](Self::load) with other seams: a virtual clock, recorded sources, injected crashes.
    pub async fn load_with(store: Arc<dyn Store>, options: Options, seams: Seams) -> Result<Arc<AppState>, StoreError> {
        let (snapshot, revision) = store.snapshot().await?;
        let tokens = store.token_table().await?;
        let published = publish_of(&snapshot, revision);
        Ok(Arc::new(AppState {
            store,
            live: LiveFlags::new(snapshot),
            published: ArcSwap::from_pointee(published),
            tokens: ArcSwap::from_pointee(tokens),
            tokens_reload: tokio::sync::Mutex::new(()),
            changes: broadcast::channel(1024).0,
            expiries: broadcast::channel(64).0,
            writer: tokio::sync::Mutex::new(()),
            limiter: auth::RateLimiter::new(options.evaluation_rate_limit),
            options,
            client_apps: Mutex::new(BTreeMap::new()),
            rollout_locks: Mutex::new(HashMap::new()),
            carrying: Mutex::new(HashMap::new()),
            unfinished: Mutex::new(std::collections::BTreeSet::new()),
            clock: seams.clock,
            plugins: seams.plugins,
            faults: seams.faults,
        }))
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The live flags, as evaluations see them.
    pub fn live(&self) -> &LiveFlags {
        &self.live
    }

    /// Subscribes to committed changes.
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.changes.subscribe()
    }

    /// Re-reads the token table after tokens changed.
    pub async fn reload_tokens(&self) -> Result<(), StoreError> {
        let _one = self.tokens_reload.lock().await;
        self.tokens.store(Arc::new(self.store.token_table().await?));
        Ok(())
    }

    /// Applies changes computed from the current catalog by `plan`, all or nothing, then publishes the new
    /// snapshot (evaluations see it from the next request on) and tells the stream.
    pub(crate) async fn write<F>(&self, actor: &str, reason: Option<String>, plan: F) -> Result<Written, ApiError>
    where
        F: FnOnce(&sluice_flags::Snapshot) -> Result<Vec<Change>, ApiError>,
    {
        let _one_writer = self.writer.lock().await;
        let changes = plan(&self.live.load())?;
        let AppliedBatch { events, snapshot, revision } = self.store.apply_all(actor, changes, reason).await?;
        self.publish(snapshot, revision, events.clone());
        Ok(Written { events, revision })
    }

    fn publish(&self, snapshot: sluice_flags::Snapshot, revision: i64, events: Vec<AuditEvent>) {
        self.published.store(Arc::new(publish_of(&snapshot, revision)));
        self.live.replace(snapshot);
        // Nobody listening is fine.
        let _ = self.changes.send(ChangeEvent { revision, events });
    }
}

/// What a committed write returns to its handler; the snapshot itself is already published.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Written {
    pub events: Vec<AuditEvent>,
    pub revision: i64,
}

fn publish_of(snapshot: &sluice_flags::Snapshot, revision: i64) -> Published {
    let body = serde_json::to_vec(snapshot.client_features()).expect("features serialize");
    Published {
        revision,
        client_features: body.into(),
        etag: HeaderValue::from_str(&format!("\"r{revision}\"")).expect("ascii"),
    }
}

/// Admin writes run in their own task, so that a client that goes away (a closed terminal, a proxy's
/// timeout) cannot cancel one halfway: a change committed but never published, or a rollback whose flag
/// was restored but whose actions never ran. Reads and evaluations are not worth a task.
async fn run_writes_to_completion(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD) {
        return next.run(request).await;
    }
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the request failed: {e}"))
            .into_response(),
    }
}

/// Every route of the server.
pub fn router(state: Arc<AppState>) -> Router {
    use axum::middleware::{from_fn, map_response};
    let ofrep = Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep::evaluate_one))
        .route("/ofrep/v1/evaluate/flags", post(ofrep::evaluate_all))
        .route("/ofrep/v1/configuration", get(ofrep::configuration))
        .route("/ofrep/v1/events", get(stream::ofrep_events))
        .layer(map_response(error::ofrep_errors));
    let admin = Router::new()
        .route("/api/v1/flags", get(admin::list_flags))
        .route("/api/v1/flags/{key}", get(admin::get_flag).put(admin::put_flag).delete(admin::delete_flag))
        .route("/api/v1/flags/{key}/ramp", post(admin::set_ramp))
        .route("/api/v1/flags/{key}/enable", post(admin::enable))
        .route("/api/v1/flags/{key}/disable", post(admin::disable))
        .route(
            "/api/v1/flags/{key}/overrides",
            get(admin::list_overrides).post(admin::add_override).delete(admin::clear_overrides),
        )
        .route("/api/v1/segments", get(admin::list_segments))
        .route("/api/v1/segments/{name}", put(admin::put_segment).delete(admin::delete_segment))
        .route("/api/v1/tokens", get(admin::list_tokens).post(admin::create_token))
        .route("/api/v1/tokens/{name}", delete(admin::revoke_token))
        .route("/api/v1/audit", get(admin::audit))
        .route("/api/v1/audit/head", get(admin::audit_head))
        .route("/api/v1/audit/chain", get(admin::audit_chain))
        .route("/api/v1/import/unleash", post(admin::import_unleash))
        .route("/api/v1/import/flags", post(admin::import_flags))
        .route("/api/v1/client-metrics", get(admin::client_metrics))
        .route("/api/v1/stream", get(stream::changes))
        .route("/api/v1/rollouts", get(rollouts::list).post(rollouts::start))
        .route("/api/v1/rollouts/{id}", get(rollouts::get))
        .route("/api/v1/rollouts/{id}/decisions", get(rollouts::decisions))
        .route("/api/v1/rollouts/{id}/{command}", post(rollouts::command))
        .route("/api/v1/alertmanager", post(rollouts::alertmanager))
        .route_layer(from_fn(run_writes_to_completion));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route("/api/client/features", get(client_api::features))
        .route("/api/client/register", post(client_api::register))
        .route("/api/client/metrics", post(client_api::metrics))
        .merge(ofrep)
        .merge(admin)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(map_response(error::json_errors))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
