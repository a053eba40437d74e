//! [`KvStore`]: the small key-value interface the Raft store is written
//! against, so the disk engine (sled today) can be swapped or simulated.
//!
//! Why a trait of our own: sled is stable but unmaintained, and the tests
//! want a store that is fast, in memory and able to fail on demand. The log
//! store and the state machine need only ordered byte maps, a few of them,
//! and a way to make writes durable.
//!
//! Invariants every implementation keeps (checked by the conformance test
//! below, run against each one):
//! - Keys sort as bytes (lexicographically), so big-endian integers sort by
//!   value.
//! - Each [`Keyspace`] is an independent map.
//! - [`KvStore::insert_all`] and [`KvStore::remove_range`] are atomic: after
//!   a crash either all of it or none of it is visible.
//! - Writes become durable (survive a crash of the process or the machine)
//!   once a later [`KvStore::flush`] returns `Ok`. Writes survive in order:
//!   a write that is visible after a crash implies every earlier one is.
//! - An inverted or empty range is no error: it matches nothing.

use std::ops::Bound;

/// A named, independent map of a [`KvStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyspace {
    /// Raft log entries, keyed by index as big-endian `u64`.
    Log,
    /// The log store's metadata: vote, committed log id, last purged log id.
    Meta,
    /// The state machine's persisted snapshot (meta and data).
    Snapshot,
}

impl Keyspace {
    /// Every keyspace.
    pub const ALL: [Keyspace; 3] = [Keyspace::Log, Keyspace::Meta, Keyspace::Snapshot];

    /// Its stable name (the sled tree's name, so never change it).
    pub const fn name(self) -> &'static str {
        match self {
            Keyspace::Log => "raft_log",
            Keyspace::Meta => "raft_meta",
            Keyspace::Snapshot => "raft_snapshot",
        }
    }
}

impl std::fmt::Display for Keyspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A range of keys: (start, end) bounds.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A failure of the key-value store.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// sled failed.
    #[error("sled failed to {op} in {keyspace}: {source}")]
    Sled {
        /// What we asked of it.
        op: &'static str,
        /// Where (a keyspace name, or "all keyspaces" for a flush).
        keyspace: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A thread panicked while holding the in-memory store's lock; its
    /// content may be half-updated, so it is not used any more.
    #[error("the in-memory key-value store was poisoned by a panic")]
    Poisoned,
    /// A failure injected by a test through [`MemKv::fail_writes`](crate::raft::MemKv::fail_writes).
    #[error("injected failure: {op} in {keyspace}")]
    Injected {
        /// The operation that was made to fail.
        op: &'static str,
        /// Where.
        keyspace: &'static str,
    },
}

/// An ordered byte key-value store with a few [`Keyspace`]s. See the module
/// header for the guarantees an implementation must give.
///
/// Methods are synchronous: the metadata log is small and written rarely,
/// so a flush blocks its caller (openraft's storage task) for one fsync.
pub trait KvStore: Send + Sync + std::fmt::Debug + 'static {
    /// The value of `key`, if any.
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;

    /// Sets `key` to `value`.
    fn insert(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<(), KvError>;

    /// Sets every key of `items` to its value, atomically.
    fn insert_all(&self, keyspace: Keyspace, items: &[KeyValue]) -> Result<(), KvError>;

    /// Removes `key` (no error if absent).
    fn remove(&self, keyspace: Keyspace, key: &[u8]) -> Result<(), KvError>;

    /// The key-value pairs in `range`, in key order.
    fn scan(&self, keyspace: Keyspace, range: KeyRange) -> Result<Vec<KeyValue>, KvError>;

    /// The pair with the largest key, if the keyspace is not empty.
    fn last(&self, keyspace: Keyspace) -> Result<Option<KeyValue>, KvError>;

    /// Removes every key in `range`, atomically; returns how many.
    fn remove_range(&self, keyspace: Keyspace, range: KeyRange) -> Result<u64, KvError>;

    /// Makes every earlier write of every keyspace durable.
    fn flush(&self) -> Result<(), KvError>;
}

/// Whether `range` can hold no key at all (start after end, or equal with
/// an exclusive bound). Such ranges make `BTreeMap::range` panic, so both
/// implementations answer them up front.
pub(crate) fn is_empty_range(range: &KeyRange) -> bool {
    match range {
        (Bound::Included(start), Bound::Included(end)) => start > end,
        (Bound::Included(start), Bound::Excluded(end))
        | (Bound::Excluded(start), Bound::Included(end))
        | (Bound::Excluded(start), Bound::Excluded(end)) => start >= end,
        _ => false,
    }
}

/// The conformance test every [`KvStore`] implementation must pass.
#[cfg(test)]
pub(crate) mod conformance {
    use std::ops::Bound::{Excluded, Included, Unbounded};

    use super::*;

    fn k(n: u64) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    fn keys(pairs: &[KeyValue]) -> Vec<Vec<u8>> {
        pairs.iter().map(|(key, _)| key.clone()).collect()
    }

    /// Runs every check against a fresh, empty `kv`.
    pub(crate) fn check_all(kv: &impl KvStore) {
        // Empty.
        for keyspace in Keyspace::ALL {
            assert_eq!(kv.get(keyspace, b"x").unwrap(), None);
            assert_eq!(kv.last(keyspace).unwrap(), None);
            assert!(kv
                .scan(keyspace, (Unbounded, Unbounded))
                .unwrap()
                .is_empty());
        }

        // Insert, get, overwrite, remove; keyspaces are independent.
        kv.insert(Keyspace::Meta, b"vote", b"1").unwrap();
        kv.insert(Keyspace::Snapshot, b"vote", b"2").unwrap();
        assert_eq!(
            kv.get(Keyspace::Meta, b"vote").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            kv.get(Keyspace::Snapshot, b"vote").unwrap(),
            Some(b"2".to_vec())
        );
        assert_eq!(kv.get(Keyspace::Log, b"vote").unwrap(), None);
        kv.insert(Keyspace::Meta, b"vote", b"3").unwrap();
        assert_eq!(
            kv.get(Keyspace::Meta, b"vote").unwrap(),
            Some(b"3".to_vec())
        );
        kv.remove(Keyspace::Meta, b"vote").unwrap();
        kv.remove(Keyspace::Meta, b"never-there").unwrap();
        assert_eq!(kv.get(Keyspace::Meta, b"vote").unwrap(), None);
        assert_eq!(
            kv.get(Keyspace::Snapshot, b"vote").unwrap(),
            Some(b"2".to_vec())
        );

        // Big-endian keys sort by value (256 > 255 although its first
        // differing byte is smaller in little-endian).
        let items: Vec<KeyValue> = [256u64, 1, 255, 2, 1000]
            .iter()
            .map(|&n| (k(n), n.to_string().into_bytes()))
            .collect();
        kv.insert_all(Keyspace::Log, &items).unwrap();
        let all = kv.scan(Keyspace::Log, (Unbounded, Unbounded)).unwrap();
        assert_eq!(keys(&all), vec![k(1), k(2), k(255), k(256), k(1000)]);
        assert_eq!(all[3].1, b"256".to_vec());
        assert_eq!(
            kv.last(Keyspace::Log).unwrap(),
            Some((k(1000), b"1000".to_vec()))
        );

        // Bounds.
        let scan = |range: KeyRange| keys(&kv.scan(Keyspace::Log, range).unwrap());
        assert_eq!(scan((Included(k(2)), Excluded(k(256)))), vec![k(2), k(255)]);
        assert_eq!(
            scan((Excluded(k(2)), Included(k(256)))),
            vec![k(255), k(256)]
        );
        assert_eq!(scan((Included(k(256)), Unbounded)), vec![k(256), k(1000)]);
        assert_eq!(scan((Unbounded, Excluded(k(2)))), vec![k(1)]);
        // Inverted and empty ranges match nothing (and do not panic).
        assert!(scan((Included(k(5)), Included(k(4)))).is_empty());
        assert!(scan((Included(k(5)), Excluded(k(5)))).is_empty());
        assert!(scan((Excluded(k(5)), Excluded(k(5)))).is_empty());
        assert_eq!(
            kv.remove_range(Keyspace::Log, (Excluded(k(5)), Included(k(5))))
                .unwrap(),
            0
        );

        // Remove ranges: a suffix, then a prefix.
        assert_eq!(
            kv.remove_range(Keyspace::Log, (Included(k(256)), Unbounded))
                .unwrap(),
            2
        );
        assert_eq!(scan((Unbounded, Unbounded)), vec![k(1), k(2), k(255)]);
        assert_eq!(
            kv.remove_range(Keyspace::Log, (Unbounded, Included(k(2))))
                .unwrap(),
            2
        );
        assert_eq!(scan((Unbounded, Unbounded)), vec![k(255)]);
        assert_eq!(
            kv.last(Keyspace::Log).unwrap(),
            Some((k(255), b"255".to_vec()))
        );

        // Flush succeeds and changes nothing visible.
        kv.flush().unwrap();
        assert_eq!(scan((Unbounded, Unbounded)), vec![k(255)]);
        assert_eq!(
            kv.get(Keyspace::Snapshot, b"vote").unwrap(),
            Some(b"2".to_vec())
        );
    }
}
