//! Produce: where records enter a partition, and where an acks=all write is
//! acknowledged ([`DelayedProduce`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{ApiError, BrokerApi};
use rivulet_metadata::security::{Access, Operation};

use crate::budget::Held;
use crate::replica::{Partition, PartitionError};

/// Most partition entries one Produce request may carry: a bound on the
/// work (blocking tasks, waiters) one request can cause.
pub const MAX_PRODUCE_ENTRIES: usize = 1_000;
/// acks=all wait when the request gives none.
pub const DEFAULT_PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest acks=all wait a request may ask for: a waiter holds memory
/// until it ends.
pub const MAX_PRODUCE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long an idempotent batch that arrived ahead of its predecessor waits
/// for it before OUT_OF_ORDER_SEQUENCE_NUMBER. A producer keeps up to five
/// batches of a partition in flight; Kafka's connections answer requests in
/// order, but gRPC streams on one connection run concurrently, so batch
/// `n + 1` may reach the partition first.
pub const REORDER_WAIT: Duration = Duration::from_secs(1);

/// When a produce is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// At once; the append runs in the background.
    None,
    /// Once the leader appended (and fsynced, with flush=always).
    Leader,
    /// Once the high watermark passed the records: every in-sync replica
    /// holds them.
    All,
}

/// One entry: a batch for one partition (or why there is none).
#[derive(Debug)]
pub struct ProduceEntry {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// One Kafka v2 batch (offsets from 0), or the edge's reason it has none.
    pub batch: Result<Vec<u8>, PartitionError>,
}

/// A produce request in domain terms.
#[derive(Debug)]
pub struct ProduceRequest {
    /// When to answer.
    pub acks: Acks,
    /// How long acks=all may wait (`None`: the default).
    pub timeout: Option<Duration>,
    /// Entries; one partition may appear several times (appended in order).
    pub entries: Vec<ProduceEntry>,
    /// The request's share of the node's in-flight budget: held until the
    /// batches are appended (with acks=0, by the appends themselves).
    pub held: Option<Held>,
    /// Who produces: each entry needs WRITE on its topic.
    pub access: Access,
    /// Told (sent to, or dropped) once every entry is in its log, before
    /// any acks=all wait: an edge that must start a connection's appends in
    /// request order (Kafka's listener) starts the next one then.
    pub appended: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What became of one entry.
#[derive(Debug, Default)]
pub struct ProduceResult {
    /// Whether the batch was appended (with an error: the outcome of an
    /// acks=all write is unknown, it may still commit).
    pub appended: bool,
    /// Offset of its first record.
    pub base_offset: u64,
    /// The leader epoch it was appended in.
    pub leader_epoch: u32,
    /// The log start offset after the append.
    pub log_start_offset: u64,
    /// Why it failed, if it did.
    pub error: Option<PartitionError>,
}

/// An acks=all write appended in `epoch` up to `last_offset`, waiting for
/// the high watermark to pass it: the one place a produce is acknowledged.
/// It fails at once with NOT_LEADER_OR_FOLLOWER if the partition's epoch
/// changes (the write may still commit under the new leader), with
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrinks below min.insync, and
/// with REQUEST_TIMED_OUT at the deadline.
#[derive(Debug)]
pub struct DelayedProduce {
    partition: Arc<Partition>,
    epoch: u32,
    last_offset: u64,
}

impl DelayedProduce {
    /// The wait for `last_offset`, appended in `epoch`, to commit.
    pub fn new(partition: Arc<Partition>, epoch: u32, last_offset: u64) -> Self {
        Self {
            partition,
            epoch,
            last_offset,
        }
    }

    /// Waits until committed, or `deadline` (reported as a timeout of
    /// `timeout`).
    pub async fn complete(
        self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), PartitionError> {
        match tokio::time::timeout_at(
            deadline,
            self.partition.wait_committed(self.epoch, self.last_offset),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(PartitionError::Timeout(
                u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            )),
        }
    }
}

/// Refuses a request of more than [`MAX_PRODUCE_ENTRIES`] entries (edges
/// call it before decoding entries, to waste no work on them).
pub fn check_entry_count(n: usize) -> Result<(), ApiError> {
    if n > MAX_PRODUCE_ENTRIES {
        return Err(ApiError::InvalidRequest(format!(
            "{n} partition entries in one Produce request; at most {MAX_PRODUCE_ENTRIES}"
        )));
    }
    Ok(())
}

/// A batch and its entry's position in the request.
type Indexed = (usize, Vec<u8>);

/// What one append gave: the entry's position, its partition, the result,
/// and the batch back when it came ahead of its predecessor (to try again).
type Appended = (
    usize,
    Arc<Partition>,
    Result<(crate::log::AppendInfo, u32), PartitionError>,
    Option<Vec<u8>>,
);

/// Whether `r` refused an idempotent batch that is ahead of the producer's
/// sequence: its predecessor may still be on its way.
fn came_early(r: &Result<(crate::log::AppendInfo, u32), PartitionError>) -> bool {
    use crate::log::{LogError, ProducerError};
    matches!(
        r,
        Err(PartitionError::Log(LogError::Producer(
            ProducerError::OutOfOrderSequence {
                first_sequence,
                expected,
                ..
            }
        ))) if first_sequence > expected
    )
}

/// Appends each entry's batch to its partition in order (blocking: one task
/// per partition), keeping a batch that came early.
fn append_entries(
    part: &Arc<Partition>,
    entries: Vec<Indexed>,
    require_min_isr: bool,
) -> Vec<Appended> {
    entries
        .into_iter()
        .map(|(i, mut batch)| {
            let r = part.append_as_leader(&mut batch, require_min_isr);
            let keep = came_early(&r).then_some(batch);
            (i, Arc::clone(part), r, keep)
        })
        .collect()
}

impl BrokerApi {
    /// Appends each entry to its partition's leader log and answers per
    /// `acks`. Entries for one partition are appended in request order, one
    /// blocking task per partition (the partitions' fsyncs overlap).
    pub async fn produce(&self, req: ProduceRequest) -> Result<Vec<ProduceResult>, ApiError> {
        check_entry_count(req.entries.len())?;
        let timeout = match req.timeout {
            None => DEFAULT_PRODUCE_TIMEOUT,
            Some(t) if t > MAX_PRODUCE_TIMEOUT => {
                return Err(ApiError::InvalidRequest(format!(
                    "timeout_ms {} is over the limit of {}",
                    t.as_millis(),
                    MAX_PRODUCE_TIMEOUT.as_millis()
                )))
            }
            Some(t) => t,
        };
        let mut out: Vec<ProduceResult> = Vec::with_capacity(req.entries.len());
        let mut per_partition: Vec<(Arc<Partition>, Vec<Indexed>)> = Vec::new();
        let image = self.mgr.image();
        for entry in req.entries {
            let i = out.len();
            out.push(ProduceResult::default());
            let part = super::authorize_topic(&req.access, &image, Operation::Write, &entry.topic)
                .and_then(|()| self.mgr.partition(&entry.topic, entry.partition));
            match (part, entry.batch) {
                (Ok(part), Ok(batch)) => match per_partition
                    .iter_mut()
                    .find(|(p, _)| Arc::ptr_eq(p, &part))
                {
                    Some((_, entries)) => entries.push((i, batch)),
                    None => per_partition.push((part, vec![(i, batch)])),
                },
                (Err(e), _) | (_, Err(e)) => out[i].error = Some(e),
            }
        }
        let require_min_isr = req.acks == Acks::All;
        let mut appends = tokio::task::JoinSet::new();
        // Subscribed before the first attempt, so an append that lands in
        // between still wakes a batch that came early.
        let mut appended_anywhere = self.mgr.signals.appended.subscribe();
        for (part, entries) in per_partition {
            let held = req.held.clone();
            appends.spawn_blocking(move || {
                // Fire-and-forget appends keep the request's bytes counted
                // until they are done.
                let _held = held;
                append_entries(&part, entries, require_min_isr)
            });
        }
        if req.acks == Acks::None {
            if let Some(done) = req.appended {
                // The next request waits for these appends.
                while appends.join_next().await.is_some() {}
                let _ = done.send(());
                return Ok(out);
            }
            // Fire and forget: answer before the appends finish.
            appends.detach_all();
            return Ok(out);
        }
        let mut appended: Vec<Appended> = Vec::with_capacity(out.len());
        while let Some(done) = appends.join_next().await {
            appended
                .extend(done.map_err(|e| ApiError::Internal(format!("append task failed: {e}")))?);
        }
        // Idempotent batches that came before their predecessors try again
        // after each append on this broker, up to REORDER_WAIT.
        let reorder_deadline = Instant::now() + REORDER_WAIT.min(timeout);
        while appended.iter().any(|a| a.3.is_some()) {
            let _ = appended_anywhere.borrow_and_update();
            let mut again: Vec<(Arc<Partition>, Vec<Indexed>)> = Vec::new();
            for (i, part, _, batch) in &mut appended {
                if let Some(b) = batch.take() {
                    match again.iter_mut().find(|(p, _)| Arc::ptr_eq(p, part)) {
                        Some((_, entries)) => entries.push((*i, b)),
                        None => again.push((Arc::clone(part), vec![(*i, b)])),
                    }
                }
            }
            appended.retain(|a| !again.iter().any(|(_, e)| e.iter().any(|(i, _)| *i == a.0)));
            let mut tasks = tokio::task::JoinSet::new();
            for (part, entries) in again {
                tasks.spawn_blocking(move || append_entries(&part, entries, require_min_isr));
            }
            while let Some(done) = tasks.join_next().await {
                appended.extend(
                    done.map_err(|e| ApiError::Internal(format!("append task failed: {e}")))?,
                );
            }
            if !appended.iter().any(|a| a.3.is_some()) {
                break;
            }
            let woken =
                tokio::time::timeout_at(reorder_deadline, appended_anywhere.changed()).await;
            if woken.is_err() {
                // The predecessor never came: the refusal stands.
                for a in &mut appended {
                    a.3 = None;
                }
                break;
            }
        }
        // The batches are in the log: what the request pinned is free now,
        // whatever acks=all waits for.
        if let Some(h) = &req.held {
            h.release();
        }
        if let Some(done) = req.appended {
            let _ = done.send(());
        }
        let deadline = Instant::now() + timeout;
        for (i, part, result, _) in appended {
            let result = match result {
                Ok((info, epoch)) => {
                    out[i].appended = true;
                    out[i].leader_epoch = epoch;
                    out[i].base_offset = info.base_offset;
                    out[i].log_start_offset = part.offsets().log_start_offset;
                    if req.acks == Acks::All {
                        DelayedProduce::new(part, epoch, info.last_offset)
                            .complete(deadline, timeout)
                            .await
                    } else {
                        Ok(())
                    }
                }
                Err(e) => Err(e),
            };
            out[i].error = result.err();
        }
        Ok(out)
    }
}
