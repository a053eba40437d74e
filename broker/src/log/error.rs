//! Errors of the partition log. Each variant carries what a caller needs to
//! act on it (the valid range, the limit, the file); the service edge maps
//! them to per-partition wire error codes.

use std::path::PathBuf;

/// Everything a [`PartitionLog`](super::PartitionLog) operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The offset is below the log start or past the log end.
    #[error("offset {offset} is out of range: the log holds offsets [{log_start_offset}, {log_end_offset})")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// First offset still in the log.
        log_start_offset: u64,
        /// The offset the next record will get.
        log_end_offset: u64,
    },
    /// A batch in an append failed validation.
    #[error("corrupt record batch at byte {position} of the request: {reason}")]
    CorruptBatch {
        /// Byte position of the bad batch within the appended buffer.
        position: usize,
        /// What was wrong.
        reason: String,
    },
    /// A batch's records break a rule (control bits, offset deltas, a
    /// decompression cap, ...): Kafka's `INVALID_RECORD`.
    #[error("invalid record batch at byte {position} of the request: {reason}")]
    InvalidRecord {
        /// Byte position of the bad batch within the appended buffer.
        position: usize,
        /// What was wrong.
        reason: String,
    },
    /// A batch is larger than the log accepts.
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// The batch size in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A replica append does not start at the log end.
    #[error("replicated batch starts at offset {got} but the log ends at {expected}")]
    NonContiguousAppend {
        /// The log end offset.
        expected: u64,
        /// The batch's base offset.
        got: u64,
    },
    /// A leader append in an epoch older than one already in the log.
    #[error("append in leader epoch {epoch} refused: the log already has epoch {latest}")]
    StaleLeaderEpoch {
        /// The epoch of the refused append.
        epoch: u32,
        /// The newest epoch in the log.
        latest: u32,
    },
    /// Truncation below the log start offset would drop data retention kept.
    #[error(
        "cannot truncate to offset {offset}: it is below the log start offset {log_start_offset}"
    )]
    TruncateBelowStart {
        /// The truncation point asked for.
        offset: u64,
        /// First offset in the log.
        log_start_offset: u64,
    },
    /// The appended bytes were truncated away (the replica changed role)
    /// before they could be made durable.
    #[error("the append ending at offset {offset} was truncated before it was fsynced")]
    TruncatedBeforeDurable {
        /// The end offset of the lost append.
        offset: u64,
    },
    /// A log configuration value is out of range.
    #[error("invalid log config: {0}")]
    InvalidConfig(String),
    /// The log directory's id file is unreadable: the directory cannot be
    /// told apart from new storage.
    #[error("unknown log directory identity: {0}")]
    UnknownDirectory(String),
    /// An idempotent producer's batch breaks its sequence or epoch rules
    /// (nothing was written).
    #[error(transparent)]
    Producer(#[from] super::producers::ProducerError),
    /// The file system failed; the log may be unusable until restarted.
    #[error("cannot {op} {}: {error}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl LogError {
    pub(crate) fn corrupt(position: usize, reason: impl Into<String>) -> Self {
        Self::CorruptBatch {
            position,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |error| Self::Io { op, path, error }
    }
}
