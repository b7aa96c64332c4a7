//! `sluice serve` as a user runs it, driven by the `sluice` CLI and read by real clients: the OpenFeature
//! server and web SDKs with their OFREP providers (npm), and the Python `UnleashClient` (PyPI), which runs
//! Unleash's own engine. The clients are installed by the test command (`scripts/test`); when they are
//! missing these tests fail, never skip.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{root, serve, Server, ADMIN_TOKEN};
use serde_json::{json, Value};

fn node_modules() -> PathBuf {
    let dir = root().join("node_modules");
    assert!(
        dir.join("@openfeature/ofrep-web-provider").is_dir(),
        "the OpenFeature client packages are missing at {}: run `npm ci` at the workspace root (scripts/test does)",
        dir.display()
    );
    dir
}

fn python() -> PathBuf {
    let python =
        std::env::var_os("SLUICE_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv/bin/python"));
    let ok = Command::new(&python).args(["-c", "import UnleashClient"]).output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "no Python with UnleashClient at {}: run `python3 -m venv .venv && .venv/bin/pip install -r tests/clients/requirements.txt` \
         (scripts/test does), or point SLUICE_PYTHON at one",
        python.display()
    );
    python
}

fn run_checked(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

/// The multi-variant flag of seed 002 (`warn` ramping to `enforce`) and a flag at 100% to switch off:
/// what every SDK is asked about.
fn stage_validation_and_a_killed_flag(s: &Server, percent: &str) {
    let variants = ["--variants", "off,warn,enforce", "--base", "warn", "--ramped", "enforce"];
    s.cli(&[&["flag", "create", "stage_validation"][..], &variants, &["--percent", percent]].concat());
    s.cli(&["flag", "create", "killed", "--percent", "100"]);
}

#[test]
fn openfeature_sdks_read_flags_and_hear_changes() {
    let modules = node_modules();
    let s = serve();
    s.cli(&["flag", "create", "checkout_redesign", "--percent", "100"]);
    stage_validation_and_a_killed_flag(&s, "100");
    s.cli(&["flag", "disable", "killed", "--reason", "incident"]);
    let sdk = s.sdk_token("web-app");
    let out = run_checked(
        Command::new("node")
            .arg(root().join("tests/clients/ofrep.mjs"))
            .current_dir(modules.parent().unwrap())
            .env("SLUICE_URL", &s.url)
            .env("SDK_TOKEN", &sdk)
            .env("ADMIN_TOKEN", ADMIN_TOKEN),
        "the OpenFeature client script",
    );
    assert!(out.contains("server SDK: ok") && out.contains("web SDK: ok"), "{out}");
}

#[test]
fn the_python_unleash_sdk_agrees_with_ofrep_for_ten_thousand_users() {
    let python = python();
    let s = serve();
    s.cli(&["segment", "set", "beta", "--constraint", "tier IN beta"]);
    s.cli(&["flag", "create", "awf_bundle", "--percent", "25"]);
    for i in 1..=20 {
        s.cli(&["flag", "override", "awf_bundle", "--user", &format!("user-{i}"), "--enable"]);
    }
    for i in 30..=50 {
        s.cli(&["flag", "override", "awf_bundle", "--user", &format!("user-{i}"), "--disable"]);
    }
    s.cli(&["flag", "override", "awf_bundle", "--user", "user-60", "--enable", "--expires", "1h"]);
    s.cli(&["flag", "override", "awf_bundle", "--user", "user-70", "--disable", "--expires", "1h"]);
    s.cli(&["flag", "override", "awf_bundle", "--session", "s-99", "--disable"]);
    // An override that has already expired must apply nowhere.
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let body = json!({"field": "userId", "value": "user-80", "action": "enable", "expires_at": past});
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/flags/awf_bundle/overrides", s.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().unwrap());
    stage_validation_and_a_killed_flag(&s, "40");
    s.cli(&["flag", "override", "stage_validation", "--user", "user-5", "--variant", "off"]);
    s.cli(&["flag", "disable", "killed"]);
    s.cli(&["flag", "create", "segmented", "--percent", "50", "--segments", "beta"]);
    let sdk = s.sdk_token("python-app");

    let contexts: Vec<Value> = (0..10_000)
        .map(|i| json!({"userId": format!("user-{i}"), "sessionId": format!("s-{i}"), "properties": {"tier": if i % 3 == 0 { "beta" } else { "free" }}}))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&contexts).unwrap()).unwrap();
    let flags = ["awf_bundle", "stage_validation", "killed", "segmented"];
    let mut cmd = Command::new(&python);
    cmd.arg(root().join("tests/clients/unleash_parity.py"))
        .arg(format!("{}/api", s.url))
        .arg(&sdk)
        .arg(file.path())
        .args(flags);
    let out = run_checked(&mut cmd, "the Python UnleashClient script");
    let python_answers: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(python_answers.len(), contexts.len() * flags.len());

    // Ask OFREP the same questions, one bulk request per context.
    let http = reqwest::blocking::Client::new();
    let mut ramped = [0usize; 4];
    for (ctx, answers) in contexts.iter().zip(python_answers.chunks(flags.len())) {
        let ofrep_ctx =
            json!({"targetingKey": ctx["userId"], "sessionId": ctx["sessionId"], "tier": ctx["properties"]["tier"]});
        let bulk: Value = http
            .post(format!("{}/ofrep/v1/evaluate/flags", s.url))
            .bearer_auth(&sdk)
            .json(&json!({"context": ofrep_ctx}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        for (i, (flag, py)) in flags.iter().zip(answers).enumerate() {
            let ours = bulk["flags"].as_array().unwrap().iter().find(|f| f["key"] == *flag).unwrap();
            let who = &ctx["userId"];
            if *flag == "stage_validation" {
                let expected = if py["feature_enabled"] == true { py["variant"].clone() } else { json!("off") };
                assert_eq!(ours["variant"], expected, "{flag} for {who}: OFREP {ours}, Unleash {py}");
                ramped[i] += usize::from(ours["variant"] == "enforce");
            } else {
                assert_eq!(ours["value"], py["enabled"], "{flag} for {who}: OFREP {ours}, Unleash {py}");
                ramped[i] += usize::from(ours["value"] == true);
            }
        }
    }
    // Not a trivially equal comparison: the ramps split the population as configured.
    let share = |n: usize| n as f64 / contexts.len() as f64 * 100.0;
    assert!((share(ramped[0]) - 25.0).abs() < 2.0, "awf_bundle: {}%", share(ramped[0]));
    assert!((share(ramped[1]) - 40.0).abs() < 2.0, "stage_validation: {}%", share(ramped[1]));
    assert_eq!(ramped[2], 0, "killed");
    assert!((share(ramped[3]) - 50.0 / 3.0).abs() < 2.0, "segmented: {}%", share(ramped[3]));

    // The SDK's metrics reached the server and were kept.
    let metrics: Value =
        http.get(format!("{}/api/v1/client-metrics", s.url)).bearer_auth(ADMIN_TOKEN).send().unwrap().json().unwrap();
    let counted: u64 = metrics["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["flag"] == "awf_bundle" && (r["variant"] == "(enabled)" || r["variant"] == "(disabled)"))
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert!(counted >= 10_000, "metrics for awf_bundle: {metrics}");
}

#[test]
fn the_cli_says_what_to_do_when_it_cannot_proceed() {
    let s = serve();
    let unreachable = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["flag", "list"])
        .env("SLUICE_SERVER", "http://127.0.0.1:9")
        .env("SLUICE_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    let err = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        err.contains("cannot reach the Sluice server at http://127.0.0.1:9") && err.contains("SLUICE_SERVER"),
        "{err}"
    );

    let refused = s.cli_with(Some("slc_not_a_token"), &["flag", "list"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused the token"), "{refused:?}");
    let missing = s.cli_with(None, &["flag", "list"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("needs a token"), "{missing:?}");

    let bad = s.cli_with(Some(ADMIN_TOKEN), &["flag", "create", "f", "--percent", "150"]);
    assert!(!bad.status.success());
    // `create` never overwrites: a second one is refused and the flag keeps its ramp.
    s.cli(&["flag", "create", "g", "--percent", "30"]);
    let again = s.cli_with(Some(ADMIN_TOKEN), &["flag", "create", "g"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("exists") && err.contains("sluice flag set g"), "{err}");
    assert!(s.cli(&["flag", "get", "g"]).contains("30%"));
    // `--clear-all` clears everyone's overrides: with `--user` it is refused rather than half-obeyed.
    let both = s.cli_with(Some(ADMIN_TOKEN), &["flag", "override", "g", "--user", "bob", "--clear-all"]);
    assert!(!both.status.success() && String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
    // Asked for JSON, a script gets its error as JSON too.
    let missing = s.cli_with(Some(ADMIN_TOKEN), &["flag", "get", "nope", "-o", "json"]);
    let err: Value = serde_json::from_slice(&missing.stderr).expect("a JSON error");
    assert!(!missing.status.success() && err["error"].as_str().unwrap().contains("nope"), "{err}");
    let bad = s.cli_with(Some(ADMIN_TOKEN), &["segment", "set", "qa", "--constraint", "email LIKE x"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("unknown operator `LIKE`") && err.contains("constraints[0].operator"), "{err}");
}

#[test]
fn flag_files_import_all_or_nothing_and_the_audit_verifies() {
    let s = serve();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("flags.yaml");
    std::fs::write(
        &good,
        "segments:\n  - id: 1\n    name: internal_qa\n    constraints:\n      - contextName: email\n        operator: STR_ENDS_WITH\n        values: ['@example.com']\n\
         flags:\n  - key: bounded_reasoning\n    ramp:\n      percent: 1\n      segments: [internal_qa]\n  - key: stage_validation\n    variants:\n      - {name: 'off', value: 'off'}\n      - {name: warn, value: warn}\n      - {name: enforce, value: enforce}\n    ramp: {base: warn, ramped: enforce, percent: 10}\n",
    )
    .unwrap();
    s.cli(&["import", "flags", good.to_str().unwrap(), "--reason", "bootstrap"]);
    let flags: Value = serde_json::from_str(&s.cli(&["flag", "list", "-o", "json"])).unwrap();
    assert_eq!(flags.as_array().unwrap().len(), 2);

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "flags:\n  - key: new_one\n  - key: broken\n    ramp: {percent: 101}\n").unwrap();
    let out = s.cli_with(Some(ADMIN_TOKEN), &["import", "flags", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("broken") && err.contains("ramp.percent"), "{err}");
    let flags: Value = serde_json::from_str(&s.cli(&["flag", "list", "-o", "json"])).unwrap();
    assert_eq!(flags.as_array().unwrap().len(), 2, "a failed import writes nothing");

    let unleash = dir.path().join("features.json");
    std::fs::write(&unleash, r#"{"version":2,"features":[{"name":"awf_bundle","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"25","stickiness":"default","groupId":"awf_bundle"}}]}]}"#).unwrap();
    s.cli(&["import", "unleash", unleash.to_str().unwrap()]);
    assert!(s.cli(&["flag", "get", "awf_bundle"]).contains("25% off → on"));

    let head = s.cli(&["audit", "head"]).trim().to_string();
    assert_eq!(head.len(), 64);
    let whole = s.cli(&["audit", "verify", "--head", &head]);
    assert!(whole.starts_with("intact:"), "{whole}");
    // Page by page (3 events a request) the CLI checks the same chain to the same head.
    assert_eq!(s.cli(&["audit", "verify", "--head", &head, "--page-size", "3"]), whole);
    let listed = s.cli(&["audit", "list", "--action", "flag."]);
    assert!(listed.contains("flag.create") && !listed.contains("segment.create"), "{listed}");

    // Someone edits record 5 in the database file: the CLI names it, whatever the page size.
    let db = s.dir.path().join("data/sluice.db");
    let edit = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE audit SET actor = 'mallory' WHERE seq = 5\"); c.commit()";
    let out = std::process::Command::new("python3").args(["-c", edit]).arg(&db).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["3", "5000"] {
        let out = s.cli_with(Some(ADMIN_TOKEN), &["audit", "verify", "--page-size", page]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("broken at record 5"), "page size {page}: {err}");
    }
}

/// A Node service reports its requests' outcomes through an OpenFeature hook; the builtin source counts
/// them in a rollout's decisions.
#[test]
fn an_openfeature_hook_reports_outcomes_to_the_builtin_metrics() {
    let modules = node_modules();
    let s = serve();
    s.cli(&["flag", "create", "checkout_redesign", "--percent", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        "name: counted\nflag: checkout_redesign\nanalysis: { interval: 1s }\nphases: [ { percent: 50, hold: 1h }, { percent: 100 } ]\n\
         gates: [ { name: canary-requests, metric: count, below: 1000000 } ]\n",
    )
    .unwrap();
    s.cli(&["rollout", "start", plan.to_str().unwrap()]);
    // The first tick starts the sequence: send once the gate has judged a window.
    let within = std::time::Duration::from_secs(15);
    common::wait_for_decisions(&s, "counted", "first judged window", within, |decided| {
        decided.iter().any(|d| d["check"] == "canary-requests")
    });
    let sdk = s.sdk_token("checkout-service");
    let out = run_checked(
        Command::new("node")
            .arg(root().join("tests/clients/metrics.mjs"))
            .current_dir(modules.parent().unwrap())
            .env("SLUICE_URL", &s.url)
            .env("SDK_TOKEN", &sdk),
        "the OpenFeature metrics script",
    );
    let canary: f64 = out.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(canary > 0.0, "{out}");
    // The next ticks count what the hook reported.
    common::wait_for_decisions(&s, "counted", &format!("decision counting {canary}"), within, |decided| {
        let last = decided.iter().rev().find(|d| d["check"] == "canary-requests");
        last.and_then(|d| d["value"].as_f64()) == Some(canary)
    });
}

/// One server with `staging` and `production`, set up with the CLI (`--env`): the OpenFeature server SDK
/// (OFREP provider) with one token per environment gets each environment's answer for the same flag and
/// context; the web SDK's change stream hears production's changes and never staging's; the Python
/// UnleashClient with each token evaluates each environment's document.
#[test]
fn clients_of_each_environment_get_its_answers_and_hear_only_its_changes() {
    let modules = node_modules();
    let python = python();
    let s = serve();
    stage_validation_and_a_killed_flag(&s, "0");
    s.cli(&["env", "create", "staging", "--reason", "a second environment"]);
    let listed = s.cli(&["env", "list"]);
    assert!(listed.contains("staging") && listed.contains("production"), "{listed}");
    // Two environments now: a command that names none is refused, naming them.
    let refused = s.cli_with(Some(ADMIN_TOKEN), &["flag", "set", "stage_validation", "--percent", "10"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("production, staging"), "{refused:?}");
    s.cli(&["flag", "enable", "stage_validation", "--env", "staging"]);
    s.cli(&["flag", "set", "stage_validation", "--percent", "100", "--env", "staging"]);
    let created = |env: &str, name: &str| -> String {
        let out = s.cli(&["token", "create", name, "--role", "sdk", "--env", env, "-o", "json"]);
        serde_json::from_str::<Value>(&out).unwrap()["token"].as_str().unwrap().to_string()
    };
    let (prod, staging) = (created("production", "shop-prod"), created("staging", "shop-staging"));

    let out = run_checked(
        Command::new("node")
            .arg(root().join("tests/clients/environments.mjs"))
            .current_dir(modules.parent().unwrap())
            .env("SLUICE_URL", &s.url)
            .env("PROD_TOKEN", &prod)
            .env("STAGING_TOKEN", &staging)
            .env("ADMIN_TOKEN", ADMIN_TOKEN),
        "the OpenFeature environments script",
    );
    assert!(out.contains("server SDK per environment: ok") && out.contains("web SDK per environment: ok"), "{out}");

    // Unleash's own engine with each token: production now enforces (the script ramped it), staging is
    // back at 0 % (the script's staging change), so the two documents answer differently.
    let contexts = json!([{"userId": "user-1", "sessionId": "s-1", "properties": {}}]);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&contexts).unwrap()).unwrap();
    let answer = |token: &str| -> Value {
        let mut cmd = Command::new(&python);
        cmd.arg(root().join("tests/clients/unleash_parity.py"))
            .arg(format!("{}/api", s.url))
            .arg(token)
            .arg(file.path())
            .arg("stage_validation");
        serde_json::from_str(run_checked(&mut cmd, "the Python UnleashClient script").lines().next().unwrap()).unwrap()
    };
    let (in_prod, in_staging) = (answer(&prod), answer(&staging));
    assert_eq!(in_prod["variant"], "enforce", "{in_prod}");
    assert_eq!(in_staging["variant"], "warn", "{in_staging}");
}
