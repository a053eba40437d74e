//! What a check found, per partition and for the run.

use super::*;

/// The check of one partition; see the module docs for each count.
#[derive(Debug, Clone, Default)]
pub struct PartitionReport {
    /// The partition.
    pub partition: u32,
    /// Records read back.
    pub records: u64,
    /// Acked records missing or moved (must be 0).
    pub lost: u64,
    /// Offsets out of place, or HW != record count (must be 0).
    pub offset_gaps: u64,
    /// Records of refused sends present (must be 0).
    pub failed_present: u64,
    /// Values nobody sent (must be 0).
    pub foreign: u64,
    /// One value at two offsets (must be 0).
    pub same_value_twice: u64,
    /// Acked sends of a producer out of order (must be 0).
    pub reordered: u64,
    /// Sends present in part or scattered (must be 0).
    pub torn_batches: u64,
    /// Extra copies of retried messages (allowed, reported).
    pub duplicates: u64,
    /// The first few problems, in words.
    pub examples: Vec<String>,
}

impl PartitionReport {
    pub(super) fn example(&mut self, what: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(what);
        }
    }

    /// Broken invariants (everything but duplicates).
    pub fn violations(&self) -> u64 {
        self.lost
            + self.offset_gaps
            + self.failed_present
            + self.foreign
            + self.same_value_twice
            + self.reordered
            + self.torn_batches
    }

    /// Panics, with examples, if an invariant broke.
    pub fn assert_ok(&self) {
        assert!(
            self.violations() == 0,
            "partition {}: {self:?}\n{}",
            self.partition,
            self.examples.join("\n")
        );
    }
}

/// The check of a run, after its faults healed.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Per partition.
    pub partitions: Vec<PartitionReport>,
    /// Per partition, what its reader saw.
    pub readers: Vec<ReaderLog>,
    /// Sends made in the run.
    pub sends: u64,
    /// Records acknowledged in the run.
    pub acked: u64,
    /// Records of refused sends in the run.
    pub failed: u64,
    /// Records of sends with an unknown outcome in the run.
    pub unknown: u64,
    /// Records the reader consumed that the final log does not hold at the
    /// same offset (violation).
    pub consumed_vanished: u64,
    /// The longest stretch of the run in which some partition had no
    /// acknowledged send, and which partition.
    pub longest_unavailable: Duration,
    /// The partition of `longest_unavailable`.
    pub longest_unavailable_partition: u32,
    /// Examples of `consumed_vanished`.
    pub vanished_examples: Vec<String>,
    /// Partitions that could not be read back (violation): why.
    pub unreadable: Vec<String>,
}

impl CheckReport {
    /// Acked records missing or moved, over all partitions.
    pub fn lost(&self) -> u64 {
        self.partitions.iter().map(|p| p.lost).sum()
    }

    /// Records stored twice, over all partitions: extra sends of a message
    /// present, and values at two offsets (how a duplicate of the
    /// idempotent workload shows; that one is also a violation).
    pub fn duplicates(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.duplicates + p.same_value_twice)
            .sum()
    }

    /// HW lag after failover, over all partitions: (count, deepest).
    pub fn hw_lag(&self) -> (u64, u64) {
        let n = self.readers.iter().map(|r| r.hw_lag_after_failover).sum();
        let max = self.readers.iter().map(|r| r.hw_lag_max).max().unwrap_or(0);
        (n, max)
    }

    /// Every broken invariant, counted.
    pub fn violations(&self) -> u64 {
        self.partitions
            .iter()
            .map(PartitionReport::violations)
            .sum::<u64>()
            + self
                .readers
                .iter()
                .map(|r| {
                    // A HW lower than one already answered, whether in the
                    // same epoch or a newer one, is time running backwards.
                    r.hw_backwards_same_epoch
                        + r.hw_lag_after_failover
                        + r.committed_position_out_of_range
                })
                .sum::<u64>()
            + self.consumed_vanished
            + self.unreadable.len() as u64
    }

    /// Examples of what broke, partition by partition.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.unreadable.clone();
        out.extend(self.vanished_examples.iter().cloned());
        for p in &self.partitions {
            if p.violations() > 0 {
                out.extend(p.examples.iter().cloned());
            }
        }
        for r in &self.readers {
            out.extend(r.examples.iter().cloned());
        }
        out
    }

    /// Panics with the problems if an invariant broke.
    pub fn assert_ok(&self) {
        assert!(
            self.violations() == 0,
            "{} violation(s): {self:?}\n{}",
            self.violations(),
            self.problems().join("\n")
        );
    }
}

// ----- talking to the nodes -----
