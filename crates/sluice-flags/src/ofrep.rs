//! OpenFeature Remote Evaluation Protocol (OFREP v0.3) types: evaluation reasons, error codes, the answer
//! for one flag, and the mapping of an OFREP context onto the Unleash context.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Context;

/// Why a flag resolved to its value (OpenFeature's resolution reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The flag has no targeting: the same value for everyone.
    Static,
    /// The context was not targeted: the flag's base (fallback) value.
    Default,
    /// A targeting rule or an override matched.
    TargetingMatch,
    /// A percentage split (a ramp) put the context in its bucket.
    Split,
    /// The flag is disabled (kill switch).
    Disabled,
    /// Unknown.
    Unknown,
    /// Evaluation failed.
    Error,
}

/// OFREP error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request body could not be parsed.
    ParseError,
    /// A flag needs `targetingKey` and the context has none.
    TargetingKeyMissing,
    /// The context is not an object of valid fields.
    InvalidContext,
    /// No flag of that key.
    FlagNotFound,
    /// Anything else.
    General,
}

/// The answer for one flag: what OFREP returns on success.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Resolution<'s> {
    /// The flag key.
    pub key: &'s str,
    /// The variant's value.
    pub value: &'s Value,
    /// The variant's name (apps label their metrics with it).
    pub variant: &'s str,
    /// Why.
    pub reason: Reason,
}

/// The error of mapping an OFREP context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextError {
    /// `INVALID_CONTEXT`.
    pub code: ErrorCode,
    /// What is wrong, naming the field.
    pub message: String,
}

impl Context {
    /// Maps an OFREP evaluation context onto the Unleash context: `targetingKey` is the `userId` unless
    /// `userId` is given; `sessionId`, `remoteAddress`, `environment`, `appName`, `currentTime` map to their
    /// fields; every other key is a property (numbers and booleans as text).
    ///
    /// ```
    /// use serde_json::json;
    /// let ctx = sluice_flags::Context::from_ofrep(json!({"targetingKey": "u1", "plan": "pro", "seats": 5})
    ///     .as_object().unwrap()).unwrap();
    /// assert_eq!(ctx.user_id.as_deref(), Some("u1"));
    /// assert_eq!(ctx.get("seats"), Some("5"));
    /// ```
    pub fn from_ofrep(fields: &Map<String, Value>) -> Result<Context, ContextError> {
        let mut ctx = Context::default();
        let mut targeting_key = None;
        for (k, v) in fields {
            let text = match v {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    if k == "properties" {
                        // Unleash-shaped contexts nest properties; accept them.
                        if let Value::Object(props) = v {
                            for (pk, pv) in props {
                                match pv {
                                    Value::Null => {}
                                    Value::String(s) => ctx.set_property(pk.clone(), s.clone()),
                                    Value::Number(_) | Value::Bool(_) => ctx.set_property(pk.clone(), pv.to_string()),
                                    _ => {
                                        return Err(ContextError {
                                            code: ErrorCode::InvalidContext,
                                            message: format!(
                                                "context field `properties.{pk}` must be a string, number or boolean"
                                            ),
                                        })
                                    }
                                }
                            }
                            continue;
                        }
                    }
                    return Err(ContextError {
                        code: ErrorCode::InvalidContext,
                        message: format!("context field `{k}` must be a string, number or boolean"),
                    });
                }
            };
            match k.as_str() {
                "targetingKey" => targeting_key = Some(text),
                "userId" => ctx.user_id = Some(text),
                "sessionId" => ctx.session_id = Some(text),
                "remoteAddress" => ctx.remote_address = Some(text),
                "environment" => ctx.environment = Some(text),
                "appName" => ctx.app_name = Some(text),
                "currentTime" => ctx.current_time = Some(text),
                _ => ctx.set_property(k.clone(), text),
            }
        }
        if ctx.user_id.is_none() {
            ctx.user_id = targeting_key;
        }
        Ok(ctx)
    }
}
