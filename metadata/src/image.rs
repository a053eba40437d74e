//! The metadata image: the replicated state of the cluster's metadata, and
//! [`MetadataImage::apply`], the only way it changes.
//!
//! Why: every node keeps the same image by replaying the same records in the
//! same order (the Raft log). Brokers read it to know what they lead and
//! follow; the active controller reads it to decide what to write next. The
//! image, serialized, is the Raft snapshot.
//!
//! ```text
//!   Raft log:  r1  r2  r3 ...            (committed records, in order)
//!               |   |   |
//!               v   v   v
//!   image.apply(r) --> ApplyOutcome::{Applied, Skipped(reason)}
//!               |
//!   image: brokers{id -> registration}, topics{name -> partitions}, offset
//! ```
//!
//! Invariants (all checked by [`MetadataImage::invariant_violations`]):
//! - `apply` never panics and is deterministic: no clock, no randomness, and
//!   only ordered maps, so two nodes that replayed the same records hold equal
//!   images and serialize them to equal bytes.
//! - `metadata_offset` counts the records replayed, skipped ones included, so
//!   it advances in lock step with the log on every node.
//! - Broker epochs are unique and increasing: every registration's epoch is
//!   below `next_broker_epoch`, and a registration is accepted only with an
//!   epoch at or above it.
//! - Topics are keyed by their name; topic ids are non-zero and unique.
//! - Partition `i` of a topic is at index `i`; every partition has at least
//!   one replica, all distinct registered brokers, the same count in every
//!   partition of the topic; its ISR is a subset of its replicas, empty only
//!   while the partition is offline; its ELR is a subset of its replicas
//!   disjoint from the ISR; its leader, if any, is in the ISR.
//! - A broker registered `catching_up` is fenced until its first unfence.
//! - A record that no longer fits (a stale epoch, a deleted topic, a state
//!   that would break the rules above) leaves the image unchanged except for
//!   the offset, and says why in [`ApplyOutcome::Skipped`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, TopicConfig};
use crate::ids::{BrokerId, TopicId, TopicPartition};
use crate::record::Record;
use crate::security::{Acl, ScramCredential, ScramMechanism, MAX_ACLS, MAX_USERS};

/// The replicated metadata state. Fields are private so that
/// [`MetadataImage::apply`] stays the only way to change it; read it through
/// the accessors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// The cluster this image belongs to, fixed when the cluster is formed.
    /// Part of every topic id's derivation.
    cluster_id: String,
    /// How many records have been replayed into this image.
    metadata_offset: u64,
    /// The smallest broker epoch a new registration may carry; one past the
    /// largest ever registered, so epochs never repeat even across
    /// re-registrations.
    next_broker_epoch: u64,
    /// Every broker that ever registered, by id (brokers are never removed;
    /// a dead broker is fenced).
    brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// Every live topic, by name.
    topics: BTreeMap<String, TopicImage>,
    /// Users' SCRAM credentials, by name (never passwords).
    #[serde(default)]
    users: BTreeMap<String, Vec<ScramCredential>>,
    /// Every ACL.
    #[serde(default)]
    acls: BTreeSet<Acl>,
    /// The first producer id no broker has been given yet (KIP-730): each
    /// block handed out starts here, so ids never repeat.
    #[serde(default)]
    next_producer_id: u64,
}

/// What the image knows about one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// The broker's id (also its key in the image).
    pub id: BrokerId,
    /// Where clients and other brokers reach it (`host:port`).
    pub address: String,
    /// Its failure domain, used to spread replicas; `None` if not configured.
    pub rack: Option<String>,
    /// The epoch of its current incarnation; requests from an older one are
    /// refused as stale.
    pub broker_epoch: u64,
    /// Whether its lease expired, or it is still catching up. A fenced
    /// broker leads nothing and is in no ISR, except as the last member of
    /// an offline partition's ISR.
    pub fenced: bool,
    /// Registered, but not yet caught up with the metadata log as of its
    /// registration (KIP-631): fenced, and shown as "catching up".
    #[serde(default)]
    pub catching_up: bool,
    /// The metadata offset of the registration record: the broker is
    /// caught up once it has applied this far.
    #[serde(default)]
    pub registered_offset: u64,
    /// The id of its log directory (KIP-858); `None` for registrations
    /// written before directory ids existed.
    #[serde(default)]
    pub directory_id: Option<String>,
    /// Where Kafka clients reach it; `None` if it has no Kafka listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_address: Option<String>,
}

impl BrokerRegistration {
    /// `live`, `catching-up` or `fenced`, for operators.
    pub fn state(&self) -> &'static str {
        match (self.fenced, self.catching_up) {
            (false, _) => "live",
            (true, true) => "catching-up",
            (true, false) => "fenced",
        }
    }
}

/// What the image knows about one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    /// The topic's id; changes if the topic is deleted and re-created.
    pub id: TopicId,
    /// The topic's name (also its key in the image).
    pub name: String,
    /// Its configuration.
    pub config: TopicConfig,
    /// Its partitions; partition `i` is at index `i`.
    pub partitions: Vec<PartitionImage>,
}

impl TopicImage {
    /// How many replicas each partition has (0 only for a malformed image).
    pub fn replication_factor(&self) -> u32 {
        self.partitions
            .first()
            .map_or(0, |p| u32::try_from(p.replicas.len()).unwrap_or(u32::MAX))
    }

    /// Partition `partition`, if the topic has it.
    pub fn partition(&self, partition: u32) -> Option<&PartitionImage> {
        self.partitions.get(partition as usize)
    }

    /// How many partitions the topic has.
    pub fn partition_count(&self) -> u32 {
        u32::try_from(self.partitions.len()).unwrap_or(u32::MAX)
    }
}

/// The replication state of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// The partition's index within its topic.
    pub partition: u32,
    /// The brokers holding a replica; the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas: a subset of `replicas` holding the leader.
    /// Empty only while the partition is offline because the last replicas
    /// known to hold every committed record lost their storage.
    pub isr: Vec<BrokerId>,
    /// Eligible leader replicas (KIP-966): replicas outside the ISR known
    /// to hold every record committed with acks=all. They left the ISR while
    /// it fell below `min.insync.replicas`, so nothing acks=all could be
    /// acknowledged without them since. Elected when no ISR member is live.
    #[serde(default)]
    pub elr: Vec<BrokerId>,
    /// The broker accepting writes; `None` while the partition is offline.
    pub leader: Option<BrokerId>,
    /// Bumped every time leadership changes hands (or the leader restarts),
    /// so a deposed leader's requests can be recognised and refused.
    pub leader_epoch: u32,
    /// Bumped on every change to this partition: the version that
    /// AlterPartition compares and sets.
    pub partition_epoch: u32,
}

impl PartitionImage {
    /// A new partition (of a new topic, or added to one): the first replica
    /// leads, every replica is in sync, both epochs are 0.
    fn created(partition: u32, replicas: &[BrokerId]) -> Self {
        Self {
            partition,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            elr: Vec::new(),
            leader: replicas.first().copied(),
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    /// The preferred leader: the first replica.
    pub fn preferred_leader(&self) -> Option<BrokerId> {
        self.replicas.first().copied()
    }

    /// Whether the partition has no leader (no write or read is served).
    pub fn is_offline(&self) -> bool {
        self.leader.is_none()
    }

    /// Whether `broker` holds a replica.
    pub fn is_replica(&self, broker: BrokerId) -> bool {
        self.replicas.contains(&broker)
    }

    /// Whether `broker` is in the ISR.
    pub fn is_in_isr(&self, broker: BrokerId) -> bool {
        self.isr.contains(&broker)
    }

    /// Whether `broker` is known to hold every committed record: in the ISR
    /// or in the ELR.
    pub fn is_eligible(&self, broker: BrokerId) -> bool {
        self.isr.contains(&broker) || self.elr.contains(&broker)
    }
}

/// What [`MetadataImage::apply`] did with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum ApplyOutcome {
    /// The image changed as the record says.
    Applied,
    /// The record no longer fits the image and changed nothing but the
    /// metadata offset. Not an error of the log: a decision raced another.
    Skipped(SkipReason),
}

impl ApplyOutcome {
    /// Whether the record was applied.
    pub fn is_applied(&self) -> bool {
        matches!(self, ApplyOutcome::Applied)
    }
}

/// Why a record was skipped; for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// A producer id block that does not start at the next free id.
    #[error("producer id block from {first_id}: the next free id is {next_free}")]
    ProducerIdBlock {
        /// Where the record's block starts.
        first_id: u64,
        /// The image's next free id.
        next_free: u64,
    },
    /// The record names a broker that never registered.
    #[error("broker {broker} is not registered")]
    UnknownBroker {
        /// The broker named by the record.
        broker: BrokerId,
    },
    /// The record is for another incarnation of the broker.
    #[error("broker {broker} is registered with epoch {current_epoch}, not {record_epoch}")]
    BrokerEpochMismatch {
        /// The broker named by the record.
        broker: BrokerId,
        /// The epoch the record carries.
        record_epoch: u64,
        /// The epoch of the current registration.
        current_epoch: u64,
    },
    /// A registration whose epoch was already handed out.
    #[error("registration of broker {broker} with epoch {record_epoch} is stale: epochs from {next_broker_epoch} on are still free")]
    StaleRegistration {
        /// The broker named by the record.
        broker: BrokerId,
        /// The epoch the record carries.
        record_epoch: u64,
        /// The smallest epoch a registration may still carry.
        next_broker_epoch: u64,
    },
    /// A user of that name exists (and the record only creates).
    #[error("user '{name}' already exists")]
    UserExists {
        /// The user.
        name: String,
    },
    /// No user of that name.
    #[error("no user '{name}'")]
    UnknownUser {
        /// The user.
        name: String,
    },
    /// A bound on the image's size.
    #[error("at most {max} {what}")]
    TooMany {
        /// Of what.
        what: &'static str,
        /// The bound.
        max: usize,
    },
    /// A topic of that name already exists.
    #[error("topic '{name}' already exists")]
    TopicExists {
        /// The topic's name.
        name: String,
    },
    /// The topic id is zero or held by another topic.
    #[error("topic id {topic_id} cannot be given to topic '{name}': {reason}")]
    UnusableTopicId {
        /// The id the record carries.
        topic_id: TopicId,
        /// The topic being created.
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// No topic of that name (it was deleted, or never existed).
    #[error("topic '{name}' does not exist")]
    UnknownTopic {
        /// The topic's name.
        name: String,
    },
    /// The topic was deleted and re-created since the record was decided.
    #[error("topic '{name}' has id {current_id}, not {record_id}")]
    TopicIdMismatch {
        /// The topic's name.
        name: String,
        /// The id the record carries.
        record_id: TopicId,
        /// The id of the topic now holding the name.
        current_id: TopicId,
    },
    /// The topic has no such partition.
    #[error("topic '{topic}' has no partition {partition}")]
    UnknownPartition {
        /// The topic's name.
        topic: String,
        /// The partition named by the record.
        partition: u32,
    },
    /// The change was decided on another version of the partition.
    #[error("partition {topic}-{partition} is at partition epoch {current_epoch}; a change to epoch {record_epoch} does not follow it")]
    PartitionEpochMismatch {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: u32,
        /// The partition epoch the record carries.
        record_epoch: u32,
        /// The partition's current partition epoch.
        current_epoch: u32,
    },
    /// The new partition state breaks an invariant of the image.
    #[error("invalid new state for partition {topic}-{partition}: {reason}")]
    InvalidPartitionState {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: u32,
        /// Which rule it breaks.
        reason: String,
    },
    /// The replica assignment of a new topic breaks an invariant.
    #[error("invalid replica assignment for topic '{name}': {reason}")]
    InvalidAssignment {
        /// The topic being created.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The configuration is invalid for the topic.
    #[error("invalid config for topic '{name}': {source}")]
    InvalidConfig {
        /// The topic's name.
        name: String,
        /// What is wrong with it.
        #[source]
        source: ConfigError,
    },
}

impl MetadataImage {
    /// The empty image of cluster `cluster_id`: no brokers, no topics, offset
    /// 0, and broker epochs starting at 1 (0 is never handed out).
    pub fn new(cluster_id: impl Into<String>) -> Self {
        MetadataImage {
            cluster_id: cluster_id.into(),
            metadata_offset: 0,
            next_broker_epoch: 1,
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            users: BTreeMap::new(),
            acls: BTreeSet::new(),
            next_producer_id: 0,
        }
    }

    /// Every user's credentials, by name.
    pub fn users(&self) -> &BTreeMap<String, Vec<ScramCredential>> {
        &self.users
    }

    /// User `name`'s credential for `mechanism`.
    pub fn credential(&self, name: &str, mechanism: ScramMechanism) -> Option<&ScramCredential> {
        self.users
            .get(name)?
            .iter()
            .find(|c| c.mechanism == mechanism)
    }

    /// Every ACL.
    pub fn acls(&self) -> &BTreeSet<Acl> {
        &self.acls
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// How many records have been replayed into this image.
    pub fn metadata_offset(&self) -> u64 {
        self.metadata_offset
    }

    /// The epoch the next broker registration will get.
    pub fn next_broker_epoch(&self) -> u64 {
        self.next_broker_epoch
    }

    /// The first producer id not yet given to any broker.
    pub fn next_producer_id(&self) -> u64 {
        self.next_producer_id
    }

    /// Every registered broker, by id.
    pub fn brokers(&self) -> &BTreeMap<BrokerId, BrokerRegistration> {
        &self.brokers
    }

    /// Broker `id`'s registration.
    pub fn broker(&self, id: BrokerId) -> Option<&BrokerRegistration> {
        self.brokers.get(&id)
    }

    /// Whether broker `id` is registered and not fenced.
    pub fn is_live(&self, id: BrokerId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// The unfenced brokers, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> + '_ {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// The ids of the unfenced brokers, ascending.
    pub fn live_broker_ids(&self) -> Vec<BrokerId> {
        self.live_brokers().map(|b| b.id).collect()
    }

    /// Every topic, by name.
    pub fn topics(&self) -> &BTreeMap<String, TopicImage> {
        &self.topics
    }

    /// Topic `name`.
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    /// The topic with id `id` (a scan: ids are not indexed).
    pub fn topic_by_id(&self, id: TopicId) -> Option<&TopicImage> {
        self.topics.values().find(|t| t.id == id)
    }

    /// Partition `partition` of topic `topic`.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionImage> {
        self.topic(topic)?.partition(partition)
    }

    /// Every partition of every topic, ordered by topic name then index.
    pub fn partitions(&self) -> impl Iterator<Item = (&TopicImage, &PartitionImage)> + '_ {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
    }

    /// How many partitions all topics have together.
    pub fn partition_count(&self) -> u64 {
        self.topics
            .values()
            .map(|t| t.partitions.len() as u64)
            .sum()
    }

    /// The partitions `broker` leads.
    pub fn partitions_led_by(&self, broker: BrokerId) -> Vec<TopicPartition> {
        self.partitions_where(|p| p.leader == Some(broker))
    }

    /// The partitions `broker` holds a replica of.
    pub fn partitions_replicated_on(&self, broker: BrokerId) -> Vec<TopicPartition> {
        self.partitions_where(|p| p.is_replica(broker))
    }

    /// The partitions whose ISR includes `broker`.
    pub fn partitions_in_isr_of(&self, broker: BrokerId) -> Vec<TopicPartition> {
        self.partitions_where(|p| p.is_in_isr(broker))
    }

    /// The partitions without a leader.
    pub fn offline_partitions(&self) -> Vec<TopicPartition> {
        self.partitions_where(PartitionImage::is_offline)
    }

    fn partitions_where(&self, predicate: impl Fn(&PartitionImage) -> bool) -> Vec<TopicPartition> {
        self.partitions()
            .filter(|(_, p)| predicate(p))
            .map(|(t, p)| TopicPartition::new(t.name.clone(), p.partition))
            .collect()
    }

    /// Replays one record. The only way the image changes. Never panics; a
    /// record that no longer fits is skipped (see the module header). The
    /// metadata offset advances either way.
    pub fn apply(&mut self, record: &Record) -> ApplyOutcome {
        self.metadata_offset = self.metadata_offset.saturating_add(1);
        match self.replay(record) {
            Ok(()) => ApplyOutcome::Applied,
            Err(reason) => ApplyOutcome::Skipped(reason),
        }
    }

    /// Checks the record against the image, then changes the image. Every
    /// check comes before the first change, so a skipped record changes
    /// nothing.
    fn replay(&mut self, record: &Record) -> Result<(), SkipReason> {
        match record {
            Record::RegisterBroker {
                id,
                address,
                rack,
                broker_epoch,
                directory_id,
                catching_up,
                kafka_address,
            } => {
                // An epoch of u64::MAX would leave no room for the next one.
                let next_broker_epoch = broker_epoch
                    .checked_add(1)
                    .filter(|_| *broker_epoch >= self.next_broker_epoch)
                    .ok_or(SkipReason::StaleRegistration {
                        broker: *id,
                        record_epoch: *broker_epoch,
                        next_broker_epoch: self.next_broker_epoch,
                    })?;
                self.brokers.insert(
                    *id,
                    BrokerRegistration {
                        id: *id,
                        address: address.clone(),
                        rack: rack.clone(),
                        broker_epoch: *broker_epoch,
                        fenced: *catching_up,
                        catching_up: *catching_up,
                        registered_offset: self.metadata_offset,
                        directory_id: directory_id.clone(),
                        kafka_address: kafka_address.clone(),
                    },
                );
                self.next_broker_epoch = next_broker_epoch;
                Ok(())
            }
            Record::FenceBroker { id, broker_epoch } => self.set_fenced(*id, *broker_epoch, true),
            Record::UnfenceBroker { id, broker_epoch } => {
                self.set_fenced(*id, *broker_epoch, false)
            }
            Record::CreateTopic {
                topic_id,
                name,
                config,
                assignments,
            } => {
                self.check_new_topic(*topic_id, name, config, assignments)?;
                let partitions = (0u32..)
                    .zip(assignments)
                    .map(|(partition, replicas)| PartitionImage::created(partition, replicas))
                    .collect();
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        id: *topic_id,
                        name: name.clone(),
                        config: config.clone(),
                        partitions,
                    },
                );
                Ok(())
            }
            Record::CreatePartitions {
                name,
                topic_id,
                assignments,
            } => {
                let problem = self.assignment_problem(assignments);
                let topic = self.topic_mut(name, *topic_id)?;
                let invalid = |reason: String| SkipReason::InvalidAssignment {
                    name: name.clone(),
                    reason,
                };
                if let Some(problem) = problem {
                    return Err(invalid(problem));
                }
                let rf = topic.partitions.first().map_or(0, |p| p.replicas.len());
                if assignments.iter().any(|r| r.len() != rf) {
                    return Err(invalid(format!(
                        "new partitions must have the topic's {rf} replicas"
                    )));
                }
                let first = topic.partitions.len();
                let total = first.saturating_add(assignments.len());
                let Ok(total) = u32::try_from(total) else {
                    return Err(invalid(format!("{total} partitions are too many")));
                };
                for (partition, replicas) in (first as u32..total).zip(assignments) {
                    topic
                        .partitions
                        .push(PartitionImage::created(partition, replicas));
                }
                Ok(())
            }
            Record::DeleteTopic { name, topic_id } => {
                self.topic_mut(name, *topic_id)?;
                self.topics.remove(name);
                Ok(())
            }
            Record::PartitionChange {
                topic,
                topic_id,
                partition,
                leader,
                isr,
                elr,
                leader_epoch,
                partition_epoch,
            } => {
                let topic_image = self.topic_mut(topic, *topic_id)?;
                let current = topic_image
                    .partitions
                    .get_mut(*partition as usize)
                    .ok_or_else(|| SkipReason::UnknownPartition {
                        topic: topic.clone(),
                        partition: *partition,
                    })?;
                if current.partition_epoch.checked_add(1) != Some(*partition_epoch) {
                    return Err(SkipReason::PartitionEpochMismatch {
                        topic: topic.clone(),
                        partition: *partition,
                        record_epoch: *partition_epoch,
                        current_epoch: current.partition_epoch,
                    });
                }
                let invalid = |reason: String| SkipReason::InvalidPartitionState {
                    topic: topic.clone(),
                    partition: *partition,
                    reason,
                };
                if let Some(problem) = partition_state_problem(&current.replicas, *leader, isr, elr)
                {
                    return Err(invalid(problem));
                }
                if *leader_epoch < current.leader_epoch {
                    return Err(invalid(format!(
                        "leader epoch {leader_epoch} is older than the current {}",
                        current.leader_epoch
                    )));
                }
                if *leader != current.leader && *leader_epoch == current.leader_epoch {
                    return Err(invalid(format!(
                        "the leader changes but the leader epoch stays {leader_epoch}"
                    )));
                }
                current.leader = *leader;
                current.isr.clone_from(isr);
                current.elr.clone_from(elr);
                current.leader_epoch = *leader_epoch;
                current.partition_epoch = *partition_epoch;
                Ok(())
            }
            Record::AlterTopicConfig {
                name,
                topic_id,
                config,
            } => {
                let topic_image = self.topic_mut(name, *topic_id)?;
                config
                    .validate(topic_image.replication_factor())
                    .map_err(|source| SkipReason::InvalidConfig {
                        name: name.clone(),
                        source,
                    })?;
                topic_image.config = config.clone();
                Ok(())
            }
            Record::UpsertUser {
                name,
                credentials,
                create_only,
            } => {
                let exists = self.users.contains_key(name);
                if exists && *create_only {
                    return Err(SkipReason::UserExists { name: name.clone() });
                }
                if !exists && self.users.len() >= MAX_USERS {
                    return Err(SkipReason::TooMany {
                        what: "users",
                        max: MAX_USERS,
                    });
                }
                self.users.insert(name.clone(), credentials.clone());
                Ok(())
            }
            Record::DeleteUser { name } => self
                .users
                .remove(name)
                .map(|_| ())
                .ok_or(SkipReason::UnknownUser { name: name.clone() }),
            Record::CreateAcls { acls } => {
                let new = acls.iter().filter(|a| !self.acls.contains(a)).count();
                if self.acls.len() + new > MAX_ACLS {
                    return Err(SkipReason::TooMany {
                        what: "ACLs",
                        max: MAX_ACLS,
                    });
                }
                self.acls.extend(acls.iter().cloned());
                Ok(())
            }
            Record::DeleteAcls { acls } => {
                for a in acls {
                    self.acls.remove(a);
                }
                Ok(())
            }
            Record::AllocateProducerIds {
                broker_id,
                broker_epoch,
                first_id,
                count,
            } => {
                let registration = self
                    .brokers
                    .get(broker_id)
                    .ok_or(SkipReason::UnknownBroker { broker: *broker_id })?;
                if registration.broker_epoch != *broker_epoch {
                    return Err(SkipReason::BrokerEpochMismatch {
                        broker: *broker_id,
                        record_epoch: *broker_epoch,
                        current_epoch: registration.broker_epoch,
                    });
                }
                // A block that does not start at the next free id could
                // overlap one already given out.
                let end = first_id
                    .checked_add(*count)
                    .filter(|_| *first_id == self.next_producer_id && *count > 0)
                    .ok_or(SkipReason::ProducerIdBlock {
                        first_id: *first_id,
                        next_free: self.next_producer_id,
                    })?;
                self.next_producer_id = end;
                Ok(())
            }
        }
    }

    fn set_fenced(
        &mut self,
        id: BrokerId,
        broker_epoch: u64,
        fenced: bool,
    ) -> Result<(), SkipReason> {
        let registration = self
            .brokers
            .get_mut(&id)
            .ok_or(SkipReason::UnknownBroker { broker: id })?;
        if registration.broker_epoch != broker_epoch {
            return Err(SkipReason::BrokerEpochMismatch {
                broker: id,
                record_epoch: broker_epoch,
                current_epoch: registration.broker_epoch,
            });
        }
        registration.fenced = fenced;
        // Either way the incarnation is no longer catching up: it caught up
        // (unfenced) or its lease ran out first (fenced for good).
        registration.catching_up = false;
        Ok(())
    }

    /// Topic `name`, if it still has id `topic_id`.
    fn topic_mut(&mut self, name: &str, topic_id: TopicId) -> Result<&mut TopicImage, SkipReason> {
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| SkipReason::UnknownTopic {
                name: name.to_owned(),
            })?;
        if topic.id != topic_id {
            return Err(SkipReason::TopicIdMismatch {
                name: name.to_owned(),
                record_id: topic_id,
                current_id: topic.id,
            });
        }
        Ok(topic)
    }

    fn check_new_topic(
        &self,
        topic_id: TopicId,
        name: &str,
        config: &TopicConfig,
        assignments: &[Vec<BrokerId>],
    ) -> Result<(), SkipReason> {
        if self.topics.contains_key(name) {
            return Err(SkipReason::TopicExists {
                name: name.to_owned(),
            });
        }
        let unusable_id = |reason: String| SkipReason::UnusableTopicId {
            topic_id,
            name: name.to_owned(),
            reason,
        };
        if topic_id.is_zero() {
            return Err(unusable_id("the zero id is reserved".to_owned()));
        }
        if let Some(holder) = self.topic_by_id(topic_id) {
            return Err(unusable_id(format!("topic '{}' has it", holder.name)));
        }
        let invalid = |reason: String| SkipReason::InvalidAssignment {
            name: name.to_owned(),
            reason,
        };
        if let Some(problem) = self.assignment_problem(assignments) {
            return Err(invalid(problem));
        }
        let replication_factor = assignments
            .first()
            .map_or(0, |r| u32::try_from(r.len()).unwrap_or(u32::MAX));
        config
            .validate(replication_factor)
            .map_err(|source| SkipReason::InvalidConfig {
                name: name.to_owned(),
                source,
            })
    }

    /// What is wrong with a topic's replica assignment, if anything.
    fn assignment_problem(&self, assignments: &[Vec<BrokerId>]) -> Option<String> {
        let Some(first) = assignments.first() else {
            return Some("a topic needs at least one partition".to_owned());
        };
        if u32::try_from(assignments.len()).is_err() {
            return Some(format!("{} partitions are too many", assignments.len()));
        }
        for (partition, replicas) in assignments.iter().enumerate() {
            if replicas.is_empty() {
                return Some(format!("partition {partition} has no replicas"));
            }
            if replicas.len() != first.len() {
                return Some(format!(
                    "partition {partition} has {} replicas, partition 0 has {}",
                    replicas.len(),
                    first.len()
                ));
            }
            if let Some(broker) = first_duplicate(replicas) {
                return Some(format!("partition {partition} lists broker {broker} twice"));
            }
            if let Some(broker) = replicas.iter().find(|b| !self.brokers.contains_key(b)) {
                return Some(format!(
                    "partition {partition} is assigned to broker {broker}, which is not registered"
                ));
            }
        }
        None
    }

    /// Every broken invariant of the module header, described; empty for a
    /// healthy image. For tests, and for a node to check a snapshot it is
    /// about to install.
    pub fn invariant_violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        let mut broker_epochs = BTreeSet::new();
        for (id, broker) in &self.brokers {
            if *id != broker.id {
                violations.push(format!("broker key {id} holds broker {}", broker.id));
            }
            if broker.broker_epoch >= self.next_broker_epoch {
                violations.push(format!(
                    "broker {id} has epoch {}, not below the next epoch {}",
                    broker.broker_epoch, self.next_broker_epoch
                ));
            }
            if !broker_epochs.insert(broker.broker_epoch) {
                violations.push(format!(
                    "broker epoch {} is used twice",
                    broker.broker_epoch
                ));
            }
        }
        let mut topic_ids = BTreeSet::new();
        for (name, topic) in &self.topics {
            if *name != topic.name {
                violations.push(format!("topic key '{name}' holds topic '{}'", topic.name));
            }
            if topic.id.is_zero() {
                violations.push(format!("topic '{name}' has the reserved zero id"));
            }
            if !topic_ids.insert(topic.id) {
                violations.push(format!("topic id {} is used twice", topic.id));
            }
            let assignments: Vec<Vec<BrokerId>> = topic
                .partitions
                .iter()
                .map(|p| p.replicas.clone())
                .collect();
            if let Some(problem) = self.assignment_problem(&assignments) {
                violations.push(format!("topic '{name}': {problem}"));
            }
            for (index, partition) in topic.partitions.iter().enumerate() {
                if partition.partition as usize != index {
                    violations.push(format!(
                        "topic '{name}' holds partition {} at index {index}",
                        partition.partition
                    ));
                }
                if let Some(problem) = partition_state_problem(
                    &partition.replicas,
                    partition.leader,
                    &partition.isr,
                    &partition.elr,
                ) {
                    violations.push(format!("partition {name}-{index}: {problem}"));
                }
            }
            if let Err(error) = topic.config.validate(topic.replication_factor()) {
                violations.push(format!("topic '{name}': {error}"));
            }
        }
        violations
    }
}

/// What is wrong with a partition's leader, ISR and ELR, if anything.
fn partition_state_problem(
    replicas: &[BrokerId],
    leader: Option<BrokerId>,
    isr: &[BrokerId],
    elr: &[BrokerId],
) -> Option<String> {
    if isr.is_empty() && leader.is_some() {
        return Some("the ISR is empty".to_owned());
    }
    if let Some(broker) = first_duplicate(isr) {
        return Some(format!("the ISR lists broker {broker} twice"));
    }
    if let Some(broker) = isr.iter().find(|b| !replicas.contains(b)) {
        return Some(format!("ISR member {broker} is not a replica"));
    }
    if let Some(broker) = first_duplicate(elr) {
        return Some(format!("the ELR lists broker {broker} twice"));
    }
    if let Some(broker) = elr.iter().find(|b| !replicas.contains(b)) {
        return Some(format!("ELR member {broker} is not a replica"));
    }
    if let Some(broker) = elr.iter().find(|b| isr.contains(b)) {
        return Some(format!("broker {broker} is in both the ISR and the ELR"));
    }
    match leader {
        Some(leader) if !isr.contains(&leader) => {
            Some(format!("leader {leader} is not in the ISR"))
        }
        _ => None,
    }
}

/// The first broker listed twice, if any.
pub(crate) fn first_duplicate(brokers: &[BrokerId]) -> Option<BrokerId> {
    let mut seen = BTreeSet::new();
    brokers.iter().copied().find(|b| !seen.insert(*b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CleanupPolicy;

    fn b(id: u64) -> BrokerId {
        BrokerId(id)
    }

    fn register(id: u64, broker_epoch: u64) -> Record {
        Record::RegisterBroker {
            id: b(id),
            address: format!("node{id}:9092"),
            rack: None,
            broker_epoch,
            directory_id: None,
            catching_up: false,
            kafka_address: None,
        }
    }

    const ORDERS_ID: TopicId = TopicId::from_u128(0xabc);

    fn create_orders(assignments: Vec<Vec<BrokerId>>) -> Record {
        Record::CreateTopic {
            topic_id: ORDERS_ID,
            name: "orders".to_owned(),
            config: TopicConfig::default(),
            assignments,
        }
    }

    fn change(
        partition: u32,
        leader: Option<u64>,
        isr: &[u64],
        leader_epoch: u32,
        partition_epoch: u32,
    ) -> Record {
        Record::PartitionChange {
            topic: "orders".to_owned(),
            topic_id: ORDERS_ID,
            partition,
            leader: leader.map(BrokerId),
            isr: isr.iter().copied().map(BrokerId).collect(),
            elr: Vec::new(),
            leader_epoch,
            partition_epoch,
        }
    }

    #[track_caller]
    fn apply_ok(image: &mut MetadataImage, record: Record) {
        let outcome = image.apply(&record);
        assert_eq!(outcome, ApplyOutcome::Applied, "{record:?}");
        assert_eq!(image.invariant_violations(), Vec::<String>::new());
    }

    #[track_caller]
    fn apply_skipped(image: &mut MetadataImage, record: Record) -> SkipReason {
        let before = image.clone();
        match image.apply(&record) {
            ApplyOutcome::Skipped(reason) => {
                assert_eq!(image.metadata_offset(), before.metadata_offset() + 1);
                let mut unchanged = before;
                unchanged.metadata_offset = image.metadata_offset;
                assert_eq!(*image, unchanged, "a skipped record changed the image");
                reason
            }
            ApplyOutcome::Applied => panic!("{record:?} should have been skipped"),
        }
    }

    /// Three brokers (epochs 1, 2, 3) and topic `orders` with two partitions
    /// on [1,2,3] and [2,3,1].
    fn three_brokers_and_orders() -> MetadataImage {
        let mut image = MetadataImage::new("test-cluster");
        for id in 1..=3 {
            apply_ok(&mut image, register(id, id));
        }
        apply_ok(
            &mut image,
            create_orders(vec![vec![b(1), b(2), b(3)], vec![b(2), b(3), b(1)]]),
        );
        image
    }

    #[test]
    fn new_image_is_empty() {
        let image = MetadataImage::new("c1");
        assert_eq!(image.cluster_id(), "c1");
        assert_eq!(image.metadata_offset(), 0);
        assert_eq!(image.next_broker_epoch(), 1);
        assert!(image.brokers().is_empty());
        assert!(image.topics().is_empty());
        assert!(image.invariant_violations().is_empty());
    }

    #[test]
    fn register_broker_adds_an_unfenced_broker_and_advances_epochs() {
        let mut image = MetadataImage::new("c");
        apply_ok(&mut image, register(7, 1));
        let broker = image.broker(b(7)).unwrap();
        assert_eq!(broker.address, "node7:9092");
        assert_eq!(broker.broker_epoch, 1);
        assert!(!broker.fenced);
        assert_eq!(image.next_broker_epoch(), 2);
        assert_eq!(image.metadata_offset(), 1);
        // A later epoch may skip numbers; the next epoch follows it.
        apply_ok(&mut image, register(8, 10));
        assert_eq!(image.next_broker_epoch(), 11);
    }

    #[test]
    fn re_registration_replaces_the_old_registration() {
        let mut image = MetadataImage::new("c");
        apply_ok(&mut image, register(7, 1));
        apply_ok(
            &mut image,
            Record::FenceBroker {
                id: b(7),
                broker_epoch: 1,
            },
        );
        apply_ok(
            &mut image,
            Record::RegisterBroker {
                id: b(7),
                address: "elsewhere:9092".to_owned(),
                rack: Some("r1".to_owned()),
                broker_epoch: 2,
                directory_id: None,
                catching_up: false,
                kafka_address: None,
            },
        );
        let broker = image.broker(b(7)).unwrap();
        assert_eq!(broker.address, "elsewhere:9092");
        assert_eq!(broker.rack.as_deref(), Some("r1"));
        assert_eq!(broker.broker_epoch, 2);
        assert!(!broker.fenced);
        assert_eq!(image.brokers().len(), 1);
    }

    #[test]
    fn registration_with_a_used_epoch_is_skipped() {
        let mut image = MetadataImage::new("c");
        apply_ok(&mut image, register(1, 1));
        let reason = apply_skipped(&mut image, register(2, 1));
        assert!(matches!(
            reason,
            SkipReason::StaleRegistration {
                next_broker_epoch: 2,
                ..
            }
        ));
        let reason = apply_skipped(&mut image, register(2, u64::MAX));
        assert!(matches!(reason, SkipReason::StaleRegistration { .. }));
    }

    #[test]
    fn fence_and_unfence_toggle_the_flag_for_the_current_epoch_only() {
        let mut image = MetadataImage::new("c");
        apply_ok(&mut image, register(1, 1));
        apply_ok(
            &mut image,
            Record::FenceBroker {
                id: b(1),
                broker_epoch: 1,
            },
        );
        assert!(image.broker(b(1)).unwrap().fenced);
        assert!(!image.is_live(b(1)));
        assert!(image.live_broker_ids().is_empty());
        apply_ok(
            &mut image,
            Record::UnfenceBroker {
                id: b(1),
                broker_epoch: 1,
            },
        );
        assert!(image.is_live(b(1)));

        let reason = apply_skipped(
            &mut image,
            Record::FenceBroker {
                id: b(1),
                broker_epoch: 0,
            },
        );
        assert_eq!(
            reason,
            SkipReason::BrokerEpochMismatch {
                broker: b(1),
                record_epoch: 0,
                current_epoch: 1
            }
        );
        let reason = apply_skipped(
            &mut image,
            Record::UnfenceBroker {
                id: b(9),
                broker_epoch: 1,
            },
        );
        assert_eq!(reason, SkipReason::UnknownBroker { broker: b(9) });
    }

    #[test]
    fn create_topic_starts_with_first_replica_leading_and_full_isr() {
        let image = three_brokers_and_orders();
        let topic = image.topic("orders").unwrap();
        assert_eq!(topic.id, ORDERS_ID);
        assert_eq!(topic.replication_factor(), 3);
        assert_eq!(topic.partition_count(), 2);
        let p1 = image.partition("orders", 1).unwrap();
        assert_eq!(
            *p1,
            PartitionImage {
                partition: 1,
                replicas: vec![b(2), b(3), b(1)],
                isr: vec![b(2), b(3), b(1)],
                elr: Vec::new(),
                leader: Some(b(2)),
                leader_epoch: 0,
                partition_epoch: 0,
            }
        );
        assert_eq!(
            image.topic_by_id(ORDERS_ID).map(|t| t.name.as_str()),
            Some("orders")
        );
        assert_eq!(image.partition_count(), 2);
    }

    #[test]
    fn create_topic_that_does_not_fit_is_skipped() {
        let mut image = three_brokers_and_orders();
        // Same name.
        let reason = apply_skipped(&mut image, create_orders(vec![vec![b(1)]]));
        assert!(matches!(reason, SkipReason::TopicExists { .. }));

        let new_topic =
            |topic_id: TopicId, assignments: Vec<Vec<BrokerId>>, config: TopicConfig| {
                Record::CreateTopic {
                    topic_id,
                    name: "payments".to_owned(),
                    config,
                    assignments,
                }
            };
        let fresh = TopicId::from_u128(0xdef);
        let cases = [
            new_topic(ORDERS_ID, vec![vec![b(1)]], TopicConfig::default()),
            new_topic(TopicId::ZERO, vec![vec![b(1)]], TopicConfig::default()),
            new_topic(fresh, vec![], TopicConfig::default()),
            new_topic(fresh, vec![vec![]], TopicConfig::default()),
            new_topic(fresh, vec![vec![b(1), b(1)]], TopicConfig::default()),
            new_topic(
                fresh,
                vec![vec![b(1), b(2)], vec![b(3)]],
                TopicConfig::default(),
            ),
            new_topic(fresh, vec![vec![b(1), b(9)]], TopicConfig::default()),
            new_topic(
                fresh,
                vec![vec![b(1)]],
                TopicConfig {
                    min_insync_replicas: 2,
                    ..TopicConfig::default()
                },
            ),
        ];
        for record in cases {
            let reason = apply_skipped(&mut image, record);
            assert!(!reason.to_string().is_empty());
        }
        assert!(image.topic("payments").is_none());
    }

    #[test]
    fn delete_topic_removes_it_only_with_the_matching_id() {
        let mut image = three_brokers_and_orders();
        let reason = apply_skipped(
            &mut image,
            Record::DeleteTopic {
                name: "orders".to_owned(),
                topic_id: TopicId::from_u128(1),
            },
        );
        assert!(matches!(reason, SkipReason::TopicIdMismatch { .. }));
        apply_ok(
            &mut image,
            Record::DeleteTopic {
                name: "orders".to_owned(),
                topic_id: ORDERS_ID,
            },
        );
        assert!(image.topic("orders").is_none());
        let reason = apply_skipped(
            &mut image,
            Record::DeleteTopic {
                name: "orders".to_owned(),
                topic_id: ORDERS_ID,
            },
        );
        assert!(matches!(reason, SkipReason::UnknownTopic { .. }));
    }

    #[test]
    fn partition_change_replaces_the_partition_state() {
        let mut image = three_brokers_and_orders();
        apply_ok(&mut image, change(0, Some(2), &[2, 3], 1, 1));
        let p0 = image.partition("orders", 0).unwrap();
        assert_eq!(p0.leader, Some(b(2)));
        assert_eq!(p0.isr, vec![b(2), b(3)]);
        assert_eq!((p0.leader_epoch, p0.partition_epoch), (1, 1));
        // An ISR-only change keeps the leader epoch.
        apply_ok(&mut image, change(0, Some(2), &[2, 3, 1], 1, 2));
        // Offline, keeping the last ISR member.
        apply_ok(&mut image, change(0, None, &[2], 2, 3));
        assert!(image.partition("orders", 0).unwrap().is_offline());
        assert_eq!(
            image.offline_partitions(),
            vec![TopicPartition::new("orders", 0)]
        );
        // The same leader may be re-elected with a new epoch (a restart).
        apply_ok(&mut image, change(1, Some(2), &[2, 3, 1], 1, 1));
    }

    #[test]
    fn partition_change_that_does_not_fit_is_skipped() {
        let mut image = three_brokers_and_orders();
        let cases = [
            // Stale or skipping partition epochs.
            change(0, Some(2), &[2, 3], 1, 0),
            change(0, Some(2), &[2, 3], 1, 2),
            // Broken states.
            change(0, Some(2), &[], 1, 1),
            change(0, Some(2), &[2, 2], 1, 1),
            change(0, Some(2), &[2, 4], 1, 1),
            change(0, Some(1), &[2, 3], 1, 1),
            // Leadership moves without a new leader epoch.
            change(0, Some(2), &[2, 3], 0, 1),
            // Unknown partition.
            change(5, Some(2), &[2], 1, 1),
        ];
        for record in cases {
            apply_skipped(&mut image, record);
        }
        apply_ok(&mut image, change(0, Some(2), &[2, 3], 3, 1));
        // Leader epochs never go back.
        apply_skipped(&mut image, change(0, Some(3), &[2, 3], 2, 2));
        // A change for a deleted or re-created topic.
        let wrong_id = Record::PartitionChange {
            topic: "orders".to_owned(),
            topic_id: TopicId::from_u128(5),
            partition: 0,
            leader: Some(b(2)),
            isr: vec![b(2)],
            elr: Vec::new(),
            leader_epoch: 3,
            partition_epoch: 2,
        };
        apply_skipped(&mut image, wrong_id);
    }

    #[test]
    fn alter_topic_config_replaces_a_valid_config() {
        let mut image = three_brokers_and_orders();
        let config = TopicConfig {
            min_insync_replicas: 2,
            cleanup_policy: CleanupPolicy::Compact,
            ..TopicConfig::default()
        };
        apply_ok(
            &mut image,
            Record::AlterTopicConfig {
                name: "orders".to_owned(),
                topic_id: ORDERS_ID,
                config: config.clone(),
            },
        );
        assert_eq!(image.topic("orders").unwrap().config, config);
        let too_strict = TopicConfig {
            min_insync_replicas: 4,
            ..TopicConfig::default()
        };
        let reason = apply_skipped(
            &mut image,
            Record::AlterTopicConfig {
                name: "orders".to_owned(),
                topic_id: ORDERS_ID,
                config: too_strict,
            },
        );
        assert!(matches!(reason, SkipReason::InvalidConfig { .. }));
        apply_skipped(
            &mut image,
            Record::AlterTopicConfig {
                name: "nope".to_owned(),
                topic_id: ORDERS_ID,
                config,
            },
        );
    }

    #[test]
    fn every_record_advances_the_offset_even_when_skipped() {
        let mut image = MetadataImage::new("c");
        let _ = image.apply(&Record::FenceBroker {
            id: b(1),
            broker_epoch: 1,
        });
        apply_ok(&mut image, register(1, 1));
        assert_eq!(image.metadata_offset(), 2);
    }

    #[test]
    fn queries_report_leadership_replicas_and_isr() {
        let mut image = three_brokers_and_orders();
        apply_ok(&mut image, change(1, Some(3), &[3, 1], 1, 1));
        assert_eq!(
            image.partitions_led_by(b(1)),
            vec![TopicPartition::new("orders", 0)]
        );
        assert_eq!(
            image.partitions_led_by(b(3)),
            vec![TopicPartition::new("orders", 1)]
        );
        assert!(image.partitions_led_by(b(2)).is_empty());
        assert_eq!(image.partitions_replicated_on(b(2)).len(), 2);
        assert_eq!(
            image.partitions_in_isr_of(b(2)),
            vec![TopicPartition::new("orders", 0)]
        );
        assert!(image.offline_partitions().is_empty());
        let p = image.partition("orders", 1).unwrap();
        assert_eq!(p.preferred_leader(), Some(b(2)));
        assert!(p.is_replica(b(2)) && !p.is_in_isr(b(2)));
        assert_eq!(image.live_broker_ids(), vec![b(1), b(2), b(3)]);
    }

    #[test]
    fn image_round_trips_through_json_byte_for_byte() {
        let mut image = three_brokers_and_orders();
        apply_ok(&mut image, change(0, None, &[1], 1, 1));
        apply_ok(
            &mut image,
            Record::FenceBroker {
                id: b(1),
                broker_epoch: 1,
            },
        );
        let json = serde_json::to_string(&image).unwrap();
        let back: MetadataImage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, image);
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    #[test]
    fn invariant_violations_catch_a_corrupt_snapshot() {
        let image = three_brokers_and_orders();
        let mut json: serde_json::Value = serde_json::to_value(&image).unwrap();
        json["topics"]["orders"]["partitions"][0]["isr"] = serde_json::json!([]);
        json["topics"]["orders"]["partitions"][1]["leader"] = serde_json::json!(9);
        json["brokers"]["2"]["broker_epoch"] = serde_json::json!(1);
        let corrupt: MetadataImage = serde_json::from_value(json).unwrap();
        let violations = corrupt.invariant_violations();
        assert_eq!(violations.len(), 3, "{violations:#?}");
    }

    /// Records of every kind, aimed at brokers, topics and partitions that
    /// do not exist, and with absurd values: `apply` must shrug them off.
    #[test]
    fn apply_never_panics_on_records_that_do_not_fit() {
        let absurd = vec![
            Record::FenceBroker {
                id: b(u64::MAX),
                broker_epoch: u64::MAX,
            },
            Record::UnfenceBroker {
                id: b(0),
                broker_epoch: 0,
            },
            Record::DeleteTopic {
                name: String::new(),
                topic_id: TopicId::ZERO,
            },
            Record::AlterTopicConfig {
                name: "ghost".to_owned(),
                topic_id: ORDERS_ID,
                config: TopicConfig::default(),
            },
            Record::PartitionChange {
                topic: "ghost".to_owned(),
                topic_id: ORDERS_ID,
                partition: u32::MAX,
                leader: Some(b(1)),
                isr: vec![b(1)],
                elr: Vec::new(),
                leader_epoch: u32::MAX,
                partition_epoch: u32::MAX,
            },
            change(u32::MAX, None, &[], u32::MAX, 0),
            change(0, Some(u64::MAX), &[u64::MAX], u32::MAX, u32::MAX),
            Record::CreateTopic {
                topic_id: TopicId::from_u128(u128::MAX),
                name: "ghost".to_owned(),
                config: TopicConfig {
                    segment_bytes: 0,
                    min_insync_replicas: 0,
                    retention_ms: Some(i64::MIN),
                    ..TopicConfig::default()
                },
                assignments: vec![vec![b(u64::MAX)]; 3],
            },
            register(1, 0),
        ];
        for mut image in [MetadataImage::new("c"), three_brokers_and_orders()] {
            let before = image.clone();
            for record in &absurd {
                assert!(!image.apply(record).is_applied(), "{record:?}");
            }
            assert_eq!(
                image.metadata_offset(),
                before.metadata_offset() + absurd.len() as u64
            );
            assert!(image.invariant_violations().is_empty());
            assert_eq!(image.topics(), before.topics());
            assert_eq!(image.brokers(), before.brokers());
        }
    }
}
