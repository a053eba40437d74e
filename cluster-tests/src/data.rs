//! Data-plane helpers on [`Cluster`]: topics with configs, partition state,
//! produce to the current leader, read a whole partition back, and the raw
//! bytes of a replica's log for byte-for-byte comparisons.

use std::time::Duration;

use crate::cluster::Channel;
use bytes::Bytes;
use rivulet_common::batch::{Compression, RecordInput};
use rivulet_proto::v1::broker_client::BrokerClient;
use rivulet_proto::v1::produce_partition::Data;
use rivulet_proto::v1::{
    Acks, ConfigEntry, CreateTopicRequest, ErrorCode, LeaderHint, MetadataRequest, PartitionInfo,
    ProducePartition, ProduceRequest, ProduceResponse,
};

use crate::cluster::Cluster;
use crate::wait::wait_until;

/// What one produce attempt came to, as a durability checker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProduceOutcome {
    /// Acknowledged at this base offset.
    Acked(u64),
    /// Definitely refused, with this error code and message.
    Failed(i32, String),
    /// The outcome is unknown (timeout, connection lost): the records may or
    /// may not have been written.
    Unknown(String),
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    /// Its offset.
    pub offset: u64,
    /// Its value.
    pub value: Bytes,
}

impl Cluster {
    /// A Broker client for node `id` whose calls fail after `timeout`.
    pub fn broker_client(&self, id: u64, timeout: Duration) -> BrokerClient<Channel> {
        BrokerClient::new(self.channel(id, timeout))
    }

    /// `CreateTopic` with configs, sent to node `via`; the error code.
    pub async fn create_topic_with(
        &self,
        via: u64,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: &[(&str, &str)],
    ) -> i32 {
        self.client(via)
            .create_topic(CreateTopicRequest {
                name: name.into(),
                partitions,
                replication_factor,
                configs: configs
                    .iter()
                    .map(|(k, v)| ConfigEntry {
                        key: (*k).into(),
                        value: (*v).into(),
                    })
                    .collect(),
            })
            .await
            .map_or(-1, |r| r.into_inner().error_code)
    }

    /// Partition `p` of `topic` as the active controller's image has it (the
    /// authoritative view; a restarted node's image may lag).
    pub async fn partition_info(&self, topic: &str, p: u32) -> Option<PartitionInfo> {
        let mut order = self.running();
        if let Some(leader) = self.agreed_leader().await {
            order.retain(|id| *id != leader);
            order.insert(0, leader);
        }
        for id in order {
            let Ok(r) = self
                .broker_client(id, Duration::from_secs(2))
                .metadata(MetadataRequest {
                    topics: vec![topic.into()],
                })
                .await
            else {
                continue;
            };
            return r
                .into_inner()
                .topics
                .into_iter()
                .find(|t| t.name == topic)?
                .partitions
                .into_iter()
                .find(|x| x.partition == p);
        }
        None
    }

    /// Waits until every running node's image names a running leader for
    /// `topic`/`p` and agrees on it; returns that state.
    pub async fn wait_partition_leader(
        &self,
        topic: &str,
        p: u32,
        timeout: Duration,
    ) -> PartitionInfo {
        let what = format!("a running leader of {topic}-{p} on every running node");
        wait_until(&what, timeout, || async {
            let mut agreed: Option<PartitionInfo> = None;
            for id in self.running() {
                let r = self
                    .broker_client(id, Duration::from_secs(2))
                    .metadata(MetadataRequest {
                        topics: vec![topic.into()],
                    })
                    .await
                    .ok()?
                    .into_inner();
                let info = r
                    .topics
                    .into_iter()
                    .find(|t| t.name == topic)?
                    .partitions
                    .into_iter()
                    .find(|x| x.partition == p)?;
                let leader = info.leader?;
                if !self.running().contains(&leader) {
                    return None;
                }
                match &agreed {
                    Some(a) if a.leader != info.leader || a.leader_epoch != info.leader_epoch => {
                        return None
                    }
                    _ => agreed = Some(info),
                }
            }
            agreed
        })
        .await
    }

    /// Waits until `topic`/`p`'s ISR (on some running node) is exactly `isr`.
    pub async fn wait_isr(&self, topic: &str, p: u32, isr: &[u64], timeout: Duration) {
        let mut want = isr.to_vec();
        want.sort_unstable();
        let what = format!("the ISR of {topic}-{p} to be {want:?}");
        wait_until(&what, timeout, || async {
            let mut got = self.partition_info(topic, p).await?.isr;
            got.sort_unstable();
            (got == want).then_some(())
        })
        .await;
    }

    /// One produce attempt of `values` (one batch) to the partition's leader
    /// as the metadata says, sent straight to node `to` if given.
    pub async fn produce_to(
        &self,
        to: Option<u64>,
        topic: &str,
        p: u32,
        values: &[Vec<u8>],
        acks: Acks,
        timeout_ms: u32,
    ) -> ProduceOutcome {
        let target = match to {
            Some(id) => id,
            None => match self.partition_info(topic, p).await.and_then(|i| i.leader) {
                Some(l) => l,
                None => {
                    return ProduceOutcome::Failed(
                        ErrorCode::LeaderNotAvailable as i32,
                        "no leader".into(),
                    )
                }
            },
        };
        let req = produce_request(topic, p, values, acks, timeout_ms);
        let rpc_timeout = Duration::from_millis(u64::from(timeout_ms) + 2_000);
        match self.broker_client(target, rpc_timeout).produce(req).await {
            Ok(r) => classify_produce(r.into_inner()).0,
            Err(status) => ProduceOutcome::Unknown(status.to_string()),
        }
    }

    /// [`Self::produce_to`] the current leader.
    pub async fn produce(
        &self,
        topic: &str,
        p: u32,
        values: &[Vec<u8>],
        acks: Acks,
    ) -> ProduceOutcome {
        self.produce_to(None, topic, p, values, acks, 5_000).await
    }

    /// Every committed record of `topic`/`p`, read from its leader, and the
    /// high watermark (the checker's reader; panics if it is not readable
    /// within 20 s).
    pub async fn read_partition(&self, topic: &str, p: u32) -> (Vec<ReadRecord>, u64) {
        let nodes = crate::checker::Nodes::of(self);
        crate::checker::read_all(&nodes, topic, p, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("read {topic}-{p}: {e}"))
    }

    /// The concatenated segment files of node `id`'s replica of `topic`/`p`:
    /// equal bytes mean identical logs (batches are copied byte for byte).
    pub fn replica_log_bytes(&self, id: u64, topic: &str, p: u32) -> Vec<u8> {
        let dir = self.data_dir(id).join("logs").join(format!("{topic}-{p}"));
        let mut segments: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        segments.sort();
        segments
            .iter()
            .flat_map(|s| {
                std::fs::read(s).unwrap_or_else(|e| panic!("cannot read {}: {e}", s.display()))
            })
            .collect()
    }
}

/// A produce request of `values` as one batch (timestamps fixed at 1 ms, no
/// keys) to `topic`/`p`.
pub(crate) fn produce_request(
    topic: &str,
    p: u32,
    values: &[Vec<u8>],
    acks: Acks,
    timeout_ms: u32,
) -> ProduceRequest {
    idempotent_produce_request(topic, p, values, acks, timeout_ms, None)
}

/// [`produce_request`] as an idempotent producer: the batch carries
/// `producer`'s id, epoch and base sequence.
pub fn idempotent_produce_request(
    topic: &str,
    p: u32,
    values: &[Vec<u8>],
    acks: Acks,
    timeout_ms: u32,
    producer: Option<rivulet_common::batch::ProducerStamp>,
) -> ProduceRequest {
    let records: Vec<RecordInput> = values
        .iter()
        .map(|v| RecordInput {
            value: Some(Bytes::copy_from_slice(v)),
            timestamp_ms: 1,
            ..RecordInput::default()
        })
        .collect();
    let batch = rivulet_common::batch::build_producer_batch(&records, Compression::None, producer)
        .expect("test records encode");
    ProduceRequest {
        acks: acks.into(),
        timeout_ms,
        partitions: vec![ProducePartition {
            topic: topic.into(),
            partition: p,
            data: Some(Data::RecordBatch(batch)),
            ..ProducePartition::default()
        }],
    }
}

/// What a produce response (of one partition) says about the send, and the
/// leader hint it carries (with `NOT_LEADER_OR_FOLLOWER`).
///
/// Only refusals that happen before an append are [`ProduceOutcome::Failed`]:
/// the broker says so with `appended = false`. After an append (a timeout,
/// `NOT_ENOUGH_REPLICAS_AFTER_APPEND`, `NOT_LEADER_OR_FOLLOWER` for a pending
/// acks=all write whose leader was deposed) the records may be committed
/// later, so the outcome is [`ProduceOutcome::Unknown`].
pub(crate) fn classify_produce(r: ProduceResponse) -> (ProduceOutcome, Option<LeaderHint>) {
    let Some(pr) = r.partitions.into_iter().next() else {
        return (
            ProduceOutcome::Unknown("empty produce response".into()),
            None,
        );
    };
    let outcome = if pr.error_code == ErrorCode::None as i32 {
        ProduceOutcome::Acked(pr.base_offset)
    } else if pr.appended {
        ProduceOutcome::Unknown(pr.error_message)
    } else {
        ProduceOutcome::Failed(pr.error_code, pr.error_message)
    };
    (outcome, pr.leader)
}
