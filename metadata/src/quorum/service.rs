//! `rivulet.v1.Controller`, the quorum's gRPC service.
//!
//! Writes are decided on the active controller: a node that is not active
//! forwards the request to the one it believes is (once — a forwarded request
//! is never forwarded again, so two nodes with stale views cannot bounce it
//! forever; the caller gets `UNAVAILABLE` and retries). Reads come from the
//! receiving node's image. Refusals travel as `ErrorCode`s in the response;
//! gRPC status codes are for whole-request problems (no controller, bad
//! arguments, shutdown).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet_proto::node_auth::{node_channel, CallerNode, NodeChannel};
use rivulet_proto::v1 as pb;
use rivulet_proto::v1::controller_client::ControllerClient;
use rivulet_proto::v1::controller_server::{Controller, ControllerServer};
use rivulet_proto::v1::{
    AddLearnerRequest, AddLearnerResponse, AllocateProducerIdsRequest, AllocateProducerIdsResponse,
    AlterPartitionRequest, AlterPartitionResponse, AlterTopicConfigRequest,
    AlterTopicConfigResponse, ConfigEntry, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicRequest, CreateTopicResponse, DeleteTopicRequest, DeleteTopicResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeTopicsRequest, DescribeTopicsResponse,
    ElectLeadersRequest, ElectLeadersResponse, ErrorCode, HeartbeatRequest, HeartbeatResponse,
    RegisterBrokerRequest, RegisterBrokerResponse, RemoveLearnerRequest, RemoveLearnerResponse,
    VoterInfo,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::{Quorum, QuorumError};
use crate::controller::{self, AlterPartitionRequest as Alter};
use crate::ids::{BrokerId, TopicId, TopicPartition};
use crate::security::{Access, Operation, ResourceType};

/// Metadata key marking a request a node already forwarded (and a
/// node-to-node catch-up check).
pub(crate) const FORWARDED: &str = "x-rivulet-forwarded";

/// How long a read for an unknown name waits to catch up with the active
/// controller before answering "unknown".
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);

/// A quorum failure that is not a refusal becomes a gRPC status.
fn status(e: &QuorumError) -> Status {
    match e {
        QuorumError::NotLeader { .. } => Status::unavailable(format!("{e}; retry")),
        QuorumError::Controller(c) => Status::failed_precondition(c.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

/// Splits a proposal's outcome into (code, message, value).
fn outcome<T>(r: Result<T, QuorumError>) -> Result<(ErrorCode, String, Option<T>), Status> {
    match r {
        Ok(v) => Ok((ErrorCode::None, String::new(), Some(v))),
        Err(QuorumError::Controller(c)) => Ok((error_code(c.kind()), c.to_string(), None)),
        Err(e) => Err(status(&e)),
    }
}

pub use crate::convert::{broker_info, error_code, partition_info, topic_info};
use crate::convert::{config_pairs as pairs, partition_refs as refs};

/// The service; cheap to clone.
#[derive(Debug, Clone)]
pub struct ControllerRpc {
    /// The local quorum member.
    quorum: Arc<Quorum>,
    /// Whether this node may answer clients' reads yet.
    ready: Arc<dyn super::Readiness>,
    /// Clients to other nodes, by address, for forwarding.
    peers: Arc<Mutex<HashMap<String, ControllerClient<NodeChannel>>>>,
}

impl ControllerRpc {
    /// The tonic service for `quorum`; reads wait for `ready`.
    pub fn server(quorum: Arc<Quorum>, ready: Arc<dyn super::Readiness>) -> ControllerServer<Self> {
        ControllerServer::new(Self {
            quorum,
            ready,
            peers: Arc::default(),
        })
    }

    /// A client to the active controller, unless this node is it. Errors if
    /// the request was already forwarded or no leader is known.
    fn forward_target<T>(
        &self,
        req: &Request<T>,
    ) -> Result<Option<ControllerClient<NodeChannel>>, Status> {
        if self.quorum.is_leader() {
            return Ok(None);
        }
        if req.metadata().contains_key(FORWARDED) {
            return Err(Status::unavailable(
                "not the active controller (request already forwarded once); retry",
            ));
        }
        let Some((id, addr)) = self.quorum.leader() else {
            return Err(Status::unavailable("no active controller right now; retry"));
        };
        if id == self.quorum.node_id() {
            // Elected but not yet serving as leader.
            return Err(Status::unavailable(
                "the active controller is starting; retry",
            ));
        }
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = peers.get(&addr) {
            return Ok(Some(c.clone()));
        }
        let channel = node_channel(
            &addr,
            rivulet_proto::NODE_CONNECT_TIMEOUT,
            self.quorum.credentials(),
        )
        .map_err(|e| Status::unavailable(format!("bad controller address {addr}: {e}")))?;
        let client = ControllerClient::new(channel);
        peers.insert(addr, client.clone());
        Ok(Some(client))
    }
}

impl ControllerRpc {
    /// `PERMISSION_DENIED` unless the caller may do `op` on the cluster.
    #[allow(clippy::result_large_err)]
    fn on_cluster<T>(&self, req: &Request<T>, op: Operation) -> Result<(), Status> {
        Access::of(req).require(
            &self.quorum.image(),
            op,
            ResourceType::Cluster,
            crate::security::CLUSTER_RESOURCE,
        )
    }

    /// `PERMISSION_DENIED` unless the caller may do `op` on topic `name`.
    #[allow(clippy::result_large_err)]
    fn on_topic<T>(&self, req: &Request<T>, op: Operation, name: &str) -> Result<(), Status> {
        Access::of(req).require(&self.quorum.image(), op, ResourceType::Topic, name)
    }
}

/// A node-only call's verified caller may act only for itself: no node can
/// register, heartbeat, change ISRs or join as another. A call another node
/// forwarded was checked where it arrived. Without a cluster secret there
/// is no verified caller and nothing to check (the node warned at start).
#[allow(clippy::result_large_err)]
fn check_acting_for<T>(req: &Request<T>, claimed: u64, what: &str) -> Result<(), Status> {
    match req.extensions().get::<CallerNode>() {
        Some(CallerNode(caller))
            if *caller != claimed && !req.metadata().contains_key(FORWARDED) =>
        {
            Err(Status::permission_denied(format!(
                "node {caller} may not {what} for node {claimed}"
            )))
        }
        _ => Ok(()),
    }
}

/// Forwards `$req` with `$method` when this node is not the active controller.
macro_rules! forward_or_handle {
    ($self:ident, $req:ident, $method:ident) => {
        if let Some(mut client) = $self.forward_target(&$req)? {
            let mut fwd = Request::new($req.into_inner());
            fwd.metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
            return client.$method(fwd).await;
        }
    };
}

/// [`forward_or_handle!`] for the admin writes, which a client may read back
/// from the node it wrote through: a forwarded write is answered only once
/// this node has applied it too (read-your-writes, as KIP-631 gives the
/// topics a client creates), so `user create` then a call as that user, or
/// `acl create` then the call it allows, work against the same node.
macro_rules! forward_admin_or_handle {
    ($self:ident, $req:ident, $method:ident) => {
        if let Some(mut client) = $self.forward_target(&$req)? {
            let mut fwd = Request::new($req.into_inner());
            fwd.metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
            let answer = client.$method(fwd).await;
            if answer.is_ok() {
                $self
                    .quorum
                    .catch_up_with_controller(CATCH_UP_TIMEOUT)
                    .await;
            }
            return answer;
        }
    };
}

type HeartbeatStream = Pin<Box<dyn Stream<Item = Result<HeartbeatResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Controller for ControllerRpc {
    async fn register_broker(
        &self,
        request: Request<RegisterBrokerRequest>,
    ) -> Result<Response<RegisterBrokerResponse>, Status> {
        check_acting_for(&request, request.get_ref().broker_id, "register a broker")?;
        forward_or_handle!(self, request, register_broker);
        let r = request.into_inner();
        if r.address.is_empty() {
            return Err(Status::invalid_argument("address is required"));
        }
        if r.directory_id.len() > 64 {
            return Err(Status::invalid_argument(
                "directory_id is longer than 64 characters",
            ));
        }
        if r.kafka_address.len() > 255 {
            return Err(Status::invalid_argument(
                "kafka_address is longer than 255 characters",
            ));
        }
        let id = BrokerId(r.broker_id);
        let request = controller::BrokerRegistrationRequest {
            id,
            address: r.address.clone(),
            rack: r.rack.clone(),
            directory_id: (!r.directory_id.is_empty()).then(|| r.directory_id.clone()),
            log_fsynced: r.log_fsynced,
            kafka_address: (!r.kafka_address.is_empty()).then(|| r.kafka_address.clone()),
        };
        let res = self
            .quorum
            .propose(|img| Ok(controller::register_broker(img, request)))
            .await;
        let (error_code, error_message, v) = outcome(res)?;
        if let Some(v) = &v {
            if v.storage_replaced {
                warn!(
                    broker = id.0,
                    directory_id = %r.directory_id,
                    partitions = v.changed.len(),
                    "broker registered with a new log directory: its replicas are empty, \
                     out of every ISR and ELR until they caught up"
                );
            }
            info!(broker = id.0, broker_epoch = v.broker_epoch, address = %r.address, "registered broker (catching up)");
            let until =
                Instant::now() + Duration::from_millis(self.quorum.config.timing.broker_lease_ms);
            self.quorum
                .leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .renew(id, until);
        }
        let registered_offset = v
            .as_ref()
            .and_then(|v| {
                self.quorum
                    .image()
                    .broker(id)
                    .filter(|b| b.broker_epoch == v.broker_epoch)
                    .map(|b| b.registered_offset)
            })
            .unwrap_or(0);
        Ok(Response::new(RegisterBrokerResponse {
            error_code: error_code.into(),
            error_message,
            broker_epoch: v.map_or(0, |v| v.broker_epoch),
            metadata_offset: registered_offset,
        }))
    }

    type HeartbeatStream = HeartbeatStream;

    async fn heartbeat(
        &self,
        request: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let caller = request.extensions().get::<CallerNode>().copied();
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let quorum = Arc::clone(&self.quorum);
        tokio::spawn(async move {
            let timing = quorum.config.timing.clone();
            let lease = Duration::from_millis(timing.broker_lease_ms);
            let grace = Duration::from_millis(timing.broker_grace_ms);
            let mut last_broker = None;
            while let Some(Ok(hb)) = inbound.next().await {
                if let Some(CallerNode(caller)) = caller.filter(|c| c.0 != hb.broker_id) {
                    warn!(
                        caller,
                        broker = hb.broker_id,
                        "refused a heartbeat sent for another node"
                    );
                    let _ = tx
                        .send(Err(Status::permission_denied(format!(
                            "node {caller} may not heartbeat for node {}",
                            hb.broker_id
                        ))))
                        .await;
                    break;
                }
                let id = BrokerId(hb.broker_id);
                last_broker = Some(id);
                let reply =
                    heartbeat_reply(&quorum, id, hb.broker_epoch, hb.metadata_offset, lease).await;
                if reply.error_code == i32::from(ErrorCode::None) && hb.shutting_down {
                    match quorum
                        .propose(|img| controller::shut_down_broker(img, id))
                        .await
                    {
                        Ok(moved) if !moved.is_empty() => {
                            info!(
                                broker = id.0,
                                partitions = moved.len(),
                                "controlled shutdown: moved leaderships and ISR memberships away"
                            );
                        }
                        Ok(_) => {}
                        Err(e) => {
                            debug!(broker = id.0, error = %e, "controlled shutdown not decided yet")
                        }
                    }
                }
                if reply.error_code == i32::from(ErrorCode::None) && !hb.storage_failed.is_empty() {
                    let failed: Vec<(String, u32)> = hb
                        .storage_failed
                        .iter()
                        .map(|r| (r.topic.clone(), r.partition))
                        .collect();
                    match quorum
                        .propose(|img| controller::drop_failed_replicas(img, id, &failed))
                        .await
                    {
                        Ok(moved) if !moved.is_empty() => {
                            warn!(broker = id.0, partitions = ?moved, "moved replicas off a broker that cannot write them");
                        }
                        Ok(_) => {}
                        Err(e) => {
                            debug!(broker = id.0, error = %e, "cannot move failed replicas yet")
                        }
                    }
                }
                let not_controller = reply.error_code == i32::from(ErrorCode::NotController);
                if tx.send(Ok(reply)).await.is_err() || not_controller {
                    break;
                }
            }
            if let Some(id) = last_broker {
                debug!(
                    broker = id.0,
                    "heartbeat stream closed; lease cut to the grace period"
                );
                quorum
                    .leases
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .shorten(id, Instant::now() + grace);
                if let Some(b) = quorum.image().broker(id) {
                    super::liveness::probe_dead(Arc::clone(&quorum), id, b.address.clone());
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn alter_partition(
        &self,
        request: Request<AlterPartitionRequest>,
    ) -> Result<Response<AlterPartitionResponse>, Status> {
        check_acting_for(&request, request.get_ref().broker_id, "change an ISR")?;
        forward_or_handle!(self, request, alter_partition);
        let r = request.into_inner();
        let topic_id: TopicId = r
            .topic_id
            .parse()
            .map_err(|_| Status::invalid_argument(format!("bad topic id {:?}", r.topic_id)))?;
        let broker = BrokerId(r.broker_id);
        let req = Alter {
            topic: r.topic.clone(),
            topic_id,
            partition: r.partition,
            broker_id: broker,
            leader_epoch: r.leader_epoch,
            partition_epoch: r.partition_epoch,
            new_isr: r.new_isr.iter().map(|b| BrokerId(*b)).collect(),
        };
        let broker_epoch = r.broker_epoch;
        let res = self
            .quorum
            .propose(|img| {
                controller::check_broker_epoch(img, broker, broker_epoch)?;
                controller::alter_partition(img, req)
            })
            .await;
        let (error_code, error_message, v) = outcome(res)?;
        let partition = match v {
            Some(p) => Some(partition_info(&p)),
            None => self
                .quorum
                .image()
                .partition(&r.topic, r.partition)
                .map(partition_info),
        };
        Ok(Response::new(AlterPartitionResponse {
            error_code: error_code.into(),
            error_message,
            partition,
        }))
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<AllocateProducerIdsRequest>,
    ) -> Result<Response<AllocateProducerIdsResponse>, Status> {
        check_acting_for(&request, request.get_ref().broker_id, "take producer ids")?;
        forward_or_handle!(self, request, allocate_producer_ids);
        let r = request.into_inner();
        let res = self
            .quorum
            .propose(|img| {
                controller::allocate_producer_ids(img, BrokerId(r.broker_id), r.broker_epoch)
            })
            .await;
        let (error_code, error_message, block) = outcome(res)?;
        if let Some(b) = block {
            info!(
                broker = r.broker_id,
                first_id = b.first_id,
                count = b.count,
                "allocated producer ids"
            );
        }
        Ok(Response::new(AllocateProducerIdsResponse {
            error_code: error_code.into(),
            error_message,
            first_id: block.map_or(0, |b| b.first_id),
            count: block.map_or(0, |b| b.count),
        }))
    }

    async fn add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<AddLearnerResponse>, Status> {
        check_acting_for(&request, request.get_ref().node_id, "join the quorum")?;
        forward_or_handle!(self, request, add_learner);
        let r = request.into_inner();
        if r.address.is_empty() {
            return Err(Status::invalid_argument("address is required"));
        }
        info!(node = r.node_id, address = %r.address, "adding learner");
        self.quorum
            .raft
            .add_learner(r.node_id, openraft::BasicNode::new(&r.address), false)
            .await
            .map_err(|e| Status::unavailable(format!("cannot add learner: {e}")))?;
        Ok(Response::new(AddLearnerResponse {
            error_code: ErrorCode::None.into(),
            error_message: String::new(),
        }))
    }

    async fn remove_learner(
        &self,
        request: Request<RemoveLearnerRequest>,
    ) -> Result<Response<RemoveLearnerResponse>, Status> {
        self.on_cluster(&request, Operation::Alter)?;
        forward_admin_or_handle!(self, request, remove_learner);
        let id = request.into_inner().node_id;
        let refuse = |code: ErrorCode, message: String| {
            Ok(Response::new(RemoveLearnerResponse {
                error_code: code.into(),
                error_message: message,
            }))
        };
        let membership = self
            .quorum
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        if membership.voter_ids().any(|v| v == id) {
            return refuse(
                ErrorCode::InvalidRequest,
                format!("node {id} is a voter; only learners can be removed"),
            );
        }
        if membership.get_node(&id).is_none() {
            return refuse(
                ErrorCode::BrokerNotAvailable,
                format!("node {id} is not a learner of the quorum"),
            );
        }
        // A running node cut off from the metadata log would keep serving
        // (and leading by) an image that no longer changes.
        if self.quorum.image().is_live(BrokerId(id)) {
            return refuse(
                ErrorCode::InvalidRequest,
                format!("node {id} is running (its broker is live); stop it first"),
            );
        }
        let mut gone = std::collections::BTreeSet::new();
        gone.insert(id);
        self.quorum
            .raft
            .change_membership(openraft::ChangeMembers::RemoveNodes(gone), false)
            .await
            .map_err(|e| Status::unavailable(format!("cannot remove learner {id}: {e}; retry")))?;
        warn!(node = id, "removed a learner from the metadata quorum");
        Ok(Response::new(RemoveLearnerResponse {
            error_code: ErrorCode::None.into(),
            error_message: String::new(),
        }))
    }

    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        // Kafka: CREATE on the cluster, or on the topic's name.
        let access = Access::of(&request);
        let image = self.quorum.image();
        if !access.allows(
            &image,
            Operation::Create,
            ResourceType::Cluster,
            crate::security::CLUSTER_RESOURCE,
        ) {
            self.on_topic(&request, Operation::Create, &request.get_ref().name)?;
        }
        forward_admin_or_handle!(self, request, create_topic);
        let r = request.into_inner();
        let configs = pairs(&r.configs);
        let name = r.name.clone();
        let res = self
            .quorum
            .propose(|img| {
                controller::create_topic(img, &name, r.partitions, r.replication_factor, &configs)
            })
            .await;
        let (error_code, error_message, v) = outcome(res)?;
        let topic = if v.is_some() {
            self.quorum.image().topic(&r.name).map(topic_info)
        } else {
            None
        };
        if topic.is_some() {
            info!(topic = %r.name, partitions = r.partitions, replication_factor = r.replication_factor, "created topic");
        }
        Ok(Response::new(CreateTopicResponse {
            error_code: error_code.into(),
            error_message,
            topic,
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        self.on_topic(&request, Operation::Delete, &request.get_ref().name)?;
        forward_admin_or_handle!(self, request, delete_topic);
        let r = request.into_inner();
        let res = self
            .quorum
            .propose(|img| controller::delete_topic(img, &r.name))
            .await;
        let (error_code, error_message, _) = outcome(res)?;
        Ok(Response::new(DeleteTopicResponse {
            error_code: error_code.into(),
            error_message,
        }))
    }

    async fn alter_topic_config(
        &self,
        request: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<AlterTopicConfigResponse>, Status> {
        self.on_topic(&request, Operation::AlterConfigs, &request.get_ref().name)?;
        forward_admin_or_handle!(self, request, alter_topic_config);
        let r = request.into_inner();
        let configs = pairs(&r.configs);
        let res = self
            .quorum
            .propose(|img| controller::alter_topic_config(img, &r.name, &configs))
            .await;
        let (error_code, error_message, v) = outcome(res)?;
        Ok(Response::new(AlterTopicConfigResponse {
            error_code: error_code.into(),
            error_message,
            configs: v.map_or_else(Vec::new, |v| {
                v.config
                    .to_pairs()
                    .into_iter()
                    .map(|(key, value)| ConfigEntry { key, value })
                    .collect()
            }),
        }))
    }

    async fn create_partitions(
        &self,
        request: Request<CreatePartitionsRequest>,
    ) -> Result<Response<CreatePartitionsResponse>, Status> {
        // Kafka: ALTER on the topic.
        self.on_topic(&request, Operation::Alter, &request.get_ref().name)?;
        forward_admin_or_handle!(self, request, create_partitions);
        let r = request.into_inner();
        let res = if r.validate_only {
            controller::create_partitions(&self.quorum.image(), &r.name, r.total)
                .map(|v| v.response)
                .map_err(QuorumError::from)
        } else {
            self.quorum
                .propose(|img| controller::create_partitions(img, &r.name, r.total))
                .await
        };
        let (error_code, error_message, v) = outcome(res)?;
        if v.is_some() && !r.validate_only {
            info!(topic = %r.name, partitions = r.total, "added partitions");
        }
        Ok(Response::new(CreatePartitionsResponse {
            error_code: error_code.into(),
            error_message,
            topic: self.quorum.image().topic(&r.name).map(topic_info),
        }))
    }

    async fn elect_leaders(
        &self,
        request: Request<ElectLeadersRequest>,
    ) -> Result<Response<ElectLeadersResponse>, Status> {
        self.on_cluster(&request, Operation::Alter)?;
        forward_admin_or_handle!(self, request, elect_leaders);
        let r = request.into_inner();
        let res = match (r.topic.is_empty(), r.partition) {
            (true, _) => self
                .quorum
                .propose(|img| Ok(controller::elect_preferred_leaders(img)))
                .await
                .map(|v| v.elected),
            (false, Some(p)) => {
                let topic = r.topic.clone();
                self.quorum
                    .propose(|img| controller::elect_leader(img, &topic, p))
                    .await
                    .map(|v| {
                        if v.changed {
                            vec![TopicPartition::new(r.topic.clone(), p)]
                        } else {
                            Vec::new()
                        }
                    })
            }
            (false, None) => {
                return Err(Status::invalid_argument(
                    "give a partition with the topic, or neither for all partitions",
                ))
            }
        };
        let (error_code, error_message, v) = outcome(res)?;
        Ok(Response::new(ElectLeadersResponse {
            error_code: error_code.into(),
            error_message,
            elected: v.as_deref().map_or_else(Vec::new, refs),
        }))
    }

    async fn describe_cluster(
        &self,
        request: Request<DescribeClusterRequest>,
    ) -> Result<Response<DescribeClusterResponse>, Status> {
        // Another node's catch-up check asks for the offset, whatever this
        // node's readiness; clients get its broker view only once ready.
        if !request.metadata().contains_key(FORWARDED) {
            self.ready.check_ready()?;
        }
        let image = self.quorum.image();
        let m = self.quorum.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voter_ids: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let voters = membership
            .nodes()
            .map(|(id, node)| VoterInfo {
                id: *id,
                address: node.addr.clone(),
                learner: !voter_ids.contains(id),
            })
            .collect();
        Ok(Response::new(DescribeClusterResponse {
            cluster_id: self.quorum.config.cluster_id.clone(),
            node_id: self.quorum.node_id(),
            controller_leader: m.current_leader,
            raft_term: m.current_term,
            metadata_offset: image.metadata_offset(),
            voters,
            brokers: image.brokers().values().map(broker_info).collect(),
        }))
    }

    async fn describe_topics(
        &self,
        request: Request<DescribeTopicsRequest>,
    ) -> Result<Response<DescribeTopicsResponse>, Status> {
        self.ready.check_ready()?;
        let access = Access::of(&request);
        let r = request.into_inner();
        let mut image = self.quorum.image();
        // A name this node does not know may have been created through
        // another node a moment ago: catch up with the controller before
        // calling it unknown, so create-then-describe never fails anywhere.
        if r.names.iter().any(|n| image.topic(n).is_none())
            && self.quorum.catch_up_with_controller(CATCH_UP_TIMEOUT).await
        {
            image = self.quorum.image();
        }
        let mut topics = Vec::new();
        let mut missing = Vec::new();
        let mut denied = Vec::new();
        let may_describe =
            |name: &str| access.allows(&image, Operation::Describe, ResourceType::Topic, name);
        if r.names.is_empty() {
            // A listing shows only what the caller may describe.
            topics.extend(
                image
                    .topics()
                    .values()
                    .filter(|t| may_describe(&t.name))
                    .map(topic_info),
            );
        } else {
            for name in &r.names {
                match image.topic(name) {
                    Some(_) if !may_describe(name) => denied.push(name.as_str()),
                    Some(t) => topics.push(topic_info(t)),
                    None => missing.push(name.as_str()),
                }
            }
        }
        let (code, message) = if !denied.is_empty() {
            (
                ErrorCode::TopicAuthorizationFailed,
                format!(
                    "{} may not describe topic(s): {}",
                    access.principal,
                    denied.join(", ")
                ),
            )
        } else if missing.is_empty() {
            (ErrorCode::None, String::new())
        } else {
            (
                ErrorCode::UnknownTopicOrPartition,
                format!("unknown topic(s): {}", missing.join(", ")),
            )
        };
        Ok(Response::new(DescribeTopicsResponse {
            error_code: code.into(),
            error_message: message,
            topics,
        }))
    }

    async fn upsert_user(
        &self,
        request: Request<pb::UpsertUserRequest>,
    ) -> Result<Response<pb::UpsertUserResponse>, Status> {
        self.on_cluster(&request, Operation::Alter)?;
        forward_admin_or_handle!(self, request, upsert_user);
        let r = request.into_inner();
        let credentials = r
            .credentials
            .iter()
            .map(crate::convert::credential_from_proto)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Status::invalid_argument)?;
        let res = self
            .quorum
            .propose(|img| controller::upsert_user(img, &r.name, credentials, r.create_only))
            .await;
        let (error_code, error_message, created) = outcome(res)?;
        if created == Some(true) {
            info!(user = %r.name, "created user");
        } else if created == Some(false) && !r.create_only {
            info!(user = %r.name, "changed a user's password");
        }
        Ok(Response::new(pb::UpsertUserResponse {
            error_code: error_code.into(),
            error_message,
            created: created.unwrap_or(false),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        self.on_cluster(&request, Operation::Alter)?;
        forward_admin_or_handle!(self, request, delete_user);
        let r = request.into_inner();
        let res = self
            .quorum
            .propose(|img| controller::delete_user(img, &r.name))
            .await;
        let (error_code, error_message, done) = outcome(res)?;
        if done.is_some() {
            info!(user = %r.name, "deleted user");
        }
        Ok(Response::new(pb::DeleteUserResponse {
            error_code: error_code.into(),
            error_message,
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.ready.check_ready()?;
        self.on_cluster(&request, Operation::Describe)?;
        let image = self.quorum.image();
        let users = image
            .users()
            .iter()
            .map(|(name, creds)| pb::UserInfo {
                name: name.clone(),
                mechanisms: creds
                    .iter()
                    .map(|c| c.mechanism.sasl_name().to_owned())
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListUsersResponse { users }))
    }

    async fn create_acls(
        &self,
        request: Request<pb::CreateAclsRequest>,
    ) -> Result<Response<pb::CreateAclsResponse>, Status> {
        self.on_cluster(&request, Operation::Alter)?;
        forward_admin_or_handle!(self, request, create_acls);
        let r = request.into_inner();
        let acls = r
            .acls
            .iter()
            .map(crate::convert::acl_from_proto)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Status::invalid_argument)?;
        let count = acls.len();
        let res = self
            .quorum
            .propose(|img| controller::create_acls(img, acls))
            .await;
        let (error_code, error_message, done) = outcome(res)?;
        if done.is_some() {
            info!(count, "created ACLs");
        }
        Ok(Response::new(pb::CreateAclsResponse {
            error_code: error_code.into(),
            error_message,
        }))
    }

    async fn delete_acls(
        &self,
        request: Request<pb::DeleteAclsRequest>,
    ) -> Result<Response<pb::DeleteAclsResponse>, Status> {
        self.on_cluster(&request, Operation::Alter)?;
        forward_admin_or_handle!(self, request, delete_acls);
        let r = request.into_inner();
        let filter = crate::convert::acl_filter_from_proto(&r.filter.unwrap_or_default())
            .map_err(Status::invalid_argument)?;
        let res = self
            .quorum
            .propose(|img| controller::delete_acls(img, &filter))
            .await;
        let (error_code, error_message, gone) = outcome(res)?;
        let deleted: Vec<pb::AclBinding> = gone
            .unwrap_or_default()
            .iter()
            .map(crate::convert::acl_to_proto)
            .collect();
        if !deleted.is_empty() {
            info!(count = deleted.len(), "deleted ACLs");
        }
        Ok(Response::new(pb::DeleteAclsResponse {
            error_code: error_code.into(),
            error_message,
            deleted,
        }))
    }

    async fn list_acls(
        &self,
        request: Request<pb::ListAclsRequest>,
    ) -> Result<Response<pb::ListAclsResponse>, Status> {
        self.ready.check_ready()?;
        self.on_cluster(&request, Operation::Describe)?;
        let filter =
            crate::convert::acl_filter_from_proto(&request.into_inner().filter.unwrap_or_default())
                .map_err(Status::invalid_argument)?;
        let image = self.quorum.image();
        let acls = image
            .acls()
            .iter()
            .filter(|a| filter.matches(a))
            .map(crate::convert::acl_to_proto)
            .collect();
        Ok(Response::new(pb::ListAclsResponse { acls }))
    }
}

/// Handles one heartbeat on the (supposedly) active controller.
async fn heartbeat_reply(
    quorum: &Arc<Quorum>,
    id: BrokerId,
    broker_epoch: u64,
    applied_offset: u64,
    lease: Duration,
) -> HeartbeatResponse {
    let mut reply = HeartbeatResponse {
        error_code: ErrorCode::None.into(),
        error_message: String::new(),
        fenced: false,
        controller_id: None,
        controller_address: None,
    };
    if !quorum.is_leader() {
        reply.error_code = ErrorCode::NotController.into();
        reply.error_message = "not the active controller".into();
        if let Some((lid, addr)) = quorum.leader() {
            reply.controller_id = Some(lid);
            reply.controller_address = Some(addr);
        }
        return reply;
    }
    let image = quorum.image();
    let Some(reg) = image.broker(id) else {
        reply.error_code = ErrorCode::BrokerNotAvailable.into();
        reply.error_message = format!("broker {} is not registered; register first", id.0);
        return reply;
    };
    if reg.broker_epoch != broker_epoch {
        reply.error_code = ErrorCode::StaleBrokerEpoch.into();
        reply.error_message = format!(
            "broker epoch {broker_epoch} is stale (current {}); register again",
            reg.broker_epoch
        );
        return reply;
    }
    quorum
        .leases
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .renew(id, Instant::now() + lease);
    reply.fenced = reg.fenced;
    // KIP-631: a registered broker is unfenced only once it has applied the
    // metadata log up to its own registration, so it never serves clients
    // from a stale image.
    if reg.fenced && applied_offset < reg.registered_offset {
        debug!(
            broker = id.0,
            applied_offset,
            registered_offset = reg.registered_offset,
            "broker still catching up with the metadata log"
        );
    } else if reg.fenced {
        match quorum
            .propose(|img| controller::unfence_broker(img, id, broker_epoch))
            .await
        {
            Ok(r) => {
                info!(broker = id.0, elected = r.elected.len(), "unfenced broker");
                reply.fenced = false;
            }
            Err(e) => warn!(broker = id.0, error = %e, "cannot unfence broker"),
        }
    }
    reply
}
