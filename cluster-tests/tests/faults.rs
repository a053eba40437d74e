//! The fixed fault subset CI runs (about 80 s in a debug build on a 2-core
//! machine): one episode per test (see
//! `cluster_tests::chaos`), each a fault under a concurrent acks=all
//! workload on an RF=3, min.insync.replicas=2 topic, healed, then checked
//! in full: no acknowledged record lost, offsets dense, no refused record
//! present, each producer's acks in order, no committed record vanishing
//! for a consumer, no HW going backwards within a leader epoch, replicas
//! byte-identical, no unexpected ERROR line.
//!
//! The random version of the same episodes is the `chaos` binary
//! (`docs/reliability.md`).

use std::future::Future;
use std::time::Duration;

use cluster_tests::chaos::{Fault, Scenario, Target};
use cluster_tests::checker::{SplitMix64, WorkloadConfig};
use cluster_tests::Cluster;

/// Whole-test limit.
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// Longest stretch without an acked send that a test accepts.
const MAX_UNAVAILABLE: Duration = Duration::from_secs(10);
/// Length of the episode (workload from warm-up to check).
const EPISODE: Duration = Duration::from_secs(6);

async fn bounded(body: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("the test exceeded its {TEST_LIMIT:?} limit");
    }
}

/// Three nodes, a topic of `partitions` partitions, then one episode of
/// `fault` on `target`; asserts the check and the logs. Returns the roles
/// the target had when hit.
async fn episode(partitions: u32, fault: Fault, target: Target) -> String {
    run_episode(Cluster::start(3).await, partitions, fault, target)
        .await
        .0
}

/// [`episode`] with each node in its own network namespace, for network
/// cuts; skipped (with a message) where namespaces cannot be made.
async fn network_episode(
    partitions: u32,
    fault: Fault,
    target: Target,
) -> Option<(String, Duration)> {
    network_episode_on(3, partitions, fault, target).await
}

async fn network_episode_on(
    nodes: u64,
    partitions: u32,
    fault: Fault,
    target: Target,
) -> Option<(String, Duration)> {
    // Small disks too, for DiskFull (64 MiB each: ample for an episode).
    match Cluster::start_isolated(nodes, Some(64)).await {
        Ok(c) => Some(run_episode(c, partitions, fault, target).await),
        Err(e) => {
            eprintln!("SKIPPED: no network namespaces here ({e})");
            None
        }
    }
}

/// Returns the roles hit and the longest unavailability.
async fn run_episode(
    mut c: Cluster,
    partitions: u32,
    fault: Fault,
    target: Target,
) -> (String, Duration) {
    c.wait_unfenced(&c.ids(), Duration::from_secs(15)).await;
    let cfg = WorkloadConfig {
        topic: "faults".into(),
        partitions,
        producers: 4,
        max_batch: 5,
        send_interval: Duration::from_millis(10),
        seed: 7,
    };
    let mut s = Scenario::create(&c, cfg, &[]).await;
    let mut rng = SplitMix64::new(11);
    let report = s.episode(&mut c, fault, target, EPISODE, &mut rng).await;
    eprintln!("{}", report.line());
    report.assert_ok();
    assert!(
        report.check.acked > 0,
        "nothing was acknowledged: {}",
        report.line()
    );
    // A loose bound, to catch a partition that stays unavailable (the worst
    // seen in 100 chaos episodes is 3 s).
    assert!(
        report.check.longest_unavailable < MAX_UNAVAILABLE,
        "unavailable for too long: {}",
        report.line()
    );
    c.assert_no_unexpected_errors(&[]);
    (report.hit, report.check.longest_unavailable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_partition_leader() {
    bounded(async {
        let hit = episode(3, Fault::Kill, Target::Leader).await;
        assert!(
            hit.contains("leader(") && !hit.contains("controller"),
            "{hit}"
        );
    })
    .await;
}

/// The same with TLS on every connection (mutual TLS between the nodes)
/// and the cluster secret: failover and replication work alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_controller_that_leads_a_partition_over_tls() {
    bounded(async {
        let (hit, _) = run_episode(Cluster::start_tls(3).await, 3, Fault::Kill, Target::Both).await;
        assert!(hit.contains("controller"), "{hit}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_a_partition_leader() {
    bounded(async {
        let hit = episode(3, Fault::Terminate, Target::Leader).await;
        assert!(hit.contains("leader("), "{hit}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_follower() {
    bounded(async {
        // One partition: a follower that leads nothing and is not the
        // controller always exists.
        let hit = episode(1, Fault::Kill, Target::Follower).await;
        assert!(hit.ends_with(" follower"), "{hit}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_controller_that_leads_a_partition() {
    bounded(async {
        // Three partitions on three nodes: every node leads one.
        let hit = episode(3, Fault::Kill, Target::Both).await;
        assert!(hit.contains("controller+leader("), "{hit}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_past_the_lease_makes_a_zombie_leader() {
    bounded(async {
        let hit = episode(3, Fault::Pause, Target::Leader).await;
        assert!(hit.contains("leader("), "{hit}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_past_the_lease_of_the_controller() {
    bounded(async {
        let hit = episode(3, Fault::Pause, Target::Controller).await;
        assert!(hit.contains("controller"), "{hit}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_controller_that_leads_a_partition() {
    bounded(async {
        let hit = episode(3, Fault::Terminate, Target::Both).await;
        assert!(hit.contains("controller+leader("), "{hit}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_bounce_x3_of_partition_leaders() {
    bounded(async {
        episode(3, Fault::HardBounce(3), Target::Leader).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_bounce_x2_of_the_controller() {
    bounded(async {
        episode(3, Fault::CleanBounce(2), Target::Controller).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_killed_and_restarted() {
    bounded(async {
        episode(3, Fault::WholeCluster, Target::Leader).await;
    })
    .await;
}

/// The negative control: the checker must see a loss the configuration
/// allows. With `min.insync.replicas=1` and unclean leader election, a leader
/// left alone in the ISR acknowledges writes no other replica has; when it
/// dies and an out-of-sync follower is elected, those writes are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_sees_the_loss_an_unclean_election_causes() {
    use cluster_tests::checker::{check, Ledger, Nodes, Workload};
    use std::collections::BTreeMap;
    bounded(async {
        let settle = Duration::from_secs(15);
        // Five voters: the quorum survives two dead followers, then (with
        // them back) a dead leader.
        let mut c = Cluster::start(5).await;
        c.wait_unfenced(&c.ids(), settle).await;
        let topic = "unsafe";
        let created = c
            .create_topic_with(
                1,
                topic,
                1,
                3,
                &[
                    ("min.insync.replicas", "1"),
                    ("unclean.leader.election.enable", "true"),
                ],
            )
            .await;
        assert_eq!(created, 0);
        let info = c.wait_partition_leader(topic, 0, settle).await;
        let leader = info.leader.expect("a leader");
        let followers: Vec<u64> = info
            .replicas
            .iter()
            .copied()
            .filter(|r| *r != leader)
            .collect();
        let cfg = WorkloadConfig {
            topic: topic.into(),
            partitions: 1,
            producers: 2,
            max_batch: 3,
            send_interval: Duration::from_millis(10),
            seed: 3,
        };
        let nodes = Nodes::of(&c);
        let workload = Workload::start(&nodes, &cfg, 0, &BTreeMap::new());
        assert!(
            workload.wait_acked(10, settle).await,
            "no acks before the kills"
        );
        // The leader alone in the ISR, acknowledging what only it has.
        for f in &followers {
            c.kill(*f);
        }
        c.wait_isr(topic, 0, &[leader], settle).await;
        assert!(
            workload.wait_acked(10, settle).await,
            "the lone leader acknowledged nothing"
        );
        // It dies; the stale followers come back and one is elected.
        c.kill(leader);
        for f in &followers {
            c.restart(*f).await;
        }
        let new = c.wait_partition_leader(topic, 0, settle).await;
        assert_ne!(new.leader, Some(leader));
        assert!(
            workload.wait_acked(10, settle).await,
            "the stale leader acknowledged nothing"
        );
        let run = workload.stop().await;
        let mut ledger = Ledger::new();
        for s in run.sends.iter().cloned() {
            ledger.record(s);
        }
        let report = check(&nodes, topic, 1, &ledger, &run).await;
        c.restart(leader).await;
        eprintln!(
            "unclean election: {} acked, {} lost, {} violations",
            report.acked,
            report.lost(),
            report.violations()
        );
        assert!(
            report.lost() > 0,
            "the checker saw no loss after an unclean election: {report:?}"
        );
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_of_a_partition_leader() {
    bounded(async {
        let hit = episode(3, Fault::TornTail, Target::Leader).await;
        assert!(hit.contains(" B"), "nothing torn: {hit}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_partition_leader() {
    bounded(async {
        if let Some((hit, _)) = network_episode(3, Fault::Isolate, Target::Leader).await {
            assert!(hit.contains("leader("), "{hit}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_controller_that_leads() {
    bounded(async {
        if let Some((hit, _)) = network_episode(3, Fault::Isolate, Target::Both).await {
            assert!(hit.contains("controller"), "{hit}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_leader_cut_from_the_controller_only() {
    bounded(async {
        if let Some((hit, _)) = network_episode(3, Fault::CutFromController, Target::Leader).await {
            assert!(hit.contains("cut from controller"), "{hit}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_cut_from_its_leader_only() {
    bounded(async {
        if let Some((hit, _)) = network_episode(3, Fault::CutFromLeader, Target::Follower).await {
            assert!(hit.contains("cut from p0 leader"), "{hit}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_a_follower() {
    bounded(async {
        // One partition, so two nodes are pure followers.
        if let Some((hit, unavailable)) =
            network_episode(1, Fault::DiskFull, Target::Follower).await
        {
            assert!(
                hit.contains("follower") && hit.contains("MiB filled"),
                "{hit}"
            );
            // The follower reports the failure and leaves the ISR at once:
            // acks=all does not wait out the 4 s of the full disk.
            assert!(unavailable < Duration::from_secs(2), "{unavailable:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_a_partition_leader() {
    bounded(async {
        if let Some((hit, unavailable)) = network_episode(3, Fault::DiskFull, Target::Leader).await
        {
            assert!(
                hit.contains("leader(") && hit.contains("MiB filled"),
                "{hit}"
            );
            // The leader reports the replicas it cannot write with its
            // heartbeats and the controller moves their leadership: writes
            // do not wait for the disk to be freed (4 s).
            assert!(unavailable < Duration::from_secs(2), "{unavailable:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_of_two_split_from_a_majority_of_three() {
    bounded(async {
        // The controller and a partition leader on the minority side.
        if let Some((hit, _)) = network_episode_on(5, 3, Fault::Split, Target::Leader).await {
            assert!(hit.contains(" | "), "{hit}");
        }
    })
    .await;
}
