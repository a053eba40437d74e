//! [`LogStore`]: openraft's log storage (`RaftLogStorage` + `RaftLogReader`)
//! for the metadata log, over a [`KvStore`].
//!
//! Why: Raft's safety rests on three things surviving a crash once openraft
//! was told they are stored: the vote, the appended entries and the log's
//! truncation. This is where they are made durable.
//!
//! Layout:
//! - [`Keyspace::Log`]: `index as big-endian u64` → JSON of the entry, so the
//!   keys sort by index.
//! - [`Keyspace::Meta`]: `vote`, `committed`, `last_purged_log_id` → JSON.
//!
//! Invariants:
//! - `append` writes its entries in one atomic batch and flushes before it
//!   reports the I/O complete through the callback; it always reports,
//!   failure included (a callback never called stalls the leader).
//! - The log is contiguous: `truncate` removes a suffix and `purge` a prefix,
//!   each in one atomic removal, so no crash leaves a hole.
//! - `purge` records (and flushes) the last purged log id before it deletes
//!   anything; opening the store finishes a purge that a crash interrupted.
//!   The log state's last log id is the largest of the last entry's and the
//!   last purged one, so it never goes back when the log is emptied.
//! - The vote is flushed before `save_vote` returns. The committed log id
//!   is not flushed: openraft allows losing it.
//! - Every entry is stored under its own index; a mismatch found on read is
//!   reported as corruption, never silently used.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::raft::error::{storage_err, StorageError, StoreError};
use crate::raft::kv::{KeyRange, Keyspace, KvStore};
use crate::raft::types::{Entry, LogId, TypeConfig, Vote};

/// The Meta key of the vote.
const VOTE_KEY: &[u8] = b"vote";
/// The Meta key of the last committed log id known to this node.
const COMMITTED_KEY: &[u8] = b"committed";
/// The Meta key of the last purged log id.
const LAST_PURGED_KEY: &[u8] = b"last_purged_log_id";

/// The Raft log, vote and commit mark of the metadata quorum. Cloning is
/// cheap and shares the store (openraft's log reader is a clone).
pub struct LogStore<K: KvStore> {
    /// Where everything is kept; shared with the state machine, which uses
    /// another keyspace.
    kv: Arc<K>,
}

impl<K: KvStore> Clone for LogStore<K> {
    fn clone(&self) -> Self {
        LogStore {
            kv: Arc::clone(&self.kv),
        }
    }
}

impl<K: KvStore> Debug for LogStore<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("kv", &self.kv).finish()
    }
}

/// The Log key of index `index`.
fn log_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

/// The index a Log key stands for.
fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::BadLogKey { len: key.len() })?;
    Ok(u64::from_be_bytes(bytes))
}

/// The Log keys of the indexes in `range`.
fn key_range(range: &impl RangeBounds<u64>) -> KeyRange {
    let bound = |bound: Bound<&u64>| match bound {
        Bound::Included(&index) => Bound::Included(log_key(index)),
        Bound::Excluded(&index) => Bound::Excluded(log_key(index)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (bound(range.start_bound()), bound(range.end_bound()))
}

/// Decodes the entry stored under `key`.
fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, StoreError> {
    let key_index = key_index(key)?;
    let entry: Entry = serde_json::from_slice(value).map_err(|source| StoreError::Decode {
        what: "log entry",
        source,
    })?;
    if entry.log_id.index != key_index {
        return Err(StoreError::MisplacedEntry {
            key_index,
            entry_log_id: entry.log_id,
        });
    }
    Ok(entry)
}

impl<K: KvStore> LogStore<K> {
    /// Opens the log store over `kv`, finishing a purge that a crash
    /// interrupted.
    pub(crate) fn open(kv: Arc<K>) -> Result<Self, StoreError> {
        let store = LogStore { kv };
        if let Some(purged) = store.last_purged()? {
            store.kv.remove_range(
                Keyspace::Log,
                (Bound::Unbounded, Bound::Included(log_key(purged.index))),
            )?;
        }
        Ok(store)
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.kv.get(Keyspace::Meta, key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Decode { what, source })
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        what: &'static str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec(value).map_err(|source| StoreError::Encode { what, source })?;
        self.kv.insert(Keyspace::Meta, key, &bytes)?;
        Ok(())
    }

    fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        self.read_meta(LAST_PURGED_KEY, "last purged log id")
    }

    fn vote(&self) -> Result<Option<Vote>, StoreError> {
        self.read_meta(VOTE_KEY, "vote")
    }

    fn write_vote(&self, vote: &Vote) -> Result<(), StoreError> {
        self.write_meta(VOTE_KEY, "vote", vote)?;
        self.kv.flush()?;
        Ok(())
    }

    fn committed(&self) -> Result<Option<LogId>, StoreError> {
        self.read_meta(COMMITTED_KEY, "committed log id")
    }

    fn write_committed(&self, committed: Option<LogId>) -> Result<(), StoreError> {
        match committed {
            Some(log_id) => self.write_meta(COMMITTED_KEY, "committed log id", &log_id),
            None => Ok(self.kv.remove(Keyspace::Meta, COMMITTED_KEY)?),
        }
    }

    fn entries(&self, range: &impl RangeBounds<u64>) -> Result<Vec<Entry>, StoreError> {
        self.kv
            .scan(Keyspace::Log, key_range(range))?
            .iter()
            .map(|(key, value)| decode_entry(key, value))
            .collect()
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged_log_id = self.last_purged()?;
        let last_in_log = match self.kv.last(Keyspace::Log)? {
            Some((key, value)) => Some(decode_entry(&key, &value)?.log_id),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: std::cmp::max(last_in_log, last_purged_log_id),
        })
    }

    /// Writes `entries` in one batch and makes them durable.
    fn write_entries(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StoreError> {
        let items = entries
            .into_iter()
            .map(|entry| {
                let value = serde_json::to_vec(&entry).map_err(|source| StoreError::Encode {
                    what: "log entry",
                    source,
                })?;
                Ok((log_key(entry.log_id.index), value))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.kv.insert_all(Keyspace::Log, &items)?;
        self.kv.flush()?;
        Ok(())
    }

    /// Removes the entries from `log_id` on, durably.
    fn truncate_from(&self, log_id: LogId) -> Result<(), StoreError> {
        self.kv.remove_range(
            Keyspace::Log,
            (Bound::Included(log_key(log_id.index)), Bound::Unbounded),
        )?;
        self.kv.flush()?;
        Ok(())
    }

    /// Removes the entries up to and including `log_id`, after recording it
    /// durably as the last purged one.
    fn purge_upto(&self, log_id: LogId) -> Result<(), StoreError> {
        if self.last_purged()?.is_some_and(|purged| purged >= log_id) {
            return Ok(());
        }
        self.write_meta(LAST_PURGED_KEY, "last purged log id", &log_id)?;
        self.kv.flush()?;
        self.kv.remove_range(
            Keyspace::Log,
            (Bound::Unbounded, Bound::Included(log_key(log_id.index))),
        )?;
        Ok(())
    }
}

impl<K: KvStore> RaftLogReader<TypeConfig> for LogStore<K> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(&range)
            .map_err(storage_err(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl<K: KvStore> RaftLogStorage<TypeConfig> for LogStore<K> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.log_state()
            .map_err(storage_err(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_vote(vote)
            .map_err(storage_err(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.vote()
            .map_err(storage_err(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_committed(committed)
            .map_err(storage_err(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.committed()
            .map_err(storage_err(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.write_entries(entries) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let storage_error = StorageError::from(openraft::StorageIOError::write_logs(
                    openraft::AnyError::new(&e),
                ));
                callback.log_io_completed(Err(io::Error::other(e)));
                Err(storage_error)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.truncate_from(log_id)
            .map_err(storage_err(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.purge_upto(log_id)
            .map_err(storage_err(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}
