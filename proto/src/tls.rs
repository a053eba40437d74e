//! TLS for every listener and every connection (rustls, through tonic).
//!
//! A node serves TLS with its certificate and key and trusts one CA for its
//! peers; nodes present their certificate when they call each other
//! (mutual TLS), clients present one if they have it (optional). A client
//! trusts the CA it is given: a server whose certificate another CA signed,
//! or that does not name the host dialled, is refused.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Why TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file (e.g. `--tls-ca`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM block of the kind expected.
    #[error("{what} {path} holds no PEM {kind} (-----BEGIN {kind}-----)")]
    NotPem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The block expected.
        kind: &'static str,
    },
    /// A certificate was given without its key, or the other way round.
    #[error("--tls-cert and --tls-key go together")]
    Unpaired,
}

fn read_pem(what: &'static str, path: &Path, kind: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let marker = format!("-----BEGIN {kind}");
    let found = String::from_utf8_lossy(&bytes).contains(&marker)
        || (kind == "PRIVATE KEY"
            && ["RSA PRIVATE KEY", "EC PRIVATE KEY"]
                .iter()
                .any(|k| String::from_utf8_lossy(&bytes).contains(&format!("-----BEGIN {k}"))));
    if !found {
        return Err(TlsError::NotPem {
            what,
            path: path.to_owned(),
            kind,
        });
    }
    Ok(bytes)
}

fn identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    Ok(Identity::from_pem(
        read_pem("--tls-cert", cert, "CERTIFICATE")?,
        read_pem("--tls-key", key, "PRIVATE KEY")?,
    ))
}

/// How a client (or a node calling another) connects over TLS. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: ClientTlsConfig,
}

impl ClientTls {
    /// Trusts the CA in `ca`; presents the certificate and key in
    /// `identity` if given.
    pub fn from_files(ca: &Path, identity_files: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem(
            "--tls-ca",
            ca,
            "CERTIFICATE",
        )?));
        if let Some((cert, key)) = identity_files {
            config = config.identity(identity(cert, key)?);
        }
        Ok(Self { config })
    }

    /// [`Self::from_files`] from optional flags: nothing without a CA;
    /// a certificate needs its key.
    pub fn from_flags(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<Self>, TlsError> {
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(TlsError::Unpaired),
        };
        ca.map(|ca| Self::from_files(ca, identity)).transpose()
    }

    /// The tonic configuration (the server name is the dialled host).
    pub fn config(&self) -> ClientTlsConfig {
        self.config.clone()
    }
}

/// A node's TLS: what it serves with and how it calls its peers.
#[derive(Clone)]
pub struct NodeTls {
    /// Its listener's configuration.
    pub server: ServerTlsConfig,
    /// Its calls to other nodes: the CA, and its own certificate.
    pub client: ClientTls,
    /// Its certificate chain and key, PEM (the Kafka listener serves TLS
    /// with them).
    pub identity_pem: (Vec<u8>, Vec<u8>),
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the key.
        f.debug_struct("NodeTls")
            .field("server", &self.server)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// From `--tls-cert`, `--tls-key` and `--tls-ca`: the node serves with
    /// the certificate, asks clients for one signed by the CA (optional for
    /// clients; nodes always present theirs) and trusts the CA for peers.
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        let ca_pem = read_pem("--tls-ca", ca, "CERTIFICATE")?;
        let server = ServerTlsConfig::new()
            .identity(identity(cert, key)?)
            .client_ca_root(Certificate::from_pem(&ca_pem))
            .client_auth_optional(true);
        let client = ClientTls::from_files(ca, Some((cert, key)))?;
        let identity_pem = (
            read_pem("--tls-cert", cert, "CERTIFICATE")?,
            read_pem("--tls-key", key, "PRIVATE KEY")?,
        );
        Ok(Self {
            server,
            client,
            identity_pem,
        })
    }
}

/// A lazily connecting channel to `host:port`, over TLS when `tls` is
/// given, with a connect timeout and TCP_NODELAY.
pub fn endpoint(
    addr: &str,
    connect_timeout: std::time::Duration,
    tls: Option<&ClientTls>,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        // The handshake has a deadline too (the connect's, at least 2 s so a
        // loaded machine's handshake fits): a peer that accepts TCP and
        // never answers (paused, not serving yet) must not hold a
        // connection attempt forever.
        let handshake = connect_timeout.max(std::time::Duration::from_secs(2));
        endpoint = endpoint.tls_config(tls.config().timeout(handshake))?;
    }
    Ok(endpoint)
}

/// Says what a failed call's transport error means when TLS is involved:
/// a plaintext client talking to a TLS node, or a certificate not trusted.
pub fn explain(status: &tonic::Status) -> Option<&'static str> {
    use std::error::Error;
    // Only a transport failure has a source; a node's own answer (which may
    // quote a topic name) never does.
    status.source().and_then(explain_error)
}

fn explain_text(text: &str) -> Option<&'static str> {
    if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        Some("the node's certificate is not signed by the CA given with --tls-ca")
    } else if text.contains("NotValidForName") {
        Some("the node's certificate does not name the address dialled")
    } else if text.contains("frame with invalid size")
        || text.contains("InvalidContentType")
        || text.contains("corrupt message")
    {
        Some("TLS on one side only: give --tls-ca (RIVULET_TLS_CA) to talk to a TLS cluster, and none to a plaintext one")
    } else {
        None
    }
}

/// [`explain`] for any error, walking its sources (a transport error's
/// cause is where rustls says what failed).
pub fn explain_error(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut text = String::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        text.push_str(&format!("{err} {err:?} "));
        cur = err.source();
    }
    explain_text(&text)
}
