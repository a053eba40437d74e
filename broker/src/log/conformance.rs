//! The [`PartitionLog`] contract, as tests run against every implementation.
//!
//! Each test takes a factory that makes an empty log with the given config, so
//! the same assertions hold for [`FileLog`] and [`MemoryLog`]. Small segments
//! make the file log roll often, so segment boundaries are crossed.

use bytes::Bytes;

use super::batch::{self, build_batch, decode_records, RecordInput};
use super::*;

pub(crate) type Factory<'a> = &'a dyn Fn(LogConfig) -> Box<dyn PartitionLog>;

pub(crate) fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_ms: None,
        index_interval_bytes: 256,
        max_batch_bytes: 64 * 1024,
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    }
}

pub(crate) fn records(prefix: &str, n: usize, ts: i64) -> Vec<RecordInput> {
    (0..n)
        .map(|i| RecordInput {
            key: Some(Bytes::from(format!("{prefix}-k{i}"))),
            value: Some(Bytes::from(format!("{prefix}-v{i}"))),
            headers: Vec::new(),
            timestamp_ms: ts + i as i64,
        })
        .collect()
}

pub(crate) fn append(
    log: &dyn PartitionLog,
    prefix: &str,
    n: usize,
    ts: i64,
    epoch: u32,
) -> AppendInfo {
    let mut b = build_batch(&records(prefix, n, ts)).unwrap().to_vec();
    log.append(&mut b, AppendOrigin::Leader { epoch }).unwrap()
}

/// Every value from `offset` to the bound, following reads batch by batch.
pub(crate) fn read_all(log: &dyn PartitionLog, from: u64, bound: ReadBound) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let bytes = log.read(next, 1000, bound).unwrap();
        if bytes.is_empty() {
            return out;
        }
        for r in decode_records(&bytes).unwrap() {
            if r.offset >= next {
                out.push((
                    r.offset,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
        }
        next = out.last().map_or(next, |(o, _)| o + 1);
    }
}

fn appends_get_dense_offsets(make: Factory) {
    let log = make(small_config());
    let mut expected = 0;
    for i in 0..50 {
        let n = 1 + i % 7;
        let info = append(&*log, &format!("b{i}"), n, 1000 + i as i64, 1);
        assert_eq!(info.base_offset, expected);
        assert_eq!(info.last_offset, expected + n as u64 - 1);
        expected += n as u64;
    }
    let o = log.offsets();
    assert_eq!(o.log_start_offset, 0);
    assert_eq!(o.log_end_offset, expected);
    assert_eq!(o.high_watermark, 0);
    let all = read_all(&*log, 0, ReadBound::LogEnd);
    assert_eq!(all.len() as u64, expected);
    for (i, (off, _)) in all.iter().enumerate() {
        assert_eq!(*off, i as u64);
    }
    assert_eq!(all[0].1, "b0-v0");
    // Starting mid-batch returns the whole batch holding the offset.
    let bytes = log.read(2, 1, ReadBound::LogEnd).unwrap();
    let first = batch::headers(&bytes).next().unwrap().1;
    assert!(first.base_offset <= 2 && first.last_offset() >= 2);
}

fn reads_respect_bounds(make: Factory) {
    let log = make(small_config());
    for i in 0..10 {
        append(&*log, &format!("b{i}"), 3, 0, 1);
    }
    assert!(log
        .read(0, 1 << 20, ReadBound::HighWatermark)
        .unwrap()
        .is_empty());
    log.set_high_watermark(9);
    let committed = read_all(&*log, 0, ReadBound::HighWatermark);
    assert_eq!(committed.len(), 9, "only batches wholly below the HW");
    assert!(log
        .read(9, 1 << 20, ReadBound::HighWatermark)
        .unwrap()
        .is_empty());
    assert!(log.read(30, 1 << 20, ReadBound::LogEnd).unwrap().is_empty());
    // max_bytes smaller than a batch still returns one whole batch.
    let one = log.read(0, 1, ReadBound::LogEnd).unwrap();
    assert_eq!(batch::headers(&one).count(), 1);
    // The HW is clamped to the log end.
    log.set_high_watermark(1000);
    assert_eq!(log.offsets().high_watermark, 30);
}

fn out_of_range_names_the_valid_range(make: Factory) {
    let log = make(small_config());
    append(&*log, "a", 5, 0, 1);
    match log.read(6, 100, ReadBound::LogEnd) {
        Err(LogError::OffsetOutOfRange {
            offset: 6,
            log_start_offset: 0,
            log_end_offset: 5,
        }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    log.truncate_fully_and_start_at(100).unwrap();
    assert!(matches!(
        log.read(50, 100, ReadBound::LogEnd),
        Err(LogError::OffsetOutOfRange {
            log_start_offset: 100,
            ..
        })
    ));
}

fn timestamps_find_the_first_record_at_or_after(make: Factory) {
    let log = make(small_config());
    for i in 0..40 {
        // Each batch: 4 records with timestamps 100*i .. 100*i+3.
        append(&*log, &format!("b{i}"), 4, 100 * i, 1);
    }
    let at = |ts| log.offset_for_timestamp(ts).unwrap().map(|(o, _)| o);
    assert_eq!(at(0), Some(0));
    assert_eq!(at(2), Some(2));
    assert_eq!(at(50), Some(4));
    assert_eq!(at(3901), Some(157));
    // With the found record's timestamp, not the one asked.
    assert_eq!(log.offset_for_timestamp(50).unwrap(), Some((4, 100)));
    assert_eq!(log.offset_for_timestamp(3901).unwrap(), Some((157, 3901)));
    assert_eq!(log.offset_for_timestamp(10_000).unwrap(), None);
}

fn truncation(make: Factory) {
    let log = make(small_config());
    for i in 0..30 {
        append(&*log, &format!("b{i}"), 2, 0, 1 + i / 10);
    }
    log.set_high_watermark(60);
    assert_eq!(log.latest_epoch(), Some(3));
    // Mid-batch: the whole batch holding 41 goes.
    log.truncate_to(41).unwrap();
    let o = log.offsets();
    assert_eq!(o.log_end_offset, 40);
    assert_eq!(o.high_watermark, 40);
    assert_eq!(log.latest_epoch(), Some(2));
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 40)));
    assert_eq!(read_all(&*log, 0, ReadBound::LogEnd).len(), 40);
    // Appending after truncation continues densely.
    assert_eq!(append(&*log, "after", 1, 0, 4).base_offset, 40);
    // Truncating at or past the end is a no-op.
    log.truncate_to(1000).unwrap();
    assert_eq!(log.offsets().log_end_offset, 41);
    // To zero empties the log.
    log.truncate_to(0).unwrap();
    assert_eq!(log.offsets().log_end_offset, 0);
    assert_eq!(log.latest_epoch(), None);
    assert!(log.read(0, 100, ReadBound::LogEnd).unwrap().is_empty());
}

fn truncation_below_start_is_refused(make: Factory) {
    let log = make(small_config());
    log.truncate_fully_and_start_at(10).unwrap();
    append(&*log, "a", 5, 0, 1);
    assert!(matches!(
        log.truncate_to(3),
        Err(LogError::TruncateBelowStart {
            offset: 3,
            log_start_offset: 10
        })
    ));
    assert_eq!(log.offsets().log_end_offset, 15);
}

fn epoch_cache_tracks_leader_epochs(make: Factory) {
    let log = make(small_config());
    append(&*log, "a", 5, 0, 1);
    append(&*log, "b", 5, 0, 1);
    append(&*log, "c", 5, 0, 4);
    append(&*log, "d", 5, 0, 6);
    assert_eq!(log.end_offset_for_epoch(0), None);
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 10)));
    assert_eq!(log.end_offset_for_epoch(3), Some((1, 10)));
    assert_eq!(log.end_offset_for_epoch(4), Some((4, 15)));
    assert_eq!(log.end_offset_for_epoch(6), Some((6, 20)));
    assert_eq!(log.end_offset_for_epoch(9), Some((6, 20)));
    // A leader in an older epoch is refused and the log is untouched.
    let mut b = build_batch(&records("old", 1, 0)).unwrap().to_vec();
    assert!(matches!(
        log.append(&mut b, AppendOrigin::Leader { epoch: 5 }),
        Err(LogError::StaleLeaderEpoch {
            epoch: 5,
            latest: 6
        })
    ));
    assert_eq!(log.offsets().log_end_offset, 20);
}

fn a_new_leader_epoch_starts_at_the_log_end_before_any_append(make: Factory) {
    let log = make(small_config());
    append(&*log, "a", 5, 0, 1);
    log.assign_epoch(3).unwrap();
    assert_eq!(log.latest_epoch(), Some(3));
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 5)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 5)));
    // Older or equal epochs change nothing; appends in the epoch continue it.
    log.assign_epoch(2).unwrap();
    log.assign_epoch(3).unwrap();
    append(&*log, "b", 2, 0, 3);
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 7)));
    assert_eq!(log.end_offset_for_epoch(2), Some((1, 5)));
    // A leader in an older epoch is now refused.
    let mut b = build_batch(&records("old", 1, 0)).unwrap().to_vec();
    assert!(log
        .append(&mut b, AppendOrigin::Leader { epoch: 1 })
        .is_err());
}

fn truncating_at_the_end_drops_an_epoch_that_wrote_nothing(make: Factory) {
    // A leader assigned epoch 4 and lost leadership before any append; as a
    // follower it must not claim epoch 4 in its divergence checks.
    let log = make(small_config());
    append(&*log, "a", 5, 0, 1);
    log.assign_epoch(4).unwrap();
    assert_eq!(log.latest_epoch(), Some(4));
    log.truncate_to(5).unwrap();
    assert_eq!(log.latest_epoch(), Some(1));
    assert_eq!(log.offsets().log_end_offset, 5);
    assert_eq!(read_all(&*log, 0, ReadBound::LogEnd).len(), 5);
}

fn replicas_copy_leader_batches(make: Factory) {
    let leader = make(small_config());
    let follower = make(small_config());
    for i in 0..20 {
        append(&*leader, &format!("b{i}"), 3, i, 1 + i as u32 / 7);
    }
    // Copy in chunks, as a fetcher would.
    loop {
        let leo = follower.offsets().log_end_offset;
        let mut chunk = leader.read(leo, 500, ReadBound::LogEnd).unwrap().to_vec();
        if chunk.is_empty() {
            break;
        }
        follower.append(&mut chunk, AppendOrigin::Replica).unwrap();
    }
    assert_eq!(
        read_all(&*leader, 0, ReadBound::LogEnd),
        read_all(&*follower, 0, ReadBound::LogEnd)
    );
    assert_eq!(follower.latest_epoch(), leader.latest_epoch());
    assert_eq!(
        follower.end_offset_for_epoch(1),
        leader.end_offset_for_epoch(1)
    );
    // A batch that skips ahead is refused.
    let mut gap = leader.read(0, 1, ReadBound::LogEnd).unwrap().to_vec();
    batch::stamp(&mut gap, 1000, 9);
    assert!(matches!(
        follower.append(&mut gap, AppendOrigin::Replica),
        Err(LogError::NonContiguousAppend {
            expected: 60,
            got: 1000
        })
    ));
}

/// One idempotent producer's batch of `n` records from `seq`.
pub(crate) fn producer_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    rivulet_common::batch::build_producer_batch(
        &records(&format!("p{pid}-e{epoch}-s{seq}"), n, 1_000),
        batch::Compression::None,
        Some(rivulet_common::batch::ProducerStamp {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        }),
    )
    .unwrap()
    .to_vec()
}

fn idempotent_batches_are_written_once(make: Factory) {
    let log = make(small_config());
    let leader = AppendOrigin::Leader { epoch: 1 };
    let first = log.append(&mut producer_batch(9, 0, 0, 4), leader).unwrap();
    let second = log.append(&mut producer_batch(9, 0, 4, 2), leader).unwrap();
    assert_eq!((first.base_offset, second.base_offset), (0, 4));
    assert!(!first.duplicate && !second.duplicate);
    // Resent: the original offsets, nothing written.
    let again = log.append(&mut producer_batch(9, 0, 0, 4), leader).unwrap();
    assert!(again.duplicate);
    assert_eq!((again.base_offset, again.last_offset), (0, 3));
    assert_eq!(log.offsets().log_end_offset, 6);
    // A gap, a fenced epoch and a new epoch not at 0 are refused; nothing
    // is written.
    for (b, code) in [
        (producer_batch(9, 0, 7, 1), "out of order"),
        (producer_batch(9, 1, 3, 1), "out of order"),
    ] {
        let e = log.append(&mut b.clone(), leader).unwrap_err();
        assert!(e.to_string().contains(code), "{e}");
    }
    log.append(&mut producer_batch(9, 1, 0, 1), leader).unwrap();
    let e = log
        .append(&mut producer_batch(9, 0, 6, 1), leader)
        .unwrap_err();
    assert!(matches!(
        e,
        LogError::Producer(super::producers::ProducerError::InvalidEpoch { .. })
    ));
    assert_eq!(log.offsets().log_end_offset, 7);
    // A follower copying the log learns the same state: the duplicate is
    // recognised there too (a new leader after failover).
    let follower = make(small_config());
    let mut all = log.read(0, 1 << 20, ReadBound::LogEnd).unwrap().to_vec();
    follower.append(&mut all, AppendOrigin::Replica).unwrap();
    let dup = follower
        .append(
            &mut producer_batch(9, 1, 0, 1),
            AppendOrigin::Leader { epoch: 2 },
        )
        .unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.base_offset, 6);
    // Truncating the batch away forgets it: sent again, it is written.
    follower.truncate_to(6).unwrap();
    let rewritten = follower
        .append(
            &mut producer_batch(9, 1, 0, 1),
            AppendOrigin::Leader { epoch: 2 },
        )
        .unwrap();
    assert!(!rewritten.duplicate);
    // ...while the batches before the cut are still duplicates.
    assert!(
        follower
            .append(
                &mut producer_batch(9, 0, 4, 2),
                AppendOrigin::Leader { epoch: 2 }
            )
            .is_err(),
        "epoch 0 is fenced by epoch 1"
    );
    assert_eq!(follower.producer_stats().0, 1);
}

fn bad_input_is_refused_and_changes_nothing(make: Factory) {
    let mut config = small_config();
    config.max_batch_bytes = 2000;
    let log = make(config);
    append(&*log, "a", 2, 0, 1);
    let before = log.offsets();
    let leader = AppendOrigin::Leader { epoch: 1 };
    let mut garbage = vec![0x5au8; 200];
    assert!(matches!(
        log.append(&mut garbage, leader),
        Err(LogError::CorruptBatch { .. })
    ));
    let mut big = build_batch(&records(&"x".repeat(500), 10, 0))
        .unwrap()
        .to_vec();
    assert!(matches!(
        log.append(&mut big, leader),
        Err(LogError::BatchTooLarge { max: 2000, .. })
    ));
    let mut flipped = build_batch(&records("f", 2, 0)).unwrap().to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(log.append(&mut flipped, leader).is_err());
    let mut empty = Vec::new();
    assert!(log.append(&mut empty, leader).is_err());
    assert_eq!(log.offsets(), before);
    assert_eq!(read_all(&*log, 0, ReadBound::LogEnd).len(), 2);
}

fn retention_deletes_old_committed_data_only(make: Factory) {
    let log = make(small_config());
    for i in 0..100 {
        append(&*log, &format!("b{i}"), 5, 1_000 + i, 1);
    }
    let now = 1_000_000;
    // Nothing is committed yet: retention must not touch anything.
    let none = log
        .apply_retention(
            &RetentionPolicy {
                retention_ms: Some(1),
                retention_bytes: None,
            },
            now,
        )
        .unwrap();
    assert_eq!(none.segments_deleted, 0);
    log.set_high_watermark(250);
    let out = log
        .apply_retention(
            &RetentionPolicy {
                retention_ms: Some(1),
                retention_bytes: None,
            },
            now,
        )
        .unwrap();
    assert!(out.segments_deleted > 0);
    let o = log.offsets();
    assert_eq!(o.log_start_offset, out.log_start_offset);
    assert!(o.log_start_offset > 0 && o.log_start_offset <= 250);
    assert_eq!(o.log_end_offset, 500);
    assert!(matches!(
        log.read(0, 100, ReadBound::LogEnd),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let rest = read_all(&*log, o.log_start_offset, ReadBound::LogEnd);
    assert_eq!(rest.len() as u64, 500 - o.log_start_offset);
    // Size retention, everything committed: keeps at most the limit plus the active segment.
    log.set_high_watermark(500);
    log.apply_retention(
        &RetentionPolicy {
            retention_ms: None,
            retention_bytes: Some(1),
        },
        now,
    )
    .unwrap();
    let o2 = log.offsets();
    assert!(o2.log_start_offset > o.log_start_offset);
    assert_eq!(o2.log_end_offset, 500);
    // Young data is kept.
    log.apply_retention(
        &RetentionPolicy {
            retention_ms: Some(now),
            retention_bytes: None,
        },
        now,
    )
    .unwrap();
    assert_eq!(log.offsets(), o2);
}

fn the_log_start_moves_up_to_the_high_watermark_only(make: Factory) {
    let log = make(small_config());
    for i in 0..60 {
        append(&*log, &format!("b{i}"), 5, 1_000 + i, 1);
    }
    // Nothing committed: the start stays.
    assert_eq!(log.advance_log_start(100).unwrap(), 0);
    log.set_high_watermark(200);
    // Inside a batch: readers start there; the batch holding it stays.
    assert_eq!(log.advance_log_start(123).unwrap(), 123);
    let o = log.offsets();
    assert_eq!(
        (o.log_start_offset, o.high_watermark, o.log_end_offset),
        (123, 200, 300)
    );
    assert!(matches!(
        log.read(122, 100, ReadBound::LogEnd),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let rest = read_all(&*log, 123, ReadBound::LogEnd);
    assert_eq!(rest.first().map(|r| r.0), Some(123));
    assert_eq!(rest.len(), 300 - 123);
    // Never down, never past the high watermark.
    assert_eq!(log.advance_log_start(50).unwrap(), 123);
    assert_eq!(log.advance_log_start(10_000).unwrap(), 200);
    assert_eq!(log.offsets().log_start_offset, 200);
    // Appends carry on at the end.
    append(&*log, "after", 3, 5_000, 1);
    assert_eq!(log.offsets().log_end_offset, 303);
    // Everything committed, up to the end: the log is empty of readable
    // data but keeps its end.
    log.set_high_watermark(303);
    assert_eq!(log.advance_log_start(303).unwrap(), 303);
    let o = log.offsets();
    assert_eq!((o.log_start_offset, o.log_end_offset), (303, 303));
    assert!(log.read(303, 100, ReadBound::LogEnd).unwrap().is_empty());
}

macro_rules! conformance_suite {
    ($($name:ident),* $(,)?) => {
        mod suite {
            $(
                mod $name {
                    use super::super::*;
                    #[test]
                    fn file() {
                        let dir = tempfile::tempdir().unwrap();
                        let n = std::sync::atomic::AtomicUsize::new(0);
                        super::super::$name(&|c| {
                            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            Box::new(FileLog::open(dir.path().join(format!("t-{i}")), c).unwrap())
                        });
                    }
                    #[test]
                    fn memory() {
                        super::super::$name(&|c| Box::new(MemoryLog::new(c)));
                    }
                }
            )*
        }
    };
}

conformance_suite!(
    appends_get_dense_offsets,
    reads_respect_bounds,
    out_of_range_names_the_valid_range,
    timestamps_find_the_first_record_at_or_after,
    truncation,
    truncation_below_start_is_refused,
    epoch_cache_tracks_leader_epochs,
    a_new_leader_epoch_starts_at_the_log_end_before_any_append,
    truncating_at_the_end_drops_an_epoch_that_wrote_nothing,
    replicas_copy_leader_batches,
    idempotent_batches_are_written_once,
    bad_input_is_refused_and_changes_nothing,
    retention_deletes_old_committed_data_only,
    the_log_start_moves_up_to_the_high_watermark_only,
);
