//! The consumer: reads assigned partitions from their leaders with
//! long-polling fetches, following leadership as it moves.
//!
//! Positions live in the consumer: `assign` starts a partition at the
//! configured reset point, `seek` moves it, `poll` returns records in offset
//! order per partition and advances past them. Consumer groups (shared
//! assignment, committed offsets) build on this.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rivulet_proto::v1::list_offsets_partition::Spec;
use rivulet_proto::v1::{
    ErrorCode, FetchPartition, FetchRequest, ListOffsetsPartition, ListOffsetsRequest, OffsetSpec,
};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::cluster::{ClientConfig, Cluster};
use crate::error::{Error, Result};
use crate::records::{decode_batches, ConsumerRecord};

/// Where a partition without a valid position starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OffsetReset {
    /// The oldest record kept.
    Earliest,
    /// After the newest committed record (default, as in Kafka).
    #[default]
    Latest,
    /// Fail the poll.
    None,
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Where new or out-of-range positions start.
    pub offset_reset: OffsetReset,
    /// Longest a fetch waits at the broker for data.
    pub max_wait: Duration,
    /// A fetch returns once this many bytes are ready.
    pub min_bytes: u32,
    /// Bytes per partition per fetch.
    pub partition_max_bytes: u32,
    /// Skip a fetched batch that cannot be decoded (logging a WARN with its
    /// topic, partition and offsets) instead of stopping at it with
    /// [`Error::UndecodableBatch`]. Off by default: skipping loses records.
    pub skip_undecodable: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            offset_reset: OffsetReset::Latest,
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            partition_max_bytes: 1 << 20,
            skip_undecodable: false,
        }
    }
}

/// Where to move a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The log start.
    Beginning,
    /// The high watermark (only new records).
    End,
    /// This offset.
    Offset(u64),
    /// The first record at or after this timestamp (ms), else the end.
    Timestamp(i64),
}

/// A consumer of explicitly assigned partitions.
#[derive(Debug)]
pub struct Consumer {
    cluster: Cluster,
    config: ConsumerConfig,
    /// Assigned partitions → next offset to read (`None`: to be reset).
    positions: BTreeMap<(String, u32), Option<u64>>,
    /// High watermarks seen, for lag.
    high_watermarks: HashMap<(String, u32), u64>,
    /// Fetches in flight (at most one per leader at a time).
    in_flight: JoinSet<FetchResult>,
    /// Partitions in a fetch in flight → the offset asked for.
    fetching: HashMap<(String, u32), u64>,
    /// When metadata was last refreshed for leaderless partitions.
    refreshed: tokio::time::Instant,
    /// An undecodable batch met after records were already in hand: it is
    /// returned by the next poll, after those records.
    pending: Option<Error>,
}

impl Consumer {
    /// Connects (one metadata round trip).
    pub async fn connect(client: ClientConfig, config: ConsumerConfig) -> Result<Self> {
        let cluster = Cluster::new(client)?;
        cluster.refresh(&[]).await?;
        Ok(Self {
            cluster,
            config,
            positions: BTreeMap::new(),
            high_watermarks: HashMap::new(),
            in_flight: JoinSet::new(),
            fetching: HashMap::new(),
            refreshed: tokio::time::Instant::now(),
            pending: None,
        })
    }

    /// The partition count of `topic`.
    pub async fn partitions(&self, topic: &str) -> Result<u32> {
        self.cluster.refresh(&[topic.to_owned()]).await?;
        self.cluster
            .cached_partition_count(topic)
            .ok_or_else(|| self.cluster.missing_topic(topic))
    }

    /// Assigns `partitions` of `topic` (every partition when empty), each
    /// starting at the reset point until sought.
    pub async fn assign(&mut self, topic: &str, partitions: &[u32]) -> Result<()> {
        let n = self.partitions(topic).await?;
        let list: Vec<u32> = if partitions.is_empty() {
            (0..n).collect()
        } else {
            partitions.to_vec()
        };
        for p in list {
            if p >= n {
                return Err(Error::UnknownPartition {
                    topic: topic.to_owned(),
                    partition: p,
                });
            }
            self.positions.entry((topic.to_owned(), p)).or_insert(None);
        }
        Ok(())
    }

    /// Adds one partition starting at `offset` (`None`: the reset point),
    /// without checking it exists (a group coordinator assigned it).
    pub(crate) fn assign_at(&mut self, topic: &str, partition: u32, offset: Option<u64>) {
        self.positions.insert((topic.to_owned(), partition), offset);
    }

    /// Stops reading these partitions; records of fetches in flight for them
    /// are dropped.
    pub fn unassign(&mut self, partitions: &[(String, u32)]) {
        for tp in partitions {
            self.positions.remove(tp);
            self.high_watermarks.remove(tp);
        }
    }

    pub(crate) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.positions.keys().cloned().collect()
    }

    /// The next offset to read from `topic`/`partition`, once known.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.positions
            .get(&(topic.to_owned(), partition))
            .copied()
            .flatten()
    }

    /// The last high watermark seen for `topic`/`partition`.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        self.high_watermarks
            .get(&(topic.to_owned(), partition))
            .copied()
    }

    /// Moves every assigned partition of `topic` (or only `partition`).
    pub async fn seek(&mut self, topic: &str, partition: Option<u32>, to: SeekTo) -> Result<()> {
        let keys: Vec<(String, u32)> = self
            .positions
            .keys()
            .filter(|(t, p)| t == topic && partition.is_none_or(|x| x == *p))
            .cloned()
            .collect();
        if keys.is_empty() {
            return Err(Error::Invalid(format!(
                "seek on {topic}: the partition is not assigned"
            )));
        }
        for (t, p) in keys {
            let offset = match to {
                SeekTo::Offset(o) => o,
                SeekTo::Beginning => self
                    .list_offset(&t, p, Spec::OffsetSpec(OffsetSpec::Earliest as i32))
                    .await?
                    .unwrap_or(0),
                SeekTo::End => self
                    .list_offset(&t, p, Spec::OffsetSpec(OffsetSpec::Latest as i32))
                    .await?
                    .unwrap_or(0),
                SeekTo::Timestamp(ts) => {
                    match self.list_offset(&t, p, Spec::TimestampMs(ts)).await? {
                        Some(o) => o,
                        None => self
                            .list_offset(&t, p, Spec::OffsetSpec(OffsetSpec::Latest as i32))
                            .await?
                            .unwrap_or(0),
                    }
                }
            };
            self.positions.insert((t, p), Some(offset));
        }
        Ok(())
    }

    /// ListOffsets against the partition's leader, following it if it moved.
    async fn list_offset(&self, topic: &str, partition: u32, spec: Spec) -> Result<Option<u64>> {
        let mut last = None;
        for _ in 0..20 {
            let leader = match self.cluster.leader_or_refresh(topic, partition).await {
                Ok(l) => l,
                Err(e) if e.is_retriable() => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let req = ListOffsetsRequest {
                partitions: vec![ListOffsetsPartition {
                    topic: topic.to_owned(),
                    partition,
                    spec: Some(spec),
                    current_leader_epoch: None,
                }],
            };
            let r = match self
                .cluster
                .broker(&leader.address)?
                .list_offsets(req)
                .await
            {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    self.cluster.invalidate(topic, partition);
                    last = Some(e.into());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(p) = r.partitions.into_iter().next() else {
                return Err(Error::Rpc("empty ListOffsets answer".into()));
            };
            if p.error_code == ErrorCode::None as i32 {
                return Ok(p.offset);
            }
            let e = Error::broker(p.error_code, p.error_message);
            if !e.is_retriable() {
                return Err(e);
            }
            match &p.leader {
                Some(h) => self.cluster.apply_hint(topic, partition, h),
                None => self.cluster.invalidate(topic, partition),
            }
            last = Some(e);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.unwrap_or_else(|| Error::Rpc("ListOffsets failed".into())))
    }

    /// Resolves positions still to be reset.
    async fn reset_positions(&mut self) -> Result<()> {
        let pending: Vec<(String, u32)> = self
            .positions
            .iter()
            .filter(|(_, pos)| pos.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for (t, p) in pending {
            let to = match self.config.offset_reset {
                OffsetReset::Earliest => SeekTo::Beginning,
                OffsetReset::Latest => SeekTo::End,
                OffsetReset::None => {
                    return Err(Error::Invalid(format!(
                        "{t}-{p} has no position and offset reset is none: seek first"
                    )))
                }
            };
            self.seek(&t, Some(p), to).await?;
        }
        Ok(())
    }

    /// Returns the records of the next fetch to complete, waiting up to the
    /// configured `max_wait` (plus a round trip) for one.
    ///
    /// Every leader has at most one fetch in flight for the partitions it
    /// leads; fetches stay in flight across polls, so records from one leader
    /// are returned as soon as they arrive, without waiting for the long
    /// polls at the others. A fetch whose partition was sought meanwhile is
    /// ignored.
    ///
    /// A batch that cannot be decoded stops its partition there: the records
    /// before it are returned, and the poll after fails with
    /// [`Error::UndecodableBatch`] naming it (unless
    /// [`ConsumerConfig::skip_undecodable`]).
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        self.reset_positions().await?;
        self.send_fetches().await;
        if self.in_flight.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(Vec::new());
        }
        let wait = self.config.max_wait + Duration::from_secs(1);
        let mut out = Vec::new();
        if let Ok(Some(Ok(done))) = tokio::time::timeout(wait, self.in_flight.join_next()).await {
            self.absorb(done, &mut out)?;
        }
        // Whatever else already arrived comes along.
        while let Some(Ok(done)) = self.in_flight.try_join_next() {
            self.absorb(done, &mut out)?;
        }
        if out.is_empty() {
            if let Some(e) = self.pending.take() {
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Sends a fetch to every leader of assigned partitions that has none in
    /// flight.
    async fn send_fetches(&mut self) {
        let mut by_leader: HashMap<String, Vec<FetchPartition>> = HashMap::new();
        let mut leaderless = false;
        for ((t, p), pos) in &self.positions {
            let Some(offset) = *pos else { continue };
            if self.fetching.contains_key(&(t.clone(), *p)) {
                continue;
            }
            match self.cluster.leader(t, *p) {
                Some(l) => by_leader
                    .entry(l.address)
                    .or_default()
                    .push(FetchPartition {
                        topic: t.clone(),
                        partition: *p,
                        offset,
                        partition_max_bytes: self.config.partition_max_bytes,
                        current_leader_epoch: Some(l.epoch),
                    }),
                None => leaderless = true,
            }
        }
        if leaderless && self.refreshed.elapsed() >= Duration::from_millis(100) {
            self.refreshed = tokio::time::Instant::now();
            let topics: Vec<String> = self.positions.keys().map(|(t, _)| t.clone()).collect();
            if let Err(e) = self.cluster.refresh(&topics).await {
                debug!(error = %e, "metadata refresh failed");
            }
        }
        let max_wait = u32::try_from(self.config.max_wait.as_millis()).unwrap_or(u32::MAX);
        for (addr, partitions) in by_leader {
            for fp in &partitions {
                self.fetching
                    .insert((fp.topic.clone(), fp.partition), fp.offset);
            }
            let cluster = self.cluster.clone();
            let min_bytes = self.config.min_bytes;
            self.in_flight.spawn(async move {
                let mut req = tonic::Request::new(FetchRequest {
                    partitions: partitions.clone(),
                    max_bytes: 0,
                    min_bytes,
                    max_wait_ms: max_wait,
                });
                req.set_timeout(
                    Duration::from_millis(u64::from(max_wait)) + Duration::from_secs(10),
                );
                let r = match cluster.broker(&addr) {
                    Ok(mut c) => c.fetch(req).await.map_err(Error::from),
                    Err(e) => Err(e),
                };
                (partitions, r.map(|r| r.into_inner()))
            });
        }
    }

    /// Takes in one completed fetch: records for partitions whose position
    /// is still where the fetch started; errors move leadership or positions.
    fn absorb(&mut self, done: FetchResult, out: &mut Vec<ConsumerRecord>) -> Result<()> {
        let (asked, result) = done;
        for fp in &asked {
            self.fetching.remove(&(fp.topic.clone(), fp.partition));
        }
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "fetch failed; refreshing metadata");
                for fp in &asked {
                    self.cluster.invalidate(&fp.topic, fp.partition);
                }
                return Ok(());
            }
        };
        for part in response.partitions {
            let key = (part.topic.clone(), part.partition);
            let asked_at = asked
                .iter()
                .find(|fp| fp.topic == part.topic && fp.partition == part.partition)
                .map(|fp| fp.offset);
            let Some(Some(pos)) = self.positions.get(&key).copied() else {
                continue;
            };
            if asked_at != Some(pos) {
                continue; // sought meanwhile
            }
            match ErrorCode::try_from(part.error_code) {
                Ok(ErrorCode::None) => {
                    self.high_watermarks
                        .insert(key.clone(), part.high_watermark);
                    let skip = self.config.skip_undecodable;
                    let decoded =
                        decode_batches(&part.topic, part.partition, part.records, pos, skip);
                    let mut next = decoded.records.last().map(|r| r.offset + 1);
                    for bad in &decoded.undecodable {
                        if skip {
                            warn!(topic = %part.topic, partition = part.partition, offset = bad.offset,
                                next_offset = bad.next_offset, reason = %bad.reason,
                                "skipping a record batch that cannot be decoded: its records are not delivered");
                            next = next.max(Some(bad.next_offset.max(pos)));
                        } else if self.pending.is_none() {
                            self.pending = Some(Error::UndecodableBatch {
                                topic: part.topic.clone(),
                                partition: part.partition,
                                offset: bad.offset,
                                next_offset: bad.next_offset,
                                reason: bad.reason.clone(),
                            });
                        }
                    }
                    if let Some(next) = next {
                        self.positions.insert(key, Some(next));
                    }
                    out.extend(decoded.records);
                }
                Ok(ErrorCode::OffsetNotAvailable) => {
                    // A new leader's HW is not at its epoch's start yet: the
                    // same leader answers shortly (KIP-207).
                    debug!(topic = %part.topic, partition = part.partition, "high watermark not available yet");
                }
                Ok(ErrorCode::OffsetOutOfRange) => {
                    debug!(topic = %part.topic, partition = part.partition, pos, "position out of range; resetting");
                    if self.config.offset_reset == OffsetReset::None {
                        return Err(Error::broker(part.error_code, part.error_message));
                    }
                    self.positions.insert(key, None);
                }
                _ => {
                    let e = Error::broker(part.error_code, part.error_message);
                    if !e.is_retriable() {
                        return Err(e);
                    }
                    match &part.leader {
                        Some(h) => self.cluster.apply_hint(&part.topic, part.partition, h),
                        None => self.cluster.invalidate(&part.topic, part.partition),
                    }
                }
            }
        }
        Ok(())
    }
}

/// A completed fetch: what was asked, and the answer.
type FetchResult = (
    Vec<FetchPartition>,
    Result<rivulet_proto::v1::FetchResponse>,
);
