//! Consumer groups: [`GroupConsumer`] (subscribe, poll, commit) and the
//! coordinator plumbing shared with [`crate::Admin`]'s group operations.
//!
//! The coordinator assigns partitions (KIP-848 style); this side only follows
//! it. A background task heartbeats with the partitions the consumer reads
//! right now and stores the assignment the coordinator answers; every
//! [`GroupConsumer::poll`] first applies it:
//!
//! ```text
//!  heartbeat task ── owned ──▶ coordinator ── assignment ──▶ shared state
//!  poll: revoked = owned − assignment ─▶ commit them ─▶ stop reading ─▶ report
//!        added   = assignment − owned ─▶ committed offset (or reset) ─▶ read
//! ```
//!
//! Partitions the consumer keeps are read on without a pause.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster::Channel;
use rivulet_proto::v1::groups_client::GroupsClient;
use rivulet_proto::v1::{
    CommitOffset, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    DeleteGroupResponse, DescribeGroupResponse, ErrorCode, FindCoordinatorRequest,
    FindCoordinatorResponse, ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicPartitions,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cluster::{ClientConfig, Cluster};
use crate::consumer::{Consumer, ConsumerConfig};
use crate::error::{Error, Result};
use crate::records::ConsumerRecord;

/// A topic partition.
pub type TopicPartition = (String, u32);

/// Responses that carry an error code.
pub(crate) trait Coded {
    fn code(&self) -> (i32, &str);
}

macro_rules! coded {
    ($($t:ty),*) => {$(
        impl Coded for $t {
            fn code(&self) -> (i32, &str) {
                (self.error_code, &self.error_message)
            }
        }
    )*};
}
coded!(
    FindCoordinatorResponse,
    ConsumerGroupHeartbeatResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    DescribeGroupResponse,
    DeleteGroupResponse,
    ListGroupsResponse
);

/// Finds and follows a group's coordinator.
#[derive(Debug, Clone)]
pub(crate) struct Coordinator {
    cluster: Cluster,
    group: String,
    addr: Arc<Mutex<Option<(u64, String)>>>,
}

impl Coordinator {
    pub(crate) fn new(cluster: Cluster, group: &str) -> Self {
        Self {
            cluster,
            group: group.to_owned(),
            addr: Arc::new(Mutex::new(None)),
        }
    }

    fn cached(&self) -> Option<(u64, String)> {
        self.addr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn forget(&self) {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The coordinator's (id, address), asking any node.
    async fn locate(&self) -> Result<(u64, String)> {
        if let Some(a) = self.cached() {
            return Ok(a);
        }
        let mut last = Error::Unreachable("no node tried".into());
        for addr in self.cluster.candidates() {
            let mut c = GroupsClient::new(self.cluster.channel(&addr)?);
            let mut req = tonic::Request::new(FindCoordinatorRequest {
                group_id: self.group.clone(),
            });
            req.set_timeout(Duration::from_secs(5));
            match c.find_coordinator(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    match (r.error_code, r.coordinator) {
                        (0, Some(b)) => {
                            let found = (b.id, b.address);
                            *self.addr.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(found.clone());
                            return Ok(found);
                        }
                        (code, _) => {
                            let e = Error::broker(code, r.error_message);
                            if !is_coordinator_retriable(&e) {
                                return Err(e);
                            }
                            last = e;
                        }
                    }
                }
                Err(s) => last = s.into(),
            }
        }
        Err(last)
    }

    /// Calls the coordinator, following it when it moves, until `deadline`.
    pub(crate) async fn call<T, F, Fut>(&self, deadline: Duration, f: F) -> Result<T>
    where
        T: Coded,
        F: Fn(GroupsClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let until = Instant::now() + deadline;
        loop {
            let e = match self.try_once(&f).await {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            if !is_coordinator_retriable(&e) || Instant::now() >= until {
                return Err(e);
            }
            if e.code() != Some(ErrorCode::CoordinatorLoadInProgress) {
                self.forget();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_once<T, F, Fut>(&self, f: &F) -> Result<T>
    where
        T: Coded,
        F: Fn(GroupsClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let (_, addr) = self.locate().await?;
        let r = f(GroupsClient::new(self.cluster.channel(&addr)?))
            .await?
            .into_inner();
        let (code, message) = r.code();
        if code == ErrorCode::None as i32 {
            Ok(r)
        } else {
            Err(Error::broker(code, message))
        }
    }

    /// The coordinator's broker id, once found.
    pub(crate) fn id(&self) -> Option<u64> {
        self.cached().map(|(id, _)| id)
    }
}

/// Whether a coordinator call may succeed if tried again (elsewhere).
fn is_coordinator_retriable(e: &Error) -> bool {
    match e.code() {
        Some(
            ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::RequestTimedOut,
        ) => true,
        Some(_) => false,
        None => matches!(e, Error::Unreachable(_) | Error::Rpc(_)),
    }
}

/// Group consumer settings.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The fetch settings (offset reset for partitions without a commit).
    pub consumer: ConsumerConfig,
    /// Expire this member if the coordinator hears nothing for this long.
    pub session_timeout: Duration,
    /// Commit the positions of owned partitions every `auto_commit_interval`
    /// during `poll`, before giving a partition up, and on `close`.
    pub auto_commit: bool,
    pub auto_commit_interval: Duration,
    /// Shown by `group describe`.
    pub client_id: String,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            consumer: ConsumerConfig::default(),
            session_timeout: Duration::from_secs(10),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            client_id: "rivulet-client".into(),
        }
    }
}

/// A change to what the consumer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// Partitions given to this member (reading starts at the committed
    /// offset, else at the reset point).
    Assigned(Vec<TopicPartition>),
    /// Partitions given up in an orderly way (committed first with
    /// auto-commit).
    Revoked(Vec<TopicPartition>),
    /// Partitions lost without a commit: the member was fenced or expired
    /// and has rejoined.
    Lost(Vec<TopicPartition>),
}

#[derive(Debug, Default)]
struct Membership {
    member_id: String,
    epoch: i32,
    /// The coordinator's latest answer.
    assignment: Option<BTreeSet<TopicPartition>>,
    /// What `poll` reads now.
    owned: BTreeSet<TopicPartition>,
    /// Set when the coordinator fenced us: drop everything.
    fenced: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<Membership>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A member of a consumer group: the coordinator decides which partitions of
/// the subscribed topics it reads; positions start at the group's committed
/// offsets.
#[derive(Debug)]
pub struct GroupConsumer {
    consumer: Consumer,
    coordinator: Coordinator,
    group: String,
    config: GroupConfig,
    shared: Arc<Shared>,
    owned: BTreeSet<TopicPartition>,
    events: Vec<RebalanceEvent>,
    last_commit: Instant,
    committed: HashMap<TopicPartition, u64>,
    heartbeat: Option<JoinHandle<()>>,
}

impl GroupConsumer {
    /// Joins `group` reading `topics`. The first assignment arrives with the
    /// first heartbeats; `poll` applies it.
    pub async fn subscribe(
        client: ClientConfig,
        group: &str,
        topics: &[&str],
        config: GroupConfig,
    ) -> Result<Self> {
        if topics.is_empty() {
            return Err(Error::Invalid("subscribe to at least one topic".into()));
        }
        let consumer = Consumer::connect(client, config.consumer.clone()).await?;
        for t in topics {
            consumer.partitions(t).await?;
        }
        let coordinator = Coordinator::new(consumer.cluster().clone(), group);
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(heartbeat_loop(
            coordinator.clone(),
            Arc::clone(&shared),
            group.to_owned(),
            topics.iter().map(|t| (*t).to_owned()).collect(),
            config.clone(),
        ));
        Ok(Self {
            consumer,
            coordinator,
            group: group.to_owned(),
            config,
            shared,
            owned: BTreeSet::new(),
            events: Vec::new(),
            last_commit: Instant::now(),
            committed: HashMap::new(),
            heartbeat: Some(task),
        })
    }

    /// The group id.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// This member's id and epoch (empty and 0 until the first heartbeat).
    pub fn member(&self) -> (String, i32) {
        let m = self.shared.lock();
        (m.member_id.clone(), m.epoch)
    }

    /// The partitions this consumer reads now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.iter().cloned().collect()
    }

    /// The next offset to read of an owned partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.consumer.position(topic, partition)
    }

    /// Moves the position of an owned partition (the next `commit` stores
    /// it).
    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        if !self.owned.contains(&(topic.to_owned(), partition)) {
            return Err(Error::Invalid(format!(
                "seek on {topic}-{partition}: this member does not own it"
            )));
        }
        self.consumer.assign_at(topic, partition, Some(offset));
        Ok(())
    }

    /// Assignment changes since the last call.
    pub fn take_events(&mut self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut self.events)
    }

    /// Applies the latest assignment, auto-commits when due, and returns the
    /// records of the next fetch to complete (empty when none arrived in the
    /// fetch wait, or while nothing is assigned).
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        self.reconcile().await?;
        if self.config.auto_commit && self.last_commit.elapsed() >= self.config.auto_commit_interval
        {
            if let Err(e) = self.commit().await {
                warn!(group = %self.group, error = %e, "auto-commit failed");
            }
        }
        if self.owned.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(Vec::new());
        }
        self.consumer.poll().await
    }

    async fn reconcile(&mut self) -> Result<()> {
        let (target, fenced) = {
            let mut m = self.shared.lock();
            (m.assignment.clone(), std::mem::take(&mut m.fenced))
        };
        if fenced && !self.owned.is_empty() {
            let lost: Vec<TopicPartition> = self.owned.iter().cloned().collect();
            warn!(group = %self.group, partitions = lost.len(), "fenced by the coordinator: dropping every partition");
            self.consumer.unassign(&lost);
            self.owned.clear();
            self.shared.lock().owned.clear();
            self.events.push(RebalanceEvent::Lost(lost));
        }
        let Some(target) = target else {
            return Ok(());
        };
        let revoked: Vec<TopicPartition> = self.owned.difference(&target).cloned().collect();
        if !revoked.is_empty() {
            if self.config.auto_commit {
                if let Err(e) = self.commit_partitions(&revoked).await {
                    warn!(group = %self.group, error = %e, "commit before revocation failed");
                }
            }
            self.consumer.unassign(&revoked);
            for tp in &revoked {
                self.owned.remove(tp);
            }
            debug!(group = %self.group, ?revoked, "partitions revoked");
            self.events.push(RebalanceEvent::Revoked(revoked));
        }
        let added: Vec<TopicPartition> = target.difference(&self.owned).cloned().collect();
        if !added.is_empty() {
            let committed = self.fetch_committed(&added).await?;
            for tp in &added {
                let at = committed.get(tp).copied();
                self.consumer.assign_at(&tp.0, tp.1, at);
                if let Some(o) = at {
                    self.committed.insert(tp.clone(), o);
                }
                self.owned.insert(tp.clone());
            }
            debug!(group = %self.group, ?added, "partitions assigned");
            self.events.push(RebalanceEvent::Assigned(added));
        }
        let changed = {
            let mut m = self.shared.lock();
            let changed = m.owned != self.owned;
            m.owned = self.owned.clone();
            changed
        };
        if changed {
            // Released partitions reach their next owner sooner.
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// The committed offsets of `partitions`.
    async fn fetch_committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, u64>> {
        let wire = to_wire(partitions);
        let group = self.group.clone();
        let r = self
            .coordinator
            .call(Duration::from_secs(30), |mut c| {
                let req = OffsetFetchRequest {
                    group_id: group.clone(),
                    partitions: wire.clone(),
                };
                async move { c.offset_fetch(req).await }
            })
            .await?;
        Ok(r.offsets
            .into_iter()
            .filter_map(|o| o.offset.map(|off| ((o.topic, o.partition), off)))
            .collect())
    }

    /// Commits the current position of every owned partition.
    pub async fn commit(&mut self) -> Result<()> {
        let owned: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        self.commit_partitions(&owned).await?;
        self.last_commit = Instant::now();
        Ok(())
    }

    async fn commit_partitions(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let offsets: Vec<(String, u32, u64)> = partitions
            .iter()
            .filter_map(|(t, p)| {
                let pos = self.consumer.position(t, *p)?;
                (self.committed.get(&(t.clone(), *p)) != Some(&pos)).then(|| (t.clone(), *p, pos))
            })
            .collect();
        self.commit_offsets(&offsets).await
    }

    /// Commits explicit offsets (the next offset to read) of owned
    /// partitions.
    pub async fn commit_offsets(&mut self, offsets: &[(String, u32, u64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let (member_id, epoch) = self.member();
        let req = OffsetCommitRequest {
            group_id: self.group.clone(),
            member_id,
            member_epoch: epoch,
            offsets: offsets
                .iter()
                .map(|(t, p, o)| CommitOffset {
                    topic: t.clone(),
                    partition: *p,
                    offset: *o,
                    metadata: String::new(),
                })
                .collect(),
        };
        self.coordinator
            .call(Duration::from_secs(30), |mut c| {
                let req = req.clone();
                async move { c.offset_commit(req).await }
            })
            .await?;
        for (t, p, o) in offsets {
            self.committed.insert((t.clone(), *p), *o);
        }
        Ok(())
    }

    /// Commits (with auto-commit) and leaves the group, so its partitions
    /// move to the other members at once instead of after the session
    /// timeout.
    pub async fn close(mut self) -> Result<()> {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
        let committed = if self.config.auto_commit {
            self.commit().await
        } else {
            Ok(())
        };
        let (member_id, epoch) = self.member();
        if epoch > 0 {
            let req = ConsumerGroupHeartbeatRequest {
                group_id: self.group.clone(),
                member_id,
                member_epoch: -1,
                ..Default::default()
            };
            let left = self
                .coordinator
                .call(Duration::from_secs(5), |mut c| {
                    let req = req.clone();
                    async move { c.consumer_group_heartbeat(req).await }
                })
                .await;
            if let Err(e) = left {
                warn!(group = %self.group, error = %e, "leaving the group failed; the session timeout will expire the member");
            }
        }
        committed
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }
}

/// Topic partitions grouped per topic, for the wire.
pub(crate) fn to_wire(partitions: &[TopicPartition]) -> Vec<TopicPartitions> {
    rivulet_common::ids::to_wire(partitions.iter().map(|(t, p)| (t.as_str(), *p)))
}

pub(crate) fn from_wire(list: &[TopicPartitions]) -> BTreeSet<TopicPartition> {
    rivulet_common::ids::from_wire(list).collect()
}

/// Heartbeats until aborted: joins, keeps the membership alive, rejoins
/// after being fenced.
async fn heartbeat_loop(
    coordinator: Coordinator,
    shared: Arc<Shared>,
    group: String,
    topics: Vec<String>,
    config: GroupConfig,
) {
    let session_ms = u32::try_from(config.session_timeout.as_millis()).unwrap_or(u32::MAX);
    loop {
        let req = {
            let m = shared.lock();
            ConsumerGroupHeartbeatRequest {
                group_id: group.clone(),
                member_id: m.member_id.clone(),
                member_epoch: m.epoch,
                subscribed_topics: topics.clone(),
                owned_partitions: to_wire(&m.owned.iter().cloned().collect::<Vec<_>>()),
                client_id: config.client_id.clone(),
                session_timeout_ms: session_ms,
            }
        };
        let joining = req.member_epoch == 0;
        let answer = coordinator
            .call(config.session_timeout / 3, |mut c| {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(Duration::from_secs(5));
                async move { c.consumer_group_heartbeat(r).await }
            })
            .await;
        let interval = match answer {
            Ok(r) => {
                let assignment = from_wire(&r.assignment);
                let mut m = shared.lock();
                if joining {
                    info!(group = %group, member = %r.member_id, epoch = r.member_epoch, coordinator = ?coordinator.id(), "joined the group");
                }
                m.member_id = r.member_id;
                m.epoch = r.member_epoch;
                m.assignment = Some(assignment);
                Duration::from_millis(u64::from(r.heartbeat_interval_ms.max(20)))
            }
            Err(e)
                if matches!(
                    e.code(),
                    Some(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch)
                ) =>
            {
                warn!(group = %group, error = %e, "fenced: rejoining");
                let mut m = shared.lock();
                m.epoch = 0;
                m.fenced = true;
                m.assignment = Some(BTreeSet::new());
                m.owned.clear();
                continue;
            }
            Err(e) => {
                debug!(group = %group, error = %e, "heartbeat failed; retrying");
                Duration::from_millis(200)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shared.wake.notified() => {}
        }
    }
}
