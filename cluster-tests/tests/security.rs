//! Node identity with real processes (issue 15, item 1): every node of the
//! harness's clusters holds the cluster secret, so the cluster's own calls
//! from a plain client are refused and change nothing. The case the issue
//! measured: with both real followers frozen, replica fetches forged in
//! their names (with their real broker epochs) used to move the high
//! watermark, and an acks=all produce was acknowledged while the record
//! existed on one disk only.

use std::future::Future;
use std::time::Duration;

use cluster_tests::{Cluster, ProduceOutcome};
use rivulet_proto::v1::list_offsets_partition::Spec;
use rivulet_proto::v1::replication_client::ReplicationClient;
use rivulet_proto::v1::OffsetSpec;
use rivulet_proto::v1::{
    Acks, ErrorCode, ListOffsetsPartition, ListOffsetsRequest, ReplicaFetchPartition,
    ReplicaFetchRequest,
};
use tonic::transport::Endpoint;

const TEST_LIMIT: Duration = Duration::from_secs(180);
const SETTLE: Duration = Duration::from_secs(20);

async fn bounded(body: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("the test exceeded its {TEST_LIMIT:?} limit");
    }
}

async fn high_watermark(c: &Cluster, leader: u64, topic: &str) -> u64 {
    let r = c
        .broker_client(leader, Duration::from_secs(5))
        .list_offsets(ListOffsetsRequest {
            partitions: vec![ListOffsetsPartition {
                topic: topic.into(),
                partition: 0,
                spec: Some(Spec::OffsetSpec(OffsetSpec::Latest as i32)),
                current_leader_epoch: None,
            }],
        })
        .await
        .expect("ListOffsets answers")
        .into_inner();
    let p = &r.partitions[0];
    assert_eq!(p.error_code, ErrorCode::None as i32, "{}", p.error_message);
    p.offset.expect("LATEST always has an offset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replica_fetches_cannot_move_the_high_watermark() {
    bounded(async {
        let mut c = Cluster::start(3).await;
        c.wait_unfenced(&c.ids(), SETTLE).await;
        assert_eq!(
            c.create_topic_with(1, "sec", 1, 3, &[("min.insync.replicas", "2")])
                .await,
            0
        );
        c.wait_isr("sec", 0, &[1, 2, 3], SETTLE).await;
        let info = c.wait_partition_leader("sec", 0, SETTLE).await;
        let leader = info.leader.unwrap();
        let followers: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
        let first = c.produce("sec", 0, &[b"first".to_vec()], Acks::All).await;
        assert!(matches!(first, ProduceOutcome::Acked(0)), "{first:?}");
        let hw = high_watermark(&c, leader, "sec").await;
        assert_eq!(hw, 1);
        let epochs: Vec<(u64, u64)> = c
            .describe(leader)
            .await
            .unwrap()
            .brokers
            .iter()
            .filter(|b| followers.contains(&b.id))
            .map(|b| (b.id, b.broker_epoch))
            .collect();

        for f in &followers {
            c.pause(*f);
        }
        // Forgers fetch in the followers' names, ahead of the leader's log
        // end, with the followers' real broker epochs.
        let addr = c.addr(leader);
        let forgers: Vec<_> = epochs
            .iter()
            .map(|&(id, epoch)| {
                let channel = Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect_lazy();
                tokio::spawn(async move {
                    let mut client = ReplicationClient::new(channel);
                    let mut refused = 0;
                    for _ in 0..40 {
                        let r = client
                            .replica_fetch(ReplicaFetchRequest {
                                replica_id: id,
                                broker_epoch: epoch,
                                max_wait_ms: 10,
                                min_bytes: 0,
                                max_bytes: 1 << 20,
                                partitions: vec![ReplicaFetchPartition {
                                    topic: "sec".into(),
                                    partition: 0,
                                    current_leader_epoch: info.leader_epoch,
                                    fetch_offset: 2,
                                    last_fetched_epoch: Some(info.leader_epoch),
                                    partition_max_bytes: 1 << 20,
                                    storage_failed: false,
                                }],
                            })
                            .await;
                        match r {
                            Err(s) if s.code() == tonic::Code::Unauthenticated => refused += 1,
                            other => panic!("a forged fetch was not refused: {other:?}"),
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    refused
                })
            })
            .collect();
        let second = c
            .produce_to(
                Some(leader),
                "sec",
                0,
                &[b"second".to_vec()],
                Acks::All,
                1_500,
            )
            .await;
        for f in forgers {
            assert_eq!(f.await.unwrap(), 40);
        }
        assert!(
            !matches!(second, ProduceOutcome::Acked(_)),
            "acknowledged while on one disk only: {second:?}"
        );
        assert_eq!(
            high_watermark(&c, leader, "sec").await,
            1,
            "the high watermark moved on forged fetches"
        );
        for f in &followers {
            c.resume(*f);
        }
        let log = std::fs::read_to_string(c.log_path(leader)).unwrap();
        assert!(
            log.contains("refused a node-to-node call"),
            "the leader logs the refusals"
        );
        assert!(
            !log.contains("node-to-node calls are unauthenticated"),
            "a node with a secret does not warn"
        );
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}

/// A node started without a secret says so, and one given an unusable
/// secret file refuses to start, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_secret_warns_and_a_bad_secret_file_stops_it() {
    bounded(async {
        let bin = cluster_tests::rivulet_binary();
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.secret");
        std::fs::write(&short, "too short\n").unwrap();
        let out = tokio::process::Command::new(bin)
            .args(["node", "--id", "1", "--listen", "127.0.0.1:1", "--voters"])
            .arg("1@127.0.0.1:1")
            .arg("--data-dir")
            .arg(dir.path().join("d"))
            .arg("--cluster-secret-file")
            .arg(&short)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("short.secret") && err.contains("must be 32"),
            "{err}"
        );

        // --require-auth without a secret or node certificates: refused.
        let out = tokio::process::Command::new(bin)
            .args(["node", "--id", "1", "--listen", "127.0.0.1:1", "--voters"])
            .arg("1@127.0.0.1:1")
            .arg("--data-dir")
            .arg(dir.path().join("d2"))
            .arg("--require-auth")
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--require-auth needs --cluster-secret-file"),
            "{err}"
        );

        // TLS without a secret needs a node certificate: the client one is not.
        let certs = dir.path().join("tls");
        let made = tokio::process::Command::new(bin)
            .args(["cert", "--out-dir"])
            .arg(&certs)
            .output()
            .await
            .unwrap();
        assert!(made.status.success());
        let out = tokio::process::Command::new(bin)
            .args(["node", "--id", "1", "--listen", "127.0.0.1:1", "--voters"])
            .arg("1@127.0.0.1:1")
            .arg("--data-dir")
            .arg(dir.path().join("d3"))
            .arg("--tls-ca")
            .arg(certs.join("ca.pem"))
            .arg("--tls-cert")
            .arg(certs.join("client.pem"))
            .arg("--tls-key")
            .arg(certs.join("client.key"))
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is not a node certificate"), "{err}");

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log_path = dir.path().join("open.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = tokio::process::Command::new(bin)
            .args(["node", "--id", "1", "--listen", &addr, "--voters"])
            .arg(format!("1@{addr}"))
            .arg("--data-dir")
            .arg(dir.path().join("open"))
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let found = cluster_tests::wait_until(
            "the WARN about unauthenticated node calls",
            Duration::from_secs(20),
            || async {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                text.lines()
                    .any(|l| {
                        l.contains("WARN") && l.contains("node-to-node calls are unauthenticated")
                    })
                    .then_some(true)
            },
        )
        .await;
        let _ = child.kill().await;
        assert!(found);
    })
    .await;
}
