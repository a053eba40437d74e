//! The producer: batches records per partition, sends each batch to the
//! partition's leader, retries retriable failures after refreshing metadata,
//! and resolves one delivery future per record.
//!
//! ```text
//!  send() ──mpsc──▶ sender task: partition (explicit | murmur2(key) | sticky)
//!                     per-partition queue of batches (batch_size, linger)
//!                     one batch in flight per partition (keeps order on retry)
//!                     ready batches grouped by leader ──▶ one Produce RPC per leader
//!                     NOT_LEADER… ─▶ leader hint / metadata refresh ─▶ retry until
//!                     delivery_timeout
//! ```
//!
//! Retries can write a batch twice when a response is lost after the leader
//! appended it (no idempotent producer yet): delivery is at least once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rivulet_proto::v1::produce_partition::Data;
use rivulet_proto::v1::{Acks, ErrorCode, ProducePartition, ProduceRequest};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use crate::cluster::{ClientConfig, Cluster};
use crate::error::{Error, Result};
use crate::records::{encode_batch, partition_for_key, Compression, ProducerRecord};

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

/// Resolves when the record is acknowledged or has failed for good.
#[derive(Debug)]
pub struct DeliveryFuture(oneshot::Receiver<Result<RecordMetadata>>);

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

type Waiter = oneshot::Sender<Result<RecordMetadata>>;

enum Command {
    Send(ProducerRecord, Waiter),
    Flush(oneshot::Sender<()>),
}

/// An async producer; cheap to clone (clones share one sender task).
#[derive(Debug, Clone)]
pub struct Producer {
    tx: mpsc::Sender<Command>,
    cluster: Cluster,
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
        let cluster = Cluster::new(client)?;
        cluster.refresh(&[]).await?;
        let (tx, rx) = mpsc::channel(config.buffer_records);
        tokio::spawn(Sender::new(cluster.clone(), config).run(rx));
        Ok(Self { tx, cluster })
    }

    /// The partition count of `topic` (fresh from the cluster);
    /// `UnknownTopic` if it does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<u32> {
        self.cluster.refresh(&[topic.to_owned()]).await?;
        self.cluster
            .cached_partition_count(topic)
            .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))
    }

    /// Queues a record; waits only when the buffer is full. The returned
    /// future resolves with the record's partition and offset.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Send(record, tx))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(DeliveryFuture(rx))
    }

    /// Sends one record and waits for its acknowledgement.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Sends everything queued now and waits until it is acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Flush(tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }
}

/// Records of one batch with their waiters.
struct Batch {
    records: Vec<ProducerRecord>,
    waiters: Vec<Waiter>,
    bytes: usize,
    created: Instant,
    encoded: Option<Bytes>,
    attempts: u32,
}

impl Batch {
    fn new() -> Self {
        Self {
            records: Vec::new(),
            waiters: Vec::new(),
            bytes: 0,
            created: Instant::now(),
            encoded: None,
            attempts: 0,
        }
    }

    fn fail(self, e: &Error) {
        for w in self.waiters {
            let _ = w.send(Err(e.clone()));
        }
    }
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Batch>,
    in_flight: bool,
    retry_at: Option<Instant>,
}

type Key = (String, u32);

/// The outcome of one batch of one request.
struct Done {
    key: Key,
    batch: Batch,
    result: Result<Option<u64>>,
}

struct Sender {
    cluster: Cluster,
    config: ProducerConfig,
    queues: HashMap<Key, Queue>,
    sticky: HashMap<String, u32>,
    spin: u32,
    in_flight: JoinSet<Vec<Done>>,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Sender {
    fn new(cluster: Cluster, config: ProducerConfig) -> Self {
        Self {
            cluster,
            config,
            queues: HashMap::new(),
            sticky: HashMap::new(),
            spin: std::process::id(),
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
                    Some(Command::Send(rec, w)) => self.enqueue(rec, w).await,
                    Some(Command::Flush(tx)) => self.flushes.push(tx),
                    None => closing = true,
                },
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Ok(done) = done {
                        self.complete(done);
                    }
                }
                _ = tokio::time::sleep_until(next_linger.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if next_linger.is_some() => {}
            }
            // Drain whatever else is waiting without blocking, so batches fill.
            while !closing {
                match rx.try_recv() {
                    Ok(Command::Send(rec, w)) => self.enqueue(rec, w).await,
                    Ok(Command::Flush(tx)) => self.flushes.push(tx),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => closing = true,
                }
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
        self.in_flight.is_empty() && self.queues.values().all(|q| q.batches.is_empty())
    }

    /// When the earliest waiting batch becomes due.
    fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter(|q| !q.in_flight)
            .filter_map(|q| {
                let b = q.batches.front()?;
                let due = b.created + self.config.linger;
                Some(q.retry_at.map_or(due, |r| r.max(due)))
            })
            .min()
    }

    async fn choose_partition(&mut self, rec: &ProducerRecord) -> Result<u32> {
        if let Some(p) = rec.partition {
            return Ok(p);
        }
        let n = self.cluster.partition_count(&rec.topic).await?;
        if let Some(key) = &rec.key {
            return Ok(partition_for_key(key, n));
        }
        let spin = &mut self.spin;
        Ok(*self.sticky.entry(rec.topic.clone()).or_insert_with(|| {
            *spin = spin.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (*spin >> 8) % n.max(1)
        }))
    }

    async fn enqueue(&mut self, rec: ProducerRecord, waiter: Waiter) {
        let partition = match self.choose_partition(&rec).await {
            Ok(p) => p,
            Err(e) => {
                let _ = waiter.send(Err(e));
                return;
            }
        };
        let size = rec.size_hint();
        let batch_size = self.config.batch_size;
        let q = self
            .queues
            .entry((rec.topic.clone(), partition))
            .or_default();
        let fits = q
            .batches
            .back()
            .is_some_and(|b| b.encoded.is_none() && b.bytes + size <= batch_size);
        if !fits {
            q.batches.push_back(Batch::new());
        }
        let b = q.batches.back_mut().expect("a batch was just ensured");
        b.bytes += size;
        b.records.push(rec);
        b.waiters.push(waiter);
    }

    /// Sends every ready batch, grouped by leader.
    async fn dispatch(&mut self, urgent: bool) {
        let now = Instant::now();
        let mut ready: Vec<Key> = Vec::new();
        for (key, q) in &self.queues {
            if q.in_flight || q.retry_at.is_some_and(|r| r > now) {
                continue;
            }
            let Some(b) = q.batches.front() else { continue };
            let full = q.batches.len() > 1 || b.bytes >= self.config.batch_size;
            if urgent || full || b.created + self.config.linger <= now || b.attempts > 0 {
                ready.push(key.clone());
            }
        }
        if ready.is_empty() {
            return;
        }
        if ready
            .iter()
            .any(|(t, p)| self.cluster.leader(t, *p).is_none())
        {
            let mut topics: Vec<String> = ready.iter().map(|(t, _)| t.clone()).collect();
            topics.sort();
            topics.dedup();
            if let Err(e) = self.cluster.refresh(&topics).await {
                debug!(error = %e, "metadata refresh failed");
            }
        }
        let mut by_leader: HashMap<String, Vec<(Key, Batch)>> = HashMap::new();
        for key in ready {
            let leader = self.cluster.leader(&key.0, key.1);
            let q = self
                .queues
                .get_mut(&key)
                .expect("ready keys come from the map");
            let Some(leader) = leader else {
                // Unknown topic or partition, or no leader right now.
                let unknown = match self.cluster.cached_partition_count(&key.0) {
                    None => Some(Error::UnknownTopic(key.0.clone())),
                    Some(n) if key.1 >= n => Some(Error::UnknownPartition {
                        topic: key.0.clone(),
                        partition: key.1,
                    }),
                    Some(_) => None,
                };
                match unknown {
                    Some(e) => {
                        for b in q.batches.drain(..) {
                            b.fail(&e);
                        }
                    }
                    None => q.retry_at = Some(now + Duration::from_millis(100)),
                }
                continue;
            };
            let mut batch = q.batches.pop_front().expect("ready queues have a batch");
            // Batches that queued up behind the one in flight go together, up
            // to one request's worth: a busy partition pays one replication
            // round trip (and one fsync per replica) for all of them.
            while batch.encoded.is_none()
                && q.batches.front().is_some_and(|next| {
                    next.encoded.is_none() && batch.bytes + next.bytes <= MAX_MERGED_BATCH_BYTES
                })
            {
                let next = q.batches.pop_front().expect("front checked");
                batch.bytes += next.bytes;
                batch.records.extend(next.records);
                batch.waiters.extend(next.waiters);
                batch.created = batch.created.min(next.created);
            }
            if batch.encoded.is_none() {
                match encode_batch(&batch.records, self.config.compression) {
                    Ok(b) => batch.encoded = Some(b),
                    Err(e) => {
                        batch.fail(&e);
                        continue;
                    }
                }
                // The sticky partition moves on once its batch is sealed.
                if batch
                    .records
                    .first()
                    .is_some_and(|r| r.partition.is_none() && r.key.is_none())
                {
                    self.sticky.remove(&key.0);
                }
            }
            q.in_flight = true;
            by_leader
                .entry(leader.address)
                .or_default()
                .push((key, batch));
        }
        for (addr, batches) in by_leader {
            let cluster = self.cluster.clone();
            let acks = self.config.acks;
            let timeout = self.config.request_timeout;
            self.in_flight
                .spawn(send_request(cluster, addr, acks, timeout, batches));
        }
    }

    fn complete(&mut self, done: Vec<Done>) {
        let now = Instant::now();
        for Done {
            key,
            mut batch,
            result,
        } in done
        {
            let q = self.queues.entry(key.clone()).or_default();
            q.in_flight = false;
            match result {
                Ok(base) => {
                    q.retry_at = None;
                    for (i, w) in batch.waiters.into_iter().enumerate() {
                        let _ = w.send(Ok(RecordMetadata {
                            topic: key.0.clone(),
                            partition: key.1,
                            offset: base.map(|b| b + i as u64),
                        }));
                    }
                }
                Err(e)
                    if e.is_retriable()
                        && batch.created.elapsed() < self.config.delivery_timeout =>
                {
                    batch.attempts += 1;
                    let backoff = self
                        .config
                        .retry_backoff
                        .saturating_mul(1 << (batch.attempts - 1).min(10))
                        .min(self.config.retry_backoff_max);
                    debug!(topic = %key.0, partition = key.1, attempt = batch.attempts, error = %e, "retrying batch");
                    q.retry_at = Some(now + backoff);
                    q.batches.push_front(batch);
                }
                Err(e) => {
                    let e = match e {
                        e if e.is_retriable() => Error::Timeout(
                            self.config.delivery_timeout,
                            format!("record not acknowledged; last error: {e}"),
                        ),
                        e => e,
                    };
                    batch.fail(&e);
                }
            }
        }
    }
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
