//! The controller quorum with real processes: election, a write through a
//! follower, `kill -9` of the active controller, a SIGSTOPped follower, and a
//! full-cluster restart, a voter whose data dir was wiped. The multi-process
//! twin of `metadata/src/quorum/tests.rs`. Every wait has a deadline and every
//! test a time limit.

use std::future::Future;
use std::time::{Duration, Instant};

use cluster_tests::{fmt_duration, wait_until, Cluster};
use rivulet_proto::v1::{CreateTopicRequest, ErrorCode, PartitionInfo, TopicInfo};

/// Whole-test limit; each test takes a few seconds when healthy.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// Deadline for brokers to register or for an image change to propagate.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Failover budget: a metadata write succeeds again this soon after the
/// active controller dies.
const FAILOVER_BUDGET: Duration = Duration::from_secs(3);

const NONE: i32 = ErrorCode::None as i32;

/// Runs a test body under [`TEST_LIMIT`]. On timeout the body's `Cluster` is
/// dropped unchecked, which prints the nodes' logs.
async fn bounded(body: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("the test exceeded its {TEST_LIMIT:?} limit");
    }
}

/// The partitions of `topic` led by `broker`.
fn led_by(topic: &TopicInfo, broker: u64) -> Vec<u32> {
    topic
        .partitions
        .iter()
        .filter(|p| p.leader == Some(broker))
        .map(|p| p.partition)
        .collect()
}

fn partition(topic: &TopicInfo, p: u32) -> &PartitionInfo {
    topic
        .partitions
        .iter()
        .find(|x| x.partition == p)
        .unwrap_or_else(|| panic!("{} has no partition {p}", topic.name))
}

/// What must survive a restart of a topic: name, id and each partition's
/// replicas (ISR and leaders may change while the brokers come back).
type TopicLayout = (String, String, Vec<Vec<u64>>);

/// The layouts of `topics`, sorted by name.
fn topic_layout(topics: Vec<TopicInfo>) -> Vec<TopicLayout> {
    let mut layout: Vec<TopicLayout> = topics
        .into_iter()
        .map(|t| {
            let replicas = t.partitions.iter().map(|p| p.replicas.clone()).collect();
            (t.name, t.topic_id, replicas)
        })
        .collect();
    layout.sort();
    layout
}

/// Whether `broker` is registered and fenced (`Some(true)`), registered and
/// unfenced (`Some(false)`) in node `view`'s image.
async fn fenced(c: &Cluster, view: u64, broker: u64) -> Option<bool> {
    let d = c.describe(view).await.ok()?;
    d.brokers.iter().find(|b| b.id == broker).map(|b| b.fenced)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_a_topic_made_via_a_follower_reaches_all() {
    bounded(async {
        let c = Cluster::start(3).await;
        let leader = c.leader().await;
        c.wait_unfenced(&c.ids(), SETTLE_TIMEOUT).await;
        let follower = *c.ids().iter().find(|id| **id != leader).unwrap();

        // Written through a follower: forwarded to the active controller.
        let code = c.create_topic(follower, "orders", 6, 3).await.unwrap();
        assert_eq!(code, NONE, "CreateTopic via follower {follower}");

        // Every node's image holds the same partition state.
        let topic = wait_until("orders identical on all nodes", SETTLE_TIMEOUT, || async {
            let mut seen: Option<TopicInfo> = None;
            for id in c.ids() {
                let t = c.topic(id, "orders").await.ok()??;
                if seen.as_ref().is_some_and(|s| *s != t) {
                    return None;
                }
                seen = Some(t);
            }
            seen
        })
        .await;
        assert_eq!(topic.partitions.len(), 6);
        for p in &topic.partitions {
            let mut replicas = p.replicas.clone();
            replicas.sort_unstable();
            assert_eq!(replicas, [1, 2, 3], "partition {} replicas", p.partition);
            let mut isr = p.isr.clone();
            isr.sort_unstable();
            assert_eq!(isr, [1, 2, 3], "partition {} ISR", p.partition);
            assert!(
                p.leader.is_some_and(|l| p.isr.contains(&l)),
                "partition {} leader {:?}",
                p.partition,
                p.leader
            );
        }
        for b in c.ids() {
            assert!(
                !led_by(&topic, b).is_empty(),
                "broker {b} leads no partition of {topic:?}"
            );
        }

        // Refusals come back as error codes, not transport errors.
        let other = *c
            .ids()
            .iter()
            .find(|id| **id != leader && **id != follower)
            .unwrap();
        let code = c.create_topic(other, "orders", 1, 1).await.unwrap();
        assert_eq!(code, ErrorCode::TopicAlreadyExists as i32);
        let code = c.create_topic(follower, "too-wide", 1, 4).await.unwrap();
        assert_eq!(code, ErrorCode::InvalidReplicationFactor as i32);

        // Each node's own view of the cluster.
        for id in c.ids() {
            let d = c.describe(id).await.unwrap();
            assert_eq!(d.node_id, id);
            assert_eq!(d.controller_leader, Some(leader), "node {id}'s leader");
            let mut voters: Vec<u64> = d.voters.iter().map(|v| v.id).collect();
            voters.sort_unstable();
            assert_eq!(voters, [1, 2, 3], "node {id}'s voters");
            let mut brokers: Vec<(u64, bool)> =
                d.brokers.iter().map(|b| (b.id, b.fenced)).collect();
            brokers.sort_unstable();
            assert_eq!(
                brokers,
                [(1, false), (2, false), (3, false)],
                "on node {id}"
            );
            for b in &d.brokers {
                assert_eq!(b.address, c.addr(b.id).to_string(), "broker {}", b.id);
                assert!(b.broker_epoch > 0, "broker {} epoch", b.id);
            }
        }
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_active_controller_fails_over_fences_it_and_it_rejoins() {
    bounded(async {
        let mut c = Cluster::start(3).await;
        let old = c.leader().await;
        c.wait_unfenced(&c.ids(), SETTLE_TIMEOUT).await;
        assert_eq!(c.create_topic(old, "events", 6, 3).await.unwrap(), NONE);
        let before = wait_until("events on the leader", SETTLE_TIMEOUT, || async {
            c.topic(old, "events").await.ok()?
        })
        .await;
        let led = led_by(&before, old);
        assert!(!led.is_empty(), "the leader leads no partition: {before:?}");

        c.kill(old);
        let killed_at = Instant::now();
        let survivors = c.running();
        let via = survivors[0];

        // A metadata write succeeds through a survivor. Each attempt is cut
        // short so a write stuck on the dead leader does not hide the moment
        // a new one can commit.
        let mut attempt = 0;
        wait_until("a metadata write after failover", SETTLE_TIMEOUT, || {
            attempt += 1;
            let mut client = c.client_with_timeout(via, Duration::from_millis(500));
            let req = CreateTopicRequest {
                name: format!("after-failover-{attempt}"),
                partitions: 1,
                replication_factor: 1,
                configs: Vec::new(),
            };
            async move {
                let code = client.create_topic(req).await.ok()?.into_inner().error_code;
                (code == NONE).then_some(())
            }
        })
        .await;
        let failover = killed_at.elapsed();
        eprintln!(
            "failover: a metadata write through node {via} succeeded {} after SIGKILL of \
             controller {old} ({attempt} attempts)",
            fmt_duration(failover)
        );
        assert!(
            failover < FAILOVER_BUDGET,
            "failover took {}",
            fmt_duration(failover)
        );
        let new_leader = c.leader().await;
        assert_ne!(new_leader, old);

        // On every survivor: the dead broker is fenced, out of every ISR, and
        // the partitions it led moved with a bumped leader epoch.
        let after = wait_until(
            "the dead broker fenced and out of every ISR on the survivors",
            SETTLE_TIMEOUT,
            || async {
                let mut seen: Option<TopicInfo> = None;
                for s in &survivors {
                    if fenced(&c, *s, old).await != Some(true) {
                        return None;
                    }
                    let t = c.topic(*s, "events").await.ok()??;
                    let moved = t
                        .partitions
                        .iter()
                        .all(|p| !p.isr.contains(&old) && p.leader.is_some_and(|l| l != old));
                    if !moved || seen.as_ref().is_some_and(|x| *x != t) {
                        return None;
                    }
                    seen = Some(t);
                }
                seen
            },
        )
        .await;
        eprintln!(
            "broker {old} fenced and its partitions moved {} after the kill",
            fmt_duration(killed_at.elapsed())
        );
        for p in &after.partitions {
            let was = partition(&before, p.partition);
            assert!(
                p.partition_epoch > was.partition_epoch,
                "partition {}: partition epoch {} -> {}",
                p.partition,
                was.partition_epoch,
                p.partition_epoch
            );
            if led.contains(&p.partition) {
                assert!(
                    p.leader_epoch > was.leader_epoch,
                    "partition {}: leader epoch {} -> {}",
                    p.partition,
                    was.leader_epoch,
                    p.leader_epoch
                );
            }
        }

        // Restarted on its own data dir, it catches up to the leader's offset
        // and is unfenced.
        let kept = std::fs::read_dir(c.data_dir(old)).unwrap().count();
        assert!(kept > 0, "node {old}'s data dir is empty");
        let restarted_at = Instant::now();
        c.restart(old).await;
        wait_until(
            "the restarted node caught up and unfenced",
            SETTLE_TIMEOUT,
            || async {
                let leader = c.agreed_leader().await?;
                let l = c.describe(leader).await.ok()?;
                let o = c.describe(old).await.ok()?;
                let unfenced = |d: &rivulet_proto::v1::DescribeClusterResponse| {
                    d.brokers.iter().any(|b| b.id == old && !b.fenced)
                };
                let caught_up = o.metadata_offset == l.metadata_offset;
                let has_topic = c.topic(old, "events").await.ok()?.is_some();
                (unfenced(&l) && unfenced(&o) && caught_up && has_topic).then_some(())
            },
        )
        .await;
        eprintln!(
            "node {old} rejoined, caught up and unfenced {} after its restart",
            fmt_duration(restarted_at.elapsed())
        );
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_follower_is_fenced_after_its_lease_and_unfenced_after_resume() {
    bounded(async {
        let mut c = Cluster::start(3).await;
        let leader = c.leader().await;
        c.wait_unfenced(&c.ids(), SETTLE_TIMEOUT).await;
        let term_before = c.describe(leader).await.unwrap().raft_term;
        let paused = *c.ids().iter().find(|id| **id != leader).unwrap();

        c.pause(paused);
        let paused_at = Instant::now();
        // Its heartbeat stream stays open (the process is frozen, not dead),
        // so it keeps its full lease (1.5 s), not the short grace.
        wait_until(
            "the paused broker fenced on the leader",
            SETTLE_TIMEOUT,
            || async { (fenced(&c, leader, paused).await == Some(true)).then_some(()) },
        )
        .await;
        let fenced_after = paused_at.elapsed();
        eprintln!(
            "paused broker {paused} fenced {} after SIGSTOP",
            fmt_duration(fenced_after)
        );
        assert!(
            fenced_after >= Duration::from_secs(1),
            "fenced after {} — sooner than its lease",
            fmt_duration(fenced_after)
        );

        // The quorum keeps working without it; the new topic avoids it.
        let live = c.running();
        let code = c.create_topic(live[0], "while-paused", 3, 2).await.unwrap();
        assert_eq!(code, NONE);
        let t = c.topic(leader, "while-paused").await.unwrap().unwrap();
        assert!(
            t.partitions.iter().all(|p| !p.replicas.contains(&paused)),
            "a fenced broker got replicas: {t:?}"
        );

        let paused_for = paused_at.elapsed();
        c.resume(paused);
        let resumed_at = Instant::now();
        wait_until(
            "the resumed broker unfenced and caught up",
            SETTLE_TIMEOUT,
            || async {
                let leader = c.agreed_leader().await?;
                let l = c.describe(leader).await.ok()?;
                let p = c.describe(paused).await.ok()?;
                let unfenced = |d: &rivulet_proto::v1::DescribeClusterResponse| {
                    d.brokers.iter().any(|b| b.id == paused && !b.fenced)
                };
                let has_topic = c.topic(paused, "while-paused").await.ok()?.is_some();
                (unfenced(&l)
                    && unfenced(&p)
                    && has_topic
                    && p.metadata_offset == l.metadata_offset)
                    .then_some(())
            },
        )
        .await;
        let leader_after = c.leader().await;
        let term_after = c.describe(leader_after).await.unwrap().raft_term;
        eprintln!(
            "broker {paused} (paused {}) unfenced and caught up {} after SIGCONT; \
             leader {leader} term {term_before} -> leader {leader_after} term {term_after}",
            fmt_duration(paused_for),
            fmt_duration(resumed_at.elapsed())
        );
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_restart_brings_the_image_back_and_elects_a_leader() {
    bounded(async {
        let mut c = Cluster::start(3).await;
        let leader = c.leader().await;
        c.wait_unfenced(&c.ids(), SETTLE_TIMEOUT).await;
        assert_eq!(c.create_topic(leader, "kept-a", 4, 3).await.unwrap(), NONE);
        assert_eq!(c.create_topic(leader, "kept-b", 1, 2).await.unwrap(), NONE);

        // Every node holds the same image before the shutdown.
        let (offset_before, topics_before) =
            wait_until("the same image on every node", SETTLE_TIMEOUT, || async {
                let mut seen: Option<(u64, Vec<TopicLayout>)> = None;
                for id in c.ids() {
                    let d = c.describe(id).await.ok()?;
                    let view = (d.metadata_offset, topic_layout(c.topics(id).await.ok()?));
                    if seen.as_ref().is_some_and(|s| *s != view) {
                        return None;
                    }
                    seen = Some(view);
                }
                seen
            })
            .await;
        assert_eq!(topics_before.len(), 2);
        let term_before = c.describe(leader).await.unwrap().raft_term;

        let stopping = Instant::now();
        c.terminate_all().await;
        eprintln!(
            "SIGTERM: all nodes exited in {}",
            fmt_duration(stopping.elapsed())
        );
        let starting = Instant::now();
        c.restart_stopped().await;
        let new_leader = c.leader().await;
        let term_after = c.describe(new_leader).await.unwrap().raft_term;
        // openraft restores a leader whose committed vote for itself is on
        // disk in the same term, without an election: the term may stay.
        eprintln!(
            "restart: leader {new_leader} (term {term_after}; before: leader {leader}, \
             term {term_before}) agreed on {} after the nodes were started",
            fmt_duration(starting.elapsed())
        );

        // Each node reloads the image from its own store (and catches up).
        wait_until("the image back on every node", SETTLE_TIMEOUT, || async {
            for id in c.ids() {
                let d = c.describe(id).await.ok()?;
                let topics = topic_layout(c.topics(id).await.ok()?);
                if d.metadata_offset < offset_before || topics != topics_before {
                    return None;
                }
            }
            Some(())
        })
        .await;
        for id in c.ids() {
            let d = c.describe(id).await.unwrap();
            assert!(
                d.raft_term >= term_before,
                "node {id}: term {} after the restart, {term_before} before",
                d.raft_term
            );
        }
        c.wait_unfenced(&c.ids(), SETTLE_TIMEOUT).await;

        // The restored quorum takes writes again, through any node.
        let follower = *c.ids().iter().find(|id| **id != new_leader).unwrap();
        let code = c
            .create_topic(follower, "after-restart", 1, 3)
            .await
            .unwrap();
        assert_eq!(code, NONE, "CreateTopic via {follower} after the restart");
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_follower_rejoins_without_hurting_the_quorum() {
    bounded(async {
        let mut c = Cluster::start(3).await;
        let leader = c.leader().await;
        c.wait_unfenced(&c.ids(), SETTLE_TIMEOUT).await;
        assert_eq!(
            c.create_topic(leader, "before-wipe", 2, 3).await.unwrap(),
            NONE
        );
        let wiped = *c.ids().iter().find(|id| **id != leader).unwrap();

        // A disk replaced under a voter: same id and address, empty data dir.
        c.wipe_and_restart(wiped).await;
        wait_until("the wiped node caught up", SETTLE_TIMEOUT, || async {
            let leader = c.agreed_leader().await?;
            let l = c.describe(leader).await.ok()?;
            let w = c.describe(wiped).await.ok()?;
            let has_topic = c.topic(wiped, "before-wipe").await.ok()?.is_some();
            (has_topic && w.metadata_offset == l.metadata_offset).then_some(())
        })
        .await;
        // It counts as a live broker (for RF 3) only once it caught up.
        c.wait_unfenced(&c.ids(), SETTLE_TIMEOUT).await;
        let code = c.create_topic(wiped, "after-wipe", 1, 3).await.unwrap();
        assert_eq!(code, NONE, "CreateTopic via the wiped node");
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}
