//! The quorum on its own: voter parsing, and the metadata store's disk use
//! under sustained writes. The in-process cluster tests of controller
//! nodes with their brokers' registrations live with the composition root
//! (`cli/src/node/quorum_tests.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::ids::BrokerId;

#[test]
fn voters_parse_with_clear_errors() {
    let v = parse_voters("1@127.0.0.1:9092, 2@host:9093").unwrap();
    assert_eq!(v[&2], "host:9093");
    for bad in ["", "1", "x@h:1", "1@host", "1@h:1,1@h:2", "1@:"] {
        assert!(parse_voters(bad).is_err(), "{bad:?} accepted");
    }
    let a = default_cluster_id(&v);
    assert_eq!(a, default_cluster_id(&v.clone()));
    assert!(a.starts_with("rivulet-"));
}

/// Disk use of a directory tree, in bytes.
fn du(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(path).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}

/// Sustained metadata writes through a single-voter quorum on sled: the log
/// is snapshotted and purged as it goes, so the store's disk use stays
/// bounded. 20,000 writes by default (CI time); the 100,000-write figure in
/// the README comes from `RIVULET_METADATA_WRITES=100000 cargo test --release
/// -p rivulet-metadata metadata_store_disk -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_store_disk_use_stays_bounded_under_sustained_writes() {
    use crate::record::Record;
    let root = tempfile::tempdir().unwrap();
    let voters: BTreeMap<NodeId, String> = [(1, "127.0.0.1:1".to_owned())].into();
    let q = Quorum::start(QuorumConfig {
        node_id: 1,
        advertise: "127.0.0.1:1".into(),
        cluster_id: default_cluster_id(&voters),
        voters,
        data_dir: root.path().to_owned(),
        timing: QuorumTiming::default(),
        edge: Default::default(),
        cluster_secret: None,
        tls: None,
        security: Default::default(),
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !q.is_leader() {
        assert!(Instant::now() < deadline, "no single-voter leader in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let writes: u64 = std::env::var("RIVULET_METADATA_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    const WRITERS: u64 = 64;
    let started = Instant::now();
    let mut peak = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let q = Arc::clone(&q);
        tasks.spawn(async move {
            for i in 0..writes / WRITERS {
                // A broker re-registering: a typical small metadata record.
                let record = Record::RegisterBroker {
                    id: BrokerId(w),
                    address: format!("127.0.0.1:{}", 10_000 + i),
                    rack: None,
                    broker_epoch: w * 1_000_000 + i + 1,
                    directory_id: None,
                    catching_up: false,
                    kafka_address: None,
                };
                q.raft()
                    .client_write(crate::raft::MetadataCommand::new(vec![record]))
                    .await
                    .unwrap();
            }
        });
    }
    let dir = root.path().join("metadata");
    while !tasks.is_empty() {
        tokio::select! {
            r = tasks.join_next() => { r.unwrap().unwrap(); }
            _ = tokio::time::sleep(Duration::from_millis(500)) => { peak = peak.max(du(&dir)); }
        }
    }
    let elapsed = started.elapsed();
    let end = du(&dir);
    peak = peak.max(end);
    let m = q.raft().metrics().borrow().clone();
    eprintln!(
        "{writes} metadata writes in {elapsed:?} ({:.0}/s); metadata store on disk: {:.1} MiB at the end, {:.1} MiB at peak; snapshot at {:?}, purged to {:?}",
        writes as f64 / elapsed.as_secs_f64(),
        end as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
        m.snapshot.map(|s| s.index),
        m.purged.map(|p| p.index),
    );
    assert!(
        m.purged.is_some_and(|p| p.index + 20_000 > writes),
        "the log is purged behind snapshots"
    );
    assert!(peak < 128 << 20, "metadata store grew to {peak} bytes");
    q.shutdown().await;
}
