//! Idempotent producers' state in one partition log (Kafka's
//! `ProducerStateManager`, KIP-98): per producer id, its epoch and the
//! metadata of its last [`BATCHES_PER_PRODUCER`] batches, so a leader can tell
//! a resent batch from a new one before assigning offsets.
//!
//! The state is a pure function of the log's batch headers: every replica
//! builds it the same way (a leader as it appends, a follower from the
//! batches it copies, a restarted node from a snapshot plus the log tail
//! after it), so a new leader recognises a duplicate the old one appended.
//!
//! Rules for a leader append (KIP-98, with KIP-360's relaxations):
//! - an epoch older than the producer's is fenced: INVALID_PRODUCER_EPOCH;
//! - a batch whose epoch, first and last sequence equal one of the cached
//!   batches is a duplicate: nothing is written and the original offsets
//!   are the answer;
//! - a newer epoch must start at sequence 0;
//! - otherwise the first sequence must be one past the last one held
//!   (wrapping at `i32::MAX`): OUT_OF_ORDER_SEQUENCE_NUMBER if not;
//! - a producer the partition knows nothing of (never seen, expired, or
//!   forgotten) must start at sequence 0. Kafka accepts any sequence there
//!   (KIP-360), relying on a connection answering requests in order; gRPC
//!   streams are concurrent, so a producer's second batch may arrive first,
//!   and taking it would refuse the first. Refused, it waits at the leader
//!   for its predecessor (`api/produce.rs`); a producer whose state is
//!   really gone gets OUT_OF_ORDER_SEQUENCE_NUMBER and bumps its epoch
//!   (which starts at 0 again).
//!
//! Transactions will add, per producer, the first offset of its open
//! transaction and the coordinator epoch; the entry is the place for them.
//!
//! Snapshots: `<offset>.snapshot` beside the segments holds the state of
//! every batch below `offset`, written with the other checkpoints (atomic,
//! text, Kafka style). They are written at segment roll and at clean
//! shutdown; recovery loads the newest one not past the log end and replays
//! the headers after it.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use super::batch::BatchHeader;
use super::checkpoint;
use super::LogError;

/// Batches remembered per producer: the most an idempotent producer keeps in
/// flight per partition (Kafka's `max.in.flight.requests.per.connection`
/// limit for idempotence), so any retry of one of them is recognised.
pub const BATCHES_PER_PRODUCER: usize = 5;

/// Producers one partition remembers at most: a client that makes producer
/// ids without end cannot grow the state without end. Past it, the producer
/// idle the longest is forgotten (its next batch is refused as out of
/// order, and the producer starts a new epoch).
pub const MAX_PRODUCERS_PER_PARTITION: usize = 50_000;

/// Kafka's `producer.id.expiration.ms` default: a producer that wrote
/// nothing for a day is forgotten.
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 3600 * 1000;

/// Why a leader refused an idempotent producer's batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// The batch does not follow the producer's last one.
    #[error(
        "out of order sequence for producer {producer_id} at epoch {epoch}: \
         batch starts at sequence {first_sequence}, expected {expected}"
    )]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// Its epoch in the batch.
        epoch: i16,
        /// The batch's first sequence.
        first_sequence: i32,
        /// The sequence the leader expected.
        expected: i32,
    },
    /// The batch's epoch is older than the producer's.
    #[error(
        "producer {producer_id} is fenced: the batch has epoch {epoch}, \
         the partition holds epoch {current}"
    )]
    InvalidEpoch {
        /// The producer.
        producer_id: i64,
        /// Its epoch in the batch.
        epoch: i16,
        /// The epoch the partition holds.
        current: i16,
    },
    /// A producer id without epoch or sequence, or more than one batch.
    #[error("invalid idempotent batch: {0}")]
    Invalid(&'static str),
}

/// One batch an idempotent producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Sequence of its first record.
    pub first_sequence: i32,
    /// Sequence of its last record.
    pub last_sequence: i32,
    /// Offset of its first record.
    pub first_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// Its largest record timestamp (ms).
    pub timestamp_ms: i64,
}

/// What the partition holds for one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    /// The producer's current epoch.
    pub epoch: i16,
    /// Its last batches, oldest first, at most [`BATCHES_PER_PRODUCER`].
    pub batches: VecDeque<ProducerBatch>,
    /// When this node last saw a batch of it (wall clock, ms): expiry
    /// counts from here. Not the batch's timestamp, which the client
    /// chooses (a producer stamping old create times would be forgotten at
    /// once and lose its duplicate detection).
    pub last_timestamp_ms: i64,
}

/// A leader's verdict on an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: append it.
    Append,
    /// Already in the log: answer with these offsets, write nothing.
    Duplicate(ProducerBatch),
}

/// The producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Changed since the last snapshot.
    dirty: bool,
}

/// Checks the producer fields of a batch header: all set or none.
fn producer_fields(h: &BatchHeader) -> Result<Option<(i64, i16, i32)>, ProducerError> {
    if !h.has_producer() {
        return Ok(None);
    }
    if h.producer_epoch < 0 || h.base_sequence < 0 {
        return Err(ProducerError::Invalid(
            "a batch with a producer id needs a producer epoch and base sequence",
        ));
    }
    Ok(Some((h.producer_id, h.producer_epoch, h.base_sequence)))
}

fn next_sequence(last: i32) -> i32 {
    rivulet_common::batch::add_sequence(last, 1)
}

impl ProducerStates {
    /// No producers.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many producers are remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The entry of `producer_id`, if remembered.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Whether anything changed since [`Self::mark_clean`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Marks the state as saved.
    pub fn mark_clean(&mut self) {
        self.dirty = false;
    }

    /// The leader's check of one batch before offsets are assigned
    /// (`h`'s offsets are not used). Non-idempotent batches always append.
    pub fn check(&self, h: &BatchHeader) -> Result<Verdict, ProducerError> {
        let Some((pid, epoch, first)) = producer_fields(h)? else {
            return Ok(Verdict::Append);
        };
        let last = h.last_sequence();
        // The batch must start at `expected`.
        let starts_at = |expected: i32| {
            if first == expected {
                Ok(Verdict::Append)
            } else {
                Err(ProducerError::OutOfOrderSequence {
                    producer_id: pid,
                    epoch,
                    first_sequence: first,
                    expected,
                })
            }
        };
        let Some(entry) = self.producers.get(&pid) else {
            return starts_at(0);
        };
        if epoch < entry.epoch {
            return Err(ProducerError::InvalidEpoch {
                producer_id: pid,
                epoch,
                current: entry.epoch,
            });
        }
        if epoch > entry.epoch {
            return starts_at(0);
        }
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == first && b.last_sequence == last)
        {
            return Ok(Verdict::Duplicate(*b));
        }
        match entry.batches.back() {
            // An entry without batches (its epoch was bumped by a marker,
            // once transactions exist) takes any sequence.
            None => Ok(Verdict::Append),
            Some(b) => starts_at(next_sequence(b.last_sequence)),
        }
    }

    /// Records a batch that is now in the log (`h` with its real offsets),
    /// seen at `now_ms`: a leader after its append, a follower for each
    /// batch it copies, a recovery for each batch it replays. Not checked:
    /// the leader did.
    pub fn record(&mut self, h: &BatchHeader, now_ms: i64) {
        let Ok(Some((pid, epoch, first))) = producer_fields(h) else {
            return;
        };
        let batch = ProducerBatch {
            first_sequence: first,
            last_sequence: h.last_sequence(),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
            timestamp_ms: h.max_timestamp,
        };
        self.dirty = true;
        if !self.producers.contains_key(&pid) && self.producers.len() >= MAX_PRODUCERS_PER_PARTITION
        {
            self.evict_idlest();
        }
        let entry = self.producers.entry(pid).or_insert_with(|| ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_PER_PRODUCER),
            last_timestamp_ms: now_ms,
        });
        if epoch != entry.epoch {
            // A new epoch starts the batch history again (a replica copies
            // what the leader accepted, so it is never older).
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(now_ms);
    }

    fn evict_idlest(&mut self) {
        if let Some(pid) = self
            .producers
            .iter()
            .min_by_key(|(_, e)| e.last_timestamp_ms)
            .map(|(p, _)| *p)
        {
            self.producers.remove(&pid);
        }
    }

    /// Forgets producers that wrote nothing for `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`); how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms);
        let removed = before - self.producers.len();
        if removed > 0 {
            self.dirty = true;
        }
        removed
    }

    /// Forgets every batch at or after `offset` (the log was cut there and
    /// the state could not be reloaded): producers whose batches all went
    /// are forgotten (their next batch must start a new epoch at 0).
    pub fn truncate_from(&mut self, offset: u64) {
        self.producers.retain(|_, e| {
            e.batches.retain(|b| b.last_offset < offset);
            !e.batches.is_empty()
        });
        self.dirty = true;
    }

    /// The snapshot lines: `pid epoch last_ts` then each batch as
    /// `first_seq:last_seq:first_offset:last_offset:ts`.
    fn lines(&self) -> Vec<String> {
        let mut pids: Vec<&i64> = self.producers.keys().collect();
        pids.sort_unstable();
        pids.into_iter()
            .map(|pid| {
                let e = &self.producers[pid];
                let mut line = format!("{pid} {} {}", e.epoch, e.last_timestamp_ms);
                for b in &e.batches {
                    line.push_str(&format!(
                        " {}:{}:{}:{}:{}",
                        b.first_sequence,
                        b.last_sequence,
                        b.first_offset,
                        b.last_offset,
                        b.timestamp_ms
                    ));
                }
                line
            })
            .collect()
    }

    fn parse_line(line: &str) -> Option<(i64, ProducerEntry)> {
        let mut parts = line.split(' ');
        let pid = parts.next()?.parse().ok()?;
        let epoch = parts.next()?.parse().ok()?;
        let last_timestamp_ms = parts.next()?.parse().ok()?;
        let mut batches = VecDeque::new();
        for b in parts {
            let f: Vec<&str> = b.split(':').collect();
            if f.len() != 5 || batches.len() == BATCHES_PER_PRODUCER {
                return None;
            }
            batches.push_back(ProducerBatch {
                first_sequence: f[0].parse().ok()?,
                last_sequence: f[1].parse().ok()?,
                first_offset: f[2].parse().ok()?,
                last_offset: f[3].parse().ok()?,
                timestamp_ms: f[4].parse().ok()?,
            });
        }
        Some((
            pid,
            ProducerEntry {
                epoch,
                batches,
                last_timestamp_ms,
            },
        ))
    }

    /// Writes the state of every batch below `offset` to `dir` (atomic).
    pub fn write_snapshot(&self, dir: &Path, offset: u64) -> Result<(), LogError> {
        checkpoint::write(&snapshot_path(dir, offset), &self.lines())
    }

    /// Reads the snapshot at `path`; `Ok(None)` if missing or malformed.
    pub fn read_snapshot(path: &Path) -> Result<Option<Self>, LogError> {
        let Some(lines) = checkpoint::read(path)? else {
            return Ok(None);
        };
        let mut producers = HashMap::with_capacity(lines.len());
        for l in &lines {
            let Some((pid, e)) = Self::parse_line(l) else {
                return Ok(None);
            };
            producers.insert(pid, e);
        }
        Ok(Some(Self {
            producers,
            dirty: false,
        }))
    }

    /// Bytes of memory the state holds, roughly (for the figures and logs).
    pub fn approx_memory_bytes(&self) -> usize {
        self.producers.capacity()
            * (std::mem::size_of::<i64>() + std::mem::size_of::<ProducerEntry>() + 8)
            + self
                .producers
                .values()
                .map(|e| e.batches.capacity() * std::mem::size_of::<ProducerBatch>())
                .sum::<usize>()
    }
}

/// A leader's producer check of one append (`metas` with their offsets
/// assigned), before anything is written: `Some` for a duplicate, with the
/// original batch. An idempotent producer's append holds exactly one batch
/// (as Kafka requires), so a duplicate is all or nothing.
pub(crate) fn check_leader_append(
    states: &ProducerStates,
    metas: &[super::batch::BatchMeta],
) -> Result<Option<ProducerBatch>, LogError> {
    if metas.len() > 1 && metas.iter().any(|m| m.header.has_producer()) {
        return Err(ProducerError::Invalid(
            "an idempotent producer's produce carries exactly one batch per partition",
        )
        .into());
    }
    match metas.first() {
        Some(m) => match states.check(&m.header)? {
            Verdict::Append => Ok(None),
            Verdict::Duplicate(b) => Ok(Some(b)),
        },
        None => Ok(None),
    }
}

/// The answer to a duplicate: the original batch's offsets.
pub(crate) fn duplicate_info(b: &ProducerBatch) -> super::AppendInfo {
    super::AppendInfo {
        base_offset: b.first_offset,
        last_offset: b.last_offset,
        max_timestamp: b.timestamp_ms,
        size_bytes: 0,
        duplicate: true,
    }
}

/// `<dir>/<offset, 20 digits>.snapshot`.
pub fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(super::segment::file_name(offset, "snapshot"))
}

/// The snapshot offsets in `dir`, ascending.
pub fn snapshot_offsets(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(LogError::io("list log directory", dir))? {
        let entry = entry.map_err(LogError::io("list log directory", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if let (20, Ok(o)) = (stem.len(), stem.parse::<u64>()) {
                out.push(o);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Deletes the snapshots in `dir` for which `remove(offset)` holds.
pub fn remove_snapshots(dir: &Path, remove: impl Fn(u64) -> bool) -> Result<(), LogError> {
    for o in snapshot_offsets(dir)? {
        if remove(o) {
            let p = snapshot_path(dir, o);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("delete producer snapshot", &p)(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, first_seq: i32, count: i32, base_offset: u64) -> BatchHeader {
        BatchHeader {
            base_offset,
            size: 100,
            leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            first_timestamp: 1_000,
            max_timestamp: 1_000 + base_offset as i64,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: first_seq,
            record_count: count,
        }
    }

    /// Checks, then (if new) records at `next`: what a leader does.
    fn leader_append(
        s: &mut ProducerStates,
        next: &mut u64,
        h: BatchHeader,
    ) -> Result<Verdict, ProducerError> {
        let v = s.check(&h)?;
        if v == Verdict::Append {
            let mut h = h;
            h.base_offset = *next;
            s.record(&h, h.max_timestamp);
            *next = h.next_offset();
        }
        Ok(v)
    }

    #[test]
    fn sequences_must_follow_and_duplicates_are_recognised() {
        let mut s = ProducerStates::new();
        let mut next = 0;
        assert_eq!(
            leader_append(&mut s, &mut next, header(7, 0, 0, 10, 0)),
            Ok(Verdict::Append)
        );
        assert_eq!(
            leader_append(&mut s, &mut next, header(7, 0, 10, 5, 0)),
            Ok(Verdict::Append)
        );
        assert_eq!(next, 15);
        // The first batch again: the original offsets, nothing written.
        let Ok(Verdict::Duplicate(b)) = leader_append(&mut s, &mut next, header(7, 0, 0, 10, 0))
        else {
            panic!("not a duplicate")
        };
        assert_eq!((b.first_offset, b.last_offset), (0, 9));
        assert_eq!(next, 15);
        // A gap.
        assert_eq!(
            leader_append(&mut s, &mut next, header(7, 0, 16, 1, 0)),
            Err(ProducerError::OutOfOrderSequence {
                producer_id: 7,
                epoch: 0,
                first_sequence: 16,
                expected: 15
            })
        );
        // Same first sequence, other length: not the same batch.
        assert!(matches!(
            leader_append(&mut s, &mut next, header(7, 0, 0, 3, 0)),
            Err(ProducerError::OutOfOrderSequence { .. })
        ));
        // Non-idempotent batches are not looked at.
        assert_eq!(s.check(&header(-1, -1, -1, 3, 0)), Ok(Verdict::Append));
        // Another producer has its own sequence, and starts at 0: its
        // second batch arriving first is refused (it waits at the leader).
        assert!(matches!(
            leader_append(&mut s, &mut next, header(8, 0, 42, 1, 0)),
            Err(ProducerError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(
            leader_append(&mut s, &mut next, header(8, 0, 0, 1, 0)),
            Ok(Verdict::Append)
        );
    }

    #[test]
    fn epochs_fence_and_a_new_epoch_starts_at_zero() {
        let mut s = ProducerStates::new();
        let mut next = 0;
        leader_append(&mut s, &mut next, header(1, 3, 0, 2, 0)).unwrap();
        assert_eq!(
            s.check(&header(1, 2, 2, 1, 0)),
            Err(ProducerError::InvalidEpoch {
                producer_id: 1,
                epoch: 2,
                current: 3
            })
        );
        assert!(matches!(
            s.check(&header(1, 4, 5, 1, 0)),
            Err(ProducerError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(
            leader_append(&mut s, &mut next, header(1, 4, 0, 1, 0)),
            Ok(Verdict::Append)
        );
        // The old epoch's batch is no duplicate any more: it is fenced.
        assert!(matches!(
            s.check(&header(1, 3, 0, 2, 0)),
            Err(ProducerError::InvalidEpoch { .. })
        ));
        assert_eq!(s.get(1).map(|e| e.batches.len()), Some(1));
        // A producer id without epoch or sequence is invalid.
        assert!(matches!(
            s.check(&header(1, -1, 0, 1, 0)),
            Err(ProducerError::Invalid(_))
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::new();
        let mut next = 0;
        for i in 0..7 {
            leader_append(&mut s, &mut next, header(1, 0, i * 2, 2, 0)).unwrap();
        }
        let e = s.get(1).unwrap();
        assert_eq!(e.batches.len(), BATCHES_PER_PRODUCER);
        assert_eq!(e.batches.front().unwrap().first_sequence, 4);
        // Batches 2..6 are duplicates; 0 and 1 fell out of the window and
        // are out of order now.
        for i in 2..7 {
            assert!(matches!(
                s.check(&header(1, 0, i * 2, 2, 0)),
                Ok(Verdict::Duplicate(_))
            ));
        }
        assert!(matches!(
            s.check(&header(1, 0, 2, 2, 0)),
            Err(ProducerError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut s = ProducerStates::new();
        s.record(&header(1, 0, i32::MAX - 1, 2, 0), 0);
        assert_eq!(s.get(1).unwrap().batches[0].last_sequence, i32::MAX);
        assert_eq!(s.check(&header(1, 0, 0, 1, 0)), Ok(Verdict::Append));
        let h = header(1, 0, i32::MAX, 3, 0);
        assert_eq!(h.last_sequence(), 1);
    }

    #[test]
    fn snapshots_round_trip_and_bad_ones_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerStates::new();
        let mut next = 0;
        for pid in 0..20 {
            for i in 0..(pid % 7) as i32 {
                leader_append(
                    &mut s,
                    &mut next,
                    header(pid, (pid % 3) as i16, i * 3, 3, 0),
                )
                .unwrap();
            }
        }
        s.write_snapshot(dir.path(), next).unwrap();
        let back = ProducerStates::read_snapshot(&snapshot_path(dir.path(), next))
            .unwrap()
            .unwrap();
        assert_eq!(back.producers, s.producers);
        assert_eq!(snapshot_offsets(dir.path()).unwrap(), vec![next]);
        std::fs::write(snapshot_path(dir.path(), 5), "0\n1\nnot a producer\n").unwrap();
        assert_eq!(
            ProducerStates::read_snapshot(&snapshot_path(dir.path(), 5)).unwrap(),
            None
        );
        assert_eq!(
            ProducerStates::read_snapshot(&snapshot_path(dir.path(), 6)).unwrap(),
            None
        );
        remove_snapshots(dir.path(), |o| o == 5).unwrap();
        assert_eq!(snapshot_offsets(dir.path()).unwrap(), vec![next]);
    }

    #[test]
    fn expiry_and_truncation_forget_producers() {
        let mut s = ProducerStates::new();
        let mut next = 0;
        let at = |pid, seq, ts| BatchHeader {
            max_timestamp: ts,
            ..header(pid, 0, seq, 1, 0)
        };
        leader_append(&mut s, &mut next, at(1, 0, 1_000)).unwrap();
        leader_append(&mut s, &mut next, at(2, 0, 1_001)).unwrap();
        leader_append(&mut s, &mut next, at(2, 1, 1_002)).unwrap();
        assert_eq!(s.expire(1_500, 10_000), 0);
        assert_eq!(s.expire(11_001, 10_000), 1);
        assert!(s.get(1).is_none() && s.get(2).is_some());
        s.truncate_from(2);
        assert_eq!(s.get(2).unwrap().batches.len(), 1);
        s.truncate_from(0);
        assert!(s.is_empty());
    }

    #[test]
    fn the_producer_count_is_bounded() {
        let mut s = ProducerStates::new();
        for pid in 0..(MAX_PRODUCERS_PER_PARTITION as i64 + 10) {
            s.record(&header(pid, 0, 0, 1, pid as u64), pid);
        }
        assert_eq!(s.len(), MAX_PRODUCERS_PER_PARTITION);
        // The idlest (oldest timestamps) went.
        assert!(s.get(0).is_none());
        assert!(s.get(MAX_PRODUCERS_PER_PARTITION as i64 + 9).is_some());
    }

    #[test]
    fn memory_per_producer_is_bounded() {
        let mut s = ProducerStates::new();
        for pid in 0..10_000i64 {
            for b in 0..BATCHES_PER_PRODUCER as i32 {
                s.record(&header(pid, 0, b * 10, 10, 0), 0);
            }
        }
        let per = s.approx_memory_bytes() / s.len();
        assert!((200..=320).contains(&per), "{per} bytes per producer");
    }
}
