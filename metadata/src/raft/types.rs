//! openraft's type configuration for the metadata log: what an entry carries
//! ([`MetadataCommand`]) and what applying it answers ([`MetadataResponse`]).
//!
//! Why one command per decision: a controller decision (create a topic,
//! fence a broker and re-elect its partitions) produces several
//! [`Record`]s that only make sense together. Committing them as one entry
//! makes them apply atomically and in order on every node.
//!
//! Invariants:
//! - Both types are wire formats (they travel in `AppendEntries` and client
//!   write responses, and sit in the log on disk): fields may be added with
//!   `#[serde(default)]`, never renamed or removed.
//! - `MetadataResponse::outcomes` has exactly one element per record of the
//!   entry, in the same order; blank and membership entries have none.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::image::ApplyOutcome;
use crate::record::Record;

/// A Raft node's id: the controller's (or learner broker's) node id.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The openraft type configuration of the metadata quorum. A node is
    /// addressed by its gRPC `host:port` ([`openraft::BasicNode::addr`]).
    pub TypeConfig:
        D = MetadataCommand,
        R = MetadataResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft node of the metadata quorum.
pub type Raft = openraft::Raft<TypeConfig>;
/// An entry of the metadata log.
pub type Entry = openraft::Entry<TypeConfig>;
/// The id of a metadata log entry: leader term, leader node and index.
pub type LogId = openraft::LogId<NodeId>;
/// A vote (term, candidate, committed?) as persisted by the log store.
pub type Vote = openraft::Vote<NodeId>;
/// A membership config and the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// What a snapshot covers: last log id, membership and id.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
/// A snapshot of the state machine with its data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// The application data of one Raft entry: the records of one controller
/// decision, applied together and in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataCommand {
    /// The records, in the order they are applied. May be empty (a decision
    /// that changed nothing need not be logged, but is harmless).
    pub records: Vec<Record>,
}

impl MetadataCommand {
    /// A command of `records`.
    pub fn new(records: Vec<Record>) -> Self {
        MetadataCommand { records }
    }
}

/// What applying one Raft entry did to the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataResponse {
    /// The image's metadata offset once this entry was applied. Unchanged by
    /// blank and membership entries.
    pub metadata_offset: u64,
    /// One outcome per record of the entry, in order; empty for blank and
    /// membership entries.
    pub outcomes: Vec<RecordOutcome>,
}

impl MetadataResponse {
    /// Whether every record of the entry was applied (vacuously true for
    /// entries without records).
    pub fn all_applied(&self) -> bool {
        self.outcomes.iter().all(RecordOutcome::is_applied)
    }
}

/// The serializable form of an [`ApplyOutcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordOutcome {
    /// The image changed as the record says.
    Applied,
    /// The record no longer fit the image and changed nothing but the
    /// metadata offset.
    Skipped {
        /// Why, as [`SkipReason`](crate::SkipReason)'s message.
        reason: String,
    },
}

impl RecordOutcome {
    /// Whether the record was applied.
    pub fn is_applied(&self) -> bool {
        matches!(self, RecordOutcome::Applied)
    }
}

impl From<ApplyOutcome> for RecordOutcome {
    fn from(outcome: ApplyOutcome) -> Self {
        match outcome {
            ApplyOutcome::Applied => RecordOutcome::Applied,
            ApplyOutcome::Skipped(reason) => RecordOutcome::Skipped {
                reason: reason.to_string(),
            },
        }
    }
}
