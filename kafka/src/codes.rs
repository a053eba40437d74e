//! Rivulet's error codes as Kafka's: the one translation every Kafka answer
//! goes through. Rivulet's numbers are its own (stable, never reused);
//! Kafka's are the ones its clients act on.

use kafka_protocol::error::ResponseError as K;
use rivulet_proto::v1::ErrorCode;

/// Kafka's code for one of ours.
pub fn kafka_code(code: ErrorCode) -> i16 {
    let k = match code {
        ErrorCode::None => return 0,
        ErrorCode::UnknownServerError => K::UnknownServerError,
        ErrorCode::OffsetOutOfRange => K::OffsetOutOfRange,
        ErrorCode::CorruptRecord => K::CorruptMessage,
        ErrorCode::UnknownTopicOrPartition => K::UnknownTopicOrPartition,
        ErrorCode::NotLeaderOrFollower => K::NotLeaderOrFollower,
        ErrorCode::RequestTimedOut => K::RequestTimedOut,
        ErrorCode::MessageTooLarge => K::MessageTooLarge,
        ErrorCode::NotEnoughReplicas => K::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend => K::NotEnoughReplicasAfterAppend,
        ErrorCode::FencedLeaderEpoch => K::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch => K::UnknownLeaderEpoch,
        ErrorCode::InvalidTopic => K::InvalidTopicException,
        ErrorCode::TopicAlreadyExists => K::TopicAlreadyExists,
        ErrorCode::InvalidPartitions => K::InvalidPartitions,
        ErrorCode::InvalidReplicationFactor => K::InvalidReplicationFactor,
        ErrorCode::InvalidConfig => K::InvalidConfig,
        ErrorCode::InvalidRequest => K::InvalidRequest,
        ErrorCode::KafkaStorageError => K::KafkaStorageError,
        ErrorCode::LeaderNotAvailable => K::LeaderNotAvailable,
        ErrorCode::NotController => K::NotController,
        ErrorCode::StaleBrokerEpoch => K::StaleBrokerEpoch,
        ErrorCode::InvalidUpdateVersion => K::InvalidUpdateVersion,
        ErrorCode::IneligibleReplica => K::IneligibleReplica,
        ErrorCode::BrokerNotAvailable => K::BrokerNotAvailable,
        ErrorCode::PreferredLeaderNotAvailable => K::PreferredLeaderNotAvailable,
        ErrorCode::CoordinatorNotAvailable => K::CoordinatorNotAvailable,
        ErrorCode::NotCoordinator => K::NotCoordinator,
        ErrorCode::CoordinatorLoadInProgress => K::CoordinatorLoadInProgress,
        ErrorCode::UnknownMemberId => K::UnknownMemberId,
        ErrorCode::FencedMemberEpoch => K::FencedMemberEpoch,
        ErrorCode::NonEmptyGroup => K::NonEmptyGroup,
        ErrorCode::GroupIdNotFound => K::GroupIdNotFound,
        ErrorCode::InvalidGroupId => K::InvalidGroupId,
        ErrorCode::OffsetNotAvailable => K::OffsetNotAvailable,
        ErrorCode::InvalidRecord => K::InvalidRecord,
        ErrorCode::TopicAuthorizationFailed => K::TopicAuthorizationFailed,
        ErrorCode::GroupAuthorizationFailed => K::GroupAuthorizationFailed,
        ErrorCode::ClusterAuthorizationFailed => K::ClusterAuthorizationFailed,
        ErrorCode::ResourceNotFound => K::ResourceNotFound,
        ErrorCode::OutOfOrderSequenceNumber => K::OutOfOrderSequenceNumber,
        ErrorCode::InvalidProducerEpoch => K::InvalidProducerEpoch,
        // Kafka has no "transactions are not built" code: clients read
        // UNSUPPORTED_VERSION as "this broker cannot do that".
        ErrorCode::TransactionsNotSupported => K::UnsupportedVersion,
    };
    k.code()
}

/// Kafka's code for a raw Rivulet code (an `i32` off a proto message).
pub fn kafka_code_raw(code: i32) -> i16 {
    ErrorCode::try_from(code).map_or(K::UnknownServerError.code(), kafka_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_clients_act_on_keep_their_kafka_numbers() {
        // The numbers librdkafka and the Java client switch on.
        assert_eq!(kafka_code(ErrorCode::None), 0);
        assert_eq!(kafka_code(ErrorCode::UnknownServerError), -1);
        assert_eq!(kafka_code(ErrorCode::OffsetOutOfRange), 1);
        assert_eq!(kafka_code(ErrorCode::UnknownTopicOrPartition), 3);
        assert_eq!(kafka_code(ErrorCode::LeaderNotAvailable), 5);
        assert_eq!(kafka_code(ErrorCode::NotLeaderOrFollower), 6);
        assert_eq!(kafka_code(ErrorCode::NotCoordinator), 16);
        assert_eq!(kafka_code(ErrorCode::NotEnoughReplicas), 19);
        assert_eq!(kafka_code(ErrorCode::TopicAuthorizationFailed), 29);
        assert_eq!(kafka_code(ErrorCode::OutOfOrderSequenceNumber), 45);
        assert_eq!(kafka_code(ErrorCode::InvalidProducerEpoch), 47);
        assert_eq!(kafka_code(ErrorCode::FencedLeaderEpoch), 74);
        assert_eq!(kafka_code(ErrorCode::InvalidRecord), 87);
        assert_eq!(kafka_code_raw(9999), -1);
    }
}
