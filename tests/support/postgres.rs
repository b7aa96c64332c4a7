//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary folder and `pg_ctl start` on a free
//! loopback port, as the `postgres` user when the tests run as root (PostgreSQL refuses to run as root);
//! stopped and deleted when dropped. Shared by the test crates through `#[path]`, so that there is one copy.
//!
//! Without PostgreSQL installed, [`Postgres::start`] returns `None` (the test says so and passes), unless
//! `SLUICE_REQUIRE_EXTERNAL` is set (CI), where it fails: a skipped test must never pass for a green one.

#![allow(dead_code)]

#[path = "external.rs"]
mod external;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running cluster; trust authentication on 127.0.0.1 only, superuser `postgres`.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

/// Where `initdb` and `pg_ctl` are: on the PATH, or in Debian's versioned folder.
fn binaries() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Postgres {
    /// Starts a new cluster, or `None` when PostgreSQL is not installed and CI does not require it.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = binaries() else {
            external::missing("PostgreSQL (initdb, pg_ctl)", "Debian: apt-get install postgresql");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("sluice-pg").tempdir().unwrap();
        if is_root() {
            let status = Command::new("chown").arg("postgres:").arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown of the cluster's folder to `postgres` failed");
        }
        let mut pg = Postgres { dir, bin, port: free_port() };
        pg.run(
            "initdb",
            &["-D", &pg.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"],
        );
        // The free port is free when picked, not necessarily when the server binds it (tests run side by
        // side): a start that fails is tried again on another port, and the third failure is the answer.
        for _ in 0..2 {
            if pg.try_ctl_start().is_ok() {
                return Some(pg);
            }
            pg.port = free_port();
        }
        pg.ctl_start();
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs a PostgreSQL program, as `postgres` when we are root; panics with its output when it fails.
    fn run(&self, program: &str, args: &[&str]) {
        if let Err(e) = self.try_run(program, args) {
            panic!("{e}");
        }
    }

    /// Runs a PostgreSQL program, as `postgres` when we are root; its output when it fails.
    fn try_run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = command.args(args).stdin(Stdio::null()).output().unwrap();
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    fn ctl_start(&self) {
        if let Err(e) = self.try_ctl_start() {
            panic!("{e}");
        }
    }

    fn try_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.try_run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "-t", "60", "start"])
            .map_err(|e| format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()))
    }

    /// The cluster's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL of database `db` (created by [`create_database`](Self::create_database), or `postgres`).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let psql = self.bin.join("psql");
        let psql = if psql.is_file() { psql } else { PathBuf::from("psql") };
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", &format!("CREATE DATABASE \"{name}\"")])
            .output()
            .unwrap();
        assert!(out.status.success(), "CREATE DATABASE failed: {}", String::from_utf8_lossy(&out.stderr));
        self.url(name)
    }

    /// Stops the server at once (as a crash would), keeping its files.
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        self.ctl_start();
    }

    /// The server's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if is_root() {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(exe).args(args).output()
        } else {
            Command::new(exe).args(args).output()
        };
    }
}
