//! `sluice-sources` holds Sluice's plug-ins, one folder per kind and one file per plug-in: where a check's
//! number comes from ([`sources`], behind [`Source`]), what the controller does to the world ([`actions`],
//! behind [`ActionRunner`]) and where people hear about a rollout ([`notifiers`], behind [`Notifier`]).
//! A [`Registry`] builds them once from [`Config`] and says which kinds exist, so `plan check` and the
//! controller ask it rather than a list. Adding a plug-in is its file plus one line in its folder's
//! `register`. The engine stays pure: the controller measures and acts here, asynchronously, and hands
//! the numbers to the engine's tick.
//!
//! ```
//! use sluice_plan::{Capabilities, PluginKind, model::SourceKind};
//! let registry = sluice_sources::Registry::new(&sluice_sources::Config::default());
//! assert!(registry.can(PluginKind::Source(SourceKind::Command)));
//! assert!(registry.can(PluginKind::Source(SourceKind::Builtin)));
//! assert!(registry.can(PluginKind::Action(sluice_plan::model::ActionKind::Webhook)));
//! ```

#![warn(missing_docs)]

pub mod actions;
pub mod golden;
pub mod metrics;
pub mod notifiers;
pub mod outbound;
mod output;
mod secrets;
pub mod sources;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_engine::{Event, Measurement, Millis};
use sluice_plan::model::{Action, ActionKind, Check, NotifierKind, SourceKind};
use sluice_plan::{Capabilities, Plan, PluginKind};

pub use secrets::{Redactor, Secrets};

/// The default time a command may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How the plug-ins are built: what the server was started with.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Longest run of a command check or an exec action without its own `timeout` (default 60 s).
    pub command_timeout: Option<Duration>,
    /// Where `secret_file:` secrets are read from; without it, plans may use `SLUICE_SECRET_*` variables only.
    pub secrets_dir: Option<std::path::PathBuf>,
    /// The first wait before retrying a webhook or a notification's HTTP call (default 1 s; doubled on
    /// each retry, with jitter).
    pub retry_backoff: Option<Duration>,
    /// The dashboard's address as people reach it (`https://sluice.example.com`), for links in messages.
    pub public_url: Option<String>,
    /// Largest Prometheus answer read (default 4 MiB); a larger one is a source error.
    pub prometheus_max_answer_bytes: Option<usize>,
    /// The built-in metrics the `builtin` source reads and `POST /api/v1/metrics` writes.
    pub metrics: Arc<metrics::Metrics>,
}

/// What a source may know about the measurement it takes, besides the check itself.
#[derive(Debug, Clone, Copy)]
pub struct MeasureContext<'a> {
    /// The rollout's id.
    pub rollout_id: &'a str,
    /// Its plan: name, `analysis` settings (the default source, a Prometheus endpoint), `vars`.
    pub plan: &'a Plan,
    /// When the rollout started (ms), e.g. for a baseline window before it.
    pub started_at: Millis,
    /// When the current phase (its percentage) took effect: a comparison's sample starts here.
    pub phase_started: Millis,
    /// The tick's time (ms): a query is evaluated at this instant.
    pub now: Millis,
    /// Template values: `flag`, `base`, `ramped`, `phase`, `percent`, `interval` and the plan's `vars`.
    pub values: &'a BTreeMap<String, String>,
}

impl MeasureContext<'_> {
    /// The source of `check`: its own, or the plan's default.
    pub fn source_of(&self, check: &Check) -> SourceKind {
        check.source_kind(self.plan.analysis.source.as_ref().map(|s| s.value))
    }
}

/// What an action may know about the run it is part of.
#[derive(Debug, Clone, Copy)]
pub struct ActionContext<'a> {
    /// The rollout's id.
    pub rollout_id: &'a str,
    /// Its plan.
    pub plan: &'a Plan,
    /// Template values, as for checks.
    pub values: &'a BTreeMap<String, String>,
    /// This effect's idempotency key: the same on every attempt.
    pub key: &'a str,
    /// The last tick's decisions (check, kind, value, threshold, outcome), a JSON array: a webhook's
    /// `{{checks}}`.
    pub checks: &'a serde_json::Value,
}

/// What running an action gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionOutcome {
    /// Whether it succeeded.
    pub ok: bool,
    /// What it said (the end of its output, or the error).
    pub detail: String,
    /// Each HTTP attempt of a webhook (time, target, status, duration, error); empty for others.
    pub attempts: Vec<outbound::Attempt>,
}

impl ActionOutcome {
    /// A failure saying why.
    pub fn failed(detail: impl Into<String>) -> ActionOutcome {
        ActionOutcome { ok: false, detail: detail.into(), attempts: Vec::new() }
    }
}

/// A rollout's transition as people hear about it: queued with the transition and delivered at least
/// once to each of its destinations, keyed by `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// This event's identity: `{rollout}:e{n}`, its place in the rollout's history.
    pub id: String,
    /// The rollout's id.
    pub rollout: String,
    /// Its plan's name.
    pub plan: String,
    /// Its flag.
    pub flag: String,
    /// What happened.
    pub event: Event,
    /// The rollout's state right after it: `running`, `paused`, `rolled_back`, …
    #[serde(default)]
    pub status: String,
    /// How many phases the plan has.
    #[serde(default)]
    pub phases: usize,
    /// Why it is paused, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_because: Option<String>,
    /// When a soft trigger's pause takes its default (ms), and which (`resume`, `rollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decide_by: Option<Millis>,
    /// The default taken at `decide_by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// An action's outcome is unknown: a person must `settle` it.
    #[serde(default)]
    pub uncertain: bool,
    /// The tick's decisions behind the event (check, kind, value, threshold, outcome, note); empty for a
    /// person's command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<serde_json::Value>,
}

impl Notification {
    /// One line for people: `bounded-reasoning (bounded_reasoning): rolled_back at 10% — errors-hard fired`.
    pub fn summary(&self) -> String {
        format!(
            "{} ({}): {} at phase {}, {}% — {}",
            self.plan,
            self.flag,
            self.event.kind,
            self.event.phase + 1,
            self.event.percent,
            self.event.reason
        )
    }
}

/// Where a check's number comes from. One per [`SourceKind`].
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// Which kind of source this is.
    fn kind(&self) -> SourceKind;
    /// Measures `check` now. No data, too few samples or an error is never a pass: say so with
    /// [`Measurement::Empty`] or [`Measurement::Error`].
    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement;
    /// The reference of a check with `baseline:`, measured over the window before `cx.started_at`. The
    /// default: this source keeps no baselines.
    async fn baseline(&self, check: &Check, cx: &MeasureContext<'_>) -> Result<f64, String> {
        let _ = (check, cx);
        Err(format!("the `{}` source has no baselines", self.kind().as_str()))
    }
}

/// Carries out one kind of action. One per [`ActionKind`].
#[async_trait::async_trait]
pub trait ActionRunner: Send + Sync {
    /// Which kind of action this runs.
    fn kind(&self) -> ActionKind;
    /// Runs `action`; `cx.key` identifies this effect across retries.
    async fn run(&self, action: &Action, cx: &ActionContext<'_>) -> ActionOutcome;
}

/// Tells people. Delivery is retried until it succeeds, so a notifier must tolerate a repeat of the same
/// [`Notification::id`].
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    /// Which kind of notifier this is; `None` for the log, which every rollout has.
    fn kind(&self) -> Option<NotifierKind>;
    /// Delivers `n` to `target` (the plan's `notify[i]` entry; `None` for the log).
    async fn notify(&self, target: Option<&sluice_plan::model::Notifier>, n: &Notification) -> Result<(), String>;
}

/// Where a running controller measures, acts and notifies: the [`Registry`] of real plug-ins, or, in
/// tests, a recorded timeline and a counting receiver in its place.
#[async_trait::async_trait]
pub trait Plugins: Send + Sync {
    /// Measures one check.
    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement;
    /// A check's baseline before the start (see [`Source::baseline`]). The default: none.
    async fn baseline(&self, check: &Check, cx: &MeasureContext<'_>) -> Result<f64, String> {
        let _ = (check, cx);
        Err("these plug-ins keep no baselines".into())
    }
    /// Runs one action.
    async fn run(&self, action: &Action, cx: &ActionContext<'_>) -> ActionOutcome;
    /// Delivers one notification to `target` (`None`: the log). The default writes it to the log.
    async fn notify(&self, target: Option<&sluice_plan::model::Notifier>, n: &Notification) -> Result<(), String> {
        notifiers::log::Log.notify(target, n).await
    }
    /// Whether this kind of plug-in exists. The default: all of them (a test double stands in for any).
    fn can(&self, kind: PluginKind) -> bool {
        let _ = kind;
        true
    }
    /// The built-in metrics the plug-ins read, which the server's ingestion writes to. The default: none
    /// (the server keeps its own).
    fn metrics(&self) -> Option<Arc<metrics::Metrics>> {
        None
    }
}

/// Every plug-in this build has, configured once.
#[derive(Clone, Default)]
pub struct Registry {
    metrics: Option<Arc<metrics::Metrics>>,
    sources: BTreeMap<SourceKind, Arc<dyn Source>>,
    actions: BTreeMap<ActionKind, Arc<dyn ActionRunner>>,
    notifiers: BTreeMap<Option<NotifierKind>, Arc<dyn Notifier>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .field("actions", &self.actions.keys().collect::<Vec<_>>())
            .field("notifiers", &self.notifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// Builds every plug-in of this crate from `config`.
    pub fn new(config: &Config) -> Registry {
        let mut registry = Registry { metrics: Some(config.metrics.clone()), ..Registry::default() };
        sources::register(&mut registry, config);
        actions::register(&mut registry, config);
        notifiers::register(&mut registry, config);
        registry
    }

    /// Adds (or replaces) the source of its kind.
    pub fn add_source(&mut self, source: impl Source + 'static) {
        self.sources.insert(source.kind(), Arc::new(source));
    }

    /// Adds (or replaces) the runner of its kind of action.
    pub fn add_action(&mut self, runner: impl ActionRunner + 'static) {
        self.actions.insert(runner.kind(), Arc::new(runner));
    }

    /// Adds (or replaces) the notifier of its kind.
    pub fn add_notifier(&mut self, notifier: impl Notifier + 'static) {
        self.notifiers.insert(notifier.kind(), Arc::new(notifier));
    }
}

impl Capabilities for Registry {
    fn can(&self, kind: PluginKind) -> bool {
        match kind {
            // A signal is fired by a person or an alert: nothing measures it.
            PluginKind::Source(SourceKind::Signal) => true,
            PluginKind::Source(k) => self.sources.contains_key(&k),
            // The controller sets flags itself, through the audited write path people use.
            PluginKind::Action(ActionKind::Flag) => true,
            PluginKind::Action(k) => self.actions.contains_key(&k),
            PluginKind::Notifier(k) => self.notifiers.contains_key(&Some(k)),
        }
    }
}

#[async_trait::async_trait]
impl Plugins for Registry {
    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement {
        let kind = cx.source_of(check);
        match self.sources.get(&kind) {
            Some(source) => source.measure(check, cx).await,
            None => Measurement::Error(format!("this server has no `{}` source", kind.as_str())),
        }
    }

    async fn baseline(&self, check: &Check, cx: &MeasureContext<'_>) -> Result<f64, String> {
        let kind = cx.source_of(check);
        match self.sources.get(&kind) {
            Some(source) => source.baseline(check, cx).await,
            None => Err(format!("this server has no `{}` source", kind.as_str())),
        }
    }

    async fn run(&self, action: &Action, cx: &ActionContext<'_>) -> ActionOutcome {
        let Some(kind) = action.kind() else {
            return ActionOutcome::failed("the action names none (or more than one) of exec, webhook and flag");
        };
        match self.actions.get(&kind) {
            Some(runner) => runner.run(action, cx).await,
            None => ActionOutcome::failed(format!("this server has no `{}` actions", kind.as_str())),
        }
    }

    async fn notify(&self, target: Option<&sluice_plan::model::Notifier>, n: &Notification) -> Result<(), String> {
        let kind = match target {
            None => None,
            Some(t) => Some(t.endpoint().ok_or("a notifier names one of slack, webhook or alertmanager")?.0),
        };
        match self.notifiers.get(&kind) {
            Some(notifier) => notifier.notify(target, n).await,
            None => Err(format!("this server has no `{}` notifier", kind.map_or("log", NotifierKind::as_str))),
        }
    }

    fn can(&self, kind: PluginKind) -> bool {
        Capabilities::can(self, kind)
    }

    fn metrics(&self) -> Option<Arc<metrics::Metrics>> {
        self.metrics.clone()
    }
}

/// A [`Plugins`] as the plan checker's [`Capabilities`].
pub struct CapabilitiesOf<'a>(pub &'a dyn Plugins);

impl Capabilities for CapabilitiesOf<'_> {
    fn can(&self, kind: PluginKind) -> bool {
        self.0.can(kind)
    }
}
