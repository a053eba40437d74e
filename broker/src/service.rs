//! The gRPC edge of the data plane: the client-facing `Broker` service and
//! the broker-to-broker `Replication` service.
//!
//! Per-partition problems come back as error codes in the partition's answer
//! (with a leader hint when the client should go elsewhere); gRPC status codes
//! are for whole-request problems (an unknown `acks` value, a node shutting
//! down). Log work (appends that may fsync, reads) runs on blocking threads.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rivulet_metadata::quorum::{broker_info, topic_info, ReadyGate, CATCH_UP_TIMEOUT};
use rivulet_metadata::BrokerId;
use rivulet_proto::v1::broker_server::{Broker, BrokerServer};
use rivulet_proto::v1::list_offsets_partition::Spec;
use rivulet_proto::v1::produce_partition::Data;
use rivulet_proto::v1::replication_server::{Replication, ReplicationServer};
use rivulet_proto::v1::{
    Acks, DivergingEpoch, ErrorCode, FetchPartitionResponse, FetchRequest, FetchResponse,
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetSpec, ProducePartitionResponse, ProduceRequest, ProduceResponse,
    RecordList, ReplicaFetchPartitionResponse, ReplicaFetchRequest, ReplicaFetchResponse,
};
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::budget::{Budgeted, ByteBudget, Held};
use crate::log::batch::{build_batch, RecordInput};
use crate::replica::partition::now_ms;
use crate::replica::{Partition, PartitionError, ReplicaManager};

/// Largest gRPC message the services accept or send.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Most partition entries one Produce request may carry: a bound on the
/// work (blocking tasks, waiters) one request can cause.
const MAX_PRODUCE_ENTRIES: usize = 1_000;
/// acks=all wait when the request gives none (ms).
const DEFAULT_PRODUCE_TIMEOUT_MS: u32 = 30_000;
/// The longest acks=all wait a request may ask for (ms): a waiter holds
/// memory until it ends.
const MAX_PRODUCE_TIMEOUT_MS: u32 = 300_000;
/// Per-partition fetch limit when the request gives none.
const DEFAULT_PARTITION_MAX_BYTES: usize = 1 << 20;
/// Whole-response fetch limit when the request gives none.
const DEFAULT_FETCH_MAX_BYTES: usize = 50 << 20;
/// Longest long poll a client may ask for (ms).
const MAX_WAIT_CAP_MS: u32 = 60_000;

/// Both data-plane services over one replica manager; cheap to clone.
#[derive(Debug, Clone)]
pub struct BrokerRpc {
    mgr: Arc<ReplicaManager>,
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
        let gate = ReadyGate(Arc::clone(&mgr.quorum));
        let budget = ByteBudget::new(mgr.config.max_inflight_bytes);
        let server = BrokerServer::new(Self { mgr })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Budgeted::new(InterceptedService::new(server, gate), budget)
    }

    /// The follower-fetch service.
    pub fn replication_server(mgr: Arc<ReplicaManager>) -> ReplicationServer<Self> {
        ReplicationServer::new(Self { mgr })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Error code, message and leader hint for a failed partition.
    fn failure(
        &self,
        topic: &str,
        partition: u32,
        e: &PartitionError,
    ) -> (i32, String, Option<rivulet_proto::v1::LeaderHint>) {
        let code = e.code();
        let hint = matches!(
            code,
            ErrorCode::NotLeaderOrFollower
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::LeaderNotAvailable
        )
        .then(|| self.mgr.leader_hint(topic, partition))
        .flatten();
        (code.into(), format!("{topic}-{partition}: {e}"), hint)
    }
}

/// Encodes convenience records into one batch; timestamp 0 means now.
fn encode_records(list: RecordList) -> Result<Vec<u8>, PartitionError> {
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
    Ok(build_batch(&inputs)?.to_vec())
}

/// The effective acks level: unspecified means all.
fn acks_level(raw: i32) -> Result<Acks, Status> {
    match Acks::try_from(raw) {
        Ok(Acks::Unspecified) | Ok(Acks::All) => Ok(Acks::All),
        Ok(a) => Ok(a),
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
        let r = request.into_inner();
        let acks = acks_level(r.acks)?;
        if r.partitions.len() > MAX_PRODUCE_ENTRIES {
            return Err(Status::invalid_argument(format!(
                "{} partition entries in one Produce request; at most {MAX_PRODUCE_ENTRIES}",
                r.partitions.len()
            )));
        }
        if r.timeout_ms > MAX_PRODUCE_TIMEOUT_MS {
            return Err(Status::invalid_argument(format!(
                "timeout_ms {} is over the limit of {MAX_PRODUCE_TIMEOUT_MS}",
                r.timeout_ms
            )));
        }
        let timeout_ms = if r.timeout_ms == 0 {
            DEFAULT_PRODUCE_TIMEOUT_MS
        } else {
            r.timeout_ms
        };
        let mut out: Vec<ProducePartitionResponse> = Vec::with_capacity(r.partitions.len());
        let mut work: Vec<(usize, Arc<Partition>, Vec<u8>)> = Vec::new();
        for pp in r.partitions {
            let i = out.len();
            out.push(ProducePartitionResponse {
                topic: pp.topic.clone(),
                partition: pp.partition,
                log_append_time_ms: -1,
                ..Default::default()
            });
            let batch = match pp.data {
                Some(Data::Records(list)) => encode_records(list),
                Some(Data::RecordBatch(b)) if !b.is_empty() => Ok(b.into()),
                _ => Err(PartitionError::InvalidRequest(
                    "no records: give records or a record batch".into(),
                )),
            };
            let part = self.mgr.partition(&pp.topic, pp.partition);
            match (part, batch) {
                (Ok(part), Ok(batch)) => work.push((i, part, batch)),
                (Err(e), _) | (_, Err(e)) => {
                    let (code, msg, hint) = self.failure(&pp.topic, pp.partition, &e);
                    out[i].error_code = code;
                    out[i].error_message = msg;
                    out[i].leader = hint;
                }
            }
        }
        let require_min_isr = acks == Acks::All;
        // One blocking task per partition, appending that partition's
        // entries in request order (the .proto's promise); the partitions'
        // fsyncs overlap.
        let mut per_partition: Vec<(Arc<Partition>, Vec<(usize, Vec<u8>)>)> = Vec::new();
        for (i, part, batch) in work {
            match per_partition
                .iter_mut()
                .find(|(p, _)| Arc::ptr_eq(p, &part))
            {
                Some((_, entries)) => entries.push((i, batch)),
                None => per_partition.push((part, vec![(i, batch)])),
            }
        }
        let mut appends = tokio::task::JoinSet::new();
        for (part, entries) in per_partition {
            appends.spawn_blocking(move || {
                entries
                    .into_iter()
                    .map(|(i, mut batch)| {
                        let r = part.append_as_leader(&mut batch, require_min_isr);
                        (i, Arc::clone(&part), r)
                    })
                    .collect::<Vec<_>>()
            });
        }
        if acks == Acks::None {
            // Fire and forget: answer before the appends finish.
            appends.detach_all();
            return Ok(Response::new(ProduceResponse { partitions: out }));
        }
        let mut appended = Vec::with_capacity(out.len());
        while let Some(done) = appends.join_next().await {
            appended
                .extend(done.map_err(|e| Status::internal(format!("append task failed: {e}")))?);
        }
        let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        for (i, part, result) in appended {
            let (topic, partition) = (part.topic.clone(), part.partition);
            let result = match result {
                Ok((info, epoch)) => {
                    out[i].appended = true;
                    out[i].leader_epoch = epoch;
                    out[i].base_offset = info.base_offset;
                    out[i].log_start_offset = part.offsets().log_start_offset;
                    if acks == Acks::All {
                        match tokio::time::timeout_at(
                            deadline,
                            part.wait_committed(epoch, info.last_offset),
                        )
                        .await
                        {
                            Ok(r) => r,
                            Err(_) => Err(PartitionError::Timeout(timeout_ms)),
                        }
                    } else {
                        Ok(())
                    }
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                let (code, msg, hint) = self.failure(&topic, partition, &e);
                out[i].error_code = code;
                out[i].error_message = msg;
                out[i].leader = hint;
            }
        }
        Ok(Response::new(ProduceResponse { partitions: out }))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let held = request.extensions().get::<Held>().cloned();
        let r = request.into_inner();
        // The node's cap bounds the response whatever the request asks
        // (Kafka's fetch.max.bytes): a request naming a big partition many
        // times with huge limits gets at most this much, read lazily.
        let node_max = self.mgr.config.fetch_max_bytes;
        let max_bytes = if r.max_bytes == 0 {
            DEFAULT_FETCH_MAX_BYTES
        } else {
            r.max_bytes as usize
        }
        .min(node_max);
        let deadline =
            Instant::now() + Duration::from_millis(u64::from(r.max_wait_ms.min(MAX_WAIT_CAP_MS)));
        let wanted = Arc::new(r.partitions);
        // What one read may return: what the node's in-flight budget must
        // hold before the read (see `budget`).
        let read_max = wanted
            .iter()
            .map(|fp| match fp.partition_max_bytes {
                0 => DEFAULT_PARTITION_MAX_BYTES,
                n => n as usize,
            })
            .fold(0usize, |sum, n| sum.saturating_add(n.min(node_max)))
            .min(max_bytes);
        let mut committed = self.mgr.signals.committed.subscribe();
        loop {
            committed.borrow_and_update();
            let mgr = Arc::clone(&self.mgr);
            let req = Arc::clone(&wanted);
            let mut reserved = match &held {
                Some(h) => Some(h.budget().reserve(read_max).await),
                None => None,
            };
            let (results, total) = tokio::task::spawn_blocking(move || {
                let mut total = 0usize;
                let results: Vec<_> = req
                    .iter()
                    .map(|fp| {
                        let limit = match fp.partition_max_bytes {
                            0 => DEFAULT_PARTITION_MAX_BYTES,
                            n => n as usize,
                        }
                        .min(node_max)
                        .min(max_bytes.saturating_sub(total));
                        let r = mgr.partition(&fp.topic, fp.partition).and_then(|p| {
                            if limit == 0 {
                                let (o, epoch, hw) = p.leader_offsets(fp.current_leader_epoch)?;
                                hw?;
                                return Ok((Bytes::new(), o, epoch));
                            }
                            p.read_committed(fp.offset, limit, fp.current_leader_epoch)
                        });
                        if let Ok((b, _, _)) = &r {
                            total += b.len();
                        }
                        r
                    })
                    .collect();
                (results, total)
            })
            .await
            .map_err(|e| Status::internal(format!("read task failed: {e}")))?;
            let any_error = results.iter().any(Result::is_err);
            let done = any_error
                || total >= (r.min_bytes as usize).max(1)
                || r.min_bytes == 0
                || Instant::now() >= deadline;
            if done {
                // What was read stays reserved until the response is sent.
                if let (Some(h), Some(mut res)) = (&held, reserved.take()) {
                    res.shrink_to(total);
                    h.keep(res);
                }
                let partitions = wanted
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
                                let (code, msg, hint) = self.failure(&fp.topic, fp.partition, &e);
                                p.error_code = code;
                                p.error_message = msg;
                                p.leader = hint;
                            }
                        }
                        p
                    })
                    .collect();
                return Ok(Response::new(FetchResponse { partitions }));
            }
            // Long poll: wake when any HW moves.
            if tokio::time::timeout_at(deadline, committed.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return Err(Status::unavailable("the broker is shutting down"));
            }
        }
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let r = request.into_inner();
        let mgr = Arc::clone(&self.mgr);
        let results = tokio::task::spawn_blocking(move || {
            r.partitions
                .into_iter()
                .map(|lp| {
                    let res = mgr.partition(&lp.topic, lp.partition).and_then(|p| {
                        let (offsets, epoch, hw_available) =
                            p.leader_offsets(lp.current_leader_epoch)?;
                        // Kafka reads the timestamps -2 and -1 as EARLIEST
                        // and LATEST (ListOffsets v0+); so do we.
                        let spec = match lp.spec {
                            Some(Spec::TimestampMs(-2)) => {
                                Some(Spec::OffsetSpec(OffsetSpec::Earliest as i32))
                            }
                            Some(Spec::TimestampMs(-1)) => {
                                Some(Spec::OffsetSpec(OffsetSpec::Latest as i32))
                            }
                            other => other,
                        };
                        let offset = match spec {
                            Some(Spec::OffsetSpec(s)) if s == OffsetSpec::Earliest as i32 => {
                                Some(offsets.log_start_offset)
                            }
                            // Both depend on the HW: not while it may be
                            // below one already answered (KIP-207).
                            Some(Spec::OffsetSpec(s)) if s == OffsetSpec::Latest as i32 => {
                                hw_available?;
                                Some(offsets.high_watermark)
                            }
                            Some(Spec::TimestampMs(ts)) => {
                                hw_available?;
                                p.log
                                    .offset_for_timestamp(ts)?
                                    .filter(|o| *o < offsets.high_watermark)
                            }
                            _ => {
                                return Err(PartitionError::InvalidRequest(
                                    "give an offset spec (EARLIEST or LATEST) or a timestamp"
                                        .into(),
                                ))
                            }
                        };
                        Ok((offset, epoch))
                    });
                    (lp.topic, lp.partition, res)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Status::internal(format!("list offsets task failed: {e}")))?;
        let partitions = results
            .into_iter()
            .map(|(topic, partition, res)| {
                let mut p = ListOffsetsPartitionResponse {
                    topic: topic.clone(),
                    partition,
                    ..Default::default()
                };
                match res {
                    Ok((offset, epoch)) => {
                        p.offset = offset;
                        p.leader_epoch = epoch;
                    }
                    Err(e) => {
                        let (code, msg, hint) = self.failure(&topic, partition, &e);
                        p.error_code = code;
                        p.error_message = msg;
                        p.leader = hint;
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
        let r = request.into_inner();
        let mut image = self.mgr.image();
        // A topic this node does not know may have been created through
        // another node a moment ago: catch up with the controller before
        // calling it unknown (KIP-631's "fresh after a write").
        if r.topics.iter().any(|n| image.topic(n).is_none())
            && self
                .mgr
                .quorum
                .catch_up_with_controller(CATCH_UP_TIMEOUT)
                .await
        {
            image = self.mgr.image();
        }
        let brokers = image.brokers().values().map(broker_info).collect();
        let (topics, unknown_topics) = if r.topics.is_empty() {
            (image.topics().values().map(topic_info).collect(), vec![])
        } else {
            let mut known = vec![];
            let mut unknown = vec![];
            for name in r.topics {
                match image.topic(&name) {
                    Some(t) => known.push(topic_info(t)),
                    None => unknown.push(name),
                }
            }
            (known, unknown)
        };
        Ok(Response::new(MetadataResponse {
            cluster_id: image.cluster_id().to_owned(),
            controller_id: self.mgr.quorum.leader().map(|(id, _)| id),
            brokers,
            topics,
            unknown_topics,
        }))
    }
}

#[tonic::async_trait]
impl Replication for BrokerRpc {
    async fn replica_fetch(
        &self,
        request: Request<ReplicaFetchRequest>,
    ) -> Result<Response<ReplicaFetchResponse>, Status> {
        let r = request.into_inner();
        let image = self.mgr.image();
        // A fetch from an old incarnation of the follower is refused: its
        // progress must not count toward the HW.
        let stale = match image.broker(BrokerId(r.replica_id)) {
            Some(b) if r.broker_epoch < b.broker_epoch => Some(PartitionError::StaleBrokerEpoch {
                broker: r.replica_id,
                request: r.broker_epoch,
                current: b.broker_epoch,
            }),
            Some(_) => None,
            None => {
                return Err(Status::failed_precondition(format!(
                    "broker {} is not registered",
                    r.replica_id
                )))
            }
        };
        if let Some(e) = stale {
            let partitions = r
                .partitions
                .iter()
                .map(|p| ReplicaFetchPartitionResponse {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    error_code: e.code().into(),
                    error_message: e.to_string(),
                    ..Default::default()
                })
                .collect();
            return Ok(Response::new(ReplicaFetchResponse { partitions }));
        }
        let deadline =
            Instant::now() + Duration::from_millis(u64::from(r.max_wait_ms.min(MAX_WAIT_CAP_MS)));
        let max_bytes = if r.max_bytes == 0 {
            DEFAULT_FETCH_MAX_BYTES
        } else {
            r.max_bytes as usize
        };
        let wanted = Arc::new(r.partitions);
        let mut appended = self.mgr.signals.appended.subscribe();
        loop {
            appended.borrow_and_update();
            let mgr = Arc::clone(&self.mgr);
            let req = Arc::clone(&wanted);
            let replica = r.replica_id;
            let (partitions, total, urgent) = tokio::task::spawn_blocking(move || {
                let mut total = 0usize;
                let mut urgent = false;
                let partitions: Vec<_> = req
                    .iter()
                    .map(|fp| {
                        let limit = match fp.partition_max_bytes {
                            0 => DEFAULT_PARTITION_MAX_BYTES,
                            n => n as usize,
                        }
                        .min(max_bytes.saturating_sub(total))
                        .max(1);
                        let mut out = ReplicaFetchPartitionResponse {
                            topic: fp.topic.clone(),
                            partition: fp.partition,
                            ..Default::default()
                        };
                        let res = mgr.partition(&fp.topic, fp.partition).and_then(|p| {
                            let read = p.replica_fetch(
                                replica,
                                fp.current_leader_epoch,
                                fp.fetch_offset,
                                fp.last_fetched_epoch,
                                limit,
                            );
                            if fp.storage_failed {
                                p.follower_storage_failed(replica);
                            }
                            read
                        });
                        match res {
                            Ok(read) => {
                                total += read.records.len();
                                urgent |= read.diverging.is_some();
                                out.records = read.records;
                                out.high_watermark = read.high_watermark;
                                out.log_start_offset = read.log_start_offset;
                                out.leader_log_end_offset = read.log_end_offset;
                                out.diverging_epoch = read.diverging.map(|(epoch, end_offset)| {
                                    DivergingEpoch { epoch, end_offset }
                                });
                            }
                            Err(e) => {
                                urgent = true;
                                out.error_code = e.code().into();
                                out.error_message = e.to_string();
                            }
                        }
                        out
                    })
                    .collect();
                (partitions, total, urgent)
            })
            .await
            .map_err(|e| Status::internal(format!("replica fetch task failed: {e}")))?;
            if urgent || total >= (r.min_bytes as usize).max(1) || Instant::now() >= deadline {
                return Ok(Response::new(ReplicaFetchResponse { partitions }));
            }
            if let Ok(Err(_)) = tokio::time::timeout_at(deadline, appended.changed()).await {
                return Err(Status::unavailable("the broker is shutting down"));
            }
        }
    }
}
