//! An in-process cluster of nodes talking real gRPC on loopback, each a
//! controller quorum member with its broker's registration and heartbeats
//! but no data plane: election, forwarding, failover, fencing, restart,
//! snapshots, learners.
//! Every wait has a deadline; nothing sleeps for a fixed time to "let things
//! settle".

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rivulet_broker::BrokerIdentity;
use rivulet_metadata::quorum::{default_cluster_id, Quorum, QuorumConfig, QuorumTiming};
use rivulet_metadata::raft::NodeId;
use rivulet_metadata::BrokerId;

use rivulet_proto::node_auth::{node_channel, ClusterSecret, NodeChannel, NodeCredentials};
use rivulet_proto::v1::controller_client::ControllerClient;
use rivulet_proto::v1::{
    AlterPartitionRequest, CreateTopicRequest, DescribeClusterRequest, ErrorCode,
    RemoveLearnerRequest,
};
use tokio::net::TcpListener;

use super::{Node, NodeSpec};

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout`.
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct TestCluster {
    /// Keeps every node's data directory alive.
    root: tempfile::TempDir,
    /// Every node's address (voters first, then learners).
    addrs: BTreeMap<NodeId, SocketAddr>,
    /// The voters.
    voters: BTreeMap<NodeId, String>,
    /// Running nodes.
    nodes: BTreeMap<NodeId, Node>,
    timing: QuorumTiming,
    /// The cluster secret every node holds.
    secret: ClusterSecret,
}

impl TestCluster {
    async fn start(voters: u64, learners: u64, timing: QuorumTiming) -> Self {
        // RIVULET_LOG=debug shows the nodes' logs for a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("RIVULET_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
            )
            .with_test_writer()
            .try_init();
        let mut listeners = BTreeMap::new();
        for id in 1..=voters + learners {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(id, l);
        }
        let addrs: BTreeMap<NodeId, SocketAddr> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap()))
            .collect();
        let voter_map = addrs
            .iter()
            .filter(|(id, _)| **id <= voters)
            .map(|(id, a)| (*id, a.to_string()))
            .collect();
        let mut c = Self {
            root: tempfile::tempdir().unwrap(),
            addrs,
            voters: voter_map,
            nodes: BTreeMap::new(),
            timing,
            secret: ClusterSecret::from_bytes(b"quorum-tests-cluster-secret-32-bytes!"),
        };
        for (id, l) in listeners {
            c.start_node(id, l).await;
        }
        c
    }

    fn config(&self, id: NodeId) -> QuorumConfig {
        QuorumConfig {
            node_id: id,
            advertise: self.addrs[&id].to_string(),
            voters: self.voters.clone(),
            data_dir: self.root.path().join(format!("node-{id}")),
            cluster_id: default_cluster_id(&self.voters),
            timing: self.timing.clone(),
            edge: Default::default(),
            cluster_secret: Some(self.secret.clone()),
            tls: None,
            security: Default::default(),
        }
    }

    async fn start_node(&mut self, id: NodeId, listener: TcpListener) {
        let identity = BrokerIdentity {
            address: self.addrs[&id].to_string(),
            rack: None,
            directory_id: format!("dir-{id}"),
            kafka_address: None,
            new_directory: false,
            log_fsynced: true,
            process_started: std::time::Instant::now(),
        };
        let spec = NodeSpec {
            quorum: self.config(id),
            identity,
            data_plane: None,
            kafka: None,
        };
        let node = Node::start(listener, spec).await.unwrap();
        self.nodes.insert(id, node);
    }

    async fn restart(&mut self, id: NodeId) {
        let listener = eventually("the port to be free", Duration::from_secs(5), || async {
            TcpListener::bind(self.addrs[&id]).await.ok()
        })
        .await;
        self.start_node(id, listener).await;
    }

    async fn stop(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await;
        }
    }

    async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    fn quorum(&self, id: NodeId) -> &Arc<Quorum> {
        self.nodes[&id].quorum()
    }

    async fn client(&self, id: NodeId) -> ControllerClient<tonic::transport::Channel> {
        ControllerClient::connect(format!("http://{}", self.addrs[&id]))
            .await
            .unwrap()
    }

    /// A client to node `to` whose calls carry node `as_node`'s proof.
    fn node_client(&self, to: NodeId, as_node: NodeId) -> ControllerClient<NodeChannel> {
        ControllerClient::new(self.node_channel(to, as_node))
    }

    fn node_channel(&self, to: NodeId, as_node: NodeId) -> NodeChannel {
        node_channel(
            &self.addrs[&to].to_string(),
            Duration::from_secs(1),
            &NodeCredentials::new(as_node, Some(self.secret.clone())),
        )
        .unwrap()
    }

    /// Waits until all running nodes agree on a leader among them.
    async fn leader(&self) -> NodeId {
        eventually("a leader", Duration::from_secs(10), || async {
            let leaders: Vec<Option<NodeId>> = self
                .nodes
                .values()
                .map(|n| n.quorum().leader().map(|l| l.0))
                .collect();
            let first = leaders.first().copied().flatten()?;
            let agreed = leaders.iter().all(|l| *l == Some(first));
            (agreed && self.nodes.contains_key(&first) && self.quorum(first).is_leader())
                .then_some(first)
        })
        .await
    }

    /// Waits until every running node's image has `n` live brokers.
    async fn live_brokers(&self, n: usize) {
        for (id, node) in &self.nodes {
            let ok = node
                .quorum()
                .wait_for_image(Duration::from_secs(10), |img| {
                    img.live_broker_ids().len() == n
                })
                .await;
            assert!(ok.is_some(), "node {id} never saw {n} live brokers");
        }
    }

    /// The response's error code, or -1 for a whole-request failure (no
    /// controller reachable yet), which callers retry.
    async fn create_topic(&self, via: NodeId, name: &str, partitions: u32, rf: u32) -> i32 {
        let r = self
            .client(via)
            .await
            .create_topic(CreateTopicRequest {
                name: name.into(),
                partitions,
                replication_factor: rf,
                configs: Vec::new(),
            })
            .await;
        r.map_or(-1, |r| r.into_inner().error_code)
    }
}

fn fast_timing() -> QuorumTiming {
    QuorumTiming {
        preferred_leader_check_ms: Some(500),
        ..QuorumTiming::default()
    }
}

/// A stop asked for (SIGTERM, Ctrl-C) is a clean stop, every time: the
/// tasks ending because the node stops must not read as a task that "stopped
/// on its own" (which exits non-zero). Eight stops of a running node (without the fix, the first one failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_stop_is_always_a_clean_stop() {
    let mut c = TestCluster::start(1, 0, fast_timing()).await;
    for round in 0..8 {
        c.leader().await;
        c.live_brokers(1).await;
        let node = c.nodes.remove(&1).expect("running");
        let stop = node.cancel_token();
        // As `rivulet node` does: the node runs, a signal handler cancels.
        let running = tokio::spawn(node.run_until_cancelled());
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.cancel();
        assert_eq!(running.await.unwrap(), Ok(()), "stop {round}");
        c.restart(1).await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_register_and_replicate_through_any_node() {
    let c = TestCluster::start(3, 0, fast_timing()).await;
    let leader = c.leader().await;
    c.live_brokers(3).await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    // Written through a follower: forwarded to the active controller.
    assert_eq!(
        c.create_topic(follower, "orders", 6, 3).await,
        ErrorCode::None as i32
    );
    for (id, node) in &c.nodes {
        let img = node
            .quorum()
            .wait_for_image(Duration::from_secs(5), |img| img.topic("orders").is_some())
            .await
            .unwrap_or_else(|| panic!("node {id} never saw the topic"));
        let t = img.topic("orders").unwrap();
        assert_eq!(t.partitions.len(), 6);
        assert!(t
            .partitions
            .iter()
            .all(|p| p.isr.len() == 3 && p.leader.is_some()));
    }
    // Refusals come back as error codes, not transport errors.
    assert_eq!(
        c.create_topic(follower, "orders", 1, 1).await,
        ErrorCode::TopicAlreadyExists as i32
    );
    assert_eq!(
        c.create_topic(leader, "bad/name", 1, 1).await,
        ErrorCode::InvalidTopic as i32
    );
    assert_eq!(
        c.create_topic(leader, "too-wide", 1, 4).await,
        ErrorCode::InvalidReplicationFactor as i32
    );
    let d = c
        .client(follower)
        .await
        .describe_cluster(DescribeClusterRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.controller_leader, Some(leader));
    assert_eq!(d.voters.len(), 3);
    // Server reflection lists our services to generic gRPC tools.
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", c.addrs[&follower]))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut r = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = r
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected reflection reply {reply:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.iter().any(|n| n == "rivulet.v1.Controller"),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n == "rivulet.v1.Broker"), "{names:?}");
    }
    assert_eq!(d.brokers.iter().filter(|b| !b.fenced).count(), 3);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_active_controller_fails_over_fences_and_rejoins() {
    let mut c = TestCluster::start(3, 0, fast_timing()).await;
    let old = c.leader().await;
    c.live_brokers(3).await;
    assert_eq!(
        c.create_topic(old, "events", 3, 3).await,
        ErrorCode::None as i32
    );
    let before = c.quorum(old).image();
    let led: Vec<u32> = before
        .topic("events")
        .unwrap()
        .partitions
        .iter()
        .filter(|p| p.leader == Some(BrokerId(old)))
        .map(|p| p.partition)
        .collect();

    c.stop(old).await;
    // The old leader's Raft is gone from here (stop returns after it shut down).
    let killed_at = Instant::now();
    let survivor = *c.nodes.keys().next().unwrap();
    // Metadata writes succeed again through a survivor.
    let mut n = 0;
    eventually(
        "a metadata write after failover",
        Duration::from_secs(5),
        || {
            n += 1;
            let name = format!("after-{n}");
            let c = &c;
            async move {
                (c.create_topic(survivor, &name, 1, 1).await == ErrorCode::None as i32)
                    .then_some(())
            }
        },
    )
    .await;
    let failover = killed_at.elapsed();
    eprintln!("metadata write available again {failover:?} after the active controller died");
    assert!(
        failover < Duration::from_secs(2),
        "failover took {failover:?}"
    );

    // The dead broker is fenced; the partitions it led moved with bumped epochs.
    let new_leader = c.leader().await;
    assert_ne!(new_leader, old);
    let img = c
        .quorum(survivor)
        .wait_for_image(Duration::from_secs(5), |img| {
            img.broker(BrokerId(old)).is_some_and(|b| b.fenced)
        })
        .await
        .expect("the dead broker is fenced");
    for p in &img.topic("events").unwrap().partitions {
        assert!(
            !p.isr.contains(&BrokerId(old)),
            "partition {} keeps the dead broker in its ISR",
            p.partition
        );
        assert!(p.leader.is_some_and(|l| l != BrokerId(old)));
        let was = &before.topic("events").unwrap().partitions[p.partition as usize];
        assert!(p.partition_epoch > was.partition_epoch);
        if led.contains(&p.partition) {
            assert!(p.leader_epoch > was.leader_epoch);
        }
    }

    // Restarted, the node rejoins from its store, catches up and is unfenced.
    c.restart(old).await;
    let offset = c.quorum(new_leader).image().metadata_offset();
    let img = c
        .quorum(old)
        .wait_for_image(Duration::from_secs(10), |img| {
            img.metadata_offset() >= offset && img.broker(BrokerId(old)).is_some_and(|b| !b.fenced)
        })
        .await
        .expect("the restarted node catches up and is unfenced");
    assert!(img.topic("events").is_some());

    // Once a partition's leader puts the restarted broker back in the ISR (as
    // the data plane does when it catches up), preferred-leader rebalancing
    // hands leadership of the partitions it prefers back to it.
    let Some(&preferred) = led.first() else {
        return c.shutdown().await;
    };
    let p = img.topic("events").unwrap().partitions[preferred as usize].clone();
    let current = p.leader.unwrap();
    let mut isr: Vec<u64> = p.isr.iter().map(|b| b.0).collect();
    isr.push(old);
    let r = c
        .node_client(new_leader, current.0)
        .alter_partition(AlterPartitionRequest {
            broker_id: current.0,
            broker_epoch: img.broker(current).unwrap().broker_epoch,
            topic: "events".into(),
            topic_id: img.topic("events").unwrap().id.to_string(),
            partition: preferred,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: isr,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error_code, ErrorCode::None as i32, "{}", r.error_message);
    c.quorum(old)
        .wait_for_image(Duration::from_secs(5), |img| {
            img.partition("events", preferred)
                .is_some_and(|p| p.leader == Some(BrokerId(old)))
        })
        .await
        .expect("leadership returns to the preferred replica");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_alter_partition_is_refused() {
    let c = TestCluster::start(3, 0, fast_timing()).await;
    let leader = c.leader().await;
    c.live_brokers(3).await;
    assert_eq!(
        c.create_topic(leader, "t", 1, 3).await,
        ErrorCode::None as i32
    );
    let img = c.quorum(leader).image();
    let topic = img.topic("t").unwrap();
    let p = &topic.partitions[0];
    let pl = p.leader.unwrap();
    let epoch = img.broker(pl).unwrap().broker_epoch;
    let shrunk: Vec<u64> = vec![pl.0, p.replicas.iter().find(|r| **r != pl).unwrap().0];
    let mut client = c.node_client(leader, pl.0);
    let req = |leader_epoch, partition_epoch| AlterPartitionRequest {
        broker_id: pl.0,
        broker_epoch: epoch,
        topic: "t".into(),
        topic_id: topic.id.to_string(),
        partition: 0,
        leader_epoch,
        partition_epoch,
        new_isr: shrunk.clone(),
    };
    let ok = client
        .alter_partition(req(p.leader_epoch, p.partition_epoch))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ok.error_code,
        ErrorCode::None as i32,
        "{}",
        ok.error_message
    );
    assert_eq!(ok.partition.unwrap().isr, shrunk);
    // The same request again carries a partition epoch that is now stale.
    let stale = client
        .alter_partition(req(p.leader_epoch, p.partition_epoch))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stale.error_code, ErrorCode::InvalidUpdateVersion as i32);
    let fenced = client
        .alter_partition(req(p.leader_epoch + 5, p.partition_epoch + 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fenced.error_code, ErrorCode::FencedLeaderEpoch as i32);
    let mut old_broker = req(p.leader_epoch, p.partition_epoch + 1);
    old_broker.broker_epoch = epoch + 100;
    let r = client
        .alter_partition(old_broker)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error_code, ErrorCode::StaleBrokerEpoch as i32);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fell_behind_installs_a_snapshot_and_a_learner_joins() {
    let timing = QuorumTiming {
        snapshot_every_entries: 20,
        logs_kept_after_snapshot: 2,
        ..fast_timing()
    };
    let mut c = TestCluster::start(3, 1, timing).await;
    let leader = c.leader().await;
    c.live_brokers(4).await;
    let behind = *c.voters.keys().find(|id| **id != leader).unwrap();
    c.stop(behind).await;
    let writer = c.leader().await;
    for i in 0..60 {
        assert_eq!(
            c.create_topic(writer, &format!("t{i}"), 1, 1).await,
            ErrorCode::None as i32
        );
    }
    // Snapshots are built and the log purged in the background.
    eventually(
        "the leader to purge its log",
        Duration::from_secs(10),
        || async {
            c.quorum(writer)
                .raft()
                .metrics()
                .borrow()
                .purged
                .map(|_| ())
        },
    )
    .await;
    c.restart(behind).await;
    let img = c
        .quorum(behind)
        .wait_for_image(Duration::from_secs(10), |img| img.topic("t59").is_some())
        .await
        .expect("the lagging node catches up");
    assert!((0..60).all(|i| img.topic(&format!("t{i}")).is_some()));
    eventually(
        "the lagging node to hold a snapshot",
        Duration::from_secs(10),
        || async {
            c.quorum(behind)
                .raft()
                .metrics()
                .borrow()
                .snapshot
                .map(|_| ())
        },
    )
    .await;

    // Node 4 is not a voter: it joined as a learner and holds the same image.
    let learner = c
        .quorum(4)
        .wait_for_image(Duration::from_secs(10), |img| img.topic("t59").is_some())
        .await
        .expect("the learner has the image");
    assert_eq!(learner.topics().len(), img.topics().len());
    let m = c.quorum(writer).raft().metrics().borrow().clone();
    let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
    assert!(!voters.contains(&4));
    c.shutdown().await;
}

/// Issue 15, item 1: the cluster's own calls, forged by a plain client (no
/// proof, a proof made with another secret) or by a node speaking for
/// another node, are refused and change nothing: not the Raft term, not a
/// broker's address, not the learners. And a learner can be removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_node_calls_are_refused_and_change_nothing() {
    use rivulet_proto::v1::raft_client::RaftClient;
    use rivulet_proto::v1::{
        AddLearnerRequest, HeartbeatRequest, RaftMessage, RegisterBrokerRequest,
    };
    use tonic::Code;

    let mut c = TestCluster::start(3, 1, fast_timing()).await;
    let leader = c.leader().await;
    c.live_brokers(4).await;
    let follower = *c.voters.keys().find(|id| **id != leader).unwrap();
    let term = || c.quorum(leader).raft().metrics().borrow().current_term;
    let term_before = term();
    let address_of_3 = || {
        c.quorum(leader)
            .image()
            .broker(BrokerId(3))
            .unwrap()
            .address
            .clone()
    };
    let address_before = address_of_3();
    let members = || {
        c.quorum(leader)
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>()
    };
    assert_eq!(members(), vec![1, 2, 3, 4]);

    let vote = |candidate: u64| {
        RaftMessage {
        json: format!(
            r#"{{"vote":{{"leader_id":{{"term":1000,"node_id":{candidate}}},"committed":false}},"last_log_id":null}}"#
        )
        .into_bytes()
        .into(),
    }
    };
    let plain = |id: NodeId| {
        tonic::transport::Endpoint::from_shared(format!("http://{}", c.addrs[&id]))
            .unwrap()
            .connect_lazy()
    };
    let wrong_secret = |to: NodeId| {
        node_channel(
            &c.addrs[&to].to_string(),
            Duration::from_secs(1),
            &NodeCredentials::new(3, Some(ClusterSecret::from_bytes(&[1u8; 40]))),
        )
        .unwrap()
    };
    let register = |broker_id: u64| RegisterBrokerRequest {
        broker_id,
        address: "203.0.113.9:9092".into(),
        rack: None,
        directory_id: "forged".into(),
        log_fsynced: true,
        kafka_address: String::new(),
    };

    // A Raft vote with a huge term: without proof, with a wrong secret.
    let e = RaftClient::new(plain(leader))
        .vote(vote(3))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = RaftClient::new(wrong_secret(leader))
        .vote(vote(3))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // A node voting as another candidate.
    let e = RaftClient::new(c.node_channel(leader, 2))
        .vote(vote(3))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Registering broker 3 at an address of the caller's choosing, and a
    // phantom broker 77, to the leader and to a follower (which forwards).
    for to in [leader, follower] {
        for id in [3, 77] {
            let e = ControllerClient::new(plain(to))
                .register_broker(register(id))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
            let e = c
                .node_client(to, 1)
                .register_broker(register(id))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        }
    }
    // A heartbeat for another broker.
    let mut replies = c
        .node_client(leader, 1)
        .heartbeat(tokio_stream::iter([HeartbeatRequest {
            broker_id: 2,
            broker_epoch: 1,
            metadata_offset: 0,
            storage_failed: Vec::new(),
            shutting_down: true,
        }]))
        .await
        .unwrap()
        .into_inner();
    let first = replies.message().await;
    assert!(
        matches!(&first, Err(e) if e.code() == Code::PermissionDenied),
        "{first:?}"
    );
    // A phantom learner.
    let e = ControllerClient::new(plain(follower))
        .add_learner(AddLearnerRequest {
            node_id: 77,
            address: "203.0.113.9:9092".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // Nothing changed.
    assert_eq!(c.leader().await, leader);
    assert_eq!(term(), term_before);
    assert_eq!(address_of_3(), address_before);
    assert!(c.quorum(leader).image().broker(BrokerId(77)).is_none());
    assert_eq!(members(), vec![1, 2, 3, 4]);
    assert!(c.quorum(leader).image().is_live(BrokerId(2)));

    // An operator removes the learner; voters and unknown ids are refused.
    let mut admin = c.client(follower).await;
    remove_learner(&mut admin, leader, ErrorCode::InvalidRequest).await;
    remove_learner(&mut admin, 77, ErrorCode::BrokerNotAvailable).await;
    // A running learner is refused: cut off from the metadata log it would
    // keep serving a frozen image.
    remove_learner(&mut admin, 4, ErrorCode::InvalidRequest).await;
    c.stop(4).await;
    // In this process the stopped node's heartbeat stream outlives it (the
    // shared runtime keeps its connection), so fence it as its lease
    // expiring would.
    c.quorum(leader)
        .propose(|img| rivulet_metadata::controller::fence_broker(img, BrokerId(4)))
        .await
        .unwrap();
    remove_learner(&mut admin, 4, ErrorCode::None).await;
    eventually("the learner to be gone", Duration::from_secs(5), || async {
        let m = c.quorum(leader).raft().metrics().borrow().clone();
        let ids: Vec<u64> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        (ids == vec![1, 2, 3]).then_some(())
    })
    .await;
    c.shutdown().await;
}

/// `RemoveLearner` of `id` through `admin`, answered with `want`.
async fn remove_learner(
    admin: &mut ControllerClient<tonic::transport::Channel>,
    id: NodeId,
    want: ErrorCode,
) {
    let r = admin
        .remove_learner(RemoveLearnerRequest { node_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error_code, want as i32, "node {id}: {}", r.error_message);
}
