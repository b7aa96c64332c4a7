//! The dashboard in a real browser: `tests/dashboard/browser.mjs` (playwright-core from npm driving
//! Debian's Chromium) logs in, watches a rollout advance without reloading, opens and cancels a decision by
//! keyboard alone, rolls another rollout back as an operator with a reason and finds it in the audit log,
//! checks that a viewer sees no buttons and that forged writes are refused, and runs axe-core on the main
//! pages. Screenshots are kept in `target/tmp/artefacts/`. Without Chromium the test fails under
//! `SLUICE_REQUIRE_EXTERNAL` (CI).

mod common;

use std::path::Path;
use std::process::Command;

use common::{root, serve};
use serde_json::Value;

#[test]
fn the_dashboard_shows_rollouts_live_and_takes_an_operators_decision() {
    let Some(chromium) = common::chromium() else { return };
    assert!(
        root().join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` at the workspace root (scripts/test does)"
    );
    let s = serve();
    let d = s.dir.path().to_path_buf();
    std::fs::write(d.join("err"), "0.002\n").unwrap();
    for flag in ["new_checkout", "search_v2", "pricing_rules"] {
        s.cli(&["flag", "create", flag, "--percent", "0"]);
    }
    let plan = |name: &str, flag: &str, phases: &str| {
        format!(
            "name: {name}\nflag: {flag}\nanalysis: {{ interval: 1s }}\n\
             gates: [ {{ name: error-rate, command: [cat, \"{}/err\"], value_from: last_number, below: 0.01 }} ]\n\
             phases: {phases}\n",
            d.display()
        )
    };
    std::fs::write(
        d.join("advancing.yaml"),
        plan(
            "checkout-ramp",
            "new_checkout",
            "[ { percent: 10, hold: 3s }, { percent: 50, hold: 3s }, { percent: 100 } ]",
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("steady.yaml"),
        plan("search-ramp", "search_v2", "[ { percent: 5, hold: 1h, approvals: [qa-signoff] }, { percent: 100 } ]"),
    )
    .unwrap();
    let start = |file: &str| -> String {
        let out: Value = s.start_rollout(&d.join(file));
        out["id"].as_str().unwrap().to_string()
    };
    let steady = start("steady.yaml");
    let advancing = start("advancing.yaml");
    // Held until the browser watches it (the browser resumes it from the page): started free, it could
    // finish before a slow machine has Chromium up, and there would be nothing left to see move.
    s.cli(&["rollout", "pause", &advancing, "--reason", "held until the browser watches"]);
    // A second environment: the flags page shows both side by side, the switcher narrows the rollouts.
    s.cli(&["env", "create", "staging"]);
    let operator = s.token("olivia", "operator");
    let viewer = s.token("vic", "viewer");
    let artefacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();

    let out = Command::new("node")
        .arg(root().join("tests/dashboard/browser.mjs"))
        .current_dir(root())
        .env("SLUICE_URL", &s.url)
        .env("OPERATOR_TOKEN", &operator)
        .env("VIEWER_TOKEN", &viewer)
        .env("ADVANCING", &advancing)
        .env("STEADY", &steady)
        .env("ARTEFACTS", &artefacts)
        .env(
            "CHROMIUM",
            Command::new("sh")
                .args(["-c", &format!("command -v {chromium}")])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap(),
        )
        .output()
        .expect("node runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    for expected in [
        "a viewer sees no decision buttons",
        "a late answer for a page already left does not paint over",
        "the audit log has the rollback",
        "axe-core finds no violations on #/audit",
        "the flags page shows every environment side by side",
        "the switcher narrows the rollouts to its environment",
    ] {
        assert!(stdout.contains(expected), "{stdout}");
    }
    // The server agrees with what the browser saw.
    let status: Value = serde_json::from_str(&s.cli(&["rollout", "status", &steady, "-o", "json"])).unwrap();
    assert_eq!(status["status"]["state"], "rolled_back", "{status:#}");
    assert!(artefacts.join("dashboard-rollout.png").is_file());
}
