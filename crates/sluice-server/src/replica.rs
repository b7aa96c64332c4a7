//! Several replicas on one database, as HTTP sees them: the lease, following the others' commits and
//! sharing built-in metrics are the controller's ([`sluice_controller::cluster`]); here are what a load
//! balancer and a client meet:
//!
//! - **Forwarding** ([`forward_to_leader`]): a rollout command sent to a replica that does not lead is
//!   passed to the leader, so that one controller decides every transition.
//! - **Readiness** (`/readyz`, `/api/v1/status`): whether this replica has every committed change, and
//!   which replica leads.
//! - **Following** ([`follow`]): the cluster's follower, reloading this server's token table when another
//!   replica changed a token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::auth::Viewer;
use crate::{ApiError, AppState};

/// The header a forwarded request carries: a replica that receives one does not forward it again.
const FORWARDED_BY: &str = "x-sluice-forwarded-by";

/// Follows the other replicas' commits for this server's life ([`sluice_controller::cluster::Cluster::follow`]),
/// reloading the token table when a token changed on another replica.
pub async fn follow(state: Arc<AppState>) {
    let cluster = state.cluster.clone();
    cluster.follow(|| state.reload_tokens()).await
}

/// What `/readyz` and `/api/v1/status` say about this replica.
fn report(state: &AppState) -> (bool, serde_json::Value) {
    let cluster = &state.cluster;
    let health = cluster.health();
    let leader = cluster.leader().map(|(l, seen)| {
        json!({
            "replica": l.holder,
            "address": l.address,
            "token": l.token,
            "since": chrono::DateTime::from_timestamp_millis(l.since_ms).map(|t| t.to_rfc3339()),
            "expires_in_ms": l.expires_in_ms - seen.as_millis() as i64,
        })
    });
    let body = json!({
        "ready": health.ready,
        "replica": cluster.options().map(|o| o.name.clone()),
        "leading": cluster.leading(),
        "leader": leader,
        "database": if cluster.shared() { "postgres" } else { "sqlite" },
        "revision": state.catalog.revision(),
        "caught_up": health.caught_up,
        "listening": health.listening,
        "last_sync_ms_ago": health.last_sync.map(|d| d.as_millis() as u64),
        "database_error": health.database_error,
    });
    (health.ready, body)
}

/// `GET /readyz`: 200 when the replica has every committed change (or nobody can commit: the database is
/// out of reach), 503 when it lags behind the database; the body says why.
#[utoipa::path(get, path = "/readyz", tag = "server", security(()),
    responses((status = 200, description = "Ready", body = Object), (status = 503, description = "Behind the database", body = Object)))]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let (ready, body) = report(&state);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `GET /api/v1/status` (viewer): this replica, which replica leads the controller, and how current this
/// replica is.
#[utoipa::path(get, path = "/api/v1/status", tag = "server", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "This replica, the leader, and how current this replica is", body = crate::openapi::StatusAnswer), crate::openapi::ReadErrors))]
pub(crate) async fn status(State(state): State<Arc<AppState>>, _: Viewer) -> Result<Response, ApiError> {
    Ok(Json(json!({"data": report(&state).1})).into_response())
}

/// Passes a rollout command to the replica that leads the controller when this one does not: one
/// controller decides every transition, whichever replica the load balancer picked.
pub(crate) async fn forward_to_leader(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let command = path.starts_with("/api/v1/rollouts") || path == "/api/v1/alertmanager";
    if !command || request.method() != axum::http::Method::POST || state.cluster.leading() || !state.cluster.shared() {
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
    let Some((leader, _)) = state.cluster.leader().filter(|(l, seen)| l.expires_in_ms > seen.as_millis() as i64) else {
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
    let mut forward = state.forward_client.post(&url).body(body);
    for name in ["authorization", "x-api-key", "cookie", "content-type", "accept", "x-sluice-csrf"] {
        if let Some(v) = parts.headers.get(name) {
            forward = forward.header(name, v.as_bytes());
        }
    }
    let me = state.cluster.name();
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
