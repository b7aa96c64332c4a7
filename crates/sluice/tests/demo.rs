//! `sluice demo`, the README's first command, end to end: it must end by itself with the good canary
//! completed, the bad one rolled back and the slow one paused by a soft trigger (then rolled back
//! by its plan's default, since nobody decides), saying why.

use std::process::Command;

#[test]
fn the_demo_promotes_the_good_canary_and_rolls_back_the_bad_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("SLUICE_TOKEN=slc_"), "prints how to look around: {stdout}");
    let verdict = stdout.split("Verdict:").nth(1).expect("a verdict");
    assert!(verdict.contains("good-canary: completed at 100%") && verdict.contains("gates held"), "{verdict}");
    assert!(
        verdict.contains("bad-canary: rolled back at 10%") && verdict.contains("errors-worse-than-control"),
        "{verdict}"
    );
    // Nobody is at the dashboard in this test: the soft trigger's pause ends with the plan's default.
    assert!(
        verdict.contains("slow-canary: rolled back")
            && verdict.contains("it had paused first (trigger `p95-latency-soft`"),
        "{verdict}"
    );
    assert!(stdout.contains("watch it in the dashboard:  http://"), "{stdout}");
}
