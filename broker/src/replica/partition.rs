//! One partition replica on this broker: its log, its role (leader or
//! follower, with the leader epoch it follows) and a signal that wakes
//! requests waiting on it.
//!
//! The role sits behind a read-write lock. Appends, fetches and follower
//! writes take it shared (so concurrent appends still share one fsync); a role
//! change takes it exclusively, so no append of an old epoch can land after
//! the broker stopped leading, and no follower write can land after it became
//! leader.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use bytes::Bytes;
use rivulet_metadata::{TopicConfig, TopicId};
use tokio::sync::watch;

use super::error::PartitionError;
use super::leader::{check_fetch, FetchCheck, LeaderState, ReplicaId};
use crate::log::{AppendInfo, AppendOrigin, LogError, LogOffsets, PartitionLog, ReadBound};

/// What waiters watch: the high watermark and whether this broker leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// The partition's high watermark on this broker.
    pub high_watermark: u64,
    /// The leader epoch while this broker leads; `None` otherwise.
    pub leading: Option<u32>,
}

/// Broker-wide wake-ups for long polls that span many partitions: counters
/// bumped whenever any partition gets new data or a new HW.
#[derive(Debug)]
pub struct BrokerSignals {
    /// Bumped on every leader append (follower fetches wait on it).
    pub appended: watch::Sender<u64>,
    /// Bumped on every HW change (consumer fetches wait on it).
    pub committed: watch::Sender<u64>,
    /// Space held for the metadata log, released when a log write fails.
    pub disk_reserve: std::sync::OnceLock<Arc<crate::log::DiskReserve>>,
}

impl Default for BrokerSignals {
    fn default() -> Self {
        Self {
            appended: watch::Sender::new(0),
            committed: watch::Sender::new(0),
            disk_reserve: std::sync::OnceLock::new(),
        }
    }
}

/// The replica's role.
#[derive(Debug)]
pub enum Role {
    /// Accepting writes in `epoch`.
    Leader {
        /// The leader epoch.
        epoch: u32,
        /// The log end offset when this epoch began: a follower rejoins the
        /// ISR only once it holds this epoch's first offset.
        epoch_start: u64,
        /// ISR and follower progress.
        state: Mutex<LeaderState>,
    },
    /// Copying from `leader` (none while the partition is offline).
    Follower {
        /// The broker to fetch from.
        leader: Option<ReplicaId>,
        /// The epoch of that leader.
        epoch: u32,
    },
    /// Removed from this broker; every request is refused.
    Stopped,
}

/// What a replica fetch got from the leader's side.
#[derive(Debug, Default)]
pub struct ReplicaRead {
    /// Batches from the fetch offset.
    pub records: Bytes,
    /// The leader's high watermark after this fetch counted.
    pub high_watermark: u64,
    /// The leader's log start offset.
    pub log_start_offset: u64,
    /// The leader's log end offset.
    pub log_end_offset: u64,
    /// Set when the follower must truncate first: `(epoch, end_offset)`.
    pub diverging: Option<(u32, u64)>,
    /// Whether the high watermark moved.
    pub hw_advanced: bool,
}

/// What a follower did with a fetched response.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppliedFetch {
    /// Bytes appended.
    pub appended_bytes: usize,
    /// Whether the log was truncated first.
    pub truncated: bool,
}

/// One partition replica.
#[derive(Debug)]
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The topic id the data on disk belongs to.
    pub topic_id: TopicId,
    /// This broker's id.
    me: ReplicaId,
    /// The log.
    pub log: Arc<dyn PartitionLog>,
    /// Leader or follower.
    role: RwLock<Role>,
    /// The topic's configuration (min.insync.replicas, retention).
    config: RwLock<TopicConfig>,
    /// Woken on every HW or role change.
    signal: watch::Sender<Signal>,
    /// Broker-wide wake-ups.
    signals: Arc<BrokerSignals>,
    /// As follower: the last append of fetched data failed for lack of
    /// storage; reported to the leader with every fetch.
    storage_failed: std::sync::atomic::AtomicBool,
}

pub(crate) use rivulet_common::time::now_ms;

impl Partition {
    /// A replica of `topic`/`partition` on broker `me`, not yet leader or follower.
    pub fn new(
        topic: &str,
        partition: u32,
        topic_id: TopicId,
        me: ReplicaId,
        log: Arc<dyn PartitionLog>,
        config: TopicConfig,
        signals: Arc<BrokerSignals>,
    ) -> Self {
        let hw = log.offsets().high_watermark;
        Self {
            topic: topic.to_owned(),
            partition,
            topic_id,
            me,
            log,
            role: RwLock::new(Role::Follower {
                leader: None,
                epoch: 0,
            }),
            config: RwLock::new(config),
            signal: watch::Sender::new(Signal {
                high_watermark: hw,
                leading: None,
            }),
            signals,
            storage_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the last append of fetched data failed for lack of storage.
    pub fn storage_failed(&self) -> bool {
        self.storage_failed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_storage_failed(&self, failed: bool) {
        self.storage_failed
            .store(failed, std::sync::atomic::Ordering::Release);
    }

    /// A log write failed: an I/O error is a storage failure, and on a full
    /// disk the space held for the metadata log is released at once, before
    /// the failure is reported (which writes metadata).
    fn on_log_error(&self, e: &LogError) {
        let LogError::Io { error, .. } = e else {
            return;
        };
        self.set_storage_failed(true);
        if crate::log::is_disk_full(error) {
            if let Some(reserve) = self.signals.disk_reserve.get() {
                reserve.release();
            }
        }
    }

    /// Refuses a log append while the disk reserve is released: the disk is
    /// full, and the freed space is the metadata log's.
    fn check_disk_reserve(&self) -> Result<(), LogError> {
        match self.signals.disk_reserve.get() {
            Some(reserve) if !reserve.is_held() => Err(LogError::Io {
                op: "append to (the disk is full; its reserve is kept for the metadata log)",
                path: std::path::PathBuf::from(format!("{}-{}", self.topic, self.partition)),
                error: std::io::Error::from(std::io::ErrorKind::StorageFull),
            }),
            _ => Ok(()),
        }
    }

    fn role(&self) -> RwLockReadGuard<'_, Role> {
        self.role.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The topic's configuration.
    pub fn config(&self) -> TopicConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the topic's configuration.
    pub fn set_config(&self, config: &TopicConfig) {
        let mut c = self.config.write().unwrap_or_else(|e| e.into_inner());
        if *c != *config {
            *c = config.clone();
        }
    }

    /// A receiver of HW and role changes.
    pub fn subscribe(&self) -> watch::Receiver<Signal> {
        self.signal.subscribe()
    }

    fn publish(&self, leading: Option<u32>) {
        let hw = self.log.offsets().high_watermark;
        let mut hw_moved = false;
        self.signal.send_if_modified(|s| {
            let new = Signal {
                high_watermark: hw,
                leading,
            };
            hw_moved = s.high_watermark != hw;
            let changed = *s != new;
            *s = new;
            changed
        });
        if hw_moved {
            self.signals
                .committed
                .send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    /// The leader epoch this broker leads in, if it leads.
    pub fn leader_epoch(&self) -> Option<u32> {
        match &*self.role() {
            Role::Leader { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }

    /// `(leader, epoch)` while following; `None` while leading or stopped.
    pub fn following(&self) -> Option<(Option<ReplicaId>, u32)> {
        match &*self.role() {
            Role::Follower { leader, epoch } => Some((*leader, *epoch)),
            _ => None,
        }
    }

    /// Log offsets.
    pub fn offsets(&self) -> LogOffsets {
        self.log.offsets()
    }

    /// Becomes leader in `epoch` (blocking: writes the epoch checkpoint).
    /// A no-op if already leading in that epoch.
    pub fn become_leader(
        &self,
        epoch: u32,
        partition_epoch: u32,
        replicas: &[ReplicaId],
        isr: &[ReplicaId],
    ) -> Result<(), LogError> {
        let mut role = self.role.write().unwrap_or_else(|e| e.into_inner());
        if matches!(&*role, Role::Leader { epoch: e, .. } if *e == epoch) {
            return Ok(());
        }
        self.log.assign_epoch(epoch)?;
        let offsets = self.log.offsets();
        let mut state = LeaderState::new(
            self.me,
            epoch,
            partition_epoch,
            replicas,
            isr,
            offsets.high_watermark,
            now_ms(),
        );
        // The HW at once, from what is known now: with an ISR of one it is
        // the log end (a restarted lone leader does not wait for a fetch).
        if let Some(hw) = state.maybe_advance_hw(offsets.log_end_offset) {
            self.log.set_high_watermark(hw);
        }
        *role = Role::Leader {
            epoch,
            epoch_start: offsets.log_end_offset,
            state: Mutex::new(state),
        };
        self.publish(Some(epoch));
        Ok(())
    }

    /// Follows `leader` in `epoch`. Pending acks=all produces fail with
    /// NOT_LEADER_OR_FOLLOWER once they see the signal.
    pub fn become_follower(&self, leader: Option<ReplicaId>, epoch: u32) {
        let mut role = self.role.write().unwrap_or_else(|e| e.into_inner());
        if matches!(&*role, Role::Follower { leader: l, epoch: e } if *l == leader && *e == epoch) {
            return;
        }
        *role = Role::Follower { leader, epoch };
        self.publish(None);
    }

    /// Stops serving the replica for good (the broker no longer hosts it).
    pub fn stop(&self) {
        let mut role = self.role.write().unwrap_or_else(|e| e.into_inner());
        *role = Role::Stopped;
        self.publish(None);
    }

    /// Applies a committed ISR from the metadata image while leading in `epoch`.
    pub fn on_isr_committed(&self, epoch: u32, isr: &[ReplicaId], partition_epoch: u32) {
        let role = self.role();
        if let Role::Leader {
            epoch: e, state, ..
        } = &*role
        {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            if *e == epoch && partition_epoch > s.partition_epoch() {
                s.on_isr_committed(isr, partition_epoch);
                // A smaller ISR may let the HW move.
                if let Some(hw) = s.maybe_advance_hw(self.log.offsets().log_end_offset) {
                    self.log.set_high_watermark(hw);
                }
                drop(s);
                self.publish(Some(epoch));
            }
        }
    }

    /// The ISR change the leader wants now, if any:
    /// `(leader_epoch, partition_epoch, new_isr)`. Marks it pending.
    /// Only brokers `live` names may join the ISR.
    pub fn isr_change_due(
        &self,
        lag_max_ms: i64,
        live: &dyn Fn(ReplicaId) -> bool,
    ) -> Option<(u32, u32, Vec<ReplicaId>)> {
        let role = self.role();
        let Role::Leader {
            epoch,
            epoch_start,
            state,
        } = &*role
        else {
            return None;
        };
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let change = s
            .isr_to_shrink(now_ms(), lag_max_ms)
            .or_else(|| s.isr_to_expand(*epoch_start, live))?;
        s.isr_change_sent(&change);
        Some((*epoch, s.partition_epoch(), change))
    }

    /// The controller's answer to an ISR change sent in `epoch`.
    pub fn isr_change_done(&self, epoch: u32, committed: Option<(&[ReplicaId], u32)>) {
        let role = self.role();
        if let Role::Leader {
            epoch: e, state, ..
        } = &*role
        {
            if *e != epoch {
                return;
            }
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            match committed {
                Some((isr, pe)) if pe >= s.partition_epoch() => s.on_isr_committed(isr, pe),
                _ => s.on_isr_refused(),
            }
            // Either way the pending ISR no longer counts, and it may have
            // been what held the HW back: with no fetch or append to come
            // (every follower dead), nothing else would move it.
            if let Some(hw) = s.maybe_advance_hw(self.log.offsets().log_end_offset) {
                self.log.set_high_watermark(hw);
            }
            drop(s);
            self.publish(Some(epoch));
        }
    }

    /// The ISR as the leader uses it (committed), when leading.
    pub fn leader_isr(&self) -> Option<Vec<ReplicaId>> {
        match &*self.role() {
            Role::Leader { state, .. } => {
                Some(state.lock().unwrap_or_else(|e| e.into_inner()).isr())
            }
            _ => None,
        }
    }

    /// Appends a client batch as leader (blocking: may fsync). With
    /// `require_min_isr`, refuses up front when the ISR is too small.
    pub fn append_as_leader(
        &self,
        batch: &mut [u8],
        require_min_isr: bool,
    ) -> Result<(AppendInfo, u32), PartitionError> {
        let role = self.role();
        let Role::Leader { epoch, state, .. } = &*role else {
            return Err(PartitionError::NotLeader);
        };
        if require_min_isr {
            let min = self.config().min_insync_replicas;
            let s = state.lock().unwrap_or_else(|e| e.into_inner());
            if !s.enough_replicas(min) {
                return Err(PartitionError::NotEnoughReplicas {
                    isr: s.isr().len(),
                    min,
                });
            }
        }
        let appended = self.check_disk_reserve().and_then(|()| {
            self.log
                .append(batch, AppendOrigin::Leader { epoch: *epoch })
        });
        let info = match appended {
            Ok(info) => {
                self.set_storage_failed(false);
                info
            }
            Err(e) => {
                self.on_log_error(&e);
                return Err(e.into());
            }
        };
        self.signals
            .appended
            .send_modify(|g| *g = g.wrapping_add(1));
        // A lone in-sync leader commits at once.
        let advanced = state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .maybe_advance_hw(self.log.offsets().log_end_offset);
        if let Some(hw) = advanced {
            self.log.set_high_watermark(hw);
            // Published under the role lock, so a waiter never sees a stale
            // "leading" after a role change.
            self.publish(Some(*epoch));
        }
        Ok((info, *epoch))
    }

    /// Waits until the HW passes `last_offset` while leading in `epoch`.
    /// Then checks the ISR still meets min.insync.replicas.
    pub async fn wait_committed(&self, epoch: u32, last_offset: u64) -> Result<(), PartitionError> {
        let mut rx = self.subscribe();
        let signal = *rx
            .wait_for(|s| s.leading != Some(epoch) || s.high_watermark > last_offset)
            .await
            .map_err(|_| PartitionError::NotLeader)?;
        if signal.leading != Some(epoch) {
            return Err(PartitionError::NotLeader);
        }
        let min = self.config().min_insync_replicas as usize;
        match self.leader_isr() {
            Some(isr) if isr.len() < min => Err(PartitionError::NotEnoughReplicasAfterAppend {
                isr: isr.len(),
                min: min as u32,
            }),
            _ => Ok(()),
        }
    }

    /// Checks a client's view of the leader epoch while leading.
    fn check_client_epoch(&self, my_epoch: u32, theirs: Option<u32>) -> Result<(), PartitionError> {
        match theirs {
            Some(e) if e < my_epoch => Err(PartitionError::FencedLeaderEpoch {
                request: e,
                current: my_epoch,
            }),
            Some(e) if e > my_epoch => Err(PartitionError::UnknownLeaderEpoch {
                request: e,
                current: my_epoch,
            }),
            _ => Ok(()),
        }
    }

    /// As leader, for a consumer checking its position after a leader
    /// change (KIP-320, OffsetForLeaderEpoch): the largest epoch `<= epoch`
    /// in the log and where it ends, capped at the HW (a consumer is never
    /// past it); `None` if `epoch` predates the whole log.
    pub fn epoch_end_offset(
        &self,
        client_epoch: Option<u32>,
        epoch: u32,
    ) -> Result<Option<(u32, u64)>, PartitionError> {
        let role = self.role();
        let Role::Leader { epoch: mine, .. } = &*role else {
            return Err(PartitionError::NotLeader);
        };
        self.check_client_epoch(*mine, client_epoch)?;
        let hw = self.log.offsets().high_watermark;
        Ok(self
            .log
            .end_offset_for_epoch(epoch)
            .map(|(e, end)| (e, end.min(hw))))
    }

    /// A consumer read, below the HW (blocking: reads the log).
    pub fn read_committed(
        &self,
        offset: u64,
        max_bytes: usize,
        client_epoch: Option<u32>,
    ) -> Result<(Bytes, LogOffsets, u32), PartitionError> {
        let role = self.role();
        let Role::Leader {
            epoch, epoch_start, ..
        } = &*role
        else {
            return Err(PartitionError::NotLeader);
        };
        self.check_client_epoch(*epoch, client_epoch)?;
        let offsets = self.log.offsets();
        hw_available(&offsets, *epoch_start)?;
        if offset < offsets.log_start_offset || offset > offsets.log_end_offset {
            return Err(PartitionError::Log(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: offsets.log_start_offset,
                log_end_offset: offsets.log_end_offset,
            }));
        }
        let bytes = if offset >= offsets.high_watermark {
            Bytes::new()
        } else {
            self.log.read(offset, max_bytes, ReadBound::HighWatermark)?
        };
        Ok((bytes, offsets, *epoch))
    }

    /// Offsets for ListOffsets, as leader. `Err(OffsetNotAvailable)` in the
    /// second field while the HW is below this epoch's start (see
    /// [`hw_available`]): EARLIEST and timestamps may still be answered.
    pub fn leader_offsets(
        &self,
        client_epoch: Option<u32>,
    ) -> Result<(LogOffsets, u32, Result<(), PartitionError>), PartitionError> {
        match &*self.role() {
            Role::Leader {
                epoch, epoch_start, ..
            } => {
                self.check_client_epoch(*epoch, client_epoch)?;
                let offsets = self.log.offsets();
                let hw = hw_available(&offsets, *epoch_start);
                Ok((offsets, *epoch, hw))
            }
            _ => Err(PartitionError::NotLeader),
        }
    }

    /// As leader: moves the log start to `offset` (Kafka's DeleteRecords;
    /// `None`: the high watermark), which must not pass the high watermark;
    /// followers follow with their next fetch. The new log start
    /// (blocking: deletes segments, writes the checkpoint).
    pub fn delete_records(&self, offset: Option<u64>) -> Result<u64, PartitionError> {
        let (o, _epoch, hw_available) = self.leader_offsets(None)?;
        hw_available?;
        let target = offset.unwrap_or(o.high_watermark);
        if target > o.high_watermark {
            return Err(PartitionError::Log(LogError::OffsetOutOfRange {
                offset: target,
                log_start_offset: o.log_start_offset,
                log_end_offset: o.high_watermark,
            }));
        }
        let applied = self.log.advance_log_start(target);
        if let Err(e) = &applied {
            self.on_log_error(e);
        }
        Ok(applied?)
    }

    /// A follower's fetch, served by the leader (blocking: reads the log).
    /// Counts the follower's progress first: it holds every offset below
    /// `fetch_offset`.
    pub fn replica_fetch(
        &self,
        follower: ReplicaId,
        follower_epoch: u32,
        fetch_offset: u64,
        last_fetched_epoch: Option<u32>,
        max_bytes: usize,
    ) -> Result<ReplicaRead, PartitionError> {
        let role = self.role();
        let Role::Leader { epoch, state, .. } = &*role else {
            return Err(PartitionError::NotLeader);
        };
        let mut out = ReplicaRead::default();
        match check_fetch(
            *epoch,
            follower_epoch,
            fetch_offset,
            last_fetched_epoch,
            self.log.as_ref(),
        ) {
            FetchCheck::Ok => {}
            FetchCheck::FencedLeaderEpoch => {
                return Err(PartitionError::FencedLeaderEpoch {
                    request: follower_epoch,
                    current: *epoch,
                })
            }
            FetchCheck::UnknownLeaderEpoch => {
                return Err(PartitionError::UnknownLeaderEpoch {
                    request: follower_epoch,
                    current: *epoch,
                })
            }
            FetchCheck::Diverging { epoch, end_offset } => {
                let o = self.log.offsets();
                out.diverging = Some((epoch, end_offset));
                out.high_watermark = o.high_watermark;
                out.log_start_offset = o.log_start_offset;
                out.log_end_offset = o.log_end_offset;
                return Ok(out);
            }
        }
        let o = self.log.offsets();
        if fetch_offset < o.log_start_offset || fetch_offset > o.log_end_offset {
            return Err(PartitionError::Log(LogError::OffsetOutOfRange {
                offset: fetch_offset,
                log_start_offset: o.log_start_offset,
                log_end_offset: o.log_end_offset,
            }));
        }
        {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            s.on_fetch(follower, fetch_offset, o.log_end_offset, now_ms());
            if let Some(hw) = s.maybe_advance_hw(o.log_end_offset) {
                self.log.set_high_watermark(hw);
                out.hw_advanced = true;
            }
        }
        out.records = if fetch_offset < o.log_end_offset {
            self.log.read(fetch_offset, max_bytes, ReadBound::LogEnd)?
        } else {
            Bytes::new()
        };
        let o = self.log.offsets();
        out.high_watermark = o.high_watermark;
        out.log_start_offset = o.log_start_offset;
        out.log_end_offset = o.log_end_offset;
        if out.hw_advanced {
            self.publish(Some(*epoch));
        }
        Ok(out)
    }

    /// As leader: `follower` reports it cannot write its log.
    pub fn follower_storage_failed(&self, follower: ReplicaId) {
        if let Role::Leader { state, .. } = &*self.role() {
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .on_storage_failure(follower);
        }
    }

    /// Applies the leader's answer as a follower of `leader` in `epoch`
    /// (blocking: truncates, appends, may fsync). Ignored if the role moved on.
    /// An I/O failure sets the storage-failure flag the next fetches report;
    /// a success clears it.
    pub fn apply_fetched(
        &self,
        leader: ReplicaId,
        epoch: u32,
        response: FetchedData<'_>,
    ) -> Result<AppliedFetch, PartitionError> {
        let applied = self.apply_fetched_as_follower(leader, epoch, response);
        match &applied {
            Ok(_) => self.set_storage_failed(false),
            Err(PartitionError::Log(e)) => self.on_log_error(e),
            Err(_) => {}
        }
        applied
    }

    fn apply_fetched_as_follower(
        &self,
        leader: ReplicaId,
        epoch: u32,
        response: FetchedData<'_>,
    ) -> Result<AppliedFetch, PartitionError> {
        let role = self.role();
        match &*role {
            Role::Follower {
                leader: Some(l),
                epoch: e,
            } if *l == leader && *e == epoch => {}
            _ => return Ok(AppliedFetch::default()),
        }
        let mut progress = AppliedFetch::default();
        match response {
            FetchedData::Diverging { end_offset } => {
                let o = self.log.offsets();
                if end_offset < o.log_start_offset {
                    self.log.truncate_fully_and_start_at(end_offset)?;
                } else {
                    // Also at the log end: drops an epoch this replica
                    // assigned while leading without writing anything.
                    self.log.truncate_to(end_offset)?;
                }
                progress.truncated = end_offset < o.log_end_offset;
            }
            FetchedData::OutOfRange { leader_log_start } => {
                let o = self.log.offsets();
                if o.log_end_offset < leader_log_start {
                    self.log.truncate_fully_and_start_at(leader_log_start)?;
                    progress.truncated = true;
                } else if o.log_end_offset > 0 {
                    // Our log end is past the leader's: cut back to its HW and
                    // let the divergence check sort out the rest.
                    let hw = o.high_watermark.max(o.log_start_offset);
                    self.log.truncate_to(hw)?;
                    progress.truncated = true;
                }
            }
            FetchedData::Records {
                records,
                high_watermark,
                log_start_offset,
            } => {
                if !records.is_empty() {
                    self.check_disk_reserve()?;
                    let mut buf = records.to_vec();
                    let info = self.log.append(&mut buf, AppendOrigin::Replica)?;
                    progress.appended_bytes = info.size_bytes;
                }
                let o = self.log.offsets();
                self.log
                    .set_high_watermark(high_watermark.min(o.log_end_offset));
                // The leader's DeleteRecords (or retention): the same start
                // here, as far as this replica's HW allows.
                if log_start_offset > o.log_start_offset {
                    self.log.advance_log_start(log_start_offset)?;
                }
            }
        }
        self.publish(None);
        Ok(progress)
    }
}

/// A follower's view of one partition in a leader's fetch response.
#[derive(Debug, Clone, Copy)]
pub enum FetchedData<'a> {
    /// New batches (possibly none) and the leader's HW.
    Records {
        /// Whole batches continuing our log.
        records: &'a [u8],
        /// The leader's HW.
        high_watermark: u64,
        /// The leader's log start.
        log_start_offset: u64,
    },
    /// Our log diverged: truncate to `end_offset`.
    Diverging {
        /// Where the leader's log and ours agree up to.
        end_offset: u64,
    },
    /// Our fetch offset is outside the leader's log.
    OutOfRange {
        /// The leader's log start offset.
        leader_log_start: u64,
    },
}

/// Whether a leader may expose its HW (KIP-207): only once it has reached
/// `epoch_start`, the log end when it took over. Every record a previous
/// leader could have counted as committed is below that offset (this
/// replica was in the ISR), so from then on the HW is at or above any HW
/// ever answered; before, it may be lower (a follower learns the HW one
/// fetch late, a restarted node reads a checkpoint).
pub(crate) fn hw_available(offsets: &LogOffsets, epoch_start: u64) -> Result<(), PartitionError> {
    if offsets.high_watermark >= epoch_start {
        Ok(())
    } else {
        Err(PartitionError::OffsetNotAvailable {
            high_watermark: offsets.high_watermark,
            epoch_start,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rivulet_proto::v1::ErrorCode;

    use super::*;
    use crate::log::batch::{build_batch, decode_records, RecordInput};
    use crate::log::{LogConfig, MemoryLog};

    fn replica(me: ReplicaId) -> Partition {
        let config = TopicConfig {
            min_insync_replicas: 2,
            ..TopicConfig::default()
        };
        Partition::new(
            "t",
            0,
            "00000000000000000000000000000001".parse().unwrap(),
            me,
            Arc::new(MemoryLog::new(LogConfig::default())),
            config,
            Arc::default(),
        )
    }

    fn batch(n: usize) -> Vec<u8> {
        let records: Vec<RecordInput> = (0..n)
            .map(|i| RecordInput {
                value: Some(Bytes::from(format!("v{i}"))),
                timestamp_ms: 1,
                ..RecordInput::default()
            })
            .collect();
        build_batch(&records).unwrap().to_vec()
    }

    #[tokio::test]
    async fn acks_all_completes_when_the_isr_has_fetched_past_the_batch() {
        let p = replica(1);
        p.become_leader(3, 1, &[1, 2, 3], &[1, 2, 3]).unwrap();
        let (info, epoch) = p.append_as_leader(&mut batch(5), true).unwrap();
        assert_eq!((info.base_offset, info.last_offset, epoch), (0, 4, 3));
        let waiter = p.wait_committed(3, info.last_offset);
        tokio::pin!(waiter);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut waiter)
                .await
                .is_err(),
            "nothing replicated yet"
        );
        // Follower 2 has it all; follower 3 only part: the HW stays below.
        let r = p.replica_fetch(2, 3, 5, Some(3), 1 << 20).unwrap();
        assert!(r.records.is_empty() && !r.hw_advanced);
        let r = p.replica_fetch(3, 3, 0, None, 1 << 20).unwrap();
        assert_eq!(decode_records(&r.records).unwrap().len(), 5);
        assert_eq!(p.offsets().high_watermark, 0);
        let r = p.replica_fetch(3, 3, 5, Some(3), 1 << 20).unwrap();
        assert!(r.hw_advanced);
        assert_eq!(r.high_watermark, 5);
        waiter.await.unwrap();
        // Consumers see exactly the committed records.
        let (bytes, _, _) = p.read_committed(0, 1 << 20, Some(3)).unwrap();
        assert_eq!(decode_records(&bytes).unwrap().len(), 5);
    }

    #[test]
    fn a_new_leader_answers_offset_not_available_until_its_hw_reaches_its_epoch_start() {
        // KIP-207: records 0..5 were written under epoch 3; the HW this
        // replica knows is 0 (a follower learns it one fetch late), though
        // the previous leader may have answered 5 already.
        let p = replica(1);
        p.become_leader(3, 1, &[1, 2], &[1, 2]).unwrap();
        p.append_as_leader(&mut batch(5), false).unwrap();
        p.become_follower(Some(2), 4);
        p.become_leader(5, 2, &[1, 2], &[1, 2]).unwrap();
        let e = p.read_committed(0, 1 << 20, None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::OffsetNotAvailable, "{e}");
        let (_, _, hw) = p.leader_offsets(None).unwrap();
        assert!(hw.is_err(), "LATEST is not answered either");
        // Follower 2 has fetched up to the epoch start: the HW is exposed.
        p.replica_fetch(2, 5, 5, Some(3), 1 << 20).unwrap();
        let (bytes, offsets, _) = p.read_committed(0, 1 << 20, None).unwrap();
        assert_eq!(
            (
                decode_records(&bytes).unwrap().len(),
                offsets.high_watermark
            ),
            (5, 5)
        );
        // A leader alone in the ISR has its HW at once when it takes over.
        p.become_follower(Some(2), 6);
        let mut replicated = batch(2);
        replicated[0..8].copy_from_slice(&5u64.to_be_bytes()); // base offset
        replicated[12..16].copy_from_slice(&6u32.to_be_bytes()); // leader epoch
        p.log
            .append(&mut replicated, AppendOrigin::Replica)
            .unwrap();
        assert_eq!(p.offsets().high_watermark, 5);
        p.become_leader(7, 3, &[1, 2], &[1]).unwrap();
        let (_, offsets, _) = p.read_committed(0, 1 << 20, None).unwrap();
        assert_eq!(offsets.high_watermark, offsets.log_end_offset);
    }

    #[tokio::test]
    async fn losing_leadership_fails_pending_acks_all_at_once() {
        let p = Arc::new(replica(1));
        p.become_leader(3, 1, &[1, 2], &[1, 2]).unwrap();
        let (info, epoch) = p.append_as_leader(&mut batch(1), true).unwrap();
        let waiting = {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.wait_committed(epoch, info.last_offset).await })
        };
        tokio::task::yield_now().await;
        p.become_follower(Some(2), 4);
        let r = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken by the role change")
            .unwrap();
        assert!(matches!(r, Err(PartitionError::NotLeader)), "{r:?}");
        // A follower accepts no writes and serves no consumer.
        assert!(matches!(
            p.append_as_leader(&mut batch(1), false),
            Err(PartitionError::NotLeader)
        ));
        assert!(matches!(
            p.read_committed(0, 100, None),
            Err(PartitionError::NotLeader)
        ));
    }

    #[test]
    fn acks_all_is_refused_up_front_below_min_insync_replicas() {
        let p = replica(1);
        p.become_leader(1, 1, &[1, 2, 3], &[1]).unwrap();
        let err = p.append_as_leader(&mut batch(1), true).unwrap_err();
        assert!(
            matches!(err, PartitionError::NotEnoughReplicas { isr: 1, min: 2 }),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::NotEnoughReplicas);
        // acks=1 still goes through, and a lone ISR commits at once.
        p.append_as_leader(&mut batch(1), false).unwrap();
        assert_eq!(p.offsets().high_watermark, 1);
    }

    #[test]
    fn stale_and_newer_epochs_are_refused() {
        let p = replica(1);
        p.become_leader(5, 1, &[1, 2], &[1, 2]).unwrap();
        let e = p.replica_fetch(2, 4, 0, None, 100).unwrap_err();
        assert_eq!(e.code(), ErrorCode::FencedLeaderEpoch);
        let e = p.replica_fetch(2, 6, 0, None, 100).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownLeaderEpoch);
        let e = p.read_committed(0, 100, Some(4)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::FencedLeaderEpoch);
        let e = p.read_committed(7, 100, None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::OffsetOutOfRange);
    }

    #[test]
    fn a_deposed_leaders_tail_is_truncated_by_the_divergence_check() {
        // Node 1 led epoch 1 and wrote 3 records; node 2 saw only 2.
        let old = replica(1);
        old.become_leader(1, 1, &[1, 2], &[1, 2]).unwrap();
        old.append_as_leader(&mut batch(2), false).unwrap();
        old.append_as_leader(&mut batch(1), false).unwrap();
        let new = replica(2);
        new.become_follower(Some(1), 1);
        let r = old.replica_fetch(2, 1, 0, None, 1 << 20).unwrap();
        let first = crate::log::batch::headers(&r.records)
            .next()
            .unwrap()
            .1
            .size;
        new.apply_fetched(
            1,
            1,
            FetchedData::Records {
                records: &r.records[..first],
                high_watermark: 0,
                log_start_offset: 0,
            },
        )
        .unwrap();
        assert_eq!(new.offsets().log_end_offset, 2);

        // Node 2 takes over in epoch 2 and writes; node 1 follows it.
        new.become_leader(2, 2, &[1, 2], &[2]).unwrap();
        new.append_as_leader(&mut batch(4), false).unwrap();
        old.become_follower(Some(2), 2);
        let o = old.offsets();
        let r = new
            .replica_fetch(1, 2, o.log_end_offset, old.log.latest_epoch(), 1 << 20)
            .unwrap();
        assert_eq!(r.diverging, Some((1, 2)));
        let progress = old
            .apply_fetched(2, 2, FetchedData::Diverging { end_offset: 2 })
            .unwrap();
        assert!(progress.truncated);
        assert_eq!(old.offsets().log_end_offset, 2);
        let r = new
            .replica_fetch(1, 2, 2, old.log.latest_epoch(), 1 << 20)
            .unwrap();
        assert!(r.diverging.is_none());
        old.apply_fetched(
            2,
            2,
            FetchedData::Records {
                records: &r.records,
                high_watermark: r.high_watermark,
                log_start_offset: r.log_start_offset,
            },
        )
        .unwrap();
        assert_eq!(
            old.log.read(0, 1 << 20, ReadBound::LogEnd).unwrap(),
            new.log.read(0, 1 << 20, ReadBound::LogEnd).unwrap(),
            "identical logs after truncation"
        );
    }

    #[test]
    fn fetched_data_for_an_old_role_is_ignored() {
        let p = replica(2);
        p.become_follower(Some(1), 1);
        p.become_follower(Some(3), 2);
        let b = batch(1);
        let progress = p
            .apply_fetched(
                1,
                1,
                FetchedData::Records {
                    records: &b,
                    high_watermark: 1,
                    log_start_offset: 0,
                },
            )
            .unwrap();
        assert_eq!(progress, AppliedFetch::default());
        assert_eq!(p.offsets().log_end_offset, 0);
    }
}
