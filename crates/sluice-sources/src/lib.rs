//! `sluice-sources` holds Sluice's plug-ins: where a gate's number comes from ([`sources`]) and what the
//! controller does to the world ([`actions`]). Each kind is one file behind one function signature; adding
//! one is that file plus one line in [`measure`] or [`run`]. The engine stays pure: the runner measures
//! here, asynchronously, and hands the numbers to the engine's tick.

pub mod actions;
pub mod sources;

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_engine::Measurement;
use sluice_plan::model::{Action, Check, SourceKind};

/// The default time a command may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Measures one check with its source; templates are filled from `values`.
pub async fn measure(check: &Check, default: Option<SourceKind>, values: &BTreeMap<String, String>) -> Measurement {
    match check.source_kind(default) {
        SourceKind::Command => sources::command::measure(check, values).await,
        other => Measurement::Error(format!("the `{}` source is not available in this version", other.as_str())),
    }
}

/// Where a running controller measures and acts: the real plug-ins by default ([`Registry`]); tests put a
/// recorded timeline and a counting receiver in their place.
#[async_trait::async_trait]
pub trait Plugins: Send + Sync {
    /// Measures one check.
    async fn measure(
        &self,
        check: &Check,
        default: Option<SourceKind>,
        values: &BTreeMap<String, String>,
        now: u64,
    ) -> Measurement;
    /// Runs one action with its idempotency key.
    async fn run(&self, action: &Action, values: &BTreeMap<String, String>, key: &str) -> ActionOutcome;
}

/// The plug-ins of this crate.
#[derive(Debug, Default, Clone, Copy)]
pub struct Registry;

#[async_trait::async_trait]
impl Plugins for Registry {
    async fn measure(
        &self,
        check: &Check,
        default: Option<SourceKind>,
        values: &BTreeMap<String, String>,
        _now: u64,
    ) -> Measurement {
        measure(check, default, values).await
    }

    async fn run(&self, action: &Action, values: &BTreeMap<String, String>, key: &str) -> ActionOutcome {
        run(action, values, key).await
    }
}

/// What running an action gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionOutcome {
    /// Whether it succeeded.
    pub ok: bool,
    /// What it said (the end of its output, or the error).
    pub detail: String,
}

/// Runs one action; templates are filled from `values`. `key` identifies this attempt for idempotency.
pub async fn run(action: &Action, values: &BTreeMap<String, String>, key: &str) -> ActionOutcome {
    if let Some(argv) = &action.exec {
        let timeout = action.timeout.as_ref().map_or(DEFAULT_TIMEOUT, |t| t.value.0);
        return actions::exec::run(&argv.value, values, timeout, key).await;
    }
    ActionOutcome { ok: false, detail: "webhook actions are not available in this version".into() }
}
