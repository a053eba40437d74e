//! ReplicaFetch: a follower's long-polling fetch from its leader, which is
//! also how the leader learns the follower's progress (and so moves the HW).

use std::sync::Arc;
use std::time::Duration;

use rivulet_metadata::BrokerId;
use tokio::time::Instant;

use super::fetch::{DEFAULT_FETCH_MAX_BYTES, DEFAULT_PARTITION_MAX_BYTES, MAX_WAIT_CAP};
use super::long_poll::long_poll;
use super::{ApiError, BrokerApi};
use crate::replica::partition::ReplicaRead;
use crate::replica::PartitionError;

/// One partition a follower fetches.
#[derive(Debug, Clone)]
pub struct ReplicaFetchPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The leader epoch the follower follows.
    pub current_leader_epoch: u32,
    /// The follower's log end: it has everything below.
    pub fetch_offset: u64,
    /// The epoch of the follower's last batch, for the divergence check.
    pub last_fetched_epoch: Option<u32>,
    /// Byte limit for this partition (0: the default).
    pub max_bytes: usize,
    /// The follower cannot write this replica's log.
    pub storage_failed: bool,
}

/// A follower's fetch.
#[derive(Debug, Clone)]
pub struct ReplicaFetchRequest {
    /// The follower's broker id.
    pub replica_id: u64,
    /// Its broker epoch: an old incarnation's fetches never count.
    pub broker_epoch: u64,
    /// What to fetch.
    pub partitions: Vec<ReplicaFetchPartition>,
    /// Byte limit for the whole answer (0: the default).
    pub max_bytes: usize,
    /// Answer once this many bytes are there.
    pub min_bytes: usize,
    /// How long to wait for them.
    pub max_wait: Duration,
}

/// One partition's answer.
pub type ReplicaFetchResult = Result<ReplicaRead, PartitionError>;

impl BrokerApi {
    /// Answers a follower: per partition the batches from its fetch offset
    /// (or where to truncate to), counting its progress toward the ISR and
    /// the HW. Waits while there is nothing, unless a partition needs the
    /// follower's attention (an error, a divergence).
    pub async fn replica_fetch(
        &self,
        req: ReplicaFetchRequest,
    ) -> Result<Vec<ReplicaFetchResult>, ApiError> {
        let image = self.mgr.image();
        // Only the incarnation this leader's image knows counts: an older
        // one was replaced, and a newer one is either not in this image yet
        // (the follower retries after its backoff) or not a broker epoch the
        // controller ever gave out (`2^64-1` from a forged call).
        match image.broker(BrokerId(req.replica_id)) {
            Some(b) if req.broker_epoch != b.broker_epoch => {
                let current = b.broker_epoch;
                return Ok(req
                    .partitions
                    .iter()
                    .map(|_| {
                        Err(PartitionError::StaleBrokerEpoch {
                            broker: req.replica_id,
                            request: req.broker_epoch,
                            current,
                        })
                    })
                    .collect());
            }
            Some(_) => {}
            None => return Err(ApiError::UnknownBroker(req.replica_id)),
        }
        let deadline = Instant::now() + req.max_wait.min(MAX_WAIT_CAP);
        let max_bytes = match req.max_bytes {
            0 => DEFAULT_FETCH_MAX_BYTES,
            n => n,
        };
        let min_bytes = req.min_bytes;
        let replica = req.replica_id;
        let wanted = Arc::new(req.partitions);
        let signal = self.mgr.signals.appended.subscribe();
        long_poll(signal, deadline, || {
            let (mgr, wanted) = (Arc::clone(&self.mgr), Arc::clone(&wanted));
            async move {
                let (results, total, urgent) = tokio::task::spawn_blocking(move || {
                    let mut total = 0usize;
                    let mut urgent = false;
                    let results: Vec<ReplicaFetchResult> = wanted
                        .iter()
                        .map(|fp| {
                            let limit = match fp.max_bytes {
                                0 => DEFAULT_PARTITION_MAX_BYTES,
                                n => n,
                            }
                            .min(max_bytes.saturating_sub(total))
                            .max(1);
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
                            match &res {
                                Ok(read) => {
                                    total += read.records.len();
                                    urgent |= read.diverging.is_some();
                                }
                                Err(_) => urgent = true,
                            }
                            res
                        })
                        .collect();
                    (results, total, urgent)
                })
                .await
                .map_err(|e| ApiError::Internal(format!("replica fetch task failed: {e}")))?;
                let done = urgent || total >= min_bytes.max(1) || Instant::now() >= deadline;
                Ok((results, done))
            }
        })
        .await
    }
}
