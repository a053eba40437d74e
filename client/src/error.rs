//! Client errors.

use rivulet_proto::v1::ErrorCode;

/// What went wrong talking to the cluster.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No node of the bootstrap list (or the known brokers) answered.
    #[error("cannot reach the cluster ({0}); is it running, and is --bootstrap right?")]
    Unreachable(String),
    /// A broker refused the request for one partition or topic.
    #[error("{message} ({})", code.as_str_name())]
    Broker {
        /// The error code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },
    /// A whole request failed at the gRPC level.
    #[error("request failed: {0}")]
    Rpc(String),
    /// The topic does not exist.
    #[error("topic '{0}' does not exist (UNKNOWN_TOPIC_OR_PARTITION)")]
    UnknownTopic(String),
    /// The caller's user may not describe the topic (no ACL allows it).
    #[error("not allowed to use topic '{0}': no ACL allows it (TOPIC_AUTHORIZATION_FAILED)")]
    TopicAuthorizationFailed(String),
    /// The topic has no such partition.
    #[error("topic '{topic}' has no partition {partition} (UNKNOWN_TOPIC_OR_PARTITION)")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// The partition asked for.
        partition: u32,
    },
    /// The operation did not complete in time.
    #[error("timed out after {0:?}: {1}")]
    Timeout(std::time::Duration, String),
    /// Bad arguments or configuration.
    #[error("{0}")]
    Invalid(String),
    /// The producer or consumer was closed.
    #[error("the client is closed")]
    Closed,
    /// A fetched batch does not decode (written before the cluster checked
    /// records on produce, or damaged). The records before it were
    /// delivered; the consumer stays at `offset` until told to skip.
    #[error("cannot decode the record batch of {topic}/{partition} at offsets {offset}..{next_offset}: {reason}; the records before it were delivered; skip it with ConsumerConfig::skip_undecodable (CLI: --skip-undecodable) or seek past it")]
    UndecodableBatch {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// The batch's base offset.
        offset: u64,
        /// The offset after it (where a skip goes).
        next_offset: u64,
        /// What the decoder said.
        reason: String,
    },
    /// Records could not be encoded or decoded.
    #[error("record batch: {0}")]
    Codec(String),
}

impl Error {
    /// A broker refusal from a raw code and message.
    pub fn broker(code: i32, message: impl Into<String>) -> Self {
        Error::Broker {
            code: ErrorCode::try_from(code).unwrap_or(ErrorCode::UnknownServerError),
            message: message.into(),
        }
    }

    /// Whether retrying (after a metadata refresh) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Unreachable(_) | Error::Rpc(_) => true,
            Error::Broker { code, .. } => is_retriable_code(*code),
            _ => false,
        }
    }

    /// The broker's error code, if the broker refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            Error::UnknownTopic(_) | Error::UnknownPartition { .. } => {
                Some(ErrorCode::UnknownTopicOrPartition)
            }
            Error::TopicAuthorizationFailed(_) => Some(ErrorCode::TopicAuthorizationFailed),
            _ => None,
        }
    }
}

/// Codes worth retrying after refreshing metadata.
pub(crate) fn is_retriable_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotLeaderOrFollower
            | ErrorCode::LeaderNotAvailable
            | ErrorCode::NotEnoughReplicas
            | ErrorCode::NotEnoughReplicasAfterAppend
            | ErrorCode::RequestTimedOut
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::KafkaStorageError
            | ErrorCode::NotController
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::OffsetNotAvailable
    )
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        // TLS on one side only, or a certificate another CA signed: say
        // so, not "h2 protocol error" or "BadSignature".
        if let Some(why) = rivulet_proto::tls::explain(&s) {
            return Error::Unreachable(why.to_owned());
        }
        match s.code() {
            tonic::Code::Unavailable => Error::Unreachable(s.message().to_owned()),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Error::Rpc(s.to_string()),
            tonic::Code::InvalidArgument => Error::Invalid(s.message().to_owned()),
            // A request over the node's size limit never fits; a spent
            // in-flight budget (also RESOURCE_EXHAUSTED) is worth a retry.
            tonic::Code::ResourceExhausted if s.message().starts_with("MESSAGE_TOO_LARGE") => {
                Error::Invalid(s.message().to_owned())
            }
            _ => Error::Rpc(format!("{}: {}", s.code(), s.message())),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
