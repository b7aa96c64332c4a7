//! The API document: OpenAPI 3.1, served at `GET /api/v1/openapi.json`. Every operation comes from the
//! `#[utoipa::path]` on its handler and every body from the type the handler reads or writes, so the
//! document changes with the code; `tests/contract.rs` fails when a route the router serves is missing
//! here, and schemathesis (`scripts/api-fuzz`) checks the live server against it.
//!
//! The envelopes below (`{"data": …, "revision": …, "audit": […]}`) are what handlers build with `json!`;
//! they exist only to be described.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;
use sluice_flags::{Flag, Override, SegmentDef};
use sluice_store::{AuditEvent, TokenInfo};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::ApiError;

/// The document, built once.
pub fn document() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| ApiDoc::openapi().to_pretty_json().expect("the API document serializes"))
}

/// `GET /api/v1/openapi.json`: this document. It holds no data, so it needs no token.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], document()).into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice",
        description = "Feature flags (OFREP and the Unleash client API), rollouts, built-in metrics and the audit log. \
                       Tokens: `admin` ⊇ `operator` ⊇ `viewer` for the admin API; `sdk` for evaluation and ingestion.",
        license(name = "Apache-2.0")
    ),
    paths(
        crate::ofrep::evaluate_one,
        crate::ofrep::evaluate_all,
        crate::ofrep::configuration,
        crate::stream::ofrep_events,
        crate::client_api::features,
        crate::client_api::register,
        crate::client_api::metrics,
        crate::client_api::observations,
        crate::admin::list_flags,
        crate::admin::get_flag,
        crate::admin::put_flag,
        crate::admin::delete_flag,
        crate::admin::set_ramp,
        crate::admin::enable,
        crate::admin::disable,
        crate::admin::list_overrides,
        crate::admin::add_override,
        crate::admin::clear_overrides,
        crate::admin::list_envs,
        crate::admin::create_env,
        crate::admin::rename_env,
        crate::admin::delete_env,
        crate::admin::list_segments,
        crate::admin::put_segment,
        crate::admin::delete_segment,
        crate::admin::list_tokens,
        crate::admin::create_token,
        crate::admin::revoke_token,
        crate::admin::rotate_token,
        crate::admin::audit,
        crate::admin::audit_head,
        crate::admin::audit_chain,
        crate::admin::audit_verify,
        crate::admin::import_unleash,
        crate::admin::import_flags,
        crate::admin::client_metrics,
        crate::stream::changes,
        crate::rollouts::list,
        crate::rollouts::start,
        crate::rollouts::get,
        crate::rollouts::decisions,
        crate::rollouts::command,
        crate::rollouts::alertmanager,
        crate::replica::status,
        crate::replica::readyz,
        crate::exposition::metrics,
        crate::dashboard::index,
        crate::dashboard::script,
        crate::dashboard::style,
        crate::dashboard::login,
        crate::dashboard::session,
        crate::dashboard::logout,
        crate::healthz,
        openapi_json,
    ),
    components(schemas(ApiError, OfrepError)),
    modifiers(&Security),
    tags(
        (name = "ofrep", description = "OpenFeature Remote Evaluation Protocol (an `sdk` token)"),
        (name = "unleash", description = "The Unleash client API, for Unleash SDKs (an `sdk` token)"),
        (name = "ingestion", description = "Built-in metrics: outcomes reported by the app (an `sdk` token)"),
        (name = "flags", description = "Flags, overrides and segments (viewer reads, operator writes)"),
        (name = "environments", description = "Environments: named sets of flag states in one server (viewer reads, admin writes). Every admin endpoint takes `?env=NAME`; without it, the caller's only environment or the server's only one"),
        (name = "tokens", description = "API tokens (admin)"),
        (name = "audit", description = "The hash-chained audit log (viewer)"),
        (name = "rollouts", description = "Rollouts and their decisions (viewer reads, operator decides)"),
        (name = "server", description = "Health, readiness, replicas and Prometheus metrics"),
        (name = "dashboard", description = "The dashboard and its session"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// The credentials: a bearer token, the same token in `X-API-Key` (OFREP's ApiKeyAuth), or the bare token
/// in `Authorization` that Unleash SDKs send.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme("apiKey", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
        components
            .add_security_scheme("unleash", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("Authorization"))));
    }
}

/// The answers `codes` give with a body of `schema`, and the one every route may give before it runs:
/// 431 for a request head over [`crate::MAX_HEAD_BYTES`] (the server's own error shape, on OFREP too).
fn answers(codes: &[(&str, &str)], schema: &str) -> BTreeMap<String, RefOr<Response>> {
    let mut out = bodies(codes, schema);
    out.extend(bodies(&[HEAD_TOO_LARGE], "ApiError"));
    out
}

fn bodies(codes: &[(&str, &str)], schema: &str) -> BTreeMap<String, RefOr<Response>> {
    codes
        .iter()
        .map(|(code, what)| {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build();
            (
                code.to_string(),
                ResponseBuilder::new().description(*what).content("application/json", content).build().into(),
            )
        })
        .collect()
}

const NO_TOKEN: (&str, &str) = ("401", "No token, or one that is unknown, revoked or unreadable");
const WRONG_ROLE: (&str, &str) = ("403", "The token's role may not do this");
const MALFORMED: (&str, &str) = ("400", "The body is not JSON");
const INVALID: (&str, &str) = ("422", "A field is invalid: `field` names it");
const TOO_LARGE: (&str, &str) = ("413", "The body is over the size limit");
const HEAD_TOO_LARGE: (&str, &str) = ("431", "The request's URI and headers are over 64 KiB");
const LIMITED: (&str, &str) = ("429", "Over a rate or stream limit: `Retry-After` says when to try again");
const UNAVAILABLE: (&str, &str) =
    ("503", "The store is out of reach, or the leader is (a follower forwards rollout commands)");

/// What an admin read may answer besides its data.
pub(crate) struct ReadErrors;

impl utoipa::IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let several = ("409", "The server has several environments and the call names none (`?env=`)");
        answers(&[NO_TOKEN, WRONG_ROLE, ("404", "No such entity"), several, INVALID, LIMITED, UNAVAILABLE], "ApiError")
    }
}

/// What an admin write may answer besides its data.
pub(crate) struct WriteErrors;

impl utoipa::IntoResponses for WriteErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(
            &[
                MALFORMED,
                NO_TOKEN,
                WRONG_ROLE,
                ("404", "No such entity"),
                ("409", "In conflict with the state: a rollout drives the flag, it exists, it is in use"),
                ("412", "`If-None-Match: *` and it exists"),
                TOO_LARGE,
                INVALID,
                LIMITED,
                (
                    "502",
                    "A follower forwarded a rollout command and lost the leader's answer: it may have been carried out",
                ),
                UNAVAILABLE,
            ],
            "ApiError",
        )
    }
}

/// What an `sdk` endpoint outside OFREP may answer besides its data.
pub(crate) struct SdkErrors;

impl utoipa::IntoResponses for SdkErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(&[MALFORMED, NO_TOKEN, WRONG_ROLE, TOO_LARGE, INVALID, LIMITED, UNAVAILABLE], "ApiError")
    }
}

/// What an OFREP endpoint may answer besides an evaluation, in OFREP's own error shape.
pub(crate) struct OfrepErrors;

impl utoipa::IntoResponses for OfrepErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(
            &[
                ("400", "The body is not a JSON object, the context is invalid, or a key the flag needs is missing"),
                NO_TOKEN,
                WRONG_ROLE,
                ("404", "No such flag"),
                TOO_LARGE,
                LIMITED,
            ],
            "OfrepError",
        )
    }
}

/// An OFREP error: `{"key"?, "errorCode", "errorDetails"}`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(crate) struct OfrepError {
    /// The flag, when the request named one.
    key: Option<String>,
    #[schema(value_type = String, example = "FLAG_NOT_FOUND")]
    error_code: String,
    error_details: String,
}

/// An OFREP request: the evaluation context (an empty body is an empty context).
#[derive(ToSchema)]
pub(crate) struct OfrepRequest {
    /// `targetingKey` and any other fields (strings, numbers, booleans).
    context: Option<BTreeMap<String, Value>>,
}

/// One flag's answer: its value and variant and why, or an error for that flag.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(crate) struct OfrepEvaluation {
    key: String,
    /// The variant's value: boolean, string, number or object.
    value: Option<Value>,
    reason: Option<sluice_flags::ofrep::Reason>,
    variant: Option<String>,
    metadata: Option<BTreeMap<String, Value>>,
    error_code: Option<sluice_flags::ofrep::ErrorCode>,
    error_details: Option<String>,
}

/// Every flag for one context, with the event stream that says when to fetch again.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(crate) struct OfrepBulk {
    flags: Vec<OfrepEvaluation>,
    metadata: BTreeMap<String, Value>,
    event_streams: Vec<Value>,
}

/// Outcomes an app reports for the built-in metrics, at most 10,000 a request.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ObservationBatch {
    observations: Vec<Observation>,
}

/// One request's outcome under one flag's variant.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Observation {
    flag: String,
    variant: String,
    reason: sluice_flags::ofrep::Reason,
    /// The stickiness key (the user id).
    key: Option<String>,
    ok: bool,
    #[schema(minimum = 0)]
    latency_ms: Option<f64>,
    /// Named numbers, each ≥ 0.
    values: Option<BTreeMap<String, f64>>,
}

#[derive(ToSchema)]
pub(crate) struct Accepted {
    accepted: u64,
}

/// The flags, and the catalog revision they are at.
#[derive(ToSchema)]
pub(crate) struct FlagList {
    data: Vec<Flag>,
    revision: i64,
}

#[derive(ToSchema)]
pub(crate) struct OneFlag {
    data: Flag,
}

/// A write's answer: the flag as it now is, the new catalog revision, and the audit events it wrote.
#[derive(ToSchema)]
pub(crate) struct FlagWritten {
    data: Flag,
    revision: i64,
    audit: Vec<AuditEvent>,
}

/// A deletion's answer.
#[derive(ToSchema)]
pub(crate) struct Deleted {
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    revision: i64,
    audit: Vec<AuditEvent>,
}

#[derive(ToSchema)]
pub(crate) struct OverrideList {
    data: Vec<Override>,
}

#[derive(ToSchema)]
pub(crate) struct SegmentList {
    data: Vec<SegmentDef>,
}

#[derive(ToSchema)]
pub(crate) struct SegmentWritten {
    data: Option<SegmentDef>,
    revision: i64,
    audit: Vec<AuditEvent>,
}

/// One environment.
#[derive(ToSchema)]
pub(crate) struct EnvSummary {
    name: String,
    /// The catalog revision at its last change: its ETag.
    revision: i64,
    /// Flags in it (every flag is in every environment).
    flags: u64,
    /// Flags enabled in it.
    enabled: u64,
}

#[derive(ToSchema)]
pub(crate) struct EnvList {
    data: Vec<EnvSummary>,
}

#[derive(ToSchema)]
pub(crate) struct EnvWritten {
    data: EnvSummary,
    audit: Vec<AuditEvent>,
}

#[derive(ToSchema)]
pub(crate) struct TokenList {
    data: Vec<TokenInfo>,
}

/// The token's text is in this answer only.
#[derive(ToSchema)]
pub(crate) struct TokenCreated {
    data: TokenInfo,
    token: String,
}

#[derive(ToSchema)]
pub(crate) struct TokenRevoked {
    audit: Vec<AuditEvent>,
}

#[derive(ToSchema)]
pub(crate) struct TokenRotated {
    data: TokenInfo,
    token: String,
    /// When the old secret stops working (RFC 3339), or null.
    old_secret_valid_until: Option<String>,
    audit: Vec<AuditEvent>,
}

#[derive(ToSchema)]
pub(crate) struct AuditPage {
    data: Vec<AuditEvent>,
}

/// The chain's verdict: `{"intact": …}` or where it breaks.
#[derive(ToSchema)]
pub(crate) struct ChainVerdict {
    data: Value,
}

#[derive(ToSchema)]
pub(crate) struct ChainHead {
    head: String,
}

#[derive(ToSchema)]
pub(crate) struct Imported {
    data: ImportCounts,
    revision: i64,
    audit: Vec<AuditEvent>,
}

#[derive(ToSchema)]
pub(crate) struct ImportCounts {
    flags: u64,
    segments: u64,
}

#[derive(ToSchema)]
pub(crate) struct ClientMetrics {
    data: Vec<ClientMetricCount>,
    applications: Vec<Value>,
    dropped: u64,
}

#[derive(ToSchema)]
pub(crate) struct ClientMetricCount {
    flag: String,
    variant: String,
    count: i64,
}

/// A rollout as `sluice rollout status` shows it.
#[derive(ToSchema)]
pub(crate) struct RolloutAnswer {
    data: BTreeMap<String, Value>,
}

#[derive(ToSchema)]
pub(crate) struct RolloutList {
    data: Vec<BTreeMap<String, Value>>,
}

#[derive(ToSchema)]
pub(crate) struct DecisionList {
    data: Vec<BTreeMap<String, Value>>,
}

/// What a command did.
#[derive(ToSchema)]
pub(crate) struct CommandAnswer {
    data: Value,
}

/// What became of each firing alert.
#[derive(ToSchema)]
pub(crate) struct AlertsAnswer {
    signalled: Vec<Value>,
    ignored: Vec<Value>,
    failed: Vec<Value>,
}

#[derive(ToSchema)]
pub(crate) struct StatusAnswer {
    data: BTreeMap<String, Value>,
}

/// Who the dashboard session is, with the value writes echo in `X-CSRF-Token`.
#[derive(ToSchema)]
pub(crate) struct SessionAnswer {
    name: String,
    role: String,
    csrf: String,
    can_operate: bool,
}
