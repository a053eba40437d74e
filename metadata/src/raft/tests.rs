//! Tests of the Raft store: openraft's storage conformance suite against the
//! sled and the in-memory store, then restart, snapshot and apply behaviour.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{blank_ent, log_id, membership_ent, StoreBuilder, Suite};
use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder, StorageHelper};

use super::*;
use crate::config::TopicConfig;
use crate::ids::{BrokerId, TopicId};
use crate::record::Record;

const CLUSTER: &str = "test-cluster";

/// Builds sled stores, each in a fresh temporary directory (the guard).
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore<SledKv>, StateMachine<SledKv>, tempfile::TempDir>
    for SledBuilder
{
    async fn build(
        &self,
    ) -> Result<
        (tempfile::TempDir, LogStore<SledKv>, StateMachine<SledKv>),
        openraft::StorageError<NodeId>,
    > {
        let io = |e: &dyn std::error::Error| {
            openraft::StorageError::from(openraft::StorageIOError::write(
                openraft::AnyError::error(e),
            ))
        };
        let dir = tempfile::tempdir().map_err(|e| io(&e))?;
        let (log_store, state_machine) = open_store(dir.path(), CLUSTER).map_err(|e| io(&e))?;
        Ok((dir, log_store, state_machine))
    }
}

/// Builds fresh in-memory stores.
struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore<MemKv>, StateMachine<MemKv>> for MemBuilder {
    async fn build(
        &self,
    ) -> Result<((), LogStore<MemKv>, StateMachine<MemKv>), openraft::StorageError<NodeId>> {
        let (log_store, state_machine) = open_mem_store(CLUSTER).map_err(|e| {
            openraft::StorageError::from(openraft::StorageIOError::write(openraft::AnyError::new(
                &e,
            )))
        })?;
        Ok(((), log_store, state_machine))
    }
}

#[test]
fn openraft_suite_passes_on_the_sled_store() {
    let start = Instant::now();
    Suite::test_all(SledBuilder).unwrap();
    eprintln!("openraft suite on sled: {:?}", start.elapsed());
}

#[test]
fn openraft_suite_passes_on_the_mem_store() {
    let start = Instant::now();
    Suite::test_all(MemBuilder).unwrap();
    eprintln!("openraft suite on mem: {:?}", start.elapsed());
}

// ---- helpers ----

/// Runs `f` to completion on a fresh current-thread runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn normal(term: u64, index: u64, records: Vec<Record>) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(MetadataCommand::new(records)),
    }
}

fn register(id: u64, broker_epoch: u64) -> Record {
    Record::RegisterBroker {
        id: BrokerId(id),
        address: format!("node{id}:9092"),
        rack: None,
        broker_epoch,
        directory_id: None,
        catching_up: false,
        kafka_address: None,
    }
}

fn fence(id: u64, broker_epoch: u64) -> Record {
    Record::FenceBroker {
        id: BrokerId(id),
        broker_epoch,
    }
}

fn create_topic(name: &str, id: u128, replicas: &[u64]) -> Record {
    Record::CreateTopic {
        topic_id: TopicId::from_u128(id),
        name: name.to_owned(),
        config: TopicConfig::default(),
        assignments: vec![replicas.iter().copied().map(BrokerId).collect()],
    }
}

fn voters(ids: &[u64]) -> Vec<BTreeSet<NodeId>> {
    vec![ids.iter().copied().collect()]
}

fn snapshot_bytes(snapshot: &Snapshot) -> Vec<u8> {
    snapshot.snapshot.get_ref().clone()
}

/// The log of the restart test: membership, three commands, a blank.
fn restart_log() -> Vec<Entry> {
    vec![
        membership_ent::<TypeConfig>(1, 1, 1, voters(&[1, 2, 3])),
        normal(1, 2, vec![register(1, 1), register(2, 2)]),
        normal(1, 3, vec![create_topic("orders", 7, &[1, 2])]),
        normal(2, 4, vec![fence(2, 2)]),
        blank_ent::<TypeConfig>(2, 1, 5),
    ]
}

/// Writes a vote, appends [`restart_log`], applies it, snapshots at index 4,
/// purges up to 3, records index 5 committed, drops the stores, reopens
/// with `reopen` and checks that everything comes back.
async fn check_restart<K: KvStore>(
    (mut log_store, mut sm): (LogStore<K>, StateMachine<K>),
    reopen: impl FnOnce() -> (LogStore<K>, StateMachine<K>),
) {
    let vote = Vote::new(2, 1);
    log_store.save_vote(&vote).await.unwrap();
    log_store.blocking_append(restart_log()).await.unwrap();

    let log = restart_log();
    sm.apply(log[..4].to_vec()).await.unwrap();
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(2, 1, 4)));
    let image_at_snapshot = sm.image();
    sm.apply(log[4..].to_vec()).await.unwrap();
    let image_before_crash = sm.image();
    log_store.purge(log_id(1, 1, 3)).await.unwrap();
    log_store
        .save_committed(Some(log_id(2, 1, 5)))
        .await
        .unwrap();
    drop((log_store, sm));

    let (mut log_store, mut sm) = reopen();
    assert_eq!(log_store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(
        log_store.read_committed().await.unwrap(),
        Some(log_id(2, 1, 5))
    );
    let state = log_store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 5)));
    let entries = log_store.try_get_log_entries(0..).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.log_id).collect::<Vec<_>>(),
        vec![log_id(2, 1, 4), log_id(2, 1, 5)]
    );
    assert_eq!(entries[0].payload, restart_log()[3].payload);

    // The state machine comes back as of its snapshot...
    let (last_applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(2, 1, 4)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1, 1)));
    assert_eq!(sm.image(), image_at_snapshot);
    assert_eq!(*sm.subscribe().borrow(), image_at_snapshot);
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(snapshot_bytes(&current), snapshot_bytes(&snapshot));

    // ...and openraft re-applies the committed rest of the log.
    let initial = StorageHelper::new(&mut log_store, &mut sm)
        .get_initial_state()
        .await
        .unwrap();
    assert_eq!(initial.vote_ref(), &vote);
    assert_eq!(sm.last_applied(), Some(log_id(2, 1, 5)));
    assert_eq!(sm.image(), image_before_crash);
}

#[test]
fn a_restarted_sled_store_gets_back_vote_log_applied_state_image_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    block_on(check_restart(
        open_store(dir.path(), CLUSTER).unwrap(),
        || open_store(dir.path(), CLUSTER).unwrap(),
    ));
}

#[test]
fn a_restarted_mem_store_gets_back_vote_log_applied_state_image_and_snapshot() {
    let kv = Arc::new(MemKv::new());
    block_on(check_restart(
        open_with(Arc::clone(&kv), CLUSTER).unwrap(),
        || open_with(kv, CLUSTER).unwrap(),
    ));
}

#[test]
fn reopening_a_store_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (_, mut sm) = open_store(dir.path(), CLUSTER).unwrap();
        sm.apply([normal(1, 1, vec![register(1, 1)])])
            .await
            .unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    });
    let err = open_store(dir.path(), "other-cluster").unwrap_err();
    assert!(
        matches!(&err, StoreError::ClusterIdMismatch { expected, found }
            if expected == "other-cluster" && found == CLUSTER),
        "{err}"
    );
}

#[test]
fn apply_runs_the_records_of_a_command_in_order_with_one_response_per_entry() {
    block_on(async {
        let (_, mut sm) = open_mem_store(CLUSTER).unwrap();
        let responses = sm
            .apply([
                membership_ent::<TypeConfig>(1, 1, 1, voters(&[1])),
                // Fencing broker 1 works only after it registered: order matters.
                normal(
                    1,
                    2,
                    vec![register(1, 1), register(2, 2), fence(1, 1), fence(3, 9)],
                ),
                blank_ent::<TypeConfig>(1, 1, 3),
                normal(1, 4, vec![]),
                normal(1, 5, vec![create_topic("orders", 7, &[2])]),
            ])
            .await
            .unwrap();
        assert_eq!(responses.len(), 5);
        assert_eq!(
            responses[0],
            MetadataResponse {
                metadata_offset: 0,
                outcomes: vec![]
            }
        );
        assert_eq!(responses[1].metadata_offset, 4);
        assert_eq!(
            &responses[1].outcomes[..3],
            &vec![RecordOutcome::Applied; 3][..]
        );
        assert!(
            matches!(&responses[1].outcomes[3], RecordOutcome::Skipped { reason } if reason.contains("not registered")),
            "{:?}",
            responses[1]
        );
        assert!(!responses[1].all_applied());
        assert_eq!(
            responses[2],
            MetadataResponse {
                metadata_offset: 4,
                outcomes: vec![]
            }
        );
        assert_eq!(
            responses[3],
            MetadataResponse {
                metadata_offset: 4,
                outcomes: vec![]
            }
        );
        assert_eq!(responses[4].metadata_offset, 5);
        assert!(responses[4].all_applied());

        let image = sm.image();
        assert_eq!(image.metadata_offset(), 5);
        assert!(image.broker(BrokerId(1)).unwrap().fenced);
        assert!(!image.broker(BrokerId(2)).unwrap().fenced);
        assert_eq!(
            image.partition("orders", 0).unwrap().leader,
            Some(BrokerId(2))
        );
        assert_eq!(image.invariant_violations(), Vec::<String>::new());
        assert_eq!(sm.last_applied(), Some(log_id(1, 1, 5)));
        assert_eq!(sm.last_membership().log_id(), &Some(log_id(1, 1, 1)));
    });
}

#[test]
fn subscribers_see_each_new_image() {
    block_on(async {
        let (_, mut sm) = open_mem_store(CLUSTER).unwrap();
        let mut rx = sm.subscribe();
        assert_eq!(rx.borrow_and_update().metadata_offset(), 0);
        assert_eq!(rx.borrow().cluster_id(), CLUSTER);

        // Entries that do not touch the image publish nothing.
        sm.apply([blank_ent::<TypeConfig>(1, 1, 1)]).await.unwrap();
        assert!(!rx.has_changed().unwrap());

        sm.apply([normal(1, 2, vec![register(1, 1)])])
            .await
            .unwrap();
        assert!(rx.has_changed().unwrap());
        let image = rx.borrow_and_update().clone();
        assert_eq!(image.metadata_offset(), 1);
        assert!(image.broker(BrokerId(1)).is_some());
        assert!(Arc::ptr_eq(&image, &sm.image()));

        // A receiver taken later starts from the current image.
        let late = sm.subscribe();
        sm.apply([normal(1, 3, vec![register(2, 2)])])
            .await
            .unwrap();
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().metadata_offset(), 2);
        assert_eq!(late.borrow().metadata_offset(), 2);
        // The image the first subscriber held is unchanged (copy on write).
        assert_eq!(image.metadata_offset(), 1);
    });
}

#[test]
fn install_snapshot_replaces_the_state_and_apply_continues_from_it() {
    block_on(async {
        // A leader with some history builds a snapshot.
        let (_, mut leader) = open_mem_store(CLUSTER).unwrap();
        leader
            .apply([
                membership_ent::<TypeConfig>(1, 1, 1, voters(&[1, 2])),
                normal(1, 2, vec![register(1, 1), register(2, 2)]),
                normal(1, 3, vec![create_topic("orders", 7, &[1, 2])]),
            ])
            .await
            .unwrap();
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        // A follower with a different, older history installs it.
        let (_, mut follower) = open_mem_store(CLUSTER).unwrap();
        follower
            .apply([normal(1, 1, vec![register(9, 1)])])
            .await
            .unwrap();
        let mut rx = follower.subscribe();
        let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
        *receiving = *snapshot.snapshot;
        follower
            .install_snapshot(&snapshot.meta, receiving)
            .await
            .unwrap();

        assert_eq!(follower.image(), leader.image());
        assert!(follower.image().broker(BrokerId(9)).is_none());
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().metadata_offset(), 3);
        assert_eq!(
            follower.applied_state().await.unwrap(),
            leader.applied_state().await.unwrap()
        );
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);

        // Applying goes on from the snapshot, the same way on both.
        let next = normal(2, 4, vec![fence(2, 2)]);
        let on_follower = follower.apply([next.clone()]).await.unwrap();
        let on_leader = leader.apply([next]).await.unwrap();
        assert_eq!(on_follower, on_leader);
        assert_eq!(on_follower[0].metadata_offset, 4);
        assert!(on_follower[0].all_applied());
        assert_eq!(follower.image(), leader.image());
        assert_eq!(follower.last_applied(), Some(log_id(2, 1, 4)));
        assert_eq!(rx.borrow().metadata_offset(), 4);
    });
}

#[test]
fn a_snapshot_of_another_cluster_or_with_mismatched_meta_is_refused() {
    block_on(async {
        let (_, mut other) = open_mem_store("other-cluster").unwrap();
        other
            .apply([normal(1, 1, vec![register(1, 1)])])
            .await
            .unwrap();
        let foreign = other
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let (_, mut sm) = open_mem_store(CLUSTER).unwrap();
        let err = sm
            .install_snapshot(&foreign.meta, foreign.snapshot)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("other-cluster"), "{err}");

        let (_, mut mine) = open_mem_store(CLUSTER).unwrap();
        mine.apply([normal(1, 1, vec![register(1, 1)])])
            .await
            .unwrap();
        let snapshot = mine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let mut meta = snapshot.meta.clone();
        meta.last_log_id = Some(log_id(1, 1, 2));
        let err = sm
            .install_snapshot(&meta, snapshot.snapshot)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("meta says"), "{err}");

        let garbage = Box::new(std::io::Cursor::new(b"not json".to_vec()));
        assert!(sm.install_snapshot(&meta, garbage).await.is_err());

        // Nothing of it stuck.
        assert_eq!(sm.last_applied(), None);
        assert_eq!(sm.image().metadata_offset(), 0);
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
    });
}

#[test]
fn an_older_snapshot_built_late_does_not_replace_a_newer_stored_one() {
    block_on(async {
        let (_, mut sm) = open_mem_store(CLUSTER).unwrap();
        sm.apply([normal(1, 1, vec![register(1, 1)])])
            .await
            .unwrap();
        let mut old_builder = sm.get_snapshot_builder().await;
        sm.apply([normal(1, 2, vec![register(2, 2)])])
            .await
            .unwrap();
        let newer = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let old = old_builder.build_snapshot().await.unwrap();
        assert_eq!(old.meta.last_log_id, Some(log_id(1, 1, 1)));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, newer.meta);
        assert_eq!(current.meta.snapshot_id, "1-1-2");
    });
}

#[test]
fn a_failed_append_is_an_error_and_stores_nothing() {
    block_on(async {
        let kv = Arc::new(MemKv::new());
        let (mut log_store, _) = open_with(Arc::clone(&kv), CLUSTER).unwrap();
        let flushes = kv.flush_count();
        log_store
            .blocking_append([blank_ent::<TypeConfig>(1, 1, 1)])
            .await
            .unwrap();
        assert!(kv.flush_count() > flushes, "append must flush");

        kv.fail_writes(true);
        let err = log_store
            .blocking_append([blank_ent::<TypeConfig>(1, 1, 2)])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        assert!(log_store.save_vote(&Vote::new(1, 1)).await.is_err());
        kv.fail_writes(false);

        let state = log_store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 1)));
        assert_eq!(log_store.read_vote().await.unwrap(), None);
    });
}

#[test]
fn corrupt_log_content_is_an_error_not_a_panic() {
    block_on(async {
        let kv = Arc::new(MemKv::new());
        let (mut log_store, _) = open_with(Arc::clone(&kv), CLUSTER).unwrap();
        log_store
            .blocking_append([blank_ent::<TypeConfig>(1, 1, 1)])
            .await
            .unwrap();

        // An entry stored under the wrong index.
        let entry = kv.get(Keyspace::Log, &1u64.to_be_bytes()).unwrap().unwrap();
        kv.insert(Keyspace::Log, &2u64.to_be_bytes(), &entry)
            .unwrap();
        let err = log_store.try_get_log_entries(0..).await.unwrap_err();
        assert!(err.to_string().contains("under index 2"), "{err}");
        assert!(log_store.get_log_state().await.is_err());

        // Garbage.
        kv.insert(Keyspace::Log, &2u64.to_be_bytes(), b"{").unwrap();
        assert!(log_store.try_get_log_entries(2..3).await.is_err());
        // A key that is not an index.
        kv.remove(Keyspace::Log, &2u64.to_be_bytes()).unwrap();
        kv.insert(Keyspace::Log, b"bad", b"{}").unwrap();
        let err = log_store.try_get_log_entries(..).await.unwrap_err();
        assert!(err.to_string().contains("not an 8-byte index"), "{err}");

        // A corrupt vote.
        kv.insert(Keyspace::Meta, b"vote", b"[1,2").unwrap();
        assert!(log_store.read_vote().await.is_err());
        // A corrupt snapshot makes opening fail.
        kv.insert(Keyspace::Snapshot, b"meta", b"??").unwrap();
        assert!(matches!(
            open_with(kv, CLUSTER).unwrap_err(),
            StoreError::Decode {
                what: "snapshot meta",
                ..
            }
        ));
    });
}

#[test]
fn opening_finishes_an_interrupted_purge() {
    block_on(async {
        let kv = Arc::new(MemKv::new());
        let (mut log_store, _) = open_with(Arc::clone(&kv), CLUSTER).unwrap();
        log_store
            .blocking_append((1..=5).map(|i| blank_ent::<TypeConfig>(1, 1, i)))
            .await
            .unwrap();
        // As if a crash struck between recording the purge and deleting.
        let purged = serde_json::to_vec(&log_id(1, 1, 3)).unwrap();
        kv.insert(Keyspace::Meta, b"last_purged_log_id", &purged)
            .unwrap();
        drop(log_store);

        let (mut log_store, _) = open_with(Arc::clone(&kv), CLUSTER).unwrap();
        let indexes: Vec<u64> = log_store
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(indexes, vec![4, 5]);
        assert_eq!(
            kv.scan(Keyspace::Log, (Bound::Unbounded, Bound::Unbounded))
                .unwrap()
                .len(),
            2
        );
    });
}

#[test]
fn purging_past_the_end_keeps_the_last_log_id() {
    block_on(async {
        let (mut log_store, _) = open_mem_store(CLUSTER).unwrap();
        log_store
            .blocking_append((1..=3).map(|i| blank_ent::<TypeConfig>(1, 1, i)))
            .await
            .unwrap();
        // After installing a snapshot openraft purges up to it, maybe past
        // the end of the local log.
        log_store.purge(log_id(2, 1, 10)).await.unwrap();
        let state = log_store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 10)));
        assert_eq!(state.last_log_id, Some(log_id(2, 1, 10)));
        assert!(log_store.try_get_log_entries(..).await.unwrap().is_empty());
        // An older purge is a no-op.
        log_store.purge(log_id(1, 1, 2)).await.unwrap();
        assert_eq!(
            log_store.get_log_state().await.unwrap().last_purged_log_id,
            Some(log_id(2, 1, 10))
        );
    });
}
