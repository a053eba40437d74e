//! What a client knows about the cluster: the bootstrap nodes, one lazily
//! connected gRPC channel per broker address, and a metadata cache (brokers,
//! partition leaders) refreshed on demand and corrected by leader hints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rivulet_proto::v1::broker_client::BrokerClient;
use rivulet_proto::v1::controller_client::ControllerClient;
use rivulet_proto::v1::{LeaderHint, MetadataRequest, MetadataResponse, PartitionInfo};
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::error::{Error, Result};

/// Largest message the client sends or accepts.
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Connection settings shared by producers, consumers and admins.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of one or more nodes; any node answers metadata.
    pub bootstrap: Vec<String>,
    /// TCP connect deadline.
    pub connect_timeout: Duration,
    /// Deadline of one request (long polls add their wait to it).
    pub request_timeout: Duration,
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
        }
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
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Invalid(format!("bad address {addr:?}: {e}")))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
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

    /// Known broker addresses first, then the bootstrap list.
    pub fn candidates(&self) -> Vec<String> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = self.config.bootstrap.clone();
        for a in cache.brokers.values() {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// Asks nodes in turn for metadata of `topics` (empty: all) and caches it.
    pub async fn refresh(&self, topics: &[String]) -> Result<MetadataResponse> {
        let mut last = String::from("no node tried");
        for addr in self.candidates() {
            let mut client = self.broker(&addr)?;
            let mut req = tonic::Request::new(MetadataRequest {
                topics: topics.to_vec(),
            });
            req.set_timeout(self.config.request_timeout.min(Duration::from_secs(5)));
            match client.metadata(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    self.absorb(&r);
                    return Ok(r);
                }
                Err(e) => {
                    debug!(%addr, error = %e.message(), "metadata request failed");
                    last = format!("{addr}: {}", e.message());
                }
            }
        }
        Err(Error::Unreachable(last))
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
        }
    }

    /// The partition count of `topic`, refreshing once if unknown.
    pub async fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(n) = self.cached_partition_count(topic) {
            return Ok(n);
        }
        self.refresh(&[topic.to_owned()]).await?;
        self.cached_partition_count(topic)
            .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))
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
            None => Err(Error::UnknownTopic(topic.to_owned())),
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
