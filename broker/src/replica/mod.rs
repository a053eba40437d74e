//! Partition replication: the data plane's core.
//!
//! - [`leader`]: the leader's pure replication state for one partition —
//!   follower progress, high watermark, ISR shrink/expand proposals — and the
//!   follower-fetch check against the leader epoch cache (KIP-101/320).
//! - [`partition`]: one hosted replica — its log, role and wake-up signals;
//!   every append, read and role change goes through it.
//! - [`manager`]: the hosted replicas, kept in step with the metadata image;
//!   ISR changes through AlterPartition; checkpoints, flushes, retention.
//! - `plan`: the pure half of reconciling with an image (what to open,
//!   lead, follow, remove); the manager executes it.
//! - `fetcher`: one follower fetcher per source broker, behind a narrow
//!   `FetchHost` handle, with its decisions pure.
//! - [`error`]: per-partition failures and their wire codes.

pub mod error;
mod fetcher;
pub mod leader;
pub mod manager;
pub mod partition;
mod plan;

pub use error::PartitionError;
pub use manager::{BrokerConfig, ReplicaManager};
pub use partition::Partition;
