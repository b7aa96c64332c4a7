//! `sluice plan check` as a CI lint runs it: without a server (`--offline`), and what it says when the
//! server it needs is not there.

mod common;

use std::process::{Command, Output};

use serde_json::Value;

/// Runs `sluice plan check ARGS…` from the repository root, talking to `server` when it needs one.
fn plan_check(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(common::root())
        .args(["plan", "check"])
        .args(args)
        .env("SLUICE_SERVER", server)
        .env_remove("SLUICE_TOKEN")
        .output()
        .unwrap()
}

/// A loopback address nothing listens on.
fn nowhere() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

#[test]
fn without_a_server_the_error_names_offline_and_catalog() {
    let out = plan_check(&nowhere(), &["examples/bounded-reasoning.yaml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("cannot reach the Sluice server"), "{err}");
    assert!(err.contains("--offline checks the plan alone"), "{err}");
    assert!(err.contains("--catalog FILE checks it against a flag file"), "{err}");
}

#[test]
fn offline_checks_the_plan_alone_against_the_plug_ins_of_this_build() {
    let out = plan_check(&nowhere(), &["examples/bounded-reasoning.yaml", "--offline"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("examples/bounded-reasoning.yaml: ok"), "{stdout}");
    // Slack notifications, exec actions, Prometheus and builtin checks: all built in now.
    assert!(!stdout.contains("not available on this server"), "{stdout}");
    assert!(stdout.contains("were not checked: --offline"), "{stdout}");

    let out = plan_check(&nowhere(), &["examples/bounded-reasoning.yaml", "--offline", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["ok"], true, "{report:#}");
    let problems = report[0]["problems"].as_array().unwrap();
    assert!(problems.iter().all(|p| p["unavailable"] != true), "{report:#}");
}
