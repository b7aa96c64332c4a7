//! A real Prometheus for tests (Debian's `prometheus`, with `promtool`): started on a free loopback port,
//! scraping a target or serving a history loaded with `promtool tsdb create-blocks-from openmetrics`, and
//! stopped when dropped. Without the binaries a test is skipped, unless `SLUICE_REQUIRE_EXTERNAL` is set (CI),
//! where it fails. Shared by the tests of several crates (`#[path]`).

#![allow(dead_code)]

#[path = "../../../../tests/support/external.rs"]
mod external;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Prometheus process, stopped when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The path of `name` (`prometheus`, `promtool`), or `None` (the test skips) when it is not installed
/// and CI does not require it.
pub fn binary(name: &str) -> Option<String> {
    let found = [format!("/usr/bin/{name}"), format!("/usr/local/bin/{name}")]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if found.is_none() {
        external::missing(name, "Debian: apt-get install prometheus");
    }
    found
}

/// A loopback endpoint that accepts connections and never answers: the fault a real Prometheus will not
/// produce on demand.
pub async fn hanging() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

/// Prometheus scraping `target` (`host:port`) every second.
pub fn scraping(target: &str) -> Option<Server> {
    let config = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
         scrape_configs:\n  - job_name: app\n    static_configs: [ {{ targets: ['{target}'] }} ]\n"
    );
    start(&config, None)
}

/// Prometheus with nothing to scrape: for queries that need no data (`vector(1)`).
pub fn idle() -> Option<Server> {
    start("global: { scrape_interval: 1m }\n", None)
}

/// Prometheus serving the history in `openmetrics` (the OpenMetrics text format, ending in `# EOF`),
/// loaded as blocks with promtool. Samples must lie within the retention (the last 15 days).
pub fn with_history(openmetrics: &str) -> Option<Server> {
    let promtool = binary("promtool")?;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.om");
    std::fs::write(&file, openmetrics).unwrap();
    let tsdb = dir.path().join("tsdb");
    let out = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(&tsdb)
        .output()
        .unwrap();
    assert!(out.status.success(), "promtool refused the history: {}", String::from_utf8_lossy(&out.stderr));
    start("global: { scrape_interval: 1m }\n", Some(dir))
}

fn start(config: &str, data: Option<tempfile::TempDir>) -> Option<Server> {
    let binary = binary("prometheus")?;
    let data = data.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let config_file = data.path().join("prometheus.yml");
    std::fs::write(&config_file, config).unwrap();
    // The free port is free when picked, not necessarily when Prometheus binds it (tests run side by side):
    // a Prometheus that exits before it is ready lost the port, and another one is tried.
    for _ in 0..3 {
        let port = free_port();
        let mut child = Command::new(&binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", data.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let began = Instant::now();
        let mut exited = false;
        while !exited && !ready(port) {
            assert!(began.elapsed() < Duration::from_secs(60), "Prometheus did not become ready in 60 s");
            std::thread::sleep(Duration::from_millis(100));
            exited = child.try_wait().unwrap().is_some();
        }
        if !exited && child.try_wait().unwrap().is_none() {
            return Some(Server { child, url: format!("http://127.0.0.1:{port}"), _data: data });
        }
    }
    panic!("Prometheus exited before it was ready, three times (is its port taken?)");
}

/// Whether `/-/ready` answers 200.
fn ready(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// One series of a history: its name with labels (`http_requests_total{code="200"}`) and its value at a
/// time in seconds.
pub struct Series<'a> {
    /// `name{label="value",…}`.
    pub name: String,
    /// The value at a Unix time in seconds.
    pub value: Box<dyn Fn(u64) -> f64 + 'a>,
}

/// OpenMetrics text of `families` (name, type, series) sampled every `step` seconds over `[from, to]`.
pub fn openmetrics(families: &[(&str, &str, Vec<Series<'_>>)], from: u64, to: u64, step: u64) -> String {
    let mut out = String::new();
    for (family, kind, series) in families {
        out.push_str(&format!("# TYPE {family} {kind}\n"));
        for s in series {
            let mut t = from;
            while t <= to {
                out.push_str(&format!("{} {} {t}\n", s.name, (s.value)(t)));
                t += step;
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Now, in Unix seconds, rounded down to the hour: histories start at a round time.
pub fn this_hour() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    now - now % 3600
}
