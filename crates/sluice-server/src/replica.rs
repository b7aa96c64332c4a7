//! Several replicas on one database. Each replica evaluates from its own snapshot; what makes them one
//! service is here:
//!
//! - **Leading** ([`lead`]): one replica holds the controller lease (by the database's clock) and runs the
//!   rollout controller, whose every write carries the lease's fencing token. A replica that loses the
//!   lease (or cannot renew it for as long as it lasts) stops its controller; one that takes it runs the
//!   controller again, which starts by finishing what the last holder left in the outboxes.
//! - **Following** ([`follow`]): every commit on any replica is announced (`NOTIFY`); each replica then
//!   reads what changed — the catalog's revision and the audit events after the last it saw — loads a
//!   new snapshot or token table when they changed, and tells its own OFREP and dashboard streams. A lost
//!   listening connection falls back to polling until it is back.
//! - **Forwarding** ([`forward_to_leader`]): a rollout command sent to a replica that does not lead is
//!   passed to the leader, so that one controller decides every transition.
//! - **Sharing metrics** ([`share_metrics`]): every replica saves its built-in metric aggregates; the
//!   leader merges the others' into the windows it measures.
//!
//! With SQLite the same code runs with one replica: it takes the lease at once (`takeover`), and has no
//! one to follow.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sluice_controller::Controller;
use sluice_store::{Fence, Lease, LeaseAnswer, LeaseBid, Role, StoreError, CONTROLLER_LEASE};

use crate::{ApiError, AppState};

/// How this server shares its database with other replicas (`sluice serve --replica-name …`).
#[derive(Debug, Clone)]
pub struct Replication {
    /// This replica's name, unique among the replicas on the database (e.g. `host:port`).
    pub name: String,
    /// Where the other replicas reach it (`http://10.0.0.5:4242`): rollout commands are forwarded there.
    pub address: String,
    /// How long the controller lease lasts without renewal (renewed every third of it).
    pub lease: Duration,
}

impl Default for Replication {
    fn default() -> Self {
        Replication { name: String::new(), address: String::new(), lease: Duration::from_secs(15) }
    }
}

/// Polling interval while the listening connection is down.
const POLL: Duration = Duration::from_secs(1);
/// A sync even without a notification: a notification lost between two listens costs at most this.
const SAFETY_SYNC: Duration = Duration::from_secs(5);
/// How often replicas save their built-in metrics, and the leader reads the others'.
pub const METRICS_SHARE_INTERVAL: Duration = Duration::from_secs(2);
/// The header a forwarded request carries: a replica that receives one does not forward it again.
const FORWARDED_BY: &str = "x-sluice-forwarded-by";

/// What this replica knows of the others.
pub(crate) struct ReplicaState {
    pub(crate) fence: Fence,
    pub(crate) options: Option<Replication>,
    /// Other replicas may share the database (it announces commits: PostgreSQL): wait for the lease,
    /// follow their commits, forward commands to the leader. A SQLite process takes the lease at once.
    shared: bool,
    leader: Mutex<Option<(Lease, Instant)>>,
    sync: Mutex<SyncState>,
    client: reqwest::Client,
}

#[derive(Default)]
struct SyncState {
    /// When the last sync with the database succeeded.
    synced_at: Option<Instant>,
    /// Whether the listening connection is up.
    listening: bool,
    /// The last failure, while failing.
    error: Option<String>,
    /// The last failure was the database being out of reach (not this replica falling behind).
    unreachable: bool,
    /// The last audit event seen.
    seen_seq: i64,
    /// Token events were seen and the table not yet reloaded (kept across a failed sync, so that a
    /// revoked token never stays valid here because a reload failed).
    tokens_dirty: bool,
}

impl ReplicaState {
    pub(crate) fn new(options: Option<Replication>, fence: Fence, shared: bool) -> ReplicaState {
        ReplicaState {
            fence,
            options,
            shared,
            leader: Mutex::new(None),
            sync: Mutex::new(SyncState::default()),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .expect("an HTTP client with rustls builds"),
        }
    }

    fn shared(&self) -> bool {
        self.options.is_some() && self.shared
    }

    /// Whether this replica's controller runs now.
    pub(crate) fn leading(&self) -> bool {
        self.options.is_none() || self.fence.token() != 0
    }

    /// The leader as last seen, with how long ago.
    fn leader(&self) -> Option<(Lease, Duration)> {
        self.leader.lock().expect("leader").as_ref().map(|(l, at)| (l.clone(), at.elapsed()))
    }
}

/// Holds the controller lease for this replica's life, running the controller while it holds it. Takes
/// the lease at once with SQLite; with PostgreSQL, when it is free or its holder let it expire.
pub async fn lead(state: Arc<AppState>) {
    let Some(options) = state.replica.options.clone() else {
        state.controller.clone().run().await;
        return;
    };
    let renew = options.lease / 3;
    let mut renewed_at: Option<Instant> = None;
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    let mut first_bid = true;
    loop {
        // A follower bids again as soon as the leader's lease runs out, not at its next renewal time: the
        // failover takes the lease time, not the lease time plus a renewal.
        let mut next_bid = renew;
        let held = state.replica.fence.token();
        let bid = LeaseBid {
            name: CONTROLLER_LEASE,
            holder: &options.name,
            address: &options.address,
            held,
            ttl: options.lease,
            // A SQLite process takes the lease from its killed predecessor at start, and only then.
            takeover: !state.replica.shared() && renewed_at.is_none(),
            fresh: first_bid,
        };
        // A bid that hangs (a black-holed connection, a long write holding the lock) must not keep this
        // replica believing it leads past its lease: it counts as a failed renewal.
        let answer = match tokio::time::timeout(renew, state.store.take_lease(&bid)).await {
            Ok(answer) => answer,
            Err(_) => Err(StoreError::Database(sluice_store::timed_out())),
        };
        if answer.is_ok() {
            first_bid = false;
        }
        match answer {
            // Held, as the store says, never judged by the holder's name. A live lease under this name that
            // the bid did not renew is another process's of the same name (leading on it would run two
            // controllers with one token), or the term this replica gave up when it could not renew
            // (leading on it would mean leading on a lease about to run out): it waits, as a follower.
            Ok(LeaseAnswer::Held(lease)) => {
                renewed_at = Some(Instant::now());
                if lease.token != held {
                    tracing::info!(replica = %options.name, token = lease.token, "this replica leads: the controller runs here");
                    state.replica.fence.set(lease.token);
                    if let Some(old) = running.take() {
                        old.abort();
                    }
                    running = Some(tokio::spawn(state.controller.clone().run()));
                }
                *state.replica.leader.lock().expect("leader") = Some((lease, Instant::now()));
            }
            Ok(LeaseAnswer::Refused(lease)) => {
                let expires = Duration::from_millis(lease.expires_in_ms.max(0) as u64);
                next_bid = next_bid.min(expires + Duration::from_millis(20));
                if held != 0 {
                    tracing::warn!(replica = %options.name, leader = %lease.holder, token = lease.token,
                        "another replica took the controller lease: this one stops running rollouts");
                    step_down(&state, &mut running);
                }
                // The term this replica gave up leads nobody: not a leader to name or forward commands to.
                let given_up = lease.holder == options.name && lease.address == options.address;
                *state.replica.leader.lock().expect("leader") = (!given_up).then(|| (lease, Instant::now()));
            }
            Err(e) => {
                let lapsed = renewed_at.is_none_or(|at| at.elapsed() + renew >= options.lease);
                if held != 0 && lapsed {
                    tracing::error!(replica = %options.name, error = %e,
                        "cannot renew the controller lease before it expires: stepping down");
                    step_down(&state, &mut running);
                } else {
                    tracing::warn!(replica = %options.name, error = %e, "renewing the controller lease; retrying");
                }
            }
        }
        tokio::time::sleep(next_bid).await;
    }
}

fn step_down(state: &AppState, running: &mut Option<tokio::task::JoinHandle<()>>) {
    state.replica.fence.set(0);
    if let Some(task) = running.take() {
        task.abort();
    }
}

/// Lets the lease go (shutting down), so that another replica takes over at once.
pub async fn release(state: &AppState) {
    let (Some(options), token) = (&state.replica.options, state.replica.fence.token()) else { return };
    if token == 0 {
        return;
    }
    state.replica.fence.set(0);
    match state.store.release_lease(CONTROLLER_LEASE, &options.name, token).await {
        Ok(_) => tracing::info!(replica = %options.name, "let the controller lease go"),
        Err(e) => {
            tracing::warn!(error = %e, "letting the controller lease go; another replica takes it when it expires")
        }
    }
}

/// Follows the other replicas' commits for this replica's life (see the module's doc). Returns at once
/// when the store is not shared.
pub async fn follow(state: Arc<AppState>) {
    // Where to start: the audit head, then what was committed before it and after the state was loaded
    // (a token revoked meanwhile) is read again.
    let head = loop {
        match state.store.audit(&sluice_store::AuditFilter { limit: 1, ..Default::default() }).await {
            Ok(events) => break events.first().map_or(0, |e| e.seq),
            Err(e) => {
                tracing::warn!(error = %e, "reading the audit head to follow other replicas; retrying");
                tokio::time::sleep(POLL).await;
            }
        }
    };
    {
        let mut sync = state.replica.sync.lock().expect("sync");
        sync.seen_seq = head;
        sync.tokens_dirty = true;
    }
    sync(&state).await;
    let Some(feed) = state.store.change_feed() else { return };
    loop {
        let listener = match feed.listen().await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other replicas' changes: polling until it can");
                None
            }
        };
        state.replica.sync.lock().expect("sync").listening = listener.is_some();
        // Whatever was committed while nobody listened.
        sync(&state).await;
        match listener {
            Some(mut listener) => loop {
                tokio::select! {
                    heard = listener.next() => if let Err(e) = heard {
                        tracing::warn!(error = %e, "the listening connection was lost: polling until it is back");
                        break;
                    },
                    () = tokio::time::sleep(SAFETY_SYNC) => {}
                }
                sync(&state).await;
            },
            None => tokio::time::sleep(POLL).await,
        }
        state.replica.sync.lock().expect("sync").listening = false;
    }
}

/// Reads what other replicas committed since the last sync; records whether it could.
async fn sync(state: &AppState) {
    // A query that hangs (a black-holed connection) is the database out of reach, not this replica behind.
    let outcome = match tokio::time::timeout(SAFETY_SYNC, catch_up(state)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(StoreError::Database(sluice_store::timed_out())),
    };
    let mut sync = state.replica.sync.lock().expect("sync");
    match outcome {
        Ok(()) => {
            sync.synced_at = Some(Instant::now());
            sync.error = None;
            sync.unreachable = false;
        }
        Err(e) => {
            sync.unreachable = e.is_unreachable();
            sync.error = Some(e.to_string());
        }
    }
}

async fn catch_up(state: &AppState) -> Result<(), StoreError> {
    const PAGE: u32 = 1000;
    state.catalog.reload().await?;
    let mut seen = state.replica.sync.lock().expect("sync").seen_seq;
    loop {
        let page = state.store.chain(seen, PAGE).await?;
        let Some(last) = page.last() else { break };
        seen = last.seq;
        let full = page.len() == PAGE as usize;
        // One message per entity, in order, as a committing replica tells its own watchers.
        let mut start = 0;
        while start < page.len() {
            let entity = &page[start].entity;
            let end = page[start..].iter().position(|e| &e.entity != entity).map_or(page.len(), |n| start + n);
            let events = page[start..end].to_vec();
            if entity.starts_with("token:") {
                state.replica.sync.lock().expect("sync").tokens_dirty = true;
            }
            match entity.strip_prefix("rollout:") {
                // The leader's own controller told its watchers already (every rollout write is its own).
                Some(_) if state.replica.leading() => {}
                Some(id) => {
                    let rollout = state.store.rollout(id).await?;
                    state.catalog.tell_replicated(events, rollout.as_ref().and_then(Controller::change_of_record));
                }
                None => {
                    if let Some(key) = entity.strip_prefix("flag:") {
                        pause_if_killed_elsewhere(state, key, &events);
                    }
                    state.catalog.tell_replicated(events, None)
                }
            }
            start = end;
        }
        state.replica.sync.lock().expect("sync").seen_seq = seen;
        if !full {
            break;
        }
    }
    if state.replica.sync.lock().expect("sync").tokens_dirty {
        state.reload_tokens().await?;
        state.replica.sync.lock().expect("sync").tokens_dirty = false;
    }
    Ok(())
}

/// A kill switch pulled on another replica pauses the flag's rollout as soon as the leader reads it, as
/// one pulled on the leader does, not at the rollout's next tick (which may be minutes away): the replica
/// that took the command cannot write the pause, its store being fenced. The group's last event decides
/// (disabled then enabled again is no kill switch), and the controller reads the flag again before it
/// pauses anything; the sync is not held up.
fn pause_if_killed_elsewhere(state: &AppState, key: &str, events: &[sluice_store::AuditEvent]) {
    let Some(last) = events.last() else { return };
    let disabled = last.after.as_ref().is_some_and(|flag| flag["enabled"] == false);
    if !disabled || !state.replica.leading() {
        return;
    }
    let (controller, key, who) = (state.controller.clone(), key.to_string(), last.actor.clone());
    tokio::spawn(async move {
        if let Err(e) = controller.kill_switch_pulled(&key, &who).await {
            tracing::warn!(flag = %key, error = %e, "pausing the rollout of a flag disabled on another replica; its next tick pauses it");
        }
    });
}

/// Saves this replica's built-in metrics, and (leading) merges the other replicas' into its own windows,
/// every [`METRICS_SHARE_INTERVAL`].
pub async fn share_metrics(state: Arc<AppState>) {
    let name = state.replica.options.as_ref().map(|o| o.name.clone()).unwrap_or_default();
    loop {
        tokio::time::sleep(METRICS_SHARE_INTERVAL).await;
        if let Err(e) = state.save_metrics().await {
            tracing::warn!(error = %e, "saving the built-in metrics; retrying at the next interval");
        }
        if state.replica.leading() {
            match state.store.load_metrics().await {
                Ok(rows) => state.metrics.set_peers(rows.into_iter().filter(|(r, _, _)| *r != name).collect()),
                Err(e) => tracing::warn!(error = %e, "reading the other replicas' built-in metrics"),
            }
        }
    }
}

/// What `/readyz` and `/api/v1/status` say about this replica.
fn report(state: &AppState) -> (bool, serde_json::Value) {
    let replica = &state.replica;
    let sync = replica.sync.lock().expect("sync");
    let since_sync = sync.synced_at.map(|t| t.elapsed());
    let limit = if sync.listening { SAFETY_SYNC * 3 } else { POLL * 5 };
    let fresh = since_sync.is_some_and(|d| d <= limit);
    // With the database out of reach nobody can commit: this replica serves the last state there was,
    // as every other replica does, and stays in the load balancer.
    let caught_up = !replica.shared() || fresh;
    let ready = caught_up || sync.unreachable;
    let leader = replica.leader().map(|(l, seen)| {
        json!({
            "replica": l.holder,
            "address": l.address,
            "token": l.token,
            "since": chrono::DateTime::from_timestamp_millis(l.since_ms).map(|t| t.to_rfc3339()),
            "expires_in_ms": l.expires_in_ms - seen.as_millis() as i64,
        })
    });
    let body = json!({
        "ready": ready,
        "replica": replica.options.as_ref().map(|o| o.name.clone()),
        "leading": replica.leading(),
        "leader": leader,
        "database": if replica.shared() { "postgres" } else { "sqlite" },
        "revision": state.catalog.revision(),
        "caught_up": caught_up,
        "listening": sync.listening,
        "last_sync_ms_ago": since_sync.map(|d| d.as_millis() as u64),
        "database_error": sync.error,
    });
    (ready, body)
}

/// `GET /readyz`: 200 when the replica has every committed change (or nobody can commit: the database is
/// out of reach), 503 when it lags behind the database; the body says why.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let (ready, body) = report(&state);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `GET /api/v1/status` (viewer): this replica, which replica leads the controller, and how current this
/// replica is.
pub(crate) async fn status(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.require(&headers, Role::Viewer)?;
    Ok(Json(json!({"data": report(&state).1})).into_response())
}

/// Passes a rollout command to the replica that leads the controller when this one does not: one
/// controller decides every transition, whichever replica the load balancer picked.
pub(crate) async fn forward_to_leader(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let command = path.starts_with("/api/v1/rollouts") || path == "/api/v1/alertmanager";
    if !command || request.method() != axum::http::Method::POST || state.replica.leading() || !state.replica.shared() {
        return next.run(request).await;
    }
    let unavailable = |message: String| {
        let mut response = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", message).into_response();
        response.headers_mut().insert("retry-after", HeaderValue::from_static("2"));
        response
    };
    if request.headers().contains_key(FORWARDED_BY) {
        return unavailable(
            "the replica this command was forwarded to does not lead the controller either: retry".into(),
        );
    }
    let Some((leader, _)) = state.replica.leader().filter(|(l, seen)| l.expires_in_ms > seen.as_millis() as i64) else {
        return unavailable(
            "no replica leads the controller right now (the lease is changing hands): retry in a few seconds".into(),
        );
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, crate::MAX_BODY_BYTES).await else {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the request body is too large")
            .into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", leader.address.trim_end_matches('/'));
    let mut forward = state.replica.client.post(&url).body(body);
    for name in ["authorization", "x-api-key", "cookie", "content-type", "accept", "x-sluice-csrf"] {
        if let Some(v) = parts.headers.get(name) {
            forward = forward.header(name, v.as_bytes());
        }
    }
    let me = state.replica.options.as_ref().map_or("", |o| o.name.as_str());
    forward = forward.header(FORWARDED_BY, me);
    match forward.send().await {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            // What the caller acts on: the body's type, and when to retry.
            let kept: Vec<(&'static str, HeaderValue)> = ["content-type", "retry-after"]
                .into_iter()
                .filter_map(|name| Some((name, HeaderValue::from_bytes(answer.headers().get(name)?.as_bytes()).ok()?)))
                .collect();
            let bytes = match answer.bytes().await {
                Ok(bytes) => bytes,
                Err(e) => {
                    let message = format!(
                        "the leading replica's answer was cut off ({e}); the command may have been carried out: \
                         look at the rollout's status before sending it again"
                    );
                    return ApiError::new(StatusCode::BAD_GATEWAY, "leader_answer_lost", message).into_response();
                }
            };
            let mut response = (status, bytes).into_response();
            for (name, value) in kept {
                response.headers_mut().insert(name, value);
            }
            response
        }
        Err(e) => {
            unavailable(format!("the leading replica `{}` at {} did not answer: {e}", leader.holder, leader.address))
        }
    }
}
