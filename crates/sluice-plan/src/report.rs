//! Where a plan's problems are written: [`Report`], handed to each plug-in to check its own block, with
//! the rules every plug-in shares (templates, secrets, environment variables, headers), so that a
//! Prometheus query, a probe's URL and a notifier's secret are refused the same way and at their line and
//! column.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_saphyr::{Location, Spanned};

use crate::block::{Block, Node};
use crate::model::{EnvValue, SecretRef};
use crate::{Level, Plan, Problem};

/// The prefix of the only environment variables a plan may read.
pub const SECRET_ENV_PREFIX: &str = "SLUICE_SECRET_";

/// Template names every plan has.
pub const BUILTIN_TEMPLATES: &[&str] = &["flag", "ramped", "base", "phase", "percent", "interval", "env"];

/// Problems of one plan being checked, under a key prefix (`gates[0]`, `notify[1]`): what a plug-in reports
/// into. Keys given to its methods are relative to the prefix.
///
/// ```
/// let yaml = "name: p\nflag: f\nphases: [ { percent: 5 } ]\n";
/// let plan = sluice_plan::parse("p.yaml", yaml).unwrap();
/// let mut problems = Vec::new();
/// let mut report = sluice_plan::Report::new("p.yaml", &plan, "gates[0]", &mut problems);
/// report.templates(sluice_plan::model::Location::UNKNOWN, "query", "rate(x{v=\"{{rampd}}\"}[1m])", &[]);
/// assert_eq!(problems[0].key, "gates[0].query");
/// assert!(problems[0].message.starts_with("unknown template variable `{{rampd}}`"));
/// ```
pub struct Report<'a> {
    file: &'a str,
    plan: &'a Plan,
    prefix: String,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Report<'a> {
    /// A report of `plan` (from `file`) under `prefix`, writing into `problems`.
    pub fn new(file: &'a str, plan: &'a Plan, prefix: impl Into<String>, problems: &'a mut Vec<Problem>) -> Self {
        Report { file, plan, prefix: prefix.into(), problems }
    }

    /// The plan being checked.
    pub fn plan(&self) -> &'a Plan {
        self.plan
    }

    /// The full key of `rel`: `gates[0].query`.
    pub fn key(&self, rel: &str) -> String {
        match (self.prefix.is_empty(), rel.is_empty()) {
            (_, true) => self.prefix.clone(),
            (true, false) => rel.to_string(),
            (false, false) if rel.starts_with('[') => format!("{}{rel}", self.prefix),
            (false, false) => format!("{}.{rel}", self.prefix),
        }
    }

    /// A report of the same plan under `prefix.rel`.
    pub fn within(&mut self, rel: &str) -> Report<'_> {
        let prefix = self.key(rel);
        Report { file: self.file, plan: self.plan, prefix, problems: self.problems }
    }

    /// A problem of `level` at `at` on `rel`.
    pub fn at(&mut self, level: Level, at: Location, rel: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            level,
            file: self.file.to_string(),
            line: at.line(),
            column: at.column(),
            key: self.key(rel),
            message: message.into(),
        });
    }

    /// An error: the plan cannot start.
    pub fn error(&mut self, at: Location, rel: &str, message: impl Into<String>) {
        self.at(Level::Error, at, rel, message);
    }

    /// Worth knowing; the plan is valid.
    pub fn note(&mut self, at: Location, rel: &str, message: impl Into<String>) {
        self.at(Level::Note, at, rel, message);
    }

    /// Whether an error was reported so far (by anyone).
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.level == Level::Error)
    }

    /// A plug-in's typed configuration read from a block (the keys of its check, action or notifier, `at`
    /// being where that is); its error is reported at the key and place it is about.
    pub fn parse_block<T: DeserializeOwned>(&mut self, block: &Block, at: Location) -> Option<T> {
        match block.parse(at) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(e.at, &e.path, e.message);
                None
            }
        }
    }

    /// A typed value read from one node of a block, whose key is `rel`.
    pub fn parse<T: DeserializeOwned>(&mut self, node: &Spanned<Node>, rel: &str) -> Option<T> {
        match crate::block::parse(node) {
            Ok(t) => Some(t),
            Err(e) => {
                let key = match (rel.is_empty(), e.path.is_empty()) {
                    (_, true) => rel.to_string(),
                    (true, false) => e.path.clone(),
                    (false, false) if e.path.starts_with('[') => format!("{rel}{}", e.path),
                    (false, false) => format!("{rel}.{}", e.path),
                };
                self.error(e.at, &key, e.message);
                None
            }
        }
    }

    /// Every `{{name}}` in `text` is a template the plan has: the built-in ones, its `vars`, and `extra`.
    pub fn templates(&mut self, at: Location, rel: &str, text: &str, extra: &[&str]) {
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start + 2..].find("}}") else {
                self.error(at, rel, "a `{{` without its `}}`");
                return;
            };
            let name = rest[start + 2..start + 2 + len].trim();
            let known = BUILTIN_TEMPLATES.contains(&name) || extra.contains(&name) || self.plan.vars.contains_key(name);
            if !known {
                let mut all: Vec<&str> = BUILTIN_TEMPLATES.to_vec();
                all.extend(extra);
                all.extend(self.plan.vars.keys().map(String::as_str));
                self.error(
                    at,
                    rel,
                    format!(
                        "unknown template variable `{{{{{name}}}}}`; known: {} (add others under `vars:`)",
                        all.join(", ")
                    ),
                );
            }
            rest = &rest[start + 2 + len + 2..];
        }
    }

    /// A plan reads only the server's environment variables named `SLUICE_SECRET_*`.
    pub fn secret_env(&mut self, at: Location, rel: &str, name: &str) {
        let rest = name.strip_prefix(SECRET_ENV_PREFIX).unwrap_or("");
        if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            self.error(
                at,
                rel,
                format!("a plan reads only environment variables named {SECRET_ENV_PREFIX}… (capitals, digits, `_`): `{name}` is not one; export the secret under such a name"),
            );
        }
    }

    /// A secret from where plans may read secrets.
    pub fn secret_ref(&mut self, at: Location, rel: &str, r: &SecretRef) {
        match r {
            SecretRef { secret_env: Some(var), secret_file: None } => {
                let key = join(rel, "secret_env");
                self.secret_env(at, &key, var)
            }
            SecretRef { secret_env: None, secret_file: Some(path) } => {
                self.secret_file(at, &join(rel, "secret_file"), path)
            }
            _ => self.error(at, rel, "a secret is `{secret_env: SLUICE_SECRET_…}` or `{secret_file: NAME}`"),
        }
    }

    fn secret_file(&mut self, at: Location, rel: &str, path: &str) {
        let p = std::path::Path::new(path);
        let inside = !path.is_empty() && p.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            self.error(
                at,
                rel,
                format!("`{path}` must be a path inside the server's secrets directory (--secrets-dir): relative, without `..`"),
            );
        }
    }

    /// Text (templates known) or a secret from where plans may read secrets.
    pub fn env_value(&mut self, value: &Spanned<EnvValue>, rel: &str) {
        match &value.value {
            EnvValue::Text(text) => self.templates(value.referenced, rel, text, &[]),
            EnvValue::Secret(r) => self.secret_ref(value.referenced, rel, r),
        }
    }

    /// Environment variables for a program (`rel.env`): names a program can take, secrets only from where
    /// plans may read them, and never one that decides which program runs.
    pub fn env(&mut self, rel: &str, env: &BTreeMap<String, Spanned<EnvValue>>) {
        for (name, value) in env {
            let key = join(rel, &format!("env.{name}"));
            if name.is_empty()
                || name.starts_with(|c: char| c.is_ascii_digit())
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                self.error(value.referenced, &key, "an environment variable's name is letters, digits and `_`");
            }
            // They decide which program runs: a plan allowed to run `kubectl` must not run another one.
            if name == "PATH" || name.starts_with("LD_") || name.starts_with("DYLD_") {
                self.error(
                    value.referenced,
                    &key,
                    format!(
                        "`{name}` cannot be set: it decides which program runs (the server's own PATH finds programs)"
                    ),
                );
            }
            self.env_value(value, &key);
        }
    }

    /// HTTP headers (`rel.NAME`): names a header can have, values text or a secret; `reserved` are set by
    /// Sluice itself.
    pub fn headers(&mut self, rel: &str, headers: &BTreeMap<String, Spanned<EnvValue>>, reserved: &[&str]) {
        for (name, value) in headers {
            let key = join(rel, name);
            let token = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !token {
                self.error(value.referenced, &key, "a header's name is letters, digits, `-` and `_`");
            }
            if reserved.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                self.error(value.referenced, &key, format!("`{name}` is set by Sluice itself"));
            }
            self.env_value(value, &key);
        }
    }

    /// A URL given directly (`url`, templates allowed, `http://` or `https://`) or through a secret
    /// variable (`url_env`), one of the two.
    pub fn url(&mut self, at: Location, url: Option<&Spanned<String>>, url_env: Option<&Spanned<String>>) {
        match (url, url_env) {
            (Some(_), Some(_)) => self.error(at, "", "give `url` or `url_env`, not both"),
            (None, None) => self.error(at, "", "needs `url` or `url_env` (an environment variable holding the URL)"),
            (None, Some(var)) => self.secret_env(var.referenced, "url_env", &var.value),
            (Some(u), None) => {
                self.templates(u.referenced, "url", &u.value, &[]);
                let templated = u.value.contains("{{");
                if !(templated || u.value.starts_with("http://") || u.value.starts_with("https://")) {
                    self.error(u.referenced, "url", "a URL starts with http:// or https://");
                }
            }
        }
    }
}

fn join(rel: &str, key: &str) -> String {
    if rel.is_empty() {
        key.to_string()
    } else {
        format!("{rel}.{key}")
    }
}
