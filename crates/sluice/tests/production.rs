//! The real binary run as a production server is: stopped by SIGTERM with streams and requests open,
//! started twice on one data dir, restarted with a new admin token, its tokens rotated, its session
//! cookie attacked, its limits reached, fed bytes that are not HTTP and logging as JSON. Each test here
//! reproduces one of the problems an operator found (issue 23) and fails on the code before its fix.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The binary under test: this build's, or `SLUICE_BIN` (an earlier build, to see these tests fail on it).
fn bin() -> String {
    std::env::var("SLUICE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice").to_string())
}

const ADMIN: &str = "production-admin-token-0123456789abcdef0123";

/// The lines a process wrote to one of its pipes so far.
type Lines = Arc<Mutex<Vec<String>>>;

/// A `sluice serve` process and every line it wrote, stdout and stderr apart.
struct Proc {
    child: Child,
    url: String,
    addr: SocketAddr,
    stdout: Lines,
    stderr: Lines,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects a pipe's lines; sends the address the server listens on when a line gives it (text or JSON).
fn collect(pipe: impl Read + Send + 'static, into: Lines, found: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let url = line
                .strip_prefix("sluice listening on ")
                .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
                .or_else(|| {
                    let v: Value = serde_json::from_str(&line).ok()?;
                    v["fields"]["url"].as_str().map(|u| u.trim_end_matches('/').to_string())
                });
            if let Some(url) = url {
                let _ = found.send(url);
            }
            into.lock().unwrap().push(line);
        }
    });
}

/// Starts `sluice serve` on a free loopback port over `data`, with `args` and `env` on top.
fn spawn(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (Child, Lines, Lines, mpsc::Receiver<String>) {
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(args)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .env_remove("SLUICE_LOG_FORMAT")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let (stdout, stderr) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    collect(child.stdout.take().unwrap(), stdout.clone(), tx.clone());
    collect(child.stderr.take().unwrap(), stderr.clone(), tx);
    (child, stdout, stderr, rx)
}

/// [`spawn`], waiting until it listens.
fn serve(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let (child, stdout, stderr, rx) = spawn(data, args, env);
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the server did not say where it listens:\n{}", stderr.lock().unwrap().join("\n")));
    let addr = url.trim_start_matches("http://").parse().unwrap();
    Proc { child, url, addr, stdout, stderr }
}

/// [`serve`] with the admin token [`ADMIN`].
fn serve_admin(data: &Path, args: &[&str]) -> Proc {
    serve(data, args, &[("SLUICE_ADMIN_TOKEN", ADMIN)])
}

impl Proc {
    fn signal(&self, signal: &str) {
        assert!(Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap().success());
    }

    /// Waits for the process to exit, at most `within`.
    fn exit_within(&mut self, within: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < within, "still running after {within:?}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn call(&self, token: Option<&str>, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = http().request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(Some(ADMIN), method.clone(), path, body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
        v
    }

    /// A new token with `role`.
    fn token(&self, name: &str, role: &str) -> String {
        let v = self.admin(reqwest::Method::POST, "/api/v1/tokens", Some(json!({"name": name, "role": role})));
        v["token"].as_str().unwrap().to_string()
    }

    fn metrics(&self) -> String {
        http().get(format!("{}/metrics", self.url)).bearer_auth(ADMIN).send().unwrap().text().unwrap()
    }

    fn audit(&self, action: &str) -> Vec<Value> {
        let v = self.admin(reqwest::Method::GET, &format!("/api/v1/audit?action={action}&limit=1000"), None);
        v["data"].as_array().unwrap().clone()
    }

    /// Runs the CLI against this server as `token`.
    fn cli(&self, token: &str, args: &[&str]) -> std::process::Output {
        Command::new(bin()).args(args).env("SLUICE_SERVER", &self.url).env("SLUICE_TOKEN", token).output().unwrap()
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

/// The value of a sample line of `/metrics` (`name{labels} value`).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{metrics}"))
}

/// Bytes to a fresh connection, and everything that comes back until it closes (at most 10 s).
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before the whole request is written (a header too large).
    let _ = c.write_all(request);
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code and JSON body of a raw answer, which must be a JSON error.
fn json_error(answer: &str) -> (u16, Value) {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{answer}");
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {answer}"));
    assert!(body["error"].is_string() && body["message"].is_string(), "{body}");
    (status, body)
}

fn flag(p: &Proc, key: &str) {
    let path = format!("/api/v1/flags/{}", urlencode(key));
    p.admin(reqwest::Method::PUT, &path, Some(json!({"ramp": {"percent": 50}})));
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Opens a change stream and reports when it ends (the server closed it) on the channel.
fn stream(addr: SocketAddr, path: &str, token: &str, ended: mpsc::Sender<(String, Instant)>) {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"200", "{path}: {}", String::from_utf8_lossy(&head));
    let path = path.to_string();
    std::thread::spawn(move || {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut sink = [0u8; 4096];
        while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
        let _ = ended.send((path, Instant::now()));
    });
}

/// The exit status of `child` if it ends within `within`; otherwise it is killed and `None`.
fn ends_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "no {what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Item 1: SIGTERM (what systemd, Docker and Kubernetes send) ends the change streams at once, lets a
/// request under way finish, saves the built-in metrics, lets the controller lease go and exits 0.
#[test]
fn sigterm_ends_streams_finishes_requests_saves_metrics_lets_the_lease_go_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--lease", "60s", "--replica-name", "only"];
    let mut p = serve_admin(&data, &args);
    flag(&p, "checkout");
    let sdk = p.token("app", "sdk");
    until("the lease", Duration::from_secs(10), || {
        p.admin(reqwest::Method::GET, "/api/v1/status", None)["data"]["leading"] == true
    });
    let observations: Vec<Value> = (0..7)
        .map(|i| json!({"flag": "checkout", "variant": "on", "reason": "SPLIT", "key": format!("u{i}"), "ok": true}))
        .collect();
    let (status, v) =
        p.call(Some(&sdk), reqwest::Method::POST, "/api/v1/metrics", Some(json!({"observations": observations})));
    assert_eq!(status, 202, "{v}");

    let (ended_tx, ended) = mpsc::channel();
    stream(p.addr, "/api/v1/stream", ADMIN, ended_tx.clone());
    stream(p.addr, "/ofrep/v1/events", &sdk, ended_tx);
    // A request half sent when the signal comes.
    let body = br#"{"context": {"targetingKey": "user-1"}}"#;
    let mut in_flight = TcpStream::connect(p.addr).unwrap();
    write!(
        in_flight,
        "POST /ofrep/v1/evaluate/flags/checkout HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer {sdk}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    in_flight.write_all(&body[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let signalled = Instant::now();
    p.signal("-TERM");
    for _ in 0..2 {
        let (path, at) = ended.recv_timeout(Duration::from_secs(5)).expect("a change stream left open after SIGTERM");
        assert!(
            at.duration_since(signalled) < Duration::from_secs(3),
            "{path} ended {:?} after SIGTERM",
            at - signalled
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(TcpStream::connect(p.addr).is_err(), "still accepting connections after SIGTERM");
    in_flight.write_all(&body[10..]).unwrap();
    in_flight.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = in_flight.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "the request under way was not finished: {answer:?}");
    assert!(answer.contains("\"key\":\"checkout\""), "{answer}");
    let status = p.exit_within(Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}:\n{}", p.stderr());
    assert!(signalled.elapsed() < Duration::from_secs(10));
    let said = p.stderr();
    assert!(said.contains("SIGTERM") && said.contains("let the controller lease go"), "{said}");

    // Restarted: the lease was let go (not waited out: 60 s) and the outcomes were saved.
    let restarted = Instant::now();
    let p = serve_admin(&data, &args);
    until("the lease again", Duration::from_secs(10), || {
        p.admin(reqwest::Method::GET, "/api/v1/status", None)["data"]["leading"] == true
    });
    assert!(restarted.elapsed() < Duration::from_secs(15));
    assert_eq!(sample(&p.metrics(), "sluice_builtin_observations_total{env=\"production\",flag=\"checkout\"}"), 7.0);
}

/// Item 1, SIGINT too (Ctrl-C): the same stop.
#[test]
fn sigint_stops_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = serve_admin(&dir.path().join("data"), &[]);
    p.signal("-INT");
    let status = p.exit_within(Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}:\n{}", p.stderr());
    assert!(p.stderr().contains("SIGINT"), "{}", p.stderr());
}

/// Item 2: a second server on the same SQLite store refuses to start, naming the first and PostgreSQL.
#[test]
fn a_second_server_on_the_same_data_dir_refuses_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = serve_admin(&data, &[]);
    let (mut second, _, stderr, _) = spawn(&data, &[], &[("SLUICE_ADMIN_TOKEN", ADMIN)]);
    let status = ends_within(&mut second, Duration::from_secs(10))
        .expect("a second server started on the same store and ran for 10 s");
    std::thread::sleep(Duration::from_millis(100));
    let said = stderr.lock().unwrap().join("\n");
    assert!(!status.success(), "{said}");
    assert!(said.contains(&format!("pid {}", first.child.id())), "does not name the first process: {said}");
    assert!(said.contains("PostgreSQL"), "does not say what several replicas need: {said}");
    // The first one is untouched.
    first.admin(reqwest::Method::GET, "/api/v1/flags", None);
}

/// Item 3: a new `SLUICE_ADMIN_TOKEN` revokes the bootstrap token it replaces (audited), and the old
/// secret cannot come back by a restart with it.
#[test]
fn a_new_admin_token_revokes_the_one_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut p = serve_admin(&data, &[]);
    p.signal("-TERM");
    assert!(p.exit_within(Duration::from_secs(10)).success());
    drop(p);

    let new = "production-admin-token-rotated-00000000000000";
    let mut p = serve(&data, &[], &[("SLUICE_ADMIN_TOKEN", new)]);
    assert_eq!(
        p.call(Some(ADMIN), reqwest::Method::GET, "/api/v1/flags", None).0,
        401,
        "the replaced admin token still works"
    );
    let (status, v) = p.call(Some(new), reqwest::Method::GET, "/api/v1/audit?action=token.&limit=100", None);
    assert_eq!(status, 200, "{v}");
    let revoked: Vec<&Value> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "sluice-serve" && e["action"] == "token.rotate")
        .filter(|e| e["reason"].as_str().is_some_and(|r| r.contains("revoked")))
        .collect();
    assert_eq!(revoked.len(), 1, "the revocation is audited: {v:#}");
    p.signal("-TERM");
    assert!(p.exit_within(Duration::from_secs(10)).success());
    drop(p);

    let (mut child, _, stderr, _) = spawn(&data, &[], &[("SLUICE_ADMIN_TOKEN", ADMIN)]);
    let status = ends_within(&mut child, Duration::from_secs(10)).expect("started with a revoked admin token");
    std::thread::sleep(Duration::from_millis(100));
    let said = stderr.lock().unwrap().join("\n");
    assert!(!status.success() && said.contains("revoked"), "{status:?}: {said}");
}

/// Item 3: `sluice token rotate` gives a new secret; the old one works for the overlap, then not.
#[test]
fn token_rotate_keeps_the_old_secret_for_the_overlap_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = serve_admin(&dir.path().join("data"), &[]);
    let old = p.token("deployer", "operator");
    let out = p.cli(ADMIN, &["token", "rotate", "deployer", "--overlap", "2s", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rotated: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new = rotated["token"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(rotated["old_secret_valid_until"].is_string(), "{rotated}");
    for t in [old.as_str(), new] {
        assert_eq!(p.call(Some(t), reqwest::Method::GET, "/api/v1/flags", None).0, 200, "during the overlap");
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        p.call(Some(&old), reqwest::Method::GET, "/api/v1/flags", None).0,
        401,
        "the old secret after the overlap"
    );
    assert_eq!(p.call(Some(new), reqwest::Method::GET, "/api/v1/flags", None).0, 200);
    let events = p.audit("token.rotate");
    assert_eq!(events.len(), 1, "{events:#?}");
    // Without an overlap the old secret ends at once.
    let out = p.cli(ADMIN, &["token", "rotate", "deployer", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(p.call(Some(new), reqwest::Method::GET, "/api/v1/flags", None).0, 401);
    // An overlap past 30 days is refused with the range.
    let out = p.cli(ADMIN, &["token", "rotate", "deployer", "--overlap", "31d"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("outside 0..="), "{out:?}");
}

/// Item 4: CSRF follows what authenticated the request. A header that cannot be read is a 401, never a
/// fall back to the session cookie without the CSRF check.
#[test]
fn a_cookie_write_needs_the_csrf_header_whatever_else_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let p = serve_admin(&dir.path().join("data"), &[]);
    let login = http().post(format!("{}/ui/login", p.url)).json(&json!({"token": ADMIN})).send().unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let csrf = login.json::<Value>().unwrap()["csrf"].as_str().unwrap().to_string();
    let put = |extra: &[(&str, &[u8])]| {
        let mut req = http()
            .put(format!("{}/api/v1/flags/from-cookie", p.url))
            .header("cookie", &cookie)
            .json(&json!({"ramp": {"percent": 5}}));
        for (name, value) in extra {
            req = req.header(*name, reqwest::header::HeaderValue::from_bytes(value).unwrap());
        }
        req.send().unwrap()
    };
    for extra in [
        &[("authorization", &b"\xff"[..])][..],
        &[("x-api-key", &b"\xfe\xff"[..])],
        &[("authorization", &b"Bearer \xff"[..])],
    ] {
        let answer = put(extra);
        assert_eq!(answer.status(), 401, "{extra:?}: {}", answer.text().unwrap());
    }
    assert_eq!(put(&[]).status(), 403, "a cookie write without the CSRF header");
    assert!(put(&[("x-sluice-csrf", csrf.as_bytes())]).status().is_success());
}

/// Item 5: a viewer refused 300 times writes a few audit events, not 300; `/metrics` counts them all.
#[test]
fn refused_commands_are_coalesced_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let p = serve_admin(&dir.path().join("data"), &[]);
    let viewer = p.token("watcher", "viewer");
    let alert = json!({"alerts": [{"status": "firing", "labels": {"alertname": "x", "sluice_flag": "f"}}]});
    for _ in 0..300 {
        let (status, _) = p.call(Some(&viewer), reqwest::Method::POST, "/api/v1/alertmanager", Some(alert.clone()));
        assert_eq!(status, 403);
    }
    let events = p.audit("rollout.refused");
    assert!((1..=2).contains(&events.len()), "{} audit events for 300 refusals", events.len());
    let m = p.metrics();
    let (recorded, coalesced) = (
        sample(&m, "sluice_refusals_total{audit=\"recorded\"}"),
        sample(&m, "sluice_refusals_total{audit=\"coalesced\"}"),
    );
    assert_eq!(recorded + coalesced, 300.0, "{m}");
}

/// Item 6: half-sent headers are closed after the header read timeout; streams, failed logins and
/// changes are limited (429 with `Retry-After`, each burst audited once); a bad `sdk` token is 401, never
/// 429; each limit is counted in `/metrics`.
#[test]
fn limits_hold_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = serve_admin(
        &dir.path().join("data"),
        &[
            "--header-read-timeout",
            "1s",
            "--max-streams-per-token",
            "2",
            "--max-anonymous-streams",
            "2",
            "--failed-logins-per-minute",
            "3",
            "--changes-per-minute",
            "5",
        ],
    );
    // Half-sent headers.
    let opened = Instant::now();
    let slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = TcpStream::connect(p.addr).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c
        })
        .collect();
    for mut c in slow {
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(opened.elapsed() < Duration::from_secs(4), "a half-sent request was kept {:?}", opened.elapsed());
    }

    // Streams per token, and anonymous ones per address.
    let (tx, _ended) = mpsc::channel();
    stream(p.addr, "/api/v1/stream", ADMIN, tx.clone());
    stream(p.addr, "/api/v1/stream", ADMIN, tx.clone());
    let (status, v) = p.call(Some(ADMIN), reqwest::Method::GET, "/api/v1/stream", None);
    assert_eq!((status, v["error"].as_str()), (429, Some("rate_limited")), "{v}");
    let anonymous = |c: &mut TcpStream| {
        c.write_all(b"GET /ofrep/v1/events HTTP/1.1\r\nHost: sluice\r\n\r\n").unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head[9..12]).into_owned()
    };
    let mut held = Vec::new();
    for expected in ["200", "200", "429"] {
        let mut c = TcpStream::connect(p.addr).unwrap();
        assert_eq!(anonymous(&mut c), expected);
        held.push(c);
    }

    // Failed logins: 401, then 429 with Retry-After; one audit event for the burst.
    for i in 0..10 {
        let answer = http().post(format!("{}/ui/login", p.url)).json(&json!({"token": "guess"})).send().unwrap();
        if i < 3 {
            assert_eq!(answer.status(), 401);
        } else {
            assert_eq!(answer.status(), 429);
            assert!(answer.headers().get("retry-after").is_some());
        }
    }
    assert_eq!(p.audit("limit.logins").len(), 1);
    // The right token is held too while the address is over its limit: that is what a limit is.
    let answer = http().post(format!("{}/ui/login", p.url)).json(&json!({"token": ADMIN})).send().unwrap();
    assert_eq!(answer.status(), 429);

    // Changes per token per minute.
    let changer = p.token("changer", "admin");
    for i in 0..9 {
        let path = format!("/api/v1/flags/limited-{i}");
        let (status, v) = p.call(Some(&changer), reqwest::Method::PUT, &path, Some(json!({"ramp": {"percent": 1}})));
        if i < 5 {
            assert_eq!(status, 201, "{v}");
        } else {
            assert_eq!((status, v["error"].as_str()), (429, Some("rate_limited")), "{v}");
        }
    }
    assert_eq!(p.audit("limit.changes").len(), 1);
    // Reads are not changes.
    assert_eq!(p.call(Some(&changer), reqwest::Method::GET, "/api/v1/flags", None).0, 200);

    // A bad sdk token: 401 every time.
    for _ in 0..50 {
        let (status, _) = p.call(
            Some("not-a-token"),
            reqwest::Method::POST,
            "/ofrep/v1/evaluate/flags",
            Some(json!({"context": {}})),
        );
        assert_eq!(status, 401);
    }

    let m = p.metrics();
    for (series, at_least) in [
        ("sluice_limited_total{limit=\"timeouts\"}", 50.0),
        ("sluice_limited_total{limit=\"streams\"}", 2.0),
        ("sluice_limited_total{limit=\"logins\"}", 8.0),
        ("sluice_limited_total{limit=\"changes\"}", 4.0),
        ("sluice_streams_open", 4.0),
    ] {
        assert!(sample(&m, series) >= at_least, "{series} < {at_least}:\n{m}");
    }
}

/// Item 6: connections over `--max-connections` get a JSON 503, and the ones held keep working.
#[test]
fn connections_over_the_maximum_get_a_json_503() {
    let dir = tempfile::tempdir().unwrap();
    let p = serve_admin(&dir.path().join("data"), &["--max-connections", "8"]);
    let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(p.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = json_error(&raw(p.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!((status, body["error"].as_str()), (503, Some("too_many_connections")), "{body}");
    drop(held);
    until("a connection freed", Duration::from_secs(5), || {
        raw(p.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").starts_with("HTTP/1.1 200")
    });
    assert!(sample(&p.metrics(), "sluice_limited_total{limit=\"connections\"}") >= 1.0);
}

/// Item 6: a keep-alive connection that sends nothing for `--idle-timeout` is closed; one that keeps
/// talking is not.
#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let p = serve_admin(&dir.path().join("data"), &["--idle-timeout", "1s"]);
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut busy = TcpStream::connect(p.addr).unwrap();
    let mut idle = TcpStream::connect(p.addr).unwrap();
    idle.write_all(request).unwrap();
    let mut buf = [0u8; 512];
    assert!(idle.read(&mut buf).unwrap() > 0);
    // The busy one asks every 300 ms for 2.4 s, and is answered every time.
    for _ in 0..8 {
        busy.write_all(request).unwrap();
        let n = busy.read(&mut buf).unwrap();
        assert!(n > 0 && buf.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        std::thread::sleep(Duration::from_millis(300));
    }
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(idle.read(&mut buf), Ok(0) | Err(_)), "the idle connection is still open");
    assert!(sample(&p.metrics(), "sluice_limited_total{limit=\"timeouts\"}") >= 1.0);
}

/// Item 7: the HTTP layer's own refusals are the documented JSON error body, and keys follow the rule.
#[test]
fn every_error_is_json_and_keys_follow_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let p = serve_admin(&dir.path().join("data"), &[]);
    let (status, body) = json_error(&raw(p.addr, b"NOT HTTP AT ALL\x01\x02\r\n\r\n"));
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
    let huge_header = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(500_000));
    assert_eq!(json_error(&raw(p.addr, huge_header.as_bytes())).0, 431);
    // Under hyper's own buffer limit but over Sluice's: refused the same way every time, whatever the reads.
    let big_header =
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n", "a".repeat(100_000));
    let (status, body) = json_error(&raw(p.addr, big_header.as_bytes()));
    assert_eq!((status, body["error"].as_str()), (431, Some("headers_too_large")), "{body}");
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let (status, _) = json_error(&raw(p.addr, long_uri.as_bytes()));
    assert!(status == 414 || status == 431, "{status}");
    let big = http()
        .put(format!("{}/api/v1/flags/big", p.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .unwrap();
    assert_eq!(big.status(), 413);
    let body: Value = big.json().unwrap();
    assert!(body["error"].is_string(), "{body}");

    // Keys: `..` refused with the rule; the Unleash spec's own key served.
    let (status, v) = p.call(
        Some(ADMIN),
        reqwest::Method::POST,
        "/api/v1/import/flags",
        Some(json!({"flags": [{"key": "..", "ramp": {"percent": 5}}]})),
    );
    assert_eq!(status, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("path segments"), "{v}");
    let (status, v) =
        p.call(Some(ADMIN), reqwest::Method::PUT, "/api/v1/flags/a%20b", Some(json!({"ramp": {"percent": 5}})));
    assert_eq!((status, v["field"].as_str()), (422, Some("key")), "{v}");
    let spec_key = "Feature.UTF-8.Hellø_Wørld";
    flag(&p, spec_key);
    let sdk = p.token("app", "sdk");
    let path = format!("/ofrep/v1/evaluate/flags/{}", urlencode(spec_key));
    let (status, v) = p.call(Some(&sdk), reqwest::Method::POST, &path, Some(json!({"context": {"targetingKey": "u"}})));
    assert_eq!((status, v["key"].as_str()), (200, Some(spec_key)), "{v}");
    // Numbers out of range name the range.
    let (status, v) =
        p.call(Some(ADMIN), reqwest::Method::POST, "/api/v1/flags/big/ramp", Some(json!({"percent": 300})));
    assert_eq!(status, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("0..100") || v["message"].as_str().unwrap().contains("0 to 100"),
        "{v}"
    );
}

/// Item 7: with `--log-format json`, every line on stdout and stderr is JSON — the admin token shown at
/// first start, the address, the stop, and a usage error.
#[test]
fn json_logs_are_json_on_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = serve(&dir.path().join("data"), &["--log-format", "json"], &[]);
    let _ = http().get(format!("{}/healthz", p.url)).send().unwrap();
    p.signal("-TERM");
    assert!(p.exit_within(Duration::from_secs(10)).success());
    std::thread::sleep(Duration::from_millis(200));
    let (stdout, stderr) = (p.stdout.lock().unwrap().clone(), p.stderr.lock().unwrap().clone());
    assert!(stdout.iter().any(|l| l.contains("admin_token")), "{stdout:?}");
    assert!(stderr.len() >= 3, "{stderr:?}");
    for line in stdout.iter().chain(&stderr) {
        assert!(serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()), "not a JSON line: {line}");
    }

    let usage =
        Command::new(bin()).args(["serve", "--log-format", "json", "--max-connections", "many"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let said = String::from_utf8_lossy(&usage.stderr);
    for line in said.lines().chain(String::from_utf8_lossy(&usage.stdout).lines()) {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "not a JSON line: {line}");
    }
}
