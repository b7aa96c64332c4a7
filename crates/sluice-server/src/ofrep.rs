//! OpenFeature Remote Evaluation Protocol (OFREP): single and bulk evaluation, with the protocol's error
//! codes and statuses, ETag / 304 on the bulk endpoint, and the change stream the web provider listens to.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};
use sluice_flags::ofrep::{ErrorCode, Reason};
use sluice_flags::{Context, OfrepOutcome};

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
        EvalRefusal::Forbidden { role } => (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"errorCode": ErrorCode::General, "errorDetails": crate::auth::forbidden_detail(role)})),
        )
            .into_response(),
        EvalRefusal::RateLimited { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after.to_string())],
            axum::Json(json!({"errorCode": ErrorCode::General, "errorDetails": "rate limit exceeded"})),
        )
            .into_response(),
        EvalRefusal::Environment(why) => {
            (StatusCode::BAD_REQUEST, axum::Json(json!({"errorCode": ErrorCode::General, "errorDetails": why})))
                .into_response()
        }
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

/// One flag's OFREP entry, serialized straight from borrowed data: the hot path builds no JSON tree.
#[derive(Serialize)]
#[serde(untagged)]
enum Entry<'s> {
    Ok {
        key: &'s str,
        value: &'s Value,
        reason: Reason,
        variant: &'s str,
        metadata: Empty,
    },
    Err {
        key: &'s str,
        #[serde(rename = "errorCode")]
        error_code: ErrorCode,
        #[serde(rename = "errorDetails")]
        error_details: &'static str,
    },
}

#[derive(Serialize)]
struct Empty {}

const KEY_MISSING: &str =
    "this flag splits contexts by a key the context does not carry (targetingKey, or its stickiness field)";

impl<'s> From<OfrepOutcome<'s>> for Entry<'s> {
    fn from(o: OfrepOutcome<'s>) -> Self {
        match o {
            OfrepOutcome::Resolved(r) => {
                Entry::Ok { key: r.key, value: r.value, reason: r.reason, variant: r.variant, metadata: Empty {} }
            }
            OfrepOutcome::TargetingKeyMissing(key) => {
                Entry::Err { key, error_code: ErrorCode::TargetingKeyMissing, error_details: KEY_MISSING }
            }
        }
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags/{key}", tag = "ofrep", security(("bearer" = []), ("apiKey" = []), ("unleash" = [])),
    params(("key" = String, Path, description = "The flag's key")), request_body = Option<crate::openapi::OfrepRequest>,
    responses((status = 200, description = "The flag's value for this context", body = crate::openapi::OfrepEvaluation), crate::openapi::OfrepErrors))]
pub(crate) async fn evaluate_one(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let env = match state.evaluator(&headers, query.as_deref()) {
        Ok(env) => env,
        Err(r) => return refusal(r),
    };
    let ctx = match context_of(&body, Some(&key)) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    match env.live().load().evaluate_ofrep(&key, &ctx) {
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(error_body(Some(&key), ErrorCode::FlagNotFound, format!("no flag `{key}`"))),
        )
            .into_response(),
        Some(outcome) => {
            let status = match outcome {
                OfrepOutcome::Resolved(_) => StatusCode::OK,
                OfrepOutcome::TargetingKeyMissing(_) => StatusCode::BAD_REQUEST,
            };
            json_response(status, serde_json::to_vec(&Entry::from(outcome)).expect("json"))
        }
    }
}

/// `POST /ofrep/v1/evaluate/flags`: every flag for one context. The ETag is the hash of the answer itself,
/// so it changes exactly when the answer does (a catalog change, or a time-bound override expiring).
#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags", tag = "ofrep", security(("bearer" = []), ("apiKey" = []), ("unleash" = [])),
    params(("If-None-Match" = Option<String>, Header, description = "The ETag of the last answer")), request_body = Option<crate::openapi::OfrepRequest>,
    responses((status = 200, description = "Every flag for this context", body = crate::openapi::OfrepBulk, headers(("ETag" = String))), (status = 304, description = "Unchanged since the ETag given"), crate::openapi::OfrepErrors))]
pub(crate) async fn evaluate_all(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let env = match state.evaluator(&headers, query.as_deref()) {
        Ok(env) => env,
        Err(r) => return refusal(r),
    };
    let ctx = match context_of(&body, None) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let snapshot = env.live().load();
    let mut flags: Vec<Entry<'_>> = Vec::with_capacity(snapshot.len());
    snapshot.evaluate_ofrep_each(&ctx, |o| flags.push(Entry::from(o)));
    let bulk = Bulk { flags, metadata: Empty {}, event_streams: event_streams(env.name()) };
    let body = serde_json::to_vec(&bulk).expect("json");
    // A weak ETag of the answer itself; collisions only cost a missed refresh until the next change, and
    // SipHash is several times cheaper than a cryptographic digest of a 30 KB body.
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hasher::write(&mut hasher, &body);
    let etag = HeaderValue::from_str(&format!("W/\"{:016x}\"", std::hash::Hasher::finish(&hasher))).expect("ascii");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag.to_str().unwrap_or_default() || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mut response = json_response(StatusCode::OK, body);
    response.headers_mut().insert(header::ETAG, etag);
    response
}

#[derive(Serialize)]
struct Bulk<'s> {
    flags: Vec<Entry<'s>>,
    metadata: Empty,
    #[serde(rename = "eventStreams")]
    event_streams: [EventStream; 1],
}

/// Advertised relative to the provider's base URL, so no host name is needed here.
#[derive(Serialize)]
struct EventStream {
    #[serde(rename = "type")]
    kind: &'static str,
    endpoint: Endpoint,
    #[serde(rename = "inactivityDelaySec")]
    inactivity_delay_sec: u32,
}

#[derive(Serialize)]
struct Endpoint {
    #[serde(rename = "requestUri")]
    request_uri: String,
}

/// The change stream of the environment `env`: a browser's `EventSource` sends no token, so the
/// environment is in the URI the bulk answer gives its provider, and its stream hears that environment's
/// changes only.
fn event_streams(env: &str) -> [EventStream; 1] {
    let request_uri =
        format!("/ofrep/v1/events?env={}", form_urlencoded::byte_serialize(env.as_bytes()).collect::<String>());
    [EventStream { kind: "sse", endpoint: Endpoint { request_uri }, inactivity_delay_sec: 120 }]
}

/// `GET /ofrep/v1/configuration`: what this server supports, including its event stream.
#[utoipa::path(get, path = "/ofrep/v1/configuration", tag = "ofrep", security(("bearer" = []), ("apiKey" = []), ("unleash" = [])),
    responses((status = 200, description = "What this server supports", body = Object), crate::openapi::OfrepErrors))]
pub(crate) async fn configuration(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let env = match state.evaluator(&headers, query.as_deref()) {
        Ok(env) => env,
        Err(r) => return refusal(r),
    };
    axum::Json(json!({
        "name": "sluice",
        "capabilities": {
            "cacheInvalidation": {"polling": {"enabled": true, "minPollingIntervalMs": 1000}},
            // Every OpenFeature type is served: a variant's value is a boolean, string, number or object.
            "flagEvaluation": {"unsupportedTypes": []},
        },
        "eventStreams": event_streams(env.name()),
    }))
    .into_response()
}
