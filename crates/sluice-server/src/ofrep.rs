//! OpenFeature Remote Evaluation Protocol (OFREP): single and bulk evaluation, with the protocol's error
//! codes and statuses, ETag / 304 on the bulk endpoint, and the change stream the web provider listens to.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sluice_flags::ofrep::{ErrorCode, Resolution};
use sluice_flags::{Context, Snapshot};

use crate::auth::EvalRefusal;
use crate::AppState;

fn error_body(key: Option<&str>, code: ErrorCode, details: impl Into<String>) -> Value {
    let mut body = json!({"errorCode": code, "errorDetails": details.into()});
    if let Some(k) = key {
        body["key"] = json!(k);
    }
    body
}

fn refusal(r: EvalRefusal) -> Response {
    match r {
        EvalRefusal::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(json!({"errorCode": ErrorCode::General, "errorDetails": "missing or unknown token"})),
        )
            .into_response(),
        EvalRefusal::RateLimited { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after.to_string())],
            axum::Json(json!({"errorCode": ErrorCode::General, "errorDetails": "rate limit exceeded"})),
        )
            .into_response(),
    }
}

/// The evaluation context of an OFREP request body: `{"context": {...}}`; an empty body is an empty context.
fn context_of(body: &[u8], key: Option<&str>) -> Result<Context, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Context::default());
    }
    let bad = |code, details: String| {
        Box::new((StatusCode::BAD_REQUEST, axum::Json(error_body(key, code, details))).into_response())
    };
    let parsed: Value =
        serde_json::from_slice(body).map_err(|e| bad(ErrorCode::ParseError, format!("the body is not JSON: {e}")))?;
    let Value::Object(mut top) = parsed else {
        return Err(bad(ErrorCode::ParseError, "the body must be a JSON object".into()));
    };
    match top.remove("context") {
        None | Some(Value::Null) => Ok(Context::default()),
        Some(Value::Object(fields)) => {
            Context::from_ofrep(&fields).map_err(|e| bad(ErrorCode::InvalidContext, e.message))
        }
        Some(_) => Err(bad(ErrorCode::InvalidContext, "`context` must be an object".into())),
    }
}

fn success(r: &Resolution<'_>) -> Value {
    json!({"key": r.key, "value": r.value, "reason": r.reason, "variant": r.variant, "metadata": {}})
}

/// One flag's answer or error, as both endpoints give it.
fn answer(snapshot: &Snapshot, key: &str, ctx: &Context) -> Result<Value, (StatusCode, Value)> {
    match snapshot.resolve(key, ctx) {
        None => {
            Err((StatusCode::NOT_FOUND, error_body(Some(key), ErrorCode::FlagNotFound, format!("no flag `{key}`"))))
        }
        Some(_) if snapshot.needs_targeting_key(key, ctx) => Err((
            StatusCode::BAD_REQUEST,
            error_body(
                Some(key),
                ErrorCode::TargetingKeyMissing,
                "this flag splits contexts by a key the context does not carry (targetingKey, or its stickiness field)",
            ),
        )),
        Some(r) => Ok(success(&r)),
    }
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub(crate) async fn evaluate_one(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = state.evaluator(&headers) {
        return refusal(r);
    }
    let ctx = match context_of(&body, Some(&key)) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    match answer(&state.live.load(), &key, &ctx) {
        Ok(body) => axum::Json(body).into_response(),
        Err((status, body)) => (status, axum::Json(body)).into_response(),
    }
}

/// `POST /ofrep/v1/evaluate/flags`: every flag for one context. The ETag is the hash of the answer itself,
/// so it changes exactly when the answer does (a catalog change, or a time-bound override expiring).
pub(crate) async fn evaluate_all(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = state.evaluator(&headers) {
        return refusal(r);
    }
    let ctx = match context_of(&body, None) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let snapshot = state.live.load();
    let flags: Vec<Value> = snapshot
        .keys()
        .map(|key| match answer(&snapshot, key, &ctx) {
            Ok(v) => v,
            Err((_, v)) => v,
        })
        .collect();
    // The stream is advertised relative to the provider's base URL, so no host name is needed here.
    let body = serde_json::to_vec(&json!({
        "flags": flags,
        "metadata": {},
        "eventStreams": [{"type": "sse", "endpoint": {"requestUri": "/ofrep/v1/events"}, "inactivityDelaySec": 120}],
    }))
    .expect("json");
    let digest = Sha256::digest(&body);
    let etag = format!("W/\"{}\"", digest[..12].iter().map(|b| format!("{b:02x}")).collect::<String>());
    let etag = HeaderValue::from_str(&etag).expect("ascii");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag.to_str().unwrap_or_default() || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (StatusCode::OK, [(header::ETAG, etag), (header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
        .into_response()
}

/// `GET /ofrep/v1/configuration`: what this server supports, including its event stream.
pub(crate) async fn configuration(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(r) = state.evaluator(&headers) {
        return refusal(r);
    }
    axum::Json(json!({
        "name": "sluice",
        "capabilities": {
            "cacheInvalidation": {"polling": {"enabled": true, "minPollingIntervalMs": 1000}},
            "flagEvaluation": {"supportedTypes": ["boolean", "string", "integer", "float", "object"]},
        },
        "eventStreams": [{"type": "sse", "endpoint": {"requestUri": "/ofrep/v1/events"}}],
    }))
    .into_response()
}
