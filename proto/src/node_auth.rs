//! Node identity on node-to-node calls: proof that the caller holds the
//! cluster secret.
//!
//! Every call only nodes make (Raft, broker registration and heartbeats,
//! learner joins, ISR changes, replica fetches; [`is_node_only`]) carries a
//! [`PROOF_KEY`] header:
//!
//! ```text
//! v1.<node id>.<unix ms>.<nonce: 32 hex>.<HMAC-SHA256: 64 hex>
//! ```
//!
//! the HMAC, keyed with the cluster secret, covering the call's path, the
//! node id, the time and the nonce. The receiving node ([`NodeAuthLayer`])
//! checks it in constant time, refuses a time more than [`MAX_SKEW`] away
//! from its own clock and a nonce it has already seen (a replayed header;
//! each signer's nonces count up, so a sliding window per signer
//! remembers them in constant memory), and answers a missing or wrong proof with
//! `UNAUTHENTICATED` before the call reaches any service, so a refused call
//! changes nothing. A verified call carries the caller's id
//! ([`CallerNode`]) in its extensions, for the services to check that a
//! node acts only for itself.
//!
//! The proof covers the call's identity, not its body: it stops anyone
//! without the secret, but on a plaintext network an eavesdropper who can
//! also rewrite traffic in flight could alter a body under a valid header.
//! TLS closes that; see docs/security.md.
//!
//! A node started without a secret signs nothing and checks nothing
//! ([`NodeVerifier::open`]); it warns at start.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::codegen::http;

/// The gRPC metadata key holding a node's proof.
pub const PROOF_KEY: &str = "x-rivulet-node-proof";

/// Largest difference between the caller's clock and the receiver's that a
/// proof survives. Nodes of one cluster are expected to run NTP.
pub const MAX_SKEW: Duration = Duration::from_secs(30);

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest secret file read, in bytes.
pub const MAX_SECRET_FILE: usize = 4096;

/// Nonces per signer a replay window covers: a proof whose counter is this
/// far behind the signer's newest is refused as too old (calls in flight
/// at once from one node are far fewer). 8 KiB per signer.
pub const REPLAY_WINDOW: u64 = 65_536;

/// Most signers (node processes) remembered at once; past it new ones are
/// refused. Only holders of the secret can add one; a node adds one per
/// start.
pub const MAX_SIGNERS: usize = 10_000;

/// How long a signer that stopped calling is remembered: longer than any
/// of its proofs stays valid (their time ± [`MAX_SKEW`]).
const SIGNER_MEMORY_MS: u64 = 2 * MAX_SKEW.as_millis() as u64 + 5_000;

/// The DNS name (subject alternative name) that marks a certificate as a
/// node's: over mutual TLS, a peer whose certificate (verified against the
/// node's `--tls-ca`) carries it is a node, the proof nodes without a
/// cluster secret give. `rivulet cert` puts it on the node certificate, not
/// on the client one.
pub const NODE_CERT_NAME: &str = "rivulet-node";

/// Whether `der` (a verified peer certificate) is a node certificate.
pub fn is_node_certificate(der: &rustls_pki_types::CertificateDer<'_>) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return false;
    };
    let Ok(name) = rustls_pki_types::ServerName::try_from(NODE_CERT_NAME) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// Whether the first certificate of the PEM file `path` is a node
/// certificate (for a node starting without a cluster secret).
pub fn is_node_certificate_file(path: &Path) -> Result<bool, String> {
    use rustls_pki_types::pem::PemObject;
    let cert = rustls_pki_types::CertificateDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a certificate from {}: {e}", path.display()))?;
    Ok(is_node_certificate(&cert))
}

/// The calls only nodes make: Raft, and the Controller and Replication
/// calls of a broker's own lifecycle.
pub fn is_node_only(path: &str) -> bool {
    path.starts_with("/rivulet.v1.Raft/")
        || path.starts_with("/rivulet.v1.Replication/")
        || matches!(
            path,
            "/rivulet.v1.Controller/RegisterBroker"
                | "/rivulet.v1.Controller/Heartbeat"
                | "/rivulet.v1.Controller/AlterPartition"
                | "/rivulet.v1.Controller/AllocateProducerIds"
                | "/rivulet.v1.Controller/AddLearner"
        )
}

/// Why a cluster secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read the cluster secret file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is too short or too long.
    #[error(
        "the cluster secret in {path} is {len} bytes; it must be {MIN_SECRET_LEN} to \
         {MAX_SECRET_FILE} bytes (`rivulet cluster new-secret --out <file>` makes one)"
    )]
    Length {
        /// The file.
        path: String,
        /// Its length after trimming whitespace.
        len: usize,
    },
    /// The file cannot be written.
    #[error("cannot write the cluster secret file {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The operating system's random source failed.
    #[error("no random bytes from the operating system: {0}")]
    Random(String),
}

/// The shared secret every node of a cluster holds. Its `Debug` shows
/// nothing of it.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// The secret in `path`: its bytes, surrounding whitespace trimmed.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let shown = path.display().to_string();
        let raw = std::fs::read(path).map_err(|source| SecretError::Read {
            path: shown.clone(),
            source,
        })?;
        let text = raw.trim_ascii();
        if text.len() < MIN_SECRET_LEN || raw.len() > MAX_SECRET_FILE {
            return Err(SecretError::Length {
                path: shown,
                len: text.len(),
            });
        }
        Ok(Self(Arc::from(text)))
    }

    /// A secret from bytes (tests).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Arc::from(bytes))
    }

    /// Writes a new random secret (256 bits as hex) to `path`, readable
    /// by its owner only. `Ok(false)` when the file exists and `if_missing`
    /// is set (left as it is); an existing file is an error otherwise.
    ///
    /// Atomic: the secret is written whole to a temporary file, then
    /// hard-linked into place, which never replaces a file. Processes that
    /// race to create one file (nodes sharing a volume) agree on one secret,
    /// and none ever reads a half-written one.
    pub fn create_file(path: &Path, if_missing: bool) -> Result<bool, SecretError> {
        use std::io::Write;
        let shown = path.display().to_string();
        let fail = |source| SecretError::Write {
            path: shown.clone(),
            source,
        };
        if path.exists() {
            return if if_missing {
                Ok(false)
            } else {
                Err(fail(std::io::Error::from(
                    std::io::ErrorKind::AlreadyExists,
                )))
            };
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".tmp-{}-{}", std::process::id(), hex(&bytes[..4])));
        let tmp = std::path::PathBuf::from(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = options.open(&tmp).and_then(|mut file| {
            file.write_all(format!("{}\n", hex(&bytes)).as_bytes())?;
            file.sync_all()
        });
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && if_missing => Ok(false),
            Err(e) => Err(fail(e)),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn tag(
    secret: &ClusterSecret,
    path: &str,
    node: u64,
    at_ms: u64,
    nonce: &[u8; 16],
) -> Hmac<Sha256> {
    let mut mac = secret.mac();
    mac.update(b"rivulet-node-proof-v1\0");
    mac.update(path.as_bytes());
    mac.update(b"\0");
    mac.update(&node.to_be_bytes());
    mac.update(&at_ms.to_be_bytes());
    mac.update(nonce);
    mac
}

/// The verified caller of a node-only call, in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerNode(pub u64);

/// How this node proves itself to other nodes: it signs its calls with
/// the cluster secret and, with TLS, presents its certificate. Cheap to
/// clone.
#[derive(Clone)]
pub struct NodeCredentials {
    node_id: u64,
    secret: Option<ClusterSecret>,
    tls: Option<crate::tls::ClientTls>,
    /// Nonces: a random prefix per signer and a counter, so no two proofs
    /// of one process repeat.
    prefix: u64,
    counter: Arc<AtomicU64>,
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("node_id", &self.node_id)
            .field("signs", &self.secret.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl NodeCredentials {
    /// Signs as `node_id` with `secret`; without one, signs nothing.
    pub fn new(node_id: u64, secret: Option<ClusterSecret>) -> Self {
        Self::with_tls(node_id, secret, None)
    }

    /// [`Self::new`], connecting over TLS with `tls` (which should carry
    /// the node's certificate: mutual TLS).
    pub fn with_tls(
        node_id: u64,
        secret: Option<ClusterSecret>,
        tls: Option<crate::tls::ClientTls>,
    ) -> Self {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            // Uniqueness, not secrecy, is what the prefix is for.
            seed = (now_ms() ^ u64::from(std::process::id()).rotate_left(40)).to_be_bytes();
        }
        Self {
            node_id,
            secret,
            tls,
            prefix: u64::from_be_bytes(seed),
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A signer that signs nothing (no secret configured).
    pub fn unsigned(node_id: u64) -> Self {
        Self::new(node_id, None)
    }

    /// The node these credentials speak for.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// TLS for connections to other nodes, if configured.
    pub fn tls(&self) -> Option<&crate::tls::ClientTls> {
        self.tls.as_ref()
    }

    /// The proof header for a call to `path`, now; `None` without a secret.
    pub fn proof(&self, path: &str) -> Option<String> {
        self.proof_at(path, now_ms())
    }

    fn proof_at(&self, path: &str, at_ms: u64) -> Option<String> {
        let Some(secret) = self.secret.as_ref() else {
            // Without a secret, a node over TLS is proven by its
            // certificate; the header names the node it speaks for.
            return self.tls.is_some().then(|| format!("mtls.{}", self.node_id));
        };
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.prefix.to_be_bytes());
        nonce[8..].copy_from_slice(&self.counter.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let mac = tag(secret, path, self.node_id, at_ms, &nonce)
            .finalize()
            .into_bytes();
        Some(format!(
            "v1.{}.{at_ms}.{}.{}",
            self.node_id,
            hex(&nonce),
            hex(&mac)
        ))
    }

    /// Adds the proof for `req`'s path to its headers.
    pub fn sign<B>(&self, req: &mut http::Request<B>) {
        if let Some(p) = self.proof(req.uri().path()) {
            if let Ok(v) = http::HeaderValue::from_str(&p) {
                req.headers_mut().insert(PROOF_KEY, v);
            }
        }
    }
}

/// Why a node-only call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// No proof header.
    #[error("node-to-node call without proof of the cluster secret")]
    Missing,
    /// The header does not parse.
    #[error("malformed node proof")]
    Malformed,
    /// The HMAC does not match: another secret, or a forgery.
    #[error("node proof does not match the cluster secret")]
    BadMac,
    /// The proof's time is too far from this node's clock.
    #[error("node proof is {skew_ms} ms away from this node's clock (at most {} ms allowed; check NTP)", MAX_SKEW.as_millis())]
    Skewed {
        /// How far, ms.
        skew_ms: u64,
    },
    /// The proof was used before.
    #[error("node proof replayed")]
    Replayed,
    /// A certificate proof from a peer without a node certificate.
    #[error("node-to-node call from a peer without a node certificate (one valid for {NODE_CERT_NAME}, signed by this node's --tls-ca)")]
    NotANodeCertificate,
    /// An HMAC proof to a node that has no secret to check it with.
    #[error("node proof by cluster secret, but this node has none (--cluster-secret-file)")]
    NoSecret,
    /// Too many proofs to remember.
    #[error("too many node calls to check replays; retry")]
    Overloaded,
}

/// Checks node proofs; one per node, shared by its connections.
#[derive(Debug)]
pub struct NodeVerifier {
    secret: Option<ClusterSecret>,
    /// Node certificates over mutual TLS are an accepted proof.
    certificates: bool,
    seen: Mutex<Signers>,
    /// The origin of the monotonic clock signers are forgotten by (a wall
    /// clock stepping back must not keep them, or free them early).
    started: std::time::Instant,
}

/// Every signer (node process) seen lately: its newest counter and which
/// of the [`REPLAY_WINDOW`] counters before it were used.
#[derive(Debug, Default)]
struct Signers {
    by_signer: std::collections::HashMap<(u64, u64), Window>,
    swept_at: u64,
}

#[derive(Debug)]
struct Window {
    newest: u64,
    /// Bit `i % 64` of word `i / 64`: counter `newest - i` was used.
    used: Box<[u64; (REPLAY_WINDOW / 64) as usize]>,
    last_tick: u64,
}

impl Window {
    fn new(counter: u64, tick: u64) -> Self {
        let mut w = Self {
            newest: counter,
            used: Box::new([0; (REPLAY_WINDOW / 64) as usize]),
            last_tick: tick,
        };
        w.used[0] = 1;
        w
    }

    /// Marks `counter` used; `false` if it was, or is too old to tell.
    fn mark(&mut self, counter: u64) -> bool {
        if counter > self.newest {
            self.shift(counter - self.newest);
            self.newest = counter;
            self.used[0] |= 1;
            return true;
        }
        let back = self.newest - counter;
        if back >= REPLAY_WINDOW {
            return false;
        }
        let (word, bit) = ((back / 64) as usize, back % 64);
        let seen = self.used[word] & (1 << bit) != 0;
        self.used[word] |= 1 << bit;
        !seen
    }

    /// Moves the window `by` counters forward (the oldest bits age out).
    fn shift(&mut self, by: u64) {
        if by >= REPLAY_WINDOW {
            self.used.fill(0);
            return;
        }
        let (words, bits) = ((by / 64) as usize, by % 64);
        for i in (0..self.used.len()).rev() {
            let from = i.checked_sub(words);
            let hi = from.map_or(0, |f| self.used[f]);
            let lo = from
                .and_then(|f| f.checked_sub(1))
                .map_or(0, |f| self.used[f]);
            self.used[i] = if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (64 - bits))
            };
        }
    }
}

impl NodeVerifier {
    /// Checks proofs against `secret`.
    pub fn new(secret: ClusterSecret) -> Self {
        Self {
            secret: Some(secret),
            certificates: false,
            seen: Mutex::default(),
            started: std::time::Instant::now(),
        }
    }

    /// Checks nothing: every call is let through (no secret configured).
    pub fn open() -> Self {
        Self {
            secret: None,
            certificates: false,
            seen: Mutex::default(),
            started: std::time::Instant::now(),
        }
    }

    /// Accepts node certificates (mutual TLS) as a proof too (the node
    /// serves TLS and verifies client certificates against its CA).
    pub fn accepting_node_certificates(mut self) -> Self {
        self.certificates = true;
        self
    }

    /// Checks node certificates only (TLS, no cluster secret).
    pub fn node_certificates() -> Self {
        Self::open().accepting_node_certificates()
    }

    /// Whether proofs are checked.
    pub fn enforcing(&self) -> bool {
        self.secret.is_some() || self.certificates
    }

    /// The caller proven by `header` for a call to `path`; `Ok(None)` when
    /// nothing is checked.
    ///
    /// `peer_is_node`: whether the connection's peer presented a node
    /// certificate ([`is_node_certificate`]); asked only for a certificate
    /// proof.
    pub fn verify(
        &self,
        path: &str,
        header: Option<&[u8]>,
        peer_is_node: impl FnOnce() -> bool,
    ) -> Result<Option<CallerNode>, ProofError> {
        if let Some(rest) = header.and_then(|h| h.strip_prefix(b"mtls.")) {
            if !self.certificates {
                return Err(ProofError::Malformed);
            }
            let node: u64 = std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(ProofError::Malformed)?;
            return if peer_is_node() {
                Ok(Some(CallerNode(node)))
            } else {
                Err(ProofError::NotANodeCertificate)
            };
        }
        if self.secret.is_none() && self.certificates {
            return Err(match header {
                None => ProofError::Missing,
                Some(_) => ProofError::NoSecret,
            });
        }
        let tick = self.started.elapsed().as_millis() as u64;
        self.verify_at_tick(path, header, now_ms(), tick)
    }

    /// [`Self::verify_at_tick`] with the wall clock as the monotonic one.
    #[cfg(test)]
    fn verify_at(
        &self,
        path: &str,
        header: Option<&[u8]>,
        now: u64,
    ) -> Result<Option<CallerNode>, ProofError> {
        self.verify_at_tick(path, header, now, now)
    }

    /// [`Self::verify`] at wall-clock `now` (ms since the epoch; proofs
    /// are dated by it) and monotonic `tick` (ms; signers are forgotten by
    /// it).
    fn verify_at_tick(
        &self,
        path: &str,
        header: Option<&[u8]>,
        now: u64,
        tick: u64,
    ) -> Result<Option<CallerNode>, ProofError> {
        let Some(secret) = &self.secret else {
            return Ok(None);
        };
        let header = header.ok_or(ProofError::Missing)?;
        let text = std::str::from_utf8(header).map_err(|_| ProofError::Malformed)?;
        let mut parts = text.split('.');
        let (Some("v1"), Some(node), Some(at), Some(nonce), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ProofError::Malformed);
        };
        let node: u64 = node.parse().map_err(|_| ProofError::Malformed)?;
        let at: u64 = at.parse().map_err(|_| ProofError::Malformed)?;
        let nonce: [u8; 16] = unhex(nonce).ok_or(ProofError::Malformed)?;
        let mac: [u8; 32] = unhex(mac).ok_or(ProofError::Malformed)?;
        tag(secret, path, node, at, &nonce)
            .verify_slice(&mac)
            .map_err(|_| ProofError::BadMac)?;
        let skew = now.abs_diff(at);
        if skew > MAX_SKEW.as_millis() as u64 {
            return Err(ProofError::Skewed { skew_ms: skew });
        }
        let prefix = u64::from_be_bytes(nonce[..8].try_into().expect("8 bytes"));
        let counter = u64::from_be_bytes(nonce[8..].try_into().expect("8 bytes"));
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if tick.saturating_sub(seen.swept_at) >= 10_000 {
            seen.swept_at = tick;
            seen.by_signer
                .retain(|_, w| tick.saturating_sub(w.last_tick) < SIGNER_MEMORY_MS);
        }
        let signers = seen.by_signer.len();
        match seen.by_signer.entry((node, prefix)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let w = e.get_mut();
                w.last_tick = tick;
                if !w.mark(counter) {
                    return Err(ProofError::Replayed);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                if signers >= MAX_SIGNERS {
                    return Err(ProofError::Overloaded);
                }
                e.insert(Window::new(counter, tick));
            }
        }
        Ok(Some(CallerNode(node)))
    }
}

/// Signs every call made through it: the channel one node uses to call
/// another.
pub type NodeChannel = crate::StampedChannel<NodeCredentials>;

impl crate::Stamp for NodeCredentials {
    fn stamp(&self, req: &mut http::Request<tonic::body::Body>) {
        self.sign(req);
    }
}

impl NodeChannel {
    /// Signs the calls made through `inner` with `signer`.
    pub fn new(inner: tonic::transport::Channel, signer: NodeCredentials) -> Self {
        Self {
            inner,
            stamp: signer,
        }
    }
}

/// A lazily connecting channel to another node at `host:port`, signing
/// its calls and over TLS where the credentials say so.
pub fn node_channel(
    addr: &str,
    connect_timeout: Duration,
    credentials: &NodeCredentials,
) -> Result<NodeChannel, tonic::transport::Error> {
    Ok(NodeChannel::new(
        crate::channel(addr, connect_timeout, credentials.tls())?,
        credentials.clone(),
    ))
}

/// The server side: refuses node-only calls without a valid proof, and any
/// call with an invalid one, with `UNAUTHENTICATED`, before any service
/// sees them; a verified caller is put into the request's extensions.
#[derive(Debug, Clone)]
pub struct NodeAuthLayer {
    verifier: Arc<NodeVerifier>,
}

impl NodeAuthLayer {
    /// Checks proofs with `verifier`.
    pub fn new(verifier: Arc<NodeVerifier>) -> Self {
        Self { verifier }
    }
}

impl<S> tower_layer::Layer<S> for NodeAuthLayer {
    type Service = NodeAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NodeAuth {
            inner,
            verifier: Arc::clone(&self.verifier),
        }
    }
}

/// See [`NodeAuthLayer`].
#[derive(Debug, Clone)]
pub struct NodeAuth<S> {
    inner: S,
    verifier: Arc<NodeVerifier>,
}

static REFUSALS: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

impl<S, B, R> tower_service::Service<http::Request<B>> for NodeAuth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let header = req.headers().get(PROOF_KEY).map(|v| v.as_bytes());
        // Any call may carry a proof (a node forwarding a client's write, a
        // node's own catch-up read): it is checked wherever it appears, so
        // "a node made this call" is never taken on a client's word.
        if is_node_only(path) || header.is_some() {
            let ext = req.extensions();
            let peer_is_node = || {
                ext.get::<tonic::transport::server::TlsConnectInfo<
                    tonic::transport::server::TcpConnectInfo,
                >>()
                .and_then(|c| c.peer_certs())
                .and_then(|certs| certs.first().map(is_node_certificate))
                .unwrap_or(false)
            };
            match self.verifier.verify(path, header, peer_is_node) {
                Ok(Some(caller)) => {
                    req.extensions_mut().insert(caller);
                }
                Ok(None) => {}
                Err(e) => {
                    log_refusal(path, &e);
                    let status = tonic::Status::unauthenticated(e.to_string());
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

/// A WARN per refused node call, at most one every 10 s.
fn log_refusal(path: &str, e: &ProofError) {
    let mut last = REFUSALS.lock().unwrap_or_else(|e| e.into_inner());
    let now = std::time::Instant::now();
    if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
        *last = Some(now);
        tracing::warn!(path, reason = %e, "refused a node-to-node call (more are not logged for 10 s)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/rivulet.v1.Raft/Vote";

    fn pair() -> (NodeCredentials, NodeVerifier) {
        let secret = ClusterSecret::from_bytes(&[7u8; 32]);
        (
            NodeCredentials::new(2, Some(secret.clone())),
            NodeVerifier::new(secret),
        )
    }

    #[test]
    fn a_signed_call_is_verified_once_and_names_its_caller() {
        let (signer, verifier) = pair();
        let now = 1_000_000_000;
        let proof = signer.proof_at(PATH, now).unwrap();
        assert_eq!(
            verifier.verify_at(PATH, Some(proof.as_bytes()), now + 5),
            Ok(Some(CallerNode(2)))
        );
        assert_eq!(
            verifier.verify_at(PATH, Some(proof.as_bytes()), now + 6),
            Err(ProofError::Replayed)
        );
        // Every proof is new.
        let again = signer.proof_at(PATH, now).unwrap();
        assert_ne!(again, proof);
        assert!(verifier
            .verify_at(PATH, Some(again.as_bytes()), now)
            .is_ok());
    }

    #[test]
    fn missing_wrong_or_altered_proofs_are_refused() {
        let (signer, verifier) = pair();
        let now = 1_000_000_000;
        assert_eq!(
            verifier.verify_at(PATH, None, now),
            Err(ProofError::Missing)
        );
        for junk in [
            "",
            "v1",
            "v1.2.3.4.5",
            "v2.2.1000000000.00.00",
            "v1.2.x.0.0",
        ] {
            assert_eq!(
                verifier.verify_at(PATH, Some(junk.as_bytes()), now),
                Err(ProofError::Malformed),
                "{junk:?}"
            );
        }
        let other = NodeCredentials::new(2, Some(ClusterSecret::from_bytes(&[8u8; 32])));
        let p = other.proof_at(PATH, now).unwrap();
        assert_eq!(
            verifier.verify_at(PATH, Some(p.as_bytes()), now),
            Err(ProofError::BadMac)
        );
        // A proof for one call does not open another.
        let p = signer.proof_at(PATH, now).unwrap();
        assert_eq!(
            verifier.verify_at(
                "/rivulet.v1.Controller/RegisterBroker",
                Some(p.as_bytes()),
                now
            ),
            Err(ProofError::BadMac)
        );
        // Claiming another node id breaks the MAC.
        let forged = p.replacen("v1.2.", "v1.3.", 1);
        assert_eq!(
            verifier.verify_at(PATH, Some(forged.as_bytes()), now),
            Err(ProofError::BadMac)
        );
    }

    #[test]
    fn proofs_from_another_time_are_refused_and_nonces_are_forgotten_only_after_they_expire() {
        let (signer, verifier) = pair();
        let now = 1_000_000_000;
        let skew = MAX_SKEW.as_millis() as u64;
        let old = signer.proof_at(PATH, now - skew - 1).unwrap();
        assert!(matches!(
            verifier.verify_at(PATH, Some(old.as_bytes()), now),
            Err(ProofError::Skewed { .. })
        ));
        let future = signer.proof_at(PATH, now + skew + 1).unwrap();
        assert!(matches!(
            verifier.verify_at(PATH, Some(future.as_bytes()), now),
            Err(ProofError::Skewed { .. })
        ));
        // A proof dated at the edge of the future window, replayed until it
        // expires: refused every time, across generation rotations.
        let edge = signer.proof_at(PATH, now + skew).unwrap();
        assert!(verifier.verify_at(PATH, Some(edge.as_bytes()), now).is_ok());
        for t in (now..=now + 2 * skew).step_by(1_000) {
            assert!(
                verifier.verify_at(PATH, Some(edge.as_bytes()), t).is_err(),
                "replay at +{} ms",
                t - now
            );
        }
    }

    #[test]
    fn calls_out_of_order_pass_once_and_the_window_slides() {
        let (signer, verifier) = pair();
        let now = 1_000_000_000;
        let proofs: Vec<String> = (0..300)
            .map(|_| signer.proof_at(PATH, now).unwrap())
            .collect();
        // Newest first, then the rest in a scrambled order: all pass once.
        let mut order: Vec<usize> = (0..300).rev().collect();
        order.swap(3, 200);
        order.swap(17, 250);
        for i in &order {
            let p = proofs[*i].as_bytes();
            assert!(
                verifier.verify_at_tick(PATH, Some(p), now, 1).is_ok(),
                "{i}"
            );
        }
        for i in &order {
            let p = proofs[*i].as_bytes();
            assert_eq!(
                verifier.verify_at_tick(PATH, Some(p), now, 2),
                Err(ProofError::Replayed),
                "{i}"
            );
        }
        // A proof a whole window behind the newest is refused as too old.
        let old = signer.proof_at(PATH, now).unwrap();
        signer.counter.fetch_add(REPLAY_WINDOW, Ordering::Relaxed);
        let newest = signer.proof_at(PATH, now).unwrap();
        assert!(verifier
            .verify_at_tick(PATH, Some(newest.as_bytes()), now, 3)
            .is_ok());
        assert_eq!(
            verifier.verify_at_tick(PATH, Some(old.as_bytes()), now, 3),
            Err(ProofError::Replayed)
        );
        // A signer silent past every proof's validity is forgotten.
        let later = SIGNER_MEMORY_MS + 20_000;
        let other = NodeCredentials::new(3, Some(ClusterSecret::from_bytes(&[7u8; 32])));
        let p = other.proof_at(PATH, now).unwrap();
        assert!(verifier
            .verify_at_tick(PATH, Some(p.as_bytes()), now, later)
            .is_ok());
        assert_eq!(verifier.seen.lock().unwrap().by_signer.len(), 1);
    }

    #[test]
    fn the_window_shifts_bits_exactly() {
        for by in [1, 63, 64, 65, 130, REPLAY_WINDOW - 1] {
            let mut w = Window::new(100_000, 0);
            for c in [99_999, 99_990, 99_937] {
                assert!(w.mark(c));
            }
            assert!(w.mark(100_000 + by));
            for c in [100_000, 99_999, 99_990, 99_937] {
                let back = 100_000 + by - c;
                if back < REPLAY_WINDOW {
                    assert!(!w.mark(c), "by {by}: {c} forgotten");
                }
            }
            if by + 2 < REPLAY_WINDOW {
                assert!(w.mark(99_998), "by {by}: 99998 was never used");
            }
        }
        let mut w = Window::new(10, 0);
        assert!(w.mark(10 + REPLAY_WINDOW));
        assert!(!w.mark(10), "too old to tell");
    }

    #[test]
    fn without_a_secret_nothing_is_signed_or_checked() {
        let signer = NodeCredentials::unsigned(1);
        assert_eq!(signer.proof(PATH), None);
        assert_eq!(NodeVerifier::open().verify(PATH, None, || false), Ok(None));
    }

    #[test]
    fn node_certificates_prove_a_node_and_nothing_else_does() {
        let v = NodeVerifier::node_certificates();
        assert!(v.enforcing());
        let proof = b"mtls.3";
        assert_eq!(
            v.verify(PATH, Some(proof), || true),
            Ok(Some(CallerNode(3)))
        );
        assert_eq!(
            v.verify(PATH, Some(proof), || false),
            Err(ProofError::NotANodeCertificate)
        );
        assert_eq!(v.verify(PATH, None, || true), Err(ProofError::Missing));
        assert_eq!(
            v.verify(PATH, Some(b"mtls.x"), || true),
            Err(ProofError::Malformed)
        );
        // An HMAC proof cannot be checked without the secret.
        let (signer, _) = pair();
        let hmac = signer.proof(PATH).unwrap();
        assert_eq!(
            v.verify(PATH, Some(hmac.as_bytes()), || true),
            Err(ProofError::NoSecret)
        );
        // A verifier with a secret and no TLS takes no certificate proofs.
        let (_, with_secret) = pair();
        assert_eq!(
            with_secret.verify(PATH, Some(proof), || true),
            Err(ProofError::Malformed)
        );
        // Both: either proof.
        let both =
            NodeVerifier::new(ClusterSecret::from_bytes(&[7u8; 32])).accepting_node_certificates();
        assert_eq!(
            both.verify(PATH, Some(proof), || true),
            Ok(Some(CallerNode(3)))
        );
        assert_eq!(
            both.verify(PATH, Some(hmac.as_bytes()), || false),
            Ok(Some(CallerNode(2)))
        );
        // A node with TLS and no secret signs with the certificate form.
        let tlsless = NodeCredentials::with_tls(4, None, None);
        assert_eq!(tlsless.proof(PATH), None);
    }

    #[test]
    fn node_only_calls_are_the_cluster_s_own() {
        for p in [
            "/rivulet.v1.Raft/AppendEntries",
            "/rivulet.v1.Raft/Vote",
            "/rivulet.v1.Raft/InstallSnapshot",
            "/rivulet.v1.Replication/ReplicaFetch",
            "/rivulet.v1.Controller/RegisterBroker",
            "/rivulet.v1.Controller/Heartbeat",
            "/rivulet.v1.Controller/AlterPartition",
            "/rivulet.v1.Controller/AllocateProducerIds",
            "/rivulet.v1.Controller/AddLearner",
        ] {
            assert!(is_node_only(p), "{p}");
        }
        for p in [
            "/rivulet.v1.Controller/CreateTopic",
            "/rivulet.v1.Controller/DescribeCluster",
            "/rivulet.v1.Broker/Produce",
            "/rivulet.v1.Groups/OffsetCommit",
        ] {
            assert!(!is_node_only(p), "{p}");
        }
    }

    #[test]
    fn secret_files_are_made_private_and_read_back_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        assert!(ClusterSecret::create_file(&path, false).unwrap());
        assert!(!ClusterSecret::create_file(&path, true).unwrap());
        assert!(matches!(
            ClusterSecret::create_file(&path, false),
            Err(SecretError::Write { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let s = ClusterSecret::from_file(&path).unwrap();
        assert_eq!(s.0.len(), 64);
        // Racing creators agree on one secret and leave no temporary files.
        let raced = dir.path().join("raced");
        let made: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| ClusterSecret::create_file(&raced, true).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(made, 1);
        assert_eq!(ClusterSecret::from_file(&raced).unwrap().0.len(), 64);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        std::fs::write(&path, "  short \n").unwrap();
        assert!(matches!(
            ClusterSecret::from_file(&path),
            Err(SecretError::Length { len: 5, .. })
        ));
        assert!(format!("{s:?}").contains(".."));
    }
}
