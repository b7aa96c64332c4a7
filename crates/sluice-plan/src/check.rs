//! Where a plan is checked: every rule a plan must follow before a rollout may start, each problem named by
//! file, line, column and key.

use std::collections::BTreeSet;

use serde_saphyr::{Location, Spanned};

use crate::model::*;
use crate::{AllPlugins, Capabilities, Catalog, Level, PluginKind, Problem};

/// The prefix of the only environment variables a plan may read.
pub const SECRET_ENV_PREFIX: &str = "SLUICE_SECRET_";

/// Template names every plan has.
pub const BUILTIN_TEMPLATES: &[&str] = &["flag", "ramped", "base", "phase", "percent", "interval"];

struct Checker<'a> {
    file: &'a str,
    plan: &'a Plan,
    catalog: Option<&'a Catalog>,
    plugins: &'a dyn Capabilities,
    problems: Vec<Problem>,
    /// What this version cannot run yet → where it is first used, and every key using it.
    unavailable: std::collections::BTreeMap<String, (Location, Vec<String>)>,
}

impl Checker<'_> {
    fn at(&mut self, level: Level, loc: Location, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            level,
            file: self.file.to_string(),
            line: loc.line(),
            column: loc.column(),
            key: key.into(),
            message: message.into(),
        });
    }

    fn error(&mut self, loc: Location, key: impl Into<String>, message: impl Into<String>) {
        self.at(Level::Error, loc, key, message);
    }

    fn note(&mut self, loc: Location, key: impl Into<String>, message: impl Into<String>) {
        self.at(Level::Note, loc, key, message);
    }

    fn unavailable(&mut self, loc: Location, what: String, key: &str) {
        self.unavailable.entry(what).or_insert_with(|| (loc, Vec::new())).1.push(key.to_string());
    }

    fn templates(&mut self, loc: Location, key: &str, text: &str) {
        self.templates_with(loc, key, text, &[]);
    }

    /// [`templates`](Self::templates) where `extra` names are known too (`window`, inside an `slo`).
    fn templates_with(&mut self, loc: Location, key: &str, text: &str, extra: &[&str]) {
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start + 2..].find("}}") else {
                self.error(loc, key, "a `{{` without its `}}`");
                return;
            };
            let name = rest[start + 2..start + 2 + len].trim();
            let known = BUILTIN_TEMPLATES.contains(&name) || extra.contains(&name) || self.plan.vars.contains_key(name);
            if !known {
                let mut all: Vec<&str> = BUILTIN_TEMPLATES.to_vec();
                all.extend(extra);
                all.extend(self.plan.vars.keys().map(String::as_str));
                self.error(
                    loc,
                    key,
                    format!(
                        "unknown template variable `{{{{{name}}}}}`; known: {} (add others under `vars:`)",
                        all.join(", ")
                    ),
                );
            }
            rest = &rest[start + 2 + len + 2..];
        }
    }

    fn endpoint(&mut self, loc: Location, key: &str, e: &Endpoint) {
        match (&e.url, &e.url_env) {
            (Some(_), Some(_)) => self.error(loc, key, "give `url` or `url_env`, not both"),
            (None, None) => self.error(loc, key, "needs `url` or `url_env` (an environment variable holding the URL)"),
            (None, Some(var)) => self.secret_env(var.referenced, &format!("{key}.url_env"), &var.value),
            _ => {}
        }
        if let Some(secret) = &e.secret {
            self.secret_ref(secret.referenced, &format!("{key}.secret"), &secret.value);
        }
    }

    /// A Prometheus check's `baseline` and its margin; whether the check has one (then the margin is its
    /// threshold).
    fn baseline(&mut self, v: &Check, key: &str) -> bool {
        let Some(b) = &v.baseline else {
            if v.max_increase.is_some() || v.max_increase_pct.is_some() {
                self.error(
                    v.name.referenced,
                    format!("{key}.max_increase"),
                    "a margin on a prometheus check needs `baseline: {window: 1h}` (the query's average before the start)",
                );
            }
            return false;
        };
        let loc = b.referenced;
        match (v.max_increase, v.max_increase_pct) {
            (None, None) => self.error(
                loc,
                format!("{key}.baseline"),
                "a baseline needs its margin: `max_increase` (absolute) or `max_increase_pct`",
            ),
            (Some(_), Some(_)) => {
                self.error(loc, format!("{key}.baseline"), "give `max_increase` or `max_increase_pct`, not both")
            }
            _ => {}
        }
        if v.below.is_some() || v.above.is_some() || v.between.is_some() {
            self.error(
                loc,
                format!("{key}.baseline"),
                "a baseline's threshold is its margin: drop below/above/between",
            );
        }
        let interval = self.plan.analysis.interval.value;
        if b.value.window.value < interval {
            self.error(
                b.value.window.referenced,
                format!("{key}.baseline.window"),
                format!("`{}` is shorter than the analysis interval {interval}: the baseline averages the query at every interval of it", b.value.window.value),
            );
        }
        true
    }

    /// `analysis.prometheus`: where, and credentials only from where plans may read secrets.
    fn prometheus_endpoint(&mut self, loc: Location, e: &PrometheusEndpoint) {
        let key = "analysis.prometheus";
        match (&e.url, &e.url_env) {
            (Some(_), Some(_)) => self.error(loc, key, "give `url` or `url_env`, not both"),
            (None, None) => self.error(loc, key, "needs `url` or `url_env` (an environment variable holding the URL)"),
            (None, Some(var)) => self.secret_env(var.referenced, &format!("{key}.url_env"), &var.value),
            (Some(url), None) => {
                let templated = url.value.contains("{{");
                if !(templated || url.value.starts_with("http://") || url.value.starts_with("https://")) {
                    self.error(
                        url.referenced,
                        format!("{key}.url"),
                        "a Prometheus URL starts with http:// or https://",
                    );
                }
            }
        }
        match (&e.bearer_env, &e.basic_env) {
            (Some(b), Some(_)) => {
                self.error(b.referenced, format!("{key}.bearer_env"), "give `bearer_env` or `basic_env`, not both")
            }
            (Some(v), None) => self.secret_env(v.referenced, &format!("{key}.bearer_env"), &v.value),
            (None, Some(v)) => self.secret_env(v.referenced, &format!("{key}.basic_env"), &v.value),
            (None, None) => {}
        }
        for (name, value) in &e.headers {
            let hkey = format!("{key}.headers.{name}");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                self.error(value.referenced, &hkey, "a header's name is letters, digits, `-` and `_`");
            }
            if name.eq_ignore_ascii_case("authorization") && (e.bearer_env.is_some() || e.basic_env.is_some()) {
                self.error(value.referenced, &hkey, "`bearer_env`/`basic_env` set `Authorization` already");
            }
            self.env_value(value, &hkey);
        }
    }

    /// A PromQL query parses (a real PromQL parser, templates filled with sample values): a syntax error is
    /// found here, with the parser's words, rather than as a source error at the first tick.
    fn promql(&mut self, q: &Spanned<String>, key: &str) {
        let mut sample: std::collections::BTreeMap<String, String> =
            self.plan.vars.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        for (name, value) in [
            ("flag", "f"),
            ("ramped", "on"),
            ("base", "off"),
            ("phase", "1"),
            ("percent", "10"),
            ("interval", "1m"),
            ("window", "5m"),
        ] {
            sample.insert(name.into(), value.into());
        }
        let query = crate::render(&q.value, &sample);
        if let Err(e) = promql_parser::parser::parse(&query) {
            self.error(q.referenced, key, format!("the PromQL does not parse: {e}"));
        }
    }

    /// A probe: one request or a list, each a known method, templates known, JSON pointers well formed.
    fn probe(&mut self, p: &Spanned<Probe>, key: &str) {
        match (&p.value.url, p.value.requests.is_empty()) {
            (Some(_), false) => self.error(p.referenced, key, "give `url` (one request) or `requests: […]`, not both"),
            (None, true) => self.error(p.referenced, key, "needs `url` (one request) or `requests: […]`"),
            _ => {}
        }
        for (i, r) in p.value.all_requests().iter().enumerate() {
            let at = if p.value.url.is_some() { key.to_string() } else { format!("{key}.requests[{i}]") };
            self.templates(r.url.referenced, &format!("{at}.url"), &r.url.value);
            if let Some(m) = &r.method {
                if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
                    .contains(&m.to_ascii_uppercase().as_str())
                {
                    self.error(r.url.referenced, format!("{at}.method"), format!("`{m}` is not an HTTP method"));
                }
            }
            self.env(&format!("{at}.headers"), &r.headers);
            let expect = r.expect.clone().unwrap_or_default();
            let pointers =
                expect.json_present.iter().chain(expect.json_not_null.iter()).chain(expect.json_equals.keys());
            for ptr in pointers {
                if !ptr.is_empty() && !ptr.starts_with('/') {
                    self.error(
                        r.url.referenced,
                        format!("{at}.expect"),
                        format!("`{ptr}` is not a JSON pointer: it starts with `/` (`/endpoints/0/status`)"),
                    );
                }
            }
        }
    }

    /// A plan reads only the server's environment variables named `SLUICE_SECRET_*`.
    fn secret_env(&mut self, loc: Location, key: &str, name: &str) {
        let rest = name.strip_prefix(SECRET_ENV_PREFIX).unwrap_or("");
        if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            self.error(
                loc,
                key,
                format!("a plan reads only environment variables named {SECRET_ENV_PREFIX}… (capitals, digits, `_`): `{name}` is not one; export the secret under such a name"),
            );
        }
    }

    /// Environment variables for a program: names a program can take, secrets only from where plans may
    /// read them.
    fn env(&mut self, key: &str, env: &std::collections::BTreeMap<String, Spanned<EnvValue>>) {
        for (name, value) in env {
            let key = format!("{key}.env.{name}");
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

    /// A secret from where plans may read secrets.
    fn secret_ref(&mut self, loc: Location, key: &str, r: &SecretRef) {
        match r {
            SecretRef { secret_env: Some(var), secret_file: None } => {
                self.secret_env(loc, &format!("{key}.secret_env"), var)
            }
            SecretRef { secret_env: None, secret_file: Some(_) } => {}
            _ => self.error(loc, key, "a secret is `{secret_env: SLUICE_SECRET_…}` or `{secret_file: NAME}`"),
        }
    }

    /// HTTP headers: names a header can have, values text or a secret.
    fn headers(&mut self, key: &str, headers: &std::collections::BTreeMap<String, Spanned<EnvValue>>) {
        for (name, value) in headers {
            let key = format!("{key}.{name}");
            let token = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !token {
                self.error(value.referenced, &key, "a header's name is letters, digits, `-` and `_`");
            }
            let reserved = ["content-type", "content-length", "host", "idempotency-key", "sluice-signature"];
            if reserved.contains(&name.to_ascii_lowercase().as_str()) {
                self.error(value.referenced, &key, format!("`{name}` is set by Sluice itself"));
            }
            self.env_value(value, &key);
        }
    }

    /// Text (templates known) or a secret from where plans may read secrets.
    fn env_value(&mut self, value: &Spanned<EnvValue>, key: &str) {
        match &value.value {
            EnvValue::Text(text) => self.templates(value.referenced, key, text),
            EnvValue::Secret(SecretRef { secret_env: Some(var), secret_file: None }) => {
                self.secret_env(value.referenced, &format!("{key}.secret_env"), var)
            }
            EnvValue::Secret(SecretRef { secret_env: None, secret_file: Some(path) }) => {
                let p = std::path::Path::new(path);
                let inside = !path.is_empty() && p.components().all(|c| matches!(c, std::path::Component::Normal(_)));
                if !inside {
                    self.error(
                        value.referenced,
                        format!("{key}.secret_file"),
                        format!("`{path}` must be a path inside the server's secrets directory (--secrets-dir): relative, without `..`"),
                    );
                }
            }
            EnvValue::Secret(_) => self.error(
                value.referenced,
                key,
                "a secret is `{secret_env: SLUICE_SECRET_…}` or `{secret_file: NAME}`",
            ),
        }
    }

    fn action(&mut self, a: &Spanned<Action>, key: &str) {
        let loc = a.referenced;
        match (&a.value.exec, &a.value.webhook) {
            (Some(argv), None) => {
                if argv.value.is_empty() || argv.value[0].trim().is_empty() {
                    self.error(argv.referenced, format!("{key}.exec"), "needs a command: [program, arg, …]");
                }
                for arg in &argv.value {
                    // An action also knows the rollout's id, plan and last event (`checks` is a webhook body's).
                    self.templates_with(argv.referenced, &format!("{key}.exec"), arg, &crate::WEBHOOK_TEMPLATES[..4]);
                }
                self.env(key, &a.value.env);
                if let Some(d) = &a.value.dir {
                    self.templates(d.referenced, &format!("{key}.dir"), &d.value);
                }
            }
            (None, Some(w)) => {
                for (given, what) in [(!a.value.env.is_empty(), "env"), (a.value.dir.is_some(), "dir")] {
                    if given {
                        self.error(
                            loc,
                            format!("{key}.{what}"),
                            format!("`{what}` is for exec actions; a webhook takes `headers`"),
                        );
                    }
                }
                match (&w.value.url, &w.value.url_env) {
                    (Some(_), Some(_)) => {
                        self.error(w.referenced, format!("{key}.webhook"), "give `url` or `url_env`, not both")
                    }
                    (None, None) => self.error(w.referenced, format!("{key}.webhook"), "needs `url` or `url_env`"),
                    (Some(u), None) => self.templates(u.referenced, &format!("{key}.webhook.url"), &u.value),
                    (None, Some(var)) => self.secret_env(var.referenced, &format!("{key}.webhook.url_env"), &var.value),
                }
                if let Some(b) = &w.value.body {
                    let at = format!("{key}.webhook.body");
                    self.templates_with(b.referenced, &at, &b.value, crate::WEBHOOK_TEMPLATES);
                    // Filled with a stand-in for every value, the body must be JSON: a quote or comma out of
                    // place is found now, not when a rollback calls the receiver.
                    // Numbers stand in for numbers, `[]` for the checks, the plan's own values for its vars,
                    // and a bare word for text: so a text value left outside quotes is caught too.
                    let mut stand_in: std::collections::BTreeMap<String, String> = BUILTIN_TEMPLATES
                        .iter()
                        .chain(crate::WEBHOOK_TEMPLATES)
                        .map(|n| {
                            let v = match *n {
                                "percent" | "phase" => "0",
                                "checks" => "[]",
                                _ => "text",
                            };
                            (n.to_string(), v.to_string())
                        })
                        .collect();
                    for (k, v) in &self.plan.vars {
                        let quoted = serde_json::to_string(&v.0).expect("a string serializes");
                        stand_in.insert(k.clone(), quoted[1..quoted.len() - 1].to_string());
                    }
                    if let Err(e) = serde_json::from_str::<serde_json::Value>(&crate::render(&b.value, &stand_in)) {
                        self.error(b.referenced, at, format!("not JSON once its templates are filled: {e} (a text value goes in quotes: \"{{{{reason}}}}\"; a number or `{{{{checks}}}}` does not)"));
                    }
                }
                if let Some(m) = &w.value.method {
                    if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                        self.error(
                            w.referenced,
                            format!("{key}.webhook.method"),
                            format!("`{m}` is not one of GET, POST, PUT, PATCH, DELETE"),
                        );
                    }
                }
                if let Some(secret) = &w.value.secret {
                    self.secret_ref(secret.referenced, &format!("{key}.webhook.secret"), &secret.value);
                }
                self.headers(&format!("{key}.webhook.headers"), &w.value.headers);
                if let Some(r) = &w.value.retries {
                    if r.value > 10 {
                        self.error(
                            r.referenced,
                            format!("{key}.webhook.retries"),
                            "at most 10 retries (the last waits about 8 minutes)",
                        );
                    }
                }
                if !self.plugins.can(PluginKind::Action(ActionKind::Webhook)) {
                    self.unavailable(w.referenced, "webhook actions are".into(), &format!("{key}.webhook"));
                }
            }
            (Some(_), Some(_)) => self.error(loc, key, "an action is `exec`, `webhook` or `flag`: one of them"),
            (None, None) if a.value.flag.is_some() => {}
            (None, None) => self.error(
                loc,
                key,
                "an action needs `exec: [program, args…]`, `webhook: {url: …}` or `flag: {key: …, percent: …}`",
            ),
        }
        if let Some(f) = &a.value.flag {
            if a.value.exec.is_some() || a.value.webhook.is_some() {
                self.error(loc, key, "an action is `exec`, `webhook` or `flag`: one of them");
            }
            let at = format!("{key}.flag");
            let v = &f.value;
            if v.key.value == self.plan.flag.value {
                self.error(
                    v.key.referenced,
                    format!("{at}.key"),
                    "the rollout's own flag is set by its phases; a flag action sets another flag",
                );
            }
            if v.enabled.is_none() && v.percent.is_none() && v.variant.is_none() {
                self.error(f.referenced, &at, "say what to set: `enabled`, `percent` or `variant`");
            }
            if let Some(p) = &v.percent {
                if p.value > 100 {
                    self.error(p.referenced, format!("{at}.percent"), "a percentage is 0 to 100");
                }
            }
            if self.known_flag(v.key.referenced, &format!("{at}.key"), &v.key.value) {
                let catalog_flag = self.catalog.and_then(|c| c.flags.iter().find(|cf| cf.key == v.key.value));
                if let (Some(cf), Some(variant)) = (catalog_flag, &v.variant) {
                    if !cf.variants.contains(&variant.value) {
                        let message = format!(
                            "flag `{}` has no variant `{}` (it has {})",
                            cf.key,
                            variant.value,
                            cf.variants.join(", ")
                        );
                        self.error(variant.referenced, format!("{at}.variant"), message);
                    }
                }
            }
            if a.value.idempotent {
                self.note(loc, format!("{key}.idempotent"), "a flag action sets a state: it is always safe to repeat");
            }
        }
        if a.value.idempotent && a.value.webhook.is_some() {
            self.note(
                loc,
                format!("{key}.idempotent"),
                "webhooks are always retried with the same Idempotency-Key; `idempotent` is for exec actions",
            );
        }
    }

    /// One gate or trigger. `trigger` says which.
    fn check(&mut self, c: &Spanned<Check>, key: &str, trigger: bool) {
        let loc = c.referenced;
        let v = &c.value;
        if v.name.value.trim().is_empty() {
            self.error(v.name.referenced, format!("{key}.name"), "must not be empty");
        }
        let given = v.sources_given();
        if v.source.is_none() && given.len() > 1 {
            self.error(loc, key, "give one of `query`, `metric`, `http` or `command`, or say which with `source`");
            return;
        }
        let source = v.source_kind(self.plan.analysis.source.as_ref().map(|s| s.value));
        if source == SourceKind::Signal && v.source.is_none() && !trigger {
            self.error(
                loc,
                key,
                "where does the value come from? give `query` (prometheus), `metric` (builtin), `http` or `command`",
            );
            return;
        }
        let name = source.as_str();
        let forbid = |this: &mut Self, present: bool, field: &str| {
            if present {
                this.error(loc, format!("{key}.{field}"), format!("`{field}` does not apply to a `{name}` source"));
            }
        };
        forbid(
            self,
            source != SourceKind::Prometheus && (v.query.is_some() || v.slo.is_some() || v.reduce.is_some()),
            "query",
        );
        forbid(
            self,
            source != SourceKind::Builtin
                && (v.metric.is_some() || v.compare.is_some() || v.window.is_some() || v.min_samples.is_some()),
            "metric",
        );
        forbid(self, source != SourceKind::Http && v.http.is_some(), "http");
        forbid(self, source != SourceKind::Command && (v.command.is_some() || v.value_from.is_some()), "command");
        let mut threshold_needed = true;
        if source == SourceKind::Prometheus && self.plan.analysis.prometheus.is_none() {
            self.error(
                loc,
                key,
                "a prometheus check needs the server to ask: add `analysis.prometheus: {url: http://…}` (or `url_env: SLUICE_SECRET_…`)",
            );
        }
        if source == SourceKind::Prometheus {
            match (&v.query, &v.slo) {
                (Some(q), None) => {
                    self.templates(q.referenced, &format!("{key}.query"), &q.value);
                    self.promql(q, &format!("{key}.query"));
                }
                (None, Some(slo)) => {
                    if !(0.0 < slo.value.objective && slo.value.objective < 100.0) {
                        self.error(
                            slo.referenced,
                            format!("{key}.slo.objective"),
                            "an objective is a percentage between 0 and 100, e.g. 99.9",
                        );
                    }
                    if slo.value.windows.is_empty() {
                        self.error(
                            slo.referenced,
                            format!("{key}.slo.windows"),
                            "needs at least one window, e.g. [5m, 1h]",
                        );
                    }
                    // `{{window}}` is each window in turn, and means nothing elsewhere.
                    let (good, total) = (&slo.value.good, &slo.value.total);
                    self.templates_with(good.referenced, &format!("{key}.slo.good"), &good.value, &["window"]);
                    self.templates_with(total.referenced, &format!("{key}.slo.total"), &total.value, &["window"]);
                    self.promql(good, &format!("{key}.slo.good"));
                    self.promql(total, &format!("{key}.slo.total"));
                }
                (Some(_), Some(_)) => self.error(loc, key, "give `query` or `slo`, not both"),
                (None, None) => self.error(loc, key, "a prometheus check needs a `query` (or an `slo`)"),
            }
            threshold_needed = !self.baseline(v, key);
        }
        forbid(self, source != SourceKind::Prometheus && v.baseline.is_some(), "baseline");
        match source {
            SourceKind::Prometheus => {}
            SourceKind::Builtin => {
                match &v.metric {
                    None => self.error(loc, key, "a builtin check needs a `metric`: error_rate, latency_p50, latency_p95, latency_p99, mean(NAME) or count"),
                    Some(m) => {
                        let ok = matches!(m.value.as_str(), "error_rate" | "latency_p50" | "latency_p95" | "latency_p99" | "count")
                            || (m.value.starts_with("mean(") && m.value.ends_with(')') && m.value.len() > 6);
                        if !ok {
                            self.error(m.referenced, format!("{key}.metric"), format!("unknown metric `{}`: use error_rate, latency_p50, latency_p95, latency_p99, mean(NAME) or count", m.value));
                        }
                    }
                }
                if let Some(cmp) = &v.compare {
                    threshold_needed = false;
                    match (v.max_increase, v.max_increase_pct) {
                        (None, None) => self.error(
                            cmp.referenced,
                            format!("{key}.compare"),
                            "a comparison needs its margin: `max_increase` (absolute) or `max_increase_pct`",
                        ),
                        (Some(_), Some(_)) => self.error(
                            cmp.referenced,
                            format!("{key}.compare"),
                            "give `max_increase` or `max_increase_pct`, not both",
                        ),
                        _ => {}
                    }
                    if v.below.is_some() || v.above.is_some() || v.between.is_some() {
                        self.error(
                            cmp.referenced,
                            format!("{key}.compare"),
                            "a comparison's threshold is its margin: drop below/above/between",
                        );
                    }
                    if let (Compare::Control, Some(w)) = (cmp.value, &v.window) {
                        self.error(
                            w.referenced,
                            format!("{key}.window"),
                            "a comparison with control uses every request since the percentage took effect: `window` is for plain thresholds (and the baseline's period)",
                        );
                    }
                    if let Some(a) = v.alpha {
                        if !(0.0 < a && a < 0.5) {
                            self.error(cmp.referenced, format!("{key}.alpha"), "alpha is between 0 and 0.5, e.g. 0.05");
                        }
                    }
                } else if v.max_increase.is_some() || v.max_increase_pct.is_some() {
                    self.error(
                        loc,
                        format!("{key}.max_increase"),
                        "a margin needs `compare: control` or `compare: baseline`",
                    );
                }
            }
            SourceKind::Http => match &v.http {
                Some(p) => self.probe(p, &format!("{key}.http")),
                None => self.error(loc, key, "an http check needs `http: {url, expect, value}` (or `requests: […]`)"),
            },
            SourceKind::Command => match &v.command {
                Some(argv) if !argv.value.is_empty() && !argv.value[0].trim().is_empty() => {
                    for arg in &argv.value {
                        self.templates(argv.referenced, &format!("{key}.command"), arg);
                    }
                    self.env(key, &v.env);
                }
                Some(argv) => {
                    self.error(argv.referenced, format!("{key}.command"), "needs a command: [program, arg, …]")
                }
                None => self.error(loc, key, "a command check needs `command: [program, args…]`"),
            },
            SourceKind::Signal => {
                threshold_needed = false;
                if !trigger {
                    self.error(
                        loc,
                        key,
                        "a gate needs a measured value; `signal` is for triggers fired by a person or an alert",
                    );
                }
            }
        }
        if !self.plugins.can(PluginKind::Source(source)) {
            self.unavailable(loc, format!("the `{name}` source is"), key);
        }
        let thresholds = [v.below.is_some(), v.above.is_some(), v.between.is_some()].iter().filter(|b| **b).count();
        if threshold_needed && thresholds == 0 {
            self.error(
                loc,
                key,
                format!("`{}` has no threshold: add `below`, `above` or `between: [lo, hi]`", v.name.value),
            );
        }
        if thresholds > 1 {
            self.error(loc, key, "give one threshold: `below`, `above` or `between`");
        }
        let numbers = [v.below, v.above, v.max_increase, v.max_increase_pct]
            .into_iter()
            .flatten()
            .chain(v.between.iter().flat_map(|b| b.value.iter().copied()));
        if numbers.into_iter().any(|n| !n.is_finite()) {
            // `.nan` never compares true and `.inf` always does: the check would never pass, or never fire.
            self.error(loc, key, "thresholds must be finite numbers (not .nan or .inf)");
        }
        if let Some(b) = &v.between {
            if b.value.len() != 2 || b.value[0] >= b.value[1] {
                self.error(b.referenced, format!("{key}.between"), "needs [lo, hi] with lo < hi");
            }
        }
        if let Some(t) = &v.timeout {
            if t.value.0.is_zero() {
                self.error(t.referenced, format!("{key}.timeout"), "a timeout longer than 0s");
            }
        }
        let interval = self.plan.analysis.interval.value;
        if let Some(f) = &v.for_ {
            if f.value < interval {
                self.error(f.referenced, format!("{key}.for"), format!("`for: {}` is shorter than the analysis interval {interval}: one tick already decides; drop `for` or make it longer", f.value));
            }
        }
        if trigger {
            match v.severity.as_ref().map(|s| s.value) {
                None => self.error(
                    loc,
                    format!("{key}.severity"),
                    "a trigger needs `severity: hard` (roll back at once) or `severity: soft` (pause and ask)",
                ),
                Some(Severity::Soft) => {
                    if v.decide_within.is_none() || v.default.is_none() {
                        self.error(loc, key, format!("soft trigger `{}` has no decision rule: add `decide_within: 1h` and `default: rollback` (or `resume`) for when nobody decides", v.name.value));
                    }
                }
                Some(Severity::Hard) => {
                    if let Some(d) = &v.decide_within {
                        self.error(
                            d.referenced,
                            format!("{key}.decide_within"),
                            "a hard trigger rolls back at once; only soft triggers wait for a decision",
                        );
                    }
                    if let Some(d) = &v.default {
                        self.error(
                            d.referenced,
                            format!("{key}.default"),
                            "a hard trigger rolls back at once; only soft triggers have a default decision",
                        );
                    }
                }
            }
        } else {
            for (present, field) in [
                (v.severity.as_ref().map(|s| s.referenced), "severity"),
                (v.decide_within.as_ref().map(|s| s.referenced), "decide_within"),
                (v.default.as_ref().map(|s| s.referenced), "default"),
            ] {
                if let Some(at) = present {
                    self.error(
                        at,
                        format!("{key}.{field}"),
                        format!("`{field}` is for triggers; a gate only blocks promotion"),
                    );
                }
            }
        }
    }

    fn known_flag(&mut self, loc: Location, key: &str, flag: &str) -> bool {
        let Some(catalog) = self.catalog else { return true };
        if catalog.flags.iter().any(|f| f.key == flag) {
            true
        } else {
            self.error(loc, key, format!("unknown flag `{flag}`: create it first (`sluice flag create {flag}`)"));
            false
        }
    }

    fn ramp(&mut self, r: &Spanned<RampSpec>, key: &str, flag_known: bool) {
        if r.value.base.value == r.value.ramped.value {
            self.error(r.referenced, key, "`base` and `ramped` are the same variant");
        }
        let Some(catalog) = self.catalog.filter(|_| flag_known) else { return };
        let Some(flag) = catalog.flags.iter().find(|f| f.key == self.plan.flag.value) else { return };
        for (field, v) in [("base", &r.value.base), ("ramped", &r.value.ramped)] {
            if !flag.variants.contains(&v.value) {
                self.error(
                    v.referenced,
                    format!("{key}.{field}"),
                    format!("flag `{}` has no variant `{}` (it has {})", flag.key, v.value, flag.variants.join(", ")),
                );
            }
        }
    }

    fn run(mut self) -> Vec<Problem> {
        let plan = self.plan;
        if plan.name.value.trim().is_empty() {
            self.error(plan.name.referenced, "name", "must not be empty");
        }
        let flag_known = self.known_flag(plan.flag.referenced, "flag", &plan.flag.value);
        for name in plan.vars.keys() {
            let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok || BUILTIN_TEMPLATES.contains(&name.as_str()) {
                self.error(
                    plan.flag.referenced,
                    format!("vars.{name}"),
                    "a variable name is letters, digits and `_`, and not a built-in template name",
                );
            }
        }
        if let Some(p) = &plan.analysis.prometheus {
            self.prometheus_endpoint(plan.analysis.interval.referenced, p);
        }
        if let Some(a) = plan.analysis.alpha {
            if !(0.0 < a && a < 0.5) {
                self.error(
                    plan.analysis.interval.referenced,
                    "analysis.alpha",
                    "alpha is between 0 and 0.5, e.g. 0.05",
                );
            }
        }
        if plan.analysis.max_source_errors.value == 0 {
            self.error(
                plan.analysis.max_source_errors.referenced,
                "analysis.max_source_errors",
                "at least 1: the number of source errors in a row that stops the rollout",
            );
        }
        if plan.analysis.max_inconclusive.value == 0 {
            self.error(
                plan.analysis.max_inconclusive.referenced,
                "analysis.max_inconclusive",
                "at least 1: the number of inconclusive ticks in a row after which people are told a trigger cannot fire",
            );
        }
        if let Some(r) = &plan.ramp {
            self.ramp(r, "ramp", flag_known);
        }
        let mut plan_names = BTreeSet::new();
        for (i, g) in plan.gates.iter().enumerate() {
            self.check(g, &format!("gates[{i}]"), false);
            self.unique(&mut plan_names, g, &format!("gates[{i}].name"));
        }
        for (i, t) in plan.triggers.iter().enumerate() {
            self.check(t, &format!("triggers[{i}]"), true);
            self.unique(&mut plan_names, t, &format!("triggers[{i}].name"));
        }
        if plan.phases.is_empty() {
            self.error(plan.name.referenced, "phases", "a plan needs at least one phase");
        }
        let mut previous: Option<(String, String, u8)> = None;
        for (i, p) in plan.phases.iter().enumerate() {
            let key = format!("phases[{i}]");
            let ph = &p.value;
            if ph.percent.value > 100 {
                self.error(
                    ph.percent.referenced,
                    format!("{key}.percent"),
                    format!("{} is outside 0..100", ph.percent.value),
                );
            }
            if let Some(r) = &ph.ramp {
                self.ramp(r, &format!("{key}.ramp"), flag_known);
            }
            let ramp = ph
                .ramp
                .as_ref()
                .or(plan.ramp.as_ref())
                .map(|r| (r.value.base.value.clone(), r.value.ramped.value.clone()))
                .unwrap_or_default();
            if let Some((base, ramped, pct)) = &previous {
                if (base, ramped) == (&ramp.0, &ramp.1) && ph.percent.value <= *pct {
                    self.error(
                        ph.percent.referenced,
                        format!("{key}.percent"),
                        format!("percentages must increase from phase to phase: {} after {pct}", ph.percent.value),
                    );
                }
            }
            previous = Some((ramp.0, ramp.1, ph.percent.value));
            for (j, s) in ph.segments.iter().enumerate() {
                if let Some(catalog) = self.catalog {
                    if !catalog.segments.contains(&s.value) {
                        self.error(
                            s.referenced,
                            format!("{key}.segments[{j}]"),
                            format!(
                                "unknown segment `{}` (create it with `sluice segment set {} --constraint …`)",
                                s.value, s.value
                            ),
                        );
                    }
                }
            }
            let mut approvals = BTreeSet::new();
            for (j, a) in ph.approvals.iter().enumerate() {
                if a.value.item.trim().is_empty() || !approvals.insert(a.value.item.clone()) {
                    self.error(
                        a.referenced,
                        format!("{key}.approvals[{j}]"),
                        "approval items are unique, non-empty names",
                    );
                }
            }
            let mut names = plan_names.clone();
            for (j, g) in ph.gates.iter().enumerate() {
                self.check(g, &format!("{key}.gates[{j}]"), false);
                self.unique(&mut names, g, &format!("{key}.gates[{j}].name"));
            }
            for (j, a) in ph.hooks.before.iter().enumerate() {
                self.action(a, &format!("{key}.hooks.before[{j}]"));
            }
            for (j, a) in ph.hooks.after.iter().enumerate() {
                self.action(a, &format!("{key}.hooks.after[{j}]"));
            }
        }
        for (i, f) in plan.rollback.flags_off.iter().enumerate() {
            if f.value == plan.flag.value {
                self.error(
                    f.referenced,
                    format!("rollback.flags_off[{i}]"),
                    "the plan's own flag is restored by the rollback already",
                );
            } else {
                self.known_flag(f.referenced, &format!("rollback.flags_off[{i}]"), &f.value);
            }
        }
        for (i, a) in plan.rollback.actions.iter().enumerate() {
            self.action(a, &format!("rollback.actions[{i}]"));
        }
        let mut confirm_names = BTreeSet::new();
        for (i, c) in plan.confirm.iter().enumerate() {
            let key = format!("confirm[{i}]");
            let name = &c.value.name;
            if name.value.trim().is_empty() {
                self.error(name.referenced, format!("{key}.name"), "must not be empty");
            } else if !confirm_names.insert(name.value.clone()) {
                self.error(
                    name.referenced,
                    format!("{key}.name"),
                    format!("a second confirm gate named `{}`", name.value),
                );
            }
            if c.value.before.is_empty() {
                self.error(
                    c.referenced,
                    format!("{key}.before"),
                    "say which steps it guards: `start`, `increase`, `promotion`",
                );
            }
            // The call is checked as the webhook action it becomes.
            let action = Spanned::new(c.value.action(), c.referenced, c.defined);
            self.action(&action, &key);
        }
        for (i, n) in plan.notify.iter().enumerate() {
            let key = format!("notify[{i}]");
            let kinds = [&n.value.slack, &n.value.webhook, &n.value.alertmanager];
            match kinds.iter().filter(|k| k.is_some()).count() {
                1 => {
                    let e = kinds.iter().find_map(|k| k.as_ref()).expect("one");
                    self.endpoint(n.referenced, &key, e);
                    if let Some((kind, _)) =
                        n.value.endpoint().filter(|(k, _)| !self.plugins.can(PluginKind::Notifier(*k)))
                    {
                        self.unavailable(n.referenced, format!("`{}` notifiers are", kind.as_str()), &key);
                    }
                }
                0 => self.error(n.referenced, key.clone(), "a notifier is one of `slack`, `webhook` or `alertmanager`"),
                _ => self.error(
                    n.referenced,
                    key.clone(),
                    "one notifier per list item: `slack`, `webhook` or `alertmanager`",
                ),
            }
            for (j, event) in n.value.on.iter().enumerate() {
                if !crate::EVENTS.iter().any(|(kind, _)| *kind == event.as_str()) {
                    let known: Vec<&str> = crate::EVENTS.iter().map(|(k, _)| *k).collect();
                    self.error(
                        n.referenced,
                        format!("{key}.on[{j}]"),
                        format!("no event `{event}`: one of {}", known.join(", ")),
                    );
                }
            }
        }
        for (what, (loc, keys)) in std::mem::take(&mut self.unavailable) {
            let first = keys[0].clone();
            let more = if keys.len() > 1 {
                format!(" (and {} more: {})", keys.len() - 1, keys[1..].join(", "))
            } else {
                String::new()
            };
            self.at(
                Level::Unavailable,
                loc,
                first,
                format!("{what} not available on this server{more}: the plan is valid but cannot start here"),
            );
        }
        self.problems
    }

    fn unique(&mut self, names: &mut BTreeSet<String>, c: &Spanned<Check>, key: &str) {
        if !names.insert(c.value.name.value.clone()) {
            self.error(
                c.value.name.referenced,
                key,
                format!("a second check named `{}`: names identify checks in decisions", c.value.name.value),
            );
        }
    }
}

/// The programs a plan runs (`exec` actions and hooks, `command` checks), by the name it gives them:
/// starting such a plan takes an admin, or an operator when the server allows each of them.
pub fn programs(plan: &Plan) -> std::collections::BTreeSet<String> {
    let actions = plan
        .rollback
        .actions
        .iter()
        .chain(plan.phases.iter().flat_map(|p| p.value.hooks.before.iter().chain(p.value.hooks.after.iter())))
        .filter_map(|a| a.value.exec.as_ref());
    let checks =
        plan.gates.iter().chain(plan.triggers.iter()).chain(plan.phases.iter().flat_map(|p| p.value.gates.iter()));
    let checks = checks.filter_map(|c| c.value.command.as_ref());
    actions.chain(checks).filter_map(|argv| argv.value.first().cloned()).collect()
}

/// Every problem of a parsed plan, errors and notes, in file order, assuming every kind of source, action
/// and notifier exists: the plan's own rules. [`check_with`] also names what a given server cannot run.
pub fn check(file: &str, plan: &Plan, catalog: Option<&Catalog>) -> Vec<Problem> {
    check_with(file, plan, catalog, &AllPlugins)
}

/// [`check`], plus a note for each source, action or notifier the plan uses that `plugins` lacks (a
/// plan with such a note is valid but cannot start on that server).
pub fn check_with(file: &str, plan: &Plan, catalog: Option<&Catalog>, plugins: &dyn Capabilities) -> Vec<Problem> {
    let checker = Checker { file, plan, catalog, plugins, problems: Vec::new(), unavailable: Default::default() };
    let mut problems = checker.run();
    problems.sort_by_key(|p| (p.line, p.column));
    problems
}
