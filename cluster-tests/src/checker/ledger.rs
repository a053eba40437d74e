//! Every send and its fate, and the check of a partition against them.

use super::*;

/// What came of one send, as the checker needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Acknowledged at this base offset.
    Acked(u64),
    /// Definitely refused: none of its records may appear.
    Failed,
    /// Unknown (timeout, lost connection, deposed leader): may appear.
    Unknown,
}

impl From<&ProduceOutcome> for SendOutcome {
    fn from(o: &ProduceOutcome) -> Self {
        match o {
            ProduceOutcome::Acked(offset) => Self::Acked(*offset),
            ProduceOutcome::Failed(..) => Self::Failed,
            ProduceOutcome::Unknown(_) => Self::Unknown,
        }
    }
}

/// One send (one batch to one partition) and its fate.
#[derive(Debug, Clone)]
pub struct SendRecord {
    /// The partition it went to.
    pub partition: u32,
    /// The producer that sent it; its acked sends must be in order.
    pub producer: u32,
    /// The message it is an attempt at: sends of one message are retries.
    pub message: u64,
    /// The producer's sequence number of the send within its workload
    /// (increases per send; with `message`, orders a producer's sends).
    pub seq: u64,
    /// Its values, unique in the run, in batch order.
    pub values: Vec<String>,
    /// What came of it.
    pub outcome: SendOutcome,
    /// When the answer (or the give-up) came; acks make the availability.
    pub finished: Instant,
}

/// Every send of a run, to check a partition read back against.
#[derive(Debug, Default)]
pub struct Ledger {
    /// In the order they were recorded.
    sends: Vec<SendRecord>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a send.
    pub fn record(&mut self, send: SendRecord) {
        self.sends.push(send);
    }

    /// Every send recorded.
    pub fn sends(&self) -> &[SendRecord] {
        &self.sends
    }

    /// Records of acknowledged sends.
    pub fn acked_records(&self) -> usize {
        self.count_records(|o| matches!(o, SendOutcome::Acked(_)))
    }

    /// Records of refused sends.
    pub fn failed_records(&self) -> usize {
        self.count_records(|o| o == SendOutcome::Failed)
    }

    /// Records of sends with an unknown outcome.
    pub fn unknown_records(&self) -> usize {
        self.count_records(|o| o == SendOutcome::Unknown)
    }

    pub(super) fn count_records(&self, f: impl Fn(SendOutcome) -> bool) -> usize {
        self.sends
            .iter()
            .filter(|s| f(s.outcome))
            .map(|s| s.values.len())
            .sum()
    }

    /// Checks partition `p` read back in full (`records` from offset 0, and
    /// the high watermark) against every send to it; see the module docs.
    pub fn check_partition(&self, p: u32, records: &[ReadRecord], hw: u64) -> PartitionReport {
        let mut r = PartitionReport {
            partition: p,
            records: records.len() as u64,
            ..PartitionReport::default()
        };
        // Value -> (send index, position in its batch).
        let mut index: HashMap<&str, (usize, usize)> = HashMap::new();
        for (i, s) in self.sends.iter().enumerate() {
            if s.partition != p {
                continue;
            }
            for (j, v) in s.values.iter().enumerate() {
                index.insert(v.as_str(), (i, j));
            }
        }
        // Where each value is.
        let mut at: HashMap<&str, u64> = HashMap::new();
        // Send index -> the offsets of its values present.
        let mut present: BTreeMap<usize, Vec<(usize, u64)>> = BTreeMap::new();
        for (i, rec) in records.iter().enumerate() {
            if rec.offset != i as u64 {
                r.offset_gaps += 1;
                r.example(format!(
                    "p{p}: record {i} has offset {} (offsets not dense)",
                    rec.offset
                ));
            }
            let v = String::from_utf8_lossy(&rec.value);
            let Some((&key, &(send, pos))) = index.get_key_value(v.as_ref()) else {
                r.foreign += 1;
                r.example(format!(
                    "p{p}: value {v:?} at {} was never sent",
                    rec.offset
                ));
                continue;
            };
            // A value's first offset is where it counts; a second one is
            // counted once, as same_value_twice.
            if let Some(first) = at.get(key) {
                r.same_value_twice += 1;
                r.example(format!(
                    "p{p}: value {v} at offsets {first} and {}",
                    rec.offset
                ));
                continue;
            }
            at.insert(key, rec.offset);
            present.entry(send).or_default().push((pos, rec.offset));
        }
        if hw != records.len() as u64 {
            r.offset_gaps += 1;
            r.example(format!(
                "p{p}: high watermark {hw} but {} records read",
                records.len()
            ));
        }
        // Per send: lost, refused-yet-present, torn.
        for (i, s) in self.sends.iter().enumerate() {
            if s.partition != p {
                continue;
            }
            let here = present.get(&i).map_or(&[][..], Vec::as_slice);
            match s.outcome {
                SendOutcome::Acked(base) => {
                    for (j, v) in s.values.iter().enumerate() {
                        let want = base + j as u64;
                        if at.get(v.as_str()) != Some(&want) {
                            r.lost += 1;
                            r.example(format!(
                                "p{p}: LOST acked {v} (acked at {want}, found at {:?})",
                                at.get(v.as_str())
                            ));
                        }
                    }
                }
                SendOutcome::Failed if !here.is_empty() => {
                    r.failed_present += here.len() as u64;
                    r.example(format!(
                        "p{p}: refused send {} present at {:?}",
                        s.values[0],
                        here.iter().map(|(_, o)| o).collect::<Vec<_>>()
                    ));
                }
                _ => {}
            }
            if !here.is_empty() {
                let mut sorted = here.to_vec();
                sorted.sort_unstable();
                let contiguous = sorted.len() == s.values.len()
                    && sorted
                        .iter()
                        .enumerate()
                        .all(|(j, (pos, o))| *pos == j && *o == sorted[0].1 + j as u64);
                if !contiguous {
                    r.torn_batches += 1;
                    r.example(format!(
                        "p{p}: send {} has {} of {} records present, at {:?}",
                        s.values[0],
                        sorted.len(),
                        s.values.len(),
                        sorted
                    ));
                }
            }
        }
        // Duplicates: messages with more than one send present.
        let mut by_message: BTreeMap<(u32, u64), Vec<usize>> = BTreeMap::new();
        for &i in present.keys() {
            let s = &self.sends[i];
            by_message
                .entry((s.producer, s.message))
                .or_default()
                .push(i);
        }
        for sends in by_message.values().filter(|s| s.len() > 1) {
            r.duplicates += sends.len() as u64 - 1;
            let known = sends
                .iter()
                .filter(|i| self.sends[**i].outcome != SendOutcome::Unknown)
                .count();
            if known > 1 {
                r.example(format!(
                    "p{p}: message {} present {} times, {known} of them acked or refused",
                    self.sends[sends[0]].values[0],
                    sends.len()
                ));
            }
        }
        // Order: each producer's acked sends in increasing offset order.
        let mut last: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut acked: Vec<&SendRecord> = self
            .sends
            .iter()
            .filter(|s| s.partition == p && matches!(s.outcome, SendOutcome::Acked(_)))
            .collect();
        // Messages increase across workloads, sequence numbers within one.
        acked.sort_by_key(|s| (s.producer, s.message, s.seq));
        for s in acked {
            let SendOutcome::Acked(base) = s.outcome else {
                unreachable!("filtered on acked")
            };
            if let Some((seq, prev)) = last.insert(s.producer, (s.seq, base)) {
                if base <= prev {
                    r.reordered += 1;
                    r.example(format!(
                        "p{p}: producer {} send {} acked at {base}, before its send {seq} at {prev}",
                        s.producer, s.seq
                    ));
                }
            }
        }
        r
    }
}

// ----- reports -----
