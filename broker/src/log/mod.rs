//! The partition log: a durable, ordered, append-only sequence of Kafka v2
//! record batches, one per partition replica.
//!
//! ```text
//!  <data-dir>/<topic>-<partition>/
//!     00000000000000000000.log        batches [0, 5000)        \
//!     00000000000000000000.index      offset -> position        | one segment
//!     00000000000000000000.timeindex  max timestamp -> offset  /
//!     00000000000000005000.log        batches [5000, LEO)       <- active segment, appends go here
//!     ...
//!     leader-epoch-checkpoint         epoch -> first offset (KIP-101)
//!     high-watermark-checkpoint       last checkpointed HW
//!     log-start-offset-checkpoint     first offset retention kept
//! ```
//!
//! Two implementations share one contract, [`PartitionLog`], checked by one
//! conformance suite: [`FileLog`] (segments on disk, crash recovery, group
//! commit) and [`MemoryLog`] (a `Vec`, for tests of the layers above).
//!
//! Invariants every implementation keeps:
//! - offsets are dense: batches cover `[log_start_offset, log_end_offset)`
//!   without gaps, and a leader append gets the next offsets in order;
//! - `log_start_offset <= high_watermark <= log_end_offset`;
//! - reads return whole batches only, never beyond the requested bound;
//! - leader epochs in the log never decrease, and the epoch cache agrees with
//!   the batches' stamped epochs;
//! - with [`FlushPolicy::Always`], an append returns only once its bytes are
//!   fsynced (one fsync serves every append that arrived meanwhile).

pub mod batch;
mod checkpoint;
mod directory;
mod epoch;
mod error;
mod file;
mod index;
mod memory;
pub mod producers;
pub mod records;
mod reserve;
mod segment;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod file_tests;

use std::time::Duration;

use bytes::Bytes;

pub use batch::{AppendOrigin, RecordInput};
pub use directory::{open_log_directory, LogDirectory, DIRECTORY_ID_FILE};
pub use error::LogError;
pub use file::{Clock, FileLog, FileLogStats};
pub use memory::MemoryLog;
pub use producers::{ProducerError, ProducerStates};
pub use reserve::{is_disk_full, DiskReserve, RESERVED_BYTES, RESERVE_FILE};

/// When appended bytes are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Before an append returns (group commit: concurrent appends share an fsync).
    Always,
    /// At most this long after an append (by the appender that finds it due, or
    /// by whoever calls [`PartitionLog::flush`]).
    Interval(Duration),
    /// Never explicitly: the page cache decides (segment rolls still fsync).
    Never,
}

impl std::str::FromStr for FlushPolicy {
    type Err = LogError;

    /// `always`, `never`, or `interval:<ms>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => s
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .map(|ms| Self::Interval(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    LogError::InvalidConfig(format!(
                        "flush policy {s:?}: expected always, never or interval:<ms>"
                    ))
                }),
        }
    }
}

/// Storage settings of one partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before one would exceed this size.
    pub segment_bytes: u64,
    /// Roll a segment this long (ms) after its first append; `None`: never.
    pub segment_ms: Option<i64>,
    /// Bytes of log between two sparse index entries.
    pub index_interval_bytes: u64,
    /// Largest batch accepted (Kafka's `max.message.bytes`).
    pub max_batch_bytes: usize,
    /// When appends are fsynced.
    pub flush: FlushPolicy,
    /// Forget an idempotent producer that wrote nothing for this long
    /// (Kafka's `producer.id.expiration.ms`, KIP-854).
    pub producer_id_expiration_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            max_batch_bytes: 1_048_588,
            flush: FlushPolicy::Always,
            producer_id_expiration_ms: producers::DEFAULT_PRODUCER_ID_EXPIRATION_MS,
        }
    }
}

impl LogConfig {
    /// Checks ranges; index positions are 32-bit, so segments stay below 2 GiB.
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |m: String| Err(LogError::InvalidConfig(m));
        if self.segment_bytes < 1024 || self.segment_bytes > i32::MAX as u64 {
            return bad(format!(
                "segment.bytes {} must be between 1024 and {}",
                self.segment_bytes,
                i32::MAX
            ));
        }
        if self.segment_ms.is_some_and(|ms| ms < 1) {
            return bad("segment.ms must be at least 1".into());
        }
        if self.index_interval_bytes == 0 {
            return bad("index.interval.bytes must be at least 1".into());
        }
        if self.max_batch_bytes < batch::HEADER_LEN {
            return bad(format!(
                "max.message.bytes {} is smaller than a batch header",
                self.max_batch_bytes
            ));
        }
        Ok(())
    }
}

/// What retention removes: whole segments older or beyond these limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete segments whose newest record is older than this (ms).
    pub retention_ms: Option<i64>,
    /// Delete the oldest segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Bytes freed.
    pub bytes_deleted: u64,
    /// The log start offset after the pass.
    pub log_start_offset: u64,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: u64,
    /// Offset of the last record appended.
    pub last_offset: u64,
    /// Largest record timestamp appended.
    pub max_timestamp: i64,
    /// Bytes appended (0 for a duplicate).
    pub size_bytes: usize,
    /// The batch was an idempotent producer's resend of one already in the
    /// log: nothing was written, the offsets are the original's.
    pub duplicate: bool,
}

/// The log's offsets at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    /// First offset still in the log.
    pub log_start_offset: u64,
    /// Offset the next record will get.
    pub log_end_offset: u64,
    /// Offsets below this are committed (replicated to the ISR).
    pub high_watermark: u64,
}

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Consumers: committed records only.
    HighWatermark,
    /// Followers replicating the log: everything.
    LogEnd,
}

/// A partition replica's log. Safe to share between threads; every method
/// takes `&self`. Blocking: call from a blocking thread, not an async task.
pub trait PartitionLog: Send + Sync + std::fmt::Debug {
    /// Appends one or more whole batches. A leader append gets offsets from the
    /// log end and its epoch stamped in; a replica append must continue the log.
    fn append(&self, batches: &mut [u8], origin: AppendOrigin) -> Result<AppendInfo, LogError>;

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least
    /// one batch if any is readable) and never past `bound`. Empty at the bound.
    fn read(&self, offset: u64, max_bytes: usize, bound: ReadBound) -> Result<Bytes, LogError>;

    /// The first offset whose record timestamp is `>= timestamp_ms`, if any,
    /// with that record's timestamp (a batch whose records cannot be
    /// decoded answers with its start and its largest timestamp).
    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(u64, i64)>, LogError>;

    /// Removes every batch whose last offset is `>= offset` (a batch is never
    /// split, so the new end may be below `offset`), and every leader-epoch
    /// entry starting at or after the new end. Refused below the log start.
    fn truncate_to(&self, offset: u64) -> Result<(), LogError>;

    /// Empties the log and restarts it at `offset` (a follower whose leader no
    /// longer has the follower's offsets).
    fn truncate_fully_and_start_at(&self, offset: u64) -> Result<(), LogError>;

    /// Start, end and high watermark.
    fn offsets(&self) -> LogOffsets;

    /// Sets the high watermark (clamped to the log end); persisted by [`Self::checkpoint`].
    fn set_high_watermark(&self, offset: u64);

    /// Writes the high-watermark checkpoint.
    fn checkpoint(&self) -> Result<(), LogError>;

    /// Starts a new segment (no-op if the active one is empty).
    fn roll(&self) -> Result<(), LogError>;

    /// Deletes whole segments below the high watermark that retention no longer keeps.
    fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
    ) -> Result<RetentionOutcome, LogError>;

    /// Moves the log start up to `offset` (Kafka's DeleteRecords, and a
    /// follower following its leader's log start): never down, never past
    /// the high watermark; whole segments below it are deleted (never the
    /// active one); durable before it returns. The log start it set.
    fn advance_log_start(&self, offset: u64) -> Result<u64, LogError>;

    /// Fsyncs everything appended so far.
    fn flush(&self) -> Result<(), LogError>;

    /// Records that leader `epoch` starts at the current log end, before any
    /// batch of it is appended (a new leader does this on election, so its
    /// followers' divergence checks see the epoch at once). No-op unless
    /// `epoch` is newer than every epoch in the log.
    fn assign_epoch(&self, epoch: u32) -> Result<(), LogError>;

    /// The newest leader epoch stamped in the log.
    fn latest_epoch(&self) -> Option<u32>;

    /// Writes a snapshot of the idempotent producers' state at the log end
    /// if it changed since the last one (clean shutdown).
    fn snapshot_producers(&self) -> Result<(), LogError>;

    /// How many idempotent producers the log remembers, and about how many
    /// bytes of memory that takes.
    fn producer_stats(&self) -> (usize, usize);

    /// For a follower's last fetched `epoch`: the largest epoch `<= epoch` here
    /// and the offset where it ends (KIP-101). `None` if `epoch` predates the log.
    fn end_offset_for_epoch(&self, epoch: u32) -> Option<(u32, u64)>;

    /// Bytes the log's batches take (DescribeLogDirs, metrics).
    fn size_bytes(&self) -> u64;
}

/// The directory of one partition replica's log: `<data_dir>/<topic>-<partition>`.
/// Tools and tests rely on this layout. Topic names are restricted to
/// `[a-zA-Z0-9._-]` by the controller, so the name is safe as a path part.
pub fn partition_dir(
    data_dir: &std::path::Path,
    topic: &str,
    partition: u32,
) -> std::path::PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

pub(crate) use rivulet_common::time::now_ms;

/// In the batch `bytes` (with `header`), the first record at or after
/// `log_start` whose timestamp is `>= target`, or else the first at or after
/// `log_start`: its offset and timestamp. A batch whose records cannot be
/// decoded (an unsupported codec) answers its start and largest timestamp.
pub(crate) fn timestamp_hit(
    bytes: &[u8],
    header: &batch::BatchHeader,
    target: i64,
    log_start: u64,
) -> (u64, i64) {
    let fallback = (header.base_offset.max(log_start), header.max_timestamp);
    let Ok(records) = batch::decode_records(bytes) else {
        return fallback;
    };
    let kept = || records.iter().filter(|r| r.offset >= log_start);
    kept()
        .find(|r| r.timestamp_ms >= target)
        .or_else(|| kept().next())
        .map_or(fallback, |r| (r.offset, r.timestamp_ms))
}
