//! Consumer groups: the coordinator of the groups whose `__consumer_offsets`
//! partitions this broker leads.
//!
//! ```text
//!  roles change ─▶ sync: lead offsets partition p at epoch e? ─▶ load p
//!                 (wait HW = log end, replay every record) ─▶ Ready shard
//!  request ─▶ shard of hash(group) ─▶ lock ─▶ Groups op ─▶ records
//!          ─▶ append as leader (still locked: log order = apply order)
//!          ─▶ unlock ─▶ wait until committed ─▶ answer
//!  every 200 ms ─▶ expire members whose session ran out
//! ```
//!
//! A shard that fails to append (leadership lost, ISR too small) is dropped
//! and reloaded from the log, so memory never runs ahead of what the log
//! holds.

pub mod service;
pub mod state;

/// Members of groups the coordinator does not hold itself: the Kafka
/// listener's classic (JoinGroup/SyncGroup) groups, whose offsets are the
/// coordinator's but whose membership lives in the listener.
pub trait ExternalMembers: Send + Sync + std::fmt::Debug {
    /// The group's state and members, if the holder knows the group.
    fn members(&self, group: &str) -> Option<(String, Vec<ExternalMember>)>;
}

/// One member of an [`ExternalMembers`] group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalMember {
    /// Its member id.
    pub member_id: String,
    /// Its client id.
    pub client_id: String,
    /// The group's generation it is in.
    pub generation: i32,
    /// The topics it subscribes to.
    pub subscribed: Vec<String>,
    /// Its assignment.
    pub assigned: Vec<(String, u32)>,
}

/// Marks an admin-form commit (no member id, epoch -1) made for a member of
/// an [`ExternalMembers`] group, which the holder checked: such a commit is
/// allowed while the group has external members; any other is refused
/// NON_EMPTY_GROUP then, as Kafka refuses `--reset-offsets` on an active
/// group. Set in request extensions, which a remote client cannot.
#[derive(Debug, Clone, Copy)]
pub struct ExternalMemberCommit;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rivulet_metadata::convert::broker_info;

use crate::control::{ControlError, ControlPlane, NewTopic};
use rivulet_metadata::MetadataImage;
use rivulet_proto::v1::{BrokerInfo, ErrorCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::log::batch::{build_batch, decode_records, RecordInput};
use crate::replica::partition::now_ms;
use crate::replica::{Partition, PartitionError, ReplicaManager};
use state::{GroupError, GroupRecord, Groups};

/// The internal topic holding group state and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Longest a CreateTopic of `__consumer_offsets` may take; the next
/// FindCoordinator tries again.
const CREATE_OFFSETS_TOPIC_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest group id accepted.
pub const MAX_GROUP_ID_LENGTH: usize = 255;

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Partitions of `__consumer_offsets` when it is created.
    pub offsets_partitions: u32,
    /// Its replication factor (capped by the live brokers).
    pub offsets_replication: u32,
    /// Session timeout when the member asks for none.
    pub session_timeout: Duration,
    /// Bounds on what members may ask for.
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// Heartbeat interval told to members (at most a third of the session).
    pub heartbeat_interval: Duration,
    /// How long a write waits to be replicated.
    pub commit_timeout: Duration,
}

impl CoordinatorConfig {
    /// Default partitions of `__consumer_offsets` (Kafka's is 50; a small
    /// cluster needs fewer).
    pub const DEFAULT_OFFSETS_PARTITIONS: u32 = 8;
    /// Partitions `__consumer_offsets` may have.
    pub const OFFSETS_PARTITIONS_RANGE: std::ops::RangeInclusive<u32> = 1..=1000;
    /// Default replication factor of `__consumer_offsets` (Kafka's).
    pub const DEFAULT_OFFSETS_REPLICATION: u32 = 3;
    /// Replication factors `__consumer_offsets` may have.
    pub const OFFSETS_REPLICATION_RANGE: std::ops::RangeInclusive<u32> = 1..=16;
    /// Default session timeout, ms (Kafka's `group.consumer.session.timeout.ms`
    /// is 45 s; ours moves partitions of dead members sooner).
    pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;

    /// Checks every setting a user can give.
    pub fn validate(&self) -> Result<(), rivulet_common::config::InvalidSetting> {
        use rivulet_common::config::check_range;
        check_range(
            "offsets-topic-partitions",
            self.offsets_partitions,
            Self::OFFSETS_PARTITIONS_RANGE,
        )?;
        check_range(
            "offsets-topic-replication-factor",
            self.offsets_replication,
            Self::OFFSETS_REPLICATION_RANGE,
        )?;
        check_range(
            "group-session-timeout-ms",
            self.session_timeout.as_millis() as u64,
            self.min_session_timeout.as_millis() as u64
                ..=self.max_session_timeout.as_millis() as u64,
        )
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            offsets_partitions: Self::DEFAULT_OFFSETS_PARTITIONS,
            offsets_replication: Self::DEFAULT_OFFSETS_REPLICATION,
            session_timeout: Duration::from_millis(Self::DEFAULT_SESSION_TIMEOUT_MS),
            min_session_timeout: Duration::from_millis(500),
            max_session_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(1),
            commit_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a coordinator request failed, before or after the group logic.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error("broker {0} does not coordinate this group; find the coordinator again")]
    NotCoordinator(u64),
    #[error("the coordinator is loading the group's state")]
    Loading,
    #[error("no coordinator yet: {0}")]
    NotAvailable(String),
    #[error("writing group state failed: {0}")]
    Write(#[from] PartitionError),
    #[error("group state was not replicated within {0:?}")]
    Timeout(Duration),
}

impl CoordError {
    /// The error code sent to clients.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Group(GroupError::UnknownMember { .. }) => ErrorCode::UnknownMemberId,
            Self::Group(GroupError::FencedEpoch { .. }) => ErrorCode::FencedMemberEpoch,
            Self::Group(GroupError::NonEmpty { .. }) => ErrorCode::NonEmptyGroup,
            Self::Group(GroupError::NotFound(_)) => ErrorCode::GroupIdNotFound,
            Self::Group(GroupError::Invalid(_)) => ErrorCode::InvalidRequest,
            Self::NotCoordinator(_) | Self::Write(PartitionError::NotLeader) => {
                ErrorCode::NotCoordinator
            }
            Self::Loading => ErrorCode::CoordinatorLoadInProgress,
            Self::NotAvailable(_) | Self::Write(_) => ErrorCode::CoordinatorNotAvailable,
            Self::Timeout(_) => ErrorCode::RequestTimedOut,
        }
    }
}

/// Checks a group id.
pub fn validate_group_id(group: &str) -> Result<(), (ErrorCode, String)> {
    if group.is_empty() || group.len() > MAX_GROUP_ID_LENGTH {
        return Err((
            ErrorCode::InvalidGroupId,
            format!("a group id must have 1 to {MAX_GROUP_ID_LENGTH} bytes"),
        ));
    }
    Ok(())
}

/// The `__consumer_offsets` partition of a group: Java's `String.hashCode`
/// modulo the partition count, as Kafka does.
pub fn partition_for(group: &str, partitions: u32) -> u32 {
    let h = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    // Kafka: Utils.abs(hashCode) % n, where abs(MIN_VALUE) is 0.
    let abs = if h == i32::MIN { 0 } else { h.unsigned_abs() };
    abs % partitions.max(1)
}

/// One loaded `__consumer_offsets` partition this broker leads.
#[derive(Debug)]
pub struct Shard {
    pub partition: u32,
    epoch: u32,
    log: Arc<Partition>,
    pub groups: tokio::sync::Mutex<Groups>,
}

/// Records appended and where to wait for their commit.
#[must_use]
#[derive(Debug)]
pub struct Pending {
    at: Option<(u32, u64)>,
    log: Arc<Partition>,
    timeout: Duration,
}

impl Pending {
    /// Waits until the records are committed (nothing to wait for when
    /// nothing was written).
    pub async fn committed(self) -> Result<(), CoordError> {
        let Some((epoch, last)) = self.at else {
            return Ok(());
        };
        match tokio::time::timeout(self.timeout, self.log.wait_committed(epoch, last)).await {
            Ok(r) => r.map_err(CoordError::from),
            Err(_) => Err(CoordError::Timeout(self.timeout)),
        }
    }
}

#[derive(Debug)]
enum Slot {
    Loading(u32),
    Ready(Arc<Shard>),
}

/// The group coordinator of one broker.
#[derive(Debug)]
pub struct GroupCoordinator {
    pub(crate) mgr: Arc<ReplicaManager>,
    pub(crate) control: Arc<dyn ControlPlane>,
    /// Members this coordinator does not hold (the Kafka listener's classic
    /// groups), shown by DescribeGroup and guarding admin commits.
    external: std::sync::RwLock<Option<Arc<dyn ExternalMembers>>>,
    config: CoordinatorConfig,
    shards: Mutex<HashMap<u32, Slot>>,
    creating: AtomicBool,
}

impl GroupCoordinator {
    /// The coordinator of the group shards `mgr` hosts.
    pub fn new(mgr: Arc<ReplicaManager>, config: CoordinatorConfig) -> Arc<Self> {
        let control = Arc::clone(&mgr.control);
        Arc::new(Self {
            mgr,
            control,
            external: std::sync::RwLock::new(None),
            config,
            shards: Mutex::new(HashMap::new()),
            creating: AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Where the members of groups held elsewhere are found (the Kafka
    /// listener's classic groups).
    pub fn set_external(&self, external: Arc<dyn ExternalMembers>) {
        *self.external.write().unwrap_or_else(|e| e.into_inner()) = Some(external);
    }

    /// The members `group` has outside this coordinator, with that group's
    /// state; `None` when it has none.
    pub fn external_members(&self, group: &str) -> Option<(String, Vec<ExternalMember>)> {
        let external = self
            .external
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        external.members(group).filter(|(_, m)| !m.is_empty())
    }

    pub fn broker_id(&self) -> u64 {
        self.mgr.broker_id()
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.mgr.image()
    }

    /// The session timeout a member gets for what it asked.
    pub fn session_timeout_ms(&self, asked_ms: u32) -> u32 {
        let asked = if asked_ms == 0 {
            self.config.session_timeout
        } else {
            Duration::from_millis(u64::from(asked_ms))
        };
        let t = asked.clamp(
            self.config.min_session_timeout,
            self.config.max_session_timeout,
        );
        u32::try_from(t.as_millis()).unwrap_or(u32::MAX)
    }

    /// The heartbeat interval for a session timeout.
    pub fn heartbeat_interval_ms(&self, session_ms: u32) -> u32 {
        let cap = u32::try_from(self.config.heartbeat_interval.as_millis()).unwrap_or(u32::MAX);
        cap.min(session_ms / 3).max(50)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Slot>> {
        self.shards.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The coordinator of `group` and its offsets partition; creates the
    /// offsets topic on first use.
    pub async fn find(&self, group: &str) -> Result<(BrokerInfo, u32), CoordError> {
        let image = self.mgr.image();
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            self.create_offsets_topic(&image).await;
            return Err(CoordError::NotAvailable(format!(
                "creating {OFFSETS_TOPIC}; retry"
            )));
        };
        let n = u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX);
        let p = partition_for(group, n);
        let leader = topic
            .partitions
            .get(p as usize)
            .and_then(|pi| pi.leader)
            .and_then(|id| image.broker(id));
        match leader {
            Some(b) => Ok((broker_info(b), p)),
            None => Err(CoordError::NotAvailable(format!(
                "{OFFSETS_TOPIC}-{p} has no leader"
            ))),
        }
    }

    async fn create_offsets_topic(&self, image: &MetadataImage) {
        if self.creating.swap(true, Ordering::AcqRel) {
            return;
        }
        // Cleared however this ends: the FindCoordinator that runs it may be
        // dropped mid-call by its client.
        struct Creating<'a>(&'a AtomicBool);
        impl Drop for Creating<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _creating = Creating(&self.creating);
        let live = image.brokers().values().filter(|b| !b.fenced).count();
        let rf = self
            .config
            .offsets_replication
            .min(u32::try_from(live).unwrap_or(1))
            .max(1);
        let request = NewTopic {
            name: OFFSETS_TOPIC.into(),
            partitions: self.config.offsets_partitions,
            replication_factor: rf,
            configs: vec![
                ("min.insync.replicas".into(), rf.min(2).to_string()),
                ("retention.ms".into(), "-1".into()),
            ],
        };
        let call = tokio::time::timeout(
            CREATE_OFFSETS_TOPIC_TIMEOUT,
            self.control.create_topic(request),
        );
        let result = match call.await.unwrap_or_else(|_| {
            Err(ControlError::Unreachable(format!(
                "no answer in {} s",
                CREATE_OFFSETS_TOPIC_TIMEOUT.as_secs()
            )))
        }) {
            Err(ControlError::Refused { code, .. })
                if code == ErrorCode::TopicAlreadyExists as i32 =>
            {
                Ok(())
            }
            other => other,
        };
        match result {
            Ok(()) => info!(
                topic = OFFSETS_TOPIC,
                replication_factor = rf,
                "created the offsets topic"
            ),
            Err(e) => warn!(error = %e, "cannot create {OFFSETS_TOPIC} yet"),
        }
    }

    /// The loaded shard coordinating `group`.
    pub fn shard_for(&self, group: &str) -> Result<Arc<Shard>, CoordError> {
        let image = self.mgr.image();
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            return Err(CoordError::NotCoordinator(self.broker_id()));
        };
        let p = partition_for(group, u32::try_from(topic.partitions.len()).unwrap_or(1));
        match self.slots().get(&p) {
            Some(Slot::Ready(s)) => Ok(Arc::clone(s)),
            Some(Slot::Loading(_)) => Err(CoordError::Loading),
            None => match self.mgr.partition(OFFSETS_TOPIC, p) {
                Ok(part) if part.leader_epoch().is_some() => Err(CoordError::Loading),
                _ => Err(CoordError::NotCoordinator(self.broker_id())),
            },
        }
    }

    /// Every loaded shard.
    pub fn ready_shards(&self) -> Vec<Arc<Shard>> {
        self.slots()
            .values()
            .filter_map(|s| match s {
                Slot::Ready(s) => Some(Arc::clone(s)),
                Slot::Loading(_) => None,
            })
            .collect()
    }

    /// Appends `records` to the shard's partition; call with the shard's
    /// groups locked, so the log order is the order they were applied in.
    /// A failed append drops the shard (it reloads from the log).
    pub async fn append(
        &self,
        shard: &Shard,
        records: &[GroupRecord],
    ) -> Result<Pending, CoordError> {
        let pending = |at| Pending {
            at,
            log: Arc::clone(&shard.log),
            timeout: self.config.commit_timeout,
        };
        if records.is_empty() {
            return Ok(pending(None));
        }
        let now = now_ms();
        let inputs: Vec<RecordInput> = records
            .iter()
            .map(|r| {
                let (key, value) = r.encode();
                RecordInput {
                    key: Some(Bytes::from(key)),
                    value: value.map(Bytes::from),
                    headers: Vec::new(),
                    timestamp_ms: now,
                }
            })
            .collect();
        let log = Arc::clone(&shard.log);
        let appended = tokio::task::spawn_blocking(move || {
            let mut batch = build_batch(&inputs)?.to_vec();
            log.append_as_leader(&mut batch, true)
        })
        .await
        .map_err(|e| CoordError::NotAvailable(format!("append task failed: {e}")))?;
        match appended {
            Ok((info, epoch)) if epoch == shard.epoch => {
                Ok(pending(Some((epoch, info.last_offset))))
            }
            Ok(_) => {
                self.drop_shard(shard);
                Err(CoordError::NotCoordinator(self.broker_id()))
            }
            Err(e) => {
                warn!(partition = shard.partition, error = %e, "group state append failed; reloading the shard");
                self.drop_shard(shard);
                Err(e.into())
            }
        }
    }

    /// Runs `op` on the shard of `group` under its lock, appends the records
    /// it emits (in the order applied), and answers once they are
    /// replicated.
    pub async fn update<R>(
        &self,
        group: &str,
        op: impl FnOnce(&mut Groups) -> Result<(Vec<GroupRecord>, R), GroupError>,
    ) -> Result<R, CoordError> {
        let shard = self.shard_for(group)?;
        let mut groups = shard.groups.lock().await;
        let (records, answer) = op(&mut groups)?;
        let pending = self.append(&shard, &records).await?;
        drop(groups);
        pending.committed().await?;
        Ok(answer)
    }

    fn drop_shard(&self, shard: &Shard) {
        let mut slots = self.slots();
        if matches!(slots.get(&shard.partition), Some(Slot::Ready(s)) if s.epoch == shard.epoch) {
            slots.remove(&shard.partition);
        }
    }

    /// Follows leadership of the offsets partitions and expires members.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut roles = self.mgr.roles_changed.subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = roles.changed() => if r.is_err() { return },
                _ = tick.tick() => self.expire_members().await,
            }
            self.sync();
        }
    }

    /// Starts loading newly led offsets partitions; forgets lost ones.
    fn sync(self: &Arc<Self>) {
        let image = self.mgr.image();
        let n = image
            .topic(OFFSETS_TOPIC)
            .map_or(0, |t| u32::try_from(t.partitions.len()).unwrap_or(0));
        let mut slots = self.slots();
        for p in 0..n {
            let part = self.mgr.partition(OFFSETS_TOPIC, p).ok();
            let leading = part.as_ref().and_then(|x| x.leader_epoch());
            let have = match slots.get(&p) {
                Some(Slot::Loading(e)) => Some(*e),
                Some(Slot::Ready(s)) => Some(s.epoch),
                None => None,
            };
            match (leading, part) {
                (Some(e), Some(part)) if have != Some(e) => {
                    slots.insert(p, Slot::Loading(e));
                    let this = Arc::clone(self);
                    tokio::spawn(async move { this.load(p, e, part).await });
                }
                (None, _) if have.is_some() => {
                    info!(
                        partition = p,
                        "no longer coordinating this offsets partition"
                    );
                    slots.remove(&p);
                }
                _ => {}
            }
        }
        slots.retain(|p, _| *p < n);
    }

    /// Replays an offsets partition this broker leads at `epoch`.
    async fn load(self: Arc<Self>, p: u32, epoch: u32, log: Arc<Partition>) {
        let started = Instant::now();
        let still_loading =
            |this: &Self| matches!(this.slots().get(&p), Some(Slot::Loading(e)) if *e == epoch);
        // Everything in the leader's log will commit: wait for it, so the
        // state never includes what could still be truncated.
        let end = log.offsets().log_end_offset;
        let mut rx = log.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if s.leading != Some(epoch) || !still_loading(&self) {
                debug!(partition = p, epoch, "offsets partition load abandoned");
                self.abandon(p, epoch);
                return;
            }
            if s.high_watermark >= end {
                break;
            }
            if tokio::time::timeout(Duration::from_millis(500), rx.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                self.abandon(p, epoch);
                return;
            }
        }
        let reader = Arc::clone(&log);
        let replayed = tokio::task::spawn_blocking(move || replay(&reader, end)).await;
        let (groups, records) = match replayed {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                warn!(partition = p, error = %e, "cannot load the offsets partition");
                self.abandon(p, epoch);
                return;
            }
            Err(e) => {
                warn!(partition = p, error = %e, "offsets partition load task failed");
                self.abandon(p, epoch);
                return;
            }
        };
        let mut slots = self.slots();
        if matches!(slots.get(&p), Some(Slot::Loading(e)) if *e == epoch) {
            info!(
                partition = p,
                epoch,
                records,
                groups = groups.groups.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "coordinating offsets partition"
            );
            slots.insert(
                p,
                Slot::Ready(Arc::new(Shard {
                    partition: p,
                    epoch,
                    log,
                    groups: tokio::sync::Mutex::new(groups),
                })),
            );
        }
    }

    fn abandon(&self, p: u32, epoch: u32) {
        let mut slots = self.slots();
        if matches!(slots.get(&p), Some(Slot::Loading(e)) if *e == epoch) {
            slots.remove(&p);
        }
    }

    async fn expire_members(&self) {
        for shard in self.ready_shards() {
            let mut groups = shard.groups.lock().await;
            let expired = groups.expire(Instant::now());
            if expired.is_empty() {
                continue;
            }
            let mut all = Vec::new();
            for (group, member, records) in expired {
                info!(group = %group, member = %member, "member expired: no heartbeat within its session timeout");
                all.extend(records);
            }
            match self.append(&shard, &all).await {
                Ok(pending) => {
                    drop(groups);
                    tokio::spawn(async move {
                        if let Err(e) = pending.committed().await {
                            debug!(error = %e, "expiry records not committed");
                        }
                    });
                }
                Err(e) => debug!(error = %e, "cannot record expired members"),
            }
        }
    }
}

/// Reads the partition from its start up to `end` and applies every record.
fn replay(log: &Partition, end: u64) -> Result<(Groups, u64), PartitionError> {
    let mut groups = Groups::default();
    let mut offset = log.offsets().log_start_offset;
    let mut count = 0u64;
    let now = Instant::now();
    while offset < end {
        let (bytes, _, _) = log.read_committed(offset, 1 << 20, None)?;
        if bytes.is_empty() {
            break;
        }
        let records = decode_records(&bytes).map_err(PartitionError::from)?;
        let Some(last) = records.last().map(|r| r.offset) else {
            break;
        };
        for r in records.iter().filter(|r| r.offset >= offset) {
            let Some(key) = &r.key else { continue };
            match GroupRecord::decode(key, r.value.as_deref()) {
                Ok(record) => {
                    groups.apply(&record, now);
                    count += 1;
                }
                Err(e) => {
                    warn!(offset = r.offset, error = %e, "skipping an unreadable group record")
                }
            }
        }
        offset = last + 1;
    }
    Ok((groups, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_for_matches_kafka() {
        // Java: "my-group".hashCode() == -1906497762; Kafka takes abs % n.
        assert_eq!(partition_for("my-group", 50), 1_906_497_762 % 50);
        assert!(partition_for("", 8) < 8);
        for g in ["a", "zz", "consumer-group-\u{fc}", "\u{ffff}\u{ffff}"] {
            assert!(partition_for(g, 7) < 7);
        }
    }
}
