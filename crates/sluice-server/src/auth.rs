//! Who is calling: the token in `Authorization` (`Bearer <token>`, or the bare token Unleash SDKs send),
//! looked up in the in-memory token table, and the role the endpoint needs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{header, HeaderMap};
use sluice_store::{Principal, Role};

use crate::{ApiError, AppState};

fn token_of(headers: &HeaderMap) -> Option<&str> {
    // `Authorization: Bearer …` (OFREP's BearerAuth), a bare `Authorization: …` (Unleash SDKs), or
    // `X-API-Key: …` (OFREP's ApiKeyAuth).
    let Some(raw) = headers.get(header::AUTHORIZATION) else {
        return headers.get("x-api-key")?.to_str().ok().map(str::trim);
    };
    let raw = raw.to_str().ok()?.trim();
    Some(raw.strip_prefix("Bearer ").or_else(|| raw.strip_prefix("bearer ")).unwrap_or(raw).trim())
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
        match token_of(headers) {
            Some(t) => tokens.authenticate(t).map_or_else(|| "-".to_string(), |p| p.name.clone()),
            None => self.session_principal(headers).map_or_else(|| "-".to_string(), |p| p.name),
        }
    }

    /// The caller, who must hold `needed` (admin ⊇ operator ⊇ viewer): by the request's token, or, without
    /// one, by the dashboard's session cookie (whose writes `dashboard::check_csrf` has already checked).
    pub(crate) fn require(&self, headers: &HeaderMap, needed: Role) -> Result<Principal, ApiError> {
        let tokens = self.tokens.load();
        let principal = match token_of(headers) {
            Some(t) => tokens.authenticate(t).cloned(),
            None => self.session_principal(headers),
        }
        .ok_or_else(ApiError::unauthorized)?;
        if principal.role.allows(needed) {
            Ok(principal)
        } else {
            Err(ApiError::forbidden(needed.as_str()))
        }
    }

    /// The caller of an evaluation endpoint: an `sdk` token, or nobody when the server runs with anonymous
    /// evaluation. Tokens of the other roles are refused (403): an application holding an admin token
    /// could change every flag. Returns the name to rate-limit by.
    pub(crate) fn evaluator(&self, headers: &HeaderMap) -> Result<String, EvalRefusal> {
        let tokens = self.tokens.load();
        let name = match token_of(headers).filter(|t| !t.is_empty()) {
            Some(t) => match tokens.authenticate(t) {
                Some(p) if p.role == Role::Sdk => p.name.clone(),
                Some(p) => return Err(EvalRefusal::Forbidden { role: p.role }),
                None => return Err(EvalRefusal::Unauthorized),
            },
            None if self.options.anonymous_evaluation => "anonymous".to_string(),
            None => return Err(EvalRefusal::Unauthorized),
        };
        match self.limiter.check(&name) {
            Ok(()) => Ok(name),
            Err(retry_after) => Err(EvalRefusal::RateLimited { retry_after }),
        }
    }
}

/// Why an evaluation request was refused before evaluating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
