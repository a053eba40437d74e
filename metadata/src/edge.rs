//! The node's network edge, shared by every service on its port: bounded
//! connections and clear statuses for requests that cannot be decoded.
//!
//! - A connection cap: past [`EdgeLimits::max_connections`] a new connection
//!   is closed at once, with a rate-limited WARN (Kafka's `max.connections`).
//! - A handshake timeout: a connection that has not sent the whole 24-byte
//!   HTTP/2 preface within [`EdgeLimits::handshake_timeout`] is closed, so
//!   half-open or silent sockets cannot pin file descriptors forever.
//! - A silence timeout: a connection that sends nothing at all for
//!   [`EdgeLimits::idle_timeout`] is closed. Live peers answer the server's
//!   HTTP/2 keep-alive pings, so this closes dead or stuck peers, not idle
//!   clients (unlike Kafka's `connections.max.idle.ms`, which counts
//!   requests).
//! - The cap counts node-to-node connections too: it must stay well above
//!   the clients a node expects.
//! - Accept errors (EMFILE when descriptors run out) back off for 100 ms
//!   instead of spinning, with a rate-limited WARN.
//! - Node-only calls (Raft, registration, heartbeats, ISR changes, replica
//!   fetches) must prove the cluster secret
//!   ([`rivulet_proto::node_auth`]); every other call gets its principal
//!   (a node, a user who gave the right password, or anonymous) from
//!   [`crate::authn`], which refuses wrong passwords and, with
//!   `--require-auth`, calls without a user.
//! - [`StatusFixLayer`]: tonic answers a request whose protobuf does not
//!   decode (invalid UTF-8 in a string, garbage) with INTERNAL, and one over
//!   the size limit with OUT_OF_RANGE. Both are the caller's fault: they
//!   become INVALID_ARGUMENT and RESOURCE_EXHAUSTED (naming the limit).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

/// HTTP/2 keep-alive: how often the server pings a quiet connection, and
/// how long it waits for the answer. Pings find dead peers, and keep live
/// ones from the idle timeout.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `routes` on `listener` behind the edge (bounded connections,
/// keep-alive pings, fixed statuses, node-only calls checked by `nodes`,
/// every caller's principal found by `users` ([`crate::authn`])),
/// over TLS with `tls`, until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    routes: tonic::service::Routes,
    limits: EdgeLimits,
    nodes: Arc<rivulet_proto::node_auth::NodeVerifier>,
    users: Arc<crate::authn::ClientAuth>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        .layer(tower_layer::Stack::new(
            tower_layer::Stack::new(
                crate::authn::ClientAuthLayer::new(users),
                rivulet_proto::node_auth::NodeAuthLayer::new(nodes),
            ),
            StatusFixLayer,
        ))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            GuardedIncoming::new(listener, limits),
            shutdown.cancelled_owned(),
        )
        .await
}

/// Bounds on the connections one node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest a new connection may stay silent.
    pub handshake_timeout: Duration,
    /// Longest an established connection may stay silent.
    pub idle_timeout: Duration,
}

impl EdgeLimits {
    /// Default connection cap.
    pub const DEFAULT_MAX_CONNECTIONS: u64 = 4_096;
    /// Connection caps accepted.
    pub const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<u64> = 16..=1_000_000;
    /// Default handshake timeout, ms.
    pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
    /// Handshake timeouts accepted, ms.
    pub const HANDSHAKE_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=600_000;
    /// Default silence timeout, ms (Kafka's `connections.max.idle.ms`).
    pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 600_000;
    /// Silence timeouts accepted, ms: longer than the keep-alive interval.
    pub const IDLE_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 60_000..=86_400_000;

    /// Checks every limit.
    pub fn validate(&self) -> Result<(), rivulet_common::config::InvalidSetting> {
        use rivulet_common::config::check_range;
        check_range(
            "max-connections",
            self.max_connections as u64,
            Self::MAX_CONNECTIONS_RANGE,
        )?;
        check_range(
            "handshake-timeout-ms",
            self.handshake_timeout.as_millis() as u64,
            Self::HANDSHAKE_TIMEOUT_RANGE_MS,
        )?;
        check_range(
            "idle-timeout-ms",
            self.idle_timeout.as_millis() as u64,
            Self::IDLE_TIMEOUT_RANGE_MS,
        )
    }
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS as usize,
            handshake_timeout: Duration::from_millis(Self::DEFAULT_HANDSHAKE_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(Self::DEFAULT_IDLE_TIMEOUT_MS),
        }
    }
}

/// Lets a repeated event through at most once per interval, counting what
/// it held back: for log lines that could otherwise repeat thousands of
/// times a second (a full disk, a descriptor shortage, a flood of refused
/// connections).
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    state: Mutex<(Option<std::time::Instant>, u64)>,
}

impl RateLimit {
    /// At most one event per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed)` when this event may be logged (with how many were
    /// held back since the last one), `None` when it should be dropped.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

static REFUSED: RateLimit = RateLimit::new(Duration::from_secs(10));
static ACCEPT_FAILED: RateLimit = RateLimit::new(Duration::from_secs(10));
static SILENT: RateLimit = RateLimit::new(Duration::from_secs(10));

/// Accepted connections, within [`EdgeLimits`]: the stream tonic serves.
#[derive(Debug)]
pub struct GuardedIncoming {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    limits: EdgeLimits,
    backoff: Option<Pin<Box<Sleep>>>,
}

impl GuardedIncoming {
    /// Serves connections from `listener` within `limits`.
    pub fn new(listener: TcpListener, limits: EdgeLimits) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            backoff: None,
        }
    }
}

impl tokio_stream::Stream for GuardedIncoming {
    type Item = io::Result<GuardedIo>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(b) = self.backoff.as_mut() {
                ready!(b.as_mut().poll(cx));
                self.backoff = None;
            }
            match ready!(self.listener.poll_accept(cx)) {
                Ok((tcp, peer)) => match Arc::clone(&self.slots).try_acquire_owned() {
                    Ok(slot) => {
                        let _ = tcp.set_nodelay(true);
                        return Poll::Ready(Some(Ok(GuardedIo::new(tcp, slot, self.limits))));
                    }
                    Err(_) => {
                        if let Some(suppressed) = REFUSED.allow() {
                            warn!(%peer, max_connections = self.limits.max_connections, suppressed,
                                "connection refused: the node holds its maximum of connections");
                        }
                        drop(tcp);
                    }
                },
                Err(e) => {
                    if let Some(suppressed) = ACCEPT_FAILED.allow() {
                        warn!(error = %e, suppressed, "cannot accept connections; retrying in 100 ms");
                    }
                    self.backoff = Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))));
                }
            }
        }
    }
}

/// One accepted connection: closed when silent too long, and holding one of
/// the node's connection slots until it closes.
#[derive(Debug)]
pub struct GuardedIo {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
    limits: EdgeLimits,
    accepted: Instant,
    last_read: Instant,
    /// Bytes received, counted up to the HTTP/2 preface's length.
    received: usize,
    timer: Pin<Box<Sleep>>,
}

/// Length of the HTTP/2 client connection preface.
const PREFACE_LEN: usize = 24;

impl GuardedIo {
    fn new(io: TcpStream, slot: OwnedSemaphorePermit, limits: EdgeLimits) -> Self {
        let now = Instant::now();
        Self {
            io,
            _slot: slot,
            limits,
            accepted: now,
            last_read: now,
            received: 0,
            timer: Box::pin(tokio::time::sleep_until(now + limits.handshake_timeout)),
        }
    }
}

impl Connected for GuardedIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    self.last_read = Instant::now();
                    self.received = (self.received + n).min(PREFACE_LEN);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                loop {
                    // The timer is re-armed only when it fires early, not on
                    // every read: reads stay cheap.
                    let spoke = self.received >= PREFACE_LEN;
                    let (limit, due) = if spoke {
                        (
                            self.limits.idle_timeout,
                            self.last_read + self.limits.idle_timeout,
                        )
                    } else {
                        let t = self.limits.handshake_timeout;
                        (t, self.accepted + t)
                    };
                    if Instant::now() >= due {
                        let peer = self.io.peer_addr().ok();
                        if spoke {
                            debug!(
                                ?peer,
                                ?limit,
                                "closing a connection silent for its idle timeout"
                            );
                        } else if let Some(suppressed) = SILENT.allow() {
                            warn!(?peer, ?limit, suppressed,
                            "closing a connection that did not send the HTTP/2 preface within the handshake timeout");
                        }
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "connection silent for too long",
                        )));
                    }
                    if self.timer.deadline() != due {
                        self.timer.as_mut().reset(due);
                    }
                    if self.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Rewrites tonic's decode-failure statuses into the caller-fault codes.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusFixLayer;

impl<S> tower_layer::Layer<S> for StatusFixLayer {
    type Service = StatusFix<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatusFix { inner }
    }
}

/// See [`StatusFixLayer`].
#[derive(Debug, Clone)]
pub struct StatusFix<S> {
    inner: S,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for StatusFix<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            fix_status(resp.headers_mut());
            Ok(resp)
        })
    }
}

const DECODE_FAILED: &str = "failed to decode Protobuf message";
const TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// The rewrite itself, on a response's headers (a trailers-only answer: the
/// request failed before its handler ran).
pub fn fix_status(headers: &mut http::HeaderMap) {
    let Some(code) = headers.get("grpc-status") else {
        return;
    };
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    let (code, message) = match code.as_bytes() {
        b"13" if message.starts_with(DECODE_FAILED) => (
            "3",
            format!(
                "malformed request: {}",
                message
                    .trim_start_matches(DECODE_FAILED)
                    .trim_start_matches(": ")
            ),
        ),
        b"11" if message.starts_with(TOO_LARGE) => {
            let numbers: Vec<&str> = message[TOO_LARGE.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .collect();
            let (found, limit) = match numbers.as_slice() {
                [f, l, ..] => (*f, *l),
                _ => ("?", "?"),
            };
            (
                "8",
                format!(
                    "MESSAGE_TOO_LARGE: the request is {found} bytes, more than the {limit} bytes \
                     this node accepts in one request; send smaller requests"
                ),
            )
        }
        _ => return,
    };
    headers.insert("grpc-status", http::HeaderValue::from_static(code));
    if let Ok(v) = http::HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", v);
    }
}

fn percent_decode(b: &[u8]) -> String {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&String::from_utf8_lossy(&b[i + 1..i + 3]), 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// gRPC's grpc-message encoding: printable ASCII but `%` as is, the rest as
/// `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_failures_become_caller_faults() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", "13".parse().unwrap());
        h.insert(
            "grpc-message",
            "failed%20to%20decode%20Protobuf%20message:%20invalid%20string%20value:%20data%20is%20not%20UTF-8%20encoded"
                .parse()
                .unwrap(),
        );
        fix_status(&mut h);
        assert_eq!(h["grpc-status"], "3");
        assert_eq!(
            percent_decode(h["grpc-message"].as_bytes()),
            "malformed request: invalid string value: data is not UTF-8 encoded"
        );

        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", "11".parse().unwrap());
        h.insert(
            "grpc-message",
            percent_encode("Error, decoded message length too large: found 270000000 bytes, the limit is: 268435456 bytes")
                .parse()
                .unwrap(),
        );
        fix_status(&mut h);
        assert_eq!(h["grpc-status"], "8");
        let m = percent_decode(h["grpc-message"].as_bytes());
        assert!(
            m.contains("270000000") && m.contains("268435456") && m.contains("MESSAGE_TOO_LARGE"),
            "{m}"
        );

        // Other statuses pass untouched.
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", "13".parse().unwrap());
        h.insert("grpc-message", "disk%20failed".parse().unwrap());
        fix_status(&mut h);
        assert_eq!(h["grpc-status"], "13");
    }

    #[test]
    fn rate_limit_lets_one_through_per_interval_and_counts_the_rest() {
        let r = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
        let r = RateLimit::new(Duration::ZERO);
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), Some(0));
    }
}
