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
        kafka_address: b.kafka_address.clone().unwrap_or_default(),
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
        ErrorKind::InvalidRequest => ErrorCode::InvalidRequest,
        ErrorKind::ResourceNotFound => ErrorCode::ResourceNotFound,
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

use crate::security::{
    Acl, AclFilter, Operation, PatternType, Permission, ResourceType, ScramCredential,
    ScramMechanism,
};
use rivulet_proto::v1 as pb;

/// The wire form of a SCRAM mechanism.
pub fn mechanism_to_proto(m: ScramMechanism) -> pb::ScramMechanism {
    match m {
        ScramMechanism::Sha256 => pb::ScramMechanism::Sha256,
        ScramMechanism::Sha512 => pb::ScramMechanism::Sha512,
    }
}

/// The wire form of a credential.
pub fn credential_to_proto(c: &ScramCredential) -> pb::ScramCredential {
    pb::ScramCredential {
        mechanism: mechanism_to_proto(c.mechanism).into(),
        salt: c.salt.clone().into(),
        iterations: c.iterations,
        stored_key: c.stored_key.clone().into(),
        server_key: c.server_key.clone().into(),
    }
}

/// A credential from the wire.
pub fn credential_from_proto(c: &pb::ScramCredential) -> Result<ScramCredential, String> {
    let mechanism = match pb::ScramMechanism::try_from(c.mechanism) {
        Ok(pb::ScramMechanism::Sha256) => ScramMechanism::Sha256,
        Ok(pb::ScramMechanism::Sha512) => ScramMechanism::Sha512,
        _ => return Err(format!("unknown SCRAM mechanism {}", c.mechanism)),
    };
    Ok(ScramCredential {
        mechanism,
        salt: c.salt.to_vec(),
        iterations: c.iterations,
        stored_key: c.stored_key.to_vec(),
        server_key: c.server_key.to_vec(),
    })
}

/// The wire form of an operation.
pub fn operation_to_proto(o: Operation) -> pb::AclOperation {
    use pb::AclOperation as P;
    match o {
        Operation::All => P::All,
        Operation::Read => P::Read,
        Operation::Write => P::Write,
        Operation::Create => P::Create,
        Operation::Delete => P::Delete,
        Operation::Alter => P::Alter,
        Operation::Describe => P::Describe,
        Operation::AlterConfigs => P::AlterConfigs,
        Operation::DescribeConfigs => P::DescribeConfigs,
        Operation::ClusterAction => P::ClusterAction,
    }
}

fn operation_from_proto(raw: i32) -> Result<Option<Operation>, String> {
    use pb::AclOperation as P;
    Ok(Some(match P::try_from(raw) {
        Ok(P::Unspecified) => return Ok(None),
        Ok(P::All) => Operation::All,
        Ok(P::Read) => Operation::Read,
        Ok(P::Write) => Operation::Write,
        Ok(P::Create) => Operation::Create,
        Ok(P::Delete) => Operation::Delete,
        Ok(P::Alter) => Operation::Alter,
        Ok(P::Describe) => Operation::Describe,
        Ok(P::AlterConfigs) => Operation::AlterConfigs,
        Ok(P::DescribeConfigs) => Operation::DescribeConfigs,
        Ok(P::ClusterAction) => Operation::ClusterAction,
        Err(_) => return Err(format!("unknown ACL operation {raw}")),
    }))
}

fn resource_from_proto(raw: i32) -> Result<Option<ResourceType>, String> {
    use pb::AclResourceType as P;
    Ok(Some(match P::try_from(raw) {
        Ok(P::Unspecified) => return Ok(None),
        Ok(P::Topic) => ResourceType::Topic,
        Ok(P::Group) => ResourceType::Group,
        Ok(P::Cluster) => ResourceType::Cluster,
        Err(_) => return Err(format!("unknown ACL resource type {raw}")),
    }))
}

fn pattern_from_proto(raw: i32) -> Result<Option<PatternType>, String> {
    use pb::AclPatternType as P;
    Ok(Some(match P::try_from(raw) {
        Ok(P::Unspecified) => return Ok(None),
        Ok(P::Literal) => PatternType::Literal,
        Ok(P::Prefixed) => PatternType::Prefixed,
        Err(_) => return Err(format!("unknown ACL pattern type {raw}")),
    }))
}

fn permission_from_proto(raw: i32) -> Result<Option<Permission>, String> {
    use pb::AclPermission as P;
    Ok(Some(match P::try_from(raw) {
        Ok(P::Unspecified) => return Ok(None),
        Ok(P::Allow) => Permission::Allow,
        Ok(P::Deny) => Permission::Deny,
        Err(_) => return Err(format!("unknown ACL permission {raw}")),
    }))
}

/// The wire form of an ACL.
pub fn acl_to_proto(a: &Acl) -> pb::AclBinding {
    pb::AclBinding {
        principal: a.principal.clone(),
        host: a.host.clone(),
        operation: operation_to_proto(a.operation).into(),
        resource_type: match a.resource_type {
            ResourceType::Topic => pb::AclResourceType::Topic,
            ResourceType::Group => pb::AclResourceType::Group,
            ResourceType::Cluster => pb::AclResourceType::Cluster,
        }
        .into(),
        pattern_type: match a.pattern {
            PatternType::Literal => pb::AclPatternType::Literal,
            PatternType::Prefixed => pb::AclPatternType::Prefixed,
        }
        .into(),
        resource_name: a.name.clone(),
        permission: match a.permission {
            Permission::Allow => pb::AclPermission::Allow,
            Permission::Deny => pb::AclPermission::Deny,
        }
        .into(),
    }
}

/// A filter from the wire: empty and UNSPECIFIED fields match anything.
pub fn acl_filter_from_proto(b: &pb::AclBinding) -> Result<AclFilter, String> {
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Ok(AclFilter {
        principal: text(&b.principal),
        host: text(&b.host),
        operation: operation_from_proto(b.operation)?,
        resource_type: resource_from_proto(b.resource_type)?,
        pattern: pattern_from_proto(b.pattern_type)?,
        name: text(&b.resource_name),
        permission: permission_from_proto(b.permission)?,
    })
}

/// A new ACL from the wire: every field but host (default `*`) and the
/// pattern (default literal) is required.
pub fn acl_from_proto(b: &pb::AclBinding) -> Result<Acl, String> {
    let f = acl_filter_from_proto(b)?;
    let need = |what: &str| format!("an ACL needs {what}");
    Ok(Acl {
        principal: f.principal.ok_or_else(|| need("a principal"))?,
        host: f.host.unwrap_or_else(|| "*".into()),
        operation: f.operation.ok_or_else(|| need("an operation"))?,
        resource_type: f.resource_type.ok_or_else(|| need("a resource type"))?,
        pattern: f.pattern.unwrap_or(PatternType::Literal),
        name: match f.resource_type {
            Some(ResourceType::Cluster) => f
                .name
                .unwrap_or_else(|| crate::security::CLUSTER_RESOURCE.into()),
            _ => f.name.ok_or_else(|| need("a resource name"))?,
        },
        permission: f.permission.ok_or_else(|| need("allow or deny"))?,
    })
}
