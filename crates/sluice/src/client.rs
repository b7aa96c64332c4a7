//! The CLI's HTTP client: every command talks to a running server, and every failure says what to do next.

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where the server is and who we are.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// `?env=` on every request: the environment the command acts in.
    env: Option<String>,
}

/// A server-sent event stream (`/api/v1/stream`), read event by event.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// Waits for the next `rollout` event about `rollout_id`; `None` when the stream ended.
    pub async fn next_event_of(&mut self, rollout_id: &str) -> Option<()> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let is_rollout = event.lines().any(|l| l == "event: rollout");
                let data = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect::<String>();
                let about = serde_json::from_str::<Value>(&data)
                    .ok()
                    .and_then(|v| v["rollout"]["id"].as_str().map(str::to_string));
                if is_rollout && about.as_deref() == Some(rollout_id) {
                    return Some(());
                }
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// A failed command, as the user should read it.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

impl Client {
    pub fn new(base: &str, token: Option<String>, env: Option<String>) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            base: base.trim_end_matches('/').to_string(),
            token,
            env: env.filter(|e| !e.is_empty()),
        }
    }

    /// The environment named with `--env` / `SLUICE_ENV`, if any.
    pub fn env(&self) -> Option<&str> {
        self.env.as_deref()
    }

    /// Sends a request; returns the JSON answer of a 2xx, or the server's error in words.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        self.request(method, path, body, None).await
    }

    /// `PUT` that only creates (`If-None-Match: *`): the server answers 412 when the entity exists.
    pub async fn create(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.request(Method::PUT, path, Some(body), Some(("if-none-match", "*"))).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        header: Option<(&str, &str)>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(env) = &self.env {
            req = req.query(&[("env", env)]);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        let resp = req.send().await.map_err(|e| {
            CliError(format!(
                "cannot reach the Sluice server at {}: {}\n  is `sluice serve` running? Point the CLI at it with --server or SLUICE_SERVER.",
                self.base,
                root_cause(&e)
            ))
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| CliError(format!("reading the answer from {url}: {e}")))?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(json);
        }
        let message = json.get("message").and_then(Value::as_str).unwrap_or("").to_string();
        let field = json.get("field").and_then(Value::as_str).filter(|f| !f.is_empty());
        Err(CliError(match status {
            StatusCode::UNAUTHORIZED => match &self.token {
                None => "the server needs a token: pass --token or set SLUICE_TOKEN (`sluice serve` prints the admin token on first start)".into(),
                Some(_) => "the server refused the token (unknown or revoked): check --token / SLUICE_TOKEN".into(),
            },
            StatusCode::FORBIDDEN => format!("the token's role may not do this: {message}"),
            _ => match field {
                Some(f) => format!("{message} (field `{f}`)"),
                None if message.is_empty() => format!("the server answered {status}: {json}"),
                None => message,
            },
        }))
    }

    /// Opens a server-sent event stream (no overall timeout: it stays open).
    pub async fn stream(&self, path: &str) -> Result<Events, CliError> {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.base));
        if let Some(env) = &self.env {
            request = request.query(&[("env", env)]);
        }
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.map_err(|e| CliError(format!("cannot open {path}: {e}")))?;
        if !response.status().is_success() {
            return Err(CliError(format!("{path} answered {}", response.status())));
        }
        Ok(Events { response, buffer: String::new() })
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None).await
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
