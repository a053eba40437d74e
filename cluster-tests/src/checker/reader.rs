//! The readers: HW samples and consumed records during the faults, and the
//! full read of a partition after them.

use super::*;

/// What one partition's reader saw during the run.
#[derive(Debug, Clone, Default)]
pub struct ReaderLog {
    /// The partition.
    pub partition: u32,
    /// (offset, value) of every record consumed.
    pub consumed: BTreeMap<u64, String>,
    /// HW answers received.
    pub samples: u64,
    /// Times one leader epoch answered a lower HW than before (violation).
    pub hw_backwards_same_epoch: u64,
    /// Times a newer epoch answered a lower HW than an older one had
    /// (violation: a new leader answers OFFSET_NOT_AVAILABLE instead).
    pub hw_lag_after_failover: u64,
    /// The deepest such lag, in offsets.
    pub hw_lag_max: u64,
    /// Answers from an epoch older than one already seen (a deposed leader
    /// still answering, or a stale metadata view).
    pub stale_epoch_answers: u64,
    /// `OFFSET_OUT_OF_RANGE` at a position reached by consuming (violation).
    pub committed_position_out_of_range: u64,
    /// Problems, in words.
    pub examples: Vec<String>,
}

impl ReaderLog {
    pub(super) fn example(&mut self, what: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(what);
        }
    }
}

/// The reader of partition `p`: asks the leader for its HW and epoch and
/// consumes from its position, until the workload stops.
pub(super) async fn read(
    nodes: Arc<Nodes>,
    topic: String,
    p: u32,
    from: u64,
    stop: Arc<AtomicBool>,
) -> ReaderLog {
    let mut log = ReaderLog {
        partition: p,
        ..ReaderLog::default()
    };
    let mut cache = LeaderCache::new(p as usize);
    let mut position = from;
    // Highest HW seen, and the epoch that answered it; per epoch, its highest.
    let mut max_hw = (from, 0u32);
    let mut epoch_max: BTreeMap<u32, u64> = BTreeMap::new();
    let mut newest_epoch = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let Some(leader) = cache.get(&nodes, &topic, p).await else {
            tokio::time::sleep(READER_BACKOFF).await;
            continue;
        };
        let mut client = nodes.client(leader);
        // The HW and the epoch of whoever answers as leader.
        let req = ListOffsetsRequest {
            partitions: vec![ListOffsetsPartition {
                topic: topic.clone(),
                partition: p,
                spec: Some(Spec::OffsetSpec(OffsetSpec::Latest as i32)),
                current_leader_epoch: None,
            }],
        };
        let answer = match tokio::time::timeout(SHORT_RPC_TIMEOUT, client.list_offsets(req)).await {
            Ok(Ok(r)) => r.into_inner().partitions.into_iter().next(),
            _ => None,
        };
        let Some(answer) = answer.filter(|a| a.error_code == ErrorCode::None as i32) else {
            cache.follow(&nodes, None);
            tokio::time::sleep(READER_BACKOFF).await;
            continue;
        };
        let (hw, epoch) = (answer.offset.unwrap_or(0), answer.leader_epoch);
        log.samples += 1;
        if epoch < newest_epoch {
            log.stale_epoch_answers += 1;
            // A deposed leader's view; follow the metadata again.
            cache.follow(&nodes, None);
        } else {
            newest_epoch = epoch;
            let seen = epoch_max.entry(epoch).or_insert(hw);
            if hw < *seen {
                log.hw_backwards_same_epoch += 1;
                let what = format!(
                    "p{p}: leader {leader} in epoch {epoch} answered HW {hw} after {}",
                    *seen
                );
                log.example(what);
            }
            *seen = (*seen).max(hw);
            if hw < max_hw.0 && epoch > max_hw.1 {
                log.hw_lag_after_failover += 1;
                log.hw_lag_max = log.hw_lag_max.max(max_hw.0 - hw);
                let what = format!(
                    "p{p}: leader {leader} in epoch {epoch} answered HW {hw}, below the HW {} \
                     epoch {} answered",
                    max_hw.0, max_hw.1
                );
                log.example(what);
            }
            if hw > max_hw.0 {
                max_hw = (hw, epoch);
            }
        }
        // Consume from the position.
        let req = FetchRequest {
            partitions: vec![FetchPartition {
                topic: topic.clone(),
                partition: p,
                offset: position,
                partition_max_bytes: 1 << 20,
                current_leader_epoch: None,
            }],
            max_bytes: 1 << 20,
            min_bytes: 1,
            max_wait_ms: READER_MAX_WAIT_MS,
        };
        let fetched = match tokio::time::timeout(SHORT_RPC_TIMEOUT, client.fetch(req)).await {
            Ok(Ok(r)) => r.into_inner().partitions.into_iter().next(),
            _ => None,
        };
        let Some(part) = fetched else {
            cache.follow(&nodes, None);
            continue;
        };
        if part.error_code == ErrorCode::OffsetOutOfRange as i32 {
            log.committed_position_out_of_range += 1;
            let what = format!(
                "p{p}: leader {leader} answered OFFSET_OUT_OF_RANGE at consumed position \
                 {position}: {}",
                part.error_message
            );
            log.example(what);
            cache.follow(&nodes, None);
            tokio::time::sleep(READER_BACKOFF).await;
            continue;
        }
        if part.error_code != ErrorCode::None as i32 {
            cache.follow(&nodes, part.leader.as_ref().map(|h| h.address.as_str()));
            continue;
        }
        let Ok(records) = decode_records(&part.records) else {
            log.example(format!("p{p}: fetched batches at {position} do not decode"));
            continue;
        };
        for rec in records {
            if rec.offset < position {
                continue;
            }
            if rec.offset != position {
                // A gap: the final check counts offsets; stay in step with it.
                position = rec.offset;
            }
            let value = String::from_utf8_lossy(&rec.value.unwrap_or_default()).into_owned();
            log.consumed.insert(rec.offset, value);
            position += 1;
        }
    }
    log
}

// ----- the check -----

/// Reads `topic`/`p` in full from its leader (as the nodes' metadata says),
/// without panicking: the records and the HW, or why not.
pub async fn read_all(
    nodes: &Nodes,
    topic: &str,
    p: u32,
    timeout: Duration,
) -> Result<(Vec<ReadRecord>, u64), String> {
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("no attempt");
    let mut attempt = 0usize;
    while Instant::now() < deadline {
        attempt += 1;
        match read_once(nodes, topic, p, attempt).await {
            Ok(r) => return Ok(r),
            Err(e) => last_error = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "p{p}: not readable within {timeout:?}: {last_error}"
    ))
}

pub(super) async fn read_once(
    nodes: &Nodes,
    topic: &str,
    p: u32,
    attempt: usize,
) -> Result<(Vec<ReadRecord>, u64), String> {
    let info = nodes
        .partition(topic, p, attempt)
        .await
        .ok_or("no node names a leader")?;
    let leader = info.leader.ok_or("no leader")?;
    let mut client = nodes.client(leader);
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let req = FetchRequest {
            partitions: vec![FetchPartition {
                topic: topic.into(),
                partition: p,
                offset,
                partition_max_bytes: 1 << 20,
                current_leader_epoch: Some(info.leader_epoch),
            }],
            max_bytes: 4 << 20,
            min_bytes: 0,
            max_wait_ms: 0,
        };
        let part = tokio::time::timeout(Duration::from_secs(5), client.fetch(req))
            .await
            .map_err(|_| format!("fetch at {offset} from node {leader} timed out"))?
            .map_err(|s| format!("fetch at {offset} from node {leader}: {s}"))?
            .into_inner()
            .partitions
            .into_iter()
            .next()
            .ok_or("empty fetch response")?;
        if part.error_code != ErrorCode::None as i32 {
            return Err(format!(
                "fetch at {offset} from node {leader}: error {} {}",
                part.error_code, part.error_message
            ));
        }
        let records =
            decode_records(&part.records).map_err(|e| format!("batches do not decode: {e}"))?;
        let before = out.len();
        for rec in records {
            if rec.offset >= offset {
                offset = rec.offset + 1;
                out.push(ReadRecord {
                    offset: rec.offset,
                    value: rec.value.unwrap_or_default(),
                });
            }
        }
        if offset >= part.high_watermark || out.len() == before {
            return Ok((out, part.high_watermark));
        }
    }
}
