//! Why a request on one partition failed, and its wire code.

use rivulet_proto::v1::ErrorCode;

use crate::log::{LogError, ProducerError};

/// A per-partition failure. Each maps to one stable [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The topic or partition does not exist.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// This broker does not lead the partition (or is not a replica).
    #[error("this broker is not the partition's leader")]
    NotLeader,
    /// The partition has no leader right now.
    #[error("the partition has no leader right now; retry shortly")]
    LeaderNotAvailable,
    /// acks=all refused: the ISR is smaller than min.insync.replicas.
    #[error("only {isr} in-sync replicas, min.insync.replicas is {min}")]
    NotEnoughReplicas {
        /// ISR size.
        isr: usize,
        /// The topic's min.insync.replicas.
        min: u32,
    },
    /// Written, but the ISR shrank below min.insync.replicas before the
    /// records were committed.
    #[error("appended, but the ISR shrank to {isr} (min.insync.replicas is {min})")]
    NotEnoughReplicasAfterAppend {
        /// ISR size.
        isr: usize,
        /// The topic's min.insync.replicas.
        min: u32,
    },
    /// The request's leader epoch is older than the leader's.
    #[error("leader epoch {request} is stale; the current epoch is {current}")]
    FencedLeaderEpoch {
        /// The epoch in the request.
        request: u32,
        /// This leader's epoch.
        current: u32,
    },
    /// The request's leader epoch is newer than this broker knows.
    #[error("leader epoch {request} is newer than this broker's {current}; retry")]
    UnknownLeaderEpoch {
        /// The epoch in the request.
        request: u32,
        /// This broker's epoch.
        current: u32,
    },
    /// A new leader's HW has not reached the start of its epoch yet: it may
    /// be below one the previous leader answered (KIP-207).
    #[error("the new leader's high watermark {high_watermark} has not reached the start of its epoch ({epoch_start}) yet; retry shortly")]
    OffsetNotAvailable {
        /// The leader's HW now.
        high_watermark: u64,
        /// The first offset of its leader epoch.
        epoch_start: u64,
    },
    /// acks=all did not complete in time.
    #[error("replication did not complete within {0} ms")]
    Timeout(u32),
    /// The request itself is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The caller's principal may not do this to the topic (ACLs).
    #[error("{principal} may not {operation} this topic (no ACL allows it)")]
    TopicAuthorizationFailed {
        /// Who asked.
        principal: String,
        /// What was refused.
        operation: &'static str,
    },
    /// A replica fetch from another incarnation of the follower than the
    /// leader's image holds (an older one, or one the image does not know).
    #[error("broker epoch {request} of broker {broker} is not its current one ({current})")]
    StaleBrokerEpoch {
        /// The follower.
        broker: u64,
        /// Its epoch in the request.
        request: u64,
        /// Its epoch in the metadata image.
        current: u64,
    },
    /// The log refused or failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

impl PartitionError {
    /// Whether the client should go to another broker (the leader as the
    /// image says): the answer then carries a leader hint.
    pub fn is_redirect(&self) -> bool {
        matches!(
            self.code(),
            ErrorCode::NotLeaderOrFollower
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::LeaderNotAvailable
        )
    }

    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
            Self::NotLeader => ErrorCode::NotLeaderOrFollower,
            Self::LeaderNotAvailable => ErrorCode::LeaderNotAvailable,
            Self::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            Self::NotEnoughReplicasAfterAppend { .. } => ErrorCode::NotEnoughReplicasAfterAppend,
            Self::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            Self::UnknownLeaderEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
            Self::OffsetNotAvailable { .. } => ErrorCode::OffsetNotAvailable,
            Self::Timeout(_) => ErrorCode::RequestTimedOut,
            Self::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Self::TopicAuthorizationFailed { .. } => ErrorCode::TopicAuthorizationFailed,
            Self::StaleBrokerEpoch { .. } => ErrorCode::StaleBrokerEpoch,
            Self::Log(e) => match e {
                LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
                LogError::CorruptBatch { .. } => ErrorCode::CorruptRecord,
                LogError::InvalidRecord { .. } => ErrorCode::InvalidRecord,
                LogError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
                LogError::StaleLeaderEpoch { .. } => ErrorCode::NotLeaderOrFollower,
                LogError::NonContiguousAppend { .. }
                | LogError::TruncateBelowStart { .. }
                | LogError::InvalidConfig(_)
                | LogError::UnknownDirectory(_) => ErrorCode::UnknownServerError,
                LogError::TruncatedBeforeDurable { .. } => ErrorCode::NotLeaderOrFollower,
                LogError::Io { .. } => ErrorCode::KafkaStorageError,
                LogError::Producer(p) => match p {
                    ProducerError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
                    ProducerError::InvalidEpoch { .. } => ErrorCode::InvalidProducerEpoch,
                    ProducerError::Invalid(_) => ErrorCode::InvalidRecord,
                },
            },
        }
    }
}
