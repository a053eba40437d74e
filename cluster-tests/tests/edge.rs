//! The node's network edge with real processes: sockets that never speak
//! are closed after the handshake timeout, connections past the cap are
//! refused at once with a rate-limited WARN, and the node keeps serving
//! real clients through both.

use std::future::Future;
use std::time::{Duration, Instant};

use cluster_tests::{wait_until, Cluster};
use rivulet_proto::v1::MetadataRequest;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const TEST_LIMIT: Duration = Duration::from_secs(120);

async fn bounded(body: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("the test exceeded its {TEST_LIMIT:?} limit");
    }
}

/// Whether the node closed `s` within `within` (EOF or a reset).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // The server's HTTP/2 SETTINGS frame: keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

async fn metadata_works(c: &Cluster) {
    c.broker_client(1, Duration::from_secs(5))
        .metadata(MetadataRequest { topics: vec![] })
        .await
        .expect("a real client is served");
}

fn log_lines(c: &Cluster, needle: &str) -> usize {
    std::fs::read_to_string(c.log_path(1))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_handshake_timeout() {
    bounded(async {
        std::env::set_var("RIVULET_HANDSHAKE_TIMEOUT_MS", "700");
        let c = Cluster::start(1).await;
        metadata_works(&c).await;
        let started = Instant::now();
        let mut silent = Vec::new();
        for i in 0..200 {
            let mut s = TcpStream::connect(c.addr(1)).await.expect("connect");
            if i % 20 == 0 {
                // A few bytes of the preface, then nothing: still closed.
                use tokio::io::AsyncWriteExt;
                s.write_all(b"PRI * HTTP").await.expect("write");
            }
            silent.push(s);
        }
        let mut closed = 0;
        for s in &mut silent {
            if closed_within(s, Duration::from_secs(5)).await {
                closed += 1;
            }
        }
        let took = started.elapsed();
        assert_eq!(closed, 200, "every silent socket is closed");
        assert!(
            took >= Duration::from_millis(600),
            "not before the timeout: {took:?}"
        );
        // Served meanwhile and after; one WARN line, not 200.
        metadata_works(&c).await;
        let warns = log_lines(
            &c,
            "did not send the HTTP/2 preface within the handshake timeout",
        );
        assert!(
            (1..=2).contains(&warns),
            "{warns} WARN lines for 200 sockets"
        );
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_and_the_node_recovers() {
    bounded(async {
        std::env::set_var("RIVULET_MAX_CONNECTIONS", "32");
        let c = Cluster::start(1).await;
        metadata_works(&c).await;
        let mut held = Vec::new();
        for _ in 0..60 {
            held.push(TcpStream::connect(c.addr(1)).await.expect("connect"));
        }
        let mut refused = 0;
        for s in &mut held {
            if closed_within(s, Duration::from_millis(300)).await {
                refused += 1;
            }
        }
        // The harness's own clients hold a few of the 32.
        assert!(
            (28..=60).contains(&refused),
            "{refused} of 60 refused with a cap of 32"
        );
        let warns = log_lines(&c, "holds its maximum of connections");
        assert!(
            (1..=2).contains(&warns),
            "{warns} WARN lines for {refused} refusals"
        );
        drop(held);
        wait_until(
            "a client served once the sockets closed",
            Duration::from_secs(10),
            || async {
                c.broker_client(1, Duration::from_secs(2))
                    .metadata(MetadataRequest { topics: vec![] })
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_inflight_budget_wait_or_are_refused_never_deadlock() {
    use bytes::Bytes;
    use rivulet_common::batch::{build_batch, Compression, RecordInput};
    use rivulet_proto::v1::produce_partition::Data;
    use rivulet_proto::v1::{Acks, ProducePartition, ProduceRequest};

    bounded(async {
        // 16 MiB in flight; each request is ~12 MiB. A budget reserved piece
        // by piece would deadlock two requests holding 8 MiB each; a stream
        // waiting for the budget without bound would starve the others of
        // its connection (they share its flow-control window) — including
        // the one that would free the budget. Four requests on one
        // connection and four on four: every one lands, retrying the
        // retriable RESOURCE_EXHAUSTED, well inside the test's limit.
        std::env::set_var("RIVULET_MAX_INFLIGHT_BYTES", (16u64 << 20).to_string());
        let c = Cluster::start(1).await;
        assert_eq!(c.create_topic_with(1, "big", 1, 1, &[]).await, 0);
        c.wait_partition_leader("big", 0, Duration::from_secs(20))
            .await;
        let batch = build_batch(
            &[RecordInput {
                value: Some(Bytes::from(vec![7u8; 900 << 10])),
                timestamp_ms: 1,
                ..RecordInput::default()
            }],
            Compression::None,
        )
        .expect("encode");
        let request = ProduceRequest {
            acks: Acks::All.into(),
            timeout_ms: 30_000,
            partitions: (0..13)
                .map(|_| ProducePartition {
                    topic: "big".into(),
                    partition: 0,
                    data: Some(Data::RecordBatch(batch.clone())),
                    ..ProducePartition::default()
                })
                .collect(),
        };
        let shared = c.broker_client(1, Duration::from_secs(20));
        let started = Instant::now();
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..8 {
            let mut client = if i < 4 {
                shared.clone()
            } else {
                c.broker_client(1, Duration::from_secs(20))
            };
            let req = request.clone();
            sends.spawn(async move {
                let mut refused = 0;
                loop {
                    match client.produce(req.clone()).await {
                        Ok(r) => return (r.into_inner(), refused),
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                            assert!(s.message().contains("--max-inflight-bytes"), "{s:?}");
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(s) => panic!("request failed: {s:?}"),
                    }
                }
            });
        }
        let mut refusals = 0;
        while let Some(r) = sends.join_next().await {
            let (r, refused) = r.expect("task");
            assert!(r.partitions.iter().all(|p| p.error_code == 0), "{r:?}");
            refusals += refused;
        }
        eprintln!(
            "8 requests of 12 MiB through a 16 MiB budget: {:?}, {refusals} refusals",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        let (records, hw) = c.read_partition("big", 0).await;
        assert_eq!((records.len(), hw), (104, 104));
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}
