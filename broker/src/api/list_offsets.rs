//! ListOffsets: where a partition starts, where it ends, or the first offset
//! at or after a time.

use std::sync::Arc;

use rivulet_metadata::security::{Access, Operation};

use super::{ApiError, BrokerApi};
use crate::replica::PartitionError;

/// What offset is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The log start.
    Earliest,
    /// The high watermark (the next committed offset).
    Latest,
    /// The first committed offset with a timestamp at or after this (ms).
    /// Kafka's -2 and -1 mean [`Self::Earliest`] and [`Self::Latest`]
    /// (ListOffsets v0+): [`OffsetQuery::from_timestamp`] reads them so.
    Timestamp(i64),
}

impl OffsetQuery {
    /// A timestamp query as Kafka reads it: -2 earliest, -1 latest.
    pub fn from_timestamp(ts: i64) -> Self {
        match ts {
            -2 => Self::Earliest,
            -1 => Self::Latest,
            ts => Self::Timestamp(ts),
        }
    }
}

/// One partition's question.
/// One partition's ListOffsets answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset found; `None` when no committed record is that recent.
    pub offset: Option<u64>,
    /// The leader's epoch.
    pub leader_epoch: u32,
    /// For a timestamp query, the found record's timestamp.
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ListOffsetsPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// What to find (`None`: the request gave nothing, refused).
    pub query: Option<OffsetQuery>,
    /// The leader epoch the client believes current, checked if given.
    pub current_leader_epoch: Option<u32>,
}

impl BrokerApi {
    /// Answers each partition with `(offset, leader epoch)`; the offset is
    /// `None` for a timestamp past every committed record. LATEST and
    /// timestamps wait for a new leader's HW to reach its epoch start
    /// (OFFSET_NOT_AVAILABLE before, KIP-207).
    #[allow(clippy::type_complexity)]
    pub async fn list_offsets(
        &self,
        partitions: Vec<ListOffsetsPartition>,
        access: &Access,
    ) -> Result<Vec<Result<ListedOffset, PartitionError>>, ApiError> {
        let mgr = Arc::clone(&self.mgr);
        let image = self.mgr.image();
        let denied: Vec<Option<PartitionError>> = partitions
            .iter()
            .map(|lp| super::authorize_topic(access, &image, Operation::Describe, &lp.topic).err())
            .collect();
        tokio::task::spawn_blocking(move || {
            partitions
                .into_iter()
                .zip(denied)
                .map(|(lp, denied)| {
                    if let Some(e) = denied {
                        return Err(e);
                    }
                    let p = mgr.partition(&lp.topic, lp.partition)?;
                    let (offsets, epoch, hw_available) =
                        p.leader_offsets(lp.current_leader_epoch)?;
                    let (offset, timestamp_ms) = match lp.query {
                        Some(OffsetQuery::Earliest) => (Some(offsets.log_start_offset), None),
                        Some(OffsetQuery::Latest) => {
                            hw_available?;
                            (Some(offsets.high_watermark), None)
                        }
                        Some(OffsetQuery::Timestamp(ts)) => {
                            hw_available?;
                            match p
                                .log
                                .offset_for_timestamp(ts)?
                                .filter(|(o, _)| *o < offsets.high_watermark)
                            {
                                Some((o, t)) => (Some(o), Some(t)),
                                None => (None, None),
                            }
                        }
                        None => {
                            return Err(PartitionError::InvalidRequest(
                                "give an offset spec (EARLIEST or LATEST) or a timestamp".into(),
                            ))
                        }
                    };
                    Ok(ListedOffset {
                        offset,
                        leader_epoch: epoch,
                        timestamp_ms,
                    })
                })
                .collect()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("list offsets task failed: {e}")))
    }
}
