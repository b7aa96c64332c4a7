//! Golden suites: the record / verify / test modes of a golden test harness, for any HTTP service.
//!
//! A suite is a YAML file of named requests (the same keys as an `http` probe's requests, plus `name`),
//! optional `vars` for their templates, and the JSON fields to `ignore` because they change on every
//! answer (timestamps, ids). `sluice probe record` stores each answer in a folder beside the suite
//! (`SUITE.golden/NAME.json`, ignored fields written as `"<ignored>"`); `sluice probe verify` sends the
//! requests again and reports every difference from the stored answers; `sluice probe test` checks each
//! answer against its expectations only.
//!
//! ```
//! use sluice_sources::golden::{diff, Body};
//! let golden = Body::of(br#"{"id": 7, "items": [{"sku": "a", "price": 1.0}], "at": "10:00"}"#);
//! let now = Body::of(br#"{"id": 7, "items": [{"sku": "a", "price": 2}], "at": "10:05"}"#);
//! let differences = diff(&golden, &now, &["/at".to_string()]);
//! assert_eq!(differences, ["/items/0/price: 1.0 → 2"]);
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_plan::model::{EnvValue, Spanned};

use crate::sources::http::{Expect, ProbeRequest};
use sluice_plan::Dur;

/// What an ignored field is written as in a golden file.
pub const IGNORED: &str = "<ignored>";

/// A golden suite, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// Values of the requests' `{{templates}}` (e.g. `base: http://127.0.0.1:8080`).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Longest a request may take (default 10 s).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// JSON pointers of fields that differ on every answer, in every request; `*` stands for any key or
    /// index (`/items/*/id`).
    #[serde(default)]
    pub ignore: Vec<String>,
    /// The requests, in order.
    pub requests: Vec<Spanned<GoldenRequest>>,
}

/// One named request of a suite.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenRequest {
    /// Its name, and its golden file's: letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// The URL (templates allowed).
    pub url: Spanned<String>,
    /// `GET` by default.
    #[serde(default)]
    pub method: Option<String>,
    /// Headers: text (templates allowed) or a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<EnvValue>>,
    /// The body (templates allowed).
    #[serde(default)]
    pub body: Option<String>,
    /// What a good answer looks like (`sluice probe test`; `verify` checks it too). Any 2xx by default.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// More fields to ignore in this request's answer.
    #[serde(default)]
    pub ignore: Vec<String>,
}

impl GoldenRequest {
    /// The request as a probe sends it.
    pub fn as_probe(&self) -> ProbeRequest {
        ProbeRequest {
            url: self.url.clone(),
            method: self.method.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            expect: self.expect.clone(),
        }
    }
}

impl Suite {
    /// Reads a suite: YAML errors and bad names come back as `file:line:col: …`.
    pub fn parse(file: &str, text: &str) -> Result<Suite, String> {
        let suite: Suite = serde_saphyr::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        let mut problems = Vec::new();
        if suite.requests.is_empty() {
            problems.push(format!("{file}: `requests` is empty: a suite needs at least one"));
        }
        for (i, r) in suite.requests.iter().enumerate() {
            let at = format!("{file}:{}:{}", r.referenced.line(), r.referenced.column());
            let name = &r.value.name;
            let ok = !name.is_empty()
                && !name.starts_with('.')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                problems.push(format!(
                    "{at}: requests[{i}].name: `{name}` must be letters, digits, `-`, `_` or `.` (it names the golden file)"
                ));
            }
            if suite.requests[..i].iter().any(|p| p.value.name == *name) {
                problems.push(format!("{at}: requests[{i}].name: a second request named `{name}`"));
            }
            for p in suite.ignore.iter().chain(&r.value.ignore) {
                if !p.starts_with('/') {
                    problems.push(format!("{at}: ignore: `{p}` is not a JSON pointer (it starts with `/`)"));
                }
            }
        }
        if problems.is_empty() {
            Ok(suite)
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The fields ignored in a request's answers.
    pub fn ignored(&self, r: &GoldenRequest) -> Vec<String> {
        self.ignore.iter().chain(&r.ignore).cloned().collect()
    }
}

/// The folder of a suite's golden files: `checkout.yaml` → `checkout.golden/`, beside it.
pub fn folder(suite: &Path) -> PathBuf {
    let stem = suite.file_stem().map_or_else(|| "suite".into(), |s| s.to_string_lossy().to_string());
    suite.with_file_name(format!("{stem}.golden"))
}

/// An answer's body: JSON when it parses, else text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// A JSON document.
    Json(Value),
    /// Anything else, as text.
    Text(String),
}

impl Body {
    /// The body of raw bytes.
    pub fn of(bytes: &[u8]) -> Body {
        match serde_json::from_slice(bytes) {
            Ok(v) => Body::Json(v),
            Err(_) => Body::Text(String::from_utf8_lossy(bytes).to_string()),
        }
    }

    /// The body with every ignored field replaced by [`IGNORED`], as stored in a golden file.
    pub fn without(mut self, ignore: &[String]) -> Body {
        if let Body::Json(v) = &mut self {
            blank(v, "", ignore);
        }
        self
    }
}

/// A golden file: the status and body of one recorded answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Golden {
    /// The request, for a reader: `GET http://…/path`.
    pub request: String,
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Body,
}

/// Every difference between a golden answer and a new one, one line each (`/a/0/b: 1 → 2`); fields
/// matching `ignore` are skipped, and numbers compare by value.
pub fn diff(golden: &Body, now: &Body, ignore: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    match (golden, now) {
        (Body::Json(g), Body::Json(n)) => json_diff(g, n, "", ignore, &mut out),
        (Body::Text(g), Body::Text(n)) => text_diff(g, n, &mut out),
        (Body::Json(_), Body::Text(n)) => out.push(format!("the body is no longer JSON: {}", clip(n))),
        (Body::Text(_), Body::Json(n)) => out.push(format!("the body is JSON now: {}", clip(&n.to_string()))),
    }
    out
}

/// Whether `path` (`/items/3/id`) matches an ignore pattern (`/items/*/id`).
fn ignored(path: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|p| {
        let (a, b): (Vec<&str>, Vec<&str>) = (p.split('/').collect(), path.split('/').collect());
        a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| *x == "*" || x == y)
    })
}

fn blank(v: &mut Value, path: &str, ignore: &[String]) {
    let children: Vec<(String, &mut Value)> = match v {
        Value::Object(m) => m.iter_mut().map(|(k, v)| (escape(k), v)).collect(),
        Value::Array(a) => a.iter_mut().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
        _ => return,
    };
    for (key, child) in children {
        let at = format!("{path}/{key}");
        if ignored(&at, ignore) {
            *child = Value::String(IGNORED.into());
        } else {
            blank(child, &at, ignore);
        }
    }
}

/// A key as a JSON pointer segment.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn json_diff(g: &Value, n: &Value, path: &str, ignore: &[String], out: &mut Vec<String>) {
    if !path.is_empty() && ignored(path, ignore) {
        return;
    }
    let at = if path.is_empty() { "/" } else { path };
    match (g, n) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}/{}", escape(k));
                match b.get(k) {
                    Some(w) => json_diff(v, w, &p, ignore, out),
                    None if !ignored(&p, ignore) => out.push(format!("{p}: {} → missing", clip(&v.to_string()))),
                    None => {}
                }
            }
            for (k, w) in b {
                let p = format!("{path}/{}", escape(k));
                if !a.contains_key(k) && !ignored(&p, ignore) {
                    out.push(format!("{p}: new, {}", clip(&w.to_string())));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                json_diff(v, w, &format!("{path}/{i}"), ignore, out);
            }
            if a.len() != b.len() {
                out.push(format!("{at}: {} items → {}", a.len(), b.len()));
            }
        }
        (Value::String(s), _) if s == IGNORED => {}
        _ if crate::sources::http::same(g, n) => {}
        _ => out.push(format!("{at}: {} → {}", clip(&g.to_string()), clip(&n.to_string()))),
    }
}

fn text_diff(g: &str, n: &str, out: &mut Vec<String>) {
    let (a, b): (Vec<&str>, Vec<&str>) = (g.lines().collect(), n.lines().collect());
    let mut shown = 0;
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i), b.get(i));
        if x != y {
            if shown < 5 {
                out.push(format!(
                    "line {}: {} → {}",
                    i + 1,
                    x.map_or("(none)".into(), |l| format!("{:?}", clip(l))),
                    y.map_or("(none)".into(), |l| format!("{:?}", clip(l)))
                ));
            }
            shown += 1;
        }
    }
    if shown > 5 {
        out.push(format!("… and {} more lines", shown - 5));
    }
}

/// At most 120 characters of a value.
fn clip(s: &str) -> String {
    if s.chars().count() <= 120 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(119).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_read_as_paths_and_ignored_fields_never_show() {
        let g = Body::of(br#"{"a": {"b": [1, 2, 3]}, "gone": true, "ts": 1, "items": [{"id": 1, "v": "x"}]}"#);
        let n = Body::of(br#"{"a": {"b": [1, 5]}, "new": null, "ts": 2, "items": [{"id": 9, "v": "x"}]}"#);
        let ignore = vec!["/ts".to_string(), "/items/*/id".to_string()];
        assert_eq!(
            diff(&g, &n, &ignore),
            ["/a/b/1: 2 → 5", "/a/b: 3 items → 2", "/gone: true → missing", "/new: new, null"]
        );
        let stored = g.clone().without(&ignore);
        assert_eq!(diff(&stored, &n.clone().without(&ignore), &[]).len(), 4, "blanked fields compare equal");
        let Body::Json(v) = stored else { panic!() };
        assert_eq!(v["items"][0]["id"], IGNORED);
        assert_eq!(v["ts"], IGNORED);
        assert_eq!(diff(&Body::of(b"one\ntwo\n"), &Body::of(b"one\nthree\n"), &[]), ["line 2: \"two\" → \"three\""]);
    }

    #[test]
    fn a_suite_names_its_problems_with_their_place() {
        let e = Suite::parse(
            "s.yaml",
            "requests:\n  - { name: a, url: 'http://x' }\n  - { name: 'a b', url: 'http://x' }\n",
        )
        .unwrap_err();
        assert!(e.starts_with("s.yaml:3:"), "{e}");
        assert!(e.contains("`a b` must be letters"), "{e}");
        assert!(Suite::parse("s.yaml", "requests: []\n").unwrap_err().contains("is empty"));
        assert!(Suite::parse("s.yaml", "requests:\n  - { nme: a }\n").is_err());
    }
}
