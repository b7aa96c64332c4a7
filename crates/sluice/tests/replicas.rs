//! Three real `sluice serve` replicas on one real PostgreSQL (a throwaway cluster on a free loopback port):
//! a write on one is served by the others, one replica leads the controller, a rollout command sent to any
//! replica reaches the leader, the leader killed or frozen mid-rollout is replaced and the rollout ends as
//! it would have, with every action run once, and the database restarting under load stops no evaluation.

// `common` and the PostgreSQL cluster both bring the one rule for missing components (external.rs).
#![allow(clippy::duplicate_mod)]

mod common;

#[path = "../../../tests/support/postgres.rs"]
mod pg_cluster;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ADMIN_TOKEN;
use serde_json::{json, Value};

/// Every replica's log lines, named, for a failure's message.
static LOGS: Mutex<String> = Mutex::new(String::new());

/// How long the controller lease lasts in these tests (renewed every third of it).
const LEASE: Duration = Duration::from_secs(3);

struct Replica {
    name: String,
    child: Child,
    url: String,
    /// What it logged.
    log: Arc<Mutex<String>>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &str, database: &str) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", database, "--replica-name", name])
        .args(["--lease", &format!("{}ms", LEASE.as_millis())])
        .env("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SLUICE_LOG", "info,sluice::http=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let (kept, who) = (log.clone(), name.to_string());
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            kept.lock().unwrap().push_str(&format!("{line}\n"));
            LOGS.lock().unwrap().push_str(&format!("[{who}] {line}\n"));
        }
    });
    let url = common::listening_url(child.stdout.take().unwrap());
    Replica { name: name.to_string(), child, url, log }
}

impl Replica {
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env("SLUICE_SERVER", &self.url)
            .env("SLUICE_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "sluice {args:?} on {} failed:\n{stdout}\n{stderr}", self.name);
        stdout.into_owned()
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.cli(&["status", "-o", "json"])).unwrap()
    }

    fn signal(&self, signal: &str) {
        assert!(Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap().success());
    }
}

/// A flag's value as an OFREP client of `replica` gets it (`None`: not found).
fn ofrep(http: &reqwest::blocking::Client, replica: &Replica, key: &str, token: &str) -> Option<bool> {
    let answer = http
        .post(format!("{}/ofrep/v1/evaluate/flags/{key}", replica.url))
        .bearer_auth(token)
        .json(&json!({"context": {"targetingKey": "user-1"}}))
        .send()
        .unwrap();
    if answer.status() == 404 {
        return None;
    }
    assert_eq!(answer.status(), 200, "OFREP on {}", replica.name);
    answer.json::<Value>().unwrap()["value"].as_bool()
}

/// Waits until `done`, for at most `within`; returns how long it took.
fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < within, "{what}: not within {within:?}\n{}", LOGS.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    began.elapsed()
}

/// The replica that leads, as each replica in `replicas` sees it, once they all agree.
fn leader<'r>(replicas: &[&'r Replica]) -> &'r Replica {
    let mut name = String::new();
    until("the replicas agree on a leader", LEASE * 4, || {
        let seen: Vec<Value> = replicas.iter().map(|r| r.status()["leader"]["replica"].clone()).collect();
        let leading = replicas.iter().filter(|r| r.status()["leading"] == true).count();
        let agreed = seen.iter().all(|s| s == &seen[0] && s.is_string()) && leading == 1;
        name = seen[0].as_str().unwrap_or("").to_string();
        agreed
    });
    replicas.iter().find(|r| r.name == name).unwrap()
}

/// A webhook receiver on a free loopback port that counts each request by its `Idempotency-Key`.
fn receiver() -> (String, Arc<Mutex<BTreeMap<String, u32>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let keys = Arc::new(Mutex::new(BTreeMap::new()));
    let counted = keys.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut key) = (0usize, String::from("(none)"));
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("idempotency-key:") {
                    key = line["idempotency-key:".len()..].trim().to_string();
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            *counted.lock().unwrap().entry(key).or_insert(0) += 1;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, keys)
}

/// A plan whose every phase calls the webhook (idempotent, by key) and appends a line to `runs`
/// (a command: not idempotent), then holds.
fn plan(dir: &Path, name: &str, flag: &str, hook: &str, hold: &str) -> std::path::PathBuf {
    let runs = dir.join(format!("{name}.runs"));
    let phase = |percent: u8| {
        format!(
            "  - {{ percent: {percent}, hold: {hold}, hooks: {{ before: [ {{ name: call, webhook: {{ url: '{hook}' }} }}, \
             {{ name: note, exec: [sh, -c, 'echo {percent} >> {runs}'] }} ] }} }}\n",
            runs = runs.display()
        )
    };
    let text = format!(
        "name: {name}\nflag: {flag}\nanalysis: {{ interval: 1s }}\nphases:\n{}{}{}",
        phase(10),
        phase(50),
        phase(100)
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn runs(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(format!("{name}.runs"))).unwrap_or_default().lines().map(String::from).collect()
}

fn rollout_state(replica: &Replica, id: &str) -> Value {
    serde_json::from_str(&replica.cli(&["rollout", "status", id, "-o", "json"])).unwrap()
}

#[test]
fn replicas_share_one_database_one_controller_and_survive_their_leader() {
    let Some(pg) = pg_cluster::Postgres::start() else { return };
    let database = pg.create_database("sluice");
    let dir = tempfile::tempdir().unwrap();
    let replicas = [start("r1", &database), start("r2", &database), start("r3", &database)];
    let all: Vec<&Replica> = replicas.iter().collect();
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    // One replica leads; every replica says which.
    let first = leader(&all);
    let status = first.status();
    assert_eq!((status["database"].as_str(), status["caught_up"].as_bool()), (Some("postgres"), Some(true)));

    // A write on one replica is served by the OFREP clients of the others.
    let sdk: Value =
        serde_json::from_str(&replicas[0].cli(&["token", "create", "app", "--role", "sdk", "-o", "json"])).unwrap();
    let sdk = sdk["token"].as_str().unwrap().to_string();
    // The token itself was written on r1: the others learn it from the database.
    until("the sdk token reaches r3", Duration::from_secs(5), || {
        http.post(format!("{}/ofrep/v1/evaluate/flags/none", replicas[2].url))
            .bearer_auth(&sdk)
            .json(&json!({"context": {"targetingKey": "u"}}))
            .send()
            .unwrap()
            .status()
            != 401
    });
    replicas[0].cli(&["flag", "create", "checkout", "--percent", "100"]);
    for r in &replicas[1..] {
        until("the new flag reaches the other replicas", Duration::from_secs(5), || {
            ofrep(&http, r, "checkout", &sdk) == Some(true)
        });
    }

    // Outcomes reported to two replicas that do not lead both count in the leader's gate: 6 canary requests
    // at each, where the gate needs 10.
    replicas[0].cli(&["flag", "create", "merged", "--percent", "0"]);
    let merged = dir.path().join("merged.yaml");
    std::fs::write(
        &merged,
        "name: merged\nflag: merged\nanalysis: { interval: 1s }\nphases: [ { percent: 10 }, { percent: 100 } ]\n\
         gates:\n  - { name: canary-errors, metric: error_rate, below: 0.5, min_samples: 10 }\n",
    )
    .unwrap();
    let started: Value =
        serde_json::from_str(&first.cli(&["rollout", "start", merged.to_str().unwrap(), "-o", "json"])).unwrap();
    let merged_id = started["id"].as_str().unwrap().to_string();
    let followers: Vec<&Replica> = all.iter().copied().filter(|r| r.name != first.name).collect();
    // Windows count whole seconds from the phase's start: report once the gate has judged a second window.
    let gate_notes = || -> Vec<String> {
        let decided: Vec<Value> =
            serde_json::from_str(&first.cli(&["rollout", "decisions", &merged_id, "-o", "json"])).unwrap();
        decided
            .iter()
            .filter(|d| d["check"] == "canary-errors")
            .map(|d| d["note"].as_str().unwrap_or("").to_string())
            .collect()
    };
    until("the gate judges its second window", Duration::from_secs(10), || gate_notes().len() >= 2);
    let report = |replica: &Replica, from: usize| {
        let observations: Vec<Value> = (from..from + 6)
            .map(|i| json!({"flag": "merged", "variant": "on", "reason": "SPLIT", "key": format!("u{i}"), "ok": true, "latency_ms": 10.0}))
            .collect();
        let answer = http
            .post(format!("{}/api/v1/metrics", replica.url))
            .bearer_auth(&sdk)
            .json(&json!({"observations": observations}))
            .send()
            .unwrap();
        assert_eq!(answer.status(), 202, "{}", answer.text().unwrap());
    };
    report(followers[0], 0);
    until("the leader's gate counts the outcomes a follower received", Duration::from_secs(15), || {
        gate_notes().iter().any(|note| note.starts_with("too few samples: 6 "))
    });
    let waiting = rollout_state(first, &merged_id);
    assert_eq!(
        (waiting["phase"].as_u64(), &waiting["status"]["state"]),
        (Some(1), &json!("running")),
        "6 of 10: {waiting:#}"
    );
    report(followers[1], 6);
    until("the gate passes on both replicas' outcomes: the rollout is promoted", Duration::from_secs(20), || {
        rollout_state(first, &merged_id)["phase"] == 2
    });
    first.cli(&["rollout", "abort", &merged_id, "--reason", "done with it"]);

    // A rollout started on a replica that does not lead is run by the leader.
    let (hook, keys) = receiver();
    replicas[0].cli(&["flag", "create", "ramped", "--percent", "0"]);
    let follower = all.iter().find(|r| r.name != first.name).unwrap();
    let path = plan(dir.path(), "survivor", "ramped", &hook, "4s");
    let started: Value =
        serde_json::from_str(&follower.cli(&["rollout", "start", path.to_str().unwrap(), "-o", "json"])).unwrap();
    let id = started["id"].as_str().unwrap().to_string();

    // Mid-rollout (holding its second phase), the leader is killed. (`phase` is 1-based.) The command's
    // line lands in the file before the leader records that it ran: killed in between, the new leader
    // rightly cannot know and pauses as `uncertain`. This test is about a hold, so it waits for the record.
    until("the rollout holds its second phase, whose hooks have run", Duration::from_secs(20), || {
        let state = rollout_state(follower, &id);
        state["phase"] == 2
            && state["pending"].as_array().is_some_and(|p| p.is_empty())
            && runs(dir.path(), "survivor").len() == 2
            && keys.lock().unwrap().len() == 2
    });
    let killed = first.name.clone();
    first.signal("-KILL");
    let survivors: Vec<&Replica> = all.iter().copied().filter(|r| r.name != killed).collect();
    let failover =
        until("another replica takes the lease", LEASE * 3, || survivors.iter().any(|r| r.status()["leading"] == true));
    let second = leader(&survivors);
    assert_ne!(second.name, killed);
    eprintln!("failover after SIGKILL: {failover:?} (lease {LEASE:?})");

    // The rollout ends as it would have: every phase's webhook and command ran once.
    until("the rollout completes under the new leader", Duration::from_secs(40), || {
        rollout_state(second, &id)["status"]["state"] == "completed"
    });
    assert_eq!(runs(dir.path(), "survivor"), ["10", "50", "100"], "each command ran once");
    let keys = keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 3, "one webhook per phase, none lost: {keys:?}");
    let audit = second.cli(&["audit", "list", "--action", "lease.", "-o", "json"]);
    let leads: Vec<Value> = serde_json::from_str(&audit).unwrap();
    let holders: Vec<&str> = leads.iter().rev().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(holders, [format!("replica:{killed}"), format!("replica:{}", second.name)], "{audit}");
    let verified = second.cli(&["audit", "verify"]);
    assert!(verified.contains("intact"), "{verified}");

    // The new leader is frozen past its lease: the third replica takes over; woken, the frozen one stops.
    let (hook2, keys2) = receiver();
    second.cli(&["flag", "create", "frozen", "--percent", "0"]);
    let path = plan(dir.path(), "frozen", "frozen", &hook2, "2s");
    let started: Value =
        serde_json::from_str(&second.cli(&["rollout", "start", path.to_str().unwrap(), "-o", "json"])).unwrap();
    let id2 = started["id"].as_str().unwrap().to_string();
    // As above: frozen between the command's line and its record, the next leader would rightly pause.
    until("the second rollout starts and records its first hooks", Duration::from_secs(10), || {
        runs(dir.path(), "frozen").len() == 1
            && rollout_state(second, &id2)["pending"].as_array().is_some_and(|p| p.is_empty())
    });
    second.signal("-STOP");
    let third = *survivors.iter().find(|r| r.name != second.name).unwrap();
    until("the third replica takes the lease", LEASE * 4, || third.status()["leading"] == true);
    std::thread::sleep(LEASE);
    second.signal("-CONT");
    until("the woken replica knows it no longer leads", LEASE * 2, || second.status()["leading"] == false);
    let woke = second.log.lock().unwrap().clone();
    assert!(
        woke.contains("another replica took the controller lease") || woke.contains("no longer leads the controller"),
        "the woken replica stepped down, or its write was fenced: {woke}"
    );
    until("the second rollout completes", Duration::from_secs(40), || {
        rollout_state(third, &id2)["status"]["state"] == "completed"
    });
    let keys2 = keys2.lock().unwrap().clone();
    assert_eq!(keys2.len(), 3, "every phase's webhook, by distinct key: {keys2:?}");
    let ran = runs(dir.path(), "frozen");
    assert_eq!(ran, ["10", "50", "100"], "each command ran once (raw runs)");
    let leads: Vec<Value> =
        serde_json::from_str(&third.cli(&["audit", "list", "--action", "lease.", "-o", "json"])).unwrap();
    let tokens: Vec<i64> = leads.iter().rev().map(|e| e["after"]["token"].as_i64().unwrap()).collect();
    assert_eq!(tokens, [1, 2, 3], "who led when: {leads:#?}");
    assert_eq!(leads[0]["actor"], format!("replica:{}", third.name));

    // The database restarts under load: evaluations go on from memory, and the replicas catch up after.
    let load_ok = Arc::new(Mutex::new((0u32, 0u32)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaders: Vec<_> = survivors
        .iter()
        .map(|r| {
            let (url, sdk, ok, stop) = (r.url.clone(), sdk.clone(), load_ok.clone(), stop.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
                let began = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && began.elapsed() < Duration::from_secs(60) {
                    let answer = http
                        .post(format!("{url}/ofrep/v1/evaluate/flags/checkout"))
                        .bearer_auth(&sdk)
                        .json(&json!({"context": {"targetingKey": "u"}}))
                        .send();
                    let mut counts = ok.lock().unwrap();
                    match answer {
                        Ok(a) if a.status() == 200 => counts.0 += 1,
                        _ => counts.1 += 1,
                    }
                    drop(counts);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    pg.stop();
    until("every replica has seen the database go", Duration::from_secs(20), || {
        survivors.iter().all(|r| r.status()["database_error"].is_string())
    });
    for r in &survivors {
        let ready = http.get(format!("{}/readyz", r.url)).send().unwrap();
        assert_eq!(ready.status(), 200, "a replica stays in the load balancer while nobody can write");
    }
    pg.restart();
    until("the replicas catch up with the restarted database", Duration::from_secs(20), || {
        survivors.iter().all(|r| r.status()["caught_up"] == true && r.status()["database_error"].is_null())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loaders {
        l.join().unwrap();
    }
    let (served, failed) = *load_ok.lock().unwrap();
    assert!(served > 100 && failed == 0, "evaluations during the restart: {served} served, {failed} failed");
    survivors[0].cli(&["flag", "set", "checkout", "--percent", "0"]);
    until("a write after the restart reaches the other replica", Duration::from_secs(5), || {
        ofrep(&http, survivors[1], "checkout", &sdk) == Some(false)
    });

    // The kill switch pulled on a follower pauses the leader's rollout at once: not at its next tick, an
    // hour away.
    let leading = leader(&survivors);
    let follower = *survivors.iter().find(|r| r.name != leading.name).unwrap();
    leading.cli(&["flag", "create", "killed", "--percent", "0"]);
    let path = dir.path().join("killed.yaml");
    std::fs::write(
        &path,
        "name: killed\nflag: killed\nanalysis: { interval: 1h }\nphases: [ { percent: 10, hold: 1h }, { percent: 100 } ]\n",
    )
    .unwrap();
    let started: Value =
        serde_json::from_str(&leading.cli(&["rollout", "start", path.to_str().unwrap(), "-o", "json"])).unwrap();
    let killed_id = started["id"].as_str().unwrap().to_string();
    until("the flag reaches the follower", Duration::from_secs(5), || ofrep(&http, follower, "killed", &sdk).is_some());
    follower.cli(&["flag", "disable", "killed", "--reason", "errors in checkout"]);
    until("the leader pauses the rollout of a flag disabled on a follower", Duration::from_secs(5), || {
        rollout_state(leading, &killed_id)["status"]["state"] == "paused"
    });
    let paused = rollout_state(leading, &killed_id);
    assert!(paused["status"]["reason"].as_str().unwrap_or("").contains("kill switch"), "{paused:#}");

    // Environments: one made and written on one replica is served by the others to its own clients,
    // while the production clients' answers stay as they were.
    follower.cli(&["env", "create", "staging"]);
    let staging: Value = serde_json::from_str(&follower.cli(&[
        "token",
        "create",
        "app-staging",
        "--role",
        "sdk",
        "--env",
        "staging",
        "-o",
        "json",
    ]))
    .unwrap();
    let staging = staging["token"].as_str().unwrap().to_string();
    follower.cli(&["flag", "enable", "checkout", "--env", "staging"]);
    follower.cli(&["flag", "set", "checkout", "--percent", "100", "--env", "staging"]);
    until("a staging write reaches the other replica's staging clients", Duration::from_secs(5), || {
        ofrep(&http, leading, "checkout", &staging) == Some(true)
    });
    assert_eq!(ofrep(&http, leading, "checkout", &sdk), Some(false), "production is as it was");
    // Renamed on one replica: the others learn the token's new environment and keep answering it.
    follower.cli(&["env", "rename", "staging", "preprod"]);
    until("a rename reaches the other replica's token table", Duration::from_secs(5), || {
        leading.cli(&["env", "list"]).contains("preprod") && ofrep(&http, leading, "checkout", &staging) == Some(true)
    });
    drop(replicas);
    drop(pg);
}

/// `sluice store copy` moves a SQLite installation to PostgreSQL: a replica on the copy serves the same
/// flags to the same tokens and verifies the same audit chain; a second copy into it is refused.
#[test]
fn store_copy_moves_a_sqlite_installation_to_postgres() {
    let Some(pg) = pg_cluster::Postgres::start() else { return };
    let database = pg.create_database("moved");
    let s = common::serve();
    s.cli(&["flag", "create", "moved_flag", "--percent", "100"]);
    s.cli(&["segment", "set", "internal_qa", "--constraint", "email STR_ENDS_WITH @example.com"]);
    let sdk = s.sdk_token("app");
    // A second environment, its own state and its own token, come along too.
    s.cli(&["env", "create", "staging"]);
    let staging: Value = serde_json::from_str(&s.cli(&[
        "token",
        "create",
        "app-staging",
        "--role",
        "sdk",
        "--env",
        "staging",
        "-o",
        "json",
    ]))
    .unwrap();
    let staging = staging["token"].as_str().unwrap().to_string();
    let head = s.cli(&["audit", "head"]).trim().to_string();
    let file = format!("sqlite:{}", s.dir.path().join("data/sluice.db").display());
    let sluice = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().unwrap();

    let copied = sluice(&["store", "copy", "--from", &file, "--to", &database]);
    let said = String::from_utf8_lossy(&copied.stdout).to_string() + &String::from_utf8_lossy(&copied.stderr);
    assert!(copied.status.success() && said.contains(&head) && said.contains("2 flags"), "{said}");

    let replica = start("moved-1", &database);
    let http = reqwest::blocking::Client::new();
    assert_eq!(ofrep(&http, &replica, "moved_flag", &sdk), Some(true), "the flag and the sdk token came along");
    assert_eq!(ofrep(&http, &replica, "moved_flag", &staging), Some(false), "staging's state came along");
    // The chain goes on from the copied head (the replica has since audited taking the lease).
    assert!(replica.cli(&["audit", "verify", "--head", &head]).contains("intact"));
    assert!(replica.cli(&["audit", "list", "--action", "lease.", "-o", "json"]).contains("replica:moved-1"));

    let again = sluice(&["store", "copy", "--from", &file, "--to", &database]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && said.contains("not empty"), "{said}");
    let missing = sluice(&["store", "copy", "--from", "sqlite:/nonexistent/sluice.db", "--to", &database]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such SQLite file"));

    // A second process given the same replica name (a restart that overlapped the old process) takes the
    // lease with a new token, and the first stops leading: never two controllers under one token.
    let twin = start("moved-1", &database);
    until("the newer process of the name leads", LEASE * 3, || twin.status()["leading"] == true);
    until("the older one stops", LEASE * 2, || replica.status()["leading"] == false);
    let began = Instant::now();
    while began.elapsed() < LEASE * 2 {
        let (old, new) = (replica.status(), twin.status());
        assert!(old["leading"] == false && new["leading"] == true, "one leads at a time: {old:#} {new:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
