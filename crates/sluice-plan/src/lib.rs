//! `sluice-plan` is Sluice's rollout plan format: the YAML a platform engineer keeps in git to say which
//! flag to ramp, through which phases, judged by which gates, watched by which triggers, and what rolling
//! back does. It parses plans with line and column on every error, and checks them ([`check`]) against the
//! rules a rollout relies on, so that a plan that fails `sluice plan check` can never start. Pure: no I/O.
//!
//! ```
//! let yaml = "name: demo\nflag: checkout\nphases:\n  - percent: 10\n  - percent: 5\n";
//! let problems = sluice_plan::load("demo.yaml", yaml, None).unwrap_err();
//! assert_eq!(problems[0].to_string(), "demo.yaml:5:14: error: `phases[1].percent`: percentages must increase from phase to phase: 5 after 10");
//! ```

#![warn(missing_docs)]

mod check;
mod duration;
pub mod export;
pub mod model;

pub use check::{check, check_with, programs, BUILTIN_TEMPLATES, SECRET_ENV_PREFIX};
pub use duration::Dur;
pub use model::Plan;

/// A kind of plug-in a plan may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PluginKind {
    /// Where a check's number comes from.
    Source(model::SourceKind),
    /// What an action does.
    Action(model::ActionKind),
    /// Where people hear about a rollout.
    Notifier(model::NotifierKind),
}

/// What a server can measure, run and notify with. The plug-in registry (`sluice-sources`) answers it, so
/// that `plan check` and starting a rollout name what a plan uses that this server cannot run; the plan
/// format itself keeps no such list.
pub trait Capabilities {
    /// Whether this kind of plug-in exists here.
    fn can(&self, kind: PluginKind) -> bool;
}

/// Every kind of plug-in: checks a plan against its own rules only.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllPlugins;

impl Capabilities for AllPlugins {
    fn can(&self, _: PluginKind) -> bool {
        true
    }
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The plan cannot start.
    Error,
    /// Worth knowing; the plan is valid.
    Note,
    /// The plan is valid, but uses a plug-in this server lacks: it cannot start here. Shown as a note.
    Unavailable,
}

/// One problem of a plan, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or note.
    pub level: Level,
    /// The plan file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// The offending key, e.g. `phases[2].gates[0].for`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Note | Level::Unavailable => "note",
        };
        if self.key.is_empty() {
            write!(f, "{}:{}:{}: {level}: {}", self.file, self.line, self.column, self.message)
        } else {
            write!(f, "{}:{}:{}: {level}: `{}`: {}", self.file, self.line, self.column, self.key, self.message)
        }
    }
}

/// What a plan is checked against: the flags and segments that exist.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Known flags.
    pub flags: Vec<CatalogFlag>,
    /// Known segment names.
    pub segments: Vec<String>,
}

/// A known flag and its variant names.
#[derive(Debug, Clone)]
pub struct CatalogFlag {
    /// The flag key.
    pub key: String,
    /// Its variants.
    pub variants: Vec<String>,
}

/// Most bytes of a plan file.
pub const MAX_PLAN_BYTES: usize = 1 << 20;

/// Parses a plan; the first syntax or shape error is returned with its position.
pub fn parse(file: &str, text: &str) -> Result<Plan, Problem> {
    let problem = |line, column, message: String| Problem {
        level: Level::Error,
        file: file.into(),
        line,
        column,
        key: String::new(),
        message,
    };
    if text.len() > MAX_PLAN_BYTES {
        return Err(problem(0, 0, format!("the plan is larger than {MAX_PLAN_BYTES} bytes")));
    }
    ERROR_PATH.with(|p| p.borrow_mut().clear());
    serde_saphyr::from_str::<Tracked>(text).map(|t| t.0).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        // The library's message repeats the position; keep only what is wrong.
        let message = e.without_snippet().to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).trim().to_string();
        let mut p = problem(line, column, message);
        p.key = ERROR_PATH.with(|path| path.borrow().clone());
        p
    })
}

thread_local! {
    /// The key path of the last parse error: `Deserialize` cannot return it beside the library's error
    /// (which carries the position), so it is left here for [`parse`] on the same thread.
    static ERROR_PATH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// `phases[0].value.hold.value` → `phases[0].hold`: a [`model::Spanned`] value adds one `value` hop after
/// its key. (The one real `value` key, a probe's, sits under a spanned `http`, so it stays.)
fn without_span_hops(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut hop_taken = true;
    for part in path.split('.') {
        let (name, _) = part.split_once('[').unwrap_or((part, ""));
        if name == "value" && !hop_taken && part == "value" {
            hop_taken = true;
            continue;
        }
        out.push(part);
        hop_taken = false;
    }
    out.join(".")
}

/// A plan whose deserialization records the key path of an error.
struct Tracked(Plan);

impl<'de> serde::Deserialize<'de> for Tracked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_path_to_error::deserialize(d).map(Tracked).map_err(|e| {
            let path = e.path().to_string();
            ERROR_PATH.with(|p| *p.borrow_mut() = if path == "." { String::new() } else { without_span_hops(&path) });
            e.into_inner()
        })
    }
}

/// Parses and checks a plan against its own rules ([`check`]): `Ok` (with any notes) when it is valid,
/// every problem otherwise.
pub fn load(file: &str, text: &str, catalog: Option<&Catalog>) -> Result<(Plan, Vec<Problem>), Vec<Problem>> {
    load_with(file, text, catalog, &AllPlugins)
}

/// [`load`] against a server's plug-ins ([`check_with`]): a note names each one the plan uses that
/// `plugins` lacks.
pub fn load_with(
    file: &str,
    text: &str,
    catalog: Option<&Catalog>,
    plugins: &dyn Capabilities,
) -> Result<(Plan, Vec<Problem>), Vec<Problem>> {
    let plan = parse(file, text).map_err(|p| vec![p])?;
    let problems = check_with(file, &plan, catalog, plugins);
    if problems.iter().any(|p| p.level == Level::Error) {
        Err(problems)
    } else {
        Ok((plan, problems))
    }
}

/// Fills `{{name}}` templates from `values`; an unknown name is left as written (`plan check` refuses
/// plans with unknown names, so this only happens for text that was never checked).
///
/// ```
/// let mut values = std::collections::BTreeMap::new();
/// values.insert("ramped".to_string(), "on".to_string());
/// assert_eq!(sluice_plan::render("variant=\"{{ramped}}\" {{ x }}", &values), "variant=\"on\" {{ x }}");
/// ```
pub fn render(text: &str, values: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match values.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every kind of event a rollout emits, with what it means: the names a plan's `notify[].on` may list.
///
/// ```
/// assert!(sluice_plan::EVENTS.iter().any(|(kind, _)| *kind == "rolled_back"));
/// ```
pub const EVENTS: &[(&str, &str)] = &[
    ("started", "the rollout started: the first phase's percentage is set"),
    ("promoted", "a phase passed: the next phase's percentage is set"),
    ("approval_waiting", "a phase's hold is over and its gates pass: it waits for approvals to be signed"),
    ("approved", "a person signed an approval item"),
    ("hold_skipped", "a person skipped the current phase's hold"),
    ("paused", "a soft trigger fired, a signal came in or a person paused: it waits for resume or rollback"),
    ("resumed", "a person (or a soft trigger's default) resumed the rollout"),
    ("kill_switch", "the flag's kill switch was pulled: the rollout paused"),
    ("source_down", "a source failed on consecutive ticks: the rollout paused (or rolled back)"),
    ("no_data", "a trigger has had no value for `analysis.max_inconclusive` ticks: it cannot fire"),
    ("hook_failed", "a phase hook failed: the rollout stepped back and paused"),
    ("uncertain", "an action that is not idempotent was cut off: a person must `settle` it"),
    ("stepped_back", "a hard trigger stepped the rollout back a phase (`rollback.to: previous-phase`)"),
    ("rolled_back", "the rollout rolled back: the flag is restored, the rollback actions run"),
    ("baking", "the last phase passed: triggers stay armed for the bake"),
    ("completed", "the rollout finished"),
    ("aborted", "a person aborted the rollout: the flag stays where it is"),
];

/// Template names a webhook action's `body` may use besides the checks' (`flag`, `phase`, `percent`, …):
/// the rollout's `id`, its `plan`, the last `event` and its `reason`, and `checks` (the last tick's
/// decisions, a JSON array: written without quotes).
pub const WEBHOOK_TEMPLATES: &[&str] = &["id", "plan", "event", "reason", "checks"];
