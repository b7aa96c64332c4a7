//! Who is calling: the token in `Authorization` (`Bearer <token>`, or the bare token Unleash SDKs send),
//! looked up in the in-memory token table, and the role the endpoint needs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{header, HeaderMap};
use std::sync::Arc;

use sluice_controller::EnvFlags;
use sluice_store::{Principal, Role};

use crate::{ApiError, AppState};

/// What a request authenticates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credential<'a> {
    /// `Authorization: Bearer …` (OFREP's BearerAuth), a bare `Authorization: …` (Unleash SDKs), or
    /// `X-API-Key: …` (OFREP's ApiKeyAuth).
    Token(&'a str),
    /// One of those headers is there but not readable text: refused, never taken as "no token" (which
    /// would fall back to the session cookie, without the CSRF check a cookie write needs).
    Unreadable,
    /// Neither header: the dashboard's session cookie, if any.
    Absent,
}

pub(crate) fn credential(headers: &HeaderMap) -> Credential<'_> {
    let raw = match (headers.get(header::AUTHORIZATION), headers.get("x-api-key")) {
        (Some(raw), _) => match raw.to_str() {
            Ok(raw) => raw.trim(),
            Err(_) => return Credential::Unreadable,
        },
        (None, Some(key)) => match key.to_str() {
            Ok(key) => return Credential::Token(key.trim()),
            Err(_) => return Credential::Unreadable,
        },
        (None, None) => return Credential::Absent,
    };
    Credential::Token(raw.strip_prefix("Bearer ").or_else(|| raw.strip_prefix("bearer ")).unwrap_or(raw).trim())
}

/// Why a token of another role may not evaluate, and what to do.
pub(crate) fn forbidden_detail(role: Role) -> String {
    format!(
        "this is a `{}` token; evaluation takes an `sdk` token (create one: sluice token create NAME --role sdk)",
        role.as_str()
    )
}

impl AppState {
    /// Who a request comes from, for the request log: the token's name, or `-` when it has no valid token.
    pub(crate) fn caller_name(&self, headers: &HeaderMap) -> String {
        let tokens = self.tokens.load();
        match credential(headers) {
            Credential::Token(t) => tokens.authenticate(t).map_or_else(|| "-".to_string(), |p| p.name.clone()),
            Credential::Unreadable => "-".to_string(),
            Credential::Absent => self.session_principal(headers).map_or_else(|| "-".to_string(), |p| p.name),
        }
    }

    /// The caller, who must hold `needed` (admin ⊇ operator ⊇ viewer): by the request's token, or, with
    /// no token header at all, by the dashboard's session cookie (whose writes `dashboard::check_csrf` has
    /// already checked). A token header that is there but unreadable is refused, never passed over.
    pub(crate) fn require(&self, headers: &HeaderMap, needed: Role) -> Result<Principal, ApiError> {
        let tokens = self.tokens.load();
        let principal = match credential(headers) {
            Credential::Token(t) => tokens.authenticate(t).cloned(),
            Credential::Unreadable => None,
            Credential::Absent => self.session_principal(headers),
        }
        .ok_or_else(ApiError::unauthorized)?;
        if principal.role.allows(needed) {
            Ok(principal)
        } else {
            Err(ApiError::forbidden(needed.as_str()))
        }
    }

    /// The environment an evaluation call is answered for, once its caller is known to be allowed: an
    /// `sdk` token (its environment), or nobody when the server runs with anonymous evaluation (the
    /// environment `?env=` names in `query`, or the only one). Tokens of the other roles are refused (403):
    /// an application holding an admin token could change every flag. Rate-limited by the token's name.
    pub(crate) fn evaluator(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Arc<EnvFlags>, EvalRefusal> {
        use std::borrow::Cow;
        let tokens = self.tokens.load();
        // Borrowed from the token table where it can be: this runs on every evaluation.
        let (name, env): (Cow<'_, str>, Option<Cow<'_, str>>) = match credential(headers) {
            Credential::Token(t) if !t.is_empty() => match tokens.authenticate(t) {
                Some(p) if p.role == Role::Sdk => (Cow::Borrowed(p.name.as_str()), p.only_env().map(Cow::Borrowed)),
                Some(p) => return Err(EvalRefusal::Forbidden { role: p.role }),
                None => return Err(EvalRefusal::Unauthorized),
            },
            Credential::Unreadable => return Err(EvalRefusal::Unauthorized),
            _ if self.options.anonymous_evaluation => (Cow::Borrowed("anonymous"), env_param(query).map(Cow::Owned)),
            _ => return Err(EvalRefusal::Unauthorized),
        };
        let env = self.catalog.resolve(env.as_deref()).map_err(|e| EvalRefusal::Environment(e.to_string()))?;
        match self.limiter.check(&name) {
            Ok(()) => Ok(env),
            Err(retry_after) => Err(EvalRefusal::RateLimited { retry_after }),
        }
    }

    /// The environment an admin request acts in: the one `?env=` names in `query`, else the caller's only
    /// one, else the server's only one. A caller limited to other environments is refused (403), and the
    /// refusal audited (`access.refused`): an operator of staging probing production is worth knowing of.
    pub(crate) async fn env_for(&self, who: &Principal, query: Option<&str>) -> Result<Arc<EnvFlags>, ApiError> {
        let named = env_param(query);
        let env = self.catalog.resolve(named.as_deref().or(who.only_env()))?;
        self.may_act_in(who, env.name()).await?;
        Ok(env)
    }

    /// Whether `who` may act in the environment `env`; a refusal (403 `forbidden_environment`) is audited
    /// as `access.refused`.
    pub(crate) async fn may_act_in(&self, who: &Principal, env: &str) -> Result<(), ApiError> {
        if who.may_act_in(env) {
            return Ok(());
        }
        let detail = serde_json::json!({"env": env, "allowed": who.envs});
        if let Err(e) = self.store.record_event(&who.name, "access.refused", &format!("env:{env}"), detail, None).await
        {
            tracing::warn!(error = %e, "auditing a refusal");
        }
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden_environment",
            format!(
                "the token `{}` may act in {} only, not in `{env}`",
                who.name,
                who.envs.as_deref().unwrap_or_default().join(", ")
            ),
        ))
    }
}

/// The value of `env=` in a query string, if there is one.
pub(crate) fn env_param(query: Option<&str>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct EnvQuery {
        env: Option<String>,
    }
    serde_urlencoded::from_str::<EnvQuery>(query?).ok()?.env.filter(|e| !e.is_empty())
}

/// Why an evaluation request was refused before evaluating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EvalRefusal {
    Unauthorized,
    /// A valid token of a role that does not evaluate.
    Forbidden {
        role: Role,
    },
    /// Seconds until the caller may try again.
    RateLimited {
        retry_after: u64,
    },
    /// No environment to answer for: an unknown `?env=`, or none named where there are several.
    Environment(String),
}

/// A token bucket per caller: `rate` requests per second, bursts of up to one second's worth.
pub(crate) struct RateLimiter {
    rate: Option<u32>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub(crate) fn new(rate: Option<u32>) -> Self {
        RateLimiter { rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// `Err(seconds to wait)` when the caller is over its rate.
    pub(crate) fn check(&self, caller: &str) -> Result<(), u64> {
        let Some(rate) = self.rate.map(f64::from) else { return Ok(()) };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(caller.to_string()).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// The caller of an endpoint that needs a role, as an extractor: the requirement stands in the handler's
/// signature (`Operator(who): Operator`) instead of a first line each handler must remember, and it runs
/// before the query and body extractors, so a caller without a token learns nothing from a 422 about
/// the request's shape.
macro_rules! role_extractor {
    ($(#[$doc:meta] $name:ident => $role:expr;)+) => {$(
        #[$doc]
        pub(crate) struct $name(pub Principal);

        impl axum::extract::FromRequestParts<std::sync::Arc<AppState>> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &std::sync::Arc<AppState>,
            ) -> Result<Self, ApiError> {
                state.require(&parts.headers, $role).map($name)
            }
        }
    )+};
}

/// The environment an admin request acts in ([`AppState::env_for`]), as an extractor: after the role
/// extractor in a handler's signature.
pub(crate) struct InEnv(pub Arc<EnvFlags>);

impl axum::extract::FromRequestParts<std::sync::Arc<AppState>> for InEnv {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &std::sync::Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let who = state.require(&parts.headers, Role::Viewer)?;
        state.env_for(&who, parts.uri.query()).await.map(InEnv)
    }
}

role_extractor! {
    /// A caller holding at least the `viewer` role (401 without a valid credential, 403 for `sdk`).
    Viewer => Role::Viewer;
    /// A caller holding at least the `operator` role: flags, segments, rollouts.
    Operator => Role::Operator;
    /// A caller holding the `admin` role: tokens.
    Admin => Role::Admin;
}
