//! What can go wrong when the controller is asked to do something, as types the caller can act on (the
//! server maps each to an HTTP status; the CLI to a message) rather than strings to match.

use sluice_store::StoreError;

/// Why a rollout command, a start or a tick failed.
#[derive(Debug)]
pub enum ControllerError {
    /// No such rollout (or flag).
    NotFound(String),
    /// A field of the request is wrong.
    Invalid {
        /// The field, e.g. `reason`.
        field: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// The plan does not check: every problem, one per line (`file:line:col: error: …`).
    PlanInvalid(String),
    /// The plan is valid but uses plug-ins this server lacks.
    PluginsMissing(String),
    /// The rollout is not in a state that allows this; `code` says which case (`conflict`, `hook_running`,
    /// `unsettled`, `unfinished`, `in_use`).
    Refused {
        /// Machine-readable case.
        code: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// The caller's role may not do this (already audited).
    Forbidden(String),
    /// The store failed or refused.
    Store(StoreError),
    /// Stored data that this version cannot read (a plan that no longer parses, say).
    Corrupt(String),
    /// An injected crash (crash-safety tests): the caller must stop as a killed process would.
    Crashed(String),
}

impl ControllerError {
    pub(crate) fn refused(code: &'static str, message: impl Into<String>) -> Self {
        ControllerError::Refused { code, message: message.into() }
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::refused("conflict", message)
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ControllerError::Invalid { field, message: message.into() }
    }

    /// An injected crash: nothing after it may run.
    pub fn is_crash(&self) -> bool {
        matches!(self, ControllerError::Crashed(_))
    }
}

impl std::fmt::Display for ControllerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControllerError::NotFound(m)
            | ControllerError::PlanInvalid(m)
            | ControllerError::Forbidden(m)
            | ControllerError::Crashed(m) => f.write_str(m),
            ControllerError::PluginsMissing(m) => write!(f, "this plan cannot start yet on this server:\n{m}"),
            ControllerError::Invalid { field, message } => write!(f, "`{field}`: {message}"),
            ControllerError::Refused { message, .. } => f.write_str(message),
            ControllerError::Store(e) => write!(f, "{e}"),
            ControllerError::Corrupt(m) => write!(f, "stored data is corrupt: {m}"),
        }
    }
}

impl std::error::Error for ControllerError {}

impl From<StoreError> for ControllerError {
    fn from(e: StoreError) -> Self {
        ControllerError::Store(e)
    }
}
