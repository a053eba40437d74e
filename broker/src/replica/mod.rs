//! Partition replication (the data plane's core), built bottom-up.
//!
//! - [`leader`]: the leader's pure replication state for one partition —
//!   follower progress, high watermark, ISR shrink/expand proposals — and the
//!   follower-fetch check against the leader epoch cache (KIP-101/320).
//!
//! The async replica manager (produce with acks, long-poll fetch, follower
//! fetchers, AlterPartition round trips) drives this state; it arrives with
//! the data-plane work.

pub mod leader;
