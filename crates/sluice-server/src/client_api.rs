//! The Unleash client API, so that Unleash SDKs evaluate Sluice flags locally: the features document with
//! ETag / 304, and the register and metrics calls SDKs make (metrics are kept as counts per flag and variant).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::BTreeMap;

use crate::error::parse_json;
use crate::{ApiError, AppState};

/// The environment an SDK's call is answered for (its token's), or the refusal to send.
fn allowed(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Arc<sluice_controller::EnvFlags>, Box<Response>> {
    state.evaluator(headers, query).map_err(|r| {
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
            crate::auth::EvalRefusal::Environment(why) => ApiError::bad_request(why).into_response(),
        })
    })
}

/// `GET /api/client/features`: the compiled Unleash features, serialized once per revision.
#[utoipa::path(get, path = "/api/client/features", tag = "unleash", security(("bearer" = []), ("apiKey" = []), ("unleash" = [])),
    params(("If-None-Match" = Option<String>, Header, description = "The ETag of the last document")),
    responses((status = 200, description = "Every flag as Unleash features", body = sluice_flags::unleash::ClientFeatures, headers(("ETag" = String))), (status = 304, description = "Unchanged since the ETag given"), crate::openapi::SdkErrors))]
pub(crate) async fn features(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let env = match allowed(&state, &headers, query.as_deref()) {
        Ok(env) => env,
        Err(r) => return *r,
    };
    let Some(published) = state.published_in(env.name()) else {
        return ApiError::not_found(format!("environment `{}` is not published yet", env.name())).into_response();
    };
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

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Registration {
    app_name: String,
    #[serde(default)]
    instance_id: Option<String>,
}

/// `POST /api/client/register`: remembers which applications use the flags.
#[utoipa::path(post, path = "/api/client/register", tag = "unleash", security(("bearer" = []), ("apiKey" = []), ("unleash" = [])),
    request_body = Registration,
    responses((status = 202, description = "Registered"), crate::openapi::SdkErrors))]
pub(crate) async fn register(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = allowed(&state, &headers, query.as_deref()) {
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

#[derive(utoipa::ToSchema, Deserialize)]
struct MetricsBody {
    bucket: Bucket,
}

#[derive(utoipa::ToSchema, Deserialize)]
struct Bucket {
    #[serde(default)]
    toggles: BTreeMap<String, ToggleCounts>,
}

#[derive(utoipa::ToSchema, Deserialize)]
struct ToggleCounts {
    #[serde(default)]
    yes: u64,
    #[serde(default)]
    no: u64,
    #[serde(default)]
    variants: BTreeMap<String, u64>,
}

/// Most flag and variant counts one metrics report may add, so that one report cannot hold the store's
/// writer for long (each count is one upsert). Kept counts are already bounded by the catalog: this only
/// matters for a catalog of thousands of flags, and what is over it is dropped and counted.
const MAX_COUNTS_PER_REPORT: usize = 10_000;

/// The variant Unleash SDKs report when a flag is disabled or serves no variant: kept for every flag.
const UNLEASH_DISABLED_VARIANT: &str = "disabled";

/// Flag and variant counts from metrics reports that were not kept since the process started: counts for a
/// flag the catalog lacks, for a variant the flag lacks (other than [`UNLEASH_DISABLED_VARIANT`]), or over
/// [`MAX_COUNTS_PER_REPORT`]. Process-wide rather than per [`AppState`] (whose fields this module does not
/// own); a server process has one state, so it is that server's count.
static DROPPED_COUNTS: AtomicU64 = AtomicU64::new(0);

/// How many reported counts were dropped since the process started, for `GET /api/v1/client-metrics`.
pub(crate) fn dropped_counts() -> u64 {
    DROPPED_COUNTS.load(Ordering::Relaxed)
}

/// `POST /api/client/metrics`: adds the SDK's evaluation counts per flag and per variant.
///
/// Rows are keyed by names the SDK sends, and are kept forever, so only names the catalog knows are kept: the
/// flag must exist and the variant must be one of its variants or Unleash's `disabled`. That bounds the table
/// by the catalog's size however many names are invented. Other counts are dropped and counted (see
/// [`dropped_counts`]) rather than refusing the report: an SDK retries a refused report forever. The work is
/// bounded by the catalog and the body limit: the catalog is walked and each of its names looked up in the
/// report, so invented names are never compared one by one.
#[utoipa::path(post, path = "/api/client/metrics", tag = "unleash", security(("bearer" = []), ("apiKey" = []), ("unleash" = [])),
    request_body = MetricsBody,
    responses((status = 202, description = "Counted"), crate::openapi::SdkErrors))]
pub(crate) async fn metrics(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let env = match allowed(&state, &headers, query.as_deref()) {
        Ok(env) => env,
        Err(r) => return *r,
    };
    let m: MetricsBody = match parse_json(&body) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    // A count the store cannot hold is refused, not clamped: the SDK's report is wrong, and it should hear so.
    for (flag, t) in &m.bucket.toggles {
        let variants = t.variants.iter().map(|(name, n)| (format!("variants.{name}"), *n));
        for (what, n) in [("yes".to_string(), t.yes), ("no".to_string(), t.no)].into_iter().chain(variants) {
            if i64::try_from(n).is_err() {
                let field = format!("bucket.toggles.{flag}.{what}");
                return ApiError::invalid(field, format!("{n} is more than a count can be ({})", i64::MAX))
                    .into_response();
            }
        }
    }
    let mut toggles = m.bucket.toggles;
    let mut counts = Vec::new();
    let mut dropped = 0;
    for flag in env.live().load().flags() {
        let Some(mut t) = toggles.remove(&flag.key) else { continue };
        counts.push((flag.key.clone(), "(enabled)".to_string(), t.yes));
        counts.push((flag.key.clone(), "(disabled)".to_string(), t.no));
        // `remove`: a flag with its own variant named `disabled` does not count it twice.
        let known = flag.variants.iter().map(|v| v.name.as_str()).chain([UNLEASH_DISABLED_VARIANT]);
        for name in known {
            if let Some(n) = t.variants.remove(name) {
                counts.push((flag.key.clone(), name.to_string(), n));
            }
        }
        dropped += t.variants.len();
    }
    // Flags Sluice does not have (a typo in an app, a deleted flag): their yes, no and variant counts.
    dropped += toggles.values().map(|t| 2 + t.variants.len()).sum::<usize>();
    if counts.len() > MAX_COUNTS_PER_REPORT {
        dropped += counts.len() - MAX_COUNTS_PER_REPORT;
        counts.truncate(MAX_COUNTS_PER_REPORT);
    }
    DROPPED_COUNTS.fetch_add(dropped as u64, Ordering::Relaxed);
    match state.store.record_client_metrics(env.name(), &counts).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ObservationBatch<'a> {
    #[serde(borrow)]
    observations: Vec<sluice_sources::metrics::Observation<'a>>,
}

/// `POST /api/v1/metrics` (an `sdk` token): a batch of request outcomes for the built-in metrics, all or
/// nothing. Each names the flag, the variant and the reason OFREP served it, and the stickiness key; an
/// unknown flag or variant, a negative or non-finite number, a 33rd value name of a flag or a batch of
/// more than 10,000 is refused with the entry's index in `field`.
#[utoipa::path(post, path = "/api/v1/metrics", tag = "ingestion", security(("bearer" = []), ("apiKey" = []), ("unleash" = [])),
    request_body = crate::openapi::ObservationBatch,
    responses((status = 202, description = "Recorded", body = crate::openapi::Accepted), crate::openapi::SdkErrors))]
pub(crate) async fn observations(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let env = match allowed(&state, &headers, query.as_deref()) {
        Ok(env) => env,
        Err(r) => return *r,
    };
    let mut batch: ObservationBatch = match parse_json(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let snapshot = env.live().load();
    // A batch is usually about one flag or a few: the last one found is tried first.
    let mut last: Option<&sluice_flags::Flag> = None;
    for (i, o) in batch.observations.iter().enumerate() {
        let found = match last {
            Some(f) if f.key == *o.flag => Some(f),
            _ => snapshot.flags().iter().find(|f| f.key == *o.flag),
        };
        last = found;
        let Some(flag) = found else {
            return ApiError::invalid(format!("observations[{i}].flag"), format!("no flag `{}`", &*o.flag))
                .into_response();
        };
        if !flag.variants.iter().any(|v| v.name == *o.variant) {
            let names: Vec<&str> = flag.variants.iter().map(|v| v.name.as_str()).collect();
            return ApiError::invalid(
                format!("observations[{i}].variant"),
                format!("flag `{}` has no variant `{}` (it has {})", &*o.flag, &*o.variant, names.join(", ")),
            )
            .into_response();
        }
    }
    drop(snapshot);
    // Kept under the flag's name in this environment: a staging outcome never reaches a production check.
    for o in &mut batch.observations {
        o.flag = sluice_sources::metrics::Text(sluice_sources::metrics::key(env.name(), &o.flag).into());
    }
    match state.metrics.record(&batch.observations, state.controller.now()) {
        Ok(()) => (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"accepted": batch.observations.len()})))
            .into_response(),
        Err(e) => {
            let field = e.index.map_or_else(|| "observations".to_string(), |i| format!("observations[{i}]"));
            ApiError::invalid(field, e.message).into_response()
        }
    }
}
