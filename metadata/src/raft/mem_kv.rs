//! [`MemKv`]: the in-memory [`KvStore`], for tests.
//!
//! Why: the Raft store's tests (and openraft's conformance suite) run
//! against it in microseconds, and it can be told to fail writes, which a
//! real disk cannot be asked to do on cue.
//!
//! Invariants:
//! - Every operation takes the one lock, so batches are trivially atomic.
//! - "Durable" means "still in this value": clones share the maps, so
//!   opening a store again over a clone is a restart that loses nothing.
//! - While failures are injected, every write and flush fails and changes
//!   nothing; reads still work.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::raft::kv::{is_empty_range, KeyRange, KeyValue, Keyspace, KvError, KvStore};

/// One keyspace's content.
type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// The in-memory implementation of [`KvStore`]. Cloning is cheap and shares
/// the content.
#[derive(Clone, Default)]
pub struct MemKv {
    /// The maps and the switches, shared by clones.
    inner: Arc<MemKvInner>,
}

/// What clones of a [`MemKv`] share.
#[derive(Default)]
struct MemKvInner {
    /// One map per keyspace, indexed by [`MemKv::slot`].
    maps: Mutex<[Map; 3]>,
    /// Whether writes and flushes fail (see [`MemKv::fail_writes`]).
    fail_writes: AtomicBool,
    /// How many flushes succeeded, so tests can see that one happened.
    flushes: AtomicU64,
}

impl MemKv {
    /// An empty store.
    pub fn new() -> Self {
        MemKv::default()
    }

    /// From now on, makes every write and flush fail with
    /// [`KvError::Injected`] (or stops doing so).
    pub fn fail_writes(&self, fail: bool) {
        self.inner.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// How many flushes have succeeded.
    pub fn flush_count(&self) -> u64 {
        self.inner.flushes.load(Ordering::SeqCst)
    }

    fn slot(keyspace: Keyspace) -> usize {
        match keyspace {
            Keyspace::Log => 0,
            Keyspace::Meta => 1,
            Keyspace::Snapshot => 2,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, [Map; 3]>, KvError> {
        self.inner.maps.lock().map_err(|_| KvError::Poisoned)
    }

    /// Fails if failures are injected.
    fn check_write(&self, op: &'static str, keyspace: &'static str) -> Result<(), KvError> {
        if self.inner.fail_writes.load(Ordering::SeqCst) {
            return Err(KvError::Injected { op, keyspace });
        }
        Ok(())
    }

    /// Locks the maps for a write of `op` to `keyspace` and hands its map to
    /// `f`.
    fn write<T>(
        &self,
        op: &'static str,
        keyspace: Keyspace,
        f: impl FnOnce(&mut Map) -> T,
    ) -> Result<T, KvError> {
        self.check_write(op, keyspace.name())?;
        let mut maps = self.lock()?;
        Ok(f(&mut maps[Self::slot(keyspace)]))
    }

    /// Locks the maps for a read of `keyspace` and hands its map to `f`.
    fn read<T>(&self, keyspace: Keyspace, f: impl FnOnce(&Map) -> T) -> Result<T, KvError> {
        let maps = self.lock()?;
        Ok(f(&maps[Self::slot(keyspace)]))
    }
}

impl std::fmt::Debug for MemKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes = self
            .inner
            .maps
            .lock()
            .map(|maps| maps.iter().map(BTreeMap::len).collect::<Vec<_>>());
        f.debug_struct("MemKv")
            .field("keys_per_keyspace", &sizes.as_deref().unwrap_or(&[]))
            .field(
                "fail_writes",
                &self.inner.fail_writes.load(Ordering::SeqCst),
            )
            .finish()
    }
}

impl KvStore for MemKv {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.read(keyspace, |map| map.get(key).cloned())
    }

    fn insert(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.write("insert", keyspace, |map| {
            map.insert(key.to_vec(), value.to_vec());
        })
    }

    fn insert_all(&self, keyspace: Keyspace, items: &[KeyValue]) -> Result<(), KvError> {
        self.write("insert a batch", keyspace, |map| {
            map.extend(items.iter().cloned());
        })
    }

    fn remove(&self, keyspace: Keyspace, key: &[u8]) -> Result<(), KvError> {
        self.write("remove", keyspace, |map| {
            map.remove(key);
        })
    }

    fn scan(&self, keyspace: Keyspace, range: KeyRange) -> Result<Vec<KeyValue>, KvError> {
        if is_empty_range(&range) {
            return Ok(Vec::new());
        }
        self.read(keyspace, |map| {
            map.range(range)
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        })
    }

    fn last(&self, keyspace: Keyspace) -> Result<Option<KeyValue>, KvError> {
        self.read(keyspace, |map| {
            map.last_key_value()
                .map(|(key, value)| (key.clone(), value.clone()))
        })
    }

    fn remove_range(&self, keyspace: Keyspace, range: KeyRange) -> Result<u64, KvError> {
        if is_empty_range(&range) {
            return Ok(0);
        }
        self.write("remove a range", keyspace, |map| {
            let keys: Vec<Vec<u8>> = map.range(range).map(|(key, _)| key.clone()).collect();
            for key in &keys {
                map.remove(key);
            }
            keys.len() as u64
        })
    }

    fn flush(&self) -> Result<(), KvError> {
        self.check_write("flush", "all keyspaces")?;
        self.inner.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::kv::conformance;

    #[test]
    fn mem_kv_passes_the_kv_conformance_test() {
        conformance::check_all(&MemKv::new());
    }

    #[test]
    fn injected_failures_fail_writes_and_flushes_but_not_reads() {
        let kv = MemKv::new();
        kv.insert(Keyspace::Meta, b"a", b"1").unwrap();
        kv.fail_writes(true);
        assert!(matches!(
            kv.insert(Keyspace::Meta, b"a", b"2"),
            Err(KvError::Injected { .. })
        ));
        assert!(kv.remove(Keyspace::Meta, b"a").is_err());
        assert!(kv.flush().is_err());
        assert_eq!(kv.get(Keyspace::Meta, b"a").unwrap(), Some(b"1".to_vec()));
        kv.fail_writes(false);
        kv.flush().unwrap();
        assert_eq!(kv.flush_count(), 1);
    }

    #[test]
    fn clones_share_the_content() {
        let kv = MemKv::new();
        kv.clone().insert(Keyspace::Log, b"k", b"v").unwrap();
        assert_eq!(kv.get(Keyspace::Log, b"k").unwrap(), Some(b"v".to_vec()));
    }
}
