//! How long after an admin write returns does an OFREP client hear about it over SSE?
//!
//! Starts the server in process on loopback (real HTTP), subscribes to `/ofrep/v1/events` like the
//! OpenFeature web provider does, then makes N writes one after another and, for each, measures the time
//! from the write's response to the client reading the event of that revision (0 when the event arrived
//! first: the server publishes before it answers).
//!
//! Run: `cargo run --release -p sluice-bench --bin sse_latency -- 1000`

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_store::{Role, SqliteStore, Store};

#[tokio::main]
async fn main() {
    let writes: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let dir = std::env::temp_dir().join(format!("sluice-sse-latency-{}", std::process::id()));
    let store = SqliteStore::open(dir.join("sluice.db")).await.unwrap();
    let (_, admin) = store.create_token("bench", "admin", Role::Admin).await.unwrap();
    let state =
        sluice_server::AppState::load(std::sync::Arc::new(store), sluice_server::Options::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, sluice_server::router(state)).into_future());

    let http = reqwest::Client::new();
    http.put(format!("{url}/api/v1/flags/f"))
        .bearer_auth(&admin)
        .json(&json!({"ramp": {"percent": 0}}))
        .send()
        .await
        .unwrap();

    // The listener: every event's revision and the instant it was read.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
    let mut stream = http.get(format!("{url}/ofrep/v1/events")).send().await.unwrap();
    tokio::spawn(async move {
        let mut buf = String::new();
        while let Ok(Some(chunk)) = stream.chunk().await {
            let at = Instant::now();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                // `id: r{revision}` for a committed change (`r{revision}-x{ms}` for an expiry: not ours).
                let revision = event.lines().find_map(|l| l.strip_prefix("id: r")?.trim().parse::<i64>().ok());
                if let Some(revision) = revision {
                    let _ = tx.send((revision, at));
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut after_return = Vec::with_capacity(writes);
    let mut from_start = Vec::with_capacity(writes);
    for i in 0..writes {
        let started = Instant::now();
        let resp: serde_json::Value = http
            .post(format!("{url}/api/v1/flags/f/ramp"))
            .bearer_auth(&admin)
            .json(&json!({"percent": (i % 100) as u8 + 1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let returned = Instant::now();
        let revision = resp["revision"].as_i64().unwrap();
        let heard = loop {
            let (rev, at) =
                tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("event within 5s").unwrap();
            if rev == revision {
                break at;
            }
        };
        after_return.push(heard.saturating_duration_since(returned));
        from_start.push(heard.duration_since(started));
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p).ceil() as usize).saturating_sub(1).min(v.len() - 1)]
    };
    println!("writes: {writes}");
    println!(
        "write returned -> SSE event read: p50 {:?}  p99 {:?}  max {:?}",
        pct(&mut after_return, 0.50),
        pct(&mut after_return, 0.99),
        pct(&mut after_return, 1.0)
    );
    println!(
        "write sent -> SSE event read:     p50 {:?}  p99 {:?}  max {:?}",
        pct(&mut from_start, 0.50),
        pct(&mut from_start, 0.99),
        pct(&mut from_start, 1.0)
    );
    let _ = std::fs::remove_dir_all(dir);
}
