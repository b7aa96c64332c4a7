//! `sluice report`: the post-rollout review of a live rollout that paused, was resumed, signed, and then
//! rolled back on a hard trigger, in Markdown and as one self-contained HTML file, which headless Chromium
//! renders to a picture kept as a test artefact (`target/tmp/artefacts/`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{serve, Server};
use serde_json::Value;

fn wait_for(s: &Server, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    common::wait_for(s, id, what, Duration::from_secs(30), done)
}

fn plan(d: &Path) -> String {
    format!(
        r#"name: checkout-review
flag: checkout
analysis: {{ interval: 1s }}
gates:
  - {{ name: error-rate, command: [cat, "{d}/err"], value_from: last_number, below: 0.01 }}
phases:
  - {{ percent: 10, hold: 1s, approvals: [qa-signoff] }}
  - {{ percent: 50, hold: 1h }}
  - {{ percent: 100 }}
triggers:
  - {{ name: errors-hard, command: [cat, "{d}/bad"], value_from: last_number, above: 0.5, for: 2s, severity: hard }}
  - {{ name: latency-soft, source: signal, severity: soft, decide_within: 1h, default: rollback }}
rollback:
  actions:
    - {{ name: undo, exec: [sh, -c, "echo undone"] }}
"#,
        d = d.display()
    )
}

#[test]
fn a_rollout_review_tells_its_phases_evidence_incidents_and_audit() {
    let s = serve();
    let d = s.dir.path().to_path_buf();
    std::fs::write(d.join("err"), "0.002\n").unwrap();
    std::fs::write(d.join("bad"), "0\n").unwrap();
    std::fs::write(d.join("plan.yaml"), plan(&d)).unwrap();
    s.cli(&["flag", "create", "checkout", "--percent", "0"]);
    let operator = s.token("dana", "operator");
    let started: Value = s.start_rollout(&d.join("plan.yaml"));
    let id = started["id"].as_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = s.cli_with(Some(&operator), args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["rollout", "signal", &id, "latency-soft", "--soft", "--reason", "p95 looks high"]);
    wait_for(&s, &id, "pause", |st| st["status"]["state"] == "paused");
    run(&["rollout", "resume", &id, "--reason", "a slow dependency | not <b>us</b> [see](http://127.0.0.1/x)"]);
    run(&["rollout", "approve", &id, "qa-signoff"]);
    wait_for(&s, &id, "phase 2", |st| st["phase"] == 2);
    std::fs::write(d.join("err"), "0.03\n").unwrap();
    std::fs::write(d.join("bad"), "0.9\n").unwrap();
    wait_for(&s, &id, "rollback", |st| st["status"]["state"] == "rolled_back");
    // The rollback's action is carried out after the state is written: the review waits for its record.
    let started = Instant::now();
    while !s.cli(&["audit", "list", "--entity", &format!("rollout:{id}")]).contains("rollout.action") {
        assert!(started.elapsed() < Duration::from_secs(20), "the rollback action was not recorded");
        std::thread::sleep(Duration::from_millis(200));
    }

    let md = s.cli(&["report", &id]);
    for expected in [
        "# Rollout review: checkout-review",
        "| Flag | `checkout` |",
        "| Outcome | **rolled back: ",
        "| 1 | 10% |",
        "| 2 | 50% |",
        "promoted: ",
        "| error-rate | gate | `< 0.01` |",
        "| errors-hard | trigger | `> 0.5` |",
        "| fired 1/2 ticks | none |",
        "| fired 2/2 ticks | rolled\\_back |",
        "- **paused** at ",
        "p95 looks high",
        "Then: resumed after ",
        "- **rolled back** at ",
        "`qa-signoff` signed by dana",
        "| rollback.actions\\[0\\] | undo | ok | 1 | undone",
        "intact",
        "| dana | rollout.resumed | rollout:",
        "| flag.update | flag:checkout | ramp 10% → 50%: rollout checkout-review",
    ] {
        assert!(md.contains(expected), "the Markdown review lacks {expected:?}:\n{md}");
    }

    // A person's words are text, never markup: they cannot break a table or become a link.
    assert!(md.contains("a slow dependency \\| not \\<b\\>us\\</b\\> \\[see\\](http://127.0.0.1/x)"), "{md}");
    let out = d.join("review.html");
    s.cli(&["report", &id, "--format", "html", "--out", out.to_str().unwrap()]);
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert_eq!(html.matches("<svg").count(), 2, "a chart per measured gate and trigger (a signal is not measured)");
    assert!(html.contains("threshold &lt; 0.01"), "the gate's threshold is drawn");
    assert!(html.contains("✖ rolled back"), "status is told in text and shape, not colour alone");
    assert!(html.contains("not &lt;b&gt;us&lt;/b&gt; [see](http://127.0.0.1/x)"), "a reason is escaped in HTML");
    // Self-contained: no script, and nothing fetched from anywhere (the SVG namespace is a name, not a fetch).
    for outside in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(outside), "the HTML review refers to {outside}");
    }
    let artefacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    std::fs::write(artefacts.join("report.md"), &md).unwrap();
    std::fs::copy(&out, artefacts.join("report.html")).unwrap();
    screenshot(&out, &artefacts.join("report.png"));
}

/// Opens the HTML review in headless Chromium: the document a real browser builds from it has both charts,
/// the status in words and the hostile reason as text (no `<b>` element made from it); and a PNG for people
/// to look at.
fn screenshot(html: &Path, png: &Path) {
    let Some(chromium) = common::chromium() else { return };
    let profile = tempfile::tempdir().unwrap();
    let dom = std::process::Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<svg").count(), 2, "the browser's document has both charts: {dom}");
    assert!(dom.contains("✖ rolled back"), "{dom}");
    assert!(dom.contains("not &lt;b&gt;us&lt;/b&gt;") && !dom.contains("<b>us</b>"), "the reason stays text: {dom}");
    let _ = std::fs::remove_file(png);
    let profile = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,2600"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(
        png.metadata().is_ok_and(|m| m.len() > 10_000),
        "Chromium made no picture of the review: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}
