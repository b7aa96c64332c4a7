//! Errors as HTTP answers: a status and a JSON body that says what is wrong and, where it applies, which
//! field. Nothing here panics on user input.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sluice_store::StoreError;

/// An admin-API error: `{"error": CODE, "message": …, "field": …}`.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// Machine-readable code, e.g. `invalid`, `not_found`, `unauthorized`.
    pub error: &'static str,
    /// What is wrong and what to do.
    pub message: String,
    /// The offending field, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before trying again (a 429's `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, error, message: message.into(), field: None, retry_after: None }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { field: Some(field.into()), ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message) }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown token: send `Authorization: Bearer <token>` (see `sluice token create`)",
        )
    }

    /// 429 with `Retry-After: retry_after` (seconds); see [`IntoResponse`].
    pub fn too_many(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            field: None,
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    pub fn forbidden(needed: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", format!("this needs the `{needed}` role"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(&self)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(f) => ApiError {
                field: Some(f.field.clone()),
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", f.to_string())
            },
            StoreError::InvalidField { entity, field, message } => ApiError {
                field: Some(field.clone()),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!("{entity}, field `{field}`: {message}"),
                )
            },
            StoreError::NotFound { entity } => ApiError::not_found(format!("{entity} does not exist")),
            StoreError::Conflict { message } => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            // Other replicas kept changing the catalog while this one planned: the caller retries.
            stale @ StoreError::Stale { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", stale.to_string()),
            // The lease changed hands under this request: another replica leads now.
            fenced @ StoreError::Fenced { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", format!("{fenced}; retry in a few seconds"))
            }
            down if down.is_unreachable() => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", down.to_string())
            }
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string()),
        }
    }
}

impl From<sluice_controller::ControllerError> for ApiError {
    fn from(e: sluice_controller::ControllerError) -> Self {
        use sluice_controller::ControllerError as C;
        let message = e.to_string();
        match e {
            C::NotFound(m) => ApiError::not_found(m),
            C::Invalid { field, message } => ApiError::invalid(field, message),
            C::PlanInvalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            C::PluginsMissing(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_available", message),
            C::Refused { code, message } => ApiError::new(StatusCode::CONFLICT, code, message),
            C::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            C::Store(s) => s.into(),
            C::Corrupt(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
            C::Crashed(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "crashed", m),
        }
    }
}

/// Parses a JSON body, naming the offending field (`ramp.percent: invalid value …`) when it does not fit.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    // UTF-8 is checked once for the whole body: serde_json then reads strings without checking each again
    // (a quarter faster on a batch of observations).
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(format!("the body is not valid JSON: it is not UTF-8 (at byte {})", e.valid_up_to()))
    })?;
    // Every body is an object. serde would also read a struct from an array of its fields (`[]` as a
    // struct whose fields all have defaults), which the API document forbids and nobody means.
    if text.trim_start().starts_with('[') {
        return Err(ApiError::invalid("", "the body must be a JSON object, not an array"));
    }
    // The fast path first: tracking the path costs on every field, and only a refusal needs it.
    if let Ok(parsed) = serde_json::from_str(text) {
        return Ok(parsed);
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("the body is not valid JSON: {inner}"))
        } else {
            let message = out_of_range(&path, &inner.to_string()).unwrap_or_else(|| inner.to_string());
            ApiError::invalid(if path == "." { String::new() } else { path }, message)
        }
    })
}

/// serde's "invalid value: integer `300`, expected u8" said as the range the field takes: a percentage's
/// 0..100, else the type's.
fn out_of_range(path: &str, message: &str) -> Option<String> {
    let rest = message.strip_prefix("invalid value: integer `")?;
    let (number, rest) = rest.split_once('`')?;
    let ty = rest.strip_prefix(", expected ")?.split_whitespace().next()?;
    let range = if path.rsplit('.').next() == Some("percent") {
        "0..100".to_string()
    } else {
        match ty {
            "u8" => format!("0..{}", u8::MAX),
            "u16" => format!("0..{}", u16::MAX),
            "u32" => format!("0..{}", u32::MAX),
            "u64" => format!("0..{}", u64::MAX),
            "i32" => format!("{}..{}", i32::MIN, i32::MAX),
            "i64" => format!("{}..{}", i64::MIN, i64::MAX),
            _ => return None,
        }
    };
    Some(format!("{number} is outside {range}"))
}

/// Turns the framework's own plain-text errors (413 body too large, 405, 415, a path that does not parse)
/// into the same JSON shape as every other error, so that clients parse one format.
pub async fn json_errors(response: Response) -> Response {
    rewrite_plain_error(response, false).await
}

/// [`json_errors`] in OFREP's shape (`errorCode`, `errorDetails`), for the OFREP routes: OFREP clients
/// read those fields whatever failed.
pub async fn ofrep_errors(response: Response) -> Response {
    rewrite_plain_error(response, true).await
}

async fn rewrite_plain_error(response: Response, ofrep: bool) -> Response {
    let status = response.status();
    let is_json = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/event-stream")
    });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_string();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        message = format!("the request body is larger than {} bytes", crate::MAX_BODY_BYTES);
    } else if message.is_empty() {
        message = status.canonical_reason().unwrap_or("error").to_string();
    }
    let mut out = if ofrep {
        (status, axum::Json(serde_json::json!({"errorCode": "GENERAL", "errorDetails": message}))).into_response()
    } else {
        ApiError::new(status, code, message).into_response()
    };
    for (name, value) in parts.headers.iter() {
        if name == header::ALLOW || name == header::RETRY_AFTER {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// Query parameters, like axum's `Query`, but a bad one is refused as every bad input is: a 422 that names
/// the parameter (`{"field": "limit", …}`).
pub(crate) struct Params<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        // `env` picks the environment (`auth::InEnv`), for every endpoint alike: not a parameter of this one.
        let rest: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k.as_ref() != "env"))
            .finish();
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(rest.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Params)
            .map_err(|e| ApiError::invalid(e.path().to_string(), e.inner().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_json;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        percent: u8,
        count: Option<u32>,
    }

    #[test]
    fn an_array_is_not_a_body() {
        // serde alone takes `[]` as a struct of defaults; schemathesis found a token rotated by `[]`.
        let e = parse_json::<Body>(b" [1, 2]").unwrap_err();
        assert_eq!((e.status.as_u16(), e.error), (422, "invalid"));
        assert!(parse_json::<Body>(br#"{"percent": 1}"#).is_ok());
    }

    #[test]
    fn a_number_out_of_range_names_the_range() {
        let e = parse_json::<Body>(br#"{"percent": 300}"#).unwrap_err();
        assert_eq!((e.field.as_deref(), e.message.as_str()), (Some("percent"), "300 is outside 0..100"));
        let e = parse_json::<Body>(br#"{"percent": 1, "count": -1}"#).unwrap_err();
        assert_eq!(e.message, "-1 is outside 0..4294967295");
    }
}
