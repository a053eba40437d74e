//! DescribeLogDirs: the node's one log directory, each hosted replica's
//! size and (as follower) how far it is behind, and the disk's space.
//! Consoles show a broker as offline without it.

use std::path::PathBuf;

use rivulet_metadata::security::{Access, Operation, ResourceType, CLUSTER_RESOURCE};

use super::BrokerApi;

/// The log directory as DescribeLogDirs reports it.
#[derive(Debug, Clone)]
pub struct LogDirView {
    /// Its path.
    pub path: PathBuf,
    /// `(topic, partition, bytes, offset lag)` per hosted replica (lag: the
    /// HW minus the log end, 0 on a leader).
    pub replicas: Vec<(String, u32, u64, u64)>,
    /// The file system's size and free space, if known.
    pub total_bytes: Option<u64>,
    pub usable_bytes: Option<u64>,
}

impl BrokerApi {
    /// The log directory, or `None` unless `access` may DESCRIBE the
    /// cluster (Kafka's rule for DescribeLogDirs).
    pub fn describe_log_dir(&self, access: &Access) -> Option<LogDirView> {
        if !access.allows(
            &self.mgr.image(),
            Operation::Describe,
            ResourceType::Cluster,
            CLUSTER_RESOURCE,
        ) {
            return None;
        }
        let path = self.mgr.config.log_dir.clone();
        let mut replicas: Vec<(String, u32, u64, u64)> = self
            .mgr
            .all()
            .iter()
            .map(|p| {
                let o = p.log.offsets();
                let lag = o.high_watermark.saturating_sub(o.log_end_offset);
                (p.topic.clone(), p.partition, p.log.size_bytes(), lag)
            })
            .collect();
        replicas.sort();
        Some(LogDirView {
            total_bytes: fs2::total_space(&path).ok(),
            usable_bytes: fs2::available_space(&path).ok(),
            path,
            replicas,
        })
    }
}
