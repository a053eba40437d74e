//! What a client knows about the cluster: the bootstrap nodes, one lazily
//! connected gRPC channel per broker address, and a metadata cache (brokers,
//! partition leaders) refreshed on demand and corrected by leader hints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rivulet_proto::v1::broker_client::BrokerClient;
use rivulet_proto::v1::controller_client::ControllerClient;
use rivulet_proto::v1::{LeaderHint, MetadataRequest, MetadataResponse, PartitionInfo};
use rivulet_proto::{NOT_READY_KEY, TRY_NODES_KEY};
/// The channel every client call goes over: adds the user's credentials.
pub type Channel = rivulet_proto::user_auth::UserChannel;
use tracing::debug;

use crate::error::{Error, Result};

use rivulet_common::limits::MAX_MESSAGE_BYTES;

/// Connection settings shared by producers, consumers and admins.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of one or more nodes; any node answers metadata.
    pub bootstrap: Vec<String>,
    /// TCP connect deadline.
    pub connect_timeout: Duration,
    /// Deadline of one request (long polls add their wait to it).
    pub request_timeout: Duration,
    /// TLS: the CA to trust and an optional client certificate; `None`
    /// connects in plaintext.
    pub tls: Option<rivulet_proto::tls::ClientTls>,
    /// The user every call is made as (`authorization: Basic`); `None`
    /// calls anonymously.
    pub user: Option<rivulet_proto::user_auth::UserCredentials>,
    /// Send the password even without TLS (it crosses the network readable).
    pub allow_plaintext_password: bool,
}

impl ClientConfig {
    /// Settings for a comma-separated bootstrap list (`"h1:9092,h2:9092"`).
    pub fn new(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            tls: None,
            user: None,
            allow_plaintext_password: false,
        }
    }

    /// Calls as `user` (with its password).
    pub fn with_user(mut self, user: Option<rivulet_proto::user_auth::UserCredentials>) -> Self {
        self.user = user;
        self
    }

    /// Lets a password cross a plaintext connection.
    pub fn with_plaintext_password(mut self, allow: bool) -> Self {
        self.allow_plaintext_password = allow;
        self
    }

    /// Connects over TLS with `tls`.
    pub fn with_tls(mut self, tls: Option<rivulet_proto::tls::ClientTls>) -> Self {
        self.tls = tls;
        self
    }
}

/// A partition's leader as the client believes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leader {
    pub id: u64,
    pub address: String,
    pub epoch: u32,
}

#[derive(Debug, Default)]
struct Cache {
    /// Broker id → address.
    brokers: HashMap<u64, String>,
    /// Topic → its partitions, by index.
    topics: HashMap<String, Vec<PartitionInfo>>,
    cluster_id: String,
    /// Nodes named by a node that was not ready (bounded).
    hinted: Vec<String>,
    /// Topics the cluster said this user may not describe.
    unauthorized: std::collections::HashSet<String>,
}

/// How long a request keeps trying while every node it reaches is still
/// catching up with the metadata log (a restart takes a few seconds).
pub const NOT_READY_PATIENCE: Duration = Duration::from_secs(15);
/// Most nodes remembered from not-ready hints.
const MAX_HINTED_NODES: usize = 64;

/// Whether a failed call should be tried on another node: the node was
/// unreachable, too slow, or not ready.
fn passes_over(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    )
}

/// Whether `status` is the retriable "not ready" of a node still catching
/// up with the metadata log after a restart.
pub fn is_not_ready(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.metadata().get(NOT_READY_KEY).is_some()
}

/// The other nodes a not-ready answer suggests trying (bounded).
pub fn hinted_nodes(status: &tonic::Status) -> Vec<String> {
    status
        .metadata()
        .get(TRY_NODES_KEY)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty() && a.len() <= 255)
                .take(MAX_HINTED_NODES)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Shared cluster state; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    pub config: ClientConfig,
    cache: Arc<RwLock<Cache>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Cluster {
    pub fn new(config: ClientConfig) -> Result<Self> {
        if config.bootstrap.is_empty() {
            return Err(Error::Invalid(
                "no bootstrap address: give host:port of at least one node".into(),
            ));
        }
        Ok(Self {
            config,
            cache: Arc::default(),
            channels: Arc::default(),
        })
    }

    /// The (cached) channel to `addr`.
    pub fn channel(&self, addr: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let ch = rivulet_proto::tls::endpoint(
            addr,
            self.config.connect_timeout,
            self.config.tls.as_ref(),
        )
        .map_err(|e| Error::Invalid(format!("bad address {addr:?}: {e}")))?
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_lazy();
        if self.config.user.is_some()
            && self.config.tls.is_none()
            && !self.config.allow_plaintext_password
        {
            return Err(Error::Invalid(
                "refusing to send a password over a plaintext connection: connect with TLS \
                 (--tls-ca), or allow it explicitly (--allow-plaintext-password)"
                    .into(),
            ));
        }
        let ch = Channel::new(ch, self.config.user.as_ref());
        channels.insert(addr.to_owned(), ch.clone());
        Ok(ch)
    }

    pub fn broker(&self, addr: &str) -> Result<BrokerClient<Channel>> {
        Ok(BrokerClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn controller(&self, addr: &str) -> Result<ControllerClient<Channel>> {
        Ok(ControllerClient::new(self.channel(addr)?))
    }

    /// The bootstrap list, then known broker addresses, then nodes that a
    /// node still catching up named.
    pub fn candidates(&self) -> Vec<String> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = self.config.bootstrap.clone();
        for a in cache.brokers.values().chain(&cache.hinted) {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// Runs `call` against the candidate nodes in turn until one answers.
    /// A node that is unreachable, does not answer within the request
    /// deadline (a frozen process accepts connections and never answers) or
    /// is still catching up with the metadata log is passed over; the nodes
    /// a catching-up node names are tried too. When every node tried was
    /// catching up, the round is repeated for up to [`NOT_READY_PATIENCE`].
    /// Other refusals are returned at once. The error names every address
    /// tried and what each said.
    pub async fn on_any_node<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + NOT_READY_PATIENCE;
        let per_call = self.config.request_timeout.min(Duration::from_secs(10));
        loop {
            let mut candidates = self.candidates();
            let mut failures: Vec<String> = Vec::new();
            let mut not_ready = false;
            let mut i = 0;
            while let Some(addr) = candidates.get(i).cloned() {
                i += 1;
                let status = match tokio::time::timeout(per_call, call(addr.clone())).await {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(s)) => s,
                    Err(_) => {
                        tonic::Status::deadline_exceeded(format!("no answer within {per_call:?}"))
                    }
                };
                if !passes_over(&status) && rivulet_proto::tls::explain(&status).is_none() {
                    return Err(status.into());
                }
                if is_not_ready(&status) {
                    not_ready = true;
                    for other in hinted_nodes(&status) {
                        if !candidates.contains(&other) {
                            candidates.push(other.clone());
                            self.remember_hint(other);
                        }
                    }
                }
                debug!(%addr, error = %status.message(), "node passed over");
                let why = rivulet_proto::tls::explain(&status)
                    .map_or_else(|| status.message().to_owned(), str::to_owned);
                failures.push(format!("{addr}: {why}"));
            }
            if !not_ready || tokio::time::Instant::now() >= deadline {
                let tried = if failures.is_empty() {
                    "no node tried".to_owned()
                } else {
                    failures.join("; ")
                };
                return Err(Error::Unreachable(tried));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn remember_hint(&self, addr: String) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if !cache.hinted.contains(&addr) && cache.hinted.len() < MAX_HINTED_NODES {
            cache.hinted.push(addr);
        }
    }

    /// Asks nodes in turn for metadata of `topics` (empty: all) and caches it.
    pub async fn refresh(&self, topics: &[String]) -> Result<MetadataResponse> {
        let r = self
            .on_any_node(|addr| async move {
                let mut client = self
                    .broker(&addr)
                    .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                let mut req = tonic::Request::new(MetadataRequest {
                    topics: topics.to_vec(),
                });
                req.set_timeout(self.config.request_timeout.min(Duration::from_secs(5)));
                client.metadata(req).await.map(tonic::Response::into_inner)
            })
            .await?;
        self.absorb(&r);
        Ok(r)
    }

    fn absorb(&self, r: &MetadataResponse) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.cluster_id.clone_from(&r.cluster_id);
        for b in &r.brokers {
            cache.brokers.insert(b.id, b.address.clone());
        }
        for t in &r.topics {
            let mut parts = t.partitions.clone();
            parts.sort_by_key(|p| p.partition);
            cache.topics.insert(t.name.clone(), parts);
        }
        for name in &r.unknown_topics {
            cache.topics.remove(name);
            cache.unauthorized.remove(name);
        }
        for t in &r.topics {
            cache.unauthorized.remove(&t.name);
        }
        for name in &r.unauthorized_topics {
            cache.topics.remove(name);
            if cache.unauthorized.len() < 10_000 {
                cache.unauthorized.insert(name.clone());
            }
        }
    }

    /// Why `topic` is not in the cache: it does not exist, or this user may
    /// not describe it.
    pub fn missing_topic(&self, topic: &str) -> Error {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        if cache.unauthorized.contains(topic) {
            Error::TopicAuthorizationFailed(topic.to_owned())
        } else {
            Error::UnknownTopic(topic.to_owned())
        }
    }

    /// The partition count of `topic`, refreshing once if unknown.
    pub async fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(n) = self.cached_partition_count(topic) {
            return Ok(n);
        }
        self.refresh(&[topic.to_owned()]).await?;
        self.cached_partition_count(topic)
            .ok_or_else(|| self.missing_topic(topic))
    }

    pub fn cached_partition_count(&self, topic: &str) -> Option<u32> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache.topics.get(topic).map(|p| p.len() as u32)
    }

    /// The cached leader of `topic`/`partition`.
    pub fn leader(&self, topic: &str, partition: u32) -> Option<Leader> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let p = cache.topics.get(topic)?.get(partition as usize)?;
        let id = p.leader?;
        Some(Leader {
            id,
            address: cache.brokers.get(&id)?.clone(),
            epoch: p.leader_epoch,
        })
    }

    /// The leader of `topic`/`partition`, refreshing metadata if unknown.
    pub async fn leader_or_refresh(&self, topic: &str, partition: u32) -> Result<Leader> {
        if let Some(l) = self.leader(topic, partition) {
            return Ok(l);
        }
        self.refresh(&[topic.to_owned()]).await?;
        match self.cached_partition_count(topic) {
            None => Err(self.missing_topic(topic)),
            Some(n) if partition >= n => Err(Error::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            }),
            Some(_) => self.leader(topic, partition).ok_or_else(|| Error::Broker {
                code: rivulet_proto::v1::ErrorCode::LeaderNotAvailable,
                message: format!("{topic}-{partition} has no leader right now"),
            }),
        }
    }

    /// Applies a broker's hint about who leads now.
    pub fn apply_hint(&self, topic: &str, partition: u32, hint: &LeaderHint) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.brokers.insert(hint.id, hint.address.clone());
        if let Some(p) = cache
            .topics
            .get_mut(topic)
            .and_then(|ps| ps.get_mut(partition as usize))
        {
            if hint.leader_epoch >= p.leader_epoch {
                p.leader = Some(hint.id);
                p.leader_epoch = hint.leader_epoch;
            }
        }
    }

    /// Forgets the leader of `topic`/`partition` so the next lookup refreshes.
    pub fn invalidate(&self, topic: &str, partition: u32) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache
            .topics
            .get_mut(topic)
            .and_then(|ps| ps.get_mut(partition as usize))
        {
            p.leader = None;
        }
    }
}
