//! Poison batches with real processes: a produced batch whose CRC is valid
//! but whose records cannot be read is refused per entry (CORRUPT_RECORD or
//! INVALID_RECORD, naming what is wrong) while the good entries of the same
//! request land; and a consumer that meets such a batch already in a log
//! (written before the leader validated records) delivers the records before
//! it, says where it is, and skips it only when told to.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use cluster_tests::{cli, Cluster, ProduceOutcome};
use rivulet_client::{encode_batch, ProducerRecord};
use rivulet_common::batch::{build_batch, Compression, RecordInput, HEADER_LEN};
use rivulet_proto::v1::produce_partition::Data;
use rivulet_proto::v1::{Acks, ErrorCode, ProducePartition, ProduceRequest};

const TEST_LIMIT: Duration = Duration::from_secs(180);
const SETTLE: Duration = Duration::from_secs(20);

async fn bounded(body: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("the test exceeded its {TEST_LIMIT:?} limit");
    }
}

fn good(values: &[&str]) -> Vec<u8> {
    let records: Vec<RecordInput> = values
        .iter()
        .map(|v| RecordInput {
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            timestamp_ms: 1,
            ..RecordInput::default()
        })
        .collect();
    build_batch(&records, Compression::None)
        .expect("test records encode")
        .to_vec()
}

fn recrc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// `template`'s header over `body`, with `codec` in the attributes and
/// `extra_bits` set, length and CRC fixed: what a buggy or hostile client
/// computes its CRC over.
fn forge(template: &[u8], codec: i16, extra_bits: i16, body: &[u8]) -> Vec<u8> {
    let mut b = template[..HEADER_LEN].to_vec();
    b.extend_from_slice(body);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let attrs = (i16::from_be_bytes([b[21], b[22]]) & !0x7) | codec | extra_bits;
    b[21..23].copy_from_slice(&attrs.to_be_bytes());
    recrc(&mut b);
    b
}

fn entry(topic: &str, batch: Vec<u8>) -> ProducePartition {
    ProducePartition {
        topic: topic.into(),
        partition: 0,
        data: Some(Data::RecordBatch(batch.into())),
        ..ProducePartition::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_batches_are_refused_per_entry_and_the_good_ones_land() {
    bounded(async {
        let c = Cluster::start(1).await;
        assert_eq!(c.create_topic_with(1, "poison", 1, 1, &[]).await, 0);
        c.wait_partition_leader("poison", 0, SETTLE).await;

        let plain = good(&["x", "y"]);
        let body = plain[HEADER_LEN..].to_vec();
        let compressed = |c: Compression, v: &str| {
            encode_batch(&[ProducerRecord::new("poison", v.to_owned())], c)
                .expect("encode")
                .to_vec()
        };
        let corrupt = ErrorCode::CorruptRecord as i32;
        let invalid = ErrorCode::InvalidRecord as i32;
        // (batch, expected code, a word the message must hold)
        let cases: Vec<(Vec<u8>, i32, &str)> = vec![
            (good(&["a"]), 0, ""),
            (forge(&plain, 1, 0, &body), corrupt, "gzip"),
            (forge(&plain, 2, 0, &body), corrupt, "snappy"),
            (forge(&plain, 3, 0, &body), corrupt, "lz4"),
            (forge(&plain, 4, 0, &body), corrupt, "zstd"),
            (
                forge(&plain, 4, 0, &[0x28, 0xb5, 0x2f, 0xfd, 9, 9, 9]),
                corrupt,
                "zstd",
            ),
            (forge(&plain, 0, 0, &[0xff; 40]), corrupt, "record"),
            (forge(&plain, 0, 0x10, &body), invalid, "transactional"),
            (forge(&plain, 0, 0x20, &body), invalid, "control"),
            (good(&["b"]), 0, ""),
            (compressed(Compression::Gzip, "gz"), 0, ""),
            (compressed(Compression::Snappy, "sn"), 0, ""),
            (compressed(Compression::Lz4, "lz"), 0, ""),
            (compressed(Compression::Zstd, "zs"), 0, ""),
        ];
        let req = ProduceRequest {
            acks: Acks::All.into(),
            timeout_ms: 10_000,
            partitions: cases
                .iter()
                .map(|(b, ..)| entry("poison", b.clone()))
                .collect(),
        };
        // A new partition takes writes once its leader applied the change:
        // until then its entries are refused, retriably, and nothing lands
        // (the poison ones may be refused for what they hold first: the
        // records are checked before the leadership).
        let retriable = [
            ErrorCode::NotLeaderOrFollower as i32,
            ErrorCode::LeaderNotAvailable as i32,
        ];
        let mut tries = 0;
        let resp = loop {
            let resp = c
                .broker_client(1, Duration::from_secs(15))
                .produce(req.clone())
                .await
                .expect("the request as a whole is answered")
                .into_inner();
            tries += 1;
            if tries < 50
                && resp
                    .partitions
                    .iter()
                    .any(|p| retriable.contains(&p.error_code))
                && !resp.partitions.iter().any(|p| p.appended)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            break resp;
        };
        assert_eq!(resp.partitions.len(), cases.len());
        for (i, ((_, code, word), got)) in cases.iter().zip(&resp.partitions).enumerate() {
            assert_eq!(
                got.error_code,
                *code,
                "entry {i}: {:?} {}",
                ErrorCode::try_from(got.error_code),
                got.error_message
            );
            assert!(
                got.error_message.contains(word),
                "entry {i}: {:?} lacks {word:?}",
                got.error_message
            );
            assert_eq!(got.appended, *code == 0, "entry {i}");
        }

        let (records, hw) = c.read_partition("poison", 0).await;
        let values: Vec<&[u8]> = records.iter().map(|r| &r.value[..]).collect();
        assert_eq!(
            values,
            vec![&b"a"[..], b"b", b"gz", b"sn", b"lz", b"zs"],
            "only the good entries, in request order"
        );
        assert_eq!(hw, 6, "offsets stay dense: no refused batch took any");
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..6).collect::<Vec<_>>());
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_report_a_stored_poison_batch_and_skip_it_only_when_told() {
    bounded(async {
        let mut c = Cluster::start(1).await;
        assert_eq!(c.create_topic_with(1, "old", 1, 1, &[]).await, 0);
        c.wait_partition_leader("old", 0, SETTLE).await;
        for v in ["a", "b"] {
            let r = c
                .produce("old", 0, &[v.as_bytes().to_vec()], Acks::All)
                .await;
            assert!(matches!(r, ProduceOutcome::Acked(_)), "{r:?}");
        }

        // A power loss, then the poison batch appended where a broker
        // without record validation would have written it: offsets 2..4, the
        // log's epoch, a valid CRC over records that do not parse.
        c.kill(1);
        let dir = c.data_dir(1).join("logs").join("old-0");
        let mut segments: Vec<_> = std::fs::read_dir(&dir)
            .expect("the replica directory")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        segments.sort();
        let active = segments.pop().expect("a segment");
        let log = std::fs::read(&active).expect("read the segment");
        let epoch = log[12..16].to_vec();
        let mut poison = forge(&good(&["p", "q"]), 0, 0, &[0xff; 30]);
        poison[0..8].copy_from_slice(&2i64.to_be_bytes());
        poison[12..16].copy_from_slice(&epoch);
        let mut log = log;
        log.extend_from_slice(&poison);
        std::fs::write(&active, &log).expect("write the segment");
        c.restart(1).await;
        c.wait_partition_leader("old", 0, SETTLE).await;
        for v in ["c", "d"] {
            let r = c
                .produce("old", 0, &[v.as_bytes().to_vec()], Acks::All)
                .await;
            assert_eq!(
                r,
                ProduceOutcome::Acked(if v == "c" { 4 } else { 5 }),
                "the recovered log kept the stored batch"
            );
        }

        let consume = |extra: &[&str]| {
            let mut args = vec![
                "consume",
                "old",
                "--from-beginning",
                "--timeout-ms",
                "3000",
                "--print-offset",
            ];
            args.extend_from_slice(extra);
            cli::rivulet(&c, &args)
        };
        let out = consume(&[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "stops at the batch: {stdout} {stderr}"
        );
        assert_eq!(
            stdout, "0:0\ta\n0:1\tb\n",
            "the records before it are delivered"
        );
        assert!(
            stderr.contains("old/0 at offsets 2..4") && stderr.contains("--skip-undecodable"),
            "names the batch and the way past it: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");

        let out = consume(&["--skip-undecodable"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(
            stdout, "0:0\ta\n0:1\tb\n0:4\tc\n0:5\td\n",
            "the records around it are delivered"
        );
        assert!(
            stderr.contains("skipping a record batch") && stderr.contains("offset=2"),
            "never silently: {stderr}"
        );
    })
    .await;
}
