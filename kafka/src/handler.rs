//! Kafka requests onto the broker's protocol-neutral API: one function per
//! Kafka API, each decoding its request, calling [`BrokerApi`] (or the group
//! coordinator's service, in process) and encoding the answer at the
//! client's version.
//!
//! Fields a version does not carry are left at their defaults: the codec
//! refuses to encode a non-default value the version lacks, so each
//! version-gated field is set under its version check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError as K;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rivulet_broker::api::{self, ApiError, BrokerApi, OffsetQuery};
use rivulet_broker::budget::Held;
use rivulet_broker::{BrokerRegistration, GroupCoordinator, GroupsRpc, ReplicaManager};
use rivulet_metadata::authn::ClientAuth;
use rivulet_metadata::image::MetadataImage;
use rivulet_metadata::security::{Access, Authorizer, Principal};
use rivulet_proto::v1::groups_server::Groups as _;
use rivulet_proto::v1::{self as pb, ErrorCode};
use tracing::warn;

use std::collections::HashMap;
use std::time::Instant;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use rivulet_broker::groups::validate_group_id;
use rivulet_metadata::security::{Operation, ResourceType};
use tokio::sync::oneshot;

use crate::classic::{ClassicGroups, Effect, Join, Joined};
use crate::codes::{kafka_code, kafka_code_raw};
use crate::versions::{supported, PRODUCE_MIN_USABLE, SASL_HANDSHAKE_MIN_USABLE, SUPPORTED};

/// The internal topic's name, marked internal in Metadata.
const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A request whose header has been read.
#[derive(Debug)]
pub(crate) struct Request {
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: String,
    body: Bytes,
}

/// A request's place in its connection's order: the signal of the one
/// before it, and its own.
pub(crate) type Order = (Option<oneshot::Receiver<()>>, oneshot::Sender<()>);

impl Request {
    /// The API.
    pub(crate) fn key(&self) -> ApiKey {
        self.key
    }

    pub(crate) fn version(&self) -> i16 {
        self.version
    }

    pub(crate) fn correlation_id(&self) -> i32 {
        self.correlation_id
    }

    pub(crate) fn into_body(self) -> Bytes {
        self.body
    }

    /// Whether the request changes state, so that its effect must follow
    /// those of the connection's earlier requests (Kafka handles a
    /// connection's requests one at a time: a client's pipelined produces
    /// land in the order sent, its commits do not overtake each other).
    /// Reads (Fetch, Metadata, ListOffsets, ...) run alongside.
    pub(crate) fn ordered(&self) -> bool {
        !matches!(
            self.key,
            ApiKey::Fetch
                | ApiKey::Metadata
                | ApiKey::ListOffsets
                | ApiKey::ApiVersions
                | ApiKey::OffsetFetch
                | ApiKey::FindCoordinator
                | ApiKey::OffsetForLeaderEpoch
                | ApiKey::DescribeConfigs
                | ApiKey::DescribeCluster
                | ApiKey::DescribeLogDirs
                | ApiKey::ListGroups
                | ApiKey::DescribeGroups
                | ApiKey::Heartbeat
                | ApiKey::DescribeAcls
        )
    }
}

/// What the reader does with a frame.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Hand it to [`Handler::handle`].
    Request(Request),
    /// Send these bytes (an answer needing no work).
    Immediate(Bytes),
    /// Close the connection, for this reason.
    Close(String),
}

/// What a handled request sends back.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A whole response frame.
    Bytes(Bytes),
    /// Nothing (acks=0 produce).
    Nothing,
    /// Close the connection after the answers before this one.
    Close(String),
    /// Send this frame, then close the connection (a failed SASL
    /// exchange: Kafka answers, then closes).
    Last(Bytes),
}

/// Everything the Kafka edge calls into; one per node.
#[derive(Debug)]
pub struct Handler {
    pub(crate) api: BrokerApi,
    pub(crate) mgr: Arc<ReplicaManager>,
    pub(crate) registration: Arc<BrokerRegistration>,
    pub(crate) groups: GroupsRpc,
    pub(crate) coord: Arc<GroupCoordinator>,
    pub(crate) authorizer: Arc<Authorizer>,
    /// Password checks (SASL PLAIN) and whether passwords may travel here.
    pub(crate) auth: Arc<ClientAuth>,
    /// Keys the salt an unknown SCRAM user is shown (stable per name).
    pub(crate) fake_salt_key: [u8; 32],
    classic: Arc<std::sync::Mutex<Classic>>,
    /// What each KIP-848 member last said it owns: a heartbeat's null
    /// `topic_partitions` means "unchanged".
    owned: std::sync::Mutex<HashMap<(String, String), OwnedEntry>>,
}

/// What a KIP-848 member last said it owns, and when it last heartbeat.
type OwnedEntry = (Vec<pb::TopicPartitions>, Instant);

/// Most KIP-848 members whose owned partitions are remembered.
const MAX_OWNED: usize = 100_000;
/// A member silent this long is gone (longer than any session timeout the
/// coordinator accepts).
const OWNED_IDLE: Duration = Duration::from_secs(600);

/// The classic groups and the JoinGroup and SyncGroup requests waiting on
/// them, under one lock.
#[derive(Debug, Default)]
pub(crate) struct Classic {
    pub(crate) groups: ClassicGroups,
    joins: HashMap<(String, String), oneshot::Sender<Joined>>,
    syncs: HashMap<(String, String), oneshot::Sender<Result<Bytes, i16>>>,
}

impl Classic {
    /// Hands each answer to the request waiting for it (if it still waits).
    fn deliver(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Joined {
                    group,
                    member,
                    joined,
                } => {
                    if let Some(tx) = self.joins.remove(&(group, member)) {
                        let _ = tx.send(joined);
                    }
                }
                Effect::Synced {
                    group,
                    member,
                    result,
                } => {
                    if let Some(tx) = self.syncs.remove(&(group, member)) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
    }
}

/// The classic groups' members as the coordinator shows them (decoding
/// the consumer protocol's subscription and assignment, KIP-429's format).
#[derive(Debug)]
struct ClassicMembers(Arc<std::sync::Mutex<Classic>>);

impl rivulet_broker::groups::ExternalMembers for ClassicMembers {
    fn members(
        &self,
        group: &str,
    ) -> Option<(String, Vec<rivulet_broker::groups::ExternalMember>)> {
        use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
        let view = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .groups
            .describe(group)?;
        fn versioned<T: Decodable>(bytes: &Bytes) -> Option<T> {
            let mut b = bytes.clone();
            if b.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([b[0], b[1]]);
            let _ = bytes::Buf::get_i16(&mut b);
            T::decode(&mut b, version).ok()
        }
        let consumer = view.protocol_type == "consumer";
        let members = view
            .members
            .into_iter()
            .map(|(member_id, client_id, meta, assignment)| {
                let subscribed = consumer
                    .then(|| versioned::<ConsumerProtocolSubscription>(&meta))
                    .flatten()
                    .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
                    .unwrap_or_default();
                let assigned = consumer
                    .then(|| versioned::<ConsumerProtocolAssignment>(&assignment))
                    .flatten()
                    .map(|a| {
                        a.assigned_partitions
                            .iter()
                            .flat_map(|t| {
                                let topic = t.topic.0.to_string();
                                t.partitions.iter().filter_map(move |p| {
                                    u32::try_from(*p).ok().map(|p| (topic.clone(), p))
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                rivulet_broker::groups::ExternalMember {
                    member_id,
                    client_id,
                    generation: view.generation,
                    subscribed,
                    assigned,
                }
            })
            .collect();
        Some((view.state.as_str().to_owned(), members))
    }
}

/// Why a request could not be answered (the connection is closed).
pub(crate) type Failed = String;

pub(crate) fn decode<T: Decodable>(
    body: &mut Bytes,
    key: ApiKey,
    version: i16,
) -> Result<T, Failed> {
    T::decode(body, version).map_err(|e| format!("{key:?} v{version} does not decode: {e}"))
}

pub(crate) fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// `host:port` split for the wire (brackets of an IPv6 literal removed).
pub(crate) fn host_port(address: &str) -> Option<(StrBytes, i32)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (str_bytes(host), i32::from(port)))
}

pub(crate) fn broker_id(id: u64) -> BrokerId {
    BrokerId(i32::try_from(id).unwrap_or(-1))
}

/// Kafka's code for a whole-request failure, given to every partition.
fn api_error_code(e: &ApiError) -> i16 {
    match e {
        ApiError::InvalidRequest(_) => K::InvalidRequest.code(),
        ApiError::Busy(_) => K::RequestTimedOut.code(),
        // The client looks for another leader.
        ApiError::ShuttingDown => K::NotLeaderOrFollower.code(),
        ApiError::UnknownBroker(_) | ApiError::Internal(_) => K::UnknownServerError.code(),
    }
}

impl Handler {
    /// The edge over this node's broker and group coordinator.
    pub fn new(
        mgr: Arc<ReplicaManager>,
        coord: Arc<GroupCoordinator>,
        auth: Arc<ClientAuth>,
    ) -> Self {
        let classic: Arc<std::sync::Mutex<Classic>> = Arc::default();
        // `rivulet group describe` and reset-offsets see classic members.
        coord.set_external(Arc::new(ClassicMembers(Arc::clone(&classic))));
        let mut fake_salt_key = [0u8; 32];
        // Without randomness unknown users' salts are only more predictable.
        let _ = getrandom::fill(&mut fake_salt_key);
        Self {
            authorizer: Arc::clone(auth.authorizer()),
            auth,
            fake_salt_key,
            api: BrokerApi::new(Arc::clone(&mgr)),
            registration: Arc::clone(mgr.registration()),
            mgr,
            groups: GroupsRpc::new(Arc::clone(&coord)),
            coord,
            classic,
            owned: std::sync::Mutex::default(),
        }
    }

    pub(crate) fn classic(&self) -> std::sync::MutexGuard<'_, Classic> {
        self.classic.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends classic rebalance rounds past their deadline and expires silent
    /// members, every 100 ms, until `cancel`.
    pub async fn run_timers(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            {
                let mut c = self.classic();
                let effects = c.groups.tick(now);
                c.deliver(effects);
                // Requests that gave up (timed out, connection gone).
                c.joins.retain(|_, tx| !tx.is_closed());
                c.syncs.retain(|_, tx| !tx.is_closed());
            }
            self.owned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, (_, used)| now.saturating_duration_since(*used) < OWNED_IDLE);
        }
    }

    /// Kafka's code unless this node coordinates `group` and the caller may
    /// `op` it.
    pub(crate) fn group_check(
        &self,
        group: &str,
        access: &Access,
        op: Operation,
    ) -> Result<(), i16> {
        if validate_group_id(group).is_err() {
            return Err(K::InvalidGroupId.code());
        }
        if !access.allows(&self.image(), op, ResourceType::Group, group) {
            return Err(K::GroupAuthorizationFailed.code());
        }
        self.coord
            .shard_for(group)
            .map(|_| ())
            .map_err(|e| kafka_code(e.code()))
    }

    /// Reads the header of `frame`: a request to handle, or what to do
    /// instead.
    pub(crate) fn parse(&self, mut frame: Bytes) -> Parsed {
        let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let Ok(key) = ApiKey::try_from(raw_key) else {
            return Parsed::Close(format!("unknown API key {raw_key}"));
        };
        let Some((lo, hi)) = supported(key) else {
            return Parsed::Close(format!("{key:?} is not served by this listener"));
        };
        if !(lo..=hi).contains(&version) {
            if key == ApiKey::ApiVersions {
                // KIP-511: answer in v0 with our range, so the client can
                // retry with a version we speak.
                return match self.api_versions_body(0, K::UnsupportedVersion.code()) {
                    Ok(body) => Parsed::Immediate(frame_response(correlation_id, 0, &body)),
                    Err(e) => Parsed::Close(e),
                };
            }
            return Parsed::Close(format!("{key:?} v{version} is not served (v{lo}..=v{hi})"));
        }
        if key == ApiKey::Produce && version < PRODUCE_MIN_USABLE {
            return Parsed::Close(format!(
                "Produce v{version} (message format v0/v1) is not served: use v{PRODUCE_MIN_USABLE} or later"
            ));
        }
        if key == ApiKey::SaslHandshake && version < SASL_HANDSHAKE_MIN_USABLE {
            return Parsed::Close(format!(
                "SaslHandshake v{version} (unframed SASL tokens) is not served: use v1 and SaslAuthenticate"
            ));
        }
        let header_version = key.request_header_version(version);
        let header = match RequestHeader::decode(&mut frame, header_version) {
            Ok(h) => h,
            Err(e) => return Parsed::Close(format!("{key:?} v{version}: bad request header: {e}")),
        };
        Parsed::Request(Request {
            key,
            version,
            correlation_id,
            client_id: header.client_id.map(|c| c.to_string()).unwrap_or_default(),
            body: frame,
        })
    }

    /// Answers one request. An [`Request::ordered`] one first waits for
    /// `order.0` (its predecessor's effect) and signals `order.1` once its
    /// own has happened (a Produce: its appends; others: done).
    pub(crate) async fn handle(
        &self,
        req: Request,
        peer: SocketAddr,
        principal: Principal,
        held: &Held,
        order: Option<Order>,
    ) -> Answer {
        let mut done = None;
        if let Some((before, mine)) = order {
            if let Some(before) = before {
                let _ = before.await;
            }
            done = Some(mine);
        }
        let Request {
            key,
            version,
            correlation_id,
            client_id,
            mut body,
        } = req;
        let access = Access {
            principal,
            host: Some(peer.ip()),
            authorizer: Arc::clone(&self.authorizer),
        };
        let ready = key == ApiKey::ApiVersions || self.registration.is_ready();
        let answered: Result<Option<BytesMut>, Failed> = if !ready {
            Err("the node is still catching up with the metadata log".to_owned())
        } else {
            match key {
                ApiKey::ApiVersions => self.api_versions_body(version, 0).map(Some),
                ApiKey::Metadata => self.metadata(&mut body, version, &access).await.map(Some),
                ApiKey::Produce => {
                    self.produce(&mut body, version, access, held, done.take())
                        .await
                }
                ApiKey::Fetch => self.fetch(&mut body, version, access, held).await.map(Some),
                ApiKey::ListOffsets => self
                    .list_offsets(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::OffsetForLeaderEpoch => self
                    .offset_for_leader_epoch(&mut body, version, &access)
                    .map(Some),
                ApiKey::InitProducerId => self
                    .init_producer_id(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::FindCoordinator => self
                    .find_coordinator(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::OffsetCommit => self
                    .offset_commit(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::OffsetFetch => self
                    .offset_fetch(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::ConsumerGroupHeartbeat => self
                    .consumer_group_heartbeat(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::JoinGroup => self
                    .join_group(&mut body, version, &access, &client_id)
                    .await
                    .map(Some),
                ApiKey::SyncGroup => self.sync_group(&mut body, version, &access).await.map(Some),
                ApiKey::Heartbeat => self.heartbeat(&mut body, version, &access).map(Some),
                ApiKey::LeaveGroup => self.leave_group(&mut body, version, &access).map(Some),
                ApiKey::CreateTopics => self
                    .create_topics(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::CreatePartitions => self
                    .create_partitions(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::DeleteTopics => self
                    .delete_topics(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::DescribeConfigs => {
                    self.describe_configs(&mut body, version, &access).map(Some)
                }
                ApiKey::IncrementalAlterConfigs => self
                    .alter_configs(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::DescribeLogDirs => self
                    .describe_log_dirs(&mut body, version, &access)
                    .map(Some),
                ApiKey::DescribeCluster => self.describe_cluster(&mut body, version).map(Some),
                ApiKey::ListGroups => self
                    .list_groups(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::DescribeGroups => self
                    .describe_groups(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::DeleteGroups => self
                    .delete_groups(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::DeleteRecords => self
                    .delete_records(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::DescribeAcls => self.describe_acls(&mut body, version, &access).map(Some),
                ApiKey::CreateAcls => self
                    .create_acls(&mut body, version, &access)
                    .await
                    .map(Some),
                ApiKey::DeleteAcls => self
                    .delete_acls(&mut body, version, &access)
                    .await
                    .map(Some),
                other => Err(format!("{other:?} is not served")),
            }
        };
        match answered {
            Ok(Some(body)) => Answer::Bytes(frame_response(
                correlation_id,
                key.response_header_version(version),
                &body,
            )),
            Ok(None) => Answer::Nothing,
            Err(why) => Answer::Close(why),
        }
    }

    /// DeleteRecords (KIP-107): each partition's leader moves its log start;
    /// the low watermark answered is the leader's new log start (followers
    /// follow with their next fetch).
    async fn delete_records(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        use kafka_protocol::messages::delete_records_response::{
            DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
        };
        let req: DeleteRecordsRequest = decode(body, ApiKey::DeleteRecords, version)?;
        let mut asked = Vec::new();
        // Per topic, per partition: its index in `asked`, or a code found
        // here.
        type Slots = Vec<(i32, Result<usize, i16>)>;
        let mut slots: Vec<(TopicName, Slots)> = Vec::new();
        for t in &req.topics {
            let mut parts = Vec::new();
            for p in &t.partitions {
                let slot = match (u32::try_from(p.partition_index), p.offset) {
                    (Ok(partition), -1) | (Ok(partition), 0..) => {
                        asked.push(api::DeleteRecordsPartition {
                            topic: t.name.0.to_string(),
                            partition,
                            before: u64::try_from(p.offset).ok(),
                        });
                        Ok(asked.len() - 1)
                    }
                    (Err(_), _) => Err(K::UnknownTopicOrPartition.code()),
                    (Ok(_), _) => Err(K::OffsetOutOfRange.code()),
                };
                parts.push((p.partition_index, slot));
            }
            slots.push((t.name.clone(), parts));
        }
        let results = match self.api.delete_records(asked, access).await {
            Ok(r) => r
                .into_iter()
                .map(|x| x.map_err(|e| kafka_code(e.code())))
                .collect(),
            Err(e) => vec![Err(api_error_code(&e)); slots.iter().map(|s| s.1.len()).sum()],
        };
        let mut r = DeleteRecordsResponse::default();
        for (name, parts) in slots {
            let mut topic = DeleteRecordsTopicResult::default().with_name(name);
            for (index, slot) in parts {
                let mut out = DeleteRecordsPartitionResult::default()
                    .with_partition_index(index)
                    .with_low_watermark(-1);
                match slot.map(|i| results.get(i).cloned()) {
                    Ok(Some(Ok(start))) => {
                        out.low_watermark = i64::try_from(start).unwrap_or(i64::MAX)
                    }
                    Ok(Some(Err(code))) | Err(code) => out.error_code = code,
                    Ok(None) => out.error_code = K::UnknownServerError.code(),
                }
                topic.partitions.push(out);
            }
            r.topics.push(topic);
        }
        encode(&r, ApiKey::DeleteRecords, version)
    }

    pub(crate) fn image(&self) -> Arc<MetadataImage> {
        self.mgr.image()
    }

    fn api_versions_body(&self, version: i16, error_code: i16) -> Result<BytesMut, Failed> {
        let mut r = ApiVersionsResponse::default();
        r.error_code = error_code;
        r.api_keys = SUPPORTED
            .iter()
            .map(|(k, lo, hi)| {
                ApiVersion::default()
                    .with_api_key(*k as i16)
                    .with_min_version(*lo)
                    .with_max_version(*hi)
            })
            .collect();
        encode(&r, ApiKey::ApiVersions, version)
    }

    async fn metadata(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: MetadataRequest = decode(body, ApiKey::Metadata, version)?;
        let image = self.image();
        // v0: an empty list means every topic; v1+: null does, and an empty
        // list means none.
        let mut unknown_ids = Vec::new();
        let names: Option<Vec<String>> = match req.topics {
            None => None,
            Some(t) if t.is_empty() && version == 0 => None,
            Some(t) => Some(
                t.into_iter()
                    .filter_map(|t| match t.name {
                        Some(n) => Some(n.0.to_string()),
                        None => {
                            let id = t.topic_id.as_u128();
                            let found = image
                                .topics()
                                .values()
                                .find(|ti| ti.id.as_u128() == id)
                                .map(|ti| ti.name.clone());
                            if found.is_none() {
                                unknown_ids.push(t.topic_id);
                            }
                            found
                        }
                    })
                    .collect(),
            ),
        };
        let mut r = MetadataResponse::default();
        r.brokers = image
            .brokers()
            .values()
            .filter(|b| !b.fenced)
            .filter_map(|b| {
                let (host, port) = host_port(b.kafka_address.as_deref()?)?;
                let mut broker = MetadataResponseBroker::default()
                    .with_node_id(broker_id(b.id.0))
                    .with_host(host)
                    .with_port(port);
                if version >= 1 {
                    broker.rack = b.rack.as_deref().map(str_bytes);
                }
                Some(broker)
            })
            .collect();
        let view = match &names {
            Some(n) if n.is_empty() => None,
            Some(n) => Some(self.api.metadata(n, access).await),
            None => Some(self.api.metadata(&[], access).await),
        };
        if version >= 1 {
            r.controller_id = view
                .as_ref()
                .and_then(|v| v.controller_id)
                .or_else(|| {
                    self.registration
                        .control()
                        .controller()
                        .and_then(|(id, _)| id)
                })
                .map_or(BrokerId(-1), broker_id);
        }
        if version >= 2 {
            r.cluster_id = Some(str_bytes(image.cluster_id()));
        }
        let Some(view) = view else {
            return encode(&r, ApiKey::Metadata, version);
        };
        let image = &view.image;
        let described: Vec<&rivulet_metadata::image::TopicImage> = match &names {
            None => image
                .topics()
                .values()
                .filter(|t| view.described.contains(&t.name))
                .collect(),
            Some(n) => n
                .iter()
                .filter(|n| view.described.contains(*n))
                .filter_map(|n| image.topic(n))
                .collect(),
        };
        for t in described {
            let mut topic = MetadataResponseTopic::default().with_name(Some(name(&t.name)));
            if version >= 1 {
                topic.is_internal = t.name == OFFSETS_TOPIC;
            }
            if version >= 10 {
                topic.topic_id = uuid::Uuid::from_u128(t.id.as_u128());
            }
            topic.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut out = MetadataResponsePartition::default()
                        .with_partition_index(i32::try_from(p.partition).unwrap_or(i32::MAX))
                        .with_leader_id(p.leader.map_or(BrokerId(-1), |l| broker_id(l.0)))
                        .with_replica_nodes(p.replicas.iter().map(|b| broker_id(b.0)).collect())
                        .with_isr_nodes(p.isr.iter().map(|b| broker_id(b.0)).collect());
                    if p.leader.is_none() {
                        out.error_code = K::LeaderNotAvailable.code();
                    }
                    if version >= 7 {
                        out.leader_epoch = i32::try_from(p.leader_epoch).unwrap_or(i32::MAX);
                    }
                    if version >= 5 {
                        out.offline_replicas = p
                            .replicas
                            .iter()
                            .filter(|b| image.broker(**b).is_none_or(|r| r.fenced))
                            .map(|b| broker_id(b.0))
                            .collect();
                    }
                    out
                })
                .collect();
            r.topics.push(topic);
        }
        for (names, code) in [
            (&view.unknown_topics, K::UnknownTopicOrPartition.code()),
            (
                &view.unauthorized_topics,
                K::TopicAuthorizationFailed.code(),
            ),
        ] {
            for n in names {
                r.topics.push(
                    MetadataResponseTopic::default()
                        .with_name(Some(name(n)))
                        .with_error_code(code),
                );
            }
        }
        // Only v12+ may name a topic by id alone (its name is nullable).
        if version >= 12 {
            for id in unknown_ids {
                r.topics.push(
                    MetadataResponseTopic::default()
                        .with_topic_id(id)
                        .with_error_code(K::UnknownTopicId.code()),
                );
            }
        }
        encode(&r, ApiKey::Metadata, version)
    }

    async fn produce(
        &self,
        body: &mut Bytes,
        version: i16,
        access: Access,
        held: &Held,
        appended: Option<oneshot::Sender<()>>,
    ) -> Result<Option<BytesMut>, Failed> {
        let req: ProduceRequest = decode(body, ApiKey::Produce, version)?;
        let acks = match req.acks {
            -1 => Some(api::Acks::All),
            1 => Some(api::Acks::Leader),
            0 => Some(api::Acks::None),
            _ => None,
        };
        let mut slots: Vec<(usize, PartitionProduceResponse)> = Vec::new();
        let mut topics: Vec<TopicProduceResponse> = Vec::with_capacity(req.topic_data.len());
        let mut entries = Vec::new();
        for (ti, t) in req.topic_data.into_iter().enumerate() {
            let topic = t.name.0.to_string();
            topics.push(TopicProduceResponse::default().with_name(t.name));
            for p in t.partition_data {
                let mut out = PartitionProduceResponse::default()
                    .with_index(p.index)
                    .with_base_offset(-1);
                if version >= 5 {
                    out.log_start_offset = -1;
                }
                slots.push((ti, out));
                let batch = match (u32::try_from(p.index), p.records) {
                    (Err(_), _) => {
                        Err(rivulet_broker::replica::PartitionError::UnknownTopicOrPartition)
                    }
                    (Ok(_), Some(b)) if !b.is_empty() => Ok(b.to_vec()),
                    (Ok(_), _) => Err(rivulet_broker::replica::PartitionError::InvalidRequest(
                        "no records".into(),
                    )),
                };
                entries.push(api::ProduceEntry {
                    topic: topic.clone(),
                    partition: u32::try_from(p.index).unwrap_or(u32::MAX),
                    batch,
                });
            }
        }
        let results = match acks {
            None => Err(K::InvalidRequiredAcks.code()),
            Some(acks) => match api::check_entry_count(entries.len()) {
                Err(e) => Err(api_error_code(&e)),
                Ok(()) => self
                    .api
                    .produce(api::ProduceRequest {
                        acks,
                        timeout: u64::try_from(req.timeout_ms)
                            .ok()
                            .filter(|ms| *ms > 0)
                            .map(Duration::from_millis),
                        entries,
                        held: Some(held.clone()),
                        access,
                        appended,
                    })
                    .await
                    .map_err(|e| api_error_code(&e)),
            },
        };
        if acks == Some(api::Acks::None) {
            return Ok(None);
        }
        match results {
            Ok(results) => {
                for ((_, out), res) in slots.iter_mut().zip(results) {
                    match res.error {
                        None => {
                            out.base_offset = i64::try_from(res.base_offset).unwrap_or(-1);
                            if version >= 5 {
                                out.log_start_offset =
                                    i64::try_from(res.log_start_offset).unwrap_or(-1);
                            }
                        }
                        Some(e) => {
                            out.error_code = kafka_code(e.code());
                            if version >= 8 {
                                out.error_message = Some(str_bytes(&e.to_string()));
                            }
                        }
                    }
                }
            }
            Err(code) => {
                for (_, out) in &mut slots {
                    out.error_code = code;
                }
            }
        }
        for (ti, out) in slots {
            topics[ti].partition_responses.push(out);
        }
        let r = ProduceResponse::default().with_responses(topics);
        encode(&r, ApiKey::Produce, version).map(Some)
    }

    async fn fetch(
        &self,
        body: &mut Bytes,
        version: i16,
        access: Access,
        held: &Held,
    ) -> Result<BytesMut, Failed> {
        let req: FetchRequest = decode(body, ApiKey::Fetch, version)?;
        let mut r = FetchResponse::default();
        if version >= 7 && req.session_id != 0 {
            // No fetch sessions (KIP-227): a client that has one is told it
            // is gone and falls back to full fetches with session id 0.
            r.error_code = K::FetchSessionIdNotFound.code();
            return encode(&r, ApiKey::Fetch, version);
        }
        let mut asked = Vec::new();
        for t in &req.topics {
            for p in &t.partitions {
                asked.push(api::FetchPartition {
                    topic: t.topic.0.to_string(),
                    partition: u32::try_from(p.partition).unwrap_or(u32::MAX),
                    offset: u64::try_from(p.fetch_offset).unwrap_or(u64::MAX),
                    max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0).max(1),
                    current_leader_epoch: u32::try_from(p.current_leader_epoch).ok(),
                });
            }
        }
        let results = self
            .api
            .fetch(
                api::FetchRequest {
                    partitions: asked,
                    max_bytes: usize::try_from(req.max_bytes).unwrap_or(0),
                    min_bytes: usize::try_from(req.min_bytes).unwrap_or(0),
                    max_wait: Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)),
                    access,
                },
                Some(held.clone()),
            )
            .await;
        let mut results = match results {
            Ok(r) => r.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => {
                let code = api_error_code(&e);
                req.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|_| Err(code))
                    .collect()
            }
        }
        .into_iter();
        for t in req.topics {
            let mut topic = FetchableTopicResponse::default().with_topic(t.topic);
            for p in t.partitions {
                let mut out = PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_aborted_transactions(Some(Vec::new()))
                    .with_records(Some(Bytes::new()));
                if version >= 5 {
                    out.log_start_offset = -1;
                }
                match results.next() {
                    Some(Ok(Ok((records, offsets, _epoch)))) => {
                        let hw = i64::try_from(offsets.high_watermark).unwrap_or(-1);
                        out.high_watermark = hw;
                        // No transactions: everything below the HW is stable.
                        out.last_stable_offset = hw;
                        if version >= 5 {
                            out.log_start_offset =
                                i64::try_from(offsets.log_start_offset).unwrap_or(-1);
                        }
                        out.records = Some(records);
                    }
                    Some(Ok(Err(e))) => out.error_code = kafka_code(e.code()),
                    Some(Err(code)) => out.error_code = code,
                    None => out.error_code = K::UnknownServerError.code(),
                }
                topic.partitions.push(out);
            }
            r.responses.push(topic);
        }
        encode(&r, ApiKey::Fetch, version)
    }

    async fn list_offsets(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: ListOffsetsRequest = decode(body, ApiKey::ListOffsets, version)?;
        let asked: Vec<api::ListOffsetsPartition> = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| api::ListOffsetsPartition {
                    topic: t.name.0.to_string(),
                    partition: u32::try_from(p.partition_index).unwrap_or(u32::MAX),
                    query: (p.timestamp >= -2).then(|| OffsetQuery::from_timestamp(p.timestamp)),
                    current_leader_epoch: u32::try_from(p.current_leader_epoch).ok(),
                })
            })
            .collect();
        let n = asked.len();
        let mut results = match self.api.list_offsets(asked, access).await {
            Ok(r) => r.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => {
                let code = api_error_code(&e);
                (0..n).map(|_| Err(code)).collect()
            }
        }
        .into_iter();
        let mut r = ListOffsetsResponse::default();
        for t in req.topics {
            let mut topic = ListOffsetsTopicResponse::default().with_name(t.name);
            for p in t.partitions {
                let mut out = ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1);
                match results.next() {
                    Some(Ok(Ok(listed))) => {
                        out.offset = listed
                            .offset
                            .and_then(|o| i64::try_from(o).ok())
                            .unwrap_or(-1);
                        // A timestamp query's answer carries the found
                        // record's timestamp (Java's offsetsForTimes refuses
                        // a negative one).
                        if out.offset >= 0 {
                            if let Some(ts) = listed.timestamp_ms {
                                out.timestamp = ts.max(0);
                            }
                        }
                        if version >= 4 {
                            out.leader_epoch = i32::try_from(listed.leader_epoch).unwrap_or(-1);
                        }
                    }
                    Some(Ok(Err(e))) => out.error_code = kafka_code(e.code()),
                    Some(Err(code)) => out.error_code = code,
                    None => out.error_code = K::UnknownServerError.code(),
                }
                topic.partitions.push(out);
            }
            r.topics.push(topic);
        }
        encode(&r, ApiKey::ListOffsets, version)
    }

    fn offset_for_leader_epoch(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        use kafka_protocol::messages::offset_for_leader_epoch_response::{
            EpochEndOffset, OffsetForLeaderTopicResult,
        };
        let req: OffsetForLeaderEpochRequest = decode(body, ApiKey::OffsetForLeaderEpoch, version)?;
        let queries: Vec<api::EpochQuery> = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| api::EpochQuery {
                    topic: t.topic.0.to_string(),
                    partition: u32::try_from(p.partition).unwrap_or(u32::MAX),
                    current_leader_epoch: u32::try_from(p.current_leader_epoch).ok(),
                    leader_epoch: u32::try_from(p.leader_epoch).unwrap_or(0),
                })
            })
            .collect();
        let mut results = self
            .api
            .offset_for_leader_epoch(&queries, access)
            .into_iter();
        let mut r = OffsetForLeaderEpochResponse::default();
        for t in req.topics {
            let mut topic = OffsetForLeaderTopicResult::default().with_topic(t.topic);
            for p in t.partitions {
                // UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET unless found.
                let mut out = EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1);
                match results.next() {
                    Some(Ok(Some((epoch, end)))) if p.leader_epoch >= 0 => {
                        out.leader_epoch = i32::try_from(epoch).unwrap_or(-1);
                        out.end_offset = i64::try_from(end).unwrap_or(-1);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => out.error_code = kafka_code(e.code()),
                    None => out.error_code = K::UnknownServerError.code(),
                }
                topic.partitions.push(out);
            }
            r.topics.push(topic);
        }
        encode(&r, ApiKey::OffsetForLeaderEpoch, version)
    }

    async fn init_producer_id(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: InitProducerIdRequest = decode(body, ApiKey::InitProducerId, version)?;
        let txn = req.transactional_id.as_ref().map_or("", |t| t.0.as_str());
        let current = (req.producer_id.0 >= 0 && req.producer_epoch >= 0)
            .then(|| (req.producer_id.0, i32::from(req.producer_epoch)));
        let mut r = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        match self.api.init_producer_id(access, txn, current).await {
            Ok(p) => {
                r.producer_id = ProducerId(p.producer_id);
                r.producer_epoch = p.epoch;
            }
            Err(e) => {
                r.error_code = match e {
                    api::InitProducerIdError::TransactionsNotSupported => {
                        K::UnsupportedVersion.code()
                    }
                    api::InitProducerIdError::NotAuthorized { .. } => {
                        K::ClusterAuthorizationFailed.code()
                    }
                    api::InitProducerIdError::InvalidRequest { .. } => K::InvalidRequest.code(),
                    api::InitProducerIdError::Unavailable(_) => K::CoordinatorNotAvailable.code(),
                };
                if let Some(suppressed) = INIT_REFUSED.allow() {
                    warn!(error = %e, suppressed, "Kafka InitProducerId refused");
                }
            }
        }
        encode(&r, ApiKey::InitProducerId, version)
    }

    /// Calls the group coordinator's service in process, as this client.
    pub(crate) fn group_request<T>(body: T, access: &Access) -> tonic::Request<T> {
        let mut req = tonic::Request::new(body);
        req.extensions_mut().insert(access.clone());
        req
    }

    async fn find_coordinator(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: FindCoordinatorRequest = decode(body, ApiKey::FindCoordinator, version)?;
        let keys: Vec<StrBytes> = if version >= 4 {
            req.coordinator_keys.clone()
        } else {
            vec![req.key.clone()]
        };
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let mut c = Coordinator::default()
                .with_key(key.clone())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if req.key_type != 0 {
                c.error_code = K::UnsupportedVersion.code();
                c.error_message = Some(str_bytes(
                    "transactions are not supported yet: produce without transactional.id",
                ));
                found.push(c);
                continue;
            }
            let answer = self
                .groups
                .find_coordinator(Self::group_request(
                    pb::FindCoordinatorRequest {
                        group_id: key.to_string(),
                    },
                    access,
                ))
                .await
                .map(tonic::Response::into_inner);
            match answer {
                Ok(a) if a.error_code == 0 => {
                    match a
                        .coordinator
                        .as_ref()
                        .and_then(|b| host_port(&b.kafka_address).map(|hp| (b.id, hp)))
                    {
                        Some((id, (host, port))) => {
                            c.node_id = broker_id(id);
                            c.host = host;
                            c.port = port;
                        }
                        None => {
                            c.error_code = K::CoordinatorNotAvailable.code();
                            c.error_message =
                                Some(str_bytes("the coordinator has no Kafka listener"));
                        }
                    }
                }
                Ok(a) => {
                    c.error_code = kafka_code_raw(a.error_code);
                    c.error_message = Some(str_bytes(&a.error_message));
                }
                Err(s) => {
                    c.error_code = K::CoordinatorNotAvailable.code();
                    c.error_message = Some(str_bytes(s.message()));
                }
            }
            found.push(c);
        }
        let mut r = FindCoordinatorResponse::default();
        if version >= 4 {
            r.coordinators = found;
        } else if let Some(c) = found.pop() {
            r.error_code = c.error_code;
            r.node_id = c.node_id;
            r.host = c.host;
            r.port = c.port;
            if version >= 1 {
                r.error_message = c.error_message;
            }
        }
        encode(&r, ApiKey::FindCoordinator, version)
    }

    async fn offset_commit(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: OffsetCommitRequest = decode(body, ApiKey::OffsetCommit, version)?;
        let mut offsets = Vec::new();
        let mut r = OffsetCommitResponse::default();
        // Partitions refused before the coordinator sees them, by position.
        let mut refused: Vec<Vec<Option<i16>>> = Vec::new();
        for t in &req.topics {
            let mut row = Vec::new();
            for p in &t.partitions {
                match (
                    u32::try_from(p.partition_index),
                    u64::try_from(p.committed_offset),
                ) {
                    (Ok(partition), Ok(offset)) => {
                        offsets.push(pb::CommitOffset {
                            topic: t.name.0.to_string(),
                            partition,
                            offset,
                            metadata: p
                                .committed_metadata
                                .as_ref()
                                .map_or(String::new(), |m| m.to_string()),
                        });
                        row.push(None);
                    }
                    _ => row.push(Some(K::InvalidRequest.code())),
                }
            }
            refused.push(row);
        }
        let group = req.group_id.0.to_string();
        // Whose commit: a classic member's (checked against its generation
        // here), a KIP-848 member's (its id and epoch go to the
        // coordinator), or one from outside any group (-1, no member id).
        let epoch = req.generation_id_or_member_epoch;
        let mut as_member: Option<(String, i32)> = None;
        let member_check = self
            .group_check(&group, access, Operation::Read)
            .and_then(|()| {
                let classic = self.classic();
                if classic.groups.describe(&group).is_some()
                    || (req.member_id.is_empty() && epoch < 0)
                {
                    classic
                        .groups
                        .may_commit(&group, req.member_id.as_str(), epoch)
                } else {
                    as_member = Some((req.member_id.to_string(), epoch));
                    Ok(())
                }
            });
        let code = if let Err(code) = member_check {
            code
        } else if offsets.is_empty() {
            0
        } else {
            let mut commit = Self::group_request(
                // Classic membership was checked above: for the coordinator
                // this is a commit from outside any KIP-848 generation,
                // refused if such a group has members; the mark lets it
                // through while the classic group has members.
                pb::OffsetCommitRequest {
                    group_id: group.clone(),
                    member_id: as_member.as_ref().map_or(String::new(), |m| m.0.clone()),
                    member_epoch: as_member.as_ref().map_or(-1, |m| m.1),
                    offsets,
                },
                access,
            );
            commit
                .extensions_mut()
                .insert(rivulet_broker::groups::ExternalMemberCommit);
            let answer = self.groups.offset_commit(commit).await;
            match answer {
                Ok(a) => kafka_code_raw(a.get_ref().error_code),
                Err(_) => K::CoordinatorNotAvailable.code(),
            }
        };
        for (t, row) in req.topics.into_iter().zip(refused) {
            let mut topic = OffsetCommitResponseTopic::default().with_name(t.name);
            for (p, refused) in t.partitions.into_iter().zip(row) {
                topic.partitions.push(
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(refused.unwrap_or(code)),
                );
            }
            r.topics.push(topic);
        }
        encode(&r, ApiKey::OffsetCommit, version)
    }

    async fn offset_fetch(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: OffsetFetchRequest = decode(body, ApiKey::OffsetFetch, version)?;
        let asked: Option<Vec<pb::TopicPartitions>> = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| pb::TopicPartitions {
                    topic: t.name.0.to_string(),
                    partitions: t
                        .partition_indexes
                        .iter()
                        .filter_map(|p| u32::try_from(*p).ok())
                        .collect(),
                })
                .collect()
        });
        let answer = self
            .groups
            .offset_fetch(Self::group_request(
                pb::OffsetFetchRequest {
                    group_id: req.group_id.0.to_string(),
                    partitions: asked.clone().unwrap_or_default(),
                },
                access,
            ))
            .await
            .map(tonic::Response::into_inner);
        let (code, committed) = match answer {
            Ok(a) if a.error_code == 0 => (0, a.offsets),
            // A group nobody committed for is not an error: -1 everywhere.
            Ok(a) if a.error_code == ErrorCode::GroupIdNotFound as i32 => (0, Vec::new()),
            Ok(a) => (kafka_code_raw(a.error_code), Vec::new()),
            Err(_) => (K::CoordinatorNotAvailable.code(), Vec::new()),
        };
        let lookup = |topic: &str, partition: i32| {
            committed
                .iter()
                .find(|c| c.topic == topic && i64::from(c.partition) == i64::from(partition))
        };
        let mut r = OffsetFetchResponse::default();
        let partition = |index: i32, c: Option<&pb::CommittedOffset>| {
            let mut out = OffsetFetchResponsePartition::default()
                .with_partition_index(index)
                .with_committed_offset(
                    c.and_then(|c| c.offset)
                        .and_then(|o| i64::try_from(o).ok())
                        .unwrap_or(-1),
                )
                .with_metadata(Some(str_bytes(c.map_or("", |c| c.metadata.as_str()))));
            if version < 2 {
                // v1 has no group-level error code.
                out.error_code = code;
            }
            out
        };
        match &req.topics {
            Some(ts) => {
                for t in ts {
                    let n = t.name.0.as_str();
                    r.topics.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|p| partition(*p, lookup(n, *p)))
                                    .collect(),
                            ),
                    );
                }
            }
            None => {
                let mut by_topic: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
                for c in &committed {
                    let index = i32::try_from(c.partition).unwrap_or(i32::MAX);
                    by_topic
                        .entry(c.topic.as_str())
                        .or_default()
                        .push(partition(index, Some(c)));
                }
                for (t, parts) in by_topic {
                    r.topics.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(name(t))
                            .with_partitions(parts),
                    );
                }
            }
        }
        if version >= 2 {
            r.error_code = code;
        }
        encode(&r, ApiKey::OffsetFetch, version)
    }
}

impl Handler {
    /// KIP-848's heartbeat onto the coordinator's (topics by id on the wire,
    /// by name inside).
    async fn consumer_group_heartbeat(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        use kafka_protocol::messages::consumer_group_heartbeat_response::{
            Assignment, TopicPartitions as WireTps,
        };
        let req: ConsumerGroupHeartbeatRequest =
            decode(body, ApiKey::ConsumerGroupHeartbeat, version)?;
        let group = req.group_id.0.to_string();
        let member = req.member_id.to_string();
        let mut r = ConsumerGroupHeartbeatResponse::default().with_member_epoch(-1);
        let image = self.image();
        let key = (group.clone(), member.clone());
        let full = {
            let owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
            !owned.contains_key(&key) && owned.len() >= MAX_OWNED
        };
        let refused = if req
            .subscribed_topic_regex
            .as_ref()
            .is_some_and(|r| !r.is_empty())
        {
            Some((
                K::InvalidRequest.code(),
                "regular-expression subscriptions are not supported: subscribe to topic names"
                    .to_owned(),
            ))
        } else if full {
            Some((
                K::CoordinatorNotAvailable.code(),
                "too many members on this coordinator".to_owned(),
            ))
        } else {
            None
        };
        if let Some((code, message)) = refused {
            r.error_code = code;
            r.error_message = Some(str_bytes(&message));
            return encode(&r, ApiKey::ConsumerGroupHeartbeat, version);
        }
        let owned = match &req.topic_partitions {
            Some(tps) => {
                let wire: Vec<pb::TopicPartitions> = tps
                    .iter()
                    .filter_map(|tp| {
                        let id = tp.topic_id.as_u128();
                        let t = image.topics().values().find(|t| t.id.as_u128() == id)?;
                        Some(pb::TopicPartitions {
                            topic: t.name.clone(),
                            partitions: tp
                                .partitions
                                .iter()
                                .filter_map(|p| u32::try_from(*p).ok())
                                .collect(),
                        })
                    })
                    .collect();
                wire
            }
            None => self
                .owned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .map(|(o, _)| o.clone())
                .unwrap_or_default(),
        };
        let answer = self
            .groups
            .consumer_group_heartbeat(Self::group_request(
                pb::ConsumerGroupHeartbeatRequest {
                    group_id: group.clone(),
                    member_id: member.clone(),
                    member_epoch: req.member_epoch,
                    subscribed_topics: req
                        .subscribed_topic_names
                        .iter()
                        .flatten()
                        .map(|t| t.0.to_string())
                        .collect(),
                    owned_partitions: owned.clone(),
                    client_id: String::new(),
                    session_timeout_ms: 0,
                },
                access,
            ))
            .await
            .map(tonic::Response::into_inner);
        match answer {
            Ok(a) if a.error_code == 0 => {
                // Remembered only for members the coordinator accepted,
                // under the id it gave (v0 lets it pick one).
                {
                    let mut remembered = self.owned.lock().unwrap_or_else(|e| e.into_inner());
                    remembered.remove(&key);
                    if a.member_epoch >= 0 {
                        remembered.insert(
                            (group.clone(), a.member_id.clone()),
                            (owned, Instant::now()),
                        );
                    }
                }
                r.member_id = Some(str_bytes(&a.member_id));
                r.member_epoch = a.member_epoch;
                r.heartbeat_interval_ms =
                    i32::try_from(a.heartbeat_interval_ms).unwrap_or(i32::MAX);
                if a.member_epoch >= 0 {
                    r.assignment = Some(
                        Assignment::default().with_topic_partitions(
                            a.assignment
                                .iter()
                                .filter_map(|tp| {
                                    let t = image.topic(&tp.topic)?;
                                    Some(
                                        WireTps::default()
                                            .with_topic_id(uuid::Uuid::from_u128(t.id.as_u128()))
                                            .with_partitions(
                                                tp.partitions
                                                    .iter()
                                                    .filter_map(|p| i32::try_from(*p).ok())
                                                    .collect(),
                                            ),
                                    )
                                })
                                .collect(),
                        ),
                    );
                }
            }
            Ok(a) => {
                tracing::debug!(group = %group, error = %a.error_message, "ConsumerGroupHeartbeat refused");
                if matches!(
                    ErrorCode::try_from(a.error_code),
                    Ok(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch)
                ) {
                    self.owned
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                }
                r.error_code = kafka_code_raw(a.error_code);
                r.error_message = Some(str_bytes(&a.error_message));
            }
            Err(s) => {
                r.error_code = K::CoordinatorNotAvailable.code();
                r.error_message = Some(str_bytes(s.message()));
            }
        }
        encode(&r, ApiKey::ConsumerGroupHeartbeat, version)
    }

    async fn join_group(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
        client_id: &str,
    ) -> Result<BytesMut, Failed> {
        let req: JoinGroupRequest = decode(body, ApiKey::JoinGroup, version)?;
        let group = req.group_id.0.to_string();
        let session = Duration::from_millis(u64::try_from(req.session_timeout_ms).unwrap_or(0));
        let rebalance = match u64::try_from(req.rebalance_timeout_ms) {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => session,
        };
        let mut r = JoinGroupResponse::default()
            .with_generation_id(-1)
            .with_member_id(req.member_id.clone());
        let answer = match self.group_check(&group, access, Operation::Read) {
            Err(code) => Err(code),
            Ok(()) => {
                let rx = {
                    let mut c = self.classic();
                    let joined = c.groups.join(
                        Join {
                            group: &group,
                            member_id: req.member_id.as_str(),
                            client_id,
                            protocol_type: req.protocol_type.as_str(),
                            protocols: req
                                .protocols
                                .iter()
                                .map(|p| (p.name.to_string(), p.metadata.clone()))
                                .collect(),
                            session,
                            rebalance,
                        },
                        Instant::now(),
                    );
                    joined.map(|(member, effects)| {
                        let (tx, rx) = oneshot::channel();
                        c.joins.insert((group.clone(), member.clone()), tx);
                        c.deliver(effects);
                        (member, rx)
                    })
                };
                match rx {
                    Err(code) => Err(code),
                    Ok((member, rx)) => {
                        r.member_id = str_bytes(&member);
                        let wait =
                            rebalance.min(crate::classic::MAX_REBALANCE) + Duration::from_secs(5);
                        match tokio::time::timeout(wait, rx).await {
                            Ok(Ok(j)) => Ok(j),
                            _ => Err(K::RebalanceInProgress.code()),
                        }
                    }
                }
            }
        };
        match answer {
            Ok(j) => {
                r.error_code = j.error;
                r.generation_id = j.generation;
                r.protocol_name = Some(str_bytes(j.protocol.as_deref().unwrap_or("")));
                if version >= 7 {
                    r.protocol_type = Some(str_bytes(&j.protocol_type));
                }
                r.leader = str_bytes(&j.leader);
                r.members = j
                    .members
                    .into_iter()
                    .map(|(id, meta)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(&id))
                            .with_metadata(meta)
                    })
                    .collect();
            }
            Err(code) => {
                r.error_code = code;
                r.protocol_name = Some(StrBytes::default());
            }
        }
        encode(&r, ApiKey::JoinGroup, version)
    }

    async fn sync_group(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: SyncGroupRequest = decode(body, ApiKey::SyncGroup, version)?;
        let group = req.group_id.0.to_string();
        let member = req.member_id.to_string();
        let result = match self.group_check(&group, access, Operation::Read) {
            Err(code) => Err(code),
            Ok(()) => {
                let waiting = {
                    let mut c = self.classic();
                    let (now, effects) = c.groups.sync(
                        &group,
                        &member,
                        req.generation_id,
                        req.assignments
                            .iter()
                            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                            .collect(),
                        Instant::now(),
                    );
                    c.deliver(effects);
                    match now {
                        Ok(None) => {
                            let (tx, rx) = oneshot::channel();
                            c.syncs.insert((group.clone(), member.clone()), tx);
                            Ok(rx)
                        }
                        Ok(Some(a)) => Err(Ok(a)),
                        Err(code) => Err(Err(code)),
                    }
                };
                match waiting {
                    Ok(rx) => match tokio::time::timeout(crate::classic::MAX_REBALANCE, rx).await {
                        Ok(Ok(r)) => r,
                        _ => Err(K::RebalanceInProgress.code()),
                    },
                    Err(now) => now,
                }
            }
        };
        let mut r = SyncGroupResponse::default();
        match result {
            Ok(a) => r.assignment = a,
            Err(code) => r.error_code = code,
        }
        if version >= 5 {
            r.protocol_type = req.protocol_type;
            r.protocol_name = req.protocol_name;
        }
        encode(&r, ApiKey::SyncGroup, version)
    }

    fn heartbeat(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: HeartbeatRequest = decode(body, ApiKey::Heartbeat, version)?;
        let group = req.group_id.0.to_string();
        let code = match self.group_check(&group, access, Operation::Read) {
            Err(code) => code,
            Ok(()) => self.classic().groups.heartbeat(
                &group,
                req.member_id.as_str(),
                req.generation_id,
                Instant::now(),
            ),
        };
        encode(
            &HeartbeatResponse::default().with_error_code(code),
            ApiKey::Heartbeat,
            version,
        )
    }

    fn leave_group(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: LeaveGroupRequest = decode(body, ApiKey::LeaveGroup, version)?;
        let group = req.group_id.0.to_string();
        let members: Vec<String> = if version >= 3 {
            req.members
                .iter()
                .map(|m| m.member_id.to_string())
                .collect()
        } else {
            vec![req.member_id.to_string()]
        };
        let mut r = LeaveGroupResponse::default();
        let codes = match self.group_check(&group, access, Operation::Read) {
            Err(code) => {
                r.error_code = code;
                vec![code; members.len()]
            }
            Ok(()) => {
                let mut c = self.classic();
                let (codes, effects) = c.groups.leave(&group, &members, Instant::now());
                c.deliver(effects);
                codes
            }
        };
        if version >= 3 {
            r.members = members
                .iter()
                .zip(&codes)
                .map(|(m, code)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(m))
                        .with_error_code(*code)
                })
                .collect();
        } else {
            r.error_code = codes.first().copied().unwrap_or(0);
        }
        encode(&r, ApiKey::LeaveGroup, version)
    }
}

static INIT_REFUSED: rivulet_metadata::edge::RateLimit =
    rivulet_metadata::edge::RateLimit::new(Duration::from_secs(1));

/// Encodes a response body at `version`.
pub(crate) fn encode<T: Encodable>(
    body: &T,
    key: ApiKey,
    version: i16,
) -> Result<BytesMut, Failed> {
    let mut buf = BytesMut::new();
    body.encode(&mut buf, version)
        .map_err(|e| format!("cannot encode the {key:?} v{version} answer: {e}"))?;
    Ok(buf)
}

/// A whole response frame: size, header, body.
pub(crate) fn frame_response(correlation_id: i32, header_version: i16, body: &[u8]) -> Bytes {
    let mut header = BytesMut::new();
    let h = ResponseHeader::default().with_correlation_id(correlation_id);
    // A header of two known fields always encodes.
    let _ = h.encode(&mut header, header_version);
    let mut out = BytesMut::with_capacity(4 + header.len() + body.len());
    out.put_u32((header.len() + body.len()) as u32);
    out.put_slice(&header);
    out.put_slice(body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wire_count_past_the_bytes_is_refused_before_anything_is_allocated() {
        // Metadata v1: a topic array claiming 2^31 - 1 entries in 4 bytes.
        // Unpatched, the codec reserves ~100 GiB for it and the allocation
        // failure aborts the process (third_party/README.md).
        let mut body = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff]);
        let e = decode::<MetadataRequest>(&mut body, ApiKey::Metadata, 1).unwrap_err();
        assert!(e.contains("bytes remain"), "{e}");
        // Metadata v9 (compact arrays): the count as a varint.
        let mut body = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x07]);
        let e = decode::<MetadataRequest>(&mut body, ApiKey::Metadata, 9).unwrap_err();
        assert!(e.contains("bytes remain"), "{e}");
        // A JoinGroup whose protocol list claims more than it holds.
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_slice(b"g");
        b.put_i32(10_000);
        b.put_i16(0);
        b.put_i16(8);
        b.put_slice(b"consumer");
        b.put_i32(i32::MAX);
        let mut body = b.freeze();
        assert!(decode::<JoinGroupRequest>(&mut body, ApiKey::JoinGroup, 0).is_err());
    }

    #[test]
    fn advertised_host_ports_split_for_the_wire() {
        assert_eq!(
            host_port("10.0.0.1:19092").map(|(h, p)| (h.to_string(), p)),
            Some(("10.0.0.1".into(), 19092))
        );
        assert_eq!(
            host_port("[::1]:9093").map(|(h, p)| (h.to_string(), p)),
            Some(("::1".into(), 9093))
        );
        assert!(host_port("nohost").is_none());
        assert!(host_port(":9092").is_none());
        assert!(host_port("h:99999").is_none());
    }
}
