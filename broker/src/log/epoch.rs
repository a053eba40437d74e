//! The leader-epoch cache: for each leader epoch in the log, the offset of its
//! first batch (Kafka's `LeaderEpochFileCache`, KIP-101).
//!
//! A follower asks its leader "where does my last epoch end in your log?"; the
//! answer ([`LeaderEpochCache::end_offset_for`]) tells it how much of its tail
//! diverged and must be truncated before it fetches again. Invariants: epochs
//! strictly increase and start offsets never decrease along the list.

/// Epoch → start offset, in increasing epoch order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaderEpochCache {
    /// `(epoch, start_offset)` pairs, strictly increasing in epoch.
    entries: Vec<(u32, u64)>,
}

impl LeaderEpochCache {
    /// Builds a cache from checkpointed entries, dropping any that break the
    /// invariants (a damaged file must not produce a wrong answer).
    pub(crate) fn from_entries(entries: Vec<(u32, u64)>) -> Self {
        let mut cache = Self::default();
        for (e, o) in entries {
            cache.assign(e, o);
        }
        cache
    }

    pub(crate) fn entries(&self) -> &[(u32, u64)] {
        &self.entries
    }

    /// The newest epoch, if any batch was ever stamped.
    pub(crate) fn latest_epoch(&self) -> Option<u32> {
        self.entries.last().map(|e| e.0)
    }

    /// Records that `epoch` starts at `start_offset`. Returns true if the cache
    /// changed (so the caller checkpoints it). Older or equal epochs are ignored.
    pub(crate) fn assign(&mut self, epoch: u32, start_offset: u64) -> bool {
        match self.entries.last() {
            Some(&(e, o)) if epoch <= e || start_offset < o => false,
            _ => {
                self.entries.push((epoch, start_offset));
                true
            }
        }
    }

    /// For a follower whose last fetched epoch is `epoch`: the largest epoch
    /// `<= epoch` in this log and the offset where it ends (the start of the
    /// next epoch, or `log_end_offset` if it is the latest). `None` if `epoch`
    /// is older than every epoch here.
    pub(crate) fn end_offset_for(&self, epoch: u32, log_end_offset: u64) -> Option<(u32, u64)> {
        let idx = self.entries.partition_point(|&(e, _)| e <= epoch);
        if idx == 0 {
            return None;
        }
        let (found, _) = self.entries[idx - 1];
        let end = self.entries.get(idx).map_or(log_end_offset, |&(_, o)| o);
        Some((found, end))
    }

    /// Drops epochs that start at or after `offset` (the log was truncated there).
    pub(crate) fn truncate_from_end(&mut self, offset: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, o)| o < offset);
        before != self.entries.len()
    }

    /// Retention moved the log start to `offset`: epochs wholly before it go,
    /// and the epoch that spans it now starts at `offset`.
    pub(crate) fn truncate_from_start(&mut self, offset: u64) -> bool {
        let spanning = self.entries.partition_point(|&(_, o)| o <= offset);
        if spanning == 0 {
            return false;
        }
        let changed = spanning > 1 || self.entries[0].1 != offset;
        self.entries.drain(..spanning - 1);
        self.entries[0].1 = offset;
        changed
    }

    /// Drops everything (the log was reset to an empty state).
    pub(crate) fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kafka_semantics() {
        let mut c = LeaderEpochCache::default();
        assert!(c.assign(1, 0));
        assert!(c.assign(3, 10));
        assert!(!c.assign(2, 12), "older epochs are ignored");
        assert!(!c.assign(3, 12), "the same epoch keeps its first offset");
        assert!(c.assign(5, 20));
        assert_eq!(c.end_offset_for(0, 30), None);
        assert_eq!(c.end_offset_for(1, 30), Some((1, 10)));
        assert_eq!(c.end_offset_for(2, 30), Some((1, 10)));
        assert_eq!(c.end_offset_for(3, 30), Some((3, 20)));
        assert_eq!(c.end_offset_for(4, 30), Some((3, 20)));
        assert_eq!(c.end_offset_for(5, 30), Some((5, 30)));
        assert_eq!(c.end_offset_for(9, 30), Some((5, 30)));
    }

    #[test]
    fn truncation_both_ends() {
        let mut c = LeaderEpochCache::from_entries(vec![(1, 0), (3, 10), (5, 20)]);
        assert!(c.truncate_from_end(20));
        assert_eq!(c.entries(), &[(1, 0), (3, 10)]);
        assert!(c.truncate_from_start(12));
        assert_eq!(c.entries(), &[(3, 12)]);
        assert!(!c.truncate_from_start(5));
        assert_eq!(c.entries(), &[(3, 12)]);
    }

    #[test]
    fn damaged_entries_are_dropped() {
        let c = LeaderEpochCache::from_entries(vec![(1, 5), (0, 9), (2, 3), (4, 7)]);
        assert_eq!(c.entries(), &[(1, 5), (4, 7)]);
    }
}
