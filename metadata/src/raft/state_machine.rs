//! [`StateMachine`]: openraft's state machine for the metadata log. It
//! replays committed [`MetadataCommand`](crate::raft::MetadataCommand)s into
//! the [`MetadataImage`], publishes each new image to the brokers, and keeps
//! its snapshot in a [`KvStore`].
//!
//! Why snapshots only: applying is cheap and the image is small, so the
//! state machine lives in memory and is persisted only as snapshots. On
//! open it loads the last snapshot; openraft re-applies the log after it.
//!
//! ```text
//!   apply(entries) ──► image.apply(record) for each record of each entry
//!        │                  └─► one MetadataResponse per entry
//!        └─► watch::Sender<Arc<MetadataImage>> ──► brokers (subscribe())
//!
//!   build_snapshot ──► Snapshot keyspace {meta, data} (flushed) ──► get_current_snapshot
//!   install_snapshot ─► same, and replaces image, last_applied, membership
//! ```
//!
//! Snapshot data is the JSON of `{last_applied, last_membership, image}`;
//! the meta is stored beside it. Both are written in one atomic batch.
//!
//! Invariants:
//! - `apply` answers exactly one response per entry, blank and membership
//!   entries included, and moves `last_applied` to each entry's log id.
//! - Deterministic: no clock and no randomness. The snapshot id is derived
//!   from the last applied log id (equal log ids mean equal images here).
//! - The persisted snapshot never goes backwards: a snapshot built in the
//!   background is stored only if it is at least as recent as the stored one.
//! - A snapshot is flushed before it is reported built or installed, since
//!   openraft purges the log up to it right after.
//! - The image always belongs to this node's cluster: a stored or received
//!   snapshot of another cluster is refused.
//! - Subscribers see every image that a completed `apply` or
//!   `install_snapshot` produced (the watch channel keeps the latest only).

use std::fmt::Debug;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::image::MetadataImage;
use crate::raft::error::{storage_err, StorageError, StoreError};
use crate::raft::kv::{Keyspace, KvStore};
use crate::raft::types::{
    Entry, LogId, MetadataResponse, RecordOutcome, Snapshot, SnapshotMeta, StoredMembership,
    TypeConfig,
};

/// The Snapshot key of the current snapshot's meta (JSON).
const SNAPSHOT_META_KEY: &[u8] = b"meta";
/// The Snapshot key of the current snapshot's data.
const SNAPSHOT_DATA_KEY: &[u8] = b"data";

/// The content of a snapshot's data. Generic over the image so that it is
/// encoded from a borrowed image and decoded into an owned one.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotPayload<I> {
    /// The last log id applied to the image (the snapshot's meta repeats it).
    last_applied: Option<LogId>,
    /// The last membership applied (the snapshot's meta repeats it).
    last_membership: StoredMembership,
    /// The image.
    image: I,
}

/// What has been applied: the state the snapshots capture.
#[derive(Debug, Clone)]
struct Applied {
    /// The image. Shared with subscribers and snapshot builders: changed
    /// copy-on-write.
    image: Arc<MetadataImage>,
    /// The log id of the last applied entry.
    last_applied: Option<LogId>,
    /// The last applied membership config.
    last_membership: StoredMembership,
}

impl Applied {
    /// The snapshot of this state: its meta and data.
    fn to_snapshot(&self) -> Result<(SnapshotMeta, Vec<u8>), StoreError> {
        let payload = SnapshotPayload {
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            image: &*self.image,
        };
        let data = serde_json::to_vec(&payload).map_err(|source| StoreError::Encode {
            what: "snapshot",
            source,
        })?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id: snapshot_id(self.last_applied),
        };
        Ok((meta, data))
    }

    /// The state a snapshot holds, checked against its meta and cluster.
    fn from_snapshot(
        meta: &SnapshotMeta,
        data: &[u8],
        cluster_id: &str,
    ) -> Result<Applied, StoreError> {
        let payload: SnapshotPayload<MetadataImage> =
            serde_json::from_slice(data).map_err(|source| StoreError::Decode {
                what: "snapshot",
                source,
            })?;
        if payload.last_applied != meta.last_log_id
            || payload.last_membership != meta.last_membership
        {
            return Err(StoreError::SnapshotMismatch {
                snapshot_id: meta.snapshot_id.clone(),
                data: payload.last_applied,
                meta: meta.last_log_id,
            });
        }
        if payload.image.cluster_id() != cluster_id {
            return Err(StoreError::ClusterIdMismatch {
                expected: cluster_id.to_owned(),
                found: payload.image.cluster_id().to_owned(),
            });
        }
        Ok(Applied {
            image: Arc::new(payload.image),
            last_applied: payload.last_applied,
            last_membership: payload.last_membership,
        })
    }
}

/// The id of a snapshot covering the log up to `last_applied`.
fn snapshot_id(last_applied: Option<LogId>) -> String {
    match last_applied {
        Some(log_id) => format!(
            "{}-{}-{}",
            log_id.leader_id.term, log_id.leader_id.node_id, log_id.index
        ),
        None => "empty".to_owned(),
    }
}

/// The persisted snapshot: reads and writes of the Snapshot keyspace, under
/// one lock so that a background build and an install cannot interleave.
struct SnapshotStore<K: KvStore> {
    /// Where the snapshot is kept.
    kv: Arc<K>,
    /// The meta of the stored snapshot (`None`: none stored yet). The lock
    /// is held across every read and write of the keyspace.
    current: Mutex<Option<SnapshotMeta>>,
}

impl<K: KvStore> SnapshotStore<K> {
    /// Reads the stored snapshot's meta and data, if any.
    fn load(kv: &K) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StoreError> {
        let Some(meta) = kv.get(Keyspace::Snapshot, SNAPSHOT_META_KEY)? else {
            return Ok(None);
        };
        let meta: SnapshotMeta =
            serde_json::from_slice(&meta).map_err(|source| StoreError::Decode {
                what: "snapshot meta",
                source,
            })?;
        let data = kv
            .get(Keyspace::Snapshot, SNAPSHOT_DATA_KEY)?
            .unwrap_or_default();
        Ok(Some((meta, data)))
    }

    /// The lock over the stored snapshot's meta. A poisoned lock is
    /// recovered: the meta is only replaced once the write succeeded, so it
    /// is never half-updated.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SnapshotMeta>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `meta` and `data` durably as the current snapshot. With
    /// `only_if_newer`, leaves a more recent stored snapshot in place and
    /// returns `false`.
    fn store(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
        only_if_newer: bool,
    ) -> Result<bool, StoreError> {
        let mut current = self.lock();
        if only_if_newer {
            if let Some(stored) = current.as_ref() {
                if stored.last_log_id > meta.last_log_id {
                    return Ok(false);
                }
            }
        }
        let meta_bytes = serde_json::to_vec(meta).map_err(|source| StoreError::Encode {
            what: "snapshot meta",
            source,
        })?;
        self.kv.insert_all(
            Keyspace::Snapshot,
            &[
                (SNAPSHOT_META_KEY.to_vec(), meta_bytes),
                (SNAPSHOT_DATA_KEY.to_vec(), data.to_vec()),
            ],
        )?;
        self.kv.flush()?;
        *current = Some(meta.clone());
        Ok(true)
    }

    /// The stored snapshot, if any.
    fn current(&self) -> Result<Option<Snapshot>, StoreError> {
        let _current = self.lock();
        Ok(Self::load(&self.kv)?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// The metadata state machine. Hand it to `openraft::Raft::new` after
/// taking a [`subscribe`](StateMachine::subscribe) receiver (receivers are
/// cheap to clone).
pub struct StateMachine<K: KvStore> {
    /// What has been applied.
    applied: Applied,
    /// The persisted snapshot; shared with snapshot builders.
    snapshots: Arc<SnapshotStore<K>>,
    /// Publishes each new image to the brokers.
    image_tx: watch::Sender<Arc<MetadataImage>>,
}

impl<K: KvStore> Debug for StateMachine<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("cluster_id", &self.applied.image.cluster_id())
            .field("metadata_offset", &self.applied.image.metadata_offset())
            .field("last_applied", &self.applied.last_applied)
            .field("last_membership", &self.applied.last_membership)
            .finish_non_exhaustive()
    }
}

impl<K: KvStore> StateMachine<K> {
    /// Opens the state machine over `kv`: the stored snapshot's state if
    /// there is one, else `empty` (whose cluster id is this node's).
    pub(crate) fn open(kv: Arc<K>, empty: MetadataImage) -> Result<Self, StoreError> {
        let stored = SnapshotStore::load(kv.as_ref())?;
        let (applied, current) = match stored {
            Some((meta, data)) => {
                let applied = Applied::from_snapshot(&meta, &data, empty.cluster_id())?;
                (applied, Some(meta))
            }
            None => {
                let applied = Applied {
                    image: Arc::new(empty),
                    last_applied: None,
                    last_membership: StoredMembership::default(),
                };
                (applied, None)
            }
        };
        let (image_tx, _) = watch::channel(Arc::clone(&applied.image));
        Ok(StateMachine {
            applied,
            snapshots: Arc::new(SnapshotStore {
                kv,
                current: Mutex::new(current),
            }),
            image_tx,
        })
    }

    /// A receiver of the image: the current one, then each new one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image_tx.subscribe()
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.applied.image)
    }

    /// The log id of the last applied entry.
    pub fn last_applied(&self) -> Option<LogId> {
        self.applied.last_applied
    }

    /// The last applied membership config.
    pub fn last_membership(&self) -> &StoredMembership {
        &self.applied.last_membership
    }

    /// Applies `entries` in order; one response per entry.
    fn apply_entries(&mut self, entries: impl IntoIterator<Item = Entry>) -> Vec<MetadataResponse> {
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        let mut image_changed = false;
        for entry in entries {
            self.applied.last_applied = Some(entry.log_id);
            let outcomes = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(command) if command.records.is_empty() => Vec::new(),
                EntryPayload::Normal(command) => {
                    // Copies the image at most once per call: the published
                    // image is immutable.
                    let image = Arc::make_mut(&mut self.applied.image);
                    image_changed = true;
                    command
                        .records
                        .iter()
                        .map(|record| RecordOutcome::from(image.apply(record)))
                        .collect()
                }
                EntryPayload::Membership(membership) => {
                    self.applied.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            responses.push(MetadataResponse {
                metadata_offset: self.applied.image.metadata_offset(),
                outcomes,
            });
        }
        if image_changed {
            self.image_tx.send_replace(Arc::clone(&self.applied.image));
        }
        responses
    }

    /// Installs the snapshot `meta` + `data`: stores it, then adopts its
    /// state.
    fn install(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
        let applied = Applied::from_snapshot(meta, data, self.applied.image.cluster_id())?;
        self.snapshots.store(meta, data, false)?;
        self.applied = applied;
        self.image_tx.send_replace(Arc::clone(&self.applied.image));
        Ok(())
    }
}

/// Builds a snapshot of the state at the time it was created, in the
/// background, while the state machine goes on applying.
pub struct SnapshotBuilder<K: KvStore> {
    /// The state to snapshot.
    applied: Applied,
    /// Where to store it.
    snapshots: Arc<SnapshotStore<K>>,
}

impl<K: KvStore> Debug for SnapshotBuilder<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder")
            .field("last_applied", &self.applied.last_applied)
            .finish_non_exhaustive()
    }
}

impl<K: KvStore> SnapshotBuilder<K> {
    fn build(&self) -> Result<Snapshot, StoreError> {
        let (meta, data) = self.applied.to_snapshot()?;
        self.snapshots.store(&meta, &data, true)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<K: KvStore> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<K> {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.build()
            .map_err(storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Write))
    }
}

impl<K: KvStore> RaftStateMachine<TypeConfig> for StateMachine<K> {
    type SnapshotBuilder = SnapshotBuilder<K>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((
            self.applied.last_applied,
            self.applied.last_membership.clone(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetadataResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        Ok(self.apply_entries(entries))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            applied: self.applied.clone(),
            snapshots: Arc::clone(&self.snapshots),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.install(meta, snapshot.get_ref()).map_err(storage_err(
            ErrorSubject::Snapshot(Some(meta.signature())),
            ErrorVerb::Write,
        ))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.snapshots
            .current()
            .map_err(storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Read))
    }
}
