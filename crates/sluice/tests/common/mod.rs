//! The real `sluice` binary, started on a free loopback port, and its CLI.

#![allow(dead_code)]

#[path = "../../../../tests/support/external.rs"]
pub mod external;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123456789";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub struct Server {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real binary on a free loopback port, with the admin token from the environment.
pub fn serve() -> Server {
    serve_with(&[])
}

/// [`serve`] with more environment variables (a `PATH` with fake programs first).
pub fn serve_with(env: &[(&str, String)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = listening_url(child.stdout.take().unwrap());
    Server { child, url, dir }
}

/// The address `sluice serve` says it listens on, read from its stdout, which is then drained for good so
/// that the server never blocks on a full pipe.
pub fn listening_url(stdout: std::process::ChildStdout) -> String {
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("sluice listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    url
}

impl Server {
    pub fn cli_with(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(args).env("SLUICE_SERVER", &self.url).env_remove("SLUICE_TOKEN");
        if let Some(t) = token {
            cmd.env("SLUICE_TOKEN", t);
        }
        cmd.output().unwrap()
    }

    /// Runs a CLI command as the admin; panics with its output when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_with(Some(ADMIN_TOKEN), args);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "sluice {args:?} failed:\n{stdout}\n{stderr}");
        stdout.into_owned()
    }

    pub fn sdk_token(&self, name: &str) -> String {
        self.token(name, "sdk")
    }

    /// Starts the rollout of the plan in `file` as the admin: the started rollout, as `-o json` prints it.
    pub fn start_rollout(&self, file: &std::path::Path) -> Value {
        serde_json::from_str(&self.cli(&["rollout", "start", file.to_str().unwrap(), "-o", "json"])).unwrap()
    }

    /// A token with `role`.
    pub fn token(&self, name: &str, role: &str) -> String {
        let created: Value =
            serde_json::from_str(&self.cli(&["token", "create", name, "--role", role, "-o", "json"])).unwrap();
        created["token"].as_str().unwrap().to_string()
    }
}

/// Waits for a file a hook or an action writes, for at most 20 seconds. The writer is another process
/// (the hook's shell), so the file's appearance is the only event there is; the sleep is the poll interval.
pub fn wait_for_file(path: &std::path::Path, what: &str) {
    let begun = std::time::Instant::now();
    while !path.exists() {
        assert!(begun.elapsed() < std::time::Duration::from_secs(20), "{what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Polls a rollout's status through the CLI until `done` says so, for at most `within`.
pub fn wait_for(s: &Server, id: &str, what: &str, within: std::time::Duration, done: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let status: Value = serde_json::from_str(&s.cli(&["rollout", "status", id, "-o", "json"])).unwrap();
        if done(&status) {
            return status;
        }
        assert!(started.elapsed() < within, "no {what} within {within:?}: {status:#}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Polls a rollout's kept decisions through the CLI until `done` says so, for at most `within`; returns
/// them. The poll interval is how often the CLI asks, not a wait for anything.
pub fn wait_for_decisions(
    s: &Server,
    id: &str,
    what: &str,
    within: std::time::Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let started = std::time::Instant::now();
    loop {
        let decisions: Vec<Value> = serde_json::from_str(&s.cli(&["rollout", "decisions", id, "-o", "json"])).unwrap();
        if done(&decisions) {
            return decisions;
        }
        assert!(started.elapsed() < within, "no {what} within {within:?}: {decisions:#?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Debian's Chromium, or `None` (a failure under `SLUICE_REQUIRE_EXTERNAL`, as in CI) when it is missing.
pub fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        external::missing("Chromium", "Debian: apt-get install chromium");
    }
    found
}
