//! The dashboard (`GET /`): a page and its script and style, embedded in the binary (no CDN: it works with
//! no internet), reading the same JSON API and change stream as the CLI.
//!
//! A person logs in with a token once; the server answers with a session cookie that is `HttpOnly`,
//! `SameSite=Strict`, and stateless: `NAME.DIGEST.EXPIRY.SIGNATURE`, signed (HMAC-SHA256) with a key kept in
//! the store, so any replica on the same store accepts it. It names the token by the first 16 hex digits of
//! its digest, so it ends when that token is revoked, and it carries no role: the role is the token's, read
//! at each request. Writes made with the cookie need the `X-Sluice-CSRF` header, a value derived from the
//! cookie that only the page (which reads `GET /ui/session`) can know; a request carrying a bearer token
//! needs none, since a browser never sends one by itself.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use sluice_store::{Principal, Role};

use crate::{ApiError, AppState};

/// The cookie's name.
pub(crate) const COOKIE: &str = "sluice_session";
/// The header a cookie-authenticated write must carry.
pub(crate) const CSRF_HEADER: &str = "x-sluice-csrf";
/// How long a session lasts: a working day.
const SESSION_SECS: i64 = 12 * 3600;

const INDEX: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/app.css");

/// The session-signing key, from the store.
pub(crate) struct SessionKey(Vec<u8>);

impl SessionKey {
    /// The key as the store keeps it (hex). Anything else is a damaged store: a key that is not what was
    /// drawn would sign sessions nobody can trust.
    pub(crate) fn from_hex(text: &str) -> Result<SessionKey, sluice_store::StoreError> {
        match hex::decode(text) {
            Ok(bytes) if !bytes.is_empty() => Ok(SessionKey(bytes)),
            _ => Err(sluice_store::StoreError::Corrupt {
                message: "the dashboard's session key in the store is not hex: restore the store from a backup".into(),
            }),
        }
    }

    fn sign(&self, purpose: &str, text: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"|");
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A session for `name`'s token (`digest`: its digest's first 16 hex digits) until `expires` (seconds).
    fn cookie_value(&self, name: &str, digest: &str, expires: i64) -> String {
        let body = format!("{}.{digest}.{expires}", hex::encode(name.as_bytes()));
        format!("{body}.{}", self.sign("session", &body))
    }

    /// The CSRF value of a session cookie.
    fn csrf(&self, cookie: &str) -> String {
        self.sign("csrf", cookie)[..32].to_string()
    }
}

fn unhex(text: &str) -> Option<String> {
    String::from_utf8(hex::decode(text).ok()?).ok()
}

/// Compares without stopping at the first difference, so the time taken says nothing about the signature.
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The session cookie's value in a request, if any.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE).then_some(v)
    })
}

impl AppState {
    /// The person behind a valid, unexpired session cookie whose token is still active.
    pub(crate) fn session_principal(&self, headers: &HeaderMap) -> Option<Principal> {
        let cookie = session_cookie(headers)?;
        let (body, signature) = cookie.rsplit_once('.')?;
        if !same(&self.session_key.sign("session", body), signature) {
            return None;
        }
        let mut parts = body.split('.');
        let (name, digest, expires) = (unhex(parts.next()?)?, parts.next()?, parts.next()?.parse::<i64>().ok()?);
        if expires < chrono::Utc::now().timestamp() {
            return None;
        }
        self.tokens.load().by_digest_prefix(digest, &name).filter(|p| p.role != Role::Sdk).cloned()
    }
}

/// Refuses a cookie-authenticated write without the session's CSRF value (403, JSON). Requests that carry
/// a token of their own, and reads, pass.
pub(crate) async fn check_csrf(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let reads = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let has_token = headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-key");
    if !reads && !has_token {
        if let Some(cookie) = session_cookie(headers) {
            let given = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !same(given, &state.session_key.csrf(cookie)) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "a write with the session cookie needs the X-Sluice-CSRF header the dashboard sends (GET /ui/session)",
                )
                .into_response();
            }
        }
    }
    next.run(request).await
}

/// `GET /`: the dashboard page.
#[utoipa::path(get, path = "/", tag = "dashboard", security(()),
    responses((status = 200, description = "The dashboard", content_type = "text/html", body = String)))]
pub(crate) async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

/// `GET /ui/app.js`.
#[utoipa::path(get, path = "/ui/app.js", tag = "dashboard", security(()),
    responses((status = 200, description = "Its script", content_type = "text/javascript", body = String)))]
pub(crate) async fn script() -> Response {
    page(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /ui/app.css`.
#[utoipa::path(get, path = "/ui/app.css", tag = "dashboard", security(()),
    responses((status = 200, description = "Its style", content_type = "text/css", body = String)))]
pub(crate) async fn style() -> Response {
    page(STYLE, "text/css; charset=utf-8")
}

fn page(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Only this server's own script and style, no framing by other sites.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
                ),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

/// `POST /ui/login` `{"token": …}`: a viewer, operator or admin token gets a session cookie; the answer is
/// what `GET /ui/session` says.
#[utoipa::path(post, path = "/ui/login", tag = "dashboard", security(()),
    request_body = Login,
    responses((status = 200, description = "A session cookie", body = crate::openapi::SessionAnswer), crate::openapi::SdkErrors))]
pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Failed logins are limited per client address: a token cannot be guessed, but each try costs a hash
    // and a log line, and an address that keeps failing is worth one audit event per burst.
    let limits = &state.options.limits;
    let address = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map_or_else(
        || "unknown".to_string(),
        |info| crate::limits::client_address(info.0, &headers, &limits.trusted_proxies).to_string(),
    );
    if let Err(over) = state.failed_logins.over(&address, limits.failed_logins_per_minute) {
        crate::limits::LimitCounters::bump(&state.limit_counters.logins_limited);
        if over.first_of_burst {
            let detail = json!({"address": address, "limit_per_minute": limits.failed_logins_per_minute});
            let why = Some(format!("more than {} failed logins in a minute", limits.failed_logins_per_minute));
            if let Err(e) =
                state.store.record_event("-", "limit.logins", &format!("address:{address}"), detail, why).await
            {
                tracing::warn!(error = %e, "auditing a rate limit");
            }
        }
        return Err(ApiError::too_many(
            format!("too many failed logins from {address}: wait {} s", over.retry_after),
            over.retry_after,
        ));
    }
    let login: Login = crate::error::parse_json(&body)?;
    let tokens = state.tokens.load();
    let Some(principal) = tokens.authenticate(login.token.trim()).cloned() else {
        let _ = state.failed_logins.hit(&address, limits.failed_logins_per_minute);
        return Err(ApiError::unauthorized());
    };
    state.failed_logins.forget(&address);
    if principal.role == Role::Sdk {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an sdk token evaluates flags only; log in with a viewer, operator or admin token",
        ));
    }
    let digest = tokens.digest_prefix(login.token.trim()).ok_or_else(ApiError::unauthorized)?;
    let expires = chrono::Utc::now().timestamp() + SESSION_SECS;
    let value = state.session_key.cookie_value(&principal.name, &digest, expires);
    let secure = if state.options.secure_cookies { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{secure}");
    tracing::info!(actor = %principal.name, role = principal.role.as_str(), "dashboard login");
    let mut response = Json(session_body(&state, &principal, &value)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ascii"));
    Ok(response)
}

fn session_body(state: &AppState, who: &Principal, cookie: &str) -> serde_json::Value {
    json!({
        "name": who.name,
        "role": who.role.as_str(),
        "csrf": state.session_key.csrf(cookie),
        "can_operate": who.role.allows(Role::Operator),
    })
}

/// `GET /ui/session`: who the session cookie is (401 without a valid one), with the CSRF value for writes.
#[utoipa::path(get, path = "/ui/session", tag = "dashboard", security(()),
    responses((status = 200, description = "Who the session cookie is", body = crate::openapi::SessionAnswer), (status = 401, description = "No valid session", body = crate::error::ApiError)))]
pub(crate) async fn session(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let who = state.session_principal(&headers).ok_or_else(ApiError::unauthorized)?;
    let cookie = session_cookie(&headers).unwrap_or_default();
    Ok(Json(session_body(&state, &who, cookie)).into_response())
}

/// `POST /ui/logout`: forgets the cookie in this browser.
#[utoipa::path(post, path = "/ui/logout", tag = "dashboard", security(()),
    responses((status = 204, description = "The cookie is forgotten")))]
pub(crate) async fn logout() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ascii"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_the_cookie_and_signatures_compare_whole() {
        assert_eq!(unhex(&hex::encode("dana.o'neil")).as_deref(), Some("dana.o'neil"));
        assert_eq!(unhex("zz"), None);
        assert!(SessionKey::from_hex("not hex").is_err() && SessionKey::from_hex("").is_err());
        let key = SessionKey::from_hex(&"ab".repeat(32)).unwrap();
        let v = key.cookie_value("dana", "0123456789abcdef", 10);
        let (body, sig) = v.rsplit_once('.').unwrap();
        assert!(same(&key.sign("session", body), sig));
        assert!(!same(&key.sign("session", &body.replace("10", "99")), sig));
        assert_ne!(key.csrf(&v), key.csrf(&key.cookie_value("dana", "0123456789abcdef", 11)));
    }
}
