//! The Unleash client API, so that Unleash SDKs evaluate Sluice flags locally: the features document with
//! ETag / 304, and the register and metrics calls SDKs make (metrics are kept as counts per flag and variant).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::BTreeMap;

use crate::error::parse_json;
use crate::{ApiError, AppState};

fn allowed(state: &AppState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    state.evaluator(headers).map(|_| ()).map_err(|r| {
        Box::new(match r {
            crate::auth::EvalRefusal::Unauthorized => ApiError::unauthorized().into_response(),
            crate::auth::EvalRefusal::Forbidden { role } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", crate::auth::forbidden_detail(role)).into_response()
            }
            crate::auth::EvalRefusal::RateLimited { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after.to_string())],
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "rate limit exceeded"),
            )
                .into_response(),
        })
    })
}

/// `GET /api/client/features`: the compiled Unleash features, serialized once per revision.
pub(crate) async fn features(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(r) = allowed(&state, &headers) {
        return *r;
    }
    let published = state.published.load();
    let fresh = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == published.etag.as_bytes());
    if fresh {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, published.etag.clone())]).into_response();
    }
    (
        StatusCode::OK,
        [(header::ETAG, published.etag.clone()), (header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        published.client_features.clone(),
    )
        .into_response()
}

/// Application instances remembered from `register`.
const MAX_CLIENT_APPS: usize = 10_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Registration {
    app_name: String,
    #[serde(default)]
    instance_id: Option<String>,
}

/// `POST /api/client/register`: remembers which applications use the flags.
pub(crate) async fn register(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = allowed(&state, &headers) {
        return *r;
    }
    let reg: Registration = match parse_json(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    // Kept in memory, bounded: the fields people look at, for at most MAX_CLIENT_APPS instances.
    let raw: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let kept: serde_json::Map<String, serde_json::Value> =
        ["appName", "instanceId", "sdkVersion", "environment", "started", "interval"]
            .iter()
            .filter_map(|k| raw.get(*k).filter(|v| v.to_string().len() <= 200).map(|v| (k.to_string(), v.clone())))
            .collect();
    let key = format!("{}/{}", reg.app_name, reg.instance_id.unwrap_or_default());
    let mut apps = state.client_apps.lock().unwrap_or_else(|p| p.into_inner());
    if apps.len() >= MAX_CLIENT_APPS && !apps.contains_key(&key) {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_apps",
            format!("at most {MAX_CLIENT_APPS} registered application instances"),
        )
        .into_response();
    }
    apps.insert(key, serde_json::Value::Object(kept));
    StatusCode::ACCEPTED.into_response()
}

#[derive(Deserialize)]
struct MetricsBody {
    bucket: Bucket,
}

#[derive(Deserialize)]
struct Bucket {
    #[serde(default)]
    toggles: BTreeMap<String, ToggleCounts>,
}

#[derive(Deserialize)]
struct ToggleCounts {
    #[serde(default)]
    yes: u64,
    #[serde(default)]
    no: u64,
    #[serde(default)]
    variants: BTreeMap<String, u64>,
}

/// `POST /api/client/metrics`: adds the SDK's evaluation counts per flag and per variant.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = allowed(&state, &headers) {
        return *r;
    }
    let m: MetricsBody = match parse_json(&body) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let mut counts = Vec::new();
    let snapshot = state.live().load();
    // Counts for flags Sluice does not have (a typo in an app, a deleted flag) would be kept forever.
    for (flag, t) in m.bucket.toggles.into_iter().filter(|(f, _)| snapshot.flags().iter().any(|x| &x.key == f)) {
        counts.push((flag.clone(), "(enabled)".to_string(), t.yes));
        counts.push((flag.clone(), "(disabled)".to_string(), t.no));
        counts.extend(t.variants.into_iter().map(|(variant, n)| (flag.clone(), variant, n)));
    }
    if counts.len() > 100_000 {
        return ApiError::invalid("bucket.toggles", "at most 100000 flag and variant counts per report")
            .into_response();
    }
    match state.store.record_client_metrics(&counts).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
