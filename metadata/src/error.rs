//! Why the controller refuses a request: [`ControllerError`], with the
//! context a user needs to act, and its stable [`ErrorKind`].
//!
//! Why two types: the error carries detail for humans (which topic, which
//! key, the valid range); the kind is the small, stable vocabulary the gRPC
//! layer maps to wire error codes and clients branch on. Kind names are
//! Kafka's, so a Kafka user recognises them.
//!
//! Invariants: a kind's name never changes once released; a retired kind is
//! removed, never reused for another meaning. Every error's `Display` says
//! what was wrong in terms of the request, never `Debug` output.

use std::fmt;

use crate::config::ConfigError;
use crate::ids::{BrokerId, TopicId};

/// The stable category of a [`ControllerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The topic or partition does not exist (or was re-created).
    UnknownTopicOrPartition,
    /// The topic name is not allowed.
    InvalidTopic,
    /// A topic of that name exists.
    TopicAlreadyExists,
    /// The partition count is out of range.
    InvalidPartitions,
    /// The replication factor is out of range.
    InvalidReplicationFactor,
    /// A topic config key or value is invalid.
    InvalidConfig,
    /// The request's leader epoch is not the partition's.
    FencedLeaderEpoch,
    /// The request's partition epoch is not the partition's.
    InvalidUpdateVersion,
    /// A broker cannot be in the proposed ISR.
    IneligibleReplica,
    /// The requesting broker does not lead the partition.
    NotLeaderOrFollower,
    /// The broker is not registered.
    BrokerNotAvailable,
    /// The request comes from an old incarnation of the broker.
    StaleBrokerEpoch,
    /// The preferred replica cannot take leadership now.
    PreferredLeaderNotAvailable,
    /// A user or ACL request is malformed or over a bound.
    InvalidRequest,
    /// The named user does not exist.
    ResourceNotFound,
}

impl ErrorKind {
    /// Every kind, for exhaustive mapping tests at the gRPC edge.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::UnknownTopicOrPartition,
        ErrorKind::InvalidTopic,
        ErrorKind::TopicAlreadyExists,
        ErrorKind::InvalidPartitions,
        ErrorKind::InvalidReplicationFactor,
        ErrorKind::InvalidConfig,
        ErrorKind::FencedLeaderEpoch,
        ErrorKind::InvalidUpdateVersion,
        ErrorKind::IneligibleReplica,
        ErrorKind::NotLeaderOrFollower,
        ErrorKind::BrokerNotAvailable,
        ErrorKind::StaleBrokerEpoch,
        ErrorKind::PreferredLeaderNotAvailable,
        ErrorKind::InvalidRequest,
        ErrorKind::ResourceNotFound,
    ];

    /// The stable name, Kafka's spelling (e.g. `UNKNOWN_TOPIC_OR_PARTITION`).
    pub const fn name(self) -> &'static str {
        match self {
            ErrorKind::UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PARTITION",
            ErrorKind::InvalidTopic => "INVALID_TOPIC",
            ErrorKind::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            ErrorKind::InvalidPartitions => "INVALID_PARTITIONS",
            ErrorKind::InvalidReplicationFactor => "INVALID_REPLICATION_FACTOR",
            ErrorKind::InvalidConfig => "INVALID_CONFIG",
            ErrorKind::FencedLeaderEpoch => "FENCED_LEADER_EPOCH",
            ErrorKind::InvalidUpdateVersion => "INVALID_UPDATE_VERSION",
            ErrorKind::IneligibleReplica => "INELIGIBLE_REPLICA",
            ErrorKind::NotLeaderOrFollower => "NOT_LEADER_OR_FOLLOWER",
            ErrorKind::BrokerNotAvailable => "BROKER_NOT_AVAILABLE",
            ErrorKind::StaleBrokerEpoch => "STALE_BROKER_EPOCH",
            ErrorKind::PreferredLeaderNotAvailable => "PREFERRED_LEADER_NOT_AVAILABLE",
            ErrorKind::InvalidRequest => "INVALID_REQUEST",
            ErrorKind::ResourceNotFound => "RESOURCE_NOT_FOUND",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is wrong with a proposed topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameProblem {
    /// The name is empty.
    #[error("a topic name cannot be empty")]
    Empty,
    /// The name is longer than the limit.
    #[error("it is {length} characters long; the limit is {max}")]
    TooLong {
        /// The name's length in bytes (all allowed characters are ASCII).
        length: usize,
        /// The limit.
        max: usize,
    },
    /// `.` and `..` would be taken for directories.
    #[error("'.' and '..' are not allowed as topic names")]
    DotOrDotDot,
    /// A character outside `[a-zA-Z0-9._-]`.
    #[error(
        "the character {character:?} is not allowed; use ASCII letters, digits, '.', '_' and '-'"
    )]
    IllegalCharacter {
        /// The first offending character.
        character: char,
    },
    /// Equal to an existing topic's name once `.` and `_` are treated
    /// alike, as Kafka's metric names do.
    #[error("it collides with the existing topic '{existing}' ('.' and '_' are treated alike)")]
    CollidesWith {
        /// The existing topic.
        existing: String,
    },
}

/// Why a proposed ISR cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsrProblem {
    /// The ISR would be empty.
    #[error("the ISR cannot be empty")]
    Empty,
    /// The leader left itself out.
    #[error("the ISR must contain the leader {leader}")]
    MissingLeader {
        /// The partition's leader.
        leader: BrokerId,
    },
    /// A broker appears twice.
    #[error("broker {broker} is listed twice")]
    Duplicate {
        /// The repeated broker.
        broker: BrokerId,
    },
    /// A broker that holds no replica of the partition.
    #[error("broker {broker} is not a replica of the partition")]
    NotAReplica {
        /// The broker.
        broker: BrokerId,
    },
    /// A broker that is fenced (or not registered) cannot be in sync.
    #[error("broker {broker} is fenced")]
    Fenced {
        /// The broker.
        broker: BrokerId,
    },
}

/// Why the preferred replica cannot be made leader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreferredLeaderProblem {
    /// The partition has no replicas (a malformed image).
    #[error("the partition has no replicas")]
    NoReplicas,
    /// The preferred replica's broker is fenced or unregistered.
    #[error("the preferred replica {broker} is fenced")]
    Fenced {
        /// The preferred replica.
        broker: BrokerId,
    },
    /// The preferred replica has not caught up.
    #[error("the preferred replica {broker} is not in the ISR yet")]
    NotInIsr {
        /// The preferred replica.
        broker: BrokerId,
    },
}

/// Why the controller refused a request. Display messages are meant for the
/// user who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    /// A user or ACL request is malformed or over a bound; the message
    /// says which.
    #[error("{0}")]
    InvalidRequest(String),
    /// No user of that name.
    #[error("no user '{name}'")]
    UnknownUser {
        /// The name.
        name: String,
    },
    /// No topic of that name.
    #[error("topic '{topic}' does not exist")]
    UnknownTopic {
        /// The topic named by the request.
        topic: String,
    },
    /// The topic exists but not the partition.
    #[error("topic '{topic}' has no partition {partition}; it has {partition_count} (0 to {})", .partition_count.saturating_sub(1))]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition named by the request.
        partition: u32,
        /// How many partitions the topic has.
        partition_count: u32,
    },
    /// The topic was deleted and re-created since the requester last
    /// refreshed its metadata.
    #[error("topic '{topic}' now has id {current_id}, not {request_id}: it was re-created; refresh metadata")]
    TopicIdMismatch {
        /// The topic.
        topic: String,
        /// The id the request carries.
        request_id: TopicId,
        /// The id of the topic now holding the name.
        current_id: TopicId,
    },
    /// The topic name breaks Kafka's naming rules.
    #[error("invalid topic name '{name}': {problem}")]
    InvalidTopicName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        problem: TopicNameProblem,
    },
    /// A topic of that name exists.
    #[error("topic '{name}' already exists")]
    TopicAlreadyExists {
        /// The name.
        name: String,
    },
    /// The partition count is 0 or above the limit.
    #[error("the partition count must be between 1 and {max}, got {requested}")]
    InvalidPartitionCount {
        /// The count asked for.
        requested: u32,
        /// The largest count allowed.
        max: u32,
    },
    /// CreatePartitions asked for no more partitions than the topic has
    /// (Kafka's INVALID_PARTITIONS: partitions are only ever added).
    #[error(
        "topic '{topic}' has {current} partitions; a new count must be larger, got {requested}"
    )]
    PartitionsNotIncreased {
        /// The topic.
        topic: String,
        /// Its partition count.
        current: u32,
        /// The count asked for.
        requested: u32,
    },
    /// A replication factor of 0.
    #[error("the replication factor must be at least 1")]
    ReplicationFactorZero,
    /// More replicas than there are live brokers to hold them.
    #[error("replication factor {requested} is larger than the {live_brokers} live brokers")]
    ReplicationFactorTooLarge {
        /// The replication factor asked for.
        requested: u32,
        /// How many brokers are unfenced.
        live_brokers: u32,
    },
    /// A config key or value is invalid for the topic.
    #[error("invalid config for topic '{topic}': {source}")]
    InvalidConfig {
        /// The topic.
        topic: String,
        /// What is wrong.
        #[source]
        source: ConfigError,
    },
    /// The request's leader epoch is not the partition's: the requester is
    /// a deposed leader, or ahead of this controller.
    #[error("leader epoch {request_epoch} of the request does not match leader epoch {current_epoch} of {topic}-{partition}; refresh metadata")]
    FencedLeaderEpoch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The leader epoch the request carries.
        request_epoch: u32,
        /// The partition's leader epoch.
        current_epoch: u32,
    },
    /// The request's partition epoch is not the partition's: it was decided
    /// on an older state.
    #[error("partition epoch {request_epoch} of the request does not match partition epoch {current_epoch} of {topic}-{partition}; refresh metadata and retry")]
    InvalidUpdateVersion {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The partition epoch the request carries.
        request_epoch: u32,
        /// The partition's partition epoch.
        current_epoch: u32,
    },
    /// The proposed ISR is not acceptable.
    #[error("cannot set the ISR of {topic}-{partition}: {problem}")]
    IneligibleReplica {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// What is wrong with it.
        problem: IsrProblem,
    },
    /// The requester does not lead the partition.
    #[error("broker {broker} is not the leader of {topic}-{partition}; {}", leader_hint(.leader))]
    NotLeaderOrFollower {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The requesting broker.
        broker: BrokerId,
        /// The actual leader, if any: a hint for the requester.
        leader: Option<BrokerId>,
    },
    /// The broker is not registered.
    #[error("broker {broker} is not registered")]
    BrokerNotAvailable {
        /// The broker named by the request.
        broker: BrokerId,
    },
    /// The request comes from an old incarnation of the broker.
    #[error("broker epoch {request_epoch} of broker {broker} is stale; its current registration has epoch {current_epoch}")]
    StaleBrokerEpoch {
        /// The broker.
        broker: BrokerId,
        /// The epoch the request carries.
        request_epoch: u64,
        /// The epoch of the current registration.
        current_epoch: u64,
    },
    /// The preferred replica cannot lead now.
    #[error("cannot move leadership of {topic}-{partition} to its preferred replica: {problem}")]
    PreferredLeaderNotAvailable {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Why not.
        problem: PreferredLeaderProblem,
    },
}

fn leader_hint(leader: &Option<BrokerId>) -> String {
    match leader {
        Some(leader) => format!("the leader is broker {leader}"),
        None => "the partition has no leader".to_owned(),
    }
}

impl ControllerError {
    /// The stable kind, for the wire.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ControllerError::UnknownTopic { .. }
            | ControllerError::UnknownPartition { .. }
            | ControllerError::TopicIdMismatch { .. } => ErrorKind::UnknownTopicOrPartition,
            ControllerError::InvalidTopicName { .. } => ErrorKind::InvalidTopic,
            ControllerError::TopicAlreadyExists { .. } => ErrorKind::TopicAlreadyExists,
            ControllerError::InvalidPartitionCount { .. }
            | ControllerError::PartitionsNotIncreased { .. } => ErrorKind::InvalidPartitions,
            ControllerError::ReplicationFactorZero
            | ControllerError::ReplicationFactorTooLarge { .. } => {
                ErrorKind::InvalidReplicationFactor
            }
            ControllerError::InvalidConfig { .. } => ErrorKind::InvalidConfig,
            ControllerError::FencedLeaderEpoch { .. } => ErrorKind::FencedLeaderEpoch,
            ControllerError::InvalidUpdateVersion { .. } => ErrorKind::InvalidUpdateVersion,
            ControllerError::IneligibleReplica { .. } => ErrorKind::IneligibleReplica,
            ControllerError::NotLeaderOrFollower { .. } => ErrorKind::NotLeaderOrFollower,
            ControllerError::BrokerNotAvailable { .. } => ErrorKind::BrokerNotAvailable,
            ControllerError::StaleBrokerEpoch { .. } => ErrorKind::StaleBrokerEpoch,
            ControllerError::PreferredLeaderNotAvailable { .. } => {
                ErrorKind::PreferredLeaderNotAvailable
            }
            ControllerError::InvalidRequest(_) => ErrorKind::InvalidRequest,
            ControllerError::UnknownUser { .. } => ErrorKind::ResourceNotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_unique_screaming_snake_case() {
        let mut names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.name()).collect();
        for name in &names {
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        assert_eq!(
            ErrorKind::FencedLeaderEpoch.to_string(),
            "FENCED_LEADER_EPOCH"
        );
    }

    #[test]
    fn messages_carry_the_context() {
        let error = ControllerError::ReplicationFactorTooLarge {
            requested: 3,
            live_brokers: 2,
        };
        assert_eq!(
            error.to_string(),
            "replication factor 3 is larger than the 2 live brokers"
        );
        let error = ControllerError::UnknownPartition {
            topic: "orders".to_owned(),
            partition: 7,
            partition_count: 3,
        };
        assert_eq!(
            error.to_string(),
            "topic 'orders' has no partition 7; it has 3 (0 to 2)"
        );
        let error = ControllerError::NotLeaderOrFollower {
            topic: "orders".to_owned(),
            partition: 0,
            broker: BrokerId(2),
            leader: Some(BrokerId(1)),
        };
        assert_eq!(
            error.to_string(),
            "broker 2 is not the leader of orders-0; the leader is broker 1"
        );
        let error = ControllerError::InvalidTopicName {
            name: "a b".to_owned(),
            problem: TopicNameProblem::IllegalCharacter { character: ' ' },
        };
        assert!(error.to_string().contains("' ' is not allowed"), "{error}");
    }
}
