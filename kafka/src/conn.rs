//! The listener and its connections: Kafka's framing (a 4-byte big-endian
//! size, then the request), pipelined requests answered in order, and every
//! resource bounded.
//!
//! ```text
//!  socket ─▶ reader: size ─▶ budget ─▶ body ─▶ header ─▶ spawn handler ─┐
//!                                                                       │ bounded queue of
//!  socket ◀─ writer: await handlers in arrival order ◀──────────────────┘ handler tasks
//! ```
//!
//! - A size below the smallest header or above `max_frame_bytes` closes the
//!   connection unread; the body buffer grows with the bytes that actually
//!   arrive, never by what a size field claims. Every frame reserves its
//!   size from the node's in-flight byte budget (shared with gRPC) until its
//!   answer is written.
//! - An unknown API key, a version we do not speak or a body that does not
//!   decode closes the connection after the answers before it (Kafka does
//!   the same); ApiVersions of an unknown version is answered with
//!   UNSUPPORTED_VERSION and our versions in its v0 form (KIP-511).
//! - At most `max_in_flight` requests per connection are in work; past that
//!   the reader stops reading and TCP holds the client back.
//! - Over TLS (a node with `--tls-cert`) the handshake must finish within
//!   [`TLS_HANDSHAKE`]. Authentication ([`crate::access`]) is handled in
//!   the reader, one step at a time: until it is done a frame may be at most
//!   [`SASL_MAX_FRAME`] bytes (Kafka's `sasl.server.max.receive.size`) and,
//!   on a node with `--require-auth`, it must be done within [`AUTH_WITHIN`].
//! - A connection silent for `idle_timeout` between requests, one whose
//!   request body takes longer than [`BODY_STALL`] to arrive, or one that
//!   does not read an answer for `WRITE_STALL`, is closed; past
//!   `max_connections` a new connection is closed at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use rivulet_broker::budget::{ByteBudget, Held, BODY_STALL};
use rivulet_metadata::edge::RateLimit;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::handler::{Answer, Handler, Parsed};
use crate::sasl::Session;

/// Limits of the Kafka listener.
#[derive(Debug, Clone, Copy)]
pub struct KafkaLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest a connection may stay silent between requests.
    pub idle_timeout: Duration,
    /// Largest request accepted (Kafka's `socket.request.max.bytes`).
    pub max_frame_bytes: usize,
    /// Most requests of one connection in work at once.
    pub max_in_flight: usize,
}

impl Default for KafkaLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(600),
            max_frame_bytes: 100 << 20,
            max_in_flight: 64,
        }
    }
}

/// The smallest request: api key, version, correlation id, client id length.
const MIN_FRAME: usize = 10;
/// How much of a body is read into memory before more is allocated.
const READ_CHUNK: usize = 64 << 10;

/// Longest one answer may take to be written before the connection is cut.
const WRITE_STALL: Duration = Duration::from_secs(60);
/// How long a closing connection's answers in work may still take.
const DRAIN: Duration = Duration::from_secs(30);
/// Longest a TLS handshake may take.
pub const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
/// Largest frame before a connection has authenticated.
pub const SASL_MAX_FRAME: usize = 512 << 10;
/// How long a connection to a node with `--require-auth` has to
/// authenticate.
pub const AUTH_WITHIN: Duration = Duration::from_secs(30);

static REFUSED: RateLimit = RateLimit::new(Duration::from_secs(1));
static ACCEPT_FAILED: RateLimit = RateLimit::new(Duration::from_secs(1));
static CLOSED: RateLimit = RateLimit::new(Duration::from_secs(1));

/// Serves Kafka clients on `listener` until `cancel`, over TLS when `tls`
/// is given.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    budget: Arc<ByteBudget>,
    limits: KafkaLimits,
    tls: Option<KafkaTls>,
    cancel: CancellationToken,
) {
    tokio::spawn(Arc::clone(&handler).run_timers(cancel.clone()));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "Kafka listener started");
    }
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                if let Some(suppressed) = ACCEPT_FAILED.allow() {
                    warn!(error = %e, suppressed, "Kafka listener cannot accept a connection");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if let Some(suppressed) = REFUSED.allow() {
                warn!(%peer, max_connections = limits.max_connections, suppressed,
                    "Kafka connection refused: the node holds its maximum of connections");
            }
            continue;
        };
        let _ = socket.set_nodelay(true);
        let (handler, budget, stop) = (Arc::clone(&handler), Arc::clone(&budget), cancel.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let why = match tls {
                None => {
                    let (rd, wr) = socket.into_split();
                    connection(rd, wr, peer, handler, budget, limits, stop).await
                }
                Some(tls) => {
                    match tokio::time::timeout(TLS_HANDSHAKE, tls.0.accept(socket)).await {
                        Ok(Ok(stream)) => {
                            let (rd, wr) = tokio::io::split(stream);
                            connection(rd, wr, peer, handler, budget, limits, stop).await
                        }
                        Ok(Err(e)) => Some(Closed::Tls(e.to_string())),
                        Err(_) => Some(Closed::Tls(format!(
                            "no handshake within {TLS_HANDSHAKE:?}"
                        ))),
                    }
                }
            };
            if let Some(why) = why {
                if let Some(suppressed) = CLOSED.allow() {
                    info!(%peer, reason = %why, suppressed, "closed a Kafka connection");
                }
            }
        });
    }
}

/// Why a connection was closed by us (not a plain disconnect).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Closed {
    #[error("request size {0} is outside 10..={1} bytes")]
    BadSize(i64, usize),
    #[error("silent for {0:?}")]
    Idle(Duration),
    #[error("a request body took longer than {0:?} to arrive")]
    Stalled(Duration),
    #[error("{0}")]
    Protocol(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("SASL authentication failed")]
    SaslFailed,
    #[error("not authenticated within {0:?}")]
    NoAuth(Duration),
}

/// One connection; returns why we closed it, `None` if the client did.
async fn connection<R, W>(
    mut rd: R,
    mut wr: W,
    peer: SocketAddr,
    handler: Arc<Handler>,
    budget: Arc<ByteBudget>,
    limits: KafkaLimits,
    cancel: CancellationToken,
) -> Option<Closed>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Each task returns its answer and what it holds of the byte budget,
    // released once the answer is written.
    let (tx, mut rx) =
        mpsc::channel::<JoinHandle<(Answer, Option<Held>)>>(limits.max_in_flight.max(1));
    let writer = tokio::spawn(async move {
        while let Some(task) = rx.recv().await {
            match task.await {
                Ok((Answer::Bytes(bytes), _held)) => {
                    // A client that stops reading is cut off. The flush
                    // matters over TLS: a write may leave records in the
                    // TLS buffer when the socket is full, and nothing else
                    // would send them until the next answer.
                    let write = async {
                        wr.write_all(&bytes).await?;
                        wr.flush().await
                    };
                    match tokio::time::timeout(WRITE_STALL, write).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                Ok((Answer::Nothing, _)) => {}
                Ok((Answer::Last(bytes), _held)) => {
                    let _ = tokio::time::timeout(WRITE_STALL, async {
                        wr.write_all(&bytes).await?;
                        wr.shutdown().await
                    })
                    .await;
                    return;
                }
                Ok((Answer::Close(why), _)) => {
                    if let Some(suppressed) = CLOSED.allow() {
                        info!(%peer, reason = %why, suppressed, "closed a Kafka connection");
                    }
                    return;
                }
                // A handler that panicked: the client cannot be answered in
                // order any more.
                Err(_) => return,
            }
        }
        let _ = wr.shutdown().await;
    });
    // The last state-changing request's signal (see Request::ordered).
    let mut last_effect: Option<oneshot::Receiver<()>> = None;
    let mut session = Session::Fresh;
    let required = handler.sasl_required();
    let auth_deadline = Instant::now() + AUTH_WITHIN;
    let reason = loop {
        // Until authenticated: small frames only, and (when required) a
        // deadline instead of the idle timeout.
        let mut frame_limits = limits;
        let authenticating = matches!(session, Session::Handshaken(_) | Session::Scram(_))
            || (required && !session.authenticated());
        if authenticating {
            frame_limits.max_frame_bytes = limits.max_frame_bytes.min(SASL_MAX_FRAME);
            if required {
                let left = auth_deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break Some(Closed::NoAuth(AUTH_WITHIN));
                }
                frame_limits.idle_timeout = limits.idle_timeout.min(left);
            }
        }
        let frame = tokio::select! {
            () = cancel.cancelled() => break None,
            f = read_frame(&mut rd, &budget, &frame_limits) => f,
        };
        let (frame, reservation) = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break None,
            Err(e) => break Some(e),
        };
        let held = Held::with(Arc::clone(&budget), reservation);
        let task = match handler.parse(frame) {
            Parsed::Request(request)
                if matches!(
                    request.key(),
                    ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
                ) =>
            {
                // One step at a time, before the next frame is read, so
                // the session is settled for the requests after it.
                let answer = handler.sasl(request, peer, &mut session).await;
                let failed = matches!(answer, Answer::Last(_));
                let closed = matches!(answer, Answer::Close(_));
                let task = tokio::spawn(async move { (answer, Some(held)) });
                if tx.send(task).await.is_err() || closed {
                    break None;
                }
                if failed {
                    break Some(Closed::SaslFailed);
                }
                continue;
            }
            Parsed::Request(request) => {
                if request.key() != ApiKey::ApiVersions {
                    match session {
                        Session::Authenticated(_) | Session::Anonymous => {}
                        Session::Fresh if !required => session = Session::Anonymous,
                        Session::Fresh => {
                            break Some(Closed::Protocol(format!(
                                "{:?} before SASL authentication: this node requires a user \
                                 (sasl.mechanism SCRAM-SHA-256/512 or PLAIN)",
                                request.key()
                            )))
                        }
                        Session::Handshaken(_) | Session::Scram(_) => {
                            break Some(Closed::Protocol(format!(
                                "{:?} during the SASL exchange",
                                request.key()
                            )))
                        }
                    }
                }
                let principal = session.principal();
                let handler = Arc::clone(&handler);
                let order = request.ordered().then(|| {
                    let (tx, rx) = oneshot::channel();
                    (last_effect.replace(rx), tx)
                });
                tokio::spawn(async move {
                    let answer = handler.handle(request, peer, principal, &held, order).await;
                    (answer, Some(held))
                })
            }
            Parsed::Immediate(bytes) => tokio::spawn(async move { (Answer::Bytes(bytes), None) }),
            Parsed::Close(why) => break Some(Closed::Protocol(why)),
        };
        if tx.send(task).await.is_err() {
            // The writer stopped: the client went away.
            break None;
        }
    };
    // Answers already in work still go out, in order, for a while.
    drop(tx);
    let abort = writer.abort_handle();
    if tokio::time::timeout(DRAIN, writer).await.is_err() {
        abort.abort();
    }
    debug!(%peer, "Kafka connection done");
    reason
}

/// Reads one frame, its size reserved from `budget`; `None` at a clean EOF
/// between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    budget: &ByteBudget,
    limits: &KafkaLimits,
) -> Result<Option<(Bytes, rivulet_broker::budget::Reservation)>, Closed> {
    let mut size = [0u8; 4];
    match tokio::time::timeout(limits.idle_timeout, rd.read_exact(&mut size)).await {
        Err(_) => return Err(Closed::Idle(limits.idle_timeout)),
        Ok(Err(_)) => return Ok(None),
        Ok(Ok(_)) => {}
    }
    let n = i32::from_be_bytes(size);
    let len = usize::try_from(n).unwrap_or(0);
    if len < MIN_FRAME || len > limits.max_frame_bytes {
        return Err(Closed::BadSize(i64::from(n), limits.max_frame_bytes));
    }
    let reservation = budget.reserve(len).await;
    // The whole body within BODY_STALL: a sender trickling a byte now and
    // then cannot pin its reservation.
    let body = async {
        let mut buf = BytesMut::with_capacity(len.min(READ_CHUNK));
        while buf.len() < len {
            if buf.capacity() == buf.len() {
                buf.reserve((len - buf.len()).min(READ_CHUNK << 4));
            }
            let want = (len - buf.len()) as u64;
            match (&mut *rd).take(want).read_buf(&mut buf).await {
                Err(_) | Ok(0) => return None,
                Ok(_) => {}
            }
        }
        Some(buf.freeze())
    };
    match tokio::time::timeout(BODY_STALL, body).await {
        Err(_) => Err(Closed::Stalled(BODY_STALL)),
        Ok(None) => Ok(None),
        Ok(Some(b)) => Ok(Some((b, reservation))),
    }
}

/// The Kafka listener's TLS from the node's certificate chain and key
/// (PEM): TLS 1.2 and 1.3, no client certificates (clients authenticate
/// with SASL).
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<KafkaTls, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the node certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("the node key: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("the node certificate and key: {e}"))?;
    Ok(KafkaTls(TlsAcceptor::from(Arc::new(config))))
}

/// The Kafka listener's TLS configuration (see [`tls_acceptor`]).
#[derive(Clone)]
pub struct KafkaTls(TlsAcceptor);

impl std::fmt::Debug for KafkaTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KafkaTls")
    }
}
