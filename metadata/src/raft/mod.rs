//! The Raft storage of the controller quorum: openraft's log store and state
//! machine for the metadata log, on a small key-value trait of ours.
//!
//! Why: the metadata image must survive restarts and be identical on every
//! node. openraft replicates and orders [`MetadataCommand`]s; this module
//! keeps the log, the vote and the snapshots on disk, and replays committed
//! commands into the [`MetadataImage`] with [`MetadataImage::apply`], the
//! pure core's only way to change it.
//!
//! ```text
//!            openraft (RaftCore, sm worker)
//!              │ append/truncate/purge        │ apply/snapshot
//!              │ save_vote/save_committed     │ install_snapshot
//!              ▼                              ▼
//!   LogStore<K>                         StateMachine<K> ──watch──► brokers
//!     Log keyspace:  be_u64(index) → Entry   │  image, last_applied, membership
//!     Meta keyspace: vote, committed,        │
//!                    last_purged_log_id      ▼
//!              │                   Snapshot keyspace: meta, data
//!              ▼                              ▼
//!           K: KvStore  ── SledKv (one sled::Db, one tree per keyspace)
//!                       └─ MemKv  (BTreeMaps behind a mutex, for tests)
//! ```
//!
//! Invariants:
//! - One controller decision is one [`MetadataCommand`], one Raft entry: its
//!   records apply together, in order, or (before commit) not at all.
//! - What openraft is told is durable is durable: `append` flushes before it
//!   reports the I/O complete, `save_vote`, `truncate`, the `last_purged`
//!   mark and every snapshot are flushed before returning.
//! - The state machine is persisted only as snapshots. On open it loads the
//!   last one; openraft re-applies the log after it (up to the saved
//!   committed index at once, the rest as the leader re-commits it).
//! - The state machine is deterministic: no clock, no randomness; snapshot
//!   ids derive from the last applied log id.
//!
//! Files (private modules; everything public is re-exported here):
//! - `types.rs`: [`TypeConfig`], [`MetadataCommand`], [`MetadataResponse`]
//!   and aliases of openraft's types for this config.
//! - `kv.rs`: the [`KvStore`] trait and its [`Keyspace`]s; `sled_kv.rs`
//!   ([`SledKv`]) and `mem_kv.rs` ([`MemKv`]) implement it.
//! - `log_store.rs`: [`LogStore`], openraft's `RaftLogStorage`.
//! - `state_machine.rs`: [`StateMachine`], openraft's `RaftStateMachine`, and
//!   its [`SnapshotBuilder`].
//! - `error.rs`: [`StoreError`] and its mapping to openraft's `StorageError`.

mod error;
mod kv;
mod log_store;
mod mem_kv;
mod sled_kv;
mod state_machine;
mod types;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use error::StoreError;
pub use kv::{KeyRange, KeyValue, Keyspace, KvError, KvStore};
pub use log_store::LogStore;
pub use mem_kv::MemKv;
pub use sled_kv::{SledKv, SLED_CACHE_CAPACITY_BYTES};
pub use state_machine::{SnapshotBuilder, StateMachine};
pub use types::{
    Entry, LogId, MetadataCommand, MetadataResponse, NodeId, Raft, RecordOutcome, Snapshot,
    SnapshotMeta, StoredMembership, TypeConfig, Vote,
};

use crate::image::MetadataImage;

/// Opens (or creates) the sled store in directory `path` for cluster
/// `cluster_id`: the log store and the state machine, the latter loaded from
/// its last snapshot.
///
/// Fails if the directory cannot be opened, its content cannot be decoded,
/// or it holds the metadata of another cluster.
pub fn open_store(
    path: &Path,
    cluster_id: &str,
) -> Result<(LogStore<SledKv>, StateMachine<SledKv>), StoreError> {
    let kv = SledKv::open(path)?;
    open_with(Arc::new(kv), cluster_id)
}

/// A fresh in-memory store for cluster `cluster_id`, for tests.
pub fn open_mem_store(
    cluster_id: &str,
) -> Result<(LogStore<MemKv>, StateMachine<MemKv>), StoreError> {
    open_with(Arc::new(MemKv::new()), cluster_id)
}

/// Opens the log store and the state machine over any [`KvStore`]. Opening
/// twice over the same `kv` (after dropping the first pair) is a restart.
pub fn open_with<K: KvStore>(
    kv: Arc<K>,
    cluster_id: &str,
) -> Result<(LogStore<K>, StateMachine<K>), StoreError> {
    let log_store = LogStore::open(Arc::clone(&kv))?;
    let state_machine = StateMachine::open(kv, MetadataImage::new(cluster_id))?;
    Ok((log_store, state_machine))
}
