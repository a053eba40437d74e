//! The wire forms of image types, for every service that answers with them
//! (the Controller service here, the broker's Metadata).

use rivulet_proto::v1::{
    BrokerInfo, ConfigEntry, ErrorCode, PartitionInfo, TopicInfo, TopicPartitionRef,
};

use crate::error::ErrorKind;
use crate::ids::TopicPartition;
use crate::image::{BrokerRegistration, PartitionImage, TopicImage};

/// The wire form of a broker registration.
pub fn broker_info(b: &BrokerRegistration) -> BrokerInfo {
    BrokerInfo {
        id: b.id.0,
        address: b.address.clone(),
        rack: b.rack.clone(),
        broker_epoch: b.broker_epoch,
        fenced: b.fenced,
        state: b.state().to_owned(),
        directory_id: b.directory_id.clone().unwrap_or_default(),
    }
}

/// The wire form of a partition's replication state.
pub fn partition_info(p: &PartitionImage) -> PartitionInfo {
    PartitionInfo {
        partition: p.partition,
        replicas: p.replicas.iter().map(|b| b.0).collect(),
        isr: p.isr.iter().map(|b| b.0).collect(),
        elr: p.elr.iter().map(|b| b.0).collect(),
        leader: p.leader.map(|b| b.0),
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
    }
}

/// The wire form of a topic with its partitions and configs.
pub fn topic_info(t: &TopicImage) -> TopicInfo {
    TopicInfo {
        name: t.name.clone(),
        topic_id: t.id.to_string(),
        partitions: t.partitions.iter().map(partition_info).collect(),
        configs: t
            .config
            .to_pairs()
            .into_iter()
            .map(|(key, value)| ConfigEntry { key, value })
            .collect(),
    }
}

/// The wire code for a controller refusal.
pub fn error_code(kind: ErrorKind) -> ErrorCode {
    match kind {
        ErrorKind::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
        ErrorKind::InvalidTopic => ErrorCode::InvalidTopic,
        ErrorKind::TopicAlreadyExists => ErrorCode::TopicAlreadyExists,
        ErrorKind::InvalidPartitions => ErrorCode::InvalidPartitions,
        ErrorKind::InvalidReplicationFactor => ErrorCode::InvalidReplicationFactor,
        ErrorKind::InvalidConfig => ErrorCode::InvalidConfig,
        ErrorKind::FencedLeaderEpoch => ErrorCode::FencedLeaderEpoch,
        ErrorKind::InvalidUpdateVersion => ErrorCode::InvalidUpdateVersion,
        ErrorKind::IneligibleReplica => ErrorCode::IneligibleReplica,
        ErrorKind::NotLeaderOrFollower => ErrorCode::NotLeaderOrFollower,
        ErrorKind::BrokerNotAvailable => ErrorCode::BrokerNotAvailable,
        ErrorKind::StaleBrokerEpoch => ErrorCode::StaleBrokerEpoch,
        ErrorKind::PreferredLeaderNotAvailable => ErrorCode::PreferredLeaderNotAvailable,
    }
}

/// Config entries from the wire as `(key, value)` pairs.
pub fn config_pairs(entries: &[ConfigEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

/// The wire form of a list of topic partitions.
pub fn partition_refs(tps: &[TopicPartition]) -> Vec<TopicPartitionRef> {
    tps.iter()
        .map(|tp| TopicPartitionRef {
            topic: tp.topic.clone(),
            partition: tp.partition,
        })
        .collect()
}
