//! `sluice probe record|verify|test`: a golden suite against a small service on loopback whose answers
//! carry volatile fields (a timestamp, ids) and change on demand.

use std::io::{Read, Write};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct Service {
    calls: AtomicU64,
    price: AtomicU64,
    down: AtomicBool,
}

/// Serves `GET /status` (JSON with a changing `at` and item ids) and `POST /echo` (text).
fn serve(service: Arc<Service>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let service = service.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let call = service.calls.fetch_add(1, Ordering::SeqCst);
                let (kind, body) = if request.starts_with("GET /status") {
                    let status = if service.down.load(Ordering::SeqCst) { "null" } else { "\"up\"" };
                    let price = service.price.load(Ordering::SeqCst);
                    (
                        "application/json",
                        format!(
                            r#"{{"status": {status}, "at": {call}, "items": [{{"id": {}, "sku": "a", "price": {price}}}]}}"#,
                            1000 + call
                        ),
                    )
                } else {
                    let sent = request.split("\r\n\r\n").nth(1).unwrap_or("");
                    ("text/plain", format!("hello\n{sent}\n"))
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            });
        }
    });
    url
}

fn probe(mode: &str, suite: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice")).args(["probe", mode]).arg(suite).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn record_verify_and_test_a_golden_suite() {
    let service = Arc::new(Service::default());
    service.price.store(1, Ordering::SeqCst);
    let url = serve(service.clone());
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("checkout.yaml");
    std::fs::write(
        &suite,
        format!(
            r#"vars: {{ base: "{url}" }}
ignore: [/at, /items/*/id]
requests:
  - name: status
    url: "{{{{base}}}}/status"
    expect: {{ json_not_null: [/status] }}
  - name: echo
    method: POST
    url: "{{{{base}}}}/echo"
    body: "first-meet-kiera"
    expect: {{ body_contains: hello }}
"#
        ),
    )
    .unwrap();

    // Verifying before recording says what to do.
    let out = probe("verify", &suite);
    assert!(!out.status.success());
    assert!(text(&out).contains("sluice probe record"), "{}", text(&out));

    let out = probe("record", &suite);
    assert!(out.status.success(), "{}", text(&out));
    let golden = dir.path().join("checkout.golden/status.json");
    let stored = std::fs::read_to_string(&golden).unwrap();
    assert!(stored.contains("\"<ignored>\"") && stored.contains("\"sku\": \"a\""), "{stored}");
    assert!(dir.path().join("checkout.golden/echo.json").exists());

    // The timestamp and ids changed; nothing else did.
    let out = probe("verify", &suite);
    assert!(out.status.success(), "{}", text(&out));

    // A real change is found, named by its place, with both values.
    service.price.store(2, Ordering::SeqCst);
    let out = probe("verify", &suite);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("FAIL status") && said.contains("/items/0/price: 1 → 2"), "{said}");
    assert!(said.contains("ok   echo") && said.contains("1 of 2 answers differ"), "{said}");

    // Test mode checks expectations only: the new price passes; a null status does not.
    assert!(probe("test", &suite).status.success());
    service.down.store(true, Ordering::SeqCst);
    let out = probe("test", &suite);
    assert!(!out.status.success());
    assert!(text(&out).contains("`/status` is null"), "{}", text(&out));

    // Recording a failing answer is refused, and the goldens stay as they were.
    let out = probe("record", &suite);
    assert!(!out.status.success());
    assert!(text(&out).contains("nothing recorded"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&golden).unwrap(), stored);
}
