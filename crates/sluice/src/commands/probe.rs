//! `sluice probe record|verify|test SUITE.yaml`: golden suites of HTTP requests, run from here.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_sources::golden::{self, Body, Golden, Suite};
use sluice_sources::sources::http::{judge, Http};

use super::read;
use crate::cli::{Output, ProbeArgs, ProbeCmd};
use crate::client::CliError;
use crate::output::print_json;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Record,
    Verify,
    Test,
}

pub async fn run(output: Output, cmd: ProbeCmd) -> Result<(), CliError> {
    let (mode, args) = match cmd {
        ProbeCmd::Record(a) => (Mode::Record, a),
        ProbeCmd::Verify(a) => (Mode::Verify, a),
        ProbeCmd::Test(a) => (Mode::Test, a),
    };
    let ProbeArgs { suite: path, only, secrets_dir } = args;
    let file = path.display().to_string();
    let suite = Suite::parse(&file, &read(&path)?).map_err(CliError)?;
    for name in &only {
        if !suite.requests.iter().any(|r| r.value.name == *name) {
            return Err(CliError(format!("{file} has no request named `{name}`")));
        }
    }
    let http = Http::new(&sluice_sources::Config { secrets_dir, ..Default::default() });
    let timeout = suite.timeout.map_or(Duration::from_secs(10), |t| t.0);
    let folder = golden::folder(&path);
    let chosen: Vec<&golden::GoldenRequest> =
        suite.requests.iter().map(|r| &r.value).filter(|r| only.is_empty() || only.contains(&r.name)).collect();

    // Every request at once: a suite of slow endpoints takes as long as the slowest.
    let probes: Vec<_> = chosen.iter().map(|r| r.as_probe()).collect();
    let answers = futures_util::future::join_all(probes.iter().map(|p| http.send(p, &suite.vars, timeout))).await;
    let mut results = Vec::new();
    let mut recorded = Vec::new();
    for (r, answer) in chosen.iter().zip(answers) {
        let ignore = suite.ignored(r);
        let described = format!(
            "{} {}",
            r.method.as_deref().unwrap_or("GET").to_ascii_uppercase(),
            sluice_plan::render(&r.url.value, &suite.vars)
        );
        let mut problems = Vec::new();
        match &answer {
            Err(e) => problems.push(format!("no answer: {e}")),
            Ok(a) => {
                if let Err(e) = judge(a.status, &a.body, r.expect.as_ref().unwrap_or(&Default::default())) {
                    problems.push(format!("expectation: {e}"));
                }
            }
        }
        if let (Ok(a), Mode::Verify) = (&answer, mode) {
            problems.extend(compare(&folder, &r.name, a.status, Body::of(&a.body), &ignore)?);
        }
        if let (Ok(a), Mode::Record) = (&answer, mode) {
            let body = Body::of(&a.body).without(&ignore);
            recorded.push((r.name.clone(), Golden { request: described.clone(), status: a.status, body }));
        }
        results.push((r.name.clone(), described, problems));
    }

    let failed: Vec<&(String, String, Vec<String>)> = results.iter().filter(|r| !r.2.is_empty()).collect();
    if mode == Mode::Record && failed.is_empty() {
        // All or nothing: a suite is never half from one run and half from another.
        std::fs::create_dir_all(&folder).map_err(|e| CliError(format!("cannot create {}: {e}", folder.display())))?;
        for (name, g) in &recorded {
            let target = folder.join(format!("{name}.json"));
            let text = serde_json::to_string_pretty(g).expect("json") + "\n";
            let partial = folder.join(format!(".{name}.json.tmp"));
            std::fs::write(&partial, text)
                .and_then(|_| std::fs::rename(&partial, &target))
                .map_err(|e| CliError(format!("cannot write {}: {e}", target.display())))?;
        }
    }
    if output == Output::Json {
        let items: Vec<Value> = results
            .iter()
            .map(|(name, request, problems)| json!({"name": name, "request": request, "ok": problems.is_empty(), "problems": problems}))
            .collect();
        print_json(&json!({"suite": file, "goldens": folder, "results": items}));
    } else {
        for (name, request, problems) in &results {
            let mark = if problems.is_empty() { "ok  " } else { "FAIL" };
            println!("{mark} {name}  ({request})");
            for p in problems {
                println!("       {p}");
            }
        }
    }
    let n = results.len();
    match (mode, failed.len()) {
        (Mode::Record, 0) => {
            if output != Output::Json {
                println!("recorded {n} answers in {}", folder.display());
            }
            Ok(())
        }
        (Mode::Record, f) => Err(CliError(format!(
            "{f} of {n} answers failed their expectations: nothing recorded (fix the service, or the expectations)"
        ))),
        (_, 0) => Ok(()),
        (Mode::Verify, f) => Err(CliError(format!(
            "{f} of {n} answers differ from their goldens or expectations (re-record with `sluice probe record {file}` if the change is intended)"
        ))),
        (_, f) => Err(CliError(format!("{f} of {n} answers failed their expectations"))),
    }
}

/// The differences between an answer and the golden file of request `name`.
fn compare(folder: &Path, name: &str, status: u16, body: Body, ignore: &[String]) -> Result<Vec<String>, CliError> {
    let path = folder.join(format!("{name}.json"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => return Ok(vec![format!("no golden file {}: record it with `sluice probe record`", path.display())]),
    };
    let golden: Golden =
        serde_json::from_str(&text).map_err(|e| CliError(format!("{} is not a golden file: {e}", path.display())))?;
    let mut out = Vec::new();
    if golden.status != status {
        out.push(format!("status: {} → {status}", golden.status));
    }
    out.extend(golden::diff(&golden.body, &body, ignore));
    Ok(out)
}
