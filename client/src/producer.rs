//! The producer: batches records per partition, sends each batch to the
//! partition's leader, retries retriable failures after refreshing metadata,
//! and resolves one delivery future per record.
//!
//! ```text
//!  send(): partition (explicit | murmur2(key) | keyless: `Partitioner`), then append to the
//!          partition's open batch in a shared accumulator (one mutex, no
//!          per-record channel or allocation); a full batch wakes the sender
//!  sender task: one batch in flight per partition (keeps order on retry);
//!          batches queued behind it go out merged; ready batches grouped by
//!          leader ──▶ one Produce RPC per leader; NOT_LEADER… ─▶ leader hint /
//!          metadata refresh ─▶ retry until delivery_timeout
//!  completion: one shared result per batch; each record's future reads it
//! ```
//!
//! Idempotence (on by default with acks=all, as in Kafka 3.0+; KIP-98,
//! KIP-360): the producer gets a producer id and epoch from the cluster
//! (InitProducerId) and numbers each partition's records from 0. A batch is
//! numbered when it is first sent and resent byte for byte, so a leader
//! that already has it (the answer was lost, or the leader changed after
//! replicating it) answers with the original offsets instead of writing it
//! twice: retries no longer duplicate. A batch that fails for good leaves
//! a hole in its partition's sequence; the producer then bumps its epoch
//! (KIP-360) and every partition starts again at sequence 0, so later
//! records are not refused. OUT_OF_ORDER_SEQUENCE_NUMBER and
//! INVALID_PRODUCER_EPOCH fail the batch's records with that error; the
//! producer never reorders records to get past them. Without idempotence
//! (acks other than all, or turned off) a retry after a lost answer may
//! store a batch twice: delivery is at least once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use rivulet_proto::v1::produce_partition::Data;
use rivulet_proto::v1::{Acks, ErrorCode, ProducePartition, ProduceRequest};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use crate::cluster::{ClientConfig, Cluster};
use crate::error::{Error, Result};
use crate::records::{encode_producer_batch, partition_for_key, Compression, ProducerRecord};
use rivulet_common::batch::{add_sequence, ProducerStamp};
use rivulet_proto::v1::InitProducerIdRequest;

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Acknowledgement level (default: all in-sync replicas).
    pub acks: Acks,
    /// How long a batch waits for more records before it is sent.
    pub linger: Duration,
    /// A batch is sent once it holds about this many bytes.
    pub batch_size: usize,
    /// Batch compression.
    pub compression: Compression,
    /// How long a record may take, retries included, before it fails.
    pub delivery_timeout: Duration,
    /// How long the leader may wait for replication (acks=all).
    pub request_timeout: Duration,
    /// Records that may wait in the producer before `send` waits for room.
    pub buffer_records: usize,
    /// Wait before the first retry of a batch; doubles per attempt up to
    /// `retry_backoff_max`.
    pub retry_backoff: Duration,
    /// Longest wait between retries.
    pub retry_backoff_max: Duration,
    /// Where records with neither key nor partition go.
    pub partitioner: Partitioner,
    /// Idempotent production (Kafka's `enable.idempotence`): `None` turns
    /// it on with acks=all and off otherwise; `Some(true)` with acks other
    /// than all is refused (the leader alone cannot keep the sequence across
    /// a failover); `Some(false)` turns it off.
    pub idempotence: Option<bool>,
}

/// Where records with neither key nor partition go. Both stick to one
/// partition for a while, so such records form large batches; they differ
/// in when they move on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Partitioner {
    /// Until the partition's batch is sent: while a batch of it is in
    /// flight, records keep joining the queue behind it, which goes out as
    /// one large request. With every append fsynced per partition, fewer,
    /// larger appends are faster: measured with `bench produce --acks all`
    /// on three nodes, 1,074k/1,123k records/s against 877k/976k for
    /// `UniformSticky`, and with lz4 1,415k/1,383k against 938k/940k
    /// (docs/benchmarks.md). Its cost is the skew KIP-794 fixed: a slow
    /// partition's batch stays in flight longer and draws more records.
    #[default]
    UntilSent,
    /// Kafka's uniform sticky partitioner (KIP-794) with adaptive
    /// partitioning off: a partition until `batch_size` bytes (as estimated
    /// before encoding) went to it, then another chosen uniformly, never the
    /// same twice in a row (as KIP-480's sticky cache). Spreads keyless
    /// records evenly whatever the partitions' speed.
    UniformSticky,
}

impl std::str::FromStr for Partitioner {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "until-sent" => Ok(Self::UntilSent),
            "uniform-sticky" => Ok(Self::UniformSticky),
            _ => Err(Error::Invalid(format!(
                "unknown partitioner {s:?}: use until-sent or uniform-sticky"
            ))),
        }
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 64 * 1024,
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            buffer_records: 64 * 1024,
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(1),
            partitioner: Partitioner::default(),
            idempotence: None,
        }
    }
}

/// The largest batch the producer builds by merging queued ones (the
/// broker's default limit is 1 MiB).
const MAX_MERGED_BATCH_BYTES: usize = 960 * 1024;

/// Where a record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The record's offset; `None` with acks=0 (the broker does not answer it).
    pub offset: Option<u64>,
}

/// The outcome of one batch as appended by `send`, shared by its records'
/// futures.
#[derive(Debug)]
struct BatchDone {
    topic: String,
    partition: u32,
    /// The base offset (`None` with acks=0), or why the batch failed.
    result: OnceLock<Result<Option<u64>>>,
    /// Futures polled before the result was set.
    wakers: Mutex<Vec<Waker>>,
}

impl BatchDone {
    fn new(topic: String, partition: u32) -> Arc<Self> {
        Arc::new(Self {
            topic,
            partition,
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        })
    }

    fn complete(&self, r: Result<Option<u64>>) {
        let _ = self.result.set(r);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }
}

/// Resolves when the record is acknowledged or has failed for good.
#[derive(Debug)]
pub struct DeliveryFuture {
    batch: Arc<BatchDone>,
    index: u64,
}

impl DeliveryFuture {
    fn failed(topic: &str, partition: u32, e: Error) -> Self {
        let batch = BatchDone::new(topic.to_owned(), partition);
        batch.complete(Err(e));
        Self { batch, index: 0 }
    }

    fn ready(&self) -> Option<Result<RecordMetadata>> {
        let r = self.batch.result.get()?;
        Some(match r {
            Ok(base) => Ok(RecordMetadata {
                topic: self.batch.topic.clone(),
                partition: self.batch.partition,
                offset: base.map(|b| b + self.index),
            }),
            Err(e) => Err(e.clone()),
        })
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.ready() {
            return Poll::Ready(r);
        }
        let mut wakers = self.batch.wakers.lock().unwrap_or_else(|e| e.into_inner());
        // Checked again under the lock: `complete` sets, then drains.
        if let Some(r) = self.ready() {
            return Poll::Ready(r);
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Records of one batch and the shared outcomes they report to.
#[derive(Debug)]
struct Batch {
    records: Vec<ProducerRecord>,
    /// `(outcome, index of its first record here)`: one part per batch
    /// merged in.
    parts: Vec<(Arc<BatchDone>, u64)>,
    bytes: usize,
    created: Instant,
    encoded: Option<Bytes>,
    /// The producer id, epoch and base sequence it was encoded with.
    stamp: Option<ProducerStamp>,
    /// Its place in the partition's send order (set when first sent).
    order: u64,
    attempts: u32,
}

impl Batch {
    fn new(topic: &str, partition: u32) -> Self {
        Self {
            records: Vec::new(),
            parts: vec![(BatchDone::new(topic.to_owned(), partition), 0)],
            bytes: 0,
            created: Instant::now(),
            encoded: None,
            stamp: None,
            order: 0,
            attempts: 0,
        }
    }

    fn finish(&self, r: &Result<Option<u64>>) {
        for (done, start) in &self.parts {
            done.complete(match r {
                Ok(base) => Ok(base.map(|b| b + start)),
                Err(e) => Err(e.clone()),
            });
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    /// Batches to send: first those sent before and waiting to be resent
    /// (encoded, in send order), then new ones.
    batches: VecDeque<Batch>,
    /// Send orders of the batches in flight.
    in_flight: std::collections::BTreeSet<u64>,
    retry_at: Option<Instant>,
    /// The send order the next new batch gets.
    next_order: u64,
}

impl Queue {
    /// Whether a batch sent before `order` is still unresolved (in flight
    /// or waiting to be resent).
    fn has_earlier(&self, order: u64) -> bool {
        self.in_flight.iter().next().is_some_and(|o| *o < order)
            || self
                .batches
                .iter()
                .any(|b| b.encoded.is_some() && b.order < order)
    }

    /// Whether a new batch may go out with `max` in flight: counted from
    /// the oldest batch still in flight, not by how many are. gRPC answers
    /// may come back out of order, so batches sent after one still in flight
    /// can be acknowledged first; if new ones then took their places, a
    /// resend of the old one could fall out of the leader's window of the
    /// last 5 batches and be refused instead of recognised.
    fn window_open(&self, max: usize) -> bool {
        self.in_flight
            .first()
            .is_none_or(|oldest| self.next_order - oldest < max as u64)
    }

    /// Puts a batch to resend back in send order, ahead of the new ones.
    fn requeue(&mut self, batch: Batch) {
        let at = self
            .batches
            .iter()
            .position(|b| b.encoded.is_none() || b.order > batch.order)
            .unwrap_or(self.batches.len());
        self.batches.insert(at, batch);
    }
}

/// Batches in flight per partition with idempotence (Kafka's limit for
/// `max.in.flight.requests.per.connection` with idempotence, and the
/// leader's duplicate window); without it one, so a retry never overtakes.
pub const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

type Key = (String, u32);

/// Batches waiting to be sent, shared by `send` and the sender task.
#[derive(Debug, Default)]
struct Accumulator {
    queues: HashMap<Key, Queue>,
    sticky: HashMap<String, Sticky>,
    spin: u32,
    /// With idempotence: the producer id and epoch, and per partition the
    /// epoch its sequence belongs to and the next sequence.
    producer: Option<(i64, i16)>,
    sequences: HashMap<Key, (i16, i32)>,
    /// A stamped batch failed for good: bump the epoch before stamping more.
    bump_epoch: bool,
    /// The most batches seen in flight to one partition at once.
    max_in_flight_seen: usize,
}

/// The sticky partition of a topic, and the bytes that went to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sticky {
    partition: u32,
    bytes: usize,
}

/// KIP-794: the partition for the next keyless record of `size` bytes:
/// `current`'s (updated), or a new uniform pick from `spin` once
/// `batch_size` bytes went to it. Never the same partition twice in a row
/// when there are several.
fn uniform_sticky(
    current: Option<Sticky>,
    size: usize,
    batch_size: usize,
    partitions: u32,
    spin: &mut u32,
) -> Sticky {
    let partitions = partitions.max(1);
    match current {
        Some(s) if s.bytes < batch_size && s.partition < partitions => Sticky {
            partition: s.partition,
            bytes: s.bytes + size,
        },
        previous => {
            let mut p = next_spin(spin) % partitions;
            if let Some(prev) = previous {
                if partitions > 1 && p == prev.partition {
                    p = (p + 1 + (*spin >> 20) % (partitions - 1)) % partitions;
                }
            }
            Sticky {
                partition: p,
                bytes: size,
            }
        }
    }
}

/// The next pseudo-random number of a small LCG (spreading only, nothing
/// that must be unpredictable).
fn next_spin(spin: &mut u32) -> u32 {
    *spin = spin.wrapping_mul(1_103_515_245).wrapping_add(12_345);
    *spin >> 8
}

/// What `send` and the sender task share.
#[derive(Debug)]
struct Shared {
    cluster: Cluster,
    config: ProducerConfig,
    acc: Mutex<Accumulator>,
    /// Wakes the sender: a batch filled, a partition got its first record.
    wake: Notify,
    /// One permit per record the producer may hold.
    space: Semaphore,
    /// Batches in flight per partition.
    max_in_flight: usize,
}

enum Command {
    Flush(oneshot::Sender<()>),
}

/// An async producer; cheap to clone (clones share one sender task).
#[derive(Debug, Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    control: mpsc::Sender<Command>,
}

impl Producer {
    /// Connects (one metadata round trip, so a wrong address fails here) and
    /// starts the sender task.
    pub async fn connect(client: ClientConfig, config: ProducerConfig) -> Result<Self> {
        if config.batch_size > MAX_MERGED_BATCH_BYTES {
            return Err(Error::Invalid(format!(
                "batch_size {} is over the limit of {MAX_MERGED_BATCH_BYTES} bytes",
                config.batch_size
            )));
        }
        if config.batch_size == 0 || config.buffer_records == 0 {
            return Err(Error::Invalid(
                "batch_size and buffer_records must be positive".into(),
            ));
        }
        let idempotent = match (config.idempotence, config.acks) {
            (Some(true), a) if a != Acks::All => {
                return Err(Error::Invalid(
                    "idempotence needs acks=all (give acks all, or turn idempotence off)".into(),
                ))
            }
            (Some(on), _) => on,
            (None, a) => a == Acks::All,
        };
        let cluster = Cluster::new(client)?;
        cluster.refresh(&[]).await?;
        let producer = if idempotent {
            Some(init_producer_id(&cluster, None).await?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            cluster,
            space: Semaphore::new(config.buffer_records.min(Semaphore::MAX_PERMITS)),
            config,
            acc: Mutex::new(Accumulator {
                spin: std::process::id(),
                producer,
                ..Accumulator::default()
            }),
            wake: Notify::new(),
            max_in_flight: if idempotent {
                MAX_IN_FLIGHT_IDEMPOTENT
            } else {
                1
            },
        });
        let (control, rx) = mpsc::channel(16);
        tokio::spawn(Sender::new(Arc::clone(&shared)).run(rx));
        Ok(Self { shared, control })
    }

    /// The producer id and epoch in use, with idempotence.
    pub fn producer_id(&self) -> Option<(i64, i16)> {
        self.shared
            .acc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .producer
    }

    /// The most batches this producer has had in flight to one partition
    /// at once (at most 5 with idempotence, else 1).
    pub fn max_in_flight_seen(&self) -> usize {
        self.shared
            .acc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .max_in_flight_seen
    }

    /// The partition count of `topic` (fresh from the cluster);
    /// `UnknownTopic` if it does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<u32> {
        let cluster = &self.shared.cluster;
        cluster.refresh(&[topic.to_owned()]).await?;
        cluster
            .cached_partition_count(topic)
            .ok_or_else(|| cluster.missing_topic(topic))
    }

    /// Queues a record; waits only when the buffer is full. The returned
    /// future resolves with the record's partition and offset (or why it
    /// could not be written).
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        if self.control.is_closed() {
            return Err(Error::Closed);
        }
        self.shared
            .space
            .acquire()
            .await
            .map_err(|_| Error::Closed)?
            .forget();
        let partition = match self.choose_partition(&record).await {
            Ok(p) => p,
            Err(e) => {
                self.shared.space.add_permits(1);
                return Ok(DeliveryFuture::failed(&record.topic, 0, e));
            }
        };
        let size = record.size_hint();
        let batch_size = self.shared.config.batch_size;
        let (future, wake) = {
            let mut acc = self.shared.acc.lock().unwrap_or_else(|e| e.into_inner());
            let q = acc
                .queues
                .entry((record.topic.clone(), partition))
                .or_default();
            let fits = q
                .batches
                .back()
                .is_some_and(|b| b.encoded.is_none() && b.bytes + size <= batch_size);
            if !fits {
                q.batches.push_back(Batch::new(&record.topic, partition));
            }
            let first = q.batches.len() == 1 && q.batches[0].records.is_empty();
            let b = q.batches.back_mut().expect("a batch was just ensured");
            let (done, start) = b.parts.last().expect("a batch has a part");
            let future = DeliveryFuture {
                batch: Arc::clone(done),
                index: b.records.len() as u64 - start,
            };
            b.bytes += size;
            b.records.push(record);
            (future, first || b.bytes >= batch_size)
        };
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(future)
    }

    async fn choose_partition(&self, rec: &ProducerRecord) -> Result<u32> {
        if let Some(p) = rec.partition {
            return Ok(p);
        }
        let cluster = &self.shared.cluster;
        let n = match cluster.cached_partition_count(&rec.topic) {
            Some(n) => n,
            None => cluster.partition_count(&rec.topic).await?,
        };
        if let Some(key) = &rec.key {
            return Ok(partition_for_key(key, n));
        }
        let mut acc = self.shared.acc.lock().unwrap_or_else(|e| e.into_inner());
        let acc = &mut *acc;
        let current = acc.sticky.get(&rec.topic).copied();
        let next = match self.shared.config.partitioner {
            Partitioner::UntilSent => match current {
                Some(s) if s.partition < n.max(1) => return Ok(s.partition),
                _ => Sticky {
                    partition: next_spin(&mut acc.spin) % n.max(1),
                    bytes: 0,
                },
            },
            Partitioner::UniformSticky => uniform_sticky(
                current,
                rec.size_hint(),
                self.shared.config.batch_size,
                n,
                &mut acc.spin,
            ),
        };
        match acc.sticky.get_mut(&rec.topic) {
            Some(s) => *s = next,
            None => {
                acc.sticky.insert(rec.topic.clone(), next);
            }
        }
        Ok(next.partition)
    }

    /// Sends one record and waits for its acknowledgement.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Sends everything queued now and waits until it is acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Command::Flush(tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }
}

/// The outcome of one batch of one request.
struct Done {
    key: Key,
    batch: Batch,
    result: Result<Option<u64>>,
}

struct Sender {
    shared: Arc<Shared>,
    in_flight: JoinSet<Vec<Done>>,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Sender {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            in_flight: JoinSet::new(),
            flushes: Vec::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut closing = false;
        loop {
            let next_linger = self.next_deadline();
            tokio::select! {
                cmd = rx.recv(), if !closing => match cmd {
                    Some(Command::Flush(tx)) => self.flushes.push(tx),
                    None => closing = true,
                },
                () = self.shared.wake.notified() => {}
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Ok(done) = done {
                        self.complete(done);
                    }
                }
                _ = tokio::time::sleep_until(next_linger.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if next_linger.is_some() => {}
            }
            let urgent = closing || !self.flushes.is_empty();
            self.dispatch(urgent).await;
            if self.idle() {
                for f in self.flushes.drain(..) {
                    let _ = f.send(());
                }
                if closing {
                    return;
                }
            }
        }
    }

    fn idle(&self) -> bool {
        let acc = self.shared.acc.lock().unwrap_or_else(|e| e.into_inner());
        self.in_flight.is_empty() && acc.queues.values().all(|q| q.batches.is_empty())
    }

    /// When the earliest waiting batch becomes due.
    fn next_deadline(&self) -> Option<Instant> {
        let acc = self.shared.acc.lock().unwrap_or_else(|e| e.into_inner());
        acc.queues
            .values()
            .filter(|q| q.window_open(self.shared.max_in_flight))
            .filter_map(|q| {
                let b = q.batches.front()?;
                let due = b.created + self.shared.config.linger;
                Some(q.retry_at.map_or(due, |r| r.max(due)))
            })
            .min()
    }

    /// Sends every ready batch, grouped by leader.
    async fn dispatch(&mut self, urgent: bool) {
        let config = &self.shared.config;
        let cluster = &self.shared.cluster;
        let max_in_flight = self.shared.max_in_flight;
        let now = Instant::now();
        let ready: Vec<Key> = {
            let acc = self.shared.acc.lock().unwrap_or_else(|e| e.into_inner());
            acc.queues
                .iter()
                .filter(|(_, q)| {
                    q.window_open(max_in_flight) && q.retry_at.is_none_or(|r| r <= now)
                })
                .filter(|(_, q)| {
                    q.batches
                        .front()
                        .is_some_and(|b| send_now(q, b, config, urgent, now))
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        if ready.is_empty() {
            return;
        }
        if ready.iter().any(|(t, p)| cluster.leader(t, *p).is_none()) {
            let mut topics: Vec<String> = ready.iter().map(|(t, _)| t.clone()).collect();
            topics.sort();
            topics.dedup();
            if let Err(e) = cluster.refresh(&topics).await {
                debug!(error = %e, "metadata refresh failed");
            }
        }
        let mut by_leader: HashMap<String, Vec<(Key, Batch)>> = HashMap::new();
        let mut failed: Vec<(Batch, Error)> = Vec::new();
        {
            let mut acc = self.shared.acc.lock().unwrap_or_else(|e| e.into_inner());
            for key in ready {
                let leader = cluster.leader(&key.0, key.1);
                let Some(q) = acc.queues.get_mut(&key) else {
                    continue;
                };
                if !q.window_open(max_in_flight)
                    || !q
                        .batches
                        .front()
                        .is_some_and(|b| send_now(q, b, config, urgent, now))
                {
                    continue;
                }
                let Some(leader) = leader else {
                    // Unknown topic or partition, or no leader right now.
                    let unknown = match cluster.cached_partition_count(&key.0) {
                        None => Some(cluster.missing_topic(&key.0)),
                        Some(n) if key.1 >= n => Some(Error::UnknownPartition {
                            topic: key.0.clone(),
                            partition: key.1,
                        }),
                        Some(_) => None,
                    };
                    match unknown {
                        Some(e) => failed.extend(q.batches.drain(..).map(|b| (b, e.clone()))),
                        None => {
                            // A leaderless partition still answers within
                            // delivery_timeout: its oldest batches fail.
                            let expired = q
                                .batches
                                .iter()
                                .take_while(|b| b.created.elapsed() >= config.delivery_timeout)
                                .count();
                            let e = Error::Timeout(
                                config.delivery_timeout,
                                format!("{}-{} had no leader", key.0, key.1),
                            );
                            failed.extend(q.batches.drain(..expired).map(|b| (b, e.clone())));
                            q.retry_at = Some(now + Duration::from_millis(100));
                        }
                    }
                    continue;
                };
                let Some(mut batch) = q.batches.pop_front() else {
                    continue;
                };
                // Batches that queued up behind the one in flight go together,
                // up to one request's worth: a busy partition pays one
                // replication round trip (and one fsync per replica) for all.
                while batch.encoded.is_none()
                    && q.batches.front().is_some_and(|next| {
                        next.encoded.is_none() && batch.bytes + next.bytes <= MAX_MERGED_BATCH_BYTES
                    })
                {
                    let Some(next) = q.batches.pop_front() else {
                        break;
                    };
                    let offset = batch.records.len() as u64;
                    batch.bytes += next.bytes;
                    batch.records.extend(next.records);
                    batch
                        .parts
                        .extend(next.parts.into_iter().map(|(d, s)| (d, s + offset)));
                }
                if batch.encoded.is_none() {
                    batch.order = q.next_order;
                    q.next_order += 1;
                }
                q.in_flight.insert(batch.order);
                let depth = q.in_flight.len();
                acc.max_in_flight_seen = acc.max_in_flight_seen.max(depth);
                let sealed_sticky = batch.encoded.is_none()
                    && batch
                        .records
                        .first()
                        .is_some_and(|r| r.partition.is_none() && r.key.is_none());
                if sealed_sticky && config.partitioner == Partitioner::UntilSent {
                    // The sticky partition moves on once its batch is sealed.
                    acc.sticky.remove(&key.0);
                }
                by_leader
                    .entry(leader.address)
                    .or_default()
                    .push((key, batch));
            }
        }
        for (batch, e) in failed {
            self.release(&batch);
            batch.finish(&Err(e));
        }
        self.bump_epoch_if_needed().await;
        for (addr, mut batches) in by_leader {
            // Encode outside the accumulator lock.
            batches.retain_mut(|(key, b)| {
                if b.encoded.is_some() {
                    return true;
                }
                b.stamp = self.next_stamp(key, b.records.len());
                match encode_producer_batch(&b.records, config.compression, b.stamp) {
                    Ok(bytes) => {
                        b.encoded = Some(bytes);
                        true
                    }
                    Err(e) => {
                        self.shared.space.add_permits(b.records.len());
                        b.finish(&Err(e));
                        let mut acc = self.shared.acc.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(q) = acc.queues.get_mut(key) {
                            q.in_flight.remove(&b.order);
                        }
                        // Its sequence numbers were taken and never sent.
                        acc.bump_epoch |= b.stamp.is_some();
                        false
                    }
                }
            });
            if batches.is_empty() {
                continue;
            }
            let cluster = cluster.clone();
            self.in_flight.spawn(send_request(
                cluster,
                addr,
                config.acks,
                config.request_timeout,
                batches,
            ));
        }
    }

    /// The producer stamp for a batch of `n` records to `key`, taking its
    /// sequence numbers (`None` without idempotence).
    fn next_stamp(&self, key: &Key, n: usize) -> Option<ProducerStamp> {
        let mut acc = self.shared.acc.lock().unwrap_or_else(|e| e.into_inner());
        let (producer_id, epoch) = acc.producer?;
        let seq = acc.sequences.entry(key.clone()).or_insert((epoch, 0));
        if seq.0 != epoch {
            // A new epoch starts every partition at sequence 0 (KIP-360).
            *seq = (epoch, 0);
        }
        let base_sequence = seq.1;
        seq.1 = add_sequence(seq.1, i32::try_from(n).unwrap_or(i32::MAX));
        Some(ProducerStamp {
            producer_id,
            producer_epoch: epoch,
            base_sequence,
        })
    }

    /// After a stamped batch failed for good, its partition's sequence has
    /// a hole the leader would refuse every later batch for: move to the
    /// next epoch (KIP-360), where every partition starts at 0. Batches in
    /// flight keep their old stamp; each partition has at most one, and its
    /// later batches take the new epoch. Asks the cluster, which gives the
    /// same id at epoch + 1 (or a new id at the last epoch); if it cannot
    /// be reached, bumps locally (the leader accepts any newer epoch that
    /// starts at 0).
    async fn bump_epoch_if_needed(&self) {
        let current = {
            let acc = self.shared.acc.lock().unwrap_or_else(|e| e.into_inner());
            match acc.producer {
                Some(p) if acc.bump_epoch => p,
                _ => return,
            }
        };
        let next = match init_producer_id(&self.shared.cluster, Some(current)).await {
            Ok(p) => Some(p),
            Err(e) if current.1 < i16::MAX => {
                debug!(error = %e, "InitProducerId for an epoch bump failed; bumping locally");
                Some((current.0, current.1 + 1))
            }
            Err(e) => {
                debug!(error = %e, "InitProducerId for a new producer id failed; will retry");
                None
            }
        };
        if let Some(next) = next {
            debug!(
                producer_id = next.0,
                epoch = next.1,
                "bumped the producer epoch"
            );
            let mut acc = self.shared.acc.lock().unwrap_or_else(|e| e.into_inner());
            acc.producer = Some(next);
            acc.bump_epoch = false;
        }
    }

    /// Gives a finished batch's buffer space back.
    fn release(&self, batch: &Batch) {
        self.shared.space.add_permits(batch.records.len());
    }

    fn complete(&mut self, done: Vec<Done>) {
        let now = Instant::now();
        let config = &self.shared.config;
        for Done {
            key,
            mut batch,
            result,
        } in done
        {
            {
                let mut acc = self.shared.acc.lock().unwrap_or_else(|e| e.into_inner());
                let q = acc.queues.entry(key.clone()).or_default();
                q.in_flight.remove(&batch.order);
                // Out of order behind a batch sent earlier that is still
                // unresolved (it failed and waits to be resent, or is still
                // on its way): this one is resent after it.
                let behind = batch.stamp.is_some()
                    && matches!(&result, Err(e) if e.code() == Some(ErrorCode::OutOfOrderSequenceNumber))
                    && q.has_earlier(batch.order);
                let retry = match &result {
                    Err(e) => {
                        (e.is_retriable() || behind)
                            && batch.created.elapsed() < config.delivery_timeout
                    }
                    Ok(_) => false,
                };
                if retry {
                    batch.attempts += 1;
                    let backoff = config
                        .retry_backoff
                        .saturating_mul(1 << (batch.attempts - 1).min(10))
                        .min(config.retry_backoff_max);
                    if let Err(e) = &result {
                        debug!(topic = %key.0, partition = key.1, attempt = batch.attempts, error = %e, "retrying batch");
                    }
                    q.retry_at = Some(now + backoff);
                    q.requeue(batch);
                    continue;
                }
                q.retry_at = None;
            }
            self.release(&batch);
            if result.is_err() && batch.stamp.is_some() {
                self.shared
                    .acc
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .bump_epoch = true;
            }
            let result = match result {
                Err(e) if e.is_retriable() => Err(Error::Timeout(
                    config.delivery_timeout,
                    format!("record not acknowledged; last error: {e}"),
                )),
                r => r,
            };
            batch.finish(&result);
        }
    }
}

/// Whether the first queued batch `b` of `q` goes out now. A batch to
/// resend waits until nothing of its partition is in flight, so resends go
/// in order, one at a time (as Kafka's producer does after an error). With
/// a batch in flight, a new one goes only once full (or when flushing), so
/// small batches keep merging into one request behind it.
fn send_now(q: &Queue, b: &Batch, config: &ProducerConfig, urgent: bool, now: Instant) -> bool {
    if b.attempts > 0 || b.encoded.is_some() {
        return q.in_flight.is_empty();
    }
    if !q.in_flight.is_empty() {
        return urgent || q.batches.len() > 1 || b.bytes >= config.batch_size;
    }
    urgent
        || q.batches.len() > 1
        || b.bytes >= config.batch_size
        || b.created + config.linger <= now
}

/// InitProducerId on any node: a new producer id, or with `current` the
/// same id at the next epoch.
async fn init_producer_id(cluster: &Cluster, current: Option<(i64, i16)>) -> Result<(i64, i16)> {
    let r = cluster
        .on_any_node(|addr| async move {
            let mut client = cluster
                .broker(&addr)
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            let mut req = tonic::Request::new(InitProducerIdRequest {
                transactional_id: String::new(),
                producer_id: current.map(|c| c.0),
                producer_epoch: current.map(|c| i32::from(c.1)),
            });
            req.set_timeout(Duration::from_secs(15));
            client
                .init_producer_id(req)
                .await
                .map(tonic::Response::into_inner)
        })
        .await?;
    if r.error_code != ErrorCode::None as i32 {
        return Err(Error::broker(r.error_code, r.error_message));
    }
    let epoch = i16::try_from(r.producer_epoch)
        .map_err(|_| Error::Rpc(format!("producer epoch {} out of range", r.producer_epoch)))?;
    Ok((r.producer_id, epoch))
}

/// One Produce RPC carrying batches of several partitions to one leader.
async fn send_request(
    cluster: Cluster,
    addr: String,
    acks: Acks,
    timeout: Duration,
    batches: Vec<(Key, Batch)>,
) -> Vec<Done> {
    let req = ProduceRequest {
        acks: acks.into(),
        timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        partitions: batches
            .iter()
            .map(|((topic, partition), b)| ProducePartition {
                topic: topic.clone(),
                partition: *partition,
                data: Some(Data::RecordBatch(b.encoded.clone().unwrap_or_default())),
                ..ProducePartition::default()
            })
            .collect(),
    };
    let mut request = tonic::Request::new(req);
    request.set_timeout(timeout + Duration::from_secs(5));
    let response = match cluster.broker(&addr) {
        Ok(mut c) => c.produce(request).await.map_err(Error::from),
        Err(e) => Err(e),
    };
    let response = match response {
        Ok(r) => r.into_inner(),
        Err(e) => {
            return batches
                .into_iter()
                .map(|(key, batch)| {
                    cluster.invalidate(&key.0, key.1);
                    Done {
                        key,
                        batch,
                        result: Err(e.clone()),
                    }
                })
                .collect();
        }
    };
    let mut by_key: HashMap<Key, _> = response
        .partitions
        .into_iter()
        .map(|p| ((p.topic.clone(), p.partition), p))
        .collect();
    batches
        .into_iter()
        .map(|(key, batch)| {
            let result = match by_key.remove(&key) {
                None => Err(Error::Rpc(format!("no answer for {}-{}", key.0, key.1))),
                Some(p) if p.error_code == ErrorCode::None as i32 => {
                    Ok((acks != Acks::None).then_some(p.base_offset))
                }
                Some(p) => {
                    if let Some(hint) = &p.leader {
                        cluster.apply_hint(&key.0, key.1, hint);
                    } else {
                        cluster.invalidate(&key.0, key.1);
                    }
                    Err(Error::broker(p.error_code, p.error_message))
                }
            };
            Done { key, batch, result }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(order: u64) -> Batch {
        let mut b = Batch::new("t", 0);
        b.order = order;
        b.encoded = Some(Bytes::from_static(b"x"));
        b.attempts = 1;
        b
    }

    #[test]
    fn resends_go_back_in_send_order_ahead_of_new_batches_and_one_at_a_time() {
        let mut q = Queue {
            next_order: 8,
            ..Queue::default()
        };
        q.batches.push_back(Batch::new("t", 0));
        for o in [5, 3, 6] {
            q.requeue(sent(o));
        }
        let orders: Vec<(u64, bool)> = q
            .batches
            .iter()
            .map(|b| (b.order, b.encoded.is_some()))
            .collect();
        assert_eq!(orders, [(3, true), (5, true), (6, true), (0, false)]);
        assert!(q.has_earlier(4) && !q.has_earlier(3));
        let config = ProducerConfig::default();
        let now = Instant::now();
        // A resend waits for everything in flight.
        q.in_flight.insert(7);
        assert!(!send_now(&q, &q.batches[0], &config, true, now));
        q.in_flight.clear();
        assert!(send_now(&q, &q.batches[0], &config, false, now));
    }

    #[test]
    fn the_in_flight_window_counts_from_the_oldest_batch_in_flight() {
        let mut q = Queue {
            next_order: 5,
            ..Queue::default()
        };
        assert!(q.window_open(5));
        // Batches 1..4 were answered before batch 0: no batch 5 until 0 is,
        // or a resend of 0 could fall out of the leader's 5-batch window.
        q.in_flight.insert(0);
        assert!(!q.window_open(5));
        q.in_flight.clear();
        q.in_flight.insert(1);
        assert!(q.window_open(5));
        assert!(!q.window_open(1), "without idempotence one at a time");
    }

    #[test]
    fn the_uniform_sticky_partition_moves_after_batch_size_bytes_evenly() {
        let mut spin = 7;
        let mut cur = None;
        let mut runs: Vec<(u32, usize)> = Vec::new();
        for _ in 0..60_000 {
            let s = uniform_sticky(cur, 100, 1_000, 6, &mut spin);
            match runs.last_mut() {
                Some((p, n))
                    if *p == s.partition && cur.is_some_and(|c: Sticky| c.bytes < 1_000) =>
                {
                    *n += 1
                }
                _ => runs.push((s.partition, 1)),
            }
            cur = Some(s);
        }
        // Every run is batch.size worth of records (10 of 100 bytes)...
        assert!(runs.iter().all(|(_, n)| *n == 10), "{:?}", &runs[..5]);
        // ...never the same partition twice in a row...
        assert!(runs.windows(2).all(|w| w[0].0 != w[1].0));
        // ...and the partitions are used about equally.
        let mut per = [0usize; 6];
        for (p, n) in &runs {
            per[*p as usize] += n;
        }
        let (min, max) = (per.iter().min().unwrap(), per.iter().max().unwrap());
        assert!(*min * 10 > *max * 8, "uneven: {per:?}");
        // A partition count that shrank moves on at once; one partition stays.
        let moved = Sticky {
            partition: 5,
            bytes: 0,
        };
        assert!(uniform_sticky(Some(moved), 1, 1_000, 3, &mut spin).partition < 3);
        let full = Sticky {
            partition: 0,
            bytes: 5_000,
        };
        assert_eq!(
            uniform_sticky(Some(full), 1, 1_000, 1, &mut spin).partition,
            0
        );
    }

    #[test]
    fn partitioner_names_parse() {
        assert_eq!(
            "until-sent".parse::<Partitioner>().unwrap(),
            Partitioner::UntilSent
        );
        assert_eq!(
            "uniform-sticky".parse::<Partitioner>().unwrap(),
            Partitioner::UniformSticky
        );
        assert!("round-robin".parse::<Partitioner>().is_err());
    }
}
