//! The leader's view of one partition's replication: each follower's
//! progress, the in-sync replica set (ISR) and the high watermark (HW).
//!
//! Pure state with the clock passed in, the way Kafka's `Partition` tracks
//! `Replica`s: the async replica manager feeds it follower fetches and log
//! appends, and acts on what it returns (advance the HW, propose an ISR
//! change through the controller, answer a follower with a diverging epoch).
//!
//! ```text
//!  follower fetch(offset o, last epoch e) ──► check_fetch ──► Diverging{epoch,end} ──► follower truncates
//!                                                  │ Ok
//!                                                  ▼
//!                                  on_fetch: follower LEO = o, caught-up time
//!                                                  │
//!          maybe_advance_hw: HW = min LEO over the ISR (never moves back)
//!          isr_to_shrink (lagging > replica.lag.time.max)  ──► AlterPartition
//!          isr_to_expand (a follower reached the HW)       ──► AlterPartition
//!                                                  │ committed in the metadata image
//!                                                  ▼
//!                                  on_isr_committed(new isr, partition epoch)
//! ```
//!
//! Invariants:
//! - The leader is always in the ISR; an ISR proposal never drops it.
//! - While an ISR change is in flight, the HW is computed over the union of
//!   the committed and the proposed ISR (KIP-497's "maximal ISR"), so a
//!   shrink cannot advance the HW before the controller has committed it.
//! - The HW never decreases while this broker leads in this epoch.

use std::collections::{BTreeMap, BTreeSet};

use crate::log::PartitionLog;

/// The broker id of a replica, as the leader's replication state counts
/// it: a plain integer, so this pure core needs nothing from the metadata
/// crate.
pub type ReplicaId = u64;

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower has every offset below this (its last fetch offset).
    pub log_end_offset: u64,
    /// Last time (ms) the follower was known to be fully caught up.
    pub last_caught_up_ms: i64,
    /// The leader's log end offset at the follower's previous fetch.
    prev_fetch_leader_leo: u64,
    /// When the previous fetch happened (ms).
    prev_fetch_ms: i64,
    /// The follower reported it cannot write its log: out of sync until it
    /// fetches without that report.
    pub storage_failed: bool,
}

/// Replication state of a partition this broker leads.
#[derive(Debug, Clone)]
pub struct LeaderState {
    /// This broker.
    leader: ReplicaId,
    /// The epoch this broker leads in.
    leader_epoch: u32,
    /// The partition epoch of the committed state (for AlterPartition CAS).
    partition_epoch: u32,
    /// The committed ISR, leader included.
    isr: BTreeSet<ReplicaId>,
    /// An ISR change sent to the controller and not yet answered.
    pending_isr: Option<BTreeSet<ReplicaId>>,
    /// Every other replica's progress.
    followers: BTreeMap<ReplicaId, FollowerProgress>,
    /// Offsets below this are committed.
    high_watermark: u64,
}

/// Why a follower's fetch cannot be served as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchCheck {
    /// Serve from the fetch offset.
    Ok,
    /// The follower's log diverged: it must truncate to `end_offset` (its
    /// copy of `epoch` ends there here) and fetch again (KIP-320).
    Diverging {
        /// The largest epoch here that is `<=` the follower's last epoch.
        epoch: u32,
        /// Where that epoch ends in the leader's log.
        end_offset: u64,
    },
    /// The request carries an older leader epoch than this leader's.
    FencedLeaderEpoch,
    /// The request carries a newer leader epoch than this broker knows.
    UnknownLeaderEpoch,
}

/// Checks a follower fetch: the leader epoch it believes in, and whether its
/// log (ending at `fetch_offset` in `last_fetched_epoch`) agrees with ours.
pub fn check_fetch(
    my_leader_epoch: u32,
    request_leader_epoch: u32,
    fetch_offset: u64,
    last_fetched_epoch: Option<u32>,
    log: &dyn PartitionLog,
) -> FetchCheck {
    if request_leader_epoch < my_leader_epoch {
        return FetchCheck::FencedLeaderEpoch;
    }
    if request_leader_epoch > my_leader_epoch {
        return FetchCheck::UnknownLeaderEpoch;
    }
    let Some(last_epoch) = last_fetched_epoch else {
        return FetchCheck::Ok;
    };
    match log.end_offset_for_epoch(last_epoch) {
        // Our copy of that epoch ends before the follower's offset, or our
        // log's latest epoch <= theirs is a different one: diverged.
        Some((epoch, end_offset)) if epoch != last_epoch || end_offset < fetch_offset => {
            FetchCheck::Diverging {
                epoch,
                end_offset: end_offset.min(fetch_offset),
            }
        }
        Some(_) => FetchCheck::Ok,
        // The follower's epoch predates our whole log: truncate to our start.
        None => FetchCheck::Diverging {
            epoch: 0,
            end_offset: log.offsets().log_start_offset.min(fetch_offset),
        },
    }
}

impl LeaderState {
    /// State for a broker that just became leader: every follower starts
    /// with unknown progress (offset 0), caught up as of `now_ms` so that
    /// followers in the ISR get a full lag window before they can be dropped.
    pub fn new(
        leader: ReplicaId,
        leader_epoch: u32,
        partition_epoch: u32,
        replicas: &[ReplicaId],
        isr: &[ReplicaId],
        high_watermark: u64,
        now_ms: i64,
    ) -> Self {
        let followers = replicas
            .iter()
            .filter(|r| **r != leader)
            .map(|r| {
                (
                    *r,
                    FollowerProgress {
                        log_end_offset: 0,
                        last_caught_up_ms: now_ms,
                        prev_fetch_leader_leo: 0,
                        prev_fetch_ms: now_ms,
                        storage_failed: false,
                    },
                )
            })
            .collect();
        let mut isr: BTreeSet<ReplicaId> = isr.iter().copied().collect();
        isr.insert(leader);
        Self {
            leader,
            leader_epoch,
            partition_epoch,
            isr,
            pending_isr: None,
            followers,
            high_watermark,
        }
    }

    /// The epoch this broker leads in.
    pub fn leader_epoch(&self) -> u32 {
        self.leader_epoch
    }

    /// The committed partition epoch.
    pub fn partition_epoch(&self) -> u32 {
        self.partition_epoch
    }

    /// The committed ISR.
    pub fn isr(&self) -> Vec<ReplicaId> {
        self.isr.iter().copied().collect()
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// A follower's progress.
    pub fn follower(&self, id: ReplicaId) -> Option<&FollowerProgress> {
        self.followers.get(&id)
    }

    /// Whether an ISR change awaits the controller.
    pub fn isr_change_pending(&self) -> bool {
        self.pending_isr.is_some()
    }

    /// acks=all may proceed: the committed ISR has at least `min_insync` members.
    pub fn enough_replicas(&self, min_insync: u32) -> bool {
        self.isr.len() >= min_insync as usize
    }

    /// Records a follower fetch at `fetch_offset` (it holds every offset below)
    /// when the leader's log ends at `leader_leo`. Kafka's rule for "caught
    /// up": the fetch reached the leader's end, or reached the end the leader
    /// had at the follower's previous fetch (then it was caught up back then).
    /// Returns false for a broker that is not a follower of this partition.
    pub fn on_fetch(
        &mut self,
        follower: ReplicaId,
        fetch_offset: u64,
        leader_leo: u64,
        now_ms: i64,
    ) -> bool {
        let Some(p) = self.followers.get_mut(&follower) else {
            return false;
        };
        if fetch_offset >= leader_leo {
            p.last_caught_up_ms = now_ms;
        } else if fetch_offset >= p.prev_fetch_leader_leo {
            p.last_caught_up_ms = p.last_caught_up_ms.max(p.prev_fetch_ms);
        }
        p.log_end_offset = fetch_offset.min(leader_leo);
        p.prev_fetch_leader_leo = leader_leo;
        p.prev_fetch_ms = now_ms;
        p.storage_failed = false;
        true
    }

    /// Records that `follower` cannot write its log: it counts as not caught
    /// up (the next ISR check removes it) and cannot rejoin until it fetches
    /// without this report.
    pub fn on_storage_failure(&mut self, follower: ReplicaId) {
        if let Some(p) = self.followers.get_mut(&follower) {
            p.storage_failed = true;
            p.last_caught_up_ms = i64::MIN / 2;
        }
    }

    /// The ISR the HW is computed over: committed ∪ pending.
    fn maximal_isr(&self) -> BTreeSet<ReplicaId> {
        let mut all = self.isr.clone();
        if let Some(p) = &self.pending_isr {
            all.extend(p.iter().copied());
        }
        all
    }

    /// Recomputes the HW as the minimum log end offset over the (maximal)
    /// ISR, the leader counting with `leader_leo` (its durable end, when the
    /// flush policy requires durability). Returns the new HW if it advanced.
    pub fn maybe_advance_hw(&mut self, leader_leo: u64) -> Option<u64> {
        let min = self
            .maximal_isr()
            .iter()
            .map(|b| {
                if *b == self.leader {
                    leader_leo
                } else {
                    self.followers.get(b).map_or(0, |p| p.log_end_offset)
                }
            })
            .min()
            .unwrap_or(leader_leo);
        (min > self.high_watermark).then(|| {
            self.high_watermark = min;
            min
        })
    }

    /// The ISR to propose when followers in it have not caught up for
    /// `lag_max_ms`; `None` if no change is due or one is already in flight.
    pub fn isr_to_shrink(&self, now_ms: i64, lag_max_ms: i64) -> Option<Vec<ReplicaId>> {
        if self.pending_isr.is_some() {
            return None;
        }
        let keep: Vec<ReplicaId> = self
            .isr
            .iter()
            .copied()
            .filter(|b| {
                *b == self.leader
                    || self
                        .followers
                        .get(b)
                        .is_some_and(|p| now_ms - p.last_caught_up_ms <= lag_max_ms)
            })
            .collect();
        (keep.len() < self.isr.len()).then_some(keep)
    }

    /// The ISR to propose when followers outside it caught up: their log end
    /// reached the HW and the start of this leader's epoch (so they hold
    /// everything the leader wrote as leader). `None` if no change is due.
    ///
    /// Only followers `live` says are unfenced may join (KIP-841): a follower
    /// that died caught up still looks caught up, and proposing it would
    /// hold the HW back (the pending ISR counts) only to be refused.
    pub fn isr_to_expand(
        &self,
        epoch_start_offset: u64,
        live: &dyn Fn(ReplicaId) -> bool,
    ) -> Option<Vec<ReplicaId>> {
        if self.pending_isr.is_some() {
            return None;
        }
        let joiners: Vec<ReplicaId> = self
            .followers
            .iter()
            .filter(|(b, p)| {
                !self.isr.contains(b)
                    && live(**b)
                    && !p.storage_failed
                    && p.log_end_offset >= self.high_watermark
                    && p.log_end_offset >= epoch_start_offset
            })
            .map(|(b, _)| *b)
            .collect();
        if joiners.is_empty() {
            return None;
        }
        let mut isr = self.isr.clone();
        isr.extend(joiners);
        Some(isr.into_iter().collect())
    }

    /// Marks `proposed` as sent to the controller.
    pub fn isr_change_sent(&mut self, proposed: &[ReplicaId]) {
        self.pending_isr = Some(proposed.iter().copied().collect());
    }

    /// The controller committed a partition state (ours, or someone else's):
    /// adopt its ISR and epoch and clear the pending change.
    pub fn on_isr_committed(&mut self, isr: &[ReplicaId], partition_epoch: u32) {
        self.isr = isr.iter().copied().collect();
        self.isr.insert(self.leader);
        self.partition_epoch = partition_epoch;
        self.pending_isr = None;
    }

    /// The controller refused the change (stale epoch, ineligible replica):
    /// drop it; the next metadata image brings the current state.
    pub fn on_isr_refused(&mut self) {
        self.pending_isr = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{build_batch, RecordInput};
    use crate::log::{AppendOrigin, LogConfig, MemoryLog};

    fn state() -> LeaderState {
        LeaderState::new(1, 5, 7, &[1, 2, 3], &[1, 2, 3], 0, 1_000)
    }

    #[test]
    fn a_follower_that_cannot_write_leaves_the_isr_at_once_and_rejoins_when_healthy() {
        let mut s = state();
        s.on_fetch(2, 10, 10, 1_100);
        s.on_fetch(3, 10, 10, 1_100);
        assert_eq!(s.isr_to_shrink(1_200, 10_000), None);
        s.on_fetch(3, 10, 12, 1_200);
        s.on_storage_failure(3);
        assert_eq!(s.isr_to_shrink(1_200, 10_000), Some(vec![1, 2]));
        s.isr_change_sent(&[1, 2]);
        s.on_isr_committed(&[1, 2], 8);
        // Still failing: not taken back even though its offset looks fine.
        s.on_fetch(2, 12, 12, 1_300);
        s.maybe_advance_hw(12);
        s.on_fetch(3, 12, 12, 1_300);
        s.on_storage_failure(3);
        assert_eq!(s.isr_to_expand(0, &|_| true), None);
        // Healthy again: rejoins.
        s.on_fetch(3, 12, 12, 1_400);
        assert_eq!(s.isr_to_expand(0, &|_| true), Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_dead_follower_that_looks_caught_up_is_never_proposed_and_a_refusal_frees_the_hw() {
        // Followers 2 and 3 died caught up; the controller fenced them and
        // shrank the ISR to the leader.
        let mut s = state();
        s.on_fetch(2, 10, 10, 1_100);
        s.on_fetch(3, 10, 10, 1_100);
        assert_eq!(s.maybe_advance_hw(10), Some(10));
        s.on_isr_committed(&[1], 8);
        let fenced = |b: ReplicaId| b == 1;
        assert_eq!(
            s.isr_to_expand(0, &fenced),
            None,
            "fenced brokers may not join"
        );
        // Before the fix the leader proposed them, and while that was
        // pending an acks=1 append could not move the HW.
        let proposed = s.isr_to_expand(0, &|_| true).unwrap();
        s.isr_change_sent(&proposed);
        assert_eq!(s.maybe_advance_hw(11), None, "pending joiners hold the HW");
        s.on_isr_refused();
        assert_eq!(s.maybe_advance_hw(11), Some(11), "the refusal frees it");
    }

    #[test]
    fn hw_is_the_minimum_over_the_isr_and_never_moves_back() {
        let mut s = state();
        assert_eq!(s.maybe_advance_hw(10), None, "followers at 0");
        s.on_fetch(2, 10, 10, 1_100);
        assert_eq!(s.maybe_advance_hw(10), None, "follower 3 still at 0");
        s.on_fetch(3, 6, 10, 1_100);
        assert_eq!(s.maybe_advance_hw(10), Some(6));
        s.on_fetch(3, 10, 12, 1_200);
        assert_eq!(s.maybe_advance_hw(12), Some(10));
        // A follower reporting an older offset (e.g. after a restart) cannot
        // pull the HW back.
        s.on_fetch(2, 3, 12, 1_300);
        assert_eq!(s.maybe_advance_hw(12), None);
        assert_eq!(s.high_watermark(), 10);
        // A fetch offset past the leader's end is clamped.
        s.on_fetch(2, 99, 12, 1_400);
        assert_eq!(s.follower(2).unwrap().log_end_offset, 12);
        assert!(!s.on_fetch(9, 1, 12, 1_400), "not a replica");
    }

    #[test]
    fn lagging_followers_are_shrunk_out_and_rejoin_at_the_hw() {
        let mut s = state();
        // Follower 2 keeps up, follower 3 stops fetching.
        s.on_fetch(2, 0, 0, 1_000);
        s.on_fetch(3, 0, 0, 1_000);
        for t in 1..=10 {
            s.on_fetch(2, t * 10, t * 10, 1_000 + t as i64 * 100);
        }
        assert_eq!(
            s.isr_to_shrink(2_000, 30_000),
            None,
            "within the lag window"
        );
        let shrunk = s.isr_to_shrink(32_000, 30_000).unwrap();
        assert_eq!(shrunk, vec![1, 2]);
        s.isr_change_sent(&shrunk);
        assert_eq!(
            s.isr_to_shrink(40_000, 30_000),
            None,
            "one change at a time"
        );
        // While the shrink is pending the HW still waits for follower 3.
        assert_eq!(s.maybe_advance_hw(100), None);
        s.on_isr_committed(&shrunk, 8);
        assert_eq!(s.maybe_advance_hw(100), Some(100));
        assert!(s.enough_replicas(2) && !s.enough_replicas(3));

        // Follower 3 comes back and catches up to the HW: expand.
        s.on_fetch(3, 50, 100, 41_000);
        assert_eq!(s.isr_to_expand(0, &|_| true), None, "below the HW");
        s.on_fetch(3, 100, 100, 41_100);
        assert_eq!(
            s.isr_to_expand(120, &|_| true),
            None,
            "below this epoch's start"
        );
        let grown = s.isr_to_expand(90, &|_| true).unwrap();
        assert_eq!(grown, vec![1, 2, 3]);
        s.isr_change_sent(&grown);
        s.on_isr_refused();
        assert!(!s.isr_change_pending());
    }

    #[test]
    fn caught_up_counts_from_the_previous_fetch() {
        let mut s = state();
        // At t=1000 the leader ends at 50 and the follower fetches at 40;
        // at t=5000 it fetches at 50 while the leader moved on to 80: it was
        // caught up as of its previous fetch (t=1000's end was reached).
        s.on_fetch(2, 40, 50, 1_000);
        s.on_fetch(2, 50, 80, 5_000);
        assert_eq!(s.follower(2).unwrap().last_caught_up_ms, 1_000);
        s.on_fetch(2, 80, 80, 6_000);
        assert_eq!(s.follower(2).unwrap().last_caught_up_ms, 6_000);
    }

    #[test]
    fn the_leader_is_never_shrunk_out() {
        let s = LeaderState::new(1, 1, 1, &[1], &[], 0, 0);
        assert_eq!(s.isr(), vec![1]);
        assert_eq!(s.isr_to_shrink(1_000_000, 1), None);
    }

    fn log_with_epochs(epochs: &[(u32, usize)]) -> MemoryLog {
        let log = MemoryLog::new(LogConfig::default());
        for (epoch, n) in epochs {
            for _ in 0..*n {
                let mut b = build_batch(&[RecordInput::default()]).unwrap().to_vec();
                log.append(&mut b, AppendOrigin::Leader { epoch: *epoch })
                    .unwrap();
            }
        }
        log
    }

    #[test]
    fn fetch_checks_detect_divergence_and_fencing() {
        // Leader log: epoch 1 at [0,5), epoch 3 at [5,8).
        let log = log_with_epochs(&[(1, 5), (3, 3)]);
        assert_eq!(
            check_fetch(3, 2, 0, None, &log),
            FetchCheck::FencedLeaderEpoch
        );
        assert_eq!(
            check_fetch(3, 4, 0, None, &log),
            FetchCheck::UnknownLeaderEpoch
        );
        assert_eq!(check_fetch(3, 3, 0, None, &log), FetchCheck::Ok);
        assert_eq!(check_fetch(3, 3, 4, Some(1), &log), FetchCheck::Ok);
        assert_eq!(check_fetch(3, 3, 8, Some(3), &log), FetchCheck::Ok);
        // A deposed leader wrote offsets 5..7 in epoch 2, which never
        // committed: our epoch 1 ends at 5, so it truncates to 5.
        assert_eq!(
            check_fetch(3, 3, 7, Some(2), &log),
            FetchCheck::Diverging {
                epoch: 1,
                end_offset: 5
            }
        );
        // Same epoch but the follower has more of it than we do.
        assert_eq!(
            check_fetch(3, 3, 9, Some(3), &log),
            FetchCheck::Diverging {
                epoch: 3,
                end_offset: 8
            }
        );
        // An epoch older than our whole log.
        assert_eq!(
            check_fetch(3, 3, 4, Some(0), &log),
            FetchCheck::Diverging {
                epoch: 0,
                end_offset: 0
            }
        );
    }
}
