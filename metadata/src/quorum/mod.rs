//! The controller quorum at run time: the openraft node, proposals by the
//! active controller, broker liveness, and the gRPC services around them.
//!
//! ```text
//!            admin / broker RPC (any node)
//!                      │
//!        ┌─────────────▼─────────────┐   not the leader: forward to it
//!        │ ControllerRpc (service)   │──────────────────────────────► leader's ControllerRpc
//!        └─────────────┬─────────────┘
//!                      │ Quorum::propose(decision)
//!        ┌─────────────▼─────────────┐
//!        │ Quorum (active controller)│  serialize decisions, read the applied image,
//!        │   controller::decide(img) │  commit the records as ONE Raft entry
//!        └─────────────┬─────────────┘
//!                      │ client_write
//!        ┌─────────────▼─────────────┐      Raft RPCs (RaftRpc / RaftPeer)
//!        │ openraft + sled store     │◄──────────────────────────────► peers
//!        └─────────────┬─────────────┘
//!                      │ apply(record) on every node
//!                      ▼
//!          watch<Arc<MetadataImage>> ──► brokers, reads (DescribeCluster/Topics)
//! ```
//!
//! Timers (broker leases, preferred-leader elections) run only on the active
//! controller, outside the state machine, and act only through proposals.
//! A node that becomes active gives every broker a fresh lease before it
//! fences anyone, so a leadership change never fences live brokers.

mod liveness;
mod network;
mod node;
mod service;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use rivulet_proto::node_auth::NodeCredentials;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::controller::ControllerResult;
use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::raft::{open_store, MetadataCommand, NodeId, Raft, StoreError};

pub use liveness::run_controller_duties;
pub use network::{channel, RaftNetworkClients, RaftRpc};
pub use node::ControllerNode;
pub use service::{broker_info, partition_info, topic_info, ControllerRpc, CATCH_UP_TIMEOUT};

/// Timing of the quorum and of broker liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumTiming {
    /// Raft leader heartbeat.
    pub raft_heartbeat_ms: u64,
    /// Raft election timeout, lower bound.
    pub election_timeout_min_ms: u64,
    /// Raft election timeout, upper bound.
    pub election_timeout_max_ms: u64,
    /// How often a broker heartbeats the active controller.
    pub broker_heartbeat_ms: u64,
    /// A broker not heard from for this long is fenced.
    pub broker_lease_ms: u64,
    /// When a broker's heartbeat stream breaks, its lease is cut to this.
    pub broker_grace_ms: u64,
    /// How often the active controller moves leadership back to preferred
    /// replicas; `None` turns preferred-leader rebalancing off.
    pub preferred_leader_check_ms: Option<u64>,
    /// Snapshot the image after this many log entries; the log before the
    /// snapshot is then purged (keeping `logs_kept_after_snapshot`).
    pub snapshot_every_entries: u64,
    /// Entries kept in the log after a snapshot, so a briefly lagging node
    /// catches up from the log instead of a snapshot.
    pub logs_kept_after_snapshot: u64,
}

impl QuorumTiming {
    /// Default broker lease, ms (KRaft's `broker.session.timeout.ms` is 9 s;
    /// ours fences a dead broker, and fails its partitions over, sooner).
    pub const DEFAULT_BROKER_LEASE_MS: u64 = 1_500;
    /// Broker leases the node accepts, ms: at least two heartbeats fit in
    /// the shortest.
    pub const BROKER_LEASE_RANGE_MS: std::ops::RangeInclusive<u64> = 500..=u64::MAX;
    /// Default preferred-leader check interval, ms.
    pub const DEFAULT_PREFERRED_LEADER_CHECK_MS: u64 = 5_000;

    /// Checks the timing: a broker lease outlives two heartbeats, the
    /// election timeout outlives two Raft heartbeats and its range is not
    /// empty.
    pub fn validate(&self) -> Result<(), rivulet_common::config::InvalidSetting> {
        use rivulet_common::config::{check_range, InvalidSetting};
        check_range(
            "broker-lease-ms",
            self.broker_lease_ms,
            Self::BROKER_LEASE_RANGE_MS,
        )?;
        let invalid = |name, value: u64, rule: String| InvalidSetting {
            name,
            value: value.to_string(),
            rule,
        };
        if self.broker_lease_ms < 2 * self.broker_heartbeat_ms {
            return Err(invalid(
                "broker-lease-ms",
                self.broker_lease_ms,
                format!(
                    "must be at least two broker heartbeats ({} ms)",
                    2 * self.broker_heartbeat_ms
                ),
            ));
        }
        if self.election_timeout_min_ms < 2 * self.raft_heartbeat_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            return Err(invalid(
                "election-timeout-min-ms",
                self.election_timeout_min_ms,
                format!(
                    "must be at least two Raft heartbeats ({} ms) and below the maximum ({} ms)",
                    2 * self.raft_heartbeat_ms,
                    self.election_timeout_max_ms
                ),
            ));
        }
        Ok(())
    }
}

impl Default for QuorumTiming {
    fn default() -> Self {
        Self {
            raft_heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            broker_heartbeat_ms: 250,
            broker_lease_ms: Self::DEFAULT_BROKER_LEASE_MS,
            broker_grace_ms: 300,
            preferred_leader_check_ms: Some(Self::DEFAULT_PREFERRED_LEADER_CHECK_MS),
            snapshot_every_entries: 5000,
            logs_kept_after_snapshot: 1000,
        }
    }
}

/// What a node needs to take part in the quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// The `host:port` other nodes reach this node's gRPC port at.
    pub advertise: String,
    /// The voters: id → `host:port`. A node not listed joins as a learner.
    pub voters: BTreeMap<NodeId, String>,
    /// The node's data directory; the Raft store lives in `<data_dir>/metadata`.
    pub data_dir: PathBuf,
    /// The cluster id; by default derived from the voter list, so every voter
    /// agrees without configuration.
    pub cluster_id: String,
    /// Timers.
    pub timing: QuorumTiming,
    /// Bounds on the connections the node's port holds.
    pub edge: crate::edge::EdgeLimits,
    /// The cluster secret node-to-node calls prove they hold; `None`
    /// leaves them unauthenticated (a WARN at start).
    pub cluster_secret: Option<rivulet_proto::node_auth::ClusterSecret>,
    /// TLS for the node's listener and its calls to other nodes; `None`
    /// serves and calls in plaintext.
    pub tls: Option<rivulet_proto::tls::NodeTls>,
    /// Users, ACL enforcement, initial users.
    pub security: crate::security::SecurityConfig,
}

/// Parses `--voters`: `1@host:port,2@host:port,...`.
pub fn parse_voters(s: &str) -> Result<BTreeMap<NodeId, String>, QuorumError> {
    let mut voters = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || QuorumError::InvalidVoters(format!("{part:?} is not id@host:port"));
        let (id, addr) = part.split_once('@').ok_or_else(bad)?;
        let id: NodeId = id.parse().map_err(|_| bad())?;
        if !addr.contains(':') || addr.ends_with(':') {
            return Err(bad());
        }
        if voters.insert(id, addr.to_owned()).is_some() {
            return Err(QuorumError::InvalidVoters(format!(
                "voter {id} is listed twice"
            )));
        }
    }
    if voters.is_empty() {
        return Err(QuorumError::InvalidVoters("no voters given".into()));
    }
    Ok(voters)
}

/// A cluster id every voter computes alike from the voter list.
pub fn default_cluster_id(voters: &BTreeMap<NodeId, String>) -> String {
    // FNV-1a over "id@addr," in id order.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, addr) in voters {
        for b in format!("{id}@{addr},").bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("rivulet-{h:016x}")
}

/// Whether another voter reports a known leader: the quorum exists already.
async fn cluster_already_formed(config: &QuorumConfig, credentials: &NodeCredentials) -> bool {
    use rivulet_proto::v1::controller_client::ControllerClient;
    use rivulet_proto::v1::DescribeClusterRequest;
    for (id, addr) in &config.voters {
        if *id == config.node_id {
            continue;
        }
        let Ok(channel) =
            rivulet_proto::node_auth::node_channel(addr, Duration::from_millis(300), credentials)
        else {
            continue;
        };
        let mut client = ControllerClient::new(channel);
        let mut req = tonic::Request::new(DescribeClusterRequest {});
        req.set_timeout(Duration::from_millis(500));
        let call = tokio::time::timeout(Duration::from_millis(500), client.describe_cluster(req));
        if let Ok(Ok(r)) = call.await {
            if r.get_ref().controller_leader.is_some() {
                return true;
            }
        }
    }
    false
}

/// Whether this node may answer clients' reads yet (KIP-631). The node's
/// broker knows (its registration must be in this node's image); the
/// composition root hands it to [`ControllerRpc::server`].
pub trait Readiness: Send + Sync + std::fmt::Debug + 'static {
    /// `Ok` when ready, else the retriable `UNAVAILABLE` to answer with.
    #[allow(clippy::result_large_err)]
    fn check_ready(&self) -> Result<(), tonic::Status>;
}

/// Why a quorum operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// `--voters` does not parse.
    #[error("invalid --voters: {0}")]
    InvalidVoters(String),
    /// The Raft store could not be opened.
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
    /// This node is not the active controller.
    #[error("not the active controller (leader: {})", leader.map_or("unknown".to_owned(), |l| l.to_string()))]
    NotLeader {
        /// The leader as this node knows it.
        leader: Option<NodeId>,
    },
    /// The decision refused the request.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The node could not be assembled (a service failed to build).
    #[error("cannot start the node: {0}")]
    Startup(String),
    /// Raft failed (shut down, fatal storage error, ...).
    #[error("raft: {0}")]
    Raft(String),
}

/// One node's membership in the controller quorum.
pub struct Quorum {
    /// Ids, addresses, timers.
    config: QuorumConfig,
    /// The openraft node.
    raft: Raft,
    /// The applied image, published by the state machine.
    image: watch::Receiver<Arc<MetadataImage>>,
    /// Decisions are made one at a time, each against the image that holds
    /// every earlier decision.
    propose_lock: tokio::sync::Mutex<()>,
    /// Broker leases (meaningful on the active controller only).
    leases: std::sync::Mutex<liveness::Leases>,
    /// How this node proves itself to other nodes.
    credentials: NodeCredentials,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("node_id", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

impl Quorum {
    /// Opens the store and starts the Raft node. A voter with empty storage
    /// initializes the voter membership (every voter proposes the same one,
    /// which openraft allows); a restarted node just rejoins.
    pub async fn start(config: QuorumConfig) -> Result<Arc<Self>, QuorumError> {
        let (log_store, state_machine) =
            open_store(&config.data_dir.join("metadata"), &config.cluster_id)?;
        let image = state_machine.subscribe();
        let t = &config.timing;
        let raft_config = openraft::Config {
            cluster_name: config.cluster_id.clone(),
            heartbeat_interval: t.raft_heartbeat_ms,
            election_timeout_min: t.election_timeout_min_ms,
            election_timeout_max: t.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every_entries),
            max_in_snapshot_log_to_keep: t.logs_kept_after_snapshot,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let credentials = NodeCredentials::with_tls(
            config.node_id,
            config.cluster_secret.clone(),
            config.tls.as_ref().map(|t| t.client.clone()),
        );
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            RaftNetworkClients::new(credentials.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| QuorumError::Raft(e.to_string()))?;

        if config.voters.contains_key(&config.node_id) {
            let initialized = raft
                .is_initialized()
                .await
                .map_err(|e| QuorumError::Raft(e.to_string()))?;
            if !initialized && cluster_already_formed(&config, &credentials).await {
                // Disk loss: this voter's store is empty but its peers run an
                // established quorum. Initializing would campaign from scratch;
                // instead it waits for the leader to replicate to it (openraft's
                // `loosen-follower-log-revert` lets the leader restart
                // replication to a follower whose log went backwards).
                warn!(
                    "this voter's metadata store is empty but the quorum already has a leader: \
                     treating it as a lost disk and catching up from the leader"
                );
            } else if !initialized {
                let members: BTreeMap<NodeId, BasicNode> = config
                    .voters
                    .iter()
                    .map(|(id, addr)| (*id, BasicNode::new(addr)))
                    .collect();
                info!(voters = ?config.voters, "initializing the metadata quorum");
                if let Err(e) = raft.initialize(members).await {
                    // Another voter's initialization reached us first.
                    warn!(error = %e, "quorum initialization skipped");
                }
            }
        }
        Ok(Arc::new(Self {
            config,
            raft,
            image,
            propose_lock: tokio::sync::Mutex::new(()),
            leases: std::sync::Mutex::new(liveness::Leases::default()),
            credentials,
        }))
    }

    /// Waits (up to `timeout`) until this node's image holds everything the
    /// active controller had committed when asked, so a read right after a
    /// write made through another node sees it. Returns whether it did.
    pub async fn catch_up_with_controller(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        if self.is_leader() {
            return tokio::time::timeout(timeout, self.raft.ensure_linearizable())
                .await
                .is_ok_and(|r| r.is_ok());
        }
        let Some((_, addr)) = self.leader() else {
            return false;
        };
        use rivulet_proto::v1::controller_client::ControllerClient;
        use rivulet_proto::v1::DescribeClusterRequest;
        let Ok(channel) = rivulet_proto::node_auth::node_channel(
            &addr,
            Duration::from_millis(300),
            &self.credentials,
        ) else {
            return false;
        };
        let mut req = tonic::Request::new(DescribeClusterRequest {});
        req.set_timeout(timeout);
        req.metadata_mut().insert(
            service::FORWARDED,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        let Ok(Ok(answer)) = tokio::time::timeout(
            timeout,
            ControllerClient::new(channel).describe_cluster(req),
        )
        .await
        else {
            return false;
        };
        let target = answer.into_inner().metadata_offset;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.wait_for_image(left, |img| img.metadata_offset() >= target)
            .await
            .is_some()
    }

    /// Joins the quorum as a learner, unless this node is a voter: the
    /// leader must add a learner before the metadata log reaches it. Returns
    /// once this node is a member, or when `cancel` fires.
    pub async fn join_as_learner(&self, cancel: &tokio_util::sync::CancellationToken) {
        use rivulet_proto::v1::controller_client::ControllerClient;
        use rivulet_proto::v1::AddLearnerRequest;
        const RETRY: Duration = Duration::from_millis(200);
        let id = self.config.node_id;
        if self.config.voters.contains_key(&id) {
            return;
        }
        let mut attempt = 0usize;
        loop {
            let member = self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&id)
                .is_some();
            if member {
                return;
            }
            attempt += 1;
            let target = self
                .leader()
                .map_or_else(|| self.any_voter(attempt), |(_, addr)| Some(addr));
            let channel = target.and_then(|t| {
                rivulet_proto::node_auth::node_channel(
                    &t,
                    rivulet_proto::NODE_CONNECT_TIMEOUT,
                    &self.credentials,
                )
                .ok()
            });
            if let Some(channel) = channel {
                let req = AddLearnerRequest {
                    node_id: id,
                    address: self.config.advertise.clone(),
                };
                let mut client = ControllerClient::new(channel);
                let call = client.add_learner(req);
                match tokio::time::timeout(Duration::from_secs(5), call).await {
                    Ok(Ok(_)) => info!("joined the metadata quorum as a learner"),
                    Ok(Err(e)) => tracing::debug!(error = %e, "add learner failed; retrying"),
                    Err(_) => tracing::debug!("add learner timed out; retrying"),
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// The `attempt`-th voter's address, round robin.
    pub fn any_voter(&self, attempt: usize) -> Option<String> {
        let voters: Vec<&String> = self.config.voters.values().collect();
        (!voters.is_empty()).then(|| voters[attempt % voters.len()].clone())
    }

    /// Every other member's address (voters and learners).
    pub fn peers(&self) -> Vec<String> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.config.node_id)
            .map(|(_, n)| n.addr.clone())
            .collect()
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// The configuration the quorum was started with.
    pub fn config(&self) -> &QuorumConfig {
        &self.config
    }

    /// How this node proves itself to other nodes: the cluster secret's
    /// proof and its TLS certificate, where configured.
    pub fn credentials(&self) -> &NodeCredentials {
        &self.credentials
    }

    /// The Raft node (for its gRPC service and metrics).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The current applied metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Every new image, as it is applied.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    /// The active controller as this node knows it: id and address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// Whether this node is the active controller.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Makes a controller decision and commits its records, on the active
    /// controller. `decide` sees an image holding every committed entry.
    pub async fn propose<R>(
        &self,
        decide: impl FnOnce(&MetadataImage) -> Result<ControllerResult<R>, ControllerError>,
    ) -> Result<R, QuorumError> {
        let not_leader = |leader| QuorumError::NotLeader { leader };
        if !self.is_leader() {
            return Err(not_leader(self.leader().map(|l| l.0)));
        }
        let _turn = self.propose_lock.lock().await;
        self.raft.ensure_linearizable().await.map_err(|e| match e {
            RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)) => {
                not_leader(f.leader_id)
            }
            other => QuorumError::Raft(other.to_string()),
        })?;
        let image = self.image();
        let ControllerResult { records, response } = decide(&image)?;
        if records.is_empty() {
            return Ok(response);
        }
        self.raft
            .client_write(MetadataCommand::new(records))
            .await
            .map_err(|e| match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    not_leader(f.leader_id)
                }
                other => QuorumError::Raft(other.to_string()),
            })?;
        Ok(response)
    }

    /// Waits until the applied image satisfies `done`, or `timeout` passes.
    pub async fn wait_for_image(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&MetadataImage) -> bool,
    ) -> Option<Arc<MetadataImage>> {
        let mut rx = self.subscribe();
        let wait = async {
            loop {
                let img = rx.borrow_and_update().clone();
                if done(&img) {
                    return Some(img);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Stops the Raft node.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "raft shutdown failed");
        }
    }
}

#[cfg(test)]
mod tests;
