//! The durability checker: a concurrent acks=all workload that records the
//! fate of every send, a consumer that watches the high watermark while
//! faults happen, and the check of each partition once the faults healed.
//!
//! ```text
//!   producers (K tokio tasks)         readers (one per partition)
//!   send -> Acked(o) / Failed / Unknown     ListOffsets(LATEST): HW + epoch
//!   retry a message with a new seq          Fetch from its position: records
//!        |                                        |
//!        v                                        v
//!     Ledger (every send, by value)         ReaderLog (HW samples, what it consumed)
//!        \______________________________________/
//!                          |  after the faults healed
//!                          v
//!     check: full read of each partition -> CheckReport
//! ```
//!
//! The workload talks to the nodes itself (its own leader cache, following
//! `NOT_LEADER_OR_FOLLOWER` hints and refreshing metadata from any node), not
//! through [`Cluster`], so faults can be injected while it runs.
//!
//! # Values
//!
//! Every send carries fresh values, unique in the run:
//! `p<partition>.w<producer>.m<message>.s<seq>.r<i>`. A *message* is what the
//! producer wants written; each attempt at it is a *send* with a new sequence
//! number, so a value read back names exactly one send. A message is retried
//! until one send of it is acknowledged (or the workload stops).
//!
//! # What the check holds a partition to
//!
//! Violations (each fails a run):
//! - **lost**: a record of an acknowledged send missing, or not at the offset
//!   it was acknowledged at.
//! - **offset gaps**: offsets not dense from 0, or the HW not the record count.
//! - **failed present**: a value of a send that was definitely refused.
//! - **foreign**: a value nobody sent.
//! - **same value twice**: one send's value at two offsets (the broker
//!   duplicated a batch; the producer never resends a value).
//! - **reordered**: a producer's acknowledged sends not in increasing offset
//!   order (it sends one at a time, so each ack's offset must exceed the last).
//! - **torn batch**: only part of a send's batch present, or not contiguous.
//! - **consumed then vanished**: the reader consumed a record (below the HW)
//!   that the final log does not hold at that offset.
//! - **HW backwards in an epoch**: one leader epoch answered a lower HW than
//!   it had answered before.
//! - **committed position out of range**: a fetch at a position the reader
//!   reached by consuming committed records answered `OFFSET_OUT_OF_RANGE`.
//!
//! Reported, not violations:
//! - **duplicates**: a message with more than one send present. Allowed when
//!   all but one of them had an unknown outcome (a retried timeout): delivery
//!   without an idempotent producer is at least once. A duplicate whose other
//!   copy was refused counts as *failed present* instead.
//! - **HW lag after failover**: a newer leader epoch answering a lower HW than
//!   an older epoch did. In Kafka's model (and Rivulet's) a new leader starts
//!   from its own HW, learned one fetch round behind the old leader's, and
//!   advances it once the ISR confirms; meanwhile a consumer's fetch at its
//!   position (above the new HW, at most the new leader's log end) returns no
//!   records, and nothing it consumed disappears. What the design promises —
//!   committed data never disappears for a consumer — is checked by
//!   *consumed then vanished* and *committed position out of range*; the lag
//!   is counted with its depth so a regression in its size shows.
//! - **unavailability**: per partition, the longest stretch in the workload
//!   with no acknowledged send (from the start, between acks, to the end);
//!   the report has the worst partition.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rivulet_common::batch::decode_records;
use rivulet_proto::v1::broker_client::BrokerClient;
use rivulet_proto::v1::list_offsets_partition::Spec;
use rivulet_proto::v1::{
    Acks, ErrorCode, FetchPartition, FetchRequest, ListOffsetsPartition, ListOffsetsRequest,
    MetadataRequest, OffsetSpec, PartitionInfo,
};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::Cluster;
use crate::data::{classify_produce, produce_request, ProduceOutcome, ReadRecord};

/// acks=all timeout the producers ask for.
const PRODUCE_TIMEOUT_MS: u32 = 2_000;
/// Client-side deadline of one produce RPC (a paused node never answers).
const PRODUCE_RPC_TIMEOUT: Duration = Duration::from_millis(3_000);
/// Client-side deadline of a metadata, list-offsets or short fetch RPC.
const SHORT_RPC_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long a reader's fetch long-polls.
const READER_MAX_WAIT_MS: u32 = 100;
/// Pause after a failed or unknown send before the retry.
const RETRY_BACKOFF: Duration = Duration::from_millis(30);
/// Pause of a reader after an error.
const READER_BACKOFF: Duration = Duration::from_millis(50);
/// Examples of violations kept in a report.
const MAX_EXAMPLES: usize = 8;

// ----- PRNG -----

/// splitmix64: a small, seedable PRNG, enough to pick faults and batch sizes
/// reproducibly (no `rand` dependency).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }

    /// One element of `items` (non-empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = self.below(items.len() as u64);
        &items[usize::try_from(i).expect("index fits usize")]
    }
}

// ----- the ledger -----

/// What came of one send, as the checker needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Acknowledged at this base offset.
    Acked(u64),
    /// Definitely refused: none of its records may appear.
    Failed,
    /// Unknown (timeout, lost connection, deposed leader): may appear.
    Unknown,
}

impl From<&ProduceOutcome> for SendOutcome {
    fn from(o: &ProduceOutcome) -> Self {
        match o {
            ProduceOutcome::Acked(offset) => Self::Acked(*offset),
            ProduceOutcome::Failed(..) => Self::Failed,
            ProduceOutcome::Unknown(_) => Self::Unknown,
        }
    }
}

/// One send (one batch to one partition) and its fate.
#[derive(Debug, Clone)]
pub struct SendRecord {
    /// The partition it went to.
    pub partition: u32,
    /// The producer that sent it; its acked sends must be in order.
    pub producer: u32,
    /// The message it is an attempt at: sends of one message are retries.
    pub message: u64,
    /// The producer's sequence number of the send within its workload
    /// (increases per send; with `message`, orders a producer's sends).
    pub seq: u64,
    /// Its values, unique in the run, in batch order.
    pub values: Vec<String>,
    /// What came of it.
    pub outcome: SendOutcome,
    /// When the answer (or the give-up) came; acks make the availability.
    pub finished: Instant,
}

/// Every send of a run, to check a partition read back against.
#[derive(Debug, Default)]
pub struct Ledger {
    /// In the order they were recorded.
    sends: Vec<SendRecord>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a send.
    pub fn record(&mut self, send: SendRecord) {
        self.sends.push(send);
    }

    /// Every send recorded.
    pub fn sends(&self) -> &[SendRecord] {
        &self.sends
    }

    /// Records of acknowledged sends.
    pub fn acked_records(&self) -> usize {
        self.count_records(|o| matches!(o, SendOutcome::Acked(_)))
    }

    /// Records of refused sends.
    pub fn failed_records(&self) -> usize {
        self.count_records(|o| o == SendOutcome::Failed)
    }

    /// Records of sends with an unknown outcome.
    pub fn unknown_records(&self) -> usize {
        self.count_records(|o| o == SendOutcome::Unknown)
    }

    fn count_records(&self, f: impl Fn(SendOutcome) -> bool) -> usize {
        self.sends
            .iter()
            .filter(|s| f(s.outcome))
            .map(|s| s.values.len())
            .sum()
    }

    /// Checks partition `p` read back in full (`records` from offset 0, and
    /// the high watermark) against every send to it; see the module docs.
    pub fn check_partition(&self, p: u32, records: &[ReadRecord], hw: u64) -> PartitionReport {
        let mut r = PartitionReport {
            partition: p,
            records: records.len() as u64,
            ..PartitionReport::default()
        };
        // Value -> (send index, position in its batch).
        let mut index: HashMap<&str, (usize, usize)> = HashMap::new();
        for (i, s) in self.sends.iter().enumerate() {
            if s.partition != p {
                continue;
            }
            for (j, v) in s.values.iter().enumerate() {
                index.insert(v.as_str(), (i, j));
            }
        }
        // Where each value is.
        let mut at: HashMap<&str, u64> = HashMap::new();
        // Send index -> the offsets of its values present.
        let mut present: BTreeMap<usize, Vec<(usize, u64)>> = BTreeMap::new();
        for (i, rec) in records.iter().enumerate() {
            if rec.offset != i as u64 {
                r.offset_gaps += 1;
                r.example(format!(
                    "p{p}: record {i} has offset {} (offsets not dense)",
                    rec.offset
                ));
            }
            let v = String::from_utf8_lossy(&rec.value);
            let Some((&key, &(send, pos))) = index.get_key_value(v.as_ref()) else {
                r.foreign += 1;
                r.example(format!(
                    "p{p}: value {v:?} at {} was never sent",
                    rec.offset
                ));
                continue;
            };
            // A value's first offset is where it counts; a second one is
            // counted once, as same_value_twice.
            if let Some(first) = at.get(key) {
                r.same_value_twice += 1;
                r.example(format!(
                    "p{p}: value {v} at offsets {first} and {}",
                    rec.offset
                ));
                continue;
            }
            at.insert(key, rec.offset);
            present.entry(send).or_default().push((pos, rec.offset));
        }
        if hw != records.len() as u64 {
            r.offset_gaps += 1;
            r.example(format!(
                "p{p}: high watermark {hw} but {} records read",
                records.len()
            ));
        }
        // Per send: lost, refused-yet-present, torn.
        for (i, s) in self.sends.iter().enumerate() {
            if s.partition != p {
                continue;
            }
            let here = present.get(&i).map_or(&[][..], Vec::as_slice);
            match s.outcome {
                SendOutcome::Acked(base) => {
                    for (j, v) in s.values.iter().enumerate() {
                        let want = base + j as u64;
                        if at.get(v.as_str()) != Some(&want) {
                            r.lost += 1;
                            r.example(format!(
                                "p{p}: LOST acked {v} (acked at {want}, found at {:?})",
                                at.get(v.as_str())
                            ));
                        }
                    }
                }
                SendOutcome::Failed if !here.is_empty() => {
                    r.failed_present += here.len() as u64;
                    r.example(format!(
                        "p{p}: refused send {} present at {:?}",
                        s.values[0],
                        here.iter().map(|(_, o)| o).collect::<Vec<_>>()
                    ));
                }
                _ => {}
            }
            if !here.is_empty() {
                let mut sorted = here.to_vec();
                sorted.sort_unstable();
                let contiguous = sorted.len() == s.values.len()
                    && sorted
                        .iter()
                        .enumerate()
                        .all(|(j, (pos, o))| *pos == j && *o == sorted[0].1 + j as u64);
                if !contiguous {
                    r.torn_batches += 1;
                    r.example(format!(
                        "p{p}: send {} has {} of {} records present, at {:?}",
                        s.values[0],
                        sorted.len(),
                        s.values.len(),
                        sorted
                    ));
                }
            }
        }
        // Duplicates: messages with more than one send present.
        let mut by_message: BTreeMap<(u32, u64), Vec<usize>> = BTreeMap::new();
        for &i in present.keys() {
            let s = &self.sends[i];
            by_message
                .entry((s.producer, s.message))
                .or_default()
                .push(i);
        }
        for sends in by_message.values().filter(|s| s.len() > 1) {
            r.duplicates += sends.len() as u64 - 1;
            let known = sends
                .iter()
                .filter(|i| self.sends[**i].outcome != SendOutcome::Unknown)
                .count();
            if known > 1 {
                r.example(format!(
                    "p{p}: message {} present {} times, {known} of them acked or refused",
                    self.sends[sends[0]].values[0],
                    sends.len()
                ));
            }
        }
        // Order: each producer's acked sends in increasing offset order.
        let mut last: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut acked: Vec<&SendRecord> = self
            .sends
            .iter()
            .filter(|s| s.partition == p && matches!(s.outcome, SendOutcome::Acked(_)))
            .collect();
        // Messages increase across workloads, sequence numbers within one.
        acked.sort_by_key(|s| (s.producer, s.message, s.seq));
        for s in acked {
            let SendOutcome::Acked(base) = s.outcome else {
                unreachable!("filtered on acked")
            };
            if let Some((seq, prev)) = last.insert(s.producer, (s.seq, base)) {
                if base <= prev {
                    r.reordered += 1;
                    r.example(format!(
                        "p{p}: producer {} send {} acked at {base}, before its send {seq} at {prev}",
                        s.producer, s.seq
                    ));
                }
            }
        }
        r
    }
}

// ----- reports -----

/// The check of one partition; see the module docs for each count.
#[derive(Debug, Clone, Default)]
pub struct PartitionReport {
    /// The partition.
    pub partition: u32,
    /// Records read back.
    pub records: u64,
    /// Acked records missing or moved (must be 0).
    pub lost: u64,
    /// Offsets out of place, or HW != record count (must be 0).
    pub offset_gaps: u64,
    /// Records of refused sends present (must be 0).
    pub failed_present: u64,
    /// Values nobody sent (must be 0).
    pub foreign: u64,
    /// One value at two offsets (must be 0).
    pub same_value_twice: u64,
    /// Acked sends of a producer out of order (must be 0).
    pub reordered: u64,
    /// Sends present in part or scattered (must be 0).
    pub torn_batches: u64,
    /// Extra copies of retried messages (allowed, reported).
    pub duplicates: u64,
    /// The first few problems, in words.
    pub examples: Vec<String>,
}

impl PartitionReport {
    fn example(&mut self, what: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(what);
        }
    }

    /// Broken invariants (everything but duplicates).
    pub fn violations(&self) -> u64 {
        self.lost
            + self.offset_gaps
            + self.failed_present
            + self.foreign
            + self.same_value_twice
            + self.reordered
            + self.torn_batches
    }

    /// Panics, with examples, if an invariant broke.
    pub fn assert_ok(&self) {
        assert!(
            self.violations() == 0,
            "partition {}: {self:?}\n{}",
            self.partition,
            self.examples.join("\n")
        );
    }
}

/// What one partition's reader saw during the run.
#[derive(Debug, Clone, Default)]
pub struct ReaderLog {
    /// The partition.
    pub partition: u32,
    /// (offset, value) of every record consumed.
    pub consumed: BTreeMap<u64, String>,
    /// HW answers received.
    pub samples: u64,
    /// Times one leader epoch answered a lower HW than before (violation).
    pub hw_backwards_same_epoch: u64,
    /// Times a newer epoch answered a lower HW than an older one had
    /// (violation: a new leader answers OFFSET_NOT_AVAILABLE instead).
    pub hw_lag_after_failover: u64,
    /// The deepest such lag, in offsets.
    pub hw_lag_max: u64,
    /// Answers from an epoch older than one already seen (a deposed leader
    /// still answering, or a stale metadata view).
    pub stale_epoch_answers: u64,
    /// `OFFSET_OUT_OF_RANGE` at a position reached by consuming (violation).
    pub committed_position_out_of_range: u64,
    /// Problems, in words.
    pub examples: Vec<String>,
}

impl ReaderLog {
    fn example(&mut self, what: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(what);
        }
    }
}

/// The check of a run, after its faults healed.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Per partition.
    pub partitions: Vec<PartitionReport>,
    /// Per partition, what its reader saw.
    pub readers: Vec<ReaderLog>,
    /// Sends made in the run.
    pub sends: u64,
    /// Records acknowledged in the run.
    pub acked: u64,
    /// Records of refused sends in the run.
    pub failed: u64,
    /// Records of sends with an unknown outcome in the run.
    pub unknown: u64,
    /// Records the reader consumed that the final log does not hold at the
    /// same offset (violation).
    pub consumed_vanished: u64,
    /// The longest stretch of the run in which some partition had no
    /// acknowledged send, and which partition.
    pub longest_unavailable: Duration,
    /// The partition of `longest_unavailable`.
    pub longest_unavailable_partition: u32,
    /// Examples of `consumed_vanished`.
    pub vanished_examples: Vec<String>,
    /// Partitions that could not be read back (violation): why.
    pub unreadable: Vec<String>,
}

impl CheckReport {
    /// Acked records missing or moved, over all partitions.
    pub fn lost(&self) -> u64 {
        self.partitions.iter().map(|p| p.lost).sum()
    }

    /// Extra copies of retried messages, over all partitions.
    pub fn duplicates(&self) -> u64 {
        self.partitions.iter().map(|p| p.duplicates).sum()
    }

    /// HW lag after failover, over all partitions: (count, deepest).
    pub fn hw_lag(&self) -> (u64, u64) {
        let n = self.readers.iter().map(|r| r.hw_lag_after_failover).sum();
        let max = self.readers.iter().map(|r| r.hw_lag_max).max().unwrap_or(0);
        (n, max)
    }

    /// Every broken invariant, counted.
    pub fn violations(&self) -> u64 {
        self.partitions
            .iter()
            .map(PartitionReport::violations)
            .sum::<u64>()
            + self
                .readers
                .iter()
                .map(|r| {
                    // A HW lower than one already answered, whether in the
                    // same epoch or a newer one, is time running backwards.
                    r.hw_backwards_same_epoch
                        + r.hw_lag_after_failover
                        + r.committed_position_out_of_range
                })
                .sum::<u64>()
            + self.consumed_vanished
            + self.unreadable.len() as u64
    }

    /// Examples of what broke, partition by partition.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.unreadable.clone();
        out.extend(self.vanished_examples.iter().cloned());
        for p in &self.partitions {
            if p.violations() > 0 {
                out.extend(p.examples.iter().cloned());
            }
        }
        for r in &self.readers {
            out.extend(r.examples.iter().cloned());
        }
        out
    }

    /// Panics with the problems if an invariant broke.
    pub fn assert_ok(&self) {
        assert!(
            self.violations() == 0,
            "{} violation(s): {self:?}\n{}",
            self.violations(),
            self.problems().join("\n")
        );
    }
}

// ----- talking to the nodes -----

/// The nodes' addresses and one lazy channel to each: what the workload
/// needs, without borrowing the [`Cluster`] that faults are injected into.
#[derive(Debug)]
pub struct Nodes {
    /// Node id -> a channel to its gRPC address (connect timeout 500 ms).
    channels: BTreeMap<u64, Channel>,
    /// Address -> node id, to follow leader hints.
    by_addr: HashMap<String, u64>,
}

impl Nodes {
    /// The nodes of `c`.
    pub fn of(c: &Cluster) -> Arc<Self> {
        let addrs: Vec<(u64, String)> = c
            .ids()
            .into_iter()
            .map(|id| (id, c.addr(id).to_string()))
            .collect();
        Self::at(&addrs)
    }

    /// Nodes by id and the `host:port` they advertise (e.g. containers).
    pub fn at(addrs: &[(u64, String)]) -> Arc<Self> {
        let mut channels = BTreeMap::new();
        let mut by_addr = HashMap::new();
        for (id, addr) in addrs {
            let (id, addr) = (*id, addr.clone());
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .expect("a socket address is a valid URI")
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true)
                .connect_lazy();
            channels.insert(id, channel);
            by_addr.insert(addr.to_string(), id);
        }
        Arc::new(Self { channels, by_addr })
    }

    fn client(&self, id: u64) -> BrokerClient<Channel> {
        BrokerClient::new(self.channels[&id].clone())
    }

    fn ids(&self) -> Vec<u64> {
        self.channels.keys().copied().collect()
    }

    /// Partition `p` of `topic` in the image of the first node (from
    /// `start`, round robin) that answers and names a leader.
    async fn partition(&self, topic: &str, p: u32, start: usize) -> Option<PartitionInfo> {
        let ids = self.ids();
        for k in 0..ids.len() {
            let id = ids[(start + k) % ids.len()];
            let req = MetadataRequest {
                topics: vec![topic.into()],
            };
            let Ok(Ok(r)) =
                tokio::time::timeout(SHORT_RPC_TIMEOUT, self.client(id).metadata(req)).await
            else {
                continue;
            };
            let info = r
                .into_inner()
                .topics
                .into_iter()
                .find(|t| t.name == topic)
                .and_then(|t| t.partitions.into_iter().find(|x| x.partition == p));
            if let Some(info) = info.filter(|i| i.leader.is_some()) {
                return Some(info);
            }
        }
        None
    }
}

/// A client's idea of a partition's leader, refreshed on errors.
#[derive(Debug)]
struct LeaderCache {
    /// The leader believed current, if any.
    leader: Option<u64>,
    /// Which node to ask for metadata next (rotates, so a stale or dead node
    /// is not asked forever).
    next_node: usize,
}

impl LeaderCache {
    fn new(start: usize) -> Self {
        Self {
            leader: None,
            next_node: start,
        }
    }

    async fn get(&mut self, nodes: &Nodes, topic: &str, p: u32) -> Option<u64> {
        if self.leader.is_none() {
            self.next_node += 1;
            self.leader = nodes
                .partition(topic, p, self.next_node)
                .await
                .and_then(|i| i.leader);
        }
        self.leader
    }

    fn follow(&mut self, nodes: &Nodes, hint: Option<&str>) {
        self.leader = hint.and_then(|a| nodes.by_addr.get(a).copied());
    }
}

// ----- the workload -----

/// The shape of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// The topic (RF=3, min.insync.replicas=2 in the fault runs).
    pub topic: String,
    /// Its partitions, 0..partitions.
    pub partitions: u32,
    /// Concurrent producers; producer `k` writes partition `k % partitions`.
    pub producers: u32,
    /// Records per send: 1..=max_batch, chosen at random.
    pub max_batch: u32,
    /// Pause of a producer after each acknowledged send (keeps the topic,
    /// which every check reads in full, from growing too fast).
    pub send_interval: Duration,
    /// Seed of the batch sizes.
    pub seed: u64,
}

/// A running workload: producers and readers until [`Workload::stop`].
#[derive(Debug)]
pub struct Workload {
    /// Set to stop every task (each finishes its request in flight).
    stop: Arc<AtomicBool>,
    /// The producers; each returns its sends.
    producers: Vec<JoinHandle<Vec<SendRecord>>>,
    /// The readers; each returns what it saw.
    readers: Vec<JoinHandle<ReaderLog>>,
    /// When it started.
    started: Instant,
    /// Acknowledged sends so far (all producers).
    acked: Arc<tokio::sync::watch::Sender<u64>>,
}

/// What a stopped workload did.
#[derive(Debug)]
pub struct WorkloadResult {
    /// Every send, in per-producer order.
    pub sends: Vec<SendRecord>,
    /// Per partition, what the reader saw.
    pub readers: Vec<ReaderLog>,
    /// When it started and stopped (for unavailability).
    pub window: (Instant, Instant),
}

impl Workload {
    /// Starts the producers and readers. Producer `k` numbers its messages
    /// from `first_message[k]`, so values stay unique across workloads on one
    /// topic; each reader starts at `start_offsets[p]` (offsets it consumed in
    /// an earlier run are not read again).
    pub fn start(
        nodes: &Arc<Nodes>,
        cfg: &WorkloadConfig,
        first_message: u64,
        start_offsets: &BTreeMap<u32, u64>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let mut rng = SplitMix64::new(cfg.seed);
        let producers = (0..cfg.producers)
            .map(|k| {
                let (nodes, stop, cfg) = (Arc::clone(nodes), Arc::clone(&stop), cfg.clone());
                let acked = Arc::clone(&acked);
                let seed = rng.next_u64();
                tokio::spawn(async move {
                    produce(nodes, cfg, k, first_message, seed, stop, acked).await
                })
            })
            .collect();
        let readers = (0..cfg.partitions)
            .map(|p| {
                let (nodes, stop, topic) =
                    (Arc::clone(nodes), Arc::clone(&stop), cfg.topic.clone());
                let from = start_offsets.get(&p).copied().unwrap_or(0);
                tokio::spawn(async move { read(nodes, topic, p, from, stop).await })
            })
            .collect();
        Self {
            stop,
            producers,
            readers,
            started: Instant::now(),
            acked,
        }
    }

    /// Waits until `more` sends beyond those acknowledged so far are
    /// acknowledged; false if `timeout` passes first.
    pub async fn wait_acked(&self, more: u64, timeout: Duration) -> bool {
        let mut rx = self.acked.subscribe();
        let target = *rx.borrow_and_update() + more;
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops every task and collects what they did. Each task finishes the
    /// request it has in flight (bounded by its RPC deadline).
    pub async fn stop(self) -> WorkloadResult {
        self.stop.store(true, Ordering::Relaxed);
        let stopped = Instant::now();
        let mut sends = Vec::new();
        for h in self.producers {
            sends.extend(h.await.expect("a producer task panicked"));
        }
        let mut readers = Vec::new();
        for h in self.readers {
            readers.push(h.await.expect("a reader task panicked"));
        }
        WorkloadResult {
            sends,
            readers,
            window: (self.started, stopped),
        }
    }
}

/// Producer `k`: sends messages of 1..=max_batch records to its partition
/// with acks=all, one at a time, retrying each with a new sequence number
/// until it is acknowledged or the workload stops.
async fn produce(
    nodes: Arc<Nodes>,
    cfg: WorkloadConfig,
    k: u32,
    first_message: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<tokio::sync::watch::Sender<u64>>,
) -> Vec<SendRecord> {
    let p = k % cfg.partitions;
    let mut rng = SplitMix64::new(seed);
    let mut cache = LeaderCache::new(k as usize);
    let mut out = Vec::new();
    let mut seq = 0u64;
    let mut message = first_message;
    'messages: while !stop.load(Ordering::Relaxed) {
        let n = 1 + rng.below(u64::from(cfg.max_batch.max(1)));
        loop {
            seq += 1;
            let values: Vec<String> = (0..n)
                .map(|i| format!("p{p}.w{k}.m{message}.s{seq}.r{i}"))
                .collect();
            let outcome = send(&nodes, &mut cache, &cfg.topic, p, &values).await;
            out.push(SendRecord {
                partition: p,
                producer: k,
                message,
                seq,
                values,
                outcome,
                finished: Instant::now(),
            });
            if matches!(outcome, SendOutcome::Acked(_)) {
                acked.send_modify(|n| *n += 1);
                tokio::time::sleep(cfg.send_interval).await;
                break;
            }
            if stop.load(Ordering::Relaxed) {
                break 'messages;
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
        message += 1;
    }
    out
}

/// One acks=all send to the leader the cache names.
async fn send(
    nodes: &Nodes,
    cache: &mut LeaderCache,
    topic: &str,
    p: u32,
    values: &[String],
) -> SendOutcome {
    let Some(leader) = cache.get(nodes, topic, p).await else {
        // Nothing was sent.
        return SendOutcome::Failed;
    };
    let bytes: Vec<Vec<u8>> = values.iter().map(|v| v.clone().into_bytes()).collect();
    let req = produce_request(topic, p, &bytes, Acks::All, PRODUCE_TIMEOUT_MS);
    match tokio::time::timeout(PRODUCE_RPC_TIMEOUT, nodes.client(leader).produce(req)).await {
        Ok(Ok(r)) => {
            let (outcome, hint) = classify_produce(r.into_inner());
            if !matches!(outcome, ProduceOutcome::Acked(_)) {
                cache.follow(nodes, hint.as_ref().map(|h| h.address.as_str()));
            }
            SendOutcome::from(&outcome)
        }
        Ok(Err(_)) | Err(_) => {
            cache.follow(nodes, None);
            SendOutcome::Unknown
        }
    }
}

/// The reader of partition `p`: asks the leader for its HW and epoch and
/// consumes from its position, until the workload stops.
async fn read(
    nodes: Arc<Nodes>,
    topic: String,
    p: u32,
    from: u64,
    stop: Arc<AtomicBool>,
) -> ReaderLog {
    let mut log = ReaderLog {
        partition: p,
        ..ReaderLog::default()
    };
    let mut cache = LeaderCache::new(p as usize);
    let mut position = from;
    // Highest HW seen, and the epoch that answered it; per epoch, its highest.
    let mut max_hw = (from, 0u32);
    let mut epoch_max: BTreeMap<u32, u64> = BTreeMap::new();
    let mut newest_epoch = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let Some(leader) = cache.get(&nodes, &topic, p).await else {
            tokio::time::sleep(READER_BACKOFF).await;
            continue;
        };
        let mut client = nodes.client(leader);
        // The HW and the epoch of whoever answers as leader.
        let req = ListOffsetsRequest {
            partitions: vec![ListOffsetsPartition {
                topic: topic.clone(),
                partition: p,
                spec: Some(Spec::OffsetSpec(OffsetSpec::Latest as i32)),
                current_leader_epoch: None,
            }],
        };
        let answer = match tokio::time::timeout(SHORT_RPC_TIMEOUT, client.list_offsets(req)).await {
            Ok(Ok(r)) => r.into_inner().partitions.into_iter().next(),
            _ => None,
        };
        let Some(answer) = answer.filter(|a| a.error_code == ErrorCode::None as i32) else {
            cache.follow(&nodes, None);
            tokio::time::sleep(READER_BACKOFF).await;
            continue;
        };
        let (hw, epoch) = (answer.offset.unwrap_or(0), answer.leader_epoch);
        log.samples += 1;
        if epoch < newest_epoch {
            log.stale_epoch_answers += 1;
            // A deposed leader's view; follow the metadata again.
            cache.follow(&nodes, None);
        } else {
            newest_epoch = epoch;
            let seen = epoch_max.entry(epoch).or_insert(hw);
            if hw < *seen {
                log.hw_backwards_same_epoch += 1;
                let what = format!(
                    "p{p}: leader {leader} in epoch {epoch} answered HW {hw} after {}",
                    *seen
                );
                log.example(what);
            }
            *seen = (*seen).max(hw);
            if hw < max_hw.0 && epoch > max_hw.1 {
                log.hw_lag_after_failover += 1;
                log.hw_lag_max = log.hw_lag_max.max(max_hw.0 - hw);
                let what = format!(
                    "p{p}: leader {leader} in epoch {epoch} answered HW {hw}, below the HW {} \
                     epoch {} answered",
                    max_hw.0, max_hw.1
                );
                log.example(what);
            }
            if hw > max_hw.0 {
                max_hw = (hw, epoch);
            }
        }
        // Consume from the position.
        let req = FetchRequest {
            partitions: vec![FetchPartition {
                topic: topic.clone(),
                partition: p,
                offset: position,
                partition_max_bytes: 1 << 20,
                current_leader_epoch: None,
            }],
            max_bytes: 1 << 20,
            min_bytes: 1,
            max_wait_ms: READER_MAX_WAIT_MS,
        };
        let fetched = match tokio::time::timeout(SHORT_RPC_TIMEOUT, client.fetch(req)).await {
            Ok(Ok(r)) => r.into_inner().partitions.into_iter().next(),
            _ => None,
        };
        let Some(part) = fetched else {
            cache.follow(&nodes, None);
            continue;
        };
        if part.error_code == ErrorCode::OffsetOutOfRange as i32 {
            log.committed_position_out_of_range += 1;
            let what = format!(
                "p{p}: leader {leader} answered OFFSET_OUT_OF_RANGE at consumed position \
                 {position}: {}",
                part.error_message
            );
            log.example(what);
            cache.follow(&nodes, None);
            tokio::time::sleep(READER_BACKOFF).await;
            continue;
        }
        if part.error_code != ErrorCode::None as i32 {
            cache.follow(&nodes, part.leader.as_ref().map(|h| h.address.as_str()));
            continue;
        }
        let Ok(records) = decode_records(&part.records) else {
            log.example(format!("p{p}: fetched batches at {position} do not decode"));
            continue;
        };
        for rec in records {
            if rec.offset < position {
                continue;
            }
            if rec.offset != position {
                // A gap: the final check counts offsets; stay in step with it.
                position = rec.offset;
            }
            let value = String::from_utf8_lossy(&rec.value.unwrap_or_default()).into_owned();
            log.consumed.insert(rec.offset, value);
            position += 1;
        }
    }
    log
}

// ----- the check -----

/// Reads `topic`/`p` in full from its leader (as the nodes' metadata says),
/// without panicking: the records and the HW, or why not.
pub async fn read_all(
    nodes: &Nodes,
    topic: &str,
    p: u32,
    timeout: Duration,
) -> Result<(Vec<ReadRecord>, u64), String> {
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("no attempt");
    let mut attempt = 0usize;
    while Instant::now() < deadline {
        attempt += 1;
        match read_once(nodes, topic, p, attempt).await {
            Ok(r) => return Ok(r),
            Err(e) => last_error = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "p{p}: not readable within {timeout:?}: {last_error}"
    ))
}

async fn read_once(
    nodes: &Nodes,
    topic: &str,
    p: u32,
    attempt: usize,
) -> Result<(Vec<ReadRecord>, u64), String> {
    let info = nodes
        .partition(topic, p, attempt)
        .await
        .ok_or("no node names a leader")?;
    let leader = info.leader.ok_or("no leader")?;
    let mut client = nodes.client(leader);
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let req = FetchRequest {
            partitions: vec![FetchPartition {
                topic: topic.into(),
                partition: p,
                offset,
                partition_max_bytes: 1 << 20,
                current_leader_epoch: Some(info.leader_epoch),
            }],
            max_bytes: 4 << 20,
            min_bytes: 0,
            max_wait_ms: 0,
        };
        let part = tokio::time::timeout(Duration::from_secs(5), client.fetch(req))
            .await
            .map_err(|_| format!("fetch at {offset} from node {leader} timed out"))?
            .map_err(|s| format!("fetch at {offset} from node {leader}: {s}"))?
            .into_inner()
            .partitions
            .into_iter()
            .next()
            .ok_or("empty fetch response")?;
        if part.error_code != ErrorCode::None as i32 {
            return Err(format!(
                "fetch at {offset} from node {leader}: error {} {}",
                part.error_code, part.error_message
            ));
        }
        let records =
            decode_records(&part.records).map_err(|e| format!("batches do not decode: {e}"))?;
        let before = out.len();
        for rec in records {
            if rec.offset >= offset {
                offset = rec.offset + 1;
                out.push(ReadRecord {
                    offset: rec.offset,
                    value: rec.value.unwrap_or_default(),
                });
            }
        }
        if offset >= part.high_watermark || out.len() == before {
            return Ok((out, part.high_watermark));
        }
    }
}

/// Checks a run once its faults healed: reads every partition of the topic
/// in full and holds it to `ledger` (which must hold every send ever made
/// to the topic, this run's included) and to what this run's readers
/// consumed. Counts (sends, acked, ...) and unavailability are this run's.
pub async fn check(
    nodes: &Nodes,
    topic: &str,
    partitions: u32,
    ledger: &Ledger,
    run: &WorkloadResult,
) -> CheckReport {
    let mut report = CheckReport {
        sends: run.sends.len() as u64,
        readers: run.readers.clone(),
        ..CheckReport::default()
    };
    for s in &run.sends {
        let n = s.values.len() as u64;
        match s.outcome {
            SendOutcome::Acked(_) => report.acked += n,
            SendOutcome::Failed => report.failed += n,
            SendOutcome::Unknown => report.unknown += n,
        }
    }
    let (start, end) = run.window;
    for p in 0..partitions {
        let mut acks: Vec<Instant> = run
            .sends
            .iter()
            .filter(|s| s.partition == p && matches!(s.outcome, SendOutcome::Acked(_)))
            .map(|s| s.finished)
            .collect();
        acks.sort_unstable();
        let mut prev = start;
        let mut worst = Duration::ZERO;
        for t in acks.into_iter().chain([end]) {
            worst = worst.max(t.saturating_duration_since(prev));
            prev = prev.max(t);
        }
        if worst > report.longest_unavailable {
            report.longest_unavailable = worst;
            report.longest_unavailable_partition = p;
        }

        match read_all(nodes, topic, p, Duration::from_secs(20)).await {
            Ok((records, hw)) => {
                let pr = ledger.check_partition(p, &records, hw);
                let by_offset: BTreeMap<u64, &[u8]> =
                    records.iter().map(|r| (r.offset, &r.value[..])).collect();
                for reader in run.readers.iter().filter(|r| r.partition == p) {
                    for (o, v) in &reader.consumed {
                        if by_offset.get(o).copied() != Some(v.as_bytes()) {
                            report.consumed_vanished += 1;
                            if report.vanished_examples.len() < MAX_EXAMPLES {
                                report.vanished_examples.push(format!(
                                    "p{p}: consumed {v} at {o}, final log has {:?}",
                                    by_offset.get(o).map(|b| String::from_utf8_lossy(b))
                                ));
                            }
                        }
                    }
                }
                report.partitions.push(pr);
            }
            Err(e) => report.unreadable.push(e),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(producer: u32, message: u64, seq: u64, n: u64, outcome: SendOutcome) -> SendRecord {
        SendRecord {
            partition: 0,
            producer,
            message,
            seq,
            values: (0..n)
                .map(|i| format!("p0.w{producer}.m{message}.s{seq}.r{i}"))
                .collect(),
            outcome,
            finished: Instant::now(),
        }
    }

    fn log(values: &[&str]) -> Vec<ReadRecord> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| ReadRecord {
                offset: i as u64,
                value: bytes::Bytes::copy_from_slice(v.as_bytes()),
            })
            .collect()
    }

    #[test]
    fn a_clean_log_passes_and_a_retried_unknown_is_a_duplicate() {
        let mut l = Ledger::new();
        l.record(send(0, 0, 1, 2, SendOutcome::Acked(0)));
        l.record(send(0, 1, 2, 1, SendOutcome::Unknown));
        l.record(send(0, 1, 3, 1, SendOutcome::Acked(3)));
        l.record(send(0, 2, 4, 1, SendOutcome::Failed));
        let records = log(&[
            "p0.w0.m0.s1.r0",
            "p0.w0.m0.s1.r1",
            "p0.w0.m1.s2.r0",
            "p0.w0.m1.s3.r0",
        ]);
        let r = l.check_partition(0, &records, 4);
        assert_eq!(r.violations(), 0, "{r:?}");
        assert_eq!(r.duplicates, 1);
    }

    #[test]
    fn every_broken_invariant_is_counted() {
        let mut l = Ledger::new();
        l.record(send(0, 0, 1, 1, SendOutcome::Acked(0))); // lost
        l.record(send(0, 1, 2, 1, SendOutcome::Failed)); // present
        l.record(send(1, 0, 1, 1, SendOutcome::Acked(2)));
        l.record(send(1, 1, 2, 1, SendOutcome::Acked(1))); // before its predecessor
        l.record(send(2, 0, 1, 2, SendOutcome::Unknown)); // torn
        let records = log(&[
            "p0.w0.m1.s2.r0",
            "p0.w1.m1.s2.r0",
            "p0.w1.m0.s1.r0",
            "p0.w2.m0.s1.r1",
            "nobody sent this",
            "p0.w1.m0.s1.r0",
        ]);
        let r = l.check_partition(0, &records, 7);
        assert_eq!(r.lost, 1, "{r:?}");
        assert_eq!(r.failed_present, 1, "{r:?}");
        assert_eq!(r.reordered, 1, "{r:?}");
        assert_eq!(r.torn_batches, 1, "{r:?}");
        assert_eq!(r.foreign, 1, "{r:?}");
        assert_eq!(r.same_value_twice, 1, "{r:?}");
        assert_eq!(r.offset_gaps, 1, "HW 7 for 6 records: {r:?}");
    }

    #[test]
    fn splitmix64_is_deterministic() {
        let (mut a, mut b) = (SplitMix64::new(42), SplitMix64::new(42));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert!((0..1000).all(|_| a.below(7) < 7));
    }
}
