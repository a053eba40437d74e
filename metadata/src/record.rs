//! The metadata records: what the active controller writes into the Raft log
//! and what every node replays, in log order, into its [`MetadataImage`].
//!
//! Why records and not requests: a request ("create topic orders with 6
//! partitions") needs a decision (which brokers?) that depends on the
//! controller's view at that moment. The controller makes the decision once
//! ([`crate::controller`]) and logs its *result*; replaying a record needs no
//! judgement, so every node reaches the same image.
//!
//! Invariants:
//! - A record carries everything `apply` needs: no defaults, clocks or
//!   randomness are consulted while replaying.
//! - Every record that targets an existing topic names it by name *and* id;
//!   `apply` ignores it if the topic has since been deleted or re-created.
//! - `PartitionChange` carries the full new state of the partition, and its
//!   `partition_epoch` must be exactly one more than the current one, which
//!   makes each change a compare-and-set against the state it was decided on.
//! - The serde form (externally tagged, e.g. `{"DeleteTopic":{...}}`) is a
//!   wire format: fields may be added with `#[serde(default)]`, never renamed.
//!
//! [`MetadataImage`]: crate::MetadataImage

use serde::{Deserialize, Serialize};

use crate::config::TopicConfig;
use crate::ids::{BrokerId, TopicId};
use crate::security::{Acl, ScramCredential};

/// One entry of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A broker joined, or re-joined with a new incarnation. Replaces any
    /// earlier registration of the same id. With `catching_up` the broker
    /// starts fenced and is unfenced once its heartbeats show it has applied
    /// the metadata log up to this record (KIP-631); records written before
    /// that field existed register the broker unfenced.
    RegisterBroker {
        /// The broker's configured id.
        id: BrokerId,
        /// Where clients and other brokers reach it (`host:port`).
        address: String,
        /// Its failure domain, for replica placement; `None` if not set.
        rack: Option<String>,
        /// The epoch of this incarnation: unique across all registrations
        /// and larger than every earlier one (see
        /// [`MetadataImage::next_broker_epoch`](crate::MetadataImage::next_broker_epoch)).
        broker_epoch: u64,
        /// The id of the broker's log directory (KIP-858): a different id
        /// than the previous registration's means its storage was replaced.
        #[serde(default)]
        directory_id: Option<String>,
        /// The broker starts fenced, catching up with the metadata log.
        #[serde(default)]
        catching_up: bool,
        /// Where Kafka clients reach it; `None`: no Kafka listener.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kafka_address: Option<String>,
    },
    /// The broker's lease expired: it may no longer lead or be in an ISR.
    FenceBroker {
        /// The broker.
        id: BrokerId,
        /// The incarnation being fenced; a record for an older incarnation is
        /// ignored.
        broker_epoch: u64,
    },
    /// The broker is back (heartbeating and caught up with the metadata).
    UnfenceBroker {
        /// The broker.
        id: BrokerId,
        /// The incarnation being unfenced; must be the registered one.
        broker_epoch: u64,
    },
    /// A new topic. Each partition starts with the first replica as leader,
    /// all replicas in the ISR, and both epochs at 0.
    CreateTopic {
        /// The id the controller chose.
        topic_id: TopicId,
        /// The topic's name, unique among live topics.
        name: String,
        /// Its validated configuration.
        config: TopicConfig,
        /// For partition `p`, its replicas; the first is the preferred leader.
        assignments: Vec<Vec<BrokerId>>,
    },
    /// Partitions added to a topic (Kafka's CreatePartitions, KIP-195):
    /// `assignments[i]` is partition `current count + i`, which starts as a
    /// new topic's partitions do.
    CreatePartitions {
        /// The topic's name.
        name: String,
        /// Its id, so a stale record cannot grow a re-created topic.
        topic_id: TopicId,
        /// The new partitions' replicas, in partition order.
        assignments: Vec<Vec<BrokerId>>,
    },
    /// The topic and all its partitions are removed.
    DeleteTopic {
        /// The topic's name.
        name: String,
        /// Its id, so a stale delete cannot remove a re-created topic.
        topic_id: TopicId,
    },
    /// The new state of one partition: the result of an AlterPartition (ISR
    /// change) or of an election.
    PartitionChange {
        /// The topic's name.
        topic: String,
        /// The topic's id, so a stale change cannot touch a re-created topic.
        topic_id: TopicId,
        /// The partition index.
        partition: u32,
        /// The new leader; `None` leaves the partition offline.
        leader: Option<BrokerId>,
        /// The new in-sync replica set: a subset of the replicas containing
        /// the leader; empty only while the partition is offline and no
        /// replica is known to hold every committed record.
        isr: Vec<BrokerId>,
        /// The new eligible leader replicas (KIP-966): replicas outside the
        /// ISR known to hold every committed record.
        #[serde(default)]
        elr: Vec<BrokerId>,
        /// The new leader epoch: bumped whenever leadership changes hands.
        leader_epoch: u32,
        /// The new partition epoch: the current one plus one.
        partition_epoch: u32,
    },
    /// The topic's configuration is replaced by `config` (already merged
    /// and validated by the controller).
    AlterTopicConfig {
        /// The topic's name.
        name: String,
        /// Its id, so a stale change cannot touch a re-created topic.
        topic_id: TopicId,
        /// The full new configuration.
        config: TopicConfig,
    },
    /// A user is created, or its credentials replaced (KIP-554: the
    /// credentials, never the password). With `create_only` an existing user
    /// is left alone (`--initial-users-file`).
    UpsertUser {
        /// The user's name.
        name: String,
        /// One credential per SCRAM mechanism.
        credentials: Vec<ScramCredential>,
        /// Skip if the user exists.
        create_only: bool,
    },
    /// A user is removed.
    DeleteUser {
        /// The user's name.
        name: String,
    },
    /// ACLs are added (already there: unchanged).
    CreateAcls {
        /// The ACLs.
        acls: Vec<Acl>,
    },
    /// ACLs are removed (the controller resolved the filter into them).
    DeleteAcls {
        /// The ACLs.
        acls: Vec<Acl>,
    },
    /// A block of producer ids handed to a broker (KIP-730): ids
    /// `[first_id, first_id + count)` are its own to give to idempotent
    /// producers, and no other broker, now or after any restart, gets them.
    AllocateProducerIds {
        /// The broker the block is for.
        broker_id: BrokerId,
        /// Its incarnation when it asked (the record is skipped for another).
        broker_epoch: u64,
        /// The first id of the block: always the image's
        /// [`next_producer_id`](crate::MetadataImage::next_producer_id).
        first_id: u64,
        /// How many ids.
        count: u64,
    },
}

impl Record {
    /// The record type's name, for logs and metrics.
    pub const fn kind(&self) -> &'static str {
        match self {
            Record::RegisterBroker { .. } => "RegisterBroker",
            Record::FenceBroker { .. } => "FenceBroker",
            Record::UnfenceBroker { .. } => "UnfenceBroker",
            Record::CreateTopic { .. } => "CreateTopic",
            Record::CreatePartitions { .. } => "CreatePartitions",
            Record::DeleteTopic { .. } => "DeleteTopic",
            Record::PartitionChange { .. } => "PartitionChange",
            Record::AlterTopicConfig { .. } => "AlterTopicConfig",
            Record::UpsertUser { .. } => "UpsertUser",
            Record::DeleteUser { .. } => "DeleteUser",
            Record::CreateAcls { .. } => "CreateAcls",
            Record::DeleteAcls { .. } => "DeleteAcls",
            Record::AllocateProducerIds { .. } => "AllocateProducerIds",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_of_each() -> Vec<Record> {
        let topic_id = TopicId::from_u128((0xfeed_beef_u128 << 64) | 7);
        vec![
            Record::RegisterBroker {
                id: BrokerId(1),
                address: "node1:9092".to_owned(),
                rack: Some("eu-west-1a".to_owned()),
                broker_epoch: 3,
                directory_id: Some("d1".to_owned()),
                catching_up: true,
                kafka_address: None,
            },
            Record::FenceBroker {
                id: BrokerId(1),
                broker_epoch: 3,
            },
            Record::UnfenceBroker {
                id: BrokerId(1),
                broker_epoch: 3,
            },
            Record::CreateTopic {
                topic_id,
                name: "orders".to_owned(),
                config: TopicConfig::default(),
                assignments: vec![
                    vec![BrokerId(1), BrokerId(2)],
                    vec![BrokerId(2), BrokerId(1)],
                ],
            },
            Record::CreatePartitions {
                name: "orders".to_owned(),
                topic_id,
                assignments: vec![vec![BrokerId(1), BrokerId(2)]],
            },
            Record::DeleteTopic {
                name: "orders".to_owned(),
                topic_id,
            },
            Record::PartitionChange {
                topic: "orders".to_owned(),
                topic_id,
                partition: 1,
                leader: None,
                isr: vec![BrokerId(2)],
                elr: vec![BrokerId(1)],
                leader_epoch: 4,
                partition_epoch: 9,
            },
            Record::AlterTopicConfig {
                name: "orders".to_owned(),
                topic_id,
                config: TopicConfig {
                    retention_ms: None,
                    ..TopicConfig::default()
                },
            },
            Record::AllocateProducerIds {
                broker_id: BrokerId(2),
                broker_epoch: 5,
                first_id: 1000,
                count: 1000,
            },
        ]
    }

    #[test]
    fn every_record_round_trips_through_json() {
        for record in one_of_each() {
            let json = serde_json::to_string(&record).unwrap();
            assert!(
                json.starts_with(&format!("{{\"{}\":", record.kind())),
                "{json}"
            );
            let back: Record = serde_json::from_str(&json).unwrap();
            assert_eq!(back, record);
        }
        // A batch (the likely shape of one Raft entry) too.
        let batch = one_of_each();
        let json = serde_json::to_vec(&batch).unwrap();
        assert_eq!(serde_json::from_slice::<Vec<Record>>(&json).unwrap(), batch);
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        for text in [
            "",
            "{}",
            r#"{"Nope":{}}"#,
            r#"{"FenceBroker":{"id":-1,"broker_epoch":0}}"#,
            r#"{"DeleteTopic":{"name":"x","topic_id":"zz"}}"#,
        ] {
            assert!(serde_json::from_str::<Record>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn records_written_before_the_new_fields_still_decode() {
        let old = r#"{"RegisterBroker":{"id":1,"address":"a:1","rack":null,"broker_epoch":2}}"#;
        match serde_json::from_str::<Record>(old).unwrap() {
            Record::RegisterBroker {
                directory_id,
                catching_up,
                kafka_address,
                ..
            } => assert_eq!(
                (directory_id, catching_up, kafka_address),
                (None, false, None)
            ),
            other => panic!("{other:?}"),
        }
        let old = r#"{"PartitionChange":{"topic":"t","topic_id":"00000000000000000000000000000007","partition":0,"leader":1,"isr":[1],"leader_epoch":1,"partition_epoch":1}}"#;
        match serde_json::from_str::<Record>(old).unwrap() {
            Record::PartitionChange { elr, .. } => assert!(elr.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}
