//! The Rivulet broker.
//!
//! - [`log`]: the partition log — segments of Kafka v2 record batches on disk,
//!   sparse indexes, crash recovery, the leader-epoch cache, retention and
//!   group-committed fsyncs.
//! - [`replica`]: replication state — high watermark, ISR, epoch checks.

pub mod log;
pub mod replica;
