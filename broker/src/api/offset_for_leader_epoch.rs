//! OffsetForLeaderEpoch for consumers (KIP-320): after a leader change a
//! consumer asks where the epoch of its last fetched record ends on the new
//! leader; an end below its position means the log was truncated under it.

use rivulet_metadata::security::{Access, Operation};

use super::{authorize_topic, BrokerApi};
use crate::replica::PartitionError;

/// One partition's question.
#[derive(Debug, Clone)]
pub struct EpochQuery {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The leader epoch the client believes current (fenced if stale).
    pub current_leader_epoch: Option<u32>,
    /// The epoch whose end is asked for.
    pub leader_epoch: u32,
}

impl BrokerApi {
    /// Per partition, in order: `Some((epoch, end offset))`, or `None` when
    /// the epoch predates the leader's log. Needs DESCRIBE on the topic.
    pub fn offset_for_leader_epoch(
        &self,
        queries: &[EpochQuery],
        access: &Access,
    ) -> Vec<Result<Option<(u32, u64)>, PartitionError>> {
        let image = self.mgr.image();
        queries
            .iter()
            .map(|q| {
                authorize_topic(access, &image, Operation::Describe, &q.topic)?;
                self.mgr
                    .partition(&q.topic, q.partition)?
                    .epoch_end_offset(q.current_leader_epoch, q.leader_epoch)
            })
            .collect()
    }
}
