//! The data plane's in-process tier: three brokers — real replica managers
//! over real logs in a temporary directory, real fetchers exchanging
//! `ReplicaFetch` over loopback gRPC — and a [`FakeControl`] control plane
//! that makes the controller's pure decisions at once, with no Raft and no
//! controller process. ISR churn, failover truncation and epoch fencing test
//! in a second or two instead of a multi-process cluster's start-up.
//!
//! Every wait has a deadline; nothing sleeps for a fixed time to "let things
//! settle".

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rivulet_metadata::BrokerId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{Acks, BrokerApi, ProduceEntry, ProduceRequest, ProduceResult};
use crate::api::{ReplicaFetchPartition, ReplicaFetchRequest};
use crate::control::ControlPlane;
use crate::groups::state::{Heartbeat, Tp};
use crate::groups::{CoordinatorConfig, GroupCoordinator, OFFSETS_TOPIC};
use crate::lifecycle::BrokerRegistration;
use crate::log::batch::{build_batch, RecordInput};
use crate::log::{LogError, ReadBound};
use crate::replica::{BrokerConfig, PartitionError, ReplicaManager};
use crate::testing::{FakeControl, ImageBuilder};

/// Whole-test limit.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// Deadline for one expected change.
const SETTLE: Duration = Duration::from_secs(15);
/// A follower that has not caught up for this long leaves the ISR.
const LAG_MAX_MS: i64 = 400;

/// Polls `f` every 10 ms until it returns `Some`, or panics after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One running broker.
struct Broker {
    mgr: Arc<ReplicaManager>,
    api: BrokerApi,
    groups: Arc<GroupCoordinator>,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

/// Three (or `n`) brokers over one fake control plane.
struct DataPlane {
    root: tempfile::TempDir,
    control: Arc<FakeControl>,
    addrs: BTreeMap<u64, SocketAddr>,
    brokers: BTreeMap<u64, Broker>,
}

impl DataPlane {
    async fn start(n: u64) -> Self {
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: BTreeMap<u64, SocketAddr> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap()))
            .collect();
        let names: Vec<String> = addrs.values().map(ToString::to_string).collect();
        let mut dp = Self {
            root: tempfile::tempdir().unwrap(),
            control: FakeControl::new(ImageBuilder::with_addresses(&names)),
            addrs,
            brokers: BTreeMap::new(),
        };
        for (id, l) in listeners {
            dp.run_broker(id, l);
        }
        dp
    }

    fn run_broker(&mut self, id: u64, listener: TcpListener) {
        let control: Arc<dyn ControlPlane> = Arc::clone(&self.control) as _;
        let registration = BrokerRegistration::new(
            id,
            Arc::clone(&control),
            rivulet_proto::node_auth::NodeCredentials::unsigned(id),
        );
        let epoch = control.image().broker(BrokerId(id)).unwrap().broker_epoch;
        registration.set_registered(epoch);
        let config = BrokerConfig {
            replica_lag_time_max_ms: LAG_MAX_MS,
            replica_fetch_wait_ms: 100,
            disk_reserve_bytes: 0,
            ..BrokerConfig::new(id, &self.root.path().join(format!("node-{id}")))
        };
        let mgr = ReplicaManager::new(config, registration);
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(Arc::clone(&mgr).run(stop.child_token()));
        let routes =
            tonic::service::Routes::new(crate::BrokerRpc::replication_server(Arc::clone(&mgr)));
        let server_stop = stop.clone();
        let images = Arc::clone(&mgr);
        let users = Arc::new(rivulet_metadata::authn::ClientAuth::open(Arc::new(
            move || images.image(),
        )));
        tasks.spawn(async move {
            let limits = rivulet_metadata::edge::EdgeLimits::default();
            let _ = rivulet_metadata::edge::serve(
                listener,
                routes,
                limits,
                Arc::new(rivulet_proto::node_auth::NodeVerifier::open()),
                users,
                None,
                server_stop,
            )
            .await;
        });
        let groups = GroupCoordinator::new(
            Arc::clone(&mgr),
            CoordinatorConfig {
                offsets_partitions: 1,
                ..CoordinatorConfig::default()
            },
        );
        tasks.spawn(Arc::clone(&groups).run(stop.child_token()));
        let api = BrokerApi::new(Arc::clone(&mgr));
        self.brokers.insert(
            id,
            Broker {
                mgr,
                api,
                groups,
                stop,
                tasks,
            },
        );
    }

    /// Stops broker `id` as a crash would, as far as the others can tell:
    /// it stops fetching and answering. Its logs stay on disk.
    async fn stop(&mut self, id: u64) {
        let mut b = self.brokers.remove(&id).expect("running");
        b.stop.cancel();
        while b.tasks.join_next().await.is_some() {}
    }

    /// Starts broker `id` again on its old address and data.
    async fn restart(&mut self, id: u64) {
        let addr = self.addrs[&id];
        let listener = eventually("the port to be free", SETTLE, || async {
            TcpListener::bind(addr).await.ok()
        })
        .await;
        self.run_broker(id, listener);
    }

    fn broker(&self, id: u64) -> &Broker {
        &self.brokers[&id]
    }

    fn leader(&self, topic: &str, partition: u32) -> u64 {
        self.control
            .image()
            .partition(topic, partition)
            .and_then(|p| p.leader)
            .expect("a leader")
            .0
    }

    fn isr(&self, topic: &str, partition: u32) -> Vec<u64> {
        let image = self.control.image();
        let p = image.partition(topic, partition).expect("the partition");
        p.isr.iter().map(|b| b.0).collect()
    }

    /// Produces `n` one-record batches to `topic`/0 through broker `via`.
    async fn produce(&self, via: u64, topic: &str, n: usize, acks: Acks) -> Vec<ProduceResult> {
        let entries = (0..n)
            .map(|i| ProduceEntry {
                topic: topic.to_owned(),
                partition: 0,
                batch: Ok(batch(&format!("{topic}-{i}")).to_vec()),
            })
            .collect();
        self.broker(via)
            .api
            .produce(ProduceRequest {
                acks,
                timeout: Some(Duration::from_secs(10)),
                entries,
                held: None,
                access: rivulet_metadata::security::Access::open(),
                appended: None,
            })
            .await
            .expect("a produce answer")
    }

    /// Broker `id`'s whole log of `topic`/0 (end, HW, bytes).
    fn log_of(&self, id: u64, topic: &str) -> Option<(u64, u64, Bytes)> {
        let part = self.broker(id).mgr.partition(topic, 0).ok()?;
        let o = part.offsets();
        let bytes = part.log.read(0, 64 << 20, ReadBound::LogEnd).ok()?;
        Some((o.log_end_offset, o.high_watermark, bytes))
    }

    /// Waits until every running broker holds `topic`/0 up to `end` with
    /// its HW there too, and all logs are byte-identical.
    async fn wait_replicated(&self, topic: &str, end: u64) {
        eventually(
            &format!("{topic} replicated to {end} everywhere"),
            SETTLE,
            || async {
                let logs: Vec<_> = self
                    .brokers
                    .keys()
                    .map(|id| self.log_of(*id, topic))
                    .collect::<Option<_>>()?;
                let first = &logs[0];
                logs.iter()
                    .all(|l| l.0 == end && l.1 == end && l.2 == first.2)
                    .then_some(())
            },
        )
        .await;
    }

    async fn shutdown(mut self) {
        let ids: Vec<u64> = self.brokers.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

/// A ReplicaFetch of `t`/0 as broker `follower` at `broker_epoch`, following
/// leader epoch `epoch`, from an offset past the log end (it would count as
/// full progress if accepted).
fn fetch_t0_as(follower: u64, broker_epoch: u64, epoch: u32) -> ReplicaFetchRequest {
    ReplicaFetchRequest {
        replica_id: follower,
        broker_epoch,
        max_wait: Duration::ZERO,
        min_bytes: 0,
        max_bytes: 1 << 20,
        partitions: vec![ReplicaFetchPartition {
            topic: "t".into(),
            partition: 0,
            current_leader_epoch: epoch,
            fetch_offset: 1_000,
            last_fetched_epoch: Some(epoch),
            max_bytes: 1 << 20,
            storage_failed: false,
        }],
    }
}

/// A one-record batch.
fn batch(value: &str) -> Bytes {
    build_batch(&[RecordInput {
        key: None,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: Vec::new(),
        timestamp_ms: 1_700_000_000_000,
    }])
    .unwrap()
}

async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("the test finished in time");
}

fn ok(results: &[ProduceResult]) -> bool {
    results.iter().all(|r| r.error.is_none() && r.appended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_is_acknowledged_once_every_in_sync_replica_holds_the_records() {
    bounded(async {
        let dp = DataPlane::start(3).await;
        dp.control.update(|b| b.create_topic("t", 1, 3));
        let leader = dp.leader("t", 0);
        let results = eventually("the leader to take the produce", SETTLE, || async {
            let r = dp.produce(leader, "t", 20, Acks::All).await;
            ok(&r).then_some(r)
        })
        .await;
        let bases: Vec<u64> = results.iter().map(|r| r.base_offset).collect();
        assert_eq!(bases, (0..20).collect::<Vec<_>>());
        // Acknowledged means committed: the leader's HW is past every record.
        let (end, hw, _) = dp.log_of(leader, "t").unwrap();
        assert_eq!((end, hw), (20, 20));
        dp.wait_replicated("t", 20).await;
        assert_eq!(dp.isr("t", 0).len(), 3, "nobody left the ISR");
        dp.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_follower_leaves_the_isr_and_rejoins_once_caught_up() {
    bounded(async {
        let mut dp = DataPlane::start(3).await;
        dp.control.update(|b| b.create_topic("t", 1, 3));
        let leader = dp.leader("t", 0);
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        eventually("a first produce", SETTLE, || async {
            ok(&dp.produce(leader, "t", 1, Acks::All).await).then_some(())
        })
        .await;
        dp.stop(follower).await;
        let started = Instant::now();
        // acks=all waits for the stopped follower until the leader drops it
        // from the ISR (replica.lag.time.max.ms); then it is acknowledged.
        let r = dp.produce(leader, "t", 5, Acks::All).await;
        assert!(ok(&r), "{r:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(LAG_MAX_MS as u64 / 2),
            "acknowledged after {waited:?}, before the follower could have been dropped"
        );
        let isr = dp.isr("t", 0);
        assert!(
            !isr.contains(&follower),
            "isr {isr:?} still holds {follower}"
        );
        assert_eq!(isr.len(), 2);

        // Back, it catches up from its log end and the leader adds it again.
        dp.restart(follower).await;
        eventually("the follower back in the ISR", SETTLE, || async {
            dp.isr("t", 0).contains(&follower).then_some(())
        })
        .await;
        dp.wait_replicated("t", 6).await;
        dp.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_failover_the_old_leaders_unacknowledged_tail_is_truncated() {
    bounded(async {
        let mut dp = DataPlane::start(3).await;
        dp.control.update(|b| b.create_topic("t", 1, 3));
        let old = dp.leader("t", 0);
        eventually("a first produce", SETTLE, || async {
            ok(&dp.produce(old, "t", 3, Acks::All).await).then_some(())
        })
        .await;
        dp.wait_replicated("t", 3).await;
        let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
        // The followers stop; the leader takes acks=1 writes only it has.
        for id in &others {
            dp.stop(*id).await;
        }
        let r = dp.produce(old, "t", 4, Acks::Leader).await;
        assert!(ok(&r), "{r:?}");
        assert_eq!(dp.log_of(old, "t").unwrap().0, 7);
        // The leader is fenced before it could drop anyone from the ISR; a
        // follower becomes leader under a new epoch and takes new writes.
        dp.control.update(|b| b.fence(old));
        let new = dp.leader("t", 0);
        assert!(others.contains(&new), "{new} leads");
        for id in &others {
            dp.restart(*id).await;
        }
        eventually("the new leader to take writes", SETTLE, || async {
            ok(&dp.produce(new, "t", 2, Acks::Leader).await).then_some(())
        })
        .await;
        // The old leader comes back (a new incarnation), follows, finds its
        // log diverged at offset 3 and truncates the 4 records nobody else
        // has, then replicates the new leader's log byte for byte.
        dp.control.update(|b| {
            let addr = dp.addrs[&old].to_string();
            b.join(old, &addr);
        });
        let end = dp.log_of(new, "t").unwrap().0;
        assert!(end >= 5, "the new leader's log ends at {end}");
        eventually(
            "the old leader's log to match the new one",
            SETTLE,
            || async {
                let (a, b) = (dp.log_of(old, "t")?, dp.log_of(new, "t")?);
                (a.0 == b.0 && a.2 == b.2).then_some(())
            },
        )
        .await;
        dp.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_fetch_from_another_incarnation_is_refused_and_moves_nothing() {
    bounded(async {
        let dp = DataPlane::start(3).await;
        dp.control.update(|b| b.create_topic("t", 1, 3));
        let leader = dp.leader("t", 0);
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        eventually("a first produce", SETTLE, || async {
            ok(&dp.produce(leader, "t", 2, Acks::All).await).then_some(())
        })
        .await;
        let stale = dp
            .control
            .image()
            .broker(BrokerId(follower))
            .unwrap()
            .broker_epoch;
        // The follower re-registers: its old epoch is now stale.
        dp.control.update(|b| {
            let addr = dp.addrs[&follower].to_string();
            b.join(follower, &addr);
        });
        let epoch = dp.control.image().partition("t", 0).unwrap().leader_epoch;
        let hw_before = dp.log_of(leader, "t").unwrap().1;
        let answer = dp
            .broker(leader)
            .api
            .replica_fetch(fetch_t0_as(follower, stale, epoch))
            .await;
        let results = answer.expect("an answer per partition");
        assert!(
            matches!(
                results.as_slice(),
                [Err(PartitionError::StaleBrokerEpoch { request, .. })] if *request == stale
            ),
            "a stale incarnation's fetch was not refused: {results:?}"
        );
        // Nor does an epoch the controller never gave out (a forged call).
        let forged = fetch_t0_as(follower, u64::MAX, epoch);
        let results = dp.broker(leader).api.replica_fetch(forged).await.unwrap();
        assert!(
            matches!(
                results.as_slice(),
                [Err(PartitionError::StaleBrokerEpoch { .. })]
            ),
            "a fetch from the future was accepted: {results:?}"
        );
        assert_eq!(dp.log_of(leader, "t").unwrap().1, hw_before);
        dp.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_coordinator_reloads_members_and_committed_offsets_from_the_log() {
    bounded(async {
        let dp = DataPlane::start(3).await;
        let group = "billing";
        // The first FindCoordinator creates __consumer_offsets (RF 3).
        let (first, _) = eventually("a coordinator", SETTLE, || async {
            dp.broker(1).groups.find(group).await.ok()
        })
        .await;
        let coordinator = dp.broker(first.id);
        let now = || tokio::time::Instant::now();
        let join = Heartbeat {
            group: group.into(),
            member_id: String::new(),
            member_epoch: 0,
            subscribed: vec!["orders".into()],
            owned: Default::default(),
            client_id: "c-1".into(),
            session_timeout_ms: 30_000,
        };
        let reply = eventually(
            "the shard loaded and the join committed",
            SETTLE,
            || async {
                let hb = join.clone();
                coordinator
                    .groups
                    .update(group, |g| g.heartbeat(hb, &|_: &str| Some(4), now(), 1))
                    .await
                    .ok()
            },
        )
        .await;
        let tp: Tp = ("orders".into(), 2);
        let offsets = vec![(tp.clone(), 42, "checkpoint".to_owned())];
        let (member, epoch) = (reply.member_id.clone(), reply.member_epoch);
        coordinator
            .groups
            .update(group, |g| {
                g.commit(group, &member, epoch, offsets, now(), 7)
                    .map(|records| (records, ()))
            })
            .await
            .expect("the commit is replicated");

        // The coordinator's broker is fenced: another replica of
        // __consumer_offsets-0 leads, loads the shard from its copy of the
        // log, and answers with the same group.
        dp.control.update(|b| b.fence(first.id));
        let next = dp.leader(OFFSETS_TOPIC, 0);
        assert_ne!(next, first.id);
        let shard = eventually("the new coordinator's shard", SETTLE, || async {
            dp.broker(next).groups.shard_for(group).ok()
        })
        .await;
        let groups = shard.groups.lock().await;
        let g = groups.groups.get(group).expect("the group was reloaded");
        let committed = g
            .offsets
            .get(&tp)
            .expect("the committed offset was reloaded");
        assert_eq!(
            (committed.offset, committed.metadata.as_str()),
            (42, "checkpoint")
        );
        let m = g
            .members
            .get(&reply.member_id)
            .expect("the member was reloaded");
        assert_eq!(m.value.epoch, reply.member_epoch);
        assert_eq!(m.value.assigned, reply.assignment);
        drop(groups);
        dp.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_find_coordinator_dropped_while_creating_the_offsets_topic_does_not_wedge_it() {
    bounded(async {
        let dp = DataPlane::start(1).await;
        let hang = || {
            dp.control
                .hang_create_topic
                .store(true, std::sync::atomic::Ordering::Release)
        };
        hang();
        // The client gives up on a FindCoordinator stuck creating the topic.
        let dropped =
            tokio::time::timeout(Duration::from_millis(200), dp.broker(1).groups.find("g")).await;
        assert!(dropped.is_err(), "the create should hang: {dropped:?}");
        // The controller answers again: the next FindCoordinator creates it.
        dp.control
            .hang_create_topic
            .store(false, std::sync::atomic::Ordering::Release);
        eventually("the offsets topic", SETTLE, || async {
            dp.broker(1).groups.find("g").await.ok()
        })
        .await;
        dp.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_leaders_log_start_and_the_followers_follow() {
    bounded(async {
        let dp = DataPlane::start(3).await;
        dp.control.update(|b| b.create_topic("t", 1, 3));
        let leader = dp.leader("t", 0);
        eventually("the leader to take the produce", SETTLE, || async {
            let r = dp.produce(leader, "t", 30, Acks::All).await;
            ok(&r).then_some(())
        })
        .await;
        dp.wait_replicated("t", 30).await;
        let part = dp.broker(leader).mgr.partition("t", 0).unwrap();
        // Past the high watermark: refused, nothing moves.
        assert!(matches!(
            part.delete_records(Some(31)),
            Err(PartitionError::Log(LogError::OffsetOutOfRange { .. }))
        ));
        assert_eq!(part.delete_records(Some(12)).unwrap(), 12);
        // A follower refuses: only the leader deletes.
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        let theirs = dp.broker(follower).mgr.partition("t", 0).unwrap();
        assert!(matches!(
            theirs.delete_records(Some(20)),
            Err(PartitionError::NotLeader)
        ));
        // The followers take the leader's log start with their next fetch
        // (one more produce makes sure there is one).
        dp.produce(leader, "t", 1, Acks::All).await;
        eventually("every replica's log start at 12", SETTLE, || async {
            (1..=3)
                .all(|id| {
                    dp.broker(id)
                        .mgr
                        .partition("t", 0)
                        .is_ok_and(|p| p.offsets().log_start_offset == 12)
                })
                .then_some(())
        })
        .await;
        // None: up to the high watermark.
        assert_eq!(part.delete_records(None).unwrap(), 31);
        dp.shutdown().await;
    })
    .await;
}
