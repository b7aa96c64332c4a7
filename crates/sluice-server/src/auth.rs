//! Who is calling: the token in `Authorization` (`Bearer <token>`, or the bare token Unleash SDKs send),
//! looked up in the in-memory token table, and the role the endpoint needs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{header, HeaderMap};
use sluice_store::{Principal, Role};

use crate::{ApiError, AppState};

fn token_of(headers: &HeaderMap) -> Option<&str> {
    let raw = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    Some(raw.strip_prefix("Bearer ").or_else(|| raw.strip_prefix("bearer ")).unwrap_or(raw).trim())
}

impl AppState {
    /// The caller, who must hold `needed` (admin ⊇ operator ⊇ viewer).
    pub(crate) fn require(&self, headers: &HeaderMap, needed: Role) -> Result<Principal, ApiError> {
        let tokens = self.tokens.load();
        let principal = token_of(headers).and_then(|t| tokens.authenticate(t)).ok_or_else(ApiError::unauthorized)?;
        if principal.role.allows(needed) {
            Ok(principal.clone())
        } else {
            Err(ApiError::forbidden(needed.as_str()))
        }
    }

    /// The caller of an evaluation endpoint: any valid token (an `sdk` token is made for it), or nobody when
    /// the server runs with anonymous evaluation. Returns the name to rate-limit by.
    pub(crate) fn evaluator(&self, headers: &HeaderMap) -> Result<String, EvalRefusal> {
        let tokens = self.tokens.load();
        let name = match token_of(headers).filter(|t| !t.is_empty()) {
            Some(t) => match tokens.authenticate(t) {
                Some(p) => p.name.clone(),
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
