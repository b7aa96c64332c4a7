//! A Sluice server on a free loopback port over a fresh SQLite store, with a virtual clock and an
//! `admin` and an `sdk` token: what the HTTP tests start from.
#![allow(dead_code)]

use std::sync::Arc;

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use sluice_engine::{Clock, VirtualClock};
use sluice_server::{AppState, Options, Seams};
use sluice_store::{Role, SqliteStore, Store};

/// A running server and what a test reaches it with.
pub struct Server {
    pub url: String,
    pub admin: String,
    pub sdk: String,
    pub http: Client,
    pub state: Arc<AppState>,
    pub clock: Arc<VirtualClock>,
    pub store: Arc<SqliteStore>,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// A server whose clock reads `at_ms`, its plug-ins configured by `plugins`.
    pub async fn start(at_ms: u64, plugins: sluice_sources::Config) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("sluice.db")).await.unwrap());
        let (_, admin) = store.create_token("root", "admin", Role::Admin).await.unwrap();
        let (_, sdk) = store.create_token("app", "sdk", Role::Sdk).await.unwrap();
        let clock = Arc::new(VirtualClock::at(at_ms));
        let plugins = Arc::new(sluice_sources::Registry::new(&plugins));
        let seams = Seams { clock: clock.clone() as Arc<dyn Clock>, plugins, faults: None, fence: None };
        let state = AppState::load_with(store.clone() as Arc<dyn Store>, Options::default(), seams).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = sluice_server::router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { url, admin, sdk, http: Client::new(), state, clock, store, dir }
    }

    /// A request with the admin token: the status and the JSON body (`null` when it is not JSON).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(&self.admin, method, path, body).await
    }

    /// A request with `token`.
    pub async fn call_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }
}
