//! Rivulet's cluster metadata: the replicated image, the records that change
//! it and the controller decisions that produce those records.
//!
//! Most of this crate is the pure core of the metadata plane: no I/O, no
//! clock, no async. The [`raft`] module wraps it in openraft's storage: a log
//! whose entries are batches of [`Record`]s and a state machine whose
//! snapshot is the serialized [`MetadataImage`], kept in sled.
//!
//! ```text
//!   admin / broker request
//!            │
//!            ▼
//!   controller::*(&image, request) ──► (Vec<Record>, response) | ControllerError
//!            ▲                               │
//!            │ reads                         ▼ Raft: commit, then on every node
//!        MetadataImage ◄──────────── image.apply(&record)
//! ```
//!
//! Modules:
//! - [`image`]: [`MetadataImage`] (brokers, topics, partitions, offsets) and
//!   [`MetadataImage::apply`], the only way it changes.
//! - [`record`]: [`Record`], the entries of the metadata log.
//! - [`config`]: [`TopicConfig`], typed topic configuration parsed from and
//!   printed as Kafka-style `key=value` pairs.
//! - [`controller`]: the decisions (register, fence, unfence, create, delete,
//!   alter config, alter partition, elect leaders), each
//!   `fn(&MetadataImage, request) -> Result<ControllerResult<_>, ControllerError>`.
//! - [`error`]: [`ControllerError`] and its stable [`ErrorKind`].
//! - [`quorum`]: the quorum at run time — Raft over gRPC, proposals by the
//!   active controller, broker leases and fencing, the Controller service.
//! - [`ids`]: [`BrokerId`], [`TopicId`], [`TopicPartition`].
//! - [`raft`]: the Raft storage of the controller quorum: openraft's
//!   [`LogStore`](raft::LogStore) and [`StateMachine`](raft::StateMachine)
//!   over a small key-value trait with a sled and an in-memory implementation.

pub mod authn;
pub mod config;
pub mod controller;
pub mod convert;
pub mod edge;
pub mod error;
pub mod ids;
pub mod image;
pub mod quorum;
pub mod raft;
pub mod record;
pub mod security;

pub use config::{CleanupPolicy, ConfigError, TopicConfig};
pub use controller::{
    allocate_producer_ids, alter_partition, alter_topic_config, create_topic, delete_topic,
    elect_leader, elect_preferred_leaders, fence_broker, register_broker, unfence_broker,
    AlterPartitionRequest, AlterTopicConfigResponse, BrokerRegistrationRequest, ControllerResult,
    CreateTopicResponse, DeleteTopicResponse, ElectLeaderResponse, ElectLeadersResponse,
    FenceBrokerResponse, ProducerIdBlock, RegisterBrokerResponse, UnfenceBrokerResponse,
    MAX_PARTITIONS_PER_TOPIC, MAX_TOPIC_NAME_LENGTH, PRODUCER_ID_BLOCK_SIZE,
};
pub use error::{ControllerError, ErrorKind, IsrProblem, PreferredLeaderProblem, TopicNameProblem};
pub use ids::{BrokerId, TopicId, TopicIdParseError, TopicPartition};
pub use image::{
    ApplyOutcome, BrokerRegistration, MetadataImage, PartitionImage, SkipReason, TopicImage,
};
pub use record::Record;
