//! The idempotent producer on real processes (KIP-98, KIP-360, KIP-730):
//! a resent batch is stored once, also by a new leader after a kill -9 of
//! the one that appended it; a sequence gap and an old epoch are refused;
//! `rivulet produce` stores every line exactly once while the leader is
//! killed three times.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use cluster_tests::{cli, rivulet_binary, Cluster};
use rivulet_common::batch::ProducerStamp;
use rivulet_proto::v1::{Acks, ErrorCode, InitProducerIdRequest, ProducePartitionResponse};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn init(c: &Cluster, via: u64, current: Option<(i64, i32)>) -> (i64, i32) {
    let r = c
        .broker_client(via, TIMEOUT)
        .init_producer_id(InitProducerIdRequest {
            transactional_id: String::new(),
            producer_id: current.map(|c| c.0),
            producer_epoch: current.map(|c| c.1),
        })
        .await
        .expect("InitProducerId")
        .into_inner();
    assert_eq!(r.error_code, ErrorCode::None as i32, "{}", r.error_message);
    (r.producer_id, r.producer_epoch)
}

/// One idempotent batch of `values` to node `to`; its answer.
async fn send(
    c: &Cluster,
    to: u64,
    topic: &str,
    values: &[&str],
    (pid, epoch): (i64, i32),
    seq: i32,
) -> ProducePartitionResponse {
    let values: Vec<Vec<u8>> = values.iter().map(|v| v.as_bytes().to_vec()).collect();
    let req = cluster_tests::data::idempotent_produce_request(
        topic,
        0,
        &values,
        Acks::All,
        5_000,
        Some(ProducerStamp {
            producer_id: pid,
            producer_epoch: epoch as i16,
            base_sequence: seq,
        }),
    );
    c.broker_client(to, TIMEOUT)
        .produce(req)
        .await
        .expect("produce")
        .into_inner()
        .partitions
        .remove(0)
}

/// Waits until `topic`/`p`'s high watermark (as its leader answers) is at
/// least `at_least`: the kills below land while records flow, at set points.
async fn wait_hw(c: &Cluster, topic: &str, p: u32, at_least: u64) {
    use rivulet_proto::v1::{
        list_offsets_partition::Spec, ListOffsetsPartition, ListOffsetsRequest,
    };
    let what = format!("{topic}-{p} to reach a high watermark of {at_least}");
    cluster_tests::wait_until(&what, Duration::from_secs(60), || async {
        let leader = c.partition_info(topic, p).await?.leader?;
        let r = c
            .broker_client(leader, Duration::from_secs(2))
            .list_offsets(ListOffsetsRequest {
                partitions: vec![ListOffsetsPartition {
                    topic: topic.into(),
                    partition: p,
                    spec: Some(Spec::OffsetSpec(
                        rivulet_proto::v1::OffsetSpec::Latest as i32,
                    )),
                    current_leader_epoch: None,
                }],
            })
            .await
            .ok()?
            .into_inner();
        (r.partitions.first()?.offset? >= at_least).then_some(())
    })
    .await;
}

fn values(c: &[cluster_tests::ReadRecord]) -> Vec<String> {
    c.iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_is_stored_once_also_by_a_new_leader_after_kill_9() {
    let mut c = Cluster::start(3).await;
    c.wait_unfenced(&c.ids(), Duration::from_secs(15)).await;
    assert_eq!(c.create_topic_with(1, "idem", 1, 3, &[]).await, 0);
    let leader = c.wait_partition_leader("idem", 0, TIMEOUT).await;
    let l = leader.leader.unwrap();
    let producer = init(&c, 1, None).await;
    // Ids come from the controller's blocks: another node's are others.
    let other = init(&c, 2, None).await;
    assert_ne!(producer.0, other.0);

    let first = send(&c, l, "idem", &["a", "b", "c"], producer, 0).await;
    assert_eq!((first.error_code, first.base_offset), (0, 0));
    let again = send(&c, l, "idem", &["a", "b", "c"], producer, 0).await;
    assert_eq!(
        (again.error_code, again.base_offset),
        (0, 0),
        "{}",
        again.error_message
    );
    let next = send(&c, l, "idem", &["d", "e"], producer, 3).await;
    assert_eq!((next.error_code, next.base_offset), (0, 3));

    // The leader dies; the batch it appended is resent to its successor,
    // which learnt the producer's state from the replicated headers.
    c.kill(l);
    let new = c
        .wait_partition_leader("idem", 0, Duration::from_secs(20))
        .await;
    let nl = new.leader.unwrap();
    assert_ne!(nl, l);
    let resent = send(&c, nl, "idem", &["d", "e"], producer, 3).await;
    assert_eq!(
        (resent.error_code, resent.base_offset),
        (0, 3),
        "{}",
        resent.error_message
    );
    // A gap is refused and writes nothing.
    let gap = send(&c, nl, "idem", &["z"], producer, 9).await;
    assert_eq!(
        gap.error_code,
        ErrorCode::OutOfOrderSequenceNumber as i32,
        "{}",
        gap.error_message
    );
    assert!(!gap.appended);
    // KIP-360: the same id at the next epoch starts at 0; the old epoch is
    // fenced from then on.
    let bumped = init(&c, nl, Some(producer)).await;
    assert_eq!(bumped, (producer.0, producer.1 + 1));
    let fresh = send(&c, nl, "idem", &["f"], bumped, 0).await;
    assert_eq!((fresh.error_code, fresh.base_offset), (0, 5));
    let fenced = send(&c, nl, "idem", &["g"], producer, 5).await;
    assert_eq!(
        fenced.error_code,
        ErrorCode::InvalidProducerEpoch as i32,
        "{}",
        fenced.error_message
    );
    // A transactional id is refused with a clear code until transactions exist.
    let tx = c
        .broker_client(nl, TIMEOUT)
        .init_producer_id(InitProducerIdRequest {
            transactional_id: "tx-1".into(),
            ..InitProducerIdRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tx.error_code, ErrorCode::TransactionsNotSupported as i32);

    // The killed node comes back and catches up: the log holds each record
    // once, and its restarted replica recognises the duplicates too.
    c.restart(l).await;
    c.wait_isr("idem", 0, &[1, 2, 3], Duration::from_secs(30))
        .await;
    let (records, hw) = c.read_partition("idem", 0).await;
    assert_eq!(values(&records), ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(hw, 6);
    c.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rivulet_produce_stores_every_line_once_while_the_leader_is_killed_three_times() {
    const LINES: usize = 60_000;
    let mut c = Cluster::start(3).await;
    c.wait_unfenced(&c.ids(), Duration::from_secs(15)).await;
    assert_eq!(
        c.create_topic_with(1, "lines", 1, 3, &[("min.insync.replicas", "2")])
            .await,
        0
    );
    c.wait_partition_leader("lines", 0, TIMEOUT).await;
    let mut child = std::process::Command::new(rivulet_binary())
        .arg("--bootstrap")
        .arg(cli::bootstrap(&c))
        .args(["produce", "lines", "--delivery-timeout-ms", "120000"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run rivulet produce");
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Lines go in steadily over about 6 s, so a batch is in flight (appended,
    // perhaps replicated, not yet acknowledged) whenever a kill lands: what
    // a producer without idempotence stores twice.
    let writer = std::thread::spawn(move || {
        const CHUNK: usize = 50;
        for chunk in 0..LINES / CHUNK {
            let mut buf = String::new();
            for i in 0..CHUNK {
                buf.push_str(&format!("line-{}\n", chunk * CHUNK + i));
            }
            if stdin.write_all(buf.as_bytes()).is_err() {
                return; // the producer failed: its exit status says why
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let mut killed = Vec::new();
    for at in [12_000, 27_000, 42_000] {
        wait_hw(&c, "lines", 0, at).await;
        let l = c
            .wait_partition_leader("lines", 0, Duration::from_secs(20))
            .await
            .leader
            .unwrap();
        c.kill(l);
        killed.push(l);
        c.wait_partition_leader("lines", 0, Duration::from_secs(20))
            .await;
        c.restart(l).await;
    }
    writer.join().expect("stdin writer");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .expect("rivulet produce");
    assert!(
        out.status.success(),
        "produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_isr("lines", 0, &[1, 2, 3], Duration::from_secs(30))
        .await;
    let (records, _) = c.read_partition("lines", 0).await;
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for v in values(&records) {
        *count.entry(v).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let missing: Vec<String> = (0..LINES)
        .map(|i| format!("line-{i}"))
        .filter(|l| !count.contains_key(l))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
    assert_eq!(records.len(), LINES, "killed {killed:?}");
    c.assert_no_unexpected_errors(&[]);
}

/// The Rust producer with small batches (so up to five are in flight per
/// partition) through two leader kills: every record stored once, and each
/// partition's records in the order they were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_batches_in_flight_keep_order_and_store_once_through_leader_kills() {
    use rivulet_client::{ClientConfig, Producer, ProducerConfig, ProducerRecord};
    const RECORDS: usize = 30_000;
    let mut c = Cluster::start(3).await;
    c.wait_unfenced(&c.ids(), Duration::from_secs(15)).await;
    assert_eq!(
        c.create_topic_with(1, "pipe", 2, 3, &[("min.insync.replicas", "2")])
            .await,
        0
    );
    c.wait_partition_leader("pipe", 0, TIMEOUT).await;
    c.wait_partition_leader("pipe", 1, TIMEOUT).await;
    let producer = Producer::connect(
        ClientConfig::new(&cli::bootstrap(&c)),
        ProducerConfig {
            batch_size: 1024,
            linger: Duration::ZERO,
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(10),
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("connect");
    assert!(producer.producer_id().is_some(), "idempotent by default");
    let sender = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut futures = Vec::with_capacity(RECORDS);
            for i in 0..RECORDS {
                let rec =
                    ProducerRecord::new("pipe", format!("r-{i:06}")).partition((i % 2) as u32);
                futures.push(producer.send(rec).await.expect("send"));
                if i % 500 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let mut acked = 0;
            for f in futures {
                f.await.expect("every record acknowledged");
                acked += 1;
            }
            acked
        })
    };
    for at in [3_000, 9_000] {
        wait_hw(&c, "pipe", 0, at).await;
        let l = c
            .wait_partition_leader("pipe", 0, Duration::from_secs(20))
            .await
            .leader
            .unwrap();
        c.kill(l);
        c.wait_partition_leader("pipe", 0, Duration::from_secs(20))
            .await;
        c.restart(l).await;
    }
    assert_eq!(sender.await.unwrap(), RECORDS);
    let depth = producer.max_in_flight_seen();
    assert!(
        (2..=5).contains(&depth),
        "batches in flight per partition: {depth}"
    );
    for p in 0..2u32 {
        c.wait_isr("pipe", p, &[1, 2, 3], Duration::from_secs(30))
            .await;
        let (records, _) = c.read_partition("pipe", p).await;
        let got = values(&records);
        let want: Vec<String> = (0..RECORDS)
            .filter(|i| i % 2 == p as usize)
            .map(|i| format!("r-{i:06}"))
            .collect();
        assert_eq!(got.len(), want.len(), "partition {p}: stored twice or lost");
        assert!(got == want, "partition {p}: out of order or duplicated");
    }
    c.assert_no_unexpected_errors(&[]);
}
