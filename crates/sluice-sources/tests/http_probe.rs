//! The `http` source's golden probes against a server on loopback: every request of a probe runs each tick,
//! a success ratio over them, failures in a row across ticks, timeouts, and a header that is a secret.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::Measurement;
use sluice_sources::{MeasureContext, Plugins, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "probe-s3cret-token-4e1f";

/// `/ok` answers `{"status":"up","n":1}`; `/null` answers `{"status":null}` until `healed`; `/down` 503;
/// `/slow` never answers; `/auth` 200 only with the right bearer token.
async fn service(healed: Arc<AtomicBool>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let healed = healed.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = match path.as_str() {
                    "/ok" => ("200 OK", r#"{"status":"up","n":1}"#.to_string()),
                    "/null" if healed.load(Ordering::SeqCst) => ("200 OK", r#"{"status":"up"}"#.to_string()),
                    "/null" => ("200 OK", r#"{"status":null}"#.to_string()),
                    "/down" => ("503 Service Unavailable", "{}".to_string()),
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    "/auth" if request.contains(&format!("authorization: Bearer {TOKEN}")) => ("200 OK", "{}".into()),
                    "/auth" => ("401 Unauthorized", "{}".into()),
                    _ => ("404 Not Found", "{}".into()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

fn plan(gates: &str) -> sluice_plan::Plan {
    let yaml = format!("name: p\nflag: f\nphases: [ {{ percent: 5 }} ]\ngates:\n{gates}");
    sluice_plan::load("p.yaml", &yaml, None).unwrap_or_else(|e| panic!("{e:?}")).0
}

async fn measure(registry: &Registry, plan: &sluice_plan::Plan) -> Vec<Measurement> {
    let values = BTreeMap::from([("flag".to_string(), "f".to_string())]);
    let cx = MeasureContext::outside_a_rollout(plan, &values, 0);
    let mut out = Vec::new();
    for g in &plan.gates {
        out.push(registry.measure(&g.value, &cx).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_measure_the_share_of_good_answers_and_failures_in_a_row() {
    // A header that is a secret takes the secret as its whole value.
    std::env::set_var("SLUICE_SECRET_PROBE_TOKEN", format!("Bearer {TOKEN}"));
    let healed = Arc::new(AtomicBool::new(false));
    let url = service(healed.clone()).await;
    let registry = Registry::new(&sluice_sources::Config::default());
    let probes = plan(&format!(
        r#"  - name: all-endpoints
    http:
      expect: {{ json_not_null: [/status] }}
      requests:
        - {{ url: "{url}/ok", expect: {{ status: 200, json_equals: {{ /n: 1.0 }}, body_contains: up }} }}
        - {{ url: "{url}/null" }}
        - {{ url: "{url}/down" }}
        - {{ url: "{url}/auth", headers: {{ Authorization: "Bearer {{{{flag}}}}" }}, expect: {{}} }}
      value: success_ratio
    timeout: 1s
    above: 0.9
  - name: null-streak
    http: {{ url: "{url}/null", expect: {{ json_not_null: [/status] }}, value: consecutive_failures }}
    below: 3
  - name: authorized
    http:
      url: "{url}/auth"
      headers: {{ Authorization: {{ secret_env: SLUICE_SECRET_PROBE_TOKEN }} }}
      value: success_ratio
    above: 0.5
  - name: hanging
    http: {{ requests: [ {{ url: "{url}/slow" }}, {{ url: "{url}/ok" }} ], value: success_ratio }}
    timeout: 1s
    above: 0.5
"#
    ));
    let began = Instant::now();
    let m = measure(&registry, &probes).await;
    // /ok passes (1 equals 1.0); /null has a null status; /down is 503; /auth without the token is 401.
    assert_eq!(m[0], Measurement::Value(0.25), "{m:?}");
    assert_eq!(m[1], Measurement::Value(1.0));
    assert_eq!(m[2], Measurement::Value(1.0), "the secret header was sent");
    assert_eq!(m[3], Measurement::Value(0.5), "a request that times out failed; the other did not wait");
    // The values above already say the slow request did not hold the others up; this backstop (wide for a
    // loaded machine) says no request outlived its 1 s timeout by much.
    assert!(began.elapsed() < Duration::from_secs(8), "requests run side by side: {:?}", began.elapsed());
    // Failures in a row count across ticks, and a good answer ends the run.
    assert_eq!(measure(&registry, &probes).await[1], Measurement::Value(2.0));
    assert_eq!(measure(&registry, &probes).await[1], Measurement::Value(3.0));
    healed.store(true, Ordering::SeqCst);
    assert_eq!(measure(&registry, &probes).await[1], Measurement::Value(0.0));
}

#[test]
fn plan_check_refuses_a_malformed_probe() {
    let yaml = "name: p\nflag: f\nphases: [ { percent: 5 } ]\ngates:\n  - name: g\n    http: { url: 'http://x/{{nope}}', method: FETCH, expect: { json_not_null: [status] }, value: success_ratio }\n    above: 0.5\n";
    let problems = sluice_plan::load_with("p.yaml", yaml, None, sluice_sources::described()).unwrap_err();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(text.iter().any(|p| p.contains("unknown template variable `{{nope}}`")), "{text:?}");
    assert!(text.iter().any(|p| p.contains("`FETCH` is not an HTTP method")), "{text:?}");
    assert!(text.iter().any(|p| p.contains("`status` is not a JSON pointer")), "{text:?}");
}
