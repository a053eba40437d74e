//! The replica manager: the partitions this broker hosts, kept in step with
//! the metadata image.
//!
//! ```text
//!  metadata image ──watch──▶ reconcile: open logs, become leader / follower,
//!                             stop and delete removed replicas
//!                           ▶ fetchers: one per source broker (fetcher.rs)
//!  every 100 ms             ▶ ISR shrink / expand through AlterPartition
//!  every hw_checkpoint      ▶ HW checkpoints;  every retention_check ▶ retention
//!  interval flush policy    ▶ flush every log on the interval
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rivulet_common::config::{check_range, InvalidSetting};

use crate::control::{ControlError, ControlPlane};
use crate::lifecycle::BrokerRegistration;
use rivulet_metadata::AlterPartitionRequest;
use rivulet_metadata::{BrokerId, MetadataImage, TopicId};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::error::PartitionError;
use super::fetcher::{run_fetcher, FetchHost, FetchSettings};
use super::partition::{now_ms, BrokerSignals, Partition};
use super::plan::{Key, LogStep, Role, Wanted};
use crate::log::{partition_dir, FileLog, FlushPolicy, LogConfig, PartitionLog, RetentionPolicy};

/// The data plane's settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This broker's id.
    pub node_id: u64,
    /// Where partition logs live (`<data-dir>/logs`).
    pub log_dir: PathBuf,
    /// When appends are fsynced.
    pub flush: FlushPolicy,
    /// A follower that has not caught up for this long leaves the ISR (ms).
    pub replica_lag_time_max_ms: i64,
    /// How long a follower's fetch waits at the leader for new data (ms).
    pub replica_fetch_wait_ms: u32,
    /// Bytes a follower asks for per partition.
    pub replica_fetch_max_bytes: u32,
    /// How often high watermarks are checkpointed.
    pub hw_checkpoint_interval: Duration,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// The most record bytes one client Fetch response carries, and one
    /// partition of it, whatever the request asks.
    pub fetch_max_bytes: usize,
    /// Bytes of client requests and responses the node holds in flight at
    /// once (Kafka's `queued.max.request.bytes`): past it, requests wait.
    pub max_inflight_bytes: usize,
    /// Space held in the data directory for the metadata log, released when
    /// a log write fails (see [`crate::log::DiskReserve`]); 0 holds none.
    pub disk_reserve_bytes: u64,
}

impl BrokerConfig {
    /// Default `replica.lag.time.max.ms` (Kafka's is 30 s; ours fails over
    /// faster).
    pub const DEFAULT_REPLICA_LAG_TIME_MAX_MS: u64 = 10_000;
    /// The shortest `replica.lag.time.max.ms` accepted: below it a follower
    /// on a busy machine flaps in and out of the ISR.
    pub const MIN_REPLICA_LAG_TIME_MAX_MS: u64 = 100;
    /// Default `fetch.max.bytes` (Kafka's).
    pub const DEFAULT_FETCH_MAX_BYTES: u64 = 50 << 20;
    /// `fetch.max.bytes` must hold the largest batch and fit a message.
    pub const FETCH_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(256 << 20);
    /// Default in-flight byte budget (Kafka's `queued.max.request.bytes`).
    pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 512 << 20;
    /// The in-flight budget must hold a few large requests.
    pub const MAX_INFLIGHT_BYTES_RANGE: std::ops::RangeInclusive<u64> = (16 << 20)..=(64 << 30);

    /// Defaults for broker `node_id` with data under `data_dir`.
    pub fn new(node_id: u64, data_dir: &Path) -> Self {
        Self {
            node_id,
            log_dir: data_dir.join("logs"),
            flush: FlushPolicy::Always,
            replica_lag_time_max_ms: Self::DEFAULT_REPLICA_LAG_TIME_MAX_MS as i64,
            replica_fetch_wait_ms: 500,
            replica_fetch_max_bytes: 4 << 20,
            hw_checkpoint_interval: Duration::from_secs(5),
            retention_check_interval: Duration::from_secs(60),
            disk_reserve_bytes: crate::log::RESERVED_BYTES,
            fetch_max_bytes: Self::DEFAULT_FETCH_MAX_BYTES as usize,
            max_inflight_bytes: Self::DEFAULT_MAX_INFLIGHT_BYTES as usize,
        }
    }

    /// Checks every setting a user can give.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        check_range(
            "replica-lag-time-max-ms",
            self.replica_lag_time_max_ms,
            Self::MIN_REPLICA_LAG_TIME_MAX_MS as i64..=i64::MAX,
        )?;
        check_range(
            "fetch-max-bytes",
            self.fetch_max_bytes as u64,
            Self::FETCH_MAX_BYTES_RANGE,
        )?;
        check_range(
            "max-inflight-bytes",
            self.max_inflight_bytes as u64,
            Self::MAX_INFLIGHT_BYTES_RANGE,
        )?;
        check_range(
            "replica-fetch-max-bytes",
            self.replica_fetch_max_bytes,
            1024..=(64 << 20),
        )
    }
}

/// The file in a partition directory naming the topic id its data belongs
/// to, so a re-created topic of the same name never inherits old data.
const TOPIC_ID_FILE: &str = "topic-id";

/// How often leaders look for ISR changes to propose (and storage failures
/// to report).
const ISR_TICK: Duration = Duration::from_millis(100);
/// Longest one AlterPartition call to the controller may take.
const ALTER_PARTITION_TIMEOUT: Duration = Duration::from_secs(5);

/// The partitions hosted on this broker.
#[derive(Debug)]
pub struct ReplicaManager {
    /// Settings.
    pub(crate) config: BrokerConfig,
    /// The control plane (the metadata quorum, behind its seam).
    pub(crate) control: Arc<dyn ControlPlane>,
    /// This broker's standing with the controller.
    pub(crate) registration: Arc<BrokerRegistration>,
    /// Hosted replicas.
    partitions: RwLock<HashMap<Key, Arc<Partition>>>,
    /// Broker-wide wake-ups.
    pub(crate) signals: Arc<BrokerSignals>,
    /// Bumped after every reconcile: fetchers re-check what they follow.
    pub(crate) roles_changed: tokio::sync::watch::Sender<u64>,
    /// Replicas whose log could not be opened (EMFILE, EIO, ...), with why:
    /// reported as storage failures so leadership moves to a healthy
    /// replica, and retried at every image.
    open_failed: Mutex<BTreeMap<Key, String>>,
    /// Producer ids this broker may hand out (InitProducerId).
    pub(crate) producer_ids: crate::api::ProducerIdBlock,
    /// See [`Self::client_budget`].
    client_budget: Arc<crate::budget::ByteBudget>,
}

impl ReplicaManager {
    /// A manager following the control plane of `registration`; call
    /// [`Self::run`] to start it.
    pub fn new(config: BrokerConfig, registration: Arc<BrokerRegistration>) -> Arc<Self> {
        let control = Arc::clone(registration.control());
        let signals = Arc::new(BrokerSignals::default());
        if config.disk_reserve_bytes > 0 {
            if let Some(data_dir) = config.log_dir.parent() {
                let reserve = crate::log::DiskReserve::new(data_dir, config.disk_reserve_bytes);
                let _ = signals.disk_reserve.set(Arc::new(reserve));
            }
        }
        let client_budget = crate::budget::ByteBudget::new(config.max_inflight_bytes);
        Arc::new(Self {
            config,
            control,
            registration,
            partitions: RwLock::default(),
            open_failed: Mutex::default(),
            producer_ids: crate::api::ProducerIdBlock::default(),
            client_budget,
            signals,
            roles_changed: tokio::sync::watch::Sender::new(0),
        })
    }

    /// This broker's standing with the controller.
    pub fn registration(&self) -> &Arc<BrokerRegistration> {
        &self.registration
    }

    /// The node's budget of client bytes in flight, shared by every
    /// client-facing edge (gRPC and Kafka).
    pub fn client_budget(&self) -> &Arc<crate::budget::ByteBudget> {
        &self.client_budget
    }

    /// This broker's id.
    pub fn broker_id(&self) -> u64 {
        self.config.node_id
    }

    /// The current metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.control.image()
    }

    /// The hosted replica of `topic`/`partition`, or why there is none:
    /// unknown, or not hosted here.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, PartitionError> {
        if let Some(p) = self
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(topic.to_owned(), partition))
        {
            return Ok(Arc::clone(p));
        }
        match self.image().partition(topic, partition) {
            None => Err(PartitionError::UnknownTopicOrPartition),
            Some(p) if p.leader.is_none() => Err(PartitionError::LeaderNotAvailable),
            Some(_) => Err(PartitionError::NotLeader),
        }
    }

    /// Where clients should go for `topic`/`partition`, per the image.
    pub fn leader_hint(&self, topic: &str, partition: u32) -> Option<crate::api::LeaderInfo> {
        let image = self.image();
        let p = image.partition(topic, partition)?;
        let leader = p.leader?;
        let address = image.broker(leader)?.address.clone();
        Some(crate::api::LeaderInfo {
            id: leader.0,
            address,
            leader_epoch: p.leader_epoch,
        })
    }

    /// Every hosted replica.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The replicas following `source`, with the leader epoch they follow.
    pub(crate) fn followers_of(&self, source: u64) -> Vec<(Arc<Partition>, u32)> {
        self.all()
            .into_iter()
            .filter_map(|p| match p.following() {
                Some((Some(l), epoch)) if l == source => Some((p, epoch)),
                _ => None,
            })
            .collect()
    }

    /// This broker's current epoch, once registered.
    pub(crate) fn broker_epoch(&self) -> Option<u64> {
        self.image()
            .broker(BrokerId(self.config.node_id))
            .map(|b| b.broker_epoch)
    }

    fn lock_open_failed(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, String>> {
        self.open_failed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the log of a replica, wiping data that belongs to another topic
    /// id (a deleted topic re-created under the same name).
    fn open_log(
        &self,
        topic: &str,
        partition: u32,
        topic_id: TopicId,
        segment_bytes: u64,
    ) -> Result<Arc<dyn PartitionLog>, String> {
        let dir = partition_dir(&self.config.log_dir, topic, partition);
        let id_file = dir.join(TOPIC_ID_FILE);
        if let Ok(existing) = std::fs::read_to_string(&id_file) {
            if existing.trim() != topic_id.to_string() {
                warn!(dir = %dir.display(), old = existing.trim(), new = %topic_id,
                    "partition directory belongs to an older topic of the same name; deleting it");
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| format!("cannot delete {}: {e}", dir.display()))?;
            }
        }
        let config = LogConfig {
            segment_bytes: segment_bytes.clamp(1024, i32::MAX as u64),
            flush: self.config.flush,
            ..LogConfig::default()
        };
        let log = FileLog::open(&dir, config).map_err(|e| e.to_string())?;
        if !id_file.exists() {
            std::fs::write(&id_file, topic_id.to_string())
                .map_err(|e| format!("cannot write {}: {e}", id_file.display()))?;
        }
        Ok(Arc::new(log))
    }

    /// Brings the hosted replicas in line with `image` (blocking: opens logs,
    /// writes epoch checkpoints, deletes directories): executes the
    /// [`plan`](super::plan::plan) for it.
    pub fn reconcile(&self, image: &MetadataImage) {
        let me = BrokerId(self.config.node_id);
        let hosted: BTreeMap<Key, TopicId> = self
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, p)| (k.clone(), p.topic_id))
            .collect();
        let plan = super::plan::plan(image, me, &hosted);
        let wanted = plan.wanted_keys();
        for w in plan.wanted {
            let Some(part) = self.hosted_for(&w) else {
                continue;
            };
            part.set_config(&w.config);
            self.take_role(&part, w.role);
        }
        self.lock_open_failed().retain(|k, _| wanted.contains(k));
        for key in plan.remove {
            let part = self
                .partitions
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned();
            if let Some(part) = part {
                self.remove(&key, &part);
            }
        }
    }

    /// The replica `w` names, opened (or re-opened for a new topic id) as
    /// the plan says; `None` if its log cannot be opened (then it stays
    /// offline, its leadership moves, and the next image retries).
    fn hosted_for(&self, w: &Wanted) -> Option<Arc<Partition>> {
        let existing = self
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&w.key)
            .cloned();
        // The live replica decides (the plan was made from a snapshot of
        // the same map, so they agree while reconcile is the only writer).
        match existing {
            Some(part) if part.topic_id == w.topic_id => {
                debug_assert_eq!(w.log, LogStep::Keep);
                return Some(part);
            }
            Some(old) => {
                debug_assert_eq!(w.log, LogStep::Replace);
                self.remove(&w.key, &old);
            }
            None => debug_assert_eq!(w.log, LogStep::Open),
        }
        let (topic, partition) = (&w.key.0, w.key.1);
        let log = match self.open_log(topic, partition, w.topic_id, w.config.segment_bytes) {
            Ok(log) => {
                self.lock_open_failed().remove(&w.key);
                log
            }
            Err(e) => {
                // Once per replica and cause, not at every image.
                let mut failed = self.lock_open_failed();
                if failed.get(&w.key) != Some(&e) {
                    error!(%topic, partition, error = %e,
                        "cannot open the partition log; the replica stays offline and its leadership moves");
                }
                failed.insert(w.key.clone(), e);
                return None;
            }
        };
        let part = Arc::new(Partition::new(
            topic,
            partition,
            w.topic_id,
            self.config.node_id,
            log,
            w.config.clone(),
            Arc::clone(&self.signals),
        ));
        self.partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(w.key.clone(), Arc::clone(&part));
        Some(part)
    }

    /// Makes `part` lead or follow as the image says.
    fn take_role(&self, part: &Partition, role: Role) {
        let (topic, partition) = (&part.topic, part.partition);
        match role {
            Role::Lead {
                leader_epoch,
                partition_epoch,
                replicas,
                isr,
            } => {
                let was = part.leader_epoch();
                if let Err(e) = part.become_leader(leader_epoch, partition_epoch, &replicas, &isr) {
                    error!(%topic, partition, error = %e, "cannot become leader");
                    return;
                }
                if was != Some(leader_epoch) {
                    info!(%topic, partition, epoch = leader_epoch, isr = ?isr,
                        log_end = part.offsets().log_end_offset, "leading partition");
                }
                part.on_isr_committed(leader_epoch, &isr, partition_epoch);
            }
            Role::Follow {
                leader,
                leader_epoch,
            } => {
                if part.following() != Some((leader, leader_epoch)) {
                    debug!(%topic, partition, ?leader, epoch = leader_epoch, "following partition");
                }
                part.become_follower(leader, leader_epoch);
            }
        }
    }

    /// Stops a replica and deletes its data.
    fn remove(&self, key: &Key, part: &Arc<Partition>) {
        part.stop();
        self.partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        let dir = partition_dir(&self.config.log_dir, &key.0, key.1);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => info!(topic = %key.0, partition = key.1, "deleted replica data"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(dir = %dir.display(), error = %e, "cannot delete replica data"),
        }
    }

    /// Deletes partition directories the image no longer knows (topics
    /// deleted while this broker was down). Called once the image is known
    /// to be current.
    fn delete_orphans(&self, image: &MetadataImage) {
        let Ok(entries) = std::fs::read_dir(&self.config.log_dir) else {
            return;
        };
        let hosted: BTreeSet<PathBuf> = self
            .all()
            .iter()
            .map(|p| partition_dir(&self.config.log_dir, &p.topic, p.partition))
            .collect();
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() || hosted.contains(&path) {
                continue;
            }
            let id = std::fs::read_to_string(path.join(TOPIC_ID_FILE)).unwrap_or_default();
            let known = image
                .topics()
                .values()
                .any(|t| t.id.to_string() == id.trim());
            if !known {
                info!(dir = %path.display(), "deleting data of a topic deleted while this broker was down");
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    warn!(dir = %path.display(), error = %e, "cannot delete orphaned data");
                }
            }
        }
    }

    /// Whether the disk reserve was released (a log met a full disk).
    fn disk_reserve_released(&self) -> bool {
        self.signals
            .disk_reserve
            .get()
            .is_some_and(|r| !r.is_held())
    }

    /// Takes the reserved space back once the disk has room again
    /// (blocking); log appends resume then.
    fn restore_disk_reserve(&self) {
        let Some(reserve) = self.signals.disk_reserve.get() else {
            return;
        };
        if !reserve.is_held() {
            reserve.restore();
        }
    }

    /// Sends the ISR changes leaders want now, one at a time per partition.
    fn propose_isr_changes(self: &Arc<Self>, tasks: &mut JoinSet<()>) {
        let Some(broker_epoch) = self.broker_epoch() else {
            return;
        };
        let image = self.image();
        let live = |b: u64| image.is_live(rivulet_metadata::BrokerId(b));
        for part in self.all() {
            let Some((epoch, partition_epoch, new_isr)) =
                part.isr_change_due(self.config.replica_lag_time_max_ms, &live)
            else {
                continue;
            };
            let me = Arc::clone(self);
            tasks.spawn(async move {
                let req = AlterPartitionRequest {
                    topic: part.topic.clone(),
                    topic_id: part.topic_id,
                    partition: part.partition,
                    broker_id: BrokerId(me.config.node_id),
                    leader_epoch: epoch,
                    partition_epoch,
                    new_isr: new_isr.iter().map(|b| BrokerId(*b)).collect(),
                };
                let result = tokio::time::timeout(
                    ALTER_PARTITION_TIMEOUT,
                    me.control.alter_partition(broker_epoch, req),
                )
                .await;
                match result {
                    Ok(Ok(committed)) => {
                        info!(topic = %part.topic, partition = part.partition,
                            isr = ?committed.isr, "ISR changed");
                        part.isr_change_done(
                            epoch,
                            Some((&committed.isr, committed.partition_epoch)),
                        );
                    }
                    Ok(Err(e @ ControlError::Refused { .. })) => {
                        debug!(topic = %part.topic, partition = part.partition, error = %e,
                            "ISR change refused");
                        part.isr_change_done(epoch, None);
                    }
                    Ok(Err(e)) => {
                        debug!(error = %e, "AlterPartition failed");
                        part.isr_change_done(epoch, None);
                    }
                    Err(_) => part.isr_change_done(epoch, None),
                }
            });
        }
    }

    /// Hands the replicas whose logs cannot be written to the heartbeats,
    /// so the controller moves their leadership away and drops this broker
    /// from their ISRs (Kafka's offline log dir, per partition).
    fn report_storage_failures(&self, reported: &mut Vec<(String, u32)>) {
        let mut failed: Vec<(String, u32)> = self
            .all()
            .iter()
            .filter(|p| p.storage_failed())
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        failed.extend(self.lock_open_failed().keys().cloned());
        failed.sort();
        failed.dedup();
        if failed != *reported {
            if !failed.is_empty() {
                warn!(replicas = ?failed, "cannot write these replicas' logs; asking the controller to move them");
            }
            self.registration.report_storage_failed(failed.clone());
            *reported = failed;
        }
    }

    /// Runs until `cancel`: follows the image, runs fetchers and timers, and
    /// checkpoints every high watermark on the way out.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if let Err(e) = std::fs::create_dir_all(&self.config.log_dir) {
            error!(dir = %self.config.log_dir.display(), error = %e, "cannot create the log directory");
        }
        let me = BrokerId(self.config.node_id);
        let mut images = self.control.subscribe();
        // The image on disk may be stale: it may still name this broker the
        // leader of partitions that moved while it was down, and replaying
        // the Raft log at start shows earlier incarnations' registrations.
        // Host nothing until this process has registered and the image holds
        // that very registration (and so every change made before it).
        let mut registered = self.registration.registered_epoch();
        let epoch = tokio::select! {
            _ = cancel.cancelled() => return,
            r = registered.wait_for(Option::is_some) => match r.ok().and_then(|e| *e) {
                Some(e) => e,
                None => return,
            },
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = images.wait_for(|img| {
                img.broker(me).is_some_and(|b| b.broker_epoch >= epoch)
            }) => if r.is_err() { return },
        }
        info!("metadata caught up with this broker's registration; starting the data plane");
        let mut orphans_checked = false;
        let mut fetchers = Fetchers::new();
        let mut tasks = JoinSet::new();
        let mut isr_tick = tokio::time::interval(ISR_TICK);
        let mut storage_reported: Vec<(String, u32)> = Vec::new();
        let mut checkpoint_tick = tokio::time::interval(self.config.hw_checkpoint_interval);
        let mut retention_tick = tokio::time::interval(self.config.retention_check_interval);
        let mut reserve_tick = tokio::time::interval(Duration::from_secs(1));
        let flush_every = match self.config.flush {
            FlushPolicy::Interval(d) => d,
            _ => Duration::from_secs(3600),
        };
        let mut flush_tick = tokio::time::interval(flush_every);
        for t in [
            &mut isr_tick,
            &mut reserve_tick,
            &mut checkpoint_tick,
            &mut retention_tick,
            &mut flush_tick,
        ] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut reconcile_now = true;
        loop {
            if reconcile_now {
                reconcile_now = false;
                let image = images.borrow_and_update().clone();
                let this = Arc::clone(&self);
                let img = Arc::clone(&image);
                blocking("reconcile", move || this.reconcile(&img)).await;
                if !orphans_checked {
                    orphans_checked = true;
                    let this = Arc::clone(&self);
                    blocking("delete_orphans", move || this.delete_orphans(&image)).await;
                }
                self.update_fetchers(&mut fetchers, &cancel);
                self.roles_changed.send_modify(|g| *g = g.wrapping_add(1));
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                changed = images.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    reconcile_now = true;
                }
                _ = isr_tick.tick() => {
                    if fetchers.values().any(|(t, task)| task.is_finished() && !t.is_cancelled()) {
                        self.update_fetchers(&mut fetchers, &cancel);
                    }
                    self.propose_isr_changes(&mut tasks);
                    self.report_storage_failures(&mut storage_reported);
                }
                _ = checkpoint_tick.tick() => {
                    let this = Arc::clone(&self);
                    blocking("checkpoint_all", move || this.checkpoint_all()).await;
                }
                _ = reserve_tick.tick(), if self.disk_reserve_released() => {
                    let this = Arc::clone(&self);
                    blocking("restore_disk_reserve", move || this.restore_disk_reserve()).await;
                }
                _ = retention_tick.tick() => {
                    let this = Arc::clone(&self);
                    blocking("apply_retention", move || this.apply_retention()).await;
                }
                _ = flush_tick.tick(), if matches!(self.config.flush, FlushPolicy::Interval(_)) => {
                    let this = Arc::clone(&self);
                    blocking("flush_all", move || this.flush_all()).await;
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            error!(error = %e, "an ISR change task panicked");
                        }
                    }
                }
            }
        }
        for (token, _) in fetchers.values() {
            token.cancel();
        }
        tasks.abort_all();
        let this = Arc::clone(&self);
        blocking("final flush and checkpoint", move || {
            this.flush_all();
            this.checkpoint_all();
            this.snapshot_producers_all();
        })
        .await;
        info!("data plane stopped; high watermarks checkpointed");
    }

    /// Starts a fetcher for every broker some hosted replica follows, and
    /// stops the ones no longer needed.
    /// A fetcher that ended while still wanted (it panicked) is logged and
    /// started again, so its leader's partitions do not stop replicating.
    fn update_fetchers(self: &Arc<Self>, fetchers: &mut Fetchers, cancel: &CancellationToken) {
        let sources: BTreeSet<u64> = self
            .all()
            .iter()
            .filter_map(|p| p.following().and_then(|(l, _)| l))
            .collect();
        fetchers.retain(|source, (token, task)| {
            let keep = sources.contains(source);
            if !keep {
                debug!(source, "stopping fetcher");
                token.cancel();
                return false;
            }
            if task.is_finished() && !token.is_cancelled() {
                error!(source, "a fetcher stopped (it panicked); starting it again");
                return false;
            }
            true
        });
        for source in sources {
            fetchers.entry(source).or_insert_with(|| {
                debug!(source, "starting fetcher");
                let token = cancel.child_token();
                let host: Arc<dyn FetchHost> = Arc::clone(self) as Arc<dyn FetchHost>;
                let task = tokio::spawn(run_fetcher(host, source, token.clone()));
                (token, task)
            });
        }
    }

    fn checkpoint_all(&self) {
        for p in self.all() {
            if let Err(e) = p.log.checkpoint() {
                warn!(topic = %p.topic, partition = p.partition, error = %e, "HW checkpoint failed");
            }
        }
    }

    fn snapshot_producers_all(&self) {
        for p in self.all() {
            if let Err(e) = p.log.snapshot_producers() {
                warn!(topic = %p.topic, partition = p.partition, error = %e, "producer snapshot failed");
            }
        }
    }

    fn flush_all(&self) {
        for p in self.all() {
            if let Err(e) = p.log.flush() {
                warn!(topic = %p.topic, partition = p.partition, error = %e, "flush failed");
            }
        }
    }

    fn apply_retention(&self) {
        let now = now_ms();
        for p in self.all() {
            let policy = retention_policy(&p.config());
            match p.log.apply_retention(&policy, now) {
                Ok(o) if o.segments_deleted > 0 => info!(
                    topic = %p.topic, partition = p.partition, segments = o.segments_deleted,
                    bytes = o.bytes_deleted, log_start = o.log_start_offset, "retention deleted segments"),
                Ok(_) => {}
                Err(e) => {
                    warn!(topic = %p.topic, partition = p.partition, error = %e, "retention failed")
                }
            }
        }
    }
}

/// What time and size retention may delete for a topic configured `c`. A
/// `compact` topic "retains the latest value for each key": retention by
/// age or size never deletes its segments (Kafka: only `delete` in
/// `cleanup.policy` enables them), so until the log cleaner exists such a
/// topic keeps everything rather than losing keys.
fn retention_policy(c: &rivulet_metadata::TopicConfig) -> RetentionPolicy {
    match c.cleanup_policy {
        rivulet_metadata::CleanupPolicy::Delete => RetentionPolicy {
            retention_ms: c.retention_ms,
            retention_bytes: c.retention_bytes,
        },
        rivulet_metadata::CleanupPolicy::Compact => RetentionPolicy::default(),
    }
}

/// The running fetchers by source broker: how to stop each, and its task.
type Fetchers = HashMap<u64, (CancellationToken, tokio::task::JoinHandle<()>)>;

/// The fetchers' narrow view of the broker.
impl FetchHost for ReplicaManager {
    fn replica_id(&self) -> u64 {
        self.config.node_id
    }

    fn session(&self, source: u64) -> Option<(u64, String)> {
        let image = self.image();
        let address = image.broker(BrokerId(source))?.address.clone();
        let epoch = image.broker(BrokerId(self.config.node_id))?.broker_epoch;
        Some((epoch, address))
    }

    fn followers_of(&self, source: u64) -> Vec<(Arc<Partition>, u32)> {
        ReplicaManager::followers_of(self, source)
    }

    fn roles_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.roles_changed.subscribe()
    }

    fn fetch_settings(&self) -> FetchSettings {
        FetchSettings {
            wait_ms: self.config.replica_fetch_wait_ms,
            partition_max_bytes: self.config.replica_fetch_max_bytes,
        }
    }

    fn credentials(&self) -> rivulet_proto::node_auth::NodeCredentials {
        self.registration.credentials().clone()
    }
}

/// Runs blocking housekeeping (`what`) off the async threads and waits for
/// it; a panic in it is logged at ERROR with its name, never dropped.
async fn blocking(what: &'static str, work: impl FnOnce() + Send + 'static) {
    if let Err(e) = tokio::task::spawn_blocking(work).await {
        if e.is_panic() {
            error!(task = what, error = %e, "a background task panicked");
        }
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    #[test]
    fn a_compacted_topic_is_never_deleted_by_time_or_size() {
        let mut c = rivulet_metadata::TopicConfig {
            retention_ms: Some(1),
            retention_bytes: Some(1),
            ..Default::default()
        };
        assert_eq!(
            retention_policy(&c),
            RetentionPolicy {
                retention_ms: Some(1),
                retention_bytes: Some(1)
            }
        );
        c.cleanup_policy = rivulet_metadata::CleanupPolicy::Compact;
        assert_eq!(retention_policy(&c), RetentionPolicy::default());
    }
}
