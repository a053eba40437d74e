//! Consumer groups against a real three-node cluster: members split the
//! partitions without overlap, a killed member's partitions move within its
//! session timeout while the others read on, the coordinator's broker dies
//! and the group and its committed offsets survive, stale commits are
//! refused, and the CLI's describe (lag), reset-offsets and delete.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_tests::cli::{bootstrap, fails_with, ok_json, ok_stdout, rivulet};
use cluster_tests::{rivulet_binary, wait_until, Cluster};
use rivulet_client::{
    Admin, ClientConfig, ConsumerConfig, GroupConfig, GroupConsumer, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, RebalanceEvent,
};
use rivulet_proto::v1::groups_client::GroupsClient;
use rivulet_proto::v1::{
    CommitOffset, ConsumerGroupHeartbeatRequest, ErrorCode, FindCoordinatorRequest,
    OffsetCommitRequest, TopicPartitions,
};
use tokio::time::Instant;

const SESSION: Duration = Duration::from_secs(2);
const SETTLE: Duration = Duration::from_secs(20);

async fn start_with_topic(topic: &str, partitions: u32) -> Cluster {
    let c = Cluster::start(3).await;
    c.leader().await;
    c.wait_unfenced(&c.ids(), Duration::from_secs(10)).await;
    let code = c
        .create_topic_with(1, topic, partitions, 3, &[("min.insync.replicas", "2")])
        .await;
    assert_eq!(code, ErrorCode::None as i32, "create {topic}");
    for p in 0..partitions {
        c.wait_partition_leader(topic, p, SETTLE).await;
    }
    c
}

/// What every member saw: records (member, partition, offset, value) and
/// rebalance events.
#[derive(Debug, Default)]
struct Seen {
    records: Mutex<Vec<(String, u32, u64, String)>>,
    events: Mutex<Vec<(Instant, String, RebalanceEvent)>>,
}

impl Seen {
    fn values(&self) -> Vec<String> {
        let r = self.records.lock().unwrap();
        r.iter().map(|x| x.3.clone()).collect()
    }

    fn events_of(&self, member: &str) -> Vec<RebalanceEvent> {
        self.events_since(member, None)
    }

    /// `member`'s events (after `since`, when given).
    fn events_since(&self, member: &str, since: Option<Instant>) -> Vec<RebalanceEvent> {
        let e = self.events.lock().unwrap();
        e.iter()
            .filter(|(at, m, _)| m == member && since.is_none_or(|s| *at >= s))
            .map(|(_, _, e)| e.clone())
            .collect()
    }

    fn count_of(&self, member: &str) -> usize {
        let r = self.records.lock().unwrap();
        r.iter().filter(|x| x.0 == member).count()
    }
}

/// A group member polling in its own task.
struct Member {
    name: String,
    /// Set: close (commit and leave).
    stop: Arc<AtomicBool>,
    assignment: Arc<Mutex<Vec<(String, u32)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Member {
    async fn start(c: &Cluster, group: &str, topic: &str, name: &str, seen: &Arc<Seen>) -> Self {
        let config = GroupConfig {
            consumer: ConsumerConfig {
                offset_reset: OffsetReset::Earliest,
                max_wait: Duration::from_millis(200),
                ..ConsumerConfig::default()
            },
            session_timeout: SESSION,
            auto_commit_interval: Duration::from_millis(500),
            client_id: name.to_owned(),
            ..GroupConfig::default()
        };
        let mut consumer =
            GroupConsumer::subscribe(ClientConfig::new(&bootstrap(c)), group, &[topic], config)
                .await
                .expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let assignment = Arc::new(Mutex::new(Vec::new()));
        let (seen, flag, owned, me) = (
            Arc::clone(seen),
            Arc::clone(&stop),
            Arc::clone(&assignment),
            name.to_owned(),
        );
        let task = tokio::spawn(async move {
            loop {
                if flag.load(Ordering::Acquire) {
                    consumer.close().await.expect("close commits and leaves");
                    return;
                }
                let records = match consumer.poll().await {
                    Ok(r) => r,
                    Err(e) => panic!("{me}: poll failed: {e}"),
                };
                let now = Instant::now();
                for e in consumer.take_events() {
                    seen.events.lock().unwrap().push((now, me.clone(), e));
                }
                *owned.lock().unwrap() = consumer.assignment();
                let mut r = seen.records.lock().unwrap();
                for rec in records {
                    let value = String::from_utf8_lossy(rec.value.as_deref().unwrap_or_default())
                        .into_owned();
                    r.push((me.clone(), rec.partition, rec.offset, value));
                }
            }
        });
        Self {
            name: name.to_owned(),
            stop,
            assignment,
            task,
        }
    }

    fn assignment(&self) -> BTreeSet<(String, u32)> {
        self.assignment.lock().unwrap().iter().cloned().collect()
    }

    async fn close(self) {
        self.stop.store(true, Ordering::Release);
        self.task.await.expect("member task");
    }
}

/// Waits until the members' assignments are disjoint, cover all `n`
/// partitions and are balanced (sizes differ by at most one).
async fn wait_split(members: &[&Member], n: u32, timeout: Duration) {
    wait_until("the members to split the partitions", timeout, || async {
        let sets: Vec<BTreeSet<(String, u32)>> = members.iter().map(|m| m.assignment()).collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<_> = sets.iter().flatten().collect();
        let sizes: Vec<usize> = sets.iter().map(BTreeSet::len).collect();
        let balanced = sizes
            .iter()
            .max()
            .zip(sizes.iter().min())
            .is_some_and(|(a, b)| a - b <= 1);
        (total == n as usize && union.len() == n as usize && balanced).then_some(())
    })
    .await;
}

/// Sends `n` keyed records `<tag>-<i>` with acks=all; returns the values.
async fn produce(c: &Cluster, topic: &str, tag: &str, n: usize) -> Vec<String> {
    let producer = Producer::connect(ClientConfig::new(&bootstrap(c)), ProducerConfig::default())
        .await
        .expect("producer");
    let mut futures = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    for i in 0..n {
        let v = format!("{tag}-{i}");
        futures.push(
            producer
                .send(ProducerRecord::new(topic, v.clone()).key(format!("k{i}")))
                .await
                .expect("send"),
        );
        values.push(v);
    }
    for f in futures {
        f.await.expect("acknowledged");
    }
    values
}

/// Waits until every value in `want` was consumed by some member.
async fn wait_consumed(seen: &Seen, want: &[String], timeout: Duration) {
    wait_until("every record to be consumed", timeout, || async {
        let got: BTreeSet<String> = seen.values().into_iter().collect();
        want.iter().all(|v| got.contains(v)).then_some(())
    })
    .await;
}

fn duplicates(seen: &Seen) -> Vec<String> {
    let mut count: HashMap<String, usize> = HashMap::new();
    for v in seen.values() {
        *count.entry(v).or_default() += 1;
    }
    count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(v, _)| v)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_partitions_without_overlap_and_read_each_record_once() {
    let c = start_with_topic("orders", 6).await;
    let seen = Arc::new(Seen::default());
    let mut want = produce(&c, "orders", "a", 300).await;

    let m1 = Member::start(&c, "billing", "orders", "m1", &seen).await;
    let m2 = Member::start(&c, "billing", "orders", "m2", &seen).await;
    wait_split(&[&m1, &m2], 6, SETTLE).await;
    want.extend(produce(&c, "orders", "b", 300).await);
    wait_consumed(&seen, &want, SETTLE).await;

    // A third member joins: partitions move only from members that give
    // them up, one owner at a time.
    let m3 = Member::start(&c, "billing", "orders", "m3", &seen).await;
    wait_split(&[&m1, &m2, &m3], 6, SETTLE).await;
    for m in [&m1, &m2, &m3] {
        assert_eq!(m.assignment().len(), 2, "{}: {:?}", m.name, m.assignment());
    }
    want.extend(produce(&c, "orders", "c", 300).await);
    wait_consumed(&seen, &want, SETTLE).await;
    // Orderly moves commit before the release: no record is read twice.
    assert_eq!(duplicates(&seen), Vec::<String>::new());
    // Nobody was fenced on the way.
    for m in ["m1", "m2"] {
        let lost = seen
            .events_of(m)
            .iter()
            .filter(|e| matches!(e, RebalanceEvent::Lost(_)))
            .count();
        assert_eq!(lost, 0, "{m} was fenced");
    }

    let admin = Admin::connect(ClientConfig::new(&bootstrap(&c)))
        .await
        .unwrap();
    let d = admin.describe_group("billing").await.unwrap();
    assert_eq!(d.members.len(), 3);
    assert_eq!(d.state, "stable");
    for m in [m1, m2, m3] {
        m.close().await;
    }
    // Closing committed everything read: lag is zero, exactly.
    let d = admin.describe_group("billing").await.unwrap();
    assert_eq!(d.state, "empty");
    assert_eq!(d.partitions.len(), 6);
    assert_eq!(d.total_lag(), 0, "{:?}", d.partitions);
    let total: u64 = d.partitions.iter().filter_map(|p| p.committed).sum();
    assert_eq!(total, 900);
    c.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_partitions_move_within_the_session_timeout_and_others_read_on() {
    let c = start_with_topic("clicks", 6).await;
    let seen = Arc::new(Seen::default());
    let m1 = Member::start(&c, "stats", "clicks", "m1", &seen).await;
    let m2 = Member::start(&c, "stats", "clicks", "m2", &seen).await;
    // The victim is a separate process, killed with SIGKILL.
    let mut victim = Command::new(rivulet_binary())
        .args([
            "--bootstrap",
            &bootstrap(&c),
            "consume",
            "clicks",
            "--group",
            "stats",
            "--from-beginning",
            "--session-timeout-ms",
            "2000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the victim consumer");
    let admin = Admin::connect(ClientConfig::new(&bootstrap(&c)))
        .await
        .unwrap();
    wait_until("three members with two partitions each", SETTLE, || async {
        let d = admin.describe_group("stats").await.ok()?;
        (d.state == "stable"
            && d.members.len() == 3
            && d.members.iter().all(|m| m.assignment.len() == 2))
        .then_some(())
    })
    .await;
    let survivors_before = (m1.assignment(), m2.assignment());
    let mut want = produce(&c, "clicks", "a", 200).await;

    // Keep producing, one record at a time, until the victim's partitions
    // have moved.
    let stop_producing = Arc::new(AtomicBool::new(false));
    let producing = {
        let bootstrap = bootstrap(&c);
        let stop = Arc::clone(&stop_producing);
        tokio::spawn(async move {
            let producer =
                Producer::connect(ClientConfig::new(&bootstrap), ProducerConfig::default())
                    .await
                    .expect("producer");
            let mut values = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let v = format!("live-{i}");
                producer
                    .send_and_wait(ProducerRecord::new("clicks", v.clone()).key(format!("k{i}")))
                    .await
                    .expect("acknowledged");
                values.push(v);
                i += 1;
            }
            values
        })
    };
    let (c1, c2) = (seen.count_of("m1"), seen.count_of("m2"));
    victim.kill().expect("kill -9 the victim");
    let killed = Instant::now();
    victim.wait().ok();
    wait_split(&[&m1, &m2], 6, SESSION + Duration::from_secs(5)).await;
    let moved_after = killed.elapsed();
    stop_producing.store(true, Ordering::Release);
    assert!(
        moved_after < SESSION + Duration::from_secs(3),
        "the victim's partitions moved after {moved_after:?} (session {SESSION:?})"
    );
    want.extend(producing.await.expect("producer task"));
    wait_consumed(&seen, &want, SETTLE).await;
    // The survivors read on during the expiry: more records, and they never
    // gave up a partition.
    assert!(seen.count_of("m1") > c1 && seen.count_of("m2") > c2);
    for (name, before, m) in [
        ("m1", &survivors_before.0, &m1),
        ("m2", &survivors_before.1, &m2),
    ] {
        let events = seen.events_since(name, Some(killed));
        assert!(
            events
                .iter()
                .all(|e| matches!(e, RebalanceEvent::Assigned(_))),
            "{name} paused or lost partitions: {events:?}"
        );
        assert!(
            before.is_subset(&m.assignment()),
            "{name} kept its partitions"
        );
    }
    eprintln!("the killed member's partitions moved {moved_after:?} after SIGKILL");
    m1.close().await;
    m2.close().await;
    c.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_and_its_offsets_survive_the_coordinators_death() {
    let mut c = start_with_topic("payments", 4).await;
    let seen = Arc::new(Seen::default());
    let m1 = Member::start(&c, "ledger", "payments", "m1", &seen).await;
    let m2 = Member::start(&c, "ledger", "payments", "m2", &seen).await;
    wait_split(&[&m1, &m2], 4, SETTLE).await;
    let mut want = produce(&c, "payments", "a", 200).await;
    wait_consumed(&seen, &want, SETTLE).await;
    let admin = Admin::connect(ClientConfig::new(&bootstrap(&c)))
        .await
        .unwrap();
    // Auto-commit (every 500 ms) catches up: lag 0.
    let before = wait_until("the group to commit everything", SETTLE, || async {
        let d = admin.describe_group("ledger").await.ok()?;
        (d.partitions.len() == 4 && d.total_lag() == 0).then_some(d)
    })
    .await;
    let coordinator = before.coordinator;
    c.kill(coordinator);
    let killed = Instant::now();

    // Committed offsets come back from the new coordinator, unchanged.
    let admin = Admin::connect(ClientConfig::new(
        &c.ids()
            .iter()
            .filter(|id| **id != coordinator)
            .map(|id| c.addr(*id).to_string())
            .collect::<Vec<_>>()
            .join(","),
    ))
    .await
    .unwrap();
    let after = wait_until("a new coordinator", SETTLE, || async {
        admin
            .describe_group("ledger")
            .await
            .ok()
            .filter(|d| d.coordinator != coordinator)
    })
    .await;
    eprintln!(
        "new coordinator {} answers {:?} after the kill",
        after.coordinator,
        killed.elapsed()
    );
    let committed = |d: &rivulet_client::GroupDescription| -> BTreeMap<u32, Option<u64>> {
        d.partitions
            .iter()
            .map(|p| (p.partition, p.committed))
            .collect()
    };
    assert_eq!(committed(&after), committed(&before));
    assert_eq!(after.members.len(), 2, "members survive the move");

    // The group keeps consuming; nobody was fenced.
    want.extend(produce(&c, "payments", "b", 200).await);
    wait_consumed(&seen, &want, SETTLE).await;
    for m in ["m1", "m2"] {
        let events = seen.events_since(m, Some(killed));
        assert!(
            events
                .iter()
                .all(|e| matches!(e, RebalanceEvent::Assigned(_))),
            "{m}: {events:?}"
        );
    }
    assert_eq!(duplicates(&seen), Vec::<String>::new());
    m1.close().await;
    m2.close().await;
    let end = admin.describe_group("ledger").await.unwrap();
    assert_eq!(end.total_lag(), 0, "{:?}", end.partitions);
    let total: u64 = end.partitions.iter().filter_map(|p| p.committed).sum();
    assert_eq!(total, 400);
    c.assert_no_unexpected_errors(&[]);
}

/// The coordinator of `group`, asking node 1 until the offsets topic exists.
async fn coordinator_client(c: &Cluster, group: &str) -> GroupsClient<tonic::transport::Channel> {
    let addr = wait_until("a coordinator", SETTLE, || async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr(1)))
            .ok()?
            .connect()
            .await
            .ok()?;
        let r = GroupsClient::new(ch)
            .find_coordinator(FindCoordinatorRequest {
                group_id: group.into(),
            })
            .await
            .ok()?
            .into_inner();
        r.coordinator.map(|b| b.address)
    })
    .await;
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    GroupsClient::new(ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_member_epochs_and_unknown_members_are_fenced() {
    let c = start_with_topic("audit", 6).await;
    let mut g = coordinator_client(&c, "fence").await;
    let heartbeat =
        |member: &str, epoch: i32, owned: Vec<TopicPartitions>| ConsumerGroupHeartbeatRequest {
            group_id: "fence".into(),
            member_id: member.into(),
            member_epoch: epoch,
            subscribed_topics: vec!["audit".into()],
            owned_partitions: owned,
            client_id: "test".into(),
            session_timeout_ms: 60_000,
        };
    // Coordinator loading right after creation: retry briefly.
    let a = wait_until("the join to succeed", SETTLE, || {
        let mut g = g.clone();
        let req = heartbeat("", 0, vec![]);
        async move {
            let r = g.consumer_group_heartbeat(req).await.ok()?.into_inner();
            (r.error_code == 0).then_some(r)
        }
    })
    .await;
    let first_epoch = a.member_epoch;
    // Two more members join, one at a time; each time a is told to give
    // partitions up, does, and its epoch moves: the first epoch is then two
    // behind (one behind is still accepted, for commits racing a bump).
    let mut epoch = first_epoch;
    let mut owned = a.assignment.clone();
    for _ in 0..2 {
        let r = g
            .consumer_group_heartbeat(heartbeat("", 0, vec![]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.error_code, 0, "{}", r.error_message);
        for _ in 0..3 {
            let r = g
                .consumer_group_heartbeat(heartbeat(&a.member_id, epoch, owned.clone()))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.error_code, 0, "{}", r.error_message);
            epoch = r.member_epoch;
            owned = r.assignment;
        }
    }
    assert!(
        epoch > first_epoch + 1,
        "a's epoch moved: {first_epoch} → {epoch}"
    );
    let commit = |member: &str, epoch: i32| OffsetCommitRequest {
        group_id: "fence".into(),
        member_id: member.into(),
        member_epoch: epoch,
        offsets: vec![CommitOffset {
            topic: "audit".into(),
            partition: 0,
            offset: 7,
            metadata: String::new(),
        }],
    };
    let code = |r: rivulet_proto::v1::OffsetCommitResponse| r.error_code;
    let ok = g
        .offset_commit(commit(&a.member_id, epoch))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.error_code, 0, "{}", ok.error_message);
    let stale = g
        .offset_commit(commit(&a.member_id, first_epoch))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(stale), ErrorCode::FencedMemberEpoch as i32);
    let unknown = g
        .offset_commit(commit("nobody", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(unknown), ErrorCode::UnknownMemberId as i32);
    let admin = g.offset_commit(commit("", -1)).await.unwrap().into_inner();
    assert_eq!(code(admin), ErrorCode::NonEmptyGroup as i32);
    // A heartbeat with the stale epoch is fenced too.
    let r = g
        .consumer_group_heartbeat(heartbeat(&a.member_id, first_epoch, vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error_code, ErrorCode::FencedMemberEpoch as i32);
    c.assert_no_unexpected_errors(&[]);
}

fn spawn_cli_consumer(c: &Cluster, group: &str, topic: &str) -> Child {
    Command::new(rivulet_binary())
        .args([
            "--bootstrap",
            &bootstrap(c),
            "consume",
            topic,
            "--group",
            group,
            "--session-timeout-ms",
            "2000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn consumer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_group_describe_lag_reset_offsets_and_delete() {
    let c = start_with_topic("events", 2).await;
    let lines: String = (0..100).map(|i| format!("k{i}:v{i}\n")).collect();
    let mut produce = Command::new(rivulet_binary())
        .args([
            "--bootstrap",
            &bootstrap(&c),
            "produce",
            "events",
            "--key-separator",
            ":",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn produce");
    {
        use std::io::Write;
        produce
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
    }
    assert!(produce.wait().unwrap().success());

    // Read 30 records as group "etl" and exit: it commits exactly those.
    let out = ok_stdout(
        &c,
        &[
            "consume",
            "events",
            "--group",
            "etl",
            "--from-beginning",
            "--max-messages",
            "30",
            "--timeout-ms",
            "10000",
        ],
    );
    assert_eq!(out.lines().count(), 30);
    let d = ok_json(&c, &["group", "describe", "etl", "--json"]);
    assert_eq!(d["group"], "etl");
    assert_eq!(d["state"], "empty");
    assert_eq!(d["total_lag"], 70, "{d}");
    let parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    let committed: u64 = parts
        .iter()
        .map(|p| p["committed_offset"].as_u64().unwrap())
        .sum();
    let hw: u64 = parts
        .iter()
        .map(|p| p["high_watermark"].as_u64().unwrap())
        .sum();
    assert_eq!((committed, hw), (30, 100));
    for p in parts {
        assert_eq!(
            p["lag"].as_u64().unwrap(),
            p["high_watermark"].as_u64().unwrap() - p["committed_offset"].as_u64().unwrap()
        );
    }
    // The next member starts where the group stopped: the other 70.
    let out = ok_stdout(
        &c,
        &[
            "consume",
            "events",
            "--group",
            "etl",
            "--timeout-ms",
            "3000",
        ],
    );
    assert_eq!(out.lines().count(), 70);
    let d = ok_json(&c, &["group", "describe", "etl", "--json"]);
    assert_eq!(d["total_lag"], 0, "{d}");

    let list = ok_json(&c, &["group", "list", "--json"]);
    assert!(
        list.as_array().unwrap().iter().any(|g| g["group"] == "etl"),
        "{list}"
    );

    // Reset to the beginning: lag is everything again.
    let r = ok_json(
        &c,
        &[
            "group",
            "reset-offsets",
            "etl",
            "--topic",
            "events",
            "--to-earliest",
            "--json",
        ],
    );
    assert_eq!(r["offsets"].as_array().unwrap().len(), 2);
    let d = ok_json(&c, &["group", "describe", "etl", "--json"]);
    assert_eq!(d["total_lag"], 100, "{d}");
    // One partition to an offset; a dry run changes nothing.
    ok_stdout(
        &c,
        &[
            "group",
            "reset-offsets",
            "etl",
            "--topic",
            "events",
            "--partition",
            "0",
            "--to-offset",
            "5",
        ],
    );
    ok_stdout(
        &c,
        &[
            "group",
            "reset-offsets",
            "etl",
            "--topic",
            "events",
            "--to-latest",
            "--dry-run",
        ],
    );
    let d = ok_json(&c, &["group", "describe", "etl", "--json"]);
    let p0 = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["partition"] == 0)
        .unwrap()
        .clone();
    assert_eq!(p0["committed_offset"], 5, "{d}");

    // Not while a member is active.
    let mut member = spawn_cli_consumer(&c, "etl", "events");
    wait_until("the member to join", SETTLE, || async {
        let d = ok_json(&c, &["group", "describe", "etl", "--json"]);
        (d["members"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;
    fails_with(
        &c,
        &[
            "group",
            "reset-offsets",
            "etl",
            "--topic",
            "events",
            "--to-earliest",
        ],
        "NON_EMPTY_GROUP",
    );
    fails_with(&c, &["group", "delete", "etl"], "NON_EMPTY_GROUP");
    member.kill().unwrap();
    member.wait().unwrap();
    // The killed member expires after its 2 s session; then delete works.
    wait_until(
        "the killed member to expire",
        Duration::from_secs(30),
        || async {
            rivulet(&c, &["group", "delete", "etl"])
                .status
                .success()
                .then_some(())
        },
    )
    .await;
    fails_with(&c, &["group", "describe", "etl"], "GROUP_ID_NOT_FOUND");
    fails_with(&c, &["group", "describe", ""], "INVALID_GROUP_ID");
    // Resetting a group that does not exist says it creates it.
    let out = rivulet(
        &c,
        &[
            "group",
            "reset-offsets",
            "fresh",
            "--topic",
            "events",
            "--to-earliest",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("group fresh did not exist"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["created"], true);
    c.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_coordinator_costs_no_committed_offset_and_no_record() {
    let c = match Cluster::start_netns(3).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED: no network namespaces here ({e})");
            return;
        }
    };
    c.leader().await;
    c.wait_unfenced(&c.ids(), Duration::from_secs(10)).await;
    let code = c
        .create_topic_with(1, "trades", 4, 3, &[("min.insync.replicas", "2")])
        .await;
    assert_eq!(code, ErrorCode::None as i32);
    for p in 0..4 {
        c.wait_partition_leader("trades", p, SETTLE).await;
    }
    let seen = Arc::new(Seen::default());
    let m1 = Member::start(&c, "risk", "trades", "m1", &seen).await;
    let m2 = Member::start(&c, "risk", "trades", "m2", &seen).await;
    wait_split(&[&m1, &m2], 4, SETTLE).await;
    let mut want = produce(&c, "trades", "a", 200).await;
    wait_consumed(&seen, &want, SETTLE).await;
    let admin = Admin::connect(ClientConfig::new(&bootstrap(&c)))
        .await
        .unwrap();
    let before = wait_until("the group to commit everything", SETTLE, || async {
        let d = admin.describe_group("risk").await.ok()?;
        (d.partitions.len() == 4 && d.total_lag() == 0).then_some(d)
    })
    .await;

    // Cut the coordinator off from the other brokers (clients still reach
    // it) past the lease; keep producing meanwhile.
    let coordinator = before.coordinator;
    c.isolate(coordinator);
    want.extend(produce(&c, "trades", "b", 200).await);
    // The cut lasts until the majority side has a new coordinator.
    let majority = Admin::connect(ClientConfig::new(
        &c.ids()
            .iter()
            .filter(|id| **id != coordinator)
            .map(|id| c.addr(*id).to_string())
            .collect::<Vec<_>>()
            .join(","),
    ))
    .await
    .unwrap();
    wait_until("a new coordinator on the majority side", SETTLE, || async {
        let d = majority.describe_group("risk").await.ok()?;
        (d.coordinator != coordinator).then_some(())
    })
    .await;
    c.heal_network();
    wait_consumed(&seen, &want, Duration::from_secs(40)).await;
    // The members heartbeated the cut-off coordinator, which still answered
    // from memory; the new one may have expired them. They learn it once the
    // network heals (NOT_COORDINATOR, then UNKNOWN_MEMBER_ID), drop their
    // partitions and rejoin: wait for a stable group before closing, so the
    // closing commits count. (Leadership of the offsets partition may go
    // back to the preferred replica meanwhile.)
    wait_until("both members back in a stable group", SETTLE, || async {
        let d = admin.describe_group("risk").await.ok()?;
        (d.state == "stable" && d.members.len() == 2).then_some(())
    })
    .await;
    wait_split(&[&m1, &m2], 4, SETTLE).await;
    m1.close().await;
    m2.close().await;
    let after = wait_until("every record committed", SETTLE, || async {
        let d = admin.describe_group("risk").await.ok()?;
        (d.total_lag() == 0 && d.members.is_empty()).then_some(d)
    })
    .await;
    let committed = |d: &rivulet_client::GroupDescription| -> u64 {
        d.partitions.iter().filter_map(|p| p.committed).sum()
    };
    assert_eq!(committed(&before), 200);
    assert_eq!(committed(&after), 400);
    eprintln!(
        "coordinator {coordinator} isolated: group now on {}, {} record(s) read twice",
        after.coordinator,
        duplicates(&seen).len()
    );
    c.assert_no_unexpected_errors(&[]);
}
