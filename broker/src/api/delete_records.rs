//! DeleteRecords (Kafka's KIP-107): a partition's leader moves its log start
//! up, so records below it are no longer served and whole segments below it
//! are deleted; followers follow the leader's log start with their next
//! fetch.

use std::sync::Arc;

use rivulet_metadata::security::{Access, Operation};

use super::{ApiError, BrokerApi};
use crate::replica::PartitionError;

/// One partition of a DeleteRecords request.
#[derive(Debug, Clone)]
pub struct DeleteRecordsPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Delete every record below this offset; `None`: below the high
    /// watermark (Kafka's -1).
    pub before: Option<u64>,
}

impl BrokerApi {
    /// Deletes records below each partition's offset on this node, which must
    /// lead it; the caller needs DELETE on the topic (as Kafka). Each
    /// partition's new log start (Kafka's low watermark), or why not. An
    /// offset past the high watermark is OFFSET_OUT_OF_RANGE.
    pub async fn delete_records(
        &self,
        partitions: Vec<DeleteRecordsPartition>,
        access: &Access,
    ) -> Result<Vec<Result<u64, PartitionError>>, ApiError> {
        let mgr = Arc::clone(&self.mgr);
        let image = self.mgr.image();
        let denied: Vec<Option<PartitionError>> = partitions
            .iter()
            .map(|d| super::authorize_topic(access, &image, Operation::Delete, &d.topic).err())
            .collect();
        tokio::task::spawn_blocking(move || {
            partitions
                .into_iter()
                .zip(denied)
                .map(|(d, denied)| {
                    if let Some(e) = denied {
                        return Err(e);
                    }
                    mgr.partition(&d.topic, d.partition)?
                        .delete_records(d.before)
                })
                .collect()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("delete records task failed: {e}")))
    }
}
