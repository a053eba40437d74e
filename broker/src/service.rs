//! The gRPC edge of the data plane: the client-facing `Broker` service and
//! the broker-to-broker `Replication` service, as thin translations onto the
//! protocol-neutral [`crate::api`].
//!
//! Per-partition problems come back as error codes in the partition's answer
//! (with a leader hint when the client should go elsewhere); gRPC status codes
//! are for whole-request problems (an unknown `acks` value, a node shutting
//! down).

use std::sync::Arc;
use std::time::Duration;

use rivulet_metadata::convert::{broker_info, topic_info};
use rivulet_proto::v1::broker_server::{Broker, BrokerServer};
use rivulet_proto::v1::list_offsets_partition::Spec;
use rivulet_proto::v1::produce_partition::Data;
use rivulet_proto::v1::replication_server::{Replication, ReplicationServer};
use rivulet_proto::v1::{
    Acks, DivergingEpoch, ErrorCode, FetchPartitionResponse, FetchRequest, FetchResponse,
    InitProducerIdRequest, InitProducerIdResponse, LeaderHint, ListOffsetsPartitionResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetSpec,
    ProducePartitionResponse, ProduceRequest, ProduceResponse, RecordList,
    ReplicaFetchPartitionResponse, ReplicaFetchRequest, ReplicaFetchResponse,
};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use rivulet_metadata::security::Access;

use crate::api::{self, ApiError, BrokerApi, OffsetQuery};
use crate::budget::{Budgeted, Held};
use crate::control::ReadyGate;
use crate::log::batch::RecordInput;
use crate::replica::partition::now_ms;
use crate::replica::{PartitionError, ReplicaManager};

pub use rivulet_common::limits::MAX_MESSAGE_BYTES;

/// Both data-plane services over the broker API; cheap to clone.
#[derive(Debug, Clone)]
pub struct BrokerRpc {
    api: BrokerApi,
}

impl BrokerRpc {
    /// The client-facing service: refuses every call with a retriable
    /// not-ready `UNAVAILABLE` until the node has caught up with the
    /// metadata log (KIP-631).
    ///
    /// Its requests and responses spend the node's in-flight byte budget
    /// (`BrokerConfig::max_inflight_bytes`, Kafka's
    /// `queued.max.request.bytes`).
    pub fn broker_server(
        mgr: Arc<ReplicaManager>,
    ) -> Budgeted<InterceptedService<BrokerServer<Self>, ReadyGate>> {
        let gate = ReadyGate(Arc::clone(&mgr.registration));
        let budget = Arc::clone(mgr.client_budget());
        let server = BrokerServer::new(Self {
            api: BrokerApi::new(mgr),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Budgeted::new(
            InterceptedService::new(server, gate),
            budget,
            MAX_MESSAGE_BYTES,
        )
    }

    /// The follower-fetch service.
    pub fn replication_server(mgr: Arc<ReplicaManager>) -> ReplicationServer<Self> {
        ReplicationServer::new(Self {
            api: BrokerApi::new(mgr),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Error code, message and leader hint for a failed partition: the one
    /// per-partition failure fill of every answer.
    fn failure(
        &self,
        topic: &str,
        partition: u32,
        e: &PartitionError,
    ) -> (i32, String, Option<LeaderHint>) {
        let hint = self.api.redirect(topic, partition, e).map(|l| LeaderHint {
            id: l.id,
            address: l.address,
            leader_epoch: l.leader_epoch,
        });
        (e.code().into(), format!("{topic}-{partition}: {e}"), hint)
    }
}

/// A whole-request failure as a gRPC status.
fn status(e: ApiError) -> Status {
    match e {
        ApiError::InvalidRequest(m) => Status::invalid_argument(m),
        ApiError::UnknownBroker(_) => Status::failed_precondition(e.to_string()),
        ApiError::ShuttingDown => Status::unavailable(e.to_string()),
        ApiError::Busy(_) => Status::resource_exhausted(e.to_string()),
        ApiError::Internal(m) => Status::internal(m),
    }
}

/// The producer fields of a `records` entry: all three or none.
fn producer_stamp(
    pid: Option<i64>,
    epoch: Option<i32>,
    seq: Option<i32>,
) -> Result<Option<rivulet_common::batch::ProducerStamp>, PartitionError> {
    match (pid, epoch, seq) {
        (None, None, None) => Ok(None),
        (Some(producer_id), Some(epoch), Some(base_sequence))
            if producer_id >= 0
                && base_sequence >= 0
                && (0..=i32::from(i16::MAX)).contains(&epoch) =>
        {
            Ok(Some(rivulet_common::batch::ProducerStamp {
                producer_id,
                producer_epoch: epoch as i16,
                base_sequence,
            }))
        }
        _ => Err(PartitionError::InvalidRequest(
            "producer_id, producer_epoch and base_sequence go together, and none may be negative"
                .into(),
        )),
    }
}

/// Encodes convenience records into one batch; timestamp 0 means now.
fn encode_records(
    list: RecordList,
    producer: Option<rivulet_common::batch::ProducerStamp>,
) -> Result<Vec<u8>, PartitionError> {
    if list.records.is_empty() {
        return Err(PartitionError::InvalidRequest(
            "no records to produce".into(),
        ));
    }
    let now = now_ms();
    let inputs: Vec<RecordInput> = list
        .records
        .into_iter()
        .map(|r| RecordInput {
            key: r.key,
            value: r.value,
            headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
            timestamp_ms: if r.timestamp_ms == 0 {
                now
            } else {
                r.timestamp_ms
            },
        })
        .collect();
    rivulet_common::batch::build_producer_batch(
        &inputs,
        rivulet_common::batch::Compression::None,
        producer,
    )
    .map(|b| b.to_vec())
    .map_err(|e| PartitionError::InvalidRequest(e.to_string()))
}

/// The effective acks level: unspecified means all.
fn acks_level(raw: i32) -> Result<api::Acks, Status> {
    match Acks::try_from(raw) {
        Ok(Acks::Unspecified) | Ok(Acks::All) => Ok(api::Acks::All),
        Ok(Acks::None) => Ok(api::Acks::None),
        Ok(Acks::Leader) => Ok(api::Acks::Leader),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown acks value {raw}: use ACKS_NONE (1), ACKS_LEADER (2) or ACKS_ALL (3; \
             0, unspecified, means ACKS_ALL)"
        ))),
    }
}

#[tonic::async_trait]
impl Broker for BrokerRpc {
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let held = request.extensions().get::<Held>().cloned();
        let access = Access::of(&request);
        let r = request.into_inner();
        let acks = acks_level(r.acks)?;
        api::check_entry_count(r.partitions.len()).map_err(status)?;
        let mut out: Vec<ProducePartitionResponse> = Vec::with_capacity(r.partitions.len());
        let mut entries = Vec::with_capacity(r.partitions.len());
        for pp in r.partitions {
            out.push(ProducePartitionResponse {
                topic: pp.topic.clone(),
                partition: pp.partition,
                log_append_time_ms: -1,
                ..Default::default()
            });
            let batch = match pp.data {
                Some(Data::Records(list)) => {
                    producer_stamp(pp.producer_id, pp.producer_epoch, pp.base_sequence)
                        .and_then(|stamp| encode_records(list, stamp))
                }
                Some(Data::RecordBatch(b)) if !b.is_empty() => Ok(b.into()),
                _ => Err(PartitionError::InvalidRequest(
                    "no records: give records or a record batch".into(),
                )),
            };
            entries.push(api::ProduceEntry {
                topic: pp.topic,
                partition: pp.partition,
                batch,
            });
        }
        let results = self
            .api
            .produce(api::ProduceRequest {
                acks,
                timeout: (r.timeout_ms > 0).then(|| Duration::from_millis(u64::from(r.timeout_ms))),
                entries,
                held,
                access,
                appended: None,
            })
            .await
            .map_err(status)?;
        for (p, res) in out.iter_mut().zip(results) {
            p.appended = res.appended;
            p.base_offset = res.base_offset;
            p.leader_epoch = res.leader_epoch;
            p.log_start_offset = res.log_start_offset;
            if let Some(e) = res.error {
                (p.error_code, p.error_message, p.leader) = self.failure(&p.topic, p.partition, &e);
            }
        }
        Ok(Response::new(ProduceResponse { partitions: out }))
    }

    async fn init_producer_id(
        &self,
        request: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        let access = Access::of(&request);
        let r = request.into_inner();
        let current = match (r.producer_id, r.producer_epoch) {
            (Some(id), Some(epoch)) => Some((id, epoch)),
            (None, None) => None,
            _ => {
                return Err(Status::invalid_argument(
                    "producer_id and producer_epoch go together",
                ))
            }
        };
        let answer = self
            .api
            .init_producer_id(&access, &r.transactional_id, current)
            .await;
        Ok(Response::new(match answer {
            Ok(p) => InitProducerIdResponse {
                error_code: ErrorCode::None.into(),
                error_message: String::new(),
                producer_id: p.producer_id,
                producer_epoch: i32::from(p.epoch),
            },
            Err(e) => InitProducerIdResponse {
                error_code: match e {
                    api::InitProducerIdError::TransactionsNotSupported => {
                        ErrorCode::TransactionsNotSupported
                    }
                    api::InitProducerIdError::NotAuthorized { .. } => {
                        ErrorCode::ClusterAuthorizationFailed
                    }
                    api::InitProducerIdError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
                    api::InitProducerIdError::Unavailable(_) => ErrorCode::CoordinatorNotAvailable,
                }
                .into(),
                error_message: e.to_string(),
                producer_id: -1,
                producer_epoch: -1,
            },
        }))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let held = request.extensions().get::<Held>().cloned();
        let access = Access::of(&request);
        let r = request.into_inner();
        let req = api::FetchRequest {
            partitions: r
                .partitions
                .iter()
                .map(|fp| api::FetchPartition {
                    topic: fp.topic.clone(),
                    partition: fp.partition,
                    offset: fp.offset,
                    max_bytes: fp.partition_max_bytes as usize,
                    current_leader_epoch: fp.current_leader_epoch,
                })
                .collect(),
            max_bytes: r.max_bytes as usize,
            min_bytes: r.min_bytes as usize,
            max_wait: Duration::from_millis(u64::from(r.max_wait_ms)),
            access,
        };
        let results = self.api.fetch(req, held).await.map_err(status)?;
        let partitions = r
            .partitions
            .iter()
            .zip(results)
            .map(|(fp, res)| {
                let mut p = FetchPartitionResponse {
                    topic: fp.topic.clone(),
                    partition: fp.partition,
                    ..Default::default()
                };
                match res {
                    Ok((records, offsets, epoch)) => {
                        p.records = records;
                        p.high_watermark = offsets.high_watermark;
                        p.log_start_offset = offsets.log_start_offset;
                        p.leader_epoch = epoch;
                    }
                    Err(e) => {
                        (p.error_code, p.error_message, p.leader) =
                            self.failure(&fp.topic, fp.partition, &e);
                    }
                }
                p
            })
            .collect();
        Ok(Response::new(FetchResponse { partitions }))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let access = Access::of(&request);
        let r = request.into_inner();
        let asked: Vec<api::ListOffsetsPartition> = r
            .partitions
            .iter()
            .map(|lp| api::ListOffsetsPartition {
                topic: lp.topic.clone(),
                partition: lp.partition,
                query: match lp.spec {
                    Some(Spec::TimestampMs(ts)) => Some(OffsetQuery::from_timestamp(ts)),
                    Some(Spec::OffsetSpec(s)) if s == OffsetSpec::Earliest as i32 => {
                        Some(OffsetQuery::Earliest)
                    }
                    Some(Spec::OffsetSpec(s)) if s == OffsetSpec::Latest as i32 => {
                        Some(OffsetQuery::Latest)
                    }
                    _ => None,
                },
                current_leader_epoch: lp.current_leader_epoch,
            })
            .collect();
        let results = self
            .api
            .list_offsets(asked, &access)
            .await
            .map_err(status)?;
        let partitions = r
            .partitions
            .into_iter()
            .zip(results)
            .map(|(lp, res)| {
                let mut p = ListOffsetsPartitionResponse {
                    topic: lp.topic,
                    partition: lp.partition,
                    ..Default::default()
                };
                match res {
                    Ok(listed) => {
                        p.offset = listed.offset;
                        p.leader_epoch = listed.leader_epoch;
                    }
                    Err(e) => {
                        (p.error_code, p.error_message, p.leader) =
                            self.failure(&p.topic, p.partition, &e);
                    }
                }
                p
            })
            .collect();
        Ok(Response::new(ListOffsetsResponse { partitions }))
    }

    async fn metadata(
        &self,
        request: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let access = Access::of(&request);
        let r = request.into_inner();
        let view = self.api.metadata(&r.topics, &access).await;
        let image = &view.image;
        let topics = if r.topics.is_empty() {
            image
                .topics()
                .values()
                .filter(|t| view.described.contains(&t.name))
                .map(topic_info)
                .collect()
        } else {
            r.topics
                .iter()
                .filter(|n| view.described.contains(*n))
                .filter_map(|n| image.topic(n))
                .map(topic_info)
                .collect()
        };
        Ok(Response::new(MetadataResponse {
            cluster_id: image.cluster_id().to_owned(),
            controller_id: view.controller_id,
            brokers: image.brokers().values().map(broker_info).collect(),
            topics,
            unknown_topics: view.unknown_topics,
            unauthorized_topics: view.unauthorized_topics,
        }))
    }
}

#[tonic::async_trait]
impl Replication for BrokerRpc {
    async fn replica_fetch(
        &self,
        request: Request<ReplicaFetchRequest>,
    ) -> Result<Response<ReplicaFetchResponse>, Status> {
        // A node fetches only as itself: its fetches move the HW.
        if let Some(rivulet_proto::node_auth::CallerNode(caller)) = request.extensions().get() {
            if *caller != request.get_ref().replica_id {
                return Err(Status::permission_denied(format!(
                    "node {caller} may not fetch as replica {}",
                    request.get_ref().replica_id
                )));
            }
        }
        let r = request.into_inner();
        let req = api::ReplicaFetchRequest {
            replica_id: r.replica_id,
            broker_epoch: r.broker_epoch,
            partitions: r
                .partitions
                .iter()
                .map(|fp| api::ReplicaFetchPartition {
                    topic: fp.topic.clone(),
                    partition: fp.partition,
                    current_leader_epoch: fp.current_leader_epoch,
                    fetch_offset: fp.fetch_offset,
                    last_fetched_epoch: fp.last_fetched_epoch,
                    max_bytes: fp.partition_max_bytes as usize,
                    storage_failed: fp.storage_failed,
                })
                .collect(),
            max_bytes: r.max_bytes as usize,
            min_bytes: r.min_bytes as usize,
            max_wait: Duration::from_millis(u64::from(r.max_wait_ms)),
        };
        let results = self.api.replica_fetch(req).await.map_err(status)?;
        let partitions = r
            .partitions
            .into_iter()
            .zip(results)
            .map(|(fp, res)| {
                let mut out = ReplicaFetchPartitionResponse {
                    topic: fp.topic,
                    partition: fp.partition,
                    ..Default::default()
                };
                match res {
                    Ok(read) => {
                        out.records = read.records;
                        out.high_watermark = read.high_watermark;
                        out.log_start_offset = read.log_start_offset;
                        out.leader_log_end_offset = read.log_end_offset;
                        out.diverging_epoch = read
                            .diverging
                            .map(|(epoch, end_offset)| DivergingEpoch { epoch, end_offset });
                    }
                    // Followers act on the code; no leader hint (they follow
                    // the image).
                    Err(e) => {
                        out.error_code = e.code().into();
                        out.error_message = e.to_string();
                    }
                }
                out
            })
            .collect();
        Ok(Response::new(ReplicaFetchResponse { partitions }))
    }
}
