//! [`StoreError`]: what can go wrong in the Raft store, and its mapping into
//! openraft's [`StorageError`](openraft::StorageError).
//!
//! Why two error types: our constructors and helpers return a typed error
//! with context; openraft's traits must return its `StorageError`, which
//! names the subject (log, vote, snapshot...) and the verb. Any storage
//! error makes openraft stop the node: a node that cannot trust its disk
//! must not vote or apply.

use std::path::PathBuf;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use crate::raft::kv::KvError;
use crate::raft::types::{LogId, NodeId};

/// A failure of the Raft store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The on-disk store could not be opened.
    #[error("cannot open the metadata store in {}: {source}", path.display())]
    Open {
        /// The directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// The key-value store failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// Something we wrote could not be read back: the store is corrupt or
    /// was written by an incompatible version.
    #[error("cannot decode the {what} in the metadata store: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be encoded (not expected to happen for our types).
    #[error("cannot encode the {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A key of the log keyspace is not an 8-byte big-endian index.
    #[error("the metadata log holds a key of {len} bytes, not an 8-byte index")]
    BadLogKey {
        /// The key's length.
        len: usize,
    },
    /// A log entry is stored under another index than its own.
    #[error("the metadata log holds entry {entry_log_id} under index {key_index}")]
    MisplacedEntry {
        /// The index of the key.
        key_index: u64,
        /// The log id of the entry found there.
        entry_log_id: LogId,
    },
    /// A snapshot's data does not match its meta.
    #[error(
        "snapshot {snapshot_id}: its data covers the log up to {data:?} but its meta says {meta:?}"
    )]
    SnapshotMismatch {
        /// The snapshot's id.
        snapshot_id: String,
        /// The last log id according to the data.
        data: Option<LogId>,
        /// The last log id according to the meta.
        meta: Option<LogId>,
    },
    /// The store (or a snapshot being installed) holds another cluster's
    /// metadata.
    #[error("the metadata belongs to cluster '{found}', not to this cluster '{expected}'")]
    ClusterIdMismatch {
        /// This node's cluster id.
        expected: String,
        /// The cluster id found.
        found: String,
    },
}

/// The storage error openraft wants.
pub(crate) type StorageError = openraft::StorageError<NodeId>;

impl StoreError {
    /// Into openraft's error, for a failure to `verb` the `subject`.
    pub(crate) fn into_storage(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> StorageError {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// Shorthand for `map_err` into openraft's error.
pub(crate) fn storage_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
) -> impl FnOnce(StoreError) -> StorageError {
    move |e| e.into_storage(subject, verb)
}
