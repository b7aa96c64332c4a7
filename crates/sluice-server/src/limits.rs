//! What one caller may take from the server: connections, change streams, failed logins and admin
//! changes, each limit configurable ([`Limits`]) and counted for `/metrics` ([`LimitCounters`]). Limits
//! count per replica: N replicas behind a load balancer allow N times as much.
//!
//! Who a caller is: its token for authenticated limits, its address for anonymous ones — the TCP peer, or,
//! when the peer is a proxy named by `--trusted-proxy`, the last address in `X-Forwarded-For` that is not
//! itself a trusted proxy.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The server's limits. Every one is a flag of `sluice serve`; the defaults suit one server behind a
/// load balancer.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The longest a connection may take to send a request's headers, counted from when the server waits
    /// for them: so also the longest a kept-alive connection may sit idle between requests.
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving either way for this long is closed (a stalled upload, a client
    /// that stopped reading). Change streams send a keep-alive every 15 s, well within it.
    pub idle_timeout: Duration,
    /// Open connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Open change streams (`/api/v1/stream`, and `/ofrep/v1/events` with a token) per token.
    pub streams_per_token: usize,
    /// Open anonymous OFREP event streams per client address.
    pub anonymous_streams_per_address: usize,
    /// Failed dashboard logins per client address per minute; past it, 429 with `Retry-After`.
    pub failed_logins_per_minute: u32,
    /// Changes (writes to the admin API) per token per minute; past it, 429 with `Retry-After`.
    pub changes_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// How long a shutdown waits for requests under way before closing their connections.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 4096,
            streams_per_token: 32,
            anonymous_streams_per_address: 32,
            failed_logins_per_minute: 10,
            changes_per_minute: 600,
            trusted_proxies: Vec::new(),
            drain: Duration::from_secs(10),
        }
    }
}

/// How often each limit was reached, and what is open now: `/metrics` reads them.
#[derive(Debug, Default)]
pub struct LimitCounters {
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections answered 503 because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Connections closed because their headers took too long, or nothing moved for the idle timeout.
    pub connections_timed_out: AtomicU64,
    /// Change streams open now.
    pub streams_open: AtomicU64,
    /// Change streams refused (429).
    pub streams_refused: AtomicU64,
    /// Dashboard logins refused (429) after too many failures.
    pub logins_limited: AtomicU64,
    /// Admin changes refused (429) over a token's rate.
    pub changes_limited: AtomicU64,
}

impl LimitCounters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The client's address: the TCP peer, or what a trusted proxy says it forwarded for.
///
/// ```
/// use std::net::SocketAddr;
/// use axum::http::HeaderMap;
/// let proxy: ipnet::IpNet = "10.0.0.0/8".parse().unwrap();
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "203.0.113.9, 10.0.0.7".parse().unwrap());
/// let peer: SocketAddr = "10.0.0.2:5000".parse().unwrap();
/// assert_eq!(sluice_server::limits::client_address(peer, &headers, &[proxy]).to_string(), "203.0.113.9");
/// // An untrusted peer's header is ignored: anyone can write it.
/// let stranger: SocketAddr = "198.51.100.4:5000".parse().unwrap();
/// assert_eq!(sluice_server::limits::client_address(stranger, &headers, &[proxy]).to_string(), "198.51.100.4");
/// ```
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.ip();
    if !is_trusted(&peer) {
        return peer;
    }
    // The rightmost address a trusted proxy did not add: the ones left of it could be the client's own.
    let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
    let mut last = peer;
    for hop in forwarded.iter().flat_map(|v| v.split(',')).rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => last = ip,
            Ok(ip) => return ip,
            Err(_) => return last,
        }
    }
    last
}

/// Events per key in a sliding minute (a fixed window per key, restarted by the first event after it
/// ends): cheap and good enough for "too many failed logins" and "too many changes".
#[derive(Debug, Default)]
pub(crate) struct PerMinute {
    windows: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
    /// Whether this window's refusals were audited already: one audit event per burst.
    reported: bool,
}

/// A refusal: how long to wait, and whether it is the first of its burst (to audit once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverLimit {
    pub retry_after: u64,
    pub first_of_burst: bool,
}

impl PerMinute {
    /// Counts one event for `key`: `Err` when `limit` were counted in its current minute already.
    pub(crate) fn hit(&self, key: &str, limit: u32) -> Result<(), OverLimit> {
        self.check(key, limit, true)
    }

    /// Whether `key` is over `limit` now, without counting.
    pub(crate) fn over(&self, key: &str, limit: u32) -> Result<(), OverLimit> {
        self.check(key, limit, false)
    }

    fn check(&self, key: &str, limit: u32, count: bool) -> Result<(), OverLimit> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > 100_000 {
            // Old windows are dropped in bulk: a flood of new keys cannot grow the map without bound.
            windows.retain(|_, w| now.duration_since(w.started) < Duration::from_secs(60));
        }
        let w = windows.entry(key.to_string()).or_insert(Window { started: now, count: 0, reported: false });
        if now.duration_since(w.started) >= Duration::from_secs(60) {
            *w = Window { started: now, count: 0, reported: false };
        }
        if w.count >= limit {
            let retry_after = 60u64.saturating_sub(now.duration_since(w.started).as_secs()).max(1);
            let first_of_burst = !w.reported;
            w.reported = true;
            return Err(OverLimit { retry_after, first_of_burst });
        }
        if count {
            w.count += 1;
        }
        Ok(())
    }

    /// Forgets `key` (a successful login clears its failures).
    pub(crate) fn forget(&self, key: &str) {
        self.windows.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// Open change streams per caller: a [`StreamSlot`] holds one until the stream ends.
#[derive(Debug, Default)]
pub(crate) struct OpenStreams {
    open: Mutex<HashMap<String, usize>>,
}

impl OpenStreams {
    /// A slot for one more stream of `key`, or `None` when it has `limit` open.
    pub(crate) fn open(
        self: &Arc<Self>,
        key: String,
        limit: usize,
        counters: &'static LimitCounters,
    ) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= limit {
            LimitCounters::bump(&counters.streams_refused);
            return None;
        }
        *n += 1;
        counters.streams_open.fetch_add(1, Ordering::Relaxed);
        Some(StreamSlot { streams: self.clone(), key, counters })
    }
}

/// One open stream, counted until dropped (when the stream ends or its client goes away).
#[derive(Debug)]
pub(crate) struct StreamSlot {
    streams: Arc<OpenStreams>,
    key: String,
    counters: &'static LimitCounters,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
        self.counters.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_counts_to_its_limit_and_reports_a_burst_once() {
        let m = PerMinute::default();
        for _ in 0..3 {
            m.hit("k", 3).unwrap();
        }
        let first = m.hit("k", 3).unwrap_err();
        assert!(first.first_of_burst && (1..=60).contains(&first.retry_after));
        assert!(!m.hit("k", 3).unwrap_err().first_of_burst);
        m.hit("other", 3).unwrap();
        m.forget("k");
        m.hit("k", 3).unwrap();
    }

    #[test]
    fn a_forwarded_chain_is_believed_only_through_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "198.51.100.1, 203.0.113.5".parse().unwrap());
        h.append("x-forwarded-for", "10.1.1.1".parse().unwrap());
        let peer: SocketAddr = "10.0.0.2:1".parse().unwrap();
        // The client could have written 198.51.100.1 itself; 203.0.113.5 is what the first trusted proxy saw.
        assert_eq!(client_address(peer, &h, &trusted).to_string(), "203.0.113.5");
        let garbage: HeaderMap =
            [("x-forwarded-for".parse().unwrap(), "nonsense".parse().unwrap())].into_iter().collect();
        assert_eq!(client_address(peer, &garbage, &trusted).to_string(), "10.0.0.2");
        assert_eq!(client_address(peer, &HeaderMap::new(), &[]).to_string(), "10.0.0.2");
    }
}
