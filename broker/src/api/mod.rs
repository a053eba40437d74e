//! The broker's API, protocol-neutral: one file per call, each taking and
//! returning domain types. The gRPC services (`crate::service`) are thin
//! translations onto these calls, and so will be the Kafka wire-protocol
//! listener; per-partition problems come back as [`PartitionError`]s for
//! each edge to map to its own error codes.
//!
//! | call | file | what it decides |
//! | --- | --- | --- |
//! | produce | `produce.rs` | validation, per-partition ordered appends, acks; [`DelayedProduce`] is where acks=all waits |
//! | fetch | `fetch.rs` | node caps, budget, reads below the HW, the long poll |
//! | list offsets | `list_offsets.rs` | EARLIEST / LATEST / by timestamp (KIP-207 aware) |
//! | log dirs | `log_dirs.rs` | the log directory, replica sizes and lags, disk space |
//! | metadata | `metadata.rs` | the image's view, caught up for unknown names |
//! | offset for leader epoch | `offset_for_leader_epoch.rs` | where a consumer's epoch ends on the leader (KIP-320) |
//! | replica fetch | `replica_fetch.rs` | a follower's fetch: fencing, divergence, progress |

mod delete_records;
mod fetch;
mod list_offsets;
mod log_dirs;
mod long_poll;
mod metadata;
mod offset_for_leader_epoch;
mod produce;
mod producer_id;
mod replica_fetch;

use std::sync::Arc;

pub use delete_records::DeleteRecordsPartition;
pub use fetch::{FetchPartition, FetchRequest, FetchResult};
pub use list_offsets::{ListOffsetsPartition, ListedOffset, OffsetQuery};
pub use log_dirs::LogDirView;
pub use metadata::MetadataView;
pub use offset_for_leader_epoch::EpochQuery;
pub use produce::{
    check_entry_count, Acks, DelayedProduce, ProduceEntry, ProduceRequest, ProduceResult,
};
pub use producer_id::{InitProducerIdError, ProducerIdAndEpoch, ProducerIdBlock};
pub use replica_fetch::{ReplicaFetchPartition, ReplicaFetchRequest, ReplicaFetchResult};

use rivulet_metadata::image::MetadataImage;
use rivulet_metadata::security::{Access, Operation, ResourceType};

use crate::replica::{PartitionError, ReplicaManager};

/// TOPIC_AUTHORIZATION_FAILED unless `access` may do `op` on `topic` (the
/// one authorization check of every data-plane call).
pub(crate) fn authorize_topic(
    access: &Access,
    image: &MetadataImage,
    op: Operation,
    topic: &str,
) -> Result<(), PartitionError> {
    if access.allows(image, op, ResourceType::Topic, topic) {
        Ok(())
    } else {
        Err(PartitionError::TopicAuthorizationFailed {
            principal: access.principal.to_string(),
            operation: op.name(),
        })
    }
}

/// Where a client should go for a partition: its leader as the image says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's broker id.
    pub id: u64,
    /// Its client address.
    pub address: String,
    /// The leader epoch.
    pub leader_epoch: u32,
}

/// A whole-request failure (not a partition's): the edge maps it to its
/// protocol's request-level error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed as a whole.
    #[error("{0}")]
    InvalidRequest(String),
    /// A node-to-node call from a broker the image does not know.
    #[error("broker {0} is not registered")]
    UnknownBroker(u64),
    /// The node's in-flight byte budget (of this many bytes) stayed spent
    /// for [`crate::budget::BUDGET_WAIT`]: retriable.
    #[error("the node's budget of {0} bytes of client requests in flight is spent (--max-inflight-bytes); retry shortly")]
    Busy(usize),
    /// The node is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// A blocking task failed (a bug); the message says which.
    #[error("{0}")]
    Internal(String),
}

/// The broker's calls over one replica manager; cheap to clone.
#[derive(Debug, Clone)]
pub struct BrokerApi {
    pub(crate) mgr: Arc<ReplicaManager>,
}

impl BrokerApi {
    /// The API over `mgr`.
    pub fn new(mgr: Arc<ReplicaManager>) -> Self {
        Self { mgr }
    }

    /// The leader a client refused by `e` should go to, when the error says
    /// "elsewhere" and the image knows one.
    pub fn redirect(&self, topic: &str, partition: u32, e: &PartitionError) -> Option<LeaderInfo> {
        e.is_redirect()
            .then(|| self.mgr.leader_hint(topic, partition))
            .flatten()
    }
}
