//! The durability checker: a concurrent acks=all workload that records the
//! fate of every send, a consumer that watches the high watermark while
//! faults happen, and the check of each partition once the faults healed.
//!
//! ```text
//!   producers (K tokio tasks)         readers (one per partition)
//!   send -> Acked(o) / Failed / Unknown     ListOffsets(LATEST): HW + epoch
//!   resend the same batch (idempotent)      Fetch from its position: records
//!        |                                        |
//!        v                                        v
//!     Ledger (every send, by value)         ReaderLog (HW samples, what it consumed)
//!        \______________________________________/
//!                          |  after the faults healed
//!                          v
//!     check: full read of each partition -> CheckReport
//! ```
//!
//! The workload talks to the nodes itself (its own leader cache, following
//! `NOT_LEADER_OR_FOLLOWER` hints and refreshing metadata from any node), not
//! through [`Cluster`], so faults can be injected while it runs.
//!
//! - [`workload`]: the producers and their node client (leader cache,
//!   retries), and the seeded PRNG the chaos runner shares.
//! - [`ledger`]: every send and its fate, and the check of one partition's
//!   final log against it.
//! - [`reader`]: the per-partition readers that watch the HW during the
//!   faults, and the full read after them.
//! - [`report`]: what a check found.
//!
//! # Values
//!
//! Every message carries fresh values, unique in the run:
//! `p<partition>.w<producer>.m<message>.s<seq>.r<i>`. The producers are
//! idempotent (KIP-98: a producer id from InitProducerId, a sequence per
//! partition): a message is resent as the very same batch until it is
//! acknowledged (or the workload stops), so the leader must store it once
//! whatever happened to the earlier attempts' answers. A message is one
//! *send* in the ledger, whose outcome is the best its attempts learnt.
//!
//! # What the check holds a partition to
//!
//! Violations (each fails a run):
//! - **lost**: a record of an acknowledged send missing, or not at the offset
//!   it was acknowledged at.
//! - **offset gaps**: offsets not dense from 0, or the HW not the record count.
//! - **failed present**: a value of a send that was definitely refused.
//! - **foreign**: a value nobody sent.
//! - **same value twice**: one message's value at two offsets: the broker
//!   stored a resent batch twice (its idempotence failed) or duplicated
//!   one. This is what a duplicate is now, and it fails the run.
//! - **reordered**: a producer's acknowledged sends not in increasing offset
//!   order (it sends one at a time, so each ack's offset must exceed the last).
//! - **torn batch**: only part of a send's batch present, or not contiguous.
//! - **consumed then vanished**: the reader consumed a record (below the HW)
//!   that the final log does not hold at that offset.
//! - **HW backwards in an epoch**: one leader epoch answered a lower HW than
//!   it had answered before.
//! - **committed position out of range**: a fetch at a position the reader
//!   reached by consuming committed records answered `OFFSET_OUT_OF_RANGE`.
//!
//! Reported, not violations:
//! - **duplicates**: a message with more than one send present (only
//!   possible for a ledger fed sends of one message with different values,
//!   as a producer without idempotence does; the workload's producers are
//!   idempotent, so for them it stays 0 and a second copy is *same value
//!   twice*).
//! - **HW lag after failover**: a newer leader epoch answering a lower HW than
//!   an older epoch did. In Kafka's model (and Rivulet's) a new leader starts
//!   from its own HW, learned one fetch round behind the old leader's, and
//!   advances it once the ISR confirms; meanwhile a consumer's fetch at its
//!   position (above the new HW, at most the new leader's log end) returns no
//!   records, and nothing it consumed disappears. What the design promises —
//!   committed data never disappears for a consumer — is checked by
//!   *consumed then vanished* and *committed position out of range*; the lag
//!   is counted with its depth so a regression in its size shows.
//! - **unavailability**: per partition, the longest stretch in the workload
//!   with no acknowledged send (from the start, between acks, to the end);
//!   the report has the worst partition.

mod ledger;
mod reader;
mod report;
mod workload;

pub use ledger::{Ledger, SendOutcome, SendRecord};
use reader::read;
pub use reader::{read_all, ReaderLog};
pub use report::{CheckReport, PartitionReport};
use workload::LeaderCache;
pub use workload::{Nodes, SplitMix64, Workload, WorkloadConfig, WorkloadResult};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rivulet_common::batch::decode_records;
use rivulet_proto::tls::ClientTls;
use rivulet_proto::v1::broker_client::BrokerClient;
use rivulet_proto::v1::list_offsets_partition::Spec;
use rivulet_proto::v1::{
    Acks, ErrorCode, FetchPartition, FetchRequest, ListOffsetsPartition, ListOffsetsRequest,
    MetadataRequest, OffsetSpec, PartitionInfo,
};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::cluster::Cluster;
use crate::data::{classify_produce, idempotent_produce_request, ProduceOutcome, ReadRecord};

/// acks=all timeout the producers ask for.
const PRODUCE_TIMEOUT_MS: u32 = 2_000;
/// Client-side deadline of one produce RPC (a paused node never answers).
const PRODUCE_RPC_TIMEOUT: Duration = Duration::from_millis(3_000);
/// Client-side deadline of a metadata, list-offsets or short fetch RPC.
const SHORT_RPC_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long a reader's fetch long-polls.
const READER_MAX_WAIT_MS: u32 = 100;
/// Pause after a failed or unknown send before the retry.
const RETRY_BACKOFF: Duration = Duration::from_millis(30);
/// Pause of a reader after an error.
const READER_BACKOFF: Duration = Duration::from_millis(50);
/// Examples of violations kept in a report.
const MAX_EXAMPLES: usize = 8;

/// Checks a run once its faults healed: reads every partition of the topic
/// in full and holds it to `ledger` (which must hold every send ever made
/// to the topic, this run's included) and to what this run's readers
/// consumed. Counts (sends, acked, ...) and unavailability are this run's.
pub async fn check(
    nodes: &Nodes,
    topic: &str,
    partitions: u32,
    ledger: &Ledger,
    run: &WorkloadResult,
) -> CheckReport {
    let mut report = CheckReport {
        sends: run.sends.len() as u64,
        readers: run.readers.clone(),
        ..CheckReport::default()
    };
    for s in &run.sends {
        let n = s.values.len() as u64;
        match s.outcome {
            SendOutcome::Acked(_) => report.acked += n,
            SendOutcome::Failed => report.failed += n,
            SendOutcome::Unknown => report.unknown += n,
        }
    }
    let (start, end) = run.window;
    for p in 0..partitions {
        let mut acks: Vec<Instant> = run
            .sends
            .iter()
            .filter(|s| s.partition == p && matches!(s.outcome, SendOutcome::Acked(_)))
            .map(|s| s.finished)
            .collect();
        acks.sort_unstable();
        let mut prev = start;
        let mut worst = Duration::ZERO;
        for t in acks.into_iter().chain([end]) {
            worst = worst.max(t.saturating_duration_since(prev));
            prev = prev.max(t);
        }
        if worst > report.longest_unavailable {
            report.longest_unavailable = worst;
            report.longest_unavailable_partition = p;
        }

        match read_all(nodes, topic, p, Duration::from_secs(20)).await {
            Ok((records, hw)) => {
                let pr = ledger.check_partition(p, &records, hw);
                let by_offset: BTreeMap<u64, &[u8]> =
                    records.iter().map(|r| (r.offset, &r.value[..])).collect();
                for reader in run.readers.iter().filter(|r| r.partition == p) {
                    for (o, v) in &reader.consumed {
                        if by_offset.get(o).copied() != Some(v.as_bytes()) {
                            report.consumed_vanished += 1;
                            if report.vanished_examples.len() < MAX_EXAMPLES {
                                report.vanished_examples.push(format!(
                                    "p{p}: consumed {v} at {o}, final log has {:?}",
                                    by_offset.get(o).map(|b| String::from_utf8_lossy(b))
                                ));
                            }
                        }
                    }
                }
                report.partitions.push(pr);
            }
            Err(e) => report.unreadable.push(e),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(producer: u32, message: u64, seq: u64, n: u64, outcome: SendOutcome) -> SendRecord {
        SendRecord {
            partition: 0,
            producer,
            message,
            seq,
            values: (0..n)
                .map(|i| format!("p0.w{producer}.m{message}.s{seq}.r{i}"))
                .collect(),
            outcome,
            finished: Instant::now(),
        }
    }

    fn log(values: &[&str]) -> Vec<ReadRecord> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| ReadRecord {
                offset: i as u64,
                value: bytes::Bytes::copy_from_slice(v.as_bytes()),
            })
            .collect()
    }

    #[test]
    fn a_clean_log_passes_and_a_retried_unknown_is_a_duplicate() {
        let mut l = Ledger::new();
        l.record(send(0, 0, 1, 2, SendOutcome::Acked(0)));
        l.record(send(0, 1, 2, 1, SendOutcome::Unknown));
        l.record(send(0, 1, 3, 1, SendOutcome::Acked(3)));
        l.record(send(0, 2, 4, 1, SendOutcome::Failed));
        let records = log(&[
            "p0.w0.m0.s1.r0",
            "p0.w0.m0.s1.r1",
            "p0.w0.m1.s2.r0",
            "p0.w0.m1.s3.r0",
        ]);
        let r = l.check_partition(0, &records, 4);
        assert_eq!(r.violations(), 0, "{r:?}");
        assert_eq!(r.duplicates, 1);
    }

    #[test]
    fn every_broken_invariant_is_counted() {
        let mut l = Ledger::new();
        l.record(send(0, 0, 1, 1, SendOutcome::Acked(0))); // lost
        l.record(send(0, 1, 2, 1, SendOutcome::Failed)); // present
        l.record(send(1, 0, 1, 1, SendOutcome::Acked(2)));
        l.record(send(1, 1, 2, 1, SendOutcome::Acked(1))); // before its predecessor
        l.record(send(2, 0, 1, 2, SendOutcome::Unknown)); // torn
        let records = log(&[
            "p0.w0.m1.s2.r0",
            "p0.w1.m1.s2.r0",
            "p0.w1.m0.s1.r0",
            "p0.w2.m0.s1.r1",
            "nobody sent this",
            "p0.w1.m0.s1.r0",
        ]);
        let r = l.check_partition(0, &records, 7);
        assert_eq!(r.lost, 1, "{r:?}");
        assert_eq!(r.failed_present, 1, "{r:?}");
        assert_eq!(r.reordered, 1, "{r:?}");
        assert_eq!(r.torn_batches, 1, "{r:?}");
        assert_eq!(r.foreign, 1, "{r:?}");
        assert_eq!(r.same_value_twice, 1, "{r:?}");
        assert_eq!(r.offset_gaps, 1, "HW 7 for 6 records: {r:?}");
    }

    #[test]
    fn splitmix64_is_deterministic() {
        let (mut a, mut b) = (SplitMix64::new(42), SplitMix64::new(42));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert!((0..1000).all(|_| a.below(7) < 7));
    }
}
