//! The producers of the checked workload and their node client.

use super::*;

// ----- PRNG -----

/// splitmix64: a small, seedable PRNG, enough to pick faults and batch sizes
/// reproducibly (no `rand` dependency).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }

    /// One element of `items` (non-empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = self.below(items.len() as u64);
        &items[usize::try_from(i).expect("index fits usize")]
    }
}

// ----- the ledger -----

/// The nodes' addresses and one lazy channel to each: what the workload
/// needs, without borrowing the [`Cluster`] that faults are injected into.
#[derive(Debug)]
pub struct Nodes {
    /// Node id -> a channel to its gRPC address (connect timeout 500 ms).
    channels: BTreeMap<u64, Channel>,
    /// Address -> node id, to follow leader hints.
    by_addr: HashMap<String, u64>,
}

impl Nodes {
    /// The nodes of `c`.
    pub fn of(c: &Cluster) -> Arc<Self> {
        let addrs: Vec<(u64, String)> = c
            .ids()
            .into_iter()
            .map(|id| (id, c.addr(id).to_string()))
            .collect();
        Self::at_with(&addrs, c.client_tls())
    }

    /// Nodes by id and the `host:port` they advertise (e.g. containers).
    pub fn at(addrs: &[(u64, String)]) -> Arc<Self> {
        Self::at_with(addrs, None)
    }

    fn at_with(addrs: &[(u64, String)], tls: Option<&ClientTls>) -> Arc<Self> {
        let mut channels = BTreeMap::new();
        let mut by_addr = HashMap::new();
        for (id, addr) in addrs {
            let (id, addr) = (*id, addr.clone());
            let channel = rivulet_proto::tls::endpoint(&addr, Duration::from_millis(500), tls)
                .expect("a socket address is a valid URI")
                .connect_lazy();
            channels.insert(id, channel);
            by_addr.insert(addr.to_string(), id);
        }
        Arc::new(Self { channels, by_addr })
    }

    pub(super) fn client(&self, id: u64) -> BrokerClient<Channel> {
        BrokerClient::new(self.channels[&id].clone())
    }

    pub(super) fn ids(&self) -> Vec<u64> {
        self.channels.keys().copied().collect()
    }

    /// Partition `p` of `topic` in the image of the first node (from
    /// `start`, round robin) that answers and names a leader.
    pub(super) async fn partition(
        &self,
        topic: &str,
        p: u32,
        start: usize,
    ) -> Option<PartitionInfo> {
        let ids = self.ids();
        for k in 0..ids.len() {
            let id = ids[(start + k) % ids.len()];
            let req = MetadataRequest {
                topics: vec![topic.into()],
            };
            let Ok(Ok(r)) =
                tokio::time::timeout(SHORT_RPC_TIMEOUT, self.client(id).metadata(req)).await
            else {
                continue;
            };
            let info = r
                .into_inner()
                .topics
                .into_iter()
                .find(|t| t.name == topic)
                .and_then(|t| t.partitions.into_iter().find(|x| x.partition == p));
            if let Some(info) = info.filter(|i| i.leader.is_some()) {
                return Some(info);
            }
        }
        None
    }
}

/// A client's idea of a partition's leader, refreshed on errors.
#[derive(Debug)]
pub(super) struct LeaderCache {
    /// The leader believed current, if any.
    leader: Option<u64>,
    /// Which node to ask for metadata next (rotates, so a stale or dead node
    /// is not asked forever).
    next_node: usize,
}

impl LeaderCache {
    pub(super) fn new(start: usize) -> Self {
        Self {
            leader: None,
            next_node: start,
        }
    }

    pub(super) async fn get(&mut self, nodes: &Nodes, topic: &str, p: u32) -> Option<u64> {
        if self.leader.is_none() {
            self.next_node += 1;
            self.leader = nodes
                .partition(topic, p, self.next_node)
                .await
                .and_then(|i| i.leader);
        }
        self.leader
    }

    pub(super) fn follow(&mut self, nodes: &Nodes, hint: Option<&str>) {
        self.leader = hint.and_then(|a| nodes.by_addr.get(a).copied());
    }
}

// ----- the workload -----

/// The shape of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// The topic (RF=3, min.insync.replicas=2 in the fault runs).
    pub topic: String,
    /// Its partitions, 0..partitions.
    pub partitions: u32,
    /// Concurrent producers; producer `k` writes partition `k % partitions`.
    pub producers: u32,
    /// Records per send: 1..=max_batch, chosen at random.
    pub max_batch: u32,
    /// Pause of a producer after each acknowledged send (keeps the topic,
    /// which every check reads in full, from growing too fast).
    pub send_interval: Duration,
    /// Seed of the batch sizes.
    pub seed: u64,
}

/// A running workload: producers and readers until [`Workload::stop`].
#[derive(Debug)]
pub struct Workload {
    /// Set to stop every task (each finishes its request in flight).
    stop: Arc<AtomicBool>,
    /// The producers; each returns its sends.
    producers: Vec<JoinHandle<Vec<SendRecord>>>,
    /// The readers; each returns what it saw.
    readers: Vec<JoinHandle<ReaderLog>>,
    /// When it started.
    started: Instant,
    /// Acknowledged sends so far (all producers).
    acked: Arc<tokio::sync::watch::Sender<u64>>,
}

/// What a stopped workload did.
#[derive(Debug)]
pub struct WorkloadResult {
    /// Every send, in per-producer order.
    pub sends: Vec<SendRecord>,
    /// Per partition, what the reader saw.
    pub readers: Vec<ReaderLog>,
    /// When it started and stopped (for unavailability).
    pub window: (Instant, Instant),
}

impl Workload {
    /// Starts the producers and readers. Producer `k` numbers its messages
    /// from `first_message[k]`, so values stay unique across workloads on one
    /// topic; each reader starts at `start_offsets[p]` (offsets it consumed in
    /// an earlier run are not read again).
    pub fn start(
        nodes: &Arc<Nodes>,
        cfg: &WorkloadConfig,
        first_message: u64,
        start_offsets: &BTreeMap<u32, u64>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let mut rng = SplitMix64::new(cfg.seed);
        let producers = (0..cfg.producers)
            .map(|k| {
                let (nodes, stop, cfg) = (Arc::clone(nodes), Arc::clone(&stop), cfg.clone());
                let acked = Arc::clone(&acked);
                let seed = rng.next_u64();
                tokio::spawn(async move {
                    produce(nodes, cfg, k, first_message, seed, stop, acked).await
                })
            })
            .collect();
        let readers = (0..cfg.partitions)
            .map(|p| {
                let (nodes, stop, topic) =
                    (Arc::clone(nodes), Arc::clone(&stop), cfg.topic.clone());
                let from = start_offsets.get(&p).copied().unwrap_or(0);
                tokio::spawn(async move { read(nodes, topic, p, from, stop).await })
            })
            .collect();
        Self {
            stop,
            producers,
            readers,
            started: Instant::now(),
            acked,
        }
    }

    /// Waits until `more` sends beyond those acknowledged so far are
    /// acknowledged; false if `timeout` passes first.
    pub async fn wait_acked(&self, more: u64, timeout: Duration) -> bool {
        let mut rx = self.acked.subscribe();
        let target = *rx.borrow_and_update() + more;
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops every task and collects what they did. Each task finishes the
    /// request it has in flight (bounded by its RPC deadline).
    pub async fn stop(self) -> WorkloadResult {
        self.stop.store(true, Ordering::Relaxed);
        let stopped = Instant::now();
        let mut sends = Vec::new();
        for h in self.producers {
            sends.extend(h.await.expect("a producer task panicked"));
        }
        let mut readers = Vec::new();
        for h in self.readers {
            readers.push(h.await.expect("a reader task panicked"));
        }
        WorkloadResult {
            sends,
            readers,
            window: (self.started, stopped),
        }
    }
}

/// Producer `k`: an idempotent producer (KIP-98) sending messages of
/// 1..=max_batch records to its partition with acks=all, one at a time. A
/// message is resent as the same batch (same values, producer id, epoch and
/// sequence) until it is acknowledged or the workload stops, so the leader
/// must store it once: a second copy shows as one value at two offsets, a
/// violation. One [`SendRecord`] per message, whose outcome is the best its
/// attempts learnt (acked, else unknown if any attempt may have written it,
/// else refused).
pub(super) async fn produce(
    nodes: Arc<Nodes>,
    cfg: WorkloadConfig,
    k: u32,
    first_message: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<tokio::sync::watch::Sender<u64>>,
) -> Vec<SendRecord> {
    let p = k % cfg.partitions;
    let mut rng = SplitMix64::new(seed);
    let mut cache = LeaderCache::new(k as usize);
    let mut out = Vec::new();
    let mut seq = 0u64;
    let mut message = first_message;
    let mut producer = None;
    let mut next_sequence = 0i32;
    while !stop.load(Ordering::Relaxed) {
        let n = 1 + rng.below(u64::from(cfg.max_batch.max(1)));
        seq += 1;
        let values: Vec<String> = (0..n)
            .map(|i| format!("p{p}.w{k}.m{message}.s{seq}.r{i}"))
            .collect();
        let mut outcome = SendOutcome::Failed;
        // Until acknowledged (false) or the workload stops (true).
        let stopped = loop {
            let (pid, epoch) = match producer {
                Some(pe) => pe,
                None => match init_producer_id(&nodes, None).await {
                    Some(pe) => {
                        producer = Some(pe);
                        next_sequence = 0;
                        pe
                    }
                    None if stop.load(Ordering::Relaxed) => break true,
                    None => {
                        tokio::time::sleep(RETRY_BACKOFF).await;
                        continue;
                    }
                },
            };
            let stamp = rivulet_common::batch::ProducerStamp {
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: next_sequence,
            };
            let (attempt, code) =
                send(&nodes, &mut cache, &cfg.topic, p, &values, Some(stamp)).await;
            outcome = match (outcome, attempt) {
                (_, SendOutcome::Acked(o)) => SendOutcome::Acked(o),
                (SendOutcome::Unknown, _) | (_, SendOutcome::Unknown) => SendOutcome::Unknown,
                _ => SendOutcome::Failed,
            };
            if matches!(outcome, SendOutcome::Acked(_)) {
                next_sequence += n as i32;
                break false;
            }
            if code == Some(ErrorCode::OutOfOrderSequenceNumber as i32)
                || code == Some(ErrorCode::InvalidProducerEpoch as i32)
            {
                // The leader lost this producer's sequence (that alone is
                // no violation; a copy written twice would be): a new epoch
                // starts again at sequence 0 (KIP-360).
                producer = init_producer_id(&nodes, Some((pid, epoch))).await;
                next_sequence = 0;
            }
            if stop.load(Ordering::Relaxed) {
                break true;
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        };
        out.push(SendRecord {
            partition: p,
            producer: k,
            message,
            seq,
            values,
            outcome,
            finished: Instant::now(),
        });
        if stopped {
            break;
        }
        acked.send_modify(|n| *n += 1);
        tokio::time::sleep(cfg.send_interval).await;
        message += 1;
    }
    out
}

/// InitProducerId on the first node that answers: a new producer, or with
/// `current` the next epoch of it.
pub(super) async fn init_producer_id(
    nodes: &Nodes,
    current: Option<(i64, i16)>,
) -> Option<(i64, i16)> {
    for id in nodes.ids() {
        let req = rivulet_proto::v1::InitProducerIdRequest {
            transactional_id: String::new(),
            producer_id: current.map(|c| c.0),
            producer_epoch: current.map(|c| i32::from(c.1)),
        };
        let Ok(Ok(r)) =
            tokio::time::timeout(PRODUCE_RPC_TIMEOUT, nodes.client(id).init_producer_id(req)).await
        else {
            continue;
        };
        let r = r.into_inner();
        if r.error_code == ErrorCode::None as i32 {
            return Some((r.producer_id, i16::try_from(r.producer_epoch).ok()?));
        }
    }
    None
}

/// One acks=all send to the leader the cache names.
pub(super) async fn send(
    nodes: &Nodes,
    cache: &mut LeaderCache,
    topic: &str,
    p: u32,
    values: &[String],
    producer: Option<rivulet_common::batch::ProducerStamp>,
) -> (SendOutcome, Option<i32>) {
    let Some(leader) = cache.get(nodes, topic, p).await else {
        // Nothing was sent.
        return (SendOutcome::Failed, None);
    };
    let bytes: Vec<Vec<u8>> = values.iter().map(|v| v.clone().into_bytes()).collect();
    let req = idempotent_produce_request(topic, p, &bytes, Acks::All, PRODUCE_TIMEOUT_MS, producer);
    match tokio::time::timeout(PRODUCE_RPC_TIMEOUT, nodes.client(leader).produce(req)).await {
        Ok(Ok(r)) => {
            let (outcome, hint) = classify_produce(r.into_inner());
            if !matches!(outcome, ProduceOutcome::Acked(_)) {
                cache.follow(nodes, hint.as_ref().map(|h| h.address.as_str()));
            }
            let code = match &outcome {
                ProduceOutcome::Failed(code, _) => Some(*code),
                _ => None,
            };
            (SendOutcome::from(&outcome), code)
        }
        Ok(Err(_)) | Err(_) => {
            cache.follow(nodes, None);
            (SendOutcome::Unknown, None)
        }
    }
}
