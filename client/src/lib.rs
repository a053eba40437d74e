//! The Rust client of Rivulet: an async [`Producer`], [`Consumer`] and
//! [`Admin`] over the cluster's gRPC API.
//!
//! ```no_run
//! use rivulet_client::{ClientConfig, Producer, ProducerConfig, ProducerRecord};
//!
//! # async fn run() -> rivulet_client::Result<()> {
//! let producer = Producer::connect(ClientConfig::new("127.0.0.1:9092"), ProducerConfig::default()).await?;
//! let delivered = producer
//!     .send_and_wait(ProducerRecord::new("orders", "hello").key("customer-7"))
//!     .await?;
//! println!("partition {} offset {:?}", delivered.partition, delivered.offset);
//! # Ok(()) }
//! ```
//!
//! - Producer: partition explicit, else Kafka's murmur2 of the key (keys land
//!   where Kafka would put them), else sticky for keyless records; batching by
//!   `linger` and `batch_size`; lz4/zstd compression; retries with metadata
//!   refresh and leader hints until `delivery_timeout`; a delivery future per
//!   record.
//! - Consumer: assign partitions, seek (beginning, end, offset, timestamp),
//!   long-poll fetches from each partition's leader, following leader changes.
//! - GroupConsumer: consumer groups — the coordinator splits the subscribed
//!   topics' partitions among members (no stop-the-world rebalance); positions
//!   start at committed offsets; auto or manual commit; rebalance events.
//! - Admin: create, delete, describe and configure topics; describe the
//!   cluster; list, describe (with lag), reset and delete groups.
//!
//! Runnable examples are in `client/examples/`.

mod admin;
mod cluster;
mod consumer;
mod error;
mod group;
mod group_admin;
mod producer;
mod records;

pub use admin::{Admin, PartitionOffsets};
pub use cluster::{hinted_nodes, is_not_ready, ClientConfig, NOT_READY_PATIENCE};
pub use consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
pub use error::{Error, Result};
pub use group::{GroupConfig, GroupConsumer, RebalanceEvent, TopicPartition};
pub use group_admin::{GroupDescription, MemberDescription, PartitionLag};
pub use producer::{DeliveryFuture, Partitioner, Producer, ProducerConfig, RecordMetadata};
pub use records::{
    decode_batches, encode_batch, murmur2, partition_for_key, Compression, ConsumerRecord, Decoded,
    ProducerRecord, UndecodableBatch,
};
pub use rivulet_proto::v1::{Acks, ErrorCode, GroupListing, PartitionInfo, TopicInfo};
