//! Where connections are accepted and served, and where serving stops: [`serve`] takes connections up to
//! [`Limits::max_connections`], gives each one the header-read and idle timeouts, tells the router who the
//! peer is, and, when `shutdown` resolves, stops accepting, ends the change streams, and waits for the
//! requests under way (at most [`Limits::drain`]) before it returns.
//!
//! HTTP/1.1 only: Sluice sits behind a load balancer or is called by SDKs and `curl`; none needs h2c.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

use crate::limits::LimitCounters;
use crate::AppState;

/// Serves `state`'s router on `listener` until `shutdown` resolves, then drains: no new connections, the
/// change streams end (their clients reconnect elsewhere), requests under way finish within
/// [`Limits::drain`](crate::limits::Limits::drain) and their connections close. Returns once every
/// connection is closed or the drain time ran out.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let limits = state.options.limits.clone();
    let counters = state.limit_counters;
    let router = crate::router(state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted: keep serving
                    // the ones open, and try again shortly.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            LimitCounters::bump(&counters.connections_refused);
            tokio::spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let _ = stream.set_nodelay(true);
        counters.connections_open.fetch_add(1, Ordering::Relaxed);
        let io = TokioIo::new(Guarded::new(stream, limits.idle_timeout, counters));
        let service = hyper_util::service::TowerToHyperService::new(WithPeer { router: router.clone(), peer });
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                if e.is_timeout() {
                    LimitCounters::bump(&counters.connections_timed_out);
                }
                tracing::debug!(target: "sluice::http", %peer, error = %e, "connection ended");
            }
            counters.connections_open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    let open = counters.connections_open.load(Ordering::Relaxed);
    tracing::info!(connections = open, drain_secs = limits.drain.as_secs_f64(), "stopped accepting; draining");
    state.shutting_down.send_replace(true);
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        let left = counters.connections_open.load(Ordering::Relaxed);
        tracing::warn!(connections = left, "the drain time ran out: closing the connections still open");
    }
    Ok(())
}

/// More connections than allowed: a JSON 503 and the connection closed, rather than a silent wait in the
/// kernel's queue.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = serde_json::json!({
        "error": "too_many_connections",
        "message": format!("the server has {max} connections open, its limit (sluice serve --max-connections): try again shortly"),
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// The router, told who the peer is ([`ConnectInfo`], read by the limits on anonymous callers).
#[derive(Clone)]
struct WithPeer {
    router: axum::Router,
    peer: SocketAddr,
}

impl Service<axum::http::Request<hyper::body::Incoming>> for WithPeer {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = <axum::Router as Service<axum::http::Request<hyper::body::Incoming>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        <axum::Router as Service<axum::http::Request<hyper::body::Incoming>>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: axum::http::Request<hyper::body::Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.router.call(request)
    }
}

/// A connection with an idle timeout (no bytes either way for that long ends it), whose HTTP layer's own
/// error answers get the JSON body every other error has.
///
/// hyper answers a request it cannot parse (400), whose headers are too large (431) or whose URI is too
/// long (414) by itself, with an empty body, and offers no hook to change that. Every answer Sluice's
/// handlers give has a body (`error::json_errors` makes sure), so a 4xx or 5xx head with
/// `content-length: 0` can only be hyper's: that head is replaced here by the same status with a JSON body.
struct Guarded {
    stream: TcpStream,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    counters: &'static LimitCounters,
    /// A replacement answer being written, and the length of the write it stands for.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl Guarded {
    fn new(stream: TcpStream, idle: Duration, counters: &'static LimitCounters) -> Self {
        Guarded { stream, idle, deadline: Box::pin(tokio::time::sleep(idle)), counters, replacing: None }
    }

    fn moved(&mut self) {
        self.deadline.as_mut().reset(tokio::time::Instant::now() + self.idle);
    }

    /// `Err` once nothing moved for the idle timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            LimitCounters::bump(&self.counters.connections_timed_out);
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no bytes moved for the idle timeout"));
        }
        Ok(())
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.poll_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            if let Some(answer) = json_answer_for(buf) {
                self.replacing = Some((answer, 0, buf.len()));
            }
        }
        if let Some((answer, written, stands_for)) = self.replacing.take() {
            let mut written = written;
            while written < answer.len() {
                match Pin::new(&mut self.stream).poll_write(cx, &answer[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.replacing = Some((answer, written, stands_for));
                        return Poll::Pending;
                    }
                }
            }
            self.moved();
            return Poll::Ready(Ok(stands_for));
        }
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.poll_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The JSON answer that replaces hyper's own bodiless error head in `written`, or `None` when `written`
/// is anything else.
fn json_answer_for(written: &[u8]) -> Option<Vec<u8>> {
    // Every write of every answer passes here: the bytes are looked at before any UTF-8 check, and an
    // answer with a body (whatever its status) is let through after a few comparisons.
    let error_head = written.len() > 12
        && written.starts_with(b"HTTP/1.")
        && matches!(written[9], b'4' | b'5')
        && written.ends_with(b"\r\n\r\n");
    if !error_head {
        return None;
    }
    let head = std::str::from_utf8(written).ok()?;
    let status_line = head.strip_prefix("HTTP/1.1 ").or_else(|| head.strip_prefix("HTTP/1.0 "))?;
    let code: u16 = status_line.get(..3)?.parse().ok()?;
    if !(400..600).contains(&code) || !head.ends_with("\r\n\r\n") {
        return None;
    }
    let lower = head.to_ascii_lowercase();
    if !lower.contains("\r\ncontent-length: 0\r\n") || lower.contains("\r\ncontent-type:") {
        return None;
    }
    let (error, message) = match code {
        400 => ("bad_request", "the request is not valid HTTP/1.1: check its request line and headers"),
        408 => ("timeout", "the request's headers did not arrive in time (sluice serve --header-read-timeout)"),
        413 => ("too_large", "the request is too large"),
        414 => ("uri_too_long", "the request's URI is too long"),
        431 => ("headers_too_large", "the request's headers are too large"),
        501 => ("not_implemented", "the server does not support what the request asks of HTTP"),
        505 => ("http_version", "the server speaks HTTP/1.1 (and 1.0)"),
        _ => ("http", "the request could not be served"),
    };
    let body = serde_json::json!({"error": error, "message": message}).to_string();
    let mut answer = format!("HTTP/1.1 {}\r\n", head.lines().next()?.get(9..)?);
    for line in head.lines().skip(1).filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("content-length:") {
            answer.push_str(line);
            answer.push_str("\r\n");
        }
    }
    answer.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()));
    Some(answer.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::json_answer_for;

    #[test]
    fn only_a_bodiless_error_head_is_replaced() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 06:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(json_answer_for(hyper).unwrap()).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n"),
            "{answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "headers_too_large");
        assert!(answer.contains(&format!("content-length: {}\r\n", body.len())));
        // A handler's answer (with its body, or a success) passes untouched.
        assert!(json_answer_for(
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"
        )
        .is_none());
        assert!(json_answer_for(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(json_answer_for(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n").is_none());
        assert!(json_answer_for(b"data: {}\n\n").is_none());
    }
}
