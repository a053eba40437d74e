//! The active controller's decisions, as pure functions: each reads the image
//! and a request and returns the records to commit plus the response to send,
//! or a [`ControllerError`]. None of them changes the image.
//!
//! Why pure: the same decision code runs in unit tests without Raft or tokio,
//! and on the active controller, where a thin async layer (a later task)
//! proposes the records to Raft and answers the caller once they commit. This
//! is the split of Kafka's `QuorumController` (handlers return
//! `ControllerResult(records, response)`, state changes only in `replay`).
//!
//! ```text
//!   request ──► decision fn(&MetadataImage, request) ──► Ok(ControllerResult { records, response })
//!                      ▲                                        │ records
//!                      │ reads                                  ▼
//!               MetadataImage ◄──── apply(record) ◄──── Raft log (committed, on every node)
//! ```
//!
//! Invariants of every decision:
//! - Deterministic: the same image and request give the same records, byte
//!   for byte (ordered maps only, no clock, no randomness).
//! - Its records, applied in order to the image it was decided on, all apply
//!   (none is skipped) and leave every image invariant intact. A decision's
//!   records should be committed as one Raft entry; even so, their order is
//!   chosen so that a node applying them one at a time never sees a restarted
//!   broker lead under its old leader epoch.
//! - Leadership rules (Kafka's): a new leader comes from the live ISR members,
//!   in replica order, then from the live eligible leader replicas (ELR,
//!   KIP-966); the ISR loses its last member only when that member's storage
//!   was replaced (a dead last member stays, so the partition can be led
//!   cleanly again when it returns); an out-of-sync replica leads only if the
//!   topic enables unclean election; every change of leader bumps the leader
//!   epoch, every change at all bumps the partition epoch.
//! - The ELR is derived in one place ([`finish`]): while the ISR is below
//!   `min.insync.replicas`, no acks=all record can be acknowledged, so the
//!   replicas that leave the ISR then still hold every acknowledged record
//!   and stay eligible; once the ISR is back at `min.insync.replicas` the ELR
//!   is empty. A replica whose storage was replaced (a new directory id,
//!   KIP-858) is in neither set until it has caught up again.
//! - A registering broker starts fenced ("catching up") and leads nothing
//!   until its heartbeats show it applied the metadata log up to its
//!   registration (KIP-631); a restart with the same, fsynced storage keeps
//!   its ISR and ELR memberships.
//! - A request that asks for what already is (fence a fenced broker, set the
//!   current ISR) succeeds with no records.

use std::collections::BTreeMap;

use crate::config::TopicConfig;
use crate::error::{ControllerError, IsrProblem, PreferredLeaderProblem, TopicNameProblem};
use crate::ids::{BrokerId, TopicId, TopicPartition};
use crate::image::{first_duplicate, MetadataImage, PartitionImage, TopicImage};
use crate::record::Record;
use crate::security::{
    user_name_problem, Acl, AclFilter, ScramCredential, ScramMechanism, MAX_ACLS, MAX_USERS,
};

/// The most partitions one topic may have: a bound on the size of one
/// `CreateTopic` record and of the work one request can cause.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 10_000;

/// The longest topic name, Kafka's limit (a partition directory name adds a
/// `-<partition>` suffix and must fit in 255 bytes).
pub const MAX_TOPIC_NAME_LENGTH: usize = 249;

/// What a decision produced: the records to commit and the response to send
/// once they are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerResult<R> {
    /// The records, in the order they must be applied. May be empty.
    pub records: Vec<Record>,
    /// The answer for the requester.
    pub response: R,
}

/// The answer to a broker registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterBrokerResponse {
    /// The new incarnation's epoch; the broker sends it with its heartbeats.
    pub broker_epoch: u64,
    /// Partitions whose leader or ISR changed because an earlier incarnation
    /// of the broker was replaced.
    pub changed: Vec<TopicPartition>,
    /// The broker came back with another log directory than it had.
    pub storage_replaced: bool,
}

/// The answer to fencing a broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FenceBrokerResponse {
    /// Every partition whose leader or ISR changed.
    pub changed: Vec<TopicPartition>,
    /// The partitions left without a leader by this fencing.
    pub offline: Vec<TopicPartition>,
}

/// The answer to unfencing a broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnfenceBrokerResponse {
    /// Offline partitions that the broker now leads.
    pub elected: Vec<TopicPartition>,
}

/// The answer to a topic creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicResponse {
    /// The new topic's id.
    pub topic_id: TopicId,
    /// For partition `p`, its replicas; the first leads.
    pub assignments: Vec<Vec<BrokerId>>,
    /// The topic's full configuration, defaults included.
    pub config: TopicConfig,
}

/// The answer to a topic deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicResponse {
    /// The id of the deleted topic.
    pub topic_id: TopicId,
}

/// The answer to a topic config change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterTopicConfigResponse {
    /// The topic's full configuration after the change.
    pub config: TopicConfig,
    /// Offline partitions given a leader because unclean election was just
    /// enabled.
    pub elected: Vec<TopicPartition>,
}

/// A partition leader asks to change the ISR (Kafka's AlterPartition): a
/// compare-and-set on the epochs it last saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    /// The topic's name.
    pub topic: String,
    /// The topic's id as the leader knows it; refused if the topic has been
    /// re-created since (the epochs of a new topic restart at 0 and could
    /// match by accident).
    pub topic_id: TopicId,
    /// The partition.
    pub partition: u32,
    /// The requesting broker, which must be the leader.
    pub broker_id: BrokerId,
    /// The leader epoch the requester leads under.
    pub leader_epoch: u32,
    /// The partition epoch of the state the requester last saw.
    pub partition_epoch: u32,
    /// The proposed ISR.
    pub new_isr: Vec<BrokerId>,
}

/// The answer to a preferred-leader election over all partitions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ElectLeadersResponse {
    /// The partitions whose leadership moves to their preferred replica.
    pub elected: Vec<TopicPartition>,
}

/// The answer to a preferred-leader election for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectLeaderResponse {
    /// The partition's state after the election.
    pub partition: PartitionImage,
    /// False if the preferred replica already led (no records).
    pub changed: bool,
}

/// What a broker says of itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistrationRequest {
    /// The broker's id.
    pub id: BrokerId,
    /// Where clients and replicas reach it.
    pub address: String,
    /// Its failure domain, if configured.
    pub rack: Option<String>,
    /// The id of its log directory (KIP-858).
    pub directory_id: Option<String>,
    /// Every append it acknowledged was fsynced first (`--flush always`), so
    /// a crash lost nothing it ever reported as written.
    pub log_fsynced: bool,
    /// Where Kafka clients reach it, if it has a Kafka listener.
    pub kafka_address: Option<String>,
}

/// Registers broker `id` (or a new incarnation of it), fenced and catching
/// up, with a fresh broker epoch; [`unfence_broker`] lets it lead once it
/// has caught up with the metadata log.
///
/// Re-registration ends the previous incarnation; partitions it led get
/// another live eligible leader (or go offline until it is back), always
/// under a new leader epoch. Its memberships depend on its storage:
/// - a new directory id: its replicas are new and empty. It leaves every
///   ISR (even as the last member) and ELR, and leads nothing until it has
///   caught up and rejoined an ISR.
/// - the same directory with fsynced logs: it still holds everything it
///   acknowledged, so it keeps its ISR and ELR memberships.
/// - the same directory with unflushed logs (`--flush interval|never`): it
///   may have lost an unflushed tail, so it leaves its ISRs as a fenced
///   broker would (staying the last member, joining the ELR while the ISR
///   is below `min.insync.replicas`).
pub fn register_broker(
    image: &MetadataImage,
    request: BrokerRegistrationRequest,
) -> ControllerResult<RegisterBrokerResponse> {
    let BrokerRegistrationRequest {
        id,
        address,
        rack,
        directory_id,
        log_fsynced,
        kafka_address,
    } = request;
    let broker_epoch = image.next_broker_epoch();
    let mut records = Vec::new();
    let mut changed = Vec::new();
    let mut storage_replaced = false;
    if let Some(previous) = image.broker(id) {
        storage_replaced = previous.directory_id.is_some() && previous.directory_id != directory_id;
        let without_old = Liveness::with_down(image, id);
        for (topic, partition) in image.partitions() {
            if !partition.is_replica(id) {
                continue;
            }
            let unclean = topic.config.unclean_leader_election_enable;
            let proposed = if storage_replaced {
                forget_replica(partition, id, without_old, unclean)
            } else if !previous.fenced && !log_fsynced {
                without_broker(partition, id, without_old, unclean)
            } else {
                // Same storage: memberships stay; only leadership moves off
                // the restarting (now fenced) broker.
                keep_replica(partition, id, without_old, unclean)
            };
            // Whatever the image says of the old incarnation, a partition it
            // still leads gets a new leader epoch: no leader may lead one
            // epoch across two incarnations (its unflushed tail may be gone,
            // and followers match logs by epoch).
            let restarted_leader = partition.leader == Some(id);
            if let Some(new) = finish(topic, partition, proposed, restarted_leader) {
                changed.push(TopicPartition::new(topic.name.clone(), partition.partition));
                records.push(change_record(topic, new));
            }
        }
    }
    // After the partition changes: see the module header.
    records.push(Record::RegisterBroker {
        id,
        address,
        rack,
        broker_epoch,
        directory_id,
        catching_up: true,
        kafka_address,
    });
    ControllerResult {
        records,
        response: RegisterBrokerResponse {
            broker_epoch,
            changed,
            storage_replaced,
        },
    }
}

/// Fences broker `id` (its lease expired): it leaves every ISR it is in,
/// except as the last member, and every partition it leads gets the first
/// live ISR member in replica order as leader, or, if there is none, goes
/// offline, unless the topic enables unclean election and a live replica
/// exists, which then leads alone. Fencing a fenced broker does nothing.
pub fn fence_broker(
    image: &MetadataImage,
    id: BrokerId,
) -> Result<ControllerResult<FenceBrokerResponse>, ControllerError> {
    let registration = image
        .broker(id)
        .ok_or(ControllerError::BrokerNotAvailable { broker: id })?;
    let mut response = FenceBrokerResponse::default();
    // A broker still catching up is fenced already, but keeps the ISR
    // memberships of its intact storage until it catches up or, as here,
    // its lease runs out.
    if registration.fenced && !registration.catching_up {
        return Ok(ControllerResult {
            records: Vec::new(),
            response,
        });
    }
    let mut records = vec![Record::FenceBroker {
        id,
        broker_epoch: registration.broker_epoch,
    }];
    let live = Liveness::with_down(image, id);
    for (topic, partition) in image.partitions() {
        let unclean = topic.config.unclean_leader_election_enable;
        let proposed = without_broker(partition, id, live, unclean);
        if let Some(new) = finish(topic, partition, proposed, false) {
            let name = TopicPartition::new(topic.name.clone(), partition.partition);
            if new.is_offline() && !partition.is_offline() {
                response.offline.push(name.clone());
            }
            response.changed.push(name);
            records.push(change_record(topic, new));
        }
    }
    Ok(ControllerResult { records, response })
}

/// Broker `id` cannot write its replicas of `failed` (disk full or failing):
/// it leaves their ISRs, and where it leads, the first other live in-sync
/// replica takes over (a new leader epoch). A partition where no other live
/// replica is in sync keeps it as it is: it holds the only copy of what was
/// acknowledged, and it can still serve reads. Returns the partitions changed.
pub fn drop_failed_replicas(
    image: &MetadataImage,
    id: BrokerId,
    failed: &[(String, u32)],
) -> Result<ControllerResult<Vec<TopicPartition>>, ControllerError> {
    let live = Liveness::with_down(image, id);
    let mut records = Vec::new();
    let mut changed = Vec::new();
    for (name, index) in failed {
        let Some(topic) = image.topic(name) else {
            continue;
        };
        let Some(partition) = topic.partitions.get(*index as usize) else {
            continue;
        };
        let others_in_sync = partition.isr.iter().any(|b| *b != id && live.is_live(*b));
        if !others_in_sync {
            continue;
        }
        let proposed = without_broker(partition, id, live, false);
        if let Some(new) = finish(topic, partition, proposed, false) {
            changed.push(TopicPartition::new(topic.name.clone(), partition.partition));
            records.push(change_record(topic, new));
        }
    }
    Ok(ControllerResult {
        records,
        response: changed,
    })
}

/// Broker `id` is stopping: every partition it leads or is in sync for is
/// handled as by [`drop_failed_replicas`] (leadership to another live
/// in-sync replica, out of the ISR, the last in-sync copy left as it is).
pub fn shut_down_broker(
    image: &MetadataImage,
    id: BrokerId,
) -> Result<ControllerResult<Vec<TopicPartition>>, ControllerError> {
    let hosted: Vec<(String, u32)> = image
        .partitions()
        .filter(|(_, p)| p.leader == Some(id) || p.is_in_isr(id))
        .map(|(t, p)| (t.name.clone(), p.partition))
        .collect();
    drop_failed_replicas(image, id, &hosted)
}

/// Unfences broker `id` (heartbeating again, same incarnation, caught up
/// with the metadata log), and gives it the offline partitions it is
/// eligible to lead (ISR or ELR member), or, where the topic enables unclean
/// election, those it merely holds a replica of.
pub fn unfence_broker(
    image: &MetadataImage,
    id: BrokerId,
    broker_epoch: u64,
) -> Result<ControllerResult<UnfenceBrokerResponse>, ControllerError> {
    let registration = image
        .broker(id)
        .ok_or(ControllerError::BrokerNotAvailable { broker: id })?;
    if registration.broker_epoch != broker_epoch {
        return Err(ControllerError::StaleBrokerEpoch {
            broker: id,
            request_epoch: broker_epoch,
            current_epoch: registration.broker_epoch,
        });
    }
    let mut records = Vec::new();
    if registration.fenced {
        records.push(Record::UnfenceBroker { id, broker_epoch });
    }
    let mut response = UnfenceBrokerResponse::default();
    let live = Liveness::with_up(image, id);
    for (topic, partition) in image.partitions() {
        if !partition.is_offline() || !partition.is_replica(id) {
            continue;
        }
        let unclean = topic.config.unclean_leader_election_enable;
        let Some(proposed) = choose_leader(partition, &partition.isr, None, live, unclean) else {
            continue;
        };
        if let Some(new) = finish(topic, partition, proposed, false) {
            response
                .elected
                .push(TopicPartition::new(topic.name.clone(), partition.partition));
            records.push(change_record(topic, new));
        }
    }
    Ok(ControllerResult { records, response })
}

/// Creates topic `name` with `partitions` partitions of `replication_factor`
/// replicas each, configured by Kafka-style `config_pairs` over the defaults.
///
/// Placement: the unfenced brokers, sorted by id (interleaved by rack when
/// racks are configured, so consecutive brokers sit in different racks), are
/// used round robin: partition `p` gets the `replication_factor` brokers
/// starting at index `(start + p) % n`, its first replica leading. `start` is
/// the number of partitions in the cluster, so successive topics continue the
/// rotation and leadership spreads across topics too.
pub fn create_topic(
    image: &MetadataImage,
    name: &str,
    partitions: u32,
    replication_factor: u32,
    config_pairs: &[(String, String)],
) -> Result<ControllerResult<CreateTopicResponse>, ControllerError> {
    let invalid_name = |problem| ControllerError::InvalidTopicName {
        name: name.to_owned(),
        problem,
    };
    validate_topic_name(name).map_err(invalid_name)?;
    if image.topic(name).is_some() {
        return Err(ControllerError::TopicAlreadyExists {
            name: name.to_owned(),
        });
    }
    if let Some(existing) = colliding_topic(image, name) {
        return Err(invalid_name(TopicNameProblem::CollidesWith {
            existing: existing.to_owned(),
        }));
    }
    if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
        return Err(ControllerError::InvalidPartitionCount {
            requested: partitions,
            max: MAX_PARTITIONS_PER_TOPIC,
        });
    }
    if replication_factor == 0 {
        return Err(ControllerError::ReplicationFactorZero);
    }
    let brokers = placement_order(image);
    let live_brokers = u32::try_from(brokers.len()).unwrap_or(u32::MAX);
    if replication_factor > live_brokers {
        return Err(ControllerError::ReplicationFactorTooLarge {
            requested: replication_factor,
            live_brokers,
        });
    }
    let invalid_config = |source| ControllerError::InvalidConfig {
        topic: name.to_owned(),
        source,
    };
    let config = TopicConfig::from_pairs(config_pairs.iter().map(|(k, v)| (k, v)))
        .map_err(invalid_config)?;
    config
        .validate(replication_factor)
        .map_err(invalid_config)?;

    let assignments = place(image, &brokers, partitions, replication_factor);

    let topic_id = new_topic_id(image, name);
    Ok(ControllerResult {
        records: vec![Record::CreateTopic {
            topic_id,
            name: name.to_owned(),
            config: config.clone(),
            assignments: assignments.clone(),
        }],
        response: CreateTopicResponse {
            topic_id,
            assignments,
            config,
        },
    })
}

/// Grows topic `name` to `total` partitions (Kafka's CreatePartitions,
/// KIP-195): the new ones placed as a new topic's are, with the topic's
/// replication factor. Partitions are never removed, and
/// `__consumer_offsets` keeps its count (a group's partition is its id's
/// hash modulo the count: more would move every group). The new
/// partitions' assignments.
pub fn create_partitions(
    image: &MetadataImage,
    name: &str,
    total: u32,
) -> Result<ControllerResult<Vec<Vec<BrokerId>>>, ControllerError> {
    let topic = lookup_topic(image, name)?;
    if name == "__consumer_offsets" {
        return Err(ControllerError::InvalidRequest(format!(
            "{name} keeps its partition count: each group's coordinator is its id's hash modulo the count"
        )));
    }
    let current = topic.partition_count();
    if total <= current {
        return Err(ControllerError::PartitionsNotIncreased {
            topic: name.to_owned(),
            current,
            requested: total,
        });
    }
    if total > MAX_PARTITIONS_PER_TOPIC {
        return Err(ControllerError::InvalidPartitionCount {
            requested: total,
            max: MAX_PARTITIONS_PER_TOPIC,
        });
    }
    let replication_factor = topic.replication_factor();
    let brokers = placement_order(image);
    let live_brokers = u32::try_from(brokers.len()).unwrap_or(u32::MAX);
    if replication_factor == 0 || replication_factor > live_brokers {
        return Err(ControllerError::ReplicationFactorTooLarge {
            requested: replication_factor,
            live_brokers,
        });
    }
    let assignments = place(image, &brokers, total - current, replication_factor);
    Ok(ControllerResult {
        records: vec![Record::CreatePartitions {
            name: name.to_owned(),
            topic_id: topic.id,
            assignments: assignments.clone(),
        }],
        response: assignments,
    })
}

/// Replicas for `count` new partitions: round robin over `brokers` (in
/// placement order), starting where the cluster's partition count left
/// off so leaders spread across topics. `brokers` must hold at least
/// `replication_factor` (≥ 1) brokers.
fn place(
    image: &MetadataImage,
    brokers: &[BrokerId],
    count: u32,
    replication_factor: u32,
) -> Vec<Vec<BrokerId>> {
    let start = (image.partition_count() % brokers.len() as u64) as usize;
    (0..count as usize)
        .map(|p| {
            brokers
                .iter()
                .cycle()
                .skip((start + p) % brokers.len())
                .take(replication_factor as usize)
                .copied()
                .collect()
        })
        .collect()
}

/// Deletes topic `name` and all its partitions.
pub fn delete_topic(
    image: &MetadataImage,
    name: &str,
) -> Result<ControllerResult<DeleteTopicResponse>, ControllerError> {
    let topic = lookup_topic(image, name)?;
    Ok(ControllerResult {
        records: vec![Record::DeleteTopic {
            name: name.to_owned(),
            topic_id: topic.id,
        }],
        response: DeleteTopicResponse { topic_id: topic.id },
    })
}

/// Sets the Kafka-style `pairs` over topic `name`'s current configuration
/// (keys not given keep their value). If this enables unclean election,
/// offline partitions with a live replica get it as leader at once.
pub fn alter_topic_config(
    image: &MetadataImage,
    name: &str,
    pairs: &[(String, String)],
) -> Result<ControllerResult<AlterTopicConfigResponse>, ControllerError> {
    let topic = lookup_topic(image, name)?;
    let invalid_config = |source| ControllerError::InvalidConfig {
        topic: name.to_owned(),
        source,
    };
    let config = topic
        .config
        .with_pairs(pairs.iter().map(|(k, v)| (k, v)))
        .map_err(invalid_config)?;
    config
        .validate(topic.replication_factor())
        .map_err(invalid_config)?;
    let mut response = AlterTopicConfigResponse {
        config: config.clone(),
        elected: Vec::new(),
    };
    if config == topic.config {
        return Ok(ControllerResult {
            records: Vec::new(),
            response,
        });
    }
    let mut records = vec![Record::AlterTopicConfig {
        name: name.to_owned(),
        topic_id: topic.id,
        config: config.clone(),
    }];
    if config.unclean_leader_election_enable && !topic.config.unclean_leader_election_enable {
        let live = Liveness::of(image);
        for partition in topic.partitions.iter().filter(|p| p.is_offline()) {
            let Some(proposed) = choose_leader(partition, &partition.isr, None, live, true) else {
                continue;
            };
            if let Some(new) = finish(topic, partition, proposed, false) {
                response
                    .elected
                    .push(TopicPartition::new(name, partition.partition));
                records.push(change_record(topic, new));
            }
        }
    }
    Ok(ControllerResult { records, response })
}

/// Changes a partition's ISR on its leader's request: a compare-and-set on
/// the leader epoch and partition epoch the leader last saw. On success the
/// response is the partition's new state (partition epoch + 1, leader epoch
/// unchanged); if the ISR is unchanged, the current state with no records.
pub fn alter_partition(
    image: &MetadataImage,
    request: AlterPartitionRequest,
) -> Result<ControllerResult<PartitionImage>, ControllerError> {
    let AlterPartitionRequest {
        topic: topic_name,
        topic_id,
        partition: index,
        broker_id,
        leader_epoch,
        partition_epoch,
        new_isr,
    } = request;
    let topic = lookup_topic(image, &topic_name)?;
    if topic.id != topic_id {
        return Err(ControllerError::TopicIdMismatch {
            topic: topic_name,
            request_id: topic_id,
            current_id: topic.id,
        });
    }
    let partition = lookup_partition(topic, index)?;
    // A deposed leader learns it is deposed (FENCED_LEADER_EPOCH) before
    // anything else, since that is what it must act on.
    if leader_epoch != partition.leader_epoch {
        return Err(ControllerError::FencedLeaderEpoch {
            topic: topic_name,
            partition: index,
            request_epoch: leader_epoch,
            current_epoch: partition.leader_epoch,
        });
    }
    if partition.leader != Some(broker_id) {
        return Err(ControllerError::NotLeaderOrFollower {
            topic: topic_name,
            partition: index,
            broker: broker_id,
            leader: partition.leader,
        });
    }
    let outdated = |current_epoch| ControllerError::InvalidUpdateVersion {
        topic: topic_name.clone(),
        partition: index,
        request_epoch: partition_epoch,
        current_epoch,
    };
    if partition_epoch != partition.partition_epoch {
        return Err(outdated(partition.partition_epoch));
    }
    if let Some(problem) = isr_problem(image, partition, broker_id, &new_isr) {
        return Err(ControllerError::IneligibleReplica {
            topic: topic_name,
            partition: index,
            problem,
        });
    }
    if new_isr == partition.isr {
        return Ok(ControllerResult {
            records: Vec::new(),
            response: partition.clone(),
        });
    }
    // Four billion ISR changes to one partition: refuse rather than wrap.
    let next_partition_epoch = partition
        .partition_epoch
        .checked_add(1)
        .ok_or_else(|| outdated(partition.partition_epoch))?;
    let elr = next_elr(topic, partition, &new_isr, None);
    let new = PartitionImage {
        isr: new_isr,
        elr,
        partition_epoch: next_partition_epoch,
        ..partition.clone()
    };
    Ok(ControllerResult {
        records: vec![change_record(topic, new.clone())],
        response: new,
    })
}

/// Moves leadership of every partition to its preferred replica (the first)
/// where that replica is unfenced, in the ISR and not already leading.
/// Partitions where it is not possible are left alone.
pub fn elect_preferred_leaders(image: &MetadataImage) -> ControllerResult<ElectLeadersResponse> {
    let mut records = Vec::new();
    let mut response = ElectLeadersResponse::default();
    for (topic, partition) in image.partitions() {
        if let Ok(Some(new)) = preferred_leader_change(image, topic, partition) {
            response
                .elected
                .push(TopicPartition::new(topic.name.clone(), partition.partition));
            records.push(change_record(topic, new));
        }
    }
    ControllerResult { records, response }
}

/// Moves leadership of one partition to its preferred replica. Succeeds
/// without records if it already leads; refused if it is fenced or not in
/// the ISR.
pub fn elect_leader(
    image: &MetadataImage,
    topic: &str,
    partition: u32,
) -> Result<ControllerResult<ElectLeaderResponse>, ControllerError> {
    let topic_image = lookup_topic(image, topic)?;
    let current = lookup_partition(topic_image, partition)?;
    match preferred_leader_change(image, topic_image, current) {
        Ok(Some(new)) => Ok(ControllerResult {
            records: vec![change_record(topic_image, new.clone())],
            response: ElectLeaderResponse {
                partition: new,
                changed: true,
            },
        }),
        Ok(None) => Ok(ControllerResult {
            records: Vec::new(),
            response: ElectLeaderResponse {
                partition: current.clone(),
                changed: false,
            },
        }),
        Err(problem) => Err(ControllerError::PreferredLeaderNotAvailable {
            topic: topic.to_owned(),
            partition,
            problem,
        }),
    }
}

/// Which brokers count as alive while a decision is computed: the image's
/// unfenced brokers, with one broker overridden either way (the broker being
/// fenced counts as down; the broker coming back counts as up).
#[derive(Debug, Clone, Copy)]
struct Liveness<'a> {
    /// Whose fencing flags to read.
    image: &'a MetadataImage,
    /// A broker to treat as fenced.
    down: Option<BrokerId>,
    /// A broker to treat as unfenced.
    up: Option<BrokerId>,
}

impl<'a> Liveness<'a> {
    fn of(image: &'a MetadataImage) -> Self {
        Liveness {
            image,
            down: None,
            up: None,
        }
    }

    fn with_down(image: &'a MetadataImage, broker: BrokerId) -> Self {
        Liveness {
            down: Some(broker),
            ..Liveness::of(image)
        }
    }

    fn with_up(image: &'a MetadataImage, broker: BrokerId) -> Self {
        Liveness {
            up: Some(broker),
            ..Liveness::of(image)
        }
    }

    fn is_live(&self, broker: BrokerId) -> bool {
        if self.down == Some(broker) {
            false
        } else if self.up == Some(broker) {
            true
        } else {
            self.image.is_live(broker)
        }
    }
}

/// A proposed leader and ISR for a partition; [`finish`] derives the ELR
/// and the epochs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proposed {
    /// The new leader, `None` for offline.
    leader: Option<BrokerId>,
    /// The new ISR.
    isr: Vec<BrokerId>,
    /// An unclean election: the ELR's promise is given up.
    unclean: bool,
    /// A replica whose storage was replaced: in neither the ISR nor the ELR.
    forgotten: Option<BrokerId>,
}

impl Proposed {
    fn clean(leader: Option<BrokerId>, isr: Vec<BrokerId>) -> Self {
        Proposed {
            leader,
            isr,
            unclean: false,
            forgotten: None,
        }
    }

    /// The partition as it is.
    fn unchanged(partition: &PartitionImage) -> Self {
        Proposed::clean(partition.leader, partition.isr.clone())
    }
}

/// A new leader for `partition` given the ISR `isr`: the first replica (in
/// replica order) that is live and in `isr`, keeping `isr`; failing that the
/// first live ELR member (but `forgotten`), which then forms the ISR alone
/// (KIP-966); failing that, if `unclean`, the first live replica, alone.
fn choose_leader(
    partition: &PartitionImage,
    isr: &[BrokerId],
    forgotten: Option<BrokerId>,
    live: Liveness<'_>,
    unclean: bool,
) -> Option<Proposed> {
    let first_live = |set: &dyn Fn(BrokerId) -> bool| {
        partition
            .replicas
            .iter()
            .copied()
            .find(|r| set(*r) && live.is_live(*r) && Some(*r) != forgotten)
    };
    if let Some(leader) = first_live(&|r| isr.contains(&r)) {
        return Some(Proposed {
            forgotten,
            ..Proposed::clean(Some(leader), isr.to_vec())
        });
    }
    if let Some(leader) = first_live(&|r| partition.elr.contains(&r)) {
        return Some(Proposed {
            forgotten,
            ..Proposed::clean(Some(leader), vec![leader])
        });
    }
    if !unclean {
        return None;
    }
    // KIP-966 would pick the longest log; the controller does not know log
    // ends, so it takes replica order, never a replica it knows is empty.
    first_live(&|_| true).map(|leader| Proposed {
        leader: Some(leader),
        isr: vec![leader],
        unclean: true,
        forgotten,
    })
}

/// The leader and ISR of `partition` once `broker` is gone: it leaves the
/// ISR unless it is the last member, and if it led (or nobody did), a new
/// leader is chosen among the `live` brokers.
fn without_broker(
    partition: &PartitionImage,
    broker: BrokerId,
    live: Liveness<'_>,
    unclean: bool,
) -> Proposed {
    let led = partition.leader == Some(broker);
    if !led && !partition.is_in_isr(broker) {
        return Proposed::unchanged(partition);
    }
    let mut isr: Vec<BrokerId> = partition
        .isr
        .iter()
        .copied()
        .filter(|b| *b != broker)
        .collect();
    if isr.is_empty() {
        // Kafka never empties the ISR: the last member is the only replica
        // known to hold every acknowledged record.
        isr.push(broker);
    }
    if led || partition.leader.is_none() {
        choose_leader(partition, &isr, None, live, unclean)
            .unwrap_or_else(|| Proposed::clean(None, isr))
    } else {
        Proposed::clean(partition.leader, isr)
    }
}

/// `partition` once `broker` is known to have lost its replica (a new log
/// directory): out of the ISR, even as its last member, and out of the ELR;
/// a new leader is chosen if it led or nobody did.
fn forget_replica(
    partition: &PartitionImage,
    broker: BrokerId,
    live: Liveness<'_>,
    unclean: bool,
) -> Proposed {
    let isr: Vec<BrokerId> = partition
        .isr
        .iter()
        .copied()
        .filter(|b| *b != broker)
        .collect();
    let led = partition.leader == Some(broker);
    if led || partition.leader.is_none() {
        choose_leader(partition, &isr, Some(broker), live, unclean).unwrap_or(Proposed {
            forgotten: Some(broker),
            ..Proposed::clean(None, isr)
        })
    } else {
        Proposed {
            forgotten: Some(broker),
            ..Proposed::clean(partition.leader, isr)
        }
    }
}

/// `partition` while `broker` restarts with its storage intact: its ISR and
/// ELR memberships stay; if it led, another live ISR or ELR member leads,
/// or the partition waits offline for it.
fn keep_replica(
    partition: &PartitionImage,
    broker: BrokerId,
    live: Liveness<'_>,
    unclean: bool,
) -> Proposed {
    if partition.leader != Some(broker) {
        return Proposed::unchanged(partition);
    }
    choose_leader(partition, &partition.isr, None, live, unclean)
        .unwrap_or_else(|| Proposed::clean(None, partition.isr.clone()))
}

/// The ELR of `partition` once its ISR is `new_isr`: empty while the ISR
/// has `min.insync.replicas` members (acks=all records can then be
/// acknowledged without the others); otherwise every replica that was
/// eligible (ISR or ELR) and is not in the new ISR, but `forgotten`.
fn next_elr(
    topic: &TopicImage,
    partition: &PartitionImage,
    new_isr: &[BrokerId],
    forgotten: Option<BrokerId>,
) -> Vec<BrokerId> {
    if new_isr.len() >= topic.config.min_insync_replicas as usize {
        return Vec::new();
    }
    partition
        .replicas
        .iter()
        .copied()
        .filter(|r| !new_isr.contains(r) && Some(*r) != forgotten && partition.is_eligible(*r))
        .collect()
}

/// The new state of `partition` of `topic` as `proposed`, with the ELR
/// derived and the epochs bumped, or `None` if nothing changes.
/// `leader_restarted` forces a new leader epoch when the same broker keeps
/// leading under a new incarnation. `None` too if an epoch would overflow
/// (after four billion changes), which leaves the partition as it is rather
/// than wrapping.
fn finish(
    topic: &TopicImage,
    partition: &PartitionImage,
    proposed: Proposed,
    leader_restarted: bool,
) -> Option<PartitionImage> {
    let Proposed {
        leader,
        isr,
        unclean,
        forgotten,
    } = proposed;
    let elr = if unclean {
        Vec::new()
    } else {
        next_elr(topic, partition, &isr, forgotten)
    };
    let leader_changed = leader != partition.leader || leader_restarted;
    if !leader_changed && isr == partition.isr && elr == partition.elr {
        return None;
    }
    let leader_epoch = if leader_changed {
        partition.leader_epoch.checked_add(1)?
    } else {
        partition.leader_epoch
    };
    Some(PartitionImage {
        partition: partition.partition,
        replicas: partition.replicas.clone(),
        isr,
        elr,
        leader,
        leader_epoch,
        partition_epoch: partition.partition_epoch.checked_add(1)?,
    })
}

/// The `PartitionChange` record that sets `partition` of `topic` to `new`.
fn change_record(topic: &TopicImage, new: PartitionImage) -> Record {
    Record::PartitionChange {
        topic: topic.name.clone(),
        topic_id: topic.id,
        partition: new.partition,
        leader: new.leader,
        isr: new.isr,
        elr: new.elr,
        leader_epoch: new.leader_epoch,
        partition_epoch: new.partition_epoch,
    }
}

/// The new state of `partition` with its preferred replica leading; `None`
/// if it already leads.
fn preferred_leader_change(
    image: &MetadataImage,
    topic: &TopicImage,
    partition: &PartitionImage,
) -> Result<Option<PartitionImage>, PreferredLeaderProblem> {
    let preferred = partition
        .preferred_leader()
        .ok_or(PreferredLeaderProblem::NoReplicas)?;
    if partition.leader == Some(preferred) {
        return Ok(None);
    }
    if !image.is_live(preferred) {
        return Err(PreferredLeaderProblem::Fenced { broker: preferred });
    }
    if !partition.is_in_isr(preferred) {
        return Err(PreferredLeaderProblem::NotInIsr { broker: preferred });
    }
    Ok(finish(
        topic,
        partition,
        Proposed::clean(Some(preferred), partition.isr.clone()),
        false,
    ))
}

/// What is wrong with `new_isr` as the ISR of `partition` led by `leader`.
fn isr_problem(
    image: &MetadataImage,
    partition: &PartitionImage,
    leader: BrokerId,
    new_isr: &[BrokerId],
) -> Option<IsrProblem> {
    if new_isr.is_empty() {
        return Some(IsrProblem::Empty);
    }
    if !new_isr.contains(&leader) {
        return Some(IsrProblem::MissingLeader { leader });
    }
    if let Some(broker) = first_duplicate(new_isr) {
        return Some(IsrProblem::Duplicate { broker });
    }
    if let Some(broker) = new_isr.iter().copied().find(|b| !partition.is_replica(*b)) {
        return Some(IsrProblem::NotAReplica { broker });
    }
    // A fenced broker may not join the ISR (KIP-841); one already in it
    // (restarting with intact storage) may stay while it catches up.
    new_isr
        .iter()
        .copied()
        .find(|b| !image.is_live(*b) && !partition.is_in_isr(*b))
        .map(|broker| IsrProblem::Fenced { broker })
}

fn lookup_topic<'a>(
    image: &'a MetadataImage,
    name: &str,
) -> Result<&'a TopicImage, ControllerError> {
    image
        .topic(name)
        .ok_or_else(|| ControllerError::UnknownTopic {
            topic: name.to_owned(),
        })
}

fn lookup_partition(
    topic: &TopicImage,
    partition: u32,
) -> Result<&PartitionImage, ControllerError> {
    topic
        .partition(partition)
        .ok_or_else(|| ControllerError::UnknownPartition {
            topic: topic.name.clone(),
            partition,
            partition_count: topic.partition_count(),
        })
}

/// Kafka's topic name rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, and
/// neither `.` nor `..`.
fn validate_topic_name(name: &str) -> Result<(), TopicNameProblem> {
    if name.is_empty() {
        return Err(TopicNameProblem::Empty);
    }
    if name == "." || name == ".." {
        return Err(TopicNameProblem::DotOrDotDot);
    }
    if let Some(character) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(TopicNameProblem::IllegalCharacter { character });
    }
    if name.len() > MAX_TOPIC_NAME_LENGTH {
        return Err(TopicNameProblem::TooLong {
            length: name.len(),
            max: MAX_TOPIC_NAME_LENGTH,
        });
    }
    Ok(())
}

/// An existing topic whose name equals `name` once `.` and `_` are treated
/// alike (Kafka refuses such pairs: their metric names would clash).
fn colliding_topic<'a>(image: &'a MetadataImage, name: &str) -> Option<&'a str> {
    if !name.contains(['.', '_']) {
        return None;
    }
    let unified = name.replace('.', "_");
    image
        .topics()
        .keys()
        .find(|existing| existing.as_str() != name && existing.replace('.', "_") == unified)
        .map(String::as_str)
}

/// The unfenced brokers in placement order: by id; or, when any of them has
/// a rack, interleaved by rack (racks in name order, brokers by id within
/// each rack; brokers without a rack form one more group), so that
/// consecutive brokers, and so the replicas of a partition, sit in
/// different racks wherever the racks allow.
fn placement_order(image: &MetadataImage) -> Vec<BrokerId> {
    if image.live_brokers().all(|b| b.rack.is_none()) {
        return image.live_broker_ids();
    }
    let mut by_rack: BTreeMap<Option<&str>, Vec<BrokerId>> = BTreeMap::new();
    for broker in image.live_brokers() {
        by_rack
            .entry(broker.rack.as_deref())
            .or_default()
            .push(broker.id);
    }
    let rounds = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..rounds)
        .flat_map(|round| {
            by_rack
                .values()
                .filter_map(move |brokers| brokers.get(round).copied())
        })
        .collect()
}

/// A deterministic, non-zero id no live topic has. Derived from the cluster
/// id, the name and the metadata offset, so a re-created topic gets a new id.
fn new_topic_id(image: &MetadataImage, name: &str) -> TopicId {
    let mut salt = 0u64;
    loop {
        let id = TopicId::derive(image.cluster_id(), name, image.metadata_offset(), salt);
        // A 128-bit hash collides with a live topic essentially never; the
        // loop is there so that "essentially" is not a correctness argument.
        if !id.is_zero() && image.topic_by_id(id).is_none() {
            return id;
        }
        salt = salt.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests;

/// Creates user `name` or replaces its credentials (KIP-554); with
/// `create_only` an existing user is left alone. The answer says whether
/// the user is new.
pub fn upsert_user(
    image: &MetadataImage,
    name: &str,
    credentials: Vec<ScramCredential>,
    create_only: bool,
) -> Result<ControllerResult<bool>, ControllerError> {
    let invalid = ControllerError::InvalidRequest;
    if let Some(p) = user_name_problem(name) {
        return Err(invalid(p));
    }
    if !credentials
        .iter()
        .any(|c| c.mechanism == ScramMechanism::Sha256)
    {
        return Err(invalid(
            "a user needs a SCRAM-SHA-256 credential (the gRPC edge checks passwords with it)"
                .into(),
        ));
    }
    for (i, c) in credentials.iter().enumerate() {
        if let Some(p) = c.problem() {
            return Err(invalid(format!(
                "{} credential: {p}",
                c.mechanism.sasl_name()
            )));
        }
        if credentials[..i].iter().any(|o| o.mechanism == c.mechanism) {
            return Err(invalid(format!(
                "two {} credentials",
                c.mechanism.sasl_name()
            )));
        }
    }
    let exists = image.users().contains_key(name);
    if exists && create_only {
        return Ok(ControllerResult {
            records: Vec::new(),
            response: false,
        });
    }
    if !exists && image.users().len() >= MAX_USERS {
        return Err(invalid(format!(
            "the cluster holds {MAX_USERS} users, the most it may"
        )));
    }
    Ok(ControllerResult {
        records: vec![Record::UpsertUser {
            name: name.to_owned(),
            credentials,
            create_only,
        }],
        response: !exists,
    })
}

/// Deletes user `name` (its ACLs stay, as in Kafka).
pub fn delete_user(
    image: &MetadataImage,
    name: &str,
) -> Result<ControllerResult<()>, ControllerError> {
    if !image.users().contains_key(name) {
        return Err(ControllerError::UnknownUser {
            name: name.to_owned(),
        });
    }
    Ok(ControllerResult {
        records: vec![Record::DeleteUser {
            name: name.to_owned(),
        }],
        response: (),
    })
}

/// Adds `acls` (those already there change nothing).
pub fn create_acls(
    image: &MetadataImage,
    acls: Vec<Acl>,
) -> Result<ControllerResult<()>, ControllerError> {
    if acls.is_empty() {
        return Err(ControllerError::InvalidRequest("no ACL given".into()));
    }
    for a in &acls {
        if let Some(p) = a.problem() {
            return Err(ControllerError::InvalidRequest(format!("invalid ACL: {p}")));
        }
    }
    let new: std::collections::BTreeSet<&Acl> =
        acls.iter().filter(|a| !image.acls().contains(a)).collect();
    if image.acls().len() + new.len() > MAX_ACLS {
        return Err(ControllerError::InvalidRequest(format!(
            "the cluster holds {} ACLs; at most {MAX_ACLS}",
            image.acls().len()
        )));
    }
    let records = if new.is_empty() {
        Vec::new()
    } else {
        vec![Record::CreateAcls {
            acls: new.into_iter().cloned().collect(),
        }]
    };
    Ok(ControllerResult {
        records,
        response: (),
    })
}

/// Deletes every ACL `filter` matches; the answer lists them.
pub fn delete_acls(
    image: &MetadataImage,
    filter: &AclFilter,
) -> Result<ControllerResult<Vec<Acl>>, ControllerError> {
    let gone: Vec<Acl> = image
        .acls()
        .iter()
        .filter(|a| filter.matches(a))
        .cloned()
        .collect();
    let records = if gone.is_empty() {
        Vec::new()
    } else {
        vec![Record::DeleteAcls { acls: gone.clone() }]
    };
    Ok(ControllerResult {
        records,
        response: gone,
    })
}

/// Refuses a broker request made by an incarnation other than the
/// registered one (or by a broker that never registered).
pub fn check_broker_epoch(
    image: &MetadataImage,
    broker: BrokerId,
    broker_epoch: u64,
) -> Result<(), ControllerError> {
    match image.broker(broker) {
        Some(b) if b.broker_epoch == broker_epoch => Ok(()),
        Some(b) => Err(ControllerError::StaleBrokerEpoch {
            broker,
            request_epoch: broker_epoch,
            current_epoch: b.broker_epoch,
        }),
        None => Err(ControllerError::BrokerNotAvailable { broker }),
    }
}

/// Producer ids per block (Kafka's, KIP-730): a broker asks again only
/// after handing out this many.
pub const PRODUCER_ID_BLOCK_SIZE: u64 = 1_000;

/// A block of producer ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    /// The first id.
    pub first_id: u64,
    /// How many.
    pub count: u64,
}

/// Gives broker `broker` (at `broker_epoch`) the next block of producer ids
/// (KIP-730's AllocateProducerIds). Ids stay below `i64::MAX`: Kafka's batch
/// header holds them as a signed 64-bit number, `-1` meaning none.
pub fn allocate_producer_ids(
    image: &MetadataImage,
    broker: BrokerId,
    broker_epoch: u64,
) -> Result<ControllerResult<ProducerIdBlock>, ControllerError> {
    check_broker_epoch(image, broker, broker_epoch)?;
    let first_id = image.next_producer_id();
    if first_id + PRODUCER_ID_BLOCK_SIZE > i64::MAX as u64 {
        return Err(ControllerError::InvalidRequest(
            "producer ids are exhausted".into(),
        ));
    }
    let block = ProducerIdBlock {
        first_id,
        count: PRODUCER_ID_BLOCK_SIZE,
    };
    Ok(ControllerResult {
        records: vec![Record::AllocateProducerIds {
            broker_id: broker,
            broker_epoch,
            first_id,
            count: block.count,
        }],
        response: block,
    })
}
