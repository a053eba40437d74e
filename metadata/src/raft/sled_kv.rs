//! [`SledKv`]: the [`KvStore`] on disk, one `sled::Db` with one tree per
//! [`Keyspace`].
//!
//! Why sled: embedded, pure Rust, ordered, with atomic batches and an
//! explicit fsync (`flush`). It is unmaintained and known to use much disk
//! and memory on heavy write loads; the metadata log is small and written
//! rarely, and [`KvStore`] keeps it replaceable.
//!
//! Invariants:
//! - All trees share one `Db`, hence one sled log: a flush makes every
//!   earlier write of every keyspace durable, and writes are recovered in
//!   order.
//! - The page cache is capped at [`SLED_CACHE_CAPACITY_BYTES`] (sled's
//!   default is 1 GiB).

use std::path::Path;

use crate::raft::error::StoreError;
use crate::raft::kv::{is_empty_range, KeyRange, KeyValue, Keyspace, KvError, KvStore};

/// sled's page cache limit: the metadata image and its log are small.
pub const SLED_CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// How long [`SledKv::open`] waits for a directory lock still held by a
/// closing database (another process holding it gets an error after this).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The sled implementation of [`KvStore`]. Cloning is cheap and shares the
/// database.
#[derive(Debug, Clone)]
pub struct SledKv {
    /// The database; kept so that flushes go through it and so that it stays
    /// open as long as any tree is used.
    db: sled::Db,
    /// The tree of [`Keyspace::Log`].
    log: sled::Tree,
    /// The tree of [`Keyspace::Meta`].
    meta: sled::Tree,
    /// The tree of [`Keyspace::Snapshot`].
    snapshot: sled::Tree,
}

impl SledKv {
    /// Opens (or creates) the database in directory `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        // sled releases its directory lock only when its background flusher
        // thread lets go of the database, shortly after the last handle is
        // dropped; a restart in the same process (tests, a node restarting its
        // store) can arrive first. Retry a lock held that way for a while.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new()
                .path(path)
                .cache_capacity(SLED_CACHE_CAPACITY_BYTES)
                .open()
            {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(open_error(e)),
            }
        };
        let tree = |keyspace: Keyspace| db.open_tree(keyspace.name()).map_err(open_error);
        Ok(SledKv {
            log: tree(Keyspace::Log)?,
            meta: tree(Keyspace::Meta)?,
            snapshot: tree(Keyspace::Snapshot)?,
            db,
        })
    }

    fn tree(&self, keyspace: Keyspace) -> &sled::Tree {
        match keyspace {
            Keyspace::Log => &self.log,
            Keyspace::Meta => &self.meta,
            Keyspace::Snapshot => &self.snapshot,
        }
    }
}

/// Maps a sled error of `op` in `keyspace`.
fn sled_error(op: &'static str, keyspace: Keyspace) -> impl FnOnce(sled::Error) -> KvError {
    move |source| KvError::Sled {
        op,
        keyspace: keyspace.name(),
        source,
    }
}

impl KvStore for SledKv {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let value = self
            .tree(keyspace)
            .get(key)
            .map_err(sled_error("get", keyspace))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn insert(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.tree(keyspace)
            .insert(key, value)
            .map_err(sled_error("insert", keyspace))?;
        Ok(())
    }

    fn insert_all(&self, keyspace: Keyspace, items: &[KeyValue]) -> Result<(), KvError> {
        let mut batch = sled::Batch::default();
        for (key, value) in items {
            batch.insert(key.as_slice(), value.as_slice());
        }
        self.tree(keyspace)
            .apply_batch(batch)
            .map_err(sled_error("insert a batch", keyspace))
    }

    fn remove(&self, keyspace: Keyspace, key: &[u8]) -> Result<(), KvError> {
        self.tree(keyspace)
            .remove(key)
            .map_err(sled_error("remove", keyspace))?;
        Ok(())
    }

    fn scan(&self, keyspace: Keyspace, range: KeyRange) -> Result<Vec<KeyValue>, KvError> {
        if is_empty_range(&range) {
            return Ok(Vec::new());
        }
        self.tree(keyspace)
            .range(range)
            .map(|item| {
                item.map(|(key, value)| (key.to_vec(), value.to_vec()))
                    .map_err(sled_error("scan", keyspace))
            })
            .collect()
    }

    fn last(&self, keyspace: Keyspace) -> Result<Option<KeyValue>, KvError> {
        let last = self
            .tree(keyspace)
            .last()
            .map_err(sled_error("read the last key", keyspace))?;
        Ok(last.map(|(key, value)| (key.to_vec(), value.to_vec())))
    }

    fn remove_range(&self, keyspace: Keyspace, range: KeyRange) -> Result<u64, KvError> {
        if is_empty_range(&range) {
            return Ok(0);
        }
        let tree = self.tree(keyspace);
        let mut batch = sled::Batch::default();
        let mut removed = 0u64;
        for key in tree.range(range).keys() {
            batch.remove(key.map_err(sled_error("scan", keyspace))?);
            removed += 1;
        }
        tree.apply_batch(batch)
            .map_err(sled_error("remove a range", keyspace))?;
        Ok(removed)
    }

    fn flush(&self) -> Result<(), KvError> {
        self.db.flush().map_err(|source| KvError::Sled {
            op: "flush",
            keyspace: "all keyspaces",
            source,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::kv::conformance;

    #[test]
    fn sled_kv_passes_the_kv_conformance_test() {
        let dir = tempfile::tempdir().unwrap();
        conformance::check_all(&SledKv::open(dir.path()).unwrap());
    }

    #[test]
    fn sled_kv_keeps_flushed_writes_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = SledKv::open(dir.path()).unwrap();
            kv.insert(Keyspace::Meta, b"vote", b"v").unwrap();
            kv.insert_all(
                Keyspace::Log,
                &[(vec![0, 1], vec![1]), (vec![0, 2], vec![2])],
            )
            .unwrap();
            kv.flush().unwrap();
        }
        let kv = SledKv::open(dir.path()).unwrap();
        assert_eq!(
            kv.get(Keyspace::Meta, b"vote").unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(kv.last(Keyspace::Log).unwrap(), Some((vec![0, 2], vec![2])));
    }

    #[test]
    fn opening_a_file_as_a_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = SledKv::open(&file).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
    }
}
