//! Who is calling: the edge's second step after [`rivulet_proto::node_auth`].
//! Every request leaves it with an [`Access`] in its extensions:
//!
//! - a call whose node proof was verified is the node ([`Principal::Node`]);
//! - a call with `authorization: Basic …` is that user, if the password
//!   matches the user's SCRAM-SHA-256 credential in the metadata image;
//!   otherwise it is refused with `UNAUTHENTICATED` (which of name or
//!   password was wrong is not said);
//! - a password over a plaintext connection is refused unless the node
//!   runs with `--allow-plaintext-passwords`;
//! - a call with neither is anonymous, refused with `UNAUTHENTICATED` when
//!   the node runs with `--require-auth` (gRPC reflection excepted: the
//!   schema is public).
//!
//! Checking a password costs 4,096 HMAC rounds (a few ms): a successful
//! check is remembered (keyed by a keyed hash of name and password, bound to
//! the credential it matched, so a changed password or deleted user takes
//! effect at once), and at most [`CHECKS_AT_ONCE`] run at once, off the
//! async threads, so a flood of wrong passwords cannot take the node.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hmac::{Hmac, Mac};
use rivulet_proto::node_auth::CallerNode;
use rivulet_proto::user_auth::{UserCredentials, AUTHORIZATION};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::edge::RateLimit;
use crate::image::MetadataImage;
use crate::security::{Access, Authorizer, Principal, ScramMechanism};

/// Password checks running at once.
pub const CHECKS_AT_ONCE: usize = 2;
/// Longest a call waits for a password check to start.
const CHECK_WAIT: Duration = Duration::from_secs(5);
/// Most remembered successful checks.
const CACHE_MAX: usize = 4_096;

/// Where the current metadata image comes from.
pub type ImageSource = Arc<dyn Fn() -> Arc<MetadataImage> + Send + Sync>;

/// The node's client authentication.
pub struct ClientAuth {
    authorizer: Arc<Authorizer>,
    image: ImageSource,
    tls: bool,
    allow_plaintext_passwords: bool,
    cache_key: [u8; 32],
    cache: Mutex<HashMap<[u8; 32], Vec<u8>>>,
    checks: Semaphore,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("authorizer", &self.authorizer)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

static REFUSED: RateLimit = RateLimit::new(Duration::from_secs(10));

impl ClientAuth {
    /// Authentication by `authorizer`'s rules over the users of `image`;
    /// `tls` says whether connections are encrypted.
    pub fn new(
        authorizer: Authorizer,
        image: ImageSource,
        tls: bool,
        allow_plaintext_passwords: bool,
    ) -> Self {
        let mut cache_key = [0u8; 32];
        // Without randomness the key is all zeros: the cache still works,
        // its keys are only easier to relate to passwords.
        let _ = getrandom::fill(&mut cache_key);
        Self {
            authorizer: Arc::new(authorizer),
            image,
            tls,
            allow_plaintext_passwords,
            cache_key,
            cache: Mutex::new(HashMap::new()),
            checks: Semaphore::new(CHECKS_AT_ONCE),
        }
    }

    /// An open node's authentication (no `--require-auth`): for tests.
    pub fn open(image: ImageSource) -> Self {
        Self::new(Authorizer::default(), image, false, false)
    }

    /// The node's authorizer.
    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.authorizer
    }

    /// The access of a call with these headers and extensions.
    #[allow(clippy::result_large_err)]
    async fn access(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        ext: &http::Extensions,
    ) -> Result<Access, tonic::Status> {
        // Over TLS tonic wraps the TCP connection's info.
        let host = ext
            .get::<TcpConnectInfo>()
            .and_then(|c| c.remote_addr)
            .or_else(|| {
                ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|c| c.get_ref().remote_addr)
            })
            .map(|a| a.ip());
        let access = |principal| Access {
            principal,
            host,
            authorizer: Arc::clone(&self.authorizer),
        };
        if let Some(CallerNode(id)) = ext.get::<CallerNode>() {
            return Ok(access(Principal::Node(*id)));
        }
        match headers.get(AUTHORIZATION) {
            Some(h) => {
                if !self.tls && !self.allow_plaintext_passwords {
                    return Err(tonic::Status::unauthenticated(
                        "this node refuses passwords over a plaintext connection: connect with \
                         TLS (--tls-ca), or start the nodes with --allow-plaintext-passwords",
                    ));
                }
                let Some(creds) = UserCredentials::parse(h.as_bytes()) else {
                    return Err(tonic::Status::unauthenticated(
                        "the authorization header is not `Basic base64(user:password)`",
                    ));
                };
                if self.check(&creds).await? {
                    Ok(access(Principal::User(creds.user)))
                } else {
                    if let Some(suppressed) = REFUSED.allow() {
                        tracing::info!(user = %creds.user, ?host, suppressed, "refused a call: wrong user name or password");
                    }
                    Err(tonic::Status::unauthenticated(
                        "wrong user name or password",
                    ))
                }
            }
            None if self.authorizer.require_auth && !path.starts_with("/grpc.reflection.") => {
                Err(tonic::Status::unauthenticated(
                    "this cluster requires a user: give --user and the password \
                     (RIVULET_PASSWORD or --password-file)",
                ))
            }
            None => Ok(access(Principal::Anonymous)),
        }
    }

    /// Whether a password may be sent on a connection of this node (TLS,
    /// or `--allow-plaintext-passwords`): the Kafka listener offers SASL
    /// PLAIN only then.
    pub fn passwords_allowed(&self) -> bool {
        self.tls || self.allow_plaintext_passwords
    }

    /// Whether `user` has `password` (the Kafka listener's SASL PLAIN), with
    /// the same cache and bounds as a gRPC call's check.
    #[allow(clippy::result_large_err)]
    pub async fn check_password(&self, user: &str, password: &str) -> Result<bool, tonic::Status> {
        self.check(&UserCredentials {
            user: user.to_owned(),
            password: password.to_owned(),
        })
        .await
    }

    /// The current metadata image (the Kafka listener's SCRAM reads the
    /// credentials from it).
    pub fn image(&self) -> Arc<MetadataImage> {
        (self.image)()
    }

    /// Whether `creds` name a user with that password.
    #[allow(clippy::result_large_err)]
    async fn check(&self, creds: &UserCredentials) -> Result<bool, tonic::Status> {
        let image = (self.image)();
        let Some(credential) = image
            .credential(&creds.user, ScramMechanism::Sha256)
            .cloned()
        else {
            return Ok(false);
        };
        let key = self.cache_key(creds);
        if self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|k| *k == credential.stored_key)
        {
            return Ok(true);
        }
        let _permit = tokio::time::timeout(CHECK_WAIT, self.checks.acquire())
            .await
            .map_err(|_| tonic::Status::unavailable("too many password checks at once; retry"))?
            .map_err(|_| tonic::Status::unavailable("shutting down"))?;
        let password = creds.password.clone();
        let stored = credential.stored_key.clone();
        let ok = tokio::task::spawn_blocking(move || credential.matches(&password))
            .await
            .map_err(|e| tonic::Status::internal(format!("password check failed: {e}")))?;
        if ok {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, stored);
        }
        Ok(ok)
    }

    fn cache_key(&self, creds: &UserCredentials) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.cache_key)
            .expect("HMAC takes keys of any length");
        m.update(creds.user.as_bytes());
        m.update(&[0]);
        m.update(creds.password.as_bytes());
        m.finalize().into_bytes().into()
    }
}

/// The layer: after the node proofs, before the services.
#[derive(Debug, Clone)]
pub struct ClientAuthLayer {
    auth: Arc<ClientAuth>,
}

impl ClientAuthLayer {
    /// Authenticates with `auth`.
    pub fn new(auth: Arc<ClientAuth>) -> Self {
        Self { auth }
    }
}

impl<S> tower_layer::Layer<S> for ClientAuthLayer {
    type Service = ClientAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientAuthService {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

/// See [`ClientAuthLayer`].
#[derive(Debug, Clone)]
pub struct ClientAuthService<S> {
    inner: S,
    auth: Arc<ClientAuth>,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for ClientAuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
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
        // The ready service goes with the call; its clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = Arc::clone(&self.auth);
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            match auth.access(&path, req.headers(), req.extensions()).await {
                Ok(access) => {
                    req.extensions_mut().insert(access);
                    inner.call(req).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
