//! `sluice-server` is Sluice's HTTP surface, and only that: OpenFeature OFREP (`/ofrep/v1`), the Unleash
//! client API (`/api/client`), the admin API (`/api/v1`) with its server-sent change stream, and health
//! checks. It authenticates, parses and maps errors to answers; flag writes go through the controller
//! crate's [`Catalog`] and rollout commands to its [`Controller`]. Flag reads are served from the
//! lock-free [`LiveFlags`] snapshot and an in-memory token table; only writes touch the store, and each
//! write publishes the new snapshot before it answers.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = std::sync::Arc::new(sluice_store::SqliteStore::open("data/sluice.db").await?);
//! let state = sluice_server::AppState::load(store, sluice_server::Options::default()).await?;
//! tokio::spawn(state.controller().clone().run());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4242").await?;
//! axum::serve(listener, sluice_server::router(state)).await?;
//! # Ok(()) }
//! ```

mod admin;
mod auth;
mod client_api;
mod dashboard;
mod error;
mod exposition;
mod latency;
pub mod limits;
mod ofrep;
pub mod openapi;
pub mod replica;
mod rollouts;
pub mod serving;
mod stream;

pub use sluice_controller::cluster::{Cluster, Replication};
pub use sluice_controller::{
    ChangeEvent, CommandBody, Controller, ControllerError, FaultHook, RolloutSummary, RunnerMemory, Seams, Settings,
};
pub use stream::announce_expiries;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use sluice_controller::{Catalog, EnvFlags, Written};
use sluice_store::{Change, Store, StoreError, TokenTable};
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
    /// What the rollout controller allows and keeps.
    pub controller: Settings,
    /// Mark the dashboard's session cookie `Secure` (the server is reached over HTTPS, e.g. behind a proxy).
    pub secure_cookies: bool,
    /// Run the controller under a lease ([`Cluster::lead`]), sharing the database with other replicas when
    /// it says so. `None`: the caller runs the controller itself (tests, `sluice demo`).
    pub replication: Option<Replication>,
    /// What one caller may take: connections, streams, failed logins, changes ([`limits`]).
    pub limits: limits::Limits,
}

/// What the server publishes for each committed revision of the flag catalog.
#[derive(Debug)]
pub(crate) struct Published {
    /// `/api/client/features`, serialized once per revision.
    pub client_features: axum::body::Bytes,
    pub etag: HeaderValue,
}

/// Shared server state: the catalog and the controller, and what only HTTP needs (tokens, the
/// evaluation rate limiter, the Unleash client API's published body, registered SDK instances).
pub struct AppState {
    pub(crate) catalog: Arc<Catalog>,
    /// Built-in metrics: written by `POST /api/v1/metrics`, read by the `builtin` source.
    pub(crate) metrics: Arc<sluice_sources::metrics::Metrics>,
    pub(crate) controller: Arc<Controller>,
    pub(crate) store: Arc<dyn Store>,
    /// What each environment publishes, by name.
    pub(crate) published: Arc<ArcSwap<std::collections::HashMap<String, Arc<Published>>>>,
    pub(crate) tokens: ArcSwap<TokenTable>,
    /// Token reloads, one at a time: each reads the table after the one before has stored its copy, so a
    /// slow reload can never put back a token that a later revoke removed.
    pub(crate) tokens_reload: tokio::sync::Mutex<()>,
    /// An override's environment and expiry time (ms) once it has passed: answers changed with no write, so OFREP clients
    /// that listen instead of polling are told to refetch.
    pub(crate) expiries: broadcast::Sender<(String, i64)>,
    pub(crate) options: Options,
    pub(crate) limiter: auth::RateLimiter,
    pub(crate) client_apps: Mutex<BTreeMap<String, serde_json::Value>>,
    /// The dashboard's session-signing key, kept in the store.
    pub(crate) session_key: dashboard::SessionKey,
    /// How long requests take, by route, for `/metrics`.
    pub(crate) request_times: &'static latency::RequestTimes,
    /// The lease, the other replicas, and how current this one is.
    pub(crate) cluster: Arc<Cluster>,
    /// Forwards rollout commands to the leading replica.
    pub(crate) forward_client: reqwest::Client,
    /// How often each limit was reached, and what is open (one per state, for the process's life).
    pub(crate) limit_counters: &'static limits::LimitCounters,
    /// Set when the server stops accepting: the change streams end, so that the drain can finish.
    pub(crate) shutting_down: tokio::sync::watch::Sender<bool>,
    /// Open change streams per caller.
    pub(crate) streams: Arc<limits::OpenStreams>,
    /// Failed dashboard logins per client address.
    pub(crate) failed_logins: limits::PerMinute,
    /// Admin changes per token.
    pub(crate) changes: limits::PerMinute,
}

impl AppState {
    /// Loads the catalog and the tokens from `store`, with a controller on the real clock and plug-ins.
    pub async fn load(store: Arc<dyn Store>, options: Options) -> Result<Arc<AppState>, StoreError> {
        Self::load_with(store, options, Seams::default()).await
    }

    /// [`load`](Self::load) with other seams: a virtual clock, recorded sources, injected crashes.
    pub async fn load_with(
        store: Arc<dyn Store>,
        options: Options,
        mut seams: Seams,
    ) -> Result<Arc<AppState>, StoreError> {
        let published: Arc<ArcSwap<std::collections::HashMap<String, Arc<Published>>>> = Arc::default();
        let publish_to = published.clone();
        let on_publish: sluice_controller::OnPublish = Box::new(move |env, snapshot, revision| {
            let one = Arc::new(publish_of(env, snapshot, revision));
            publish_to.rcu(|all| {
                let mut all = std::collections::HashMap::clone(all);
                all.insert(env.to_string(), one.clone());
                all
            });
        });
        let catalog = Arc::new(Catalog::load(store.clone(), on_publish).await?);
        let tokens = store.token_table().await?;
        let session_key = dashboard::SessionKey::from_hex(&store.server_key("dashboard-session").await?)?;
        let metrics = seams.plugins.metrics().unwrap_or_default();
        let replica_name = options.replication.as_ref().map(|r| r.name.clone()).unwrap_or_default();
        let (own, peers): (Vec<_>, Vec<_>) =
            store.load_metrics().await?.into_iter().partition(|(replica, _, _)| *replica == replica_name);
        metrics.restore(own.into_iter().map(|(_, flag, body)| (flag, body)).collect());
        metrics.set_peers(peers);
        let fence = sluice_store::Fence::default();
        if options.replication.is_some() {
            seams.fence = Some(fence.clone());
        }
        let controller = Controller::with_settings(catalog.clone(), seams, options.controller.clone());
        let cluster =
            Cluster::new(controller.clone(), store.clone(), metrics.clone(), options.replication.clone(), fence);
        Ok(Arc::new(AppState {
            metrics,
            controller,
            cluster,
            forward_client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(300))
                .build()
                .expect("an HTTP client with rustls builds"),
            catalog,
            store,
            published,
            tokens: ArcSwap::from_pointee(tokens),
            tokens_reload: tokio::sync::Mutex::new(()),
            expiries: broadcast::channel(64).0,
            limiter: auth::RateLimiter::new(options.evaluation_rate_limit),
            options,
            client_apps: Mutex::new(BTreeMap::new()),
            // One per state, for the life of the process (a server has one): see `latency::TimeRequests`.
            request_times: Box::leak(Box::default()),
            session_key,
            limit_counters: Box::leak(Box::default()),
            shutting_down: tokio::sync::watch::channel(false).0,
            streams: Arc::default(),
            failed_logins: limits::PerMinute::default(),
            changes: limits::PerMinute::default(),
        }))
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The live flags of the environment `env` (`None`: the only one), as evaluations see them.
    pub fn live_in(&self, env: Option<&str>) -> Result<Arc<EnvFlags>, StoreError> {
        self.catalog.resolve(env)
    }

    /// What the environment `env` publishes now (its Unleash client API body and ETag).
    pub(crate) fn published_in(&self, env: &str) -> Option<Arc<Published>> {
        self.published.load().get(env).cloned()
    }

    /// Saves the built-in metrics changed since the last save ([`Cluster::save_metrics`]; every
    /// [`METRICS_SHARE_INTERVAL`](sluice_controller::cluster::METRICS_SHARE_INTERVAL) while serving, and at
    /// shutdown): a restart loses at most one interval of observations.
    pub async fn save_metrics(&self) -> Result<(), StoreError> {
        self.cluster.save_metrics().await
    }

    /// This replica among the others: run [`Cluster::lead`] and [`Cluster::share_metrics`] beside the
    /// server, [`replica::follow`] to follow the others' commits, and [`Cluster::release`] when it stops.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Connections open now (what `sluice_connections_open` says).
    pub fn connections_open(&self) -> u64 {
        self.limit_counters.connections_open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ends the change streams (the server stops): [`serving::serve`] does it when it stops accepting; a
    /// server run another way calls it before its own drain.
    pub fn end_streams(&self) {
        self.shutting_down.send_replace(true);
    }

    /// The built-in metrics.
    pub fn metrics(&self) -> &Arc<sluice_sources::metrics::Metrics> {
        &self.metrics
    }

    /// The rollout controller.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// Subscribes to committed changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent>> {
        self.catalog.subscribe()
    }

    /// Re-reads the token table after tokens changed.
    pub async fn reload_tokens(&self) -> Result<(), StoreError> {
        let _one = self.tokens_reload.lock().await;
        self.tokens.store(Arc::new(self.store.token_table().await?));
        Ok(())
    }

    /// Applies changes computed from the current catalog by `plan`, all or nothing, then publishes the new
    /// snapshot (evaluations see it from the next request on) and tells the stream.
    pub(crate) async fn write<F>(
        &self,
        env: &EnvFlags,
        actor: &str,
        reason: Option<String>,
        plan: F,
    ) -> Result<Written, ApiError>
    where
        F: FnMut(&sluice_flags::Snapshot) -> Result<Vec<Change>, ApiError>,
    {
        self.catalog.write(env.name(), actor, reason, plan).await
    }
}

fn publish_of(env: &str, snapshot: &sluice_flags::Snapshot, revision: i64) -> Published {
    let body = serde_json::to_vec(snapshot.client_features()).expect("features serialize");
    Published {
        client_features: body.into(),
        // The environment is in the tag: a client whose token moves to another environment must not be
        // told `304` because the two happen to be at the same revision.
        etag: HeaderValue::from_str(&format!("\"{env}-r{revision}\"")).expect("environment names are ascii"),
    }
}

/// The most a request's head (its URI and headers) may take. hyper has a limit of its own (about 400 KiB of
/// read buffer), but whether a head past it is refused depends on how it arrived: one read in few large
/// pieces can complete it before the check. This one holds the same for every request.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

async fn limit_head_size(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let headers: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    // Measured without building the URI's text: this runs on every evaluation too.
    let uri = request.uri();
    let size = headers
        + uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if size > MAX_HEAD_BYTES {
        let message =
            format!("the request's URI and headers take {size} bytes, more than the {MAX_HEAD_BYTES} allowed");
        return ApiError::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", message)
            .into_response();
    }
    next.run(request).await
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

/// At most `changes_per_minute` admin writes per token: past it, 429 with `Retry-After`, and one audit
/// event per burst (`limit.changes`). Reads and unauthenticated calls (refused anyway) are not counted.
async fn limit_changes(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS) {
        return next.run(request).await;
    }
    let Ok(who) = state.require(request.headers(), sluice_store::Role::Viewer) else {
        return next.run(request).await;
    };
    let limit = state.options.limits.changes_per_minute;
    match state.changes.hit(&who.name, limit) {
        Ok(()) => next.run(request).await,
        Err(over) => {
            limits::LimitCounters::bump(&state.limit_counters.changes_limited);
            if over.first_of_burst {
                let detail = serde_json::json!({"limit_per_minute": limit, "path": request.uri().path()});
                let why = Some(format!("more than {limit} changes in a minute"));
                if let Err(e) = state
                    .store
                    .record_event(&who.name, "limit.changes", &format!("token:{}", who.name), detail, why)
                    .await
                {
                    tracing::warn!(error = %e, "auditing a rate limit");
                }
            }
            ApiError::too_many(
                format!(
                    "more than {limit} changes a minute from `{}` (sluice serve --changes-per-minute): wait {} s",
                    who.name, over.retry_after
                ),
                over.retry_after,
            )
            .into_response()
        }
    }
}

/// One log line per admin request: who, what, the answer and how long it took. Evaluations are not logged
/// (they are the hot path, and their volume would drown everything else).
async fn log_admin_request(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let began = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| request.uri().path().to_string(), |p| p.as_str().to_string());
    let actor = state.caller_name(request.headers());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let ms = began.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(target: "sluice::http", %actor, %method, %route, status, ms, "admin request");
    } else {
        tracing::info!(target: "sluice::http", %actor, %method, %route, status, ms, "admin request");
    }
    response
}

/// A table of routes: each path with its handlers. The router is built from these tables and the API
/// document's coverage test reads them ([`served_paths`]), so a route cannot be served without being
/// checked against the document.
type Routes = &'static [(&'static str, fn() -> MethodRouter<Arc<AppState>>)];

/// OFREP: its errors take OFREP's shape.
const OFREP_ROUTES: Routes = &[
    ("/ofrep/v1/evaluate/flags/{key}", || post(ofrep::evaluate_one)),
    ("/ofrep/v1/evaluate/flags", || post(ofrep::evaluate_all)),
    ("/ofrep/v1/configuration", || get(ofrep::configuration)),
    ("/ofrep/v1/events", || get(stream::ofrep_events)),
];

/// The admin API: forwarded to the leader where it must be, writes limited, the dashboard's writes
/// CSRF-checked, every request logged.
const ADMIN_ROUTES: Routes = &[
    ("/api/v1/flags", || get(admin::list_flags)),
    ("/api/v1/flags/{key}", || get(admin::get_flag).put(admin::put_flag).delete(admin::delete_flag)),
    ("/api/v1/flags/{key}/ramp", || post(admin::set_ramp)),
    ("/api/v1/flags/{key}/enable", || post(admin::enable)),
    ("/api/v1/flags/{key}/disable", || post(admin::disable)),
    ("/api/v1/flags/{key}/overrides", || {
        get(admin::list_overrides).post(admin::add_override).delete(admin::clear_overrides)
    }),
    ("/api/v1/environments", || get(admin::list_envs).post(admin::create_env)),
    ("/api/v1/environments/{name}", || delete(admin::delete_env)),
    ("/api/v1/environments/{name}/rename", || post(admin::rename_env)),
    ("/api/v1/segments", || get(admin::list_segments)),
    ("/api/v1/segments/{name}", || put(admin::put_segment).delete(admin::delete_segment)),
    ("/api/v1/tokens", || get(admin::list_tokens).post(admin::create_token)),
    ("/api/v1/tokens/{name}", || delete(admin::revoke_token)),
    ("/api/v1/tokens/{name}/rotate", || post(admin::rotate_token)),
    ("/api/v1/audit", || get(admin::audit)),
    ("/api/v1/audit/head", || get(admin::audit_head)),
    ("/api/v1/audit/chain", || get(admin::audit_chain)),
    ("/api/v1/audit/verify", || get(admin::audit_verify)),
    ("/api/v1/import/unleash", || post(admin::import_unleash)),
    ("/api/v1/import/flags", || post(admin::import_flags)),
    ("/api/v1/client-metrics", || get(admin::client_metrics)),
    ("/api/v1/stream", || get(stream::changes)),
    ("/api/v1/rollouts", || get(rollouts::list).post(rollouts::start)),
    ("/api/v1/rollouts/{id}", || get(rollouts::get)),
    ("/api/v1/rollouts/{id}/decisions", || get(rollouts::decisions)),
    ("/api/v1/rollouts/{id}/{command}", || post(rollouts::command)),
    ("/api/v1/alertmanager", || post(rollouts::alertmanager)),
    ("/api/v1/status", || get(replica::status)),
];

/// The rest: the dashboard, health, Prometheus, the Unleash client API, ingestion and the API document.
const OTHER_ROUTES: Routes = &[
    ("/", || get(dashboard::index)),
    ("/ui/app.js", || get(dashboard::script)),
    ("/ui/app.css", || get(dashboard::style)),
    ("/ui/login", || post(dashboard::login)),
    ("/ui/session", || get(dashboard::session)),
    ("/ui/logout", || post(dashboard::logout)),
    ("/healthz", || get(healthz)),
    ("/readyz", || get(replica::readyz)),
    ("/metrics", || get(exposition::metrics)),
    ("/api/client/features", || get(client_api::features)),
    ("/api/client/register", || post(client_api::register)),
    ("/api/client/metrics", || post(client_api::metrics)),
    // A full batch (10,000 observations with values) is larger than other requests.
    ("/api/v1/metrics", || post(client_api::observations).layer(DefaultBodyLimit::max(8 * MAX_BODY_BYTES))),
    ("/api/v1/openapi.json", || get(openapi::openapi_json)),
];

/// Every path the router serves, as written in its table (`{key}` for a parameter).
pub fn served_paths() -> impl Iterator<Item = &'static str> {
    OFREP_ROUTES.iter().chain(ADMIN_ROUTES).chain(OTHER_ROUTES).map(|(path, _)| *path)
}

fn routes(table: Routes) -> Router<Arc<AppState>> {
    table.iter().fold(Router::new(), |router, (path, handlers)| router.route(path, handlers()))
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "server", security(()),
    responses((status = 200, description = "The process answers", content_type = "text/plain", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Every route of the server.
pub fn router(state: Arc<AppState>) -> Router {
    use axum::middleware::{from_fn, map_response};
    let ofrep = routes(OFREP_ROUTES).layer(map_response(error::ofrep_errors));
    let admin = routes(ADMIN_ROUTES)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), replica::forward_to_leader))
        .route_layer(from_fn(run_writes_to_completion))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), limit_changes))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), dashboard::check_csrf))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), log_admin_request));
    routes(OTHER_ROUTES)
        .merge(ofrep)
        .merge(admin)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(map_response(error::json_errors))
        .layer(from_fn(limit_head_size))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(latency::TimeRequests(state.request_times))
        .with_state(state)
}
