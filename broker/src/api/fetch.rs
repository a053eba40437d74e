//! Fetch: committed records for consumers, long-polling.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::long_poll::long_poll;
use super::{ApiError, BrokerApi};
use rivulet_metadata::security::{Access, Operation};

use crate::budget::{Held, BUDGET_WAIT};
use crate::log::LogOffsets;
use crate::replica::PartitionError;

/// Per-partition limit when the request gives none.
pub const DEFAULT_PARTITION_MAX_BYTES: usize = 1 << 20;
/// Whole-response limit when the request gives none.
pub const DEFAULT_FETCH_MAX_BYTES: usize = 50 << 20;
/// Longest long poll a client may ask for.
pub const MAX_WAIT_CAP: Duration = Duration::from_secs(60);

/// One partition to read.
#[derive(Debug, Clone)]
pub struct FetchPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// First offset wanted.
    pub offset: u64,
    /// Byte limit for this partition (0: the default).
    pub max_bytes: usize,
    /// The leader epoch the client believes current, checked if given.
    pub current_leader_epoch: Option<u32>,
}

/// A fetch in domain terms.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// What to read.
    pub partitions: Vec<FetchPartition>,
    /// Byte limit for the whole answer (0: the default); capped by the node.
    pub max_bytes: usize,
    /// Answer once this many bytes are there (0: at once).
    pub min_bytes: usize,
    /// How long to wait for `min_bytes` (capped at [`MAX_WAIT_CAP`]).
    pub max_wait: Duration,
    /// Who reads: each partition needs READ on its topic.
    pub access: Access,
}

/// One partition's answer: whole batches, the log's offsets and the leader
/// epoch that answered.
pub type FetchResult = Result<(Bytes, LogOffsets, u32), PartitionError>;

impl BrokerApi {
    /// Reads committed records, one result per requested partition, in
    /// order. The node's cap bounds the answer whatever the request asks
    /// (Kafka's `fetch.max.bytes`); with `held`, each read first reserves
    /// what it may return from the node's in-flight budget, and what it read
    /// stays reserved until the response is sent.
    pub async fn fetch(
        &self,
        req: FetchRequest,
        held: Option<Held>,
    ) -> Result<Vec<FetchResult>, ApiError> {
        let node_max = self.mgr.config.fetch_max_bytes;
        let max_bytes = match req.max_bytes {
            0 => DEFAULT_FETCH_MAX_BYTES,
            n => n,
        }
        .min(node_max);
        let deadline = Instant::now() + req.max_wait.min(MAX_WAIT_CAP);
        let limit_of = move |fp: &FetchPartition| {
            match fp.max_bytes {
                0 => DEFAULT_PARTITION_MAX_BYTES,
                n => n,
            }
            .min(node_max)
        };
        // What one read may return: what the budget must hold before it.
        let read_max = req
            .partitions
            .iter()
            .map(limit_of)
            .fold(0usize, usize::saturating_add)
            .min(max_bytes);
        let image = self.mgr.image();
        let denied: Arc<Vec<bool>> = Arc::new(
            req.partitions
                .iter()
                .map(|fp| {
                    super::authorize_topic(&req.access, &image, Operation::Read, &fp.topic).is_err()
                })
                .collect(),
        );
        drop(image);
        let principal = req.access.principal.to_string();
        let wanted = Arc::new(req.partitions);
        let min_bytes = req.min_bytes;
        let signal = self.mgr.signals.committed.subscribe();
        long_poll(signal, deadline, || {
            let (mgr, wanted, held) = (Arc::clone(&self.mgr), Arc::clone(&wanted), held.clone());
            let (denied, principal) = (Arc::clone(&denied), principal.clone());
            async move {
                // Bounded: a fetch never hangs on the budget (and a queued
                // waiter would hold back every other request meanwhile).
                let mut reserved = match &held {
                    Some(h) => Some(
                        tokio::time::timeout(BUDGET_WAIT, h.budget().reserve(read_max))
                            .await
                            .map_err(|_| ApiError::Busy(h.budget().total()))?,
                    ),
                    None => None,
                };
                let (results, total) = tokio::task::spawn_blocking(move || {
                    let mut total = 0usize;
                    let results: Vec<FetchResult> = wanted
                        .iter()
                        .zip(denied.iter())
                        .map(|(fp, denied)| {
                            if *denied {
                                return Err(PartitionError::TopicAuthorizationFailed {
                                    principal: principal.clone(),
                                    operation: Operation::Read.name(),
                                });
                            }
                            let limit = limit_of(fp).min(max_bytes.saturating_sub(total));
                            let r = mgr.partition(&fp.topic, fp.partition).and_then(|p| {
                                if limit == 0 {
                                    let (o, epoch, hw) =
                                        p.leader_offsets(fp.current_leader_epoch)?;
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
                .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))?;
                let done = results.iter().any(Result::is_err)
                    || total >= min_bytes.max(1)
                    || min_bytes == 0
                    || Instant::now() >= deadline;
                if done {
                    if let (Some(h), Some(mut res)) = (&held, reserved.take()) {
                        res.shrink_to(total);
                        h.keep(res);
                    }
                }
                Ok((results, done))
            }
        })
        .await
    }
}
