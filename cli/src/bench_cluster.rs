//! `rivulet bench produce | consume | e2e | failover`: measurements against
//! a cluster given by `--bootstrap`, or one the command starts itself with
//! `--local-cluster N` (child processes, removed afterwards).
//!
//! Latencies go into hdrhistograms (microsecond resolution) and are reported
//! in milliseconds; throughput counts acknowledged (or consumed) records
//! over the wall time of the run, flush included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use rivulet_client::{
    Acks, Admin, ClientConfig, Compression, Consumer, ConsumerConfig, ErrorCode, OffsetReset,
    Partitioner, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::clients::AcksArg;
use crate::local::{free_ports, LocalCluster};

/// Where to run and on what topic.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// Start a local cluster of this many nodes for the run instead of using
    /// `--bootstrap` (its data goes in a temporary directory).
    #[arg(long)]
    local_cluster: Option<u64>,
    /// Topic to use; created if missing.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions of a created topic.
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    /// Replication factor of a created topic (min.insync.replicas is 2 when
    /// it is 3 or more, else 1).
    #[arg(long, default_value_t = 3)]
    replication_factor: u32,
    /// Bytes per record value (no key).
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// With --local-cluster: the nodes serve TLS (mutual TLS between them)
    /// and the benchmark's clients connect over it.
    #[arg(long, requires = "local_cluster")]
    tls: bool,
}

/// Producer knobs shared by the produce-side benchmarks.
#[derive(Debug, Args, Clone)]
pub struct ProducerKnobs {
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value = "all")]
    acks: AcksArg,
    /// Batch size in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_size: usize,
    /// How long a batch waits for more records (ms); default 5 for
    /// `produce`, 0 for `e2e` (latency first).
    #[arg(long)]
    linger_ms: Option<u64>,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Where records without a key go: `until-sent` (one partition until
    /// its batch is sent: fewest, largest appends) or `uniform-sticky`
    /// (Kafka's KIP-794: move on after batch-size bytes, evenly).
    #[arg(long, default_value = "until-sent")]
    partitioner: String,
    /// Turn the idempotent producer off (it is on with acks=all), to
    /// measure what it costs.
    #[arg(long)]
    no_idempotence: bool,
}

impl ProducerKnobs {
    fn config(&self, default_linger_ms: u64) -> Result<ProducerConfig> {
        let compression: Compression = self.compression.parse()?;
        let partitioner: Partitioner = self.partitioner.parse()?;
        Ok(ProducerConfig {
            partitioner,
            acks: match self.acks {
                AcksArg::Zero => Acks::None,
                AcksArg::One => Acks::Leader,
                AcksArg::All => Acks::All,
            },
            batch_size: self.batch_size,
            linger: Duration::from_millis(self.linger_ms.unwrap_or(default_linger_ms)),
            compression,
            idempotence: self.no_idempotence.then_some(false),
            ..ProducerConfig::default()
        })
    }
}

/// Options of `rivulet bench produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    producer: ProducerKnobs,
    /// How long to produce.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Concurrent producers (each with its own connection and batches).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Total records/s to aim for; 0: as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

/// Options of `rivulet bench consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    target: Target,
    /// Records to read (produced first, with acks=1, if the topic has fewer).
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
}

/// Options of `rivulet bench e2e`.
#[derive(Debug, Args)]
pub struct E2eArgs {
    #[command(flatten)]
    target: Target,
    /// Records/s produced (all acks=all unless --acks says otherwise).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long to produce.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[command(flatten)]
    producer: ProducerKnobs,
}

/// Options of `rivulet bench failover`.
#[derive(Debug, Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    target: Target,
    /// Kill/restart rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Kill a partition leader that is also the active controller (a Raft
    /// election comes first); by default the victim leads a partition only.
    #[arg(long)]
    with_controller: bool,
}

/// A cluster to run against: the given one, or a local one we own.
struct Env {
    bootstrap: String,
    local: Option<LocalCluster>,
    _dir: Option<tempfile::TempDir>,
}

impl Env {
    async fn new(bootstrap: &str, target: &Target) -> Result<Self> {
        let Some(n) = target.local_cluster else {
            return Ok(Self {
                bootstrap: bootstrap.to_owned(),
                local: None,
                _dir: None,
            });
        };
        anyhow::ensure!((1..=9).contains(&n), "--local-cluster must be 1..=9 nodes");
        let dir = tempfile::Builder::new()
            .prefix("rivulet-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let mut local = LocalCluster::spawn(dir.path(), free_ports(n as usize)?, &[], target.tls)?;
        if !target.json {
            eprintln!(
                "starting a local {n}-node cluster in {}",
                dir.path().display()
            );
        }
        local
            .wait_ready(n as usize, Duration::from_secs(30))
            .await?;
        Ok(Self {
            bootstrap: local.bootstrap(),
            local: Some(local),
            _dir: Some(dir),
        })
    }

    fn client(&self) -> ClientConfig {
        crate::tls::client_config(&self.bootstrap)
    }

    /// Creates the topic if missing and waits until every partition has a
    /// leader; returns the partition count.
    async fn topic(&self, t: &Target) -> Result<u32> {
        let admin = Admin::connect(self.client()).await?;
        let min_isr = if t.replication_factor >= 3 { 2 } else { 1 };
        match admin
            .create_topic(
                &t.topic,
                t.partitions,
                t.replication_factor,
                &[("min.insync.replicas".into(), min_isr.to_string())],
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
            Err(e) => return Err(e).context(format!("cannot create topic {}", t.topic)),
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The node asked may not have the new topic in its image yet.
            if let Ok(info) = admin.describe_topic(&t.topic).await {
                let mut ready = !info.partitions.is_empty();
                for p in &info.partitions {
                    ready &= p.leader.is_some()
                        && admin.partition_offsets(&t.topic, p.partition).await.is_ok();
                }
                if ready {
                    return Ok(info.partitions.len() as u32);
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "topic {} has no leaders after 20 s",
                t.topic
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn finish(self) {
        if let Some(local) = self.local {
            local.stop(Duration::from_secs(5)).await;
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": ms(h, 0.5), "p99": ms(h, 0.99), "p999": ms(h, 0.999),
        "max": h.max() as f64 / 1000.0,
    })
}

fn print_latency(h: &Histogram<u64>) {
    println!(
        "latency ms     p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(h, 0.5),
        ms(h, 0.99),
        ms(h, 0.999),
        h.max() as f64 / 1000.0
    );
}

/// A progress line on stderr, once a second, unless printing JSON.
struct Progress {
    quiet: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Self {
            quiet,
            started: Instant::now(),
            last: Instant::now(),
        }
    }

    fn tick(&mut self, what: &str, n: u64) {
        if self.quiet || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        eprint!(
            "\r{secs:6.1}s  {n:>12} {what}  {:>10.0}/s   ",
            n as f64 / secs
        );
    }

    fn done(&self) {
        if !self.quiet {
            eprintln!();
        }
    }
}

/// Counts and latencies of one produce run.
struct ProduceOutcome {
    acked: u64,
    failed: u64,
    first_error: Option<String>,
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// Produces `value`-sized records from `producers` tasks for `duration` at
/// `rate` records/s in total (0: unlimited).
async fn produce_load(
    env: &Env,
    t: &Target,
    config: ProducerConfig,
    producers: usize,
    duration: Duration,
    rate: u64,
    quiet: bool,
) -> Result<ProduceOutcome> {
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None));
    let latency = Arc::new(Mutex::new(histogram()));
    let value = Bytes::from(vec![b'x'; t.record_size]);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..producers.max(1) {
        let producer = Producer::connect(env.client(), config.clone()).await?;
        let (tx, mut rx) = mpsc::channel::<(Instant, rivulet_client::DeliveryFuture)>(1 << 16);
        let (acked, failed, first_error, latency) = (
            Arc::clone(&acked),
            Arc::clone(&failed),
            Arc::clone(&first_error),
            Arc::clone(&latency),
        );
        // Deliveries resolve in order per partition; awaiting them in send
        // order bounds memory and measures send -> ack.
        let collector = tokio::spawn(async move {
            let mut h = histogram();
            while let Some((sent, d)) = rx.recv().await {
                match d.await {
                    Ok(_) => {
                        let _ = h.record(sent.elapsed().as_micros().max(1) as u64);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert_with(|| e.to_string());
                    }
                }
            }
            let _ = latency.lock().unwrap_or_else(|e| e.into_inner()).add(&h);
        });
        let (topic, value) = (t.topic.clone(), value.clone());
        let per_producer_rate = rate as f64 / producers.max(1) as f64;
        tasks.spawn(async move {
            let mut sent = 0u64;
            let begin = Instant::now();
            while Instant::now() < deadline {
                if per_producer_rate > 0.0 {
                    let due = begin + Duration::from_secs_f64(sent as f64 / per_producer_rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let rec = ProducerRecord {
                    topic: topic.clone(),
                    value: Some(value.clone()),
                    ..ProducerRecord::default()
                };
                let now = Instant::now();
                match producer.send(rec).await {
                    Ok(d) => {
                        if tx.send((now, d)).await.is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
                sent += 1;
            }
            drop(tx);
            let _ = producer.flush().await;
            let _ = collector.await;
        });
    }
    let mut progress = Progress::new(quiet);
    loop {
        tokio::select! {
            r = tasks.join_next() => if r.is_none() { break },
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                progress.tick("records acked", acked.load(Ordering::Relaxed));
            }
        }
    }
    progress.done();
    let latency = latency.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let first_error = first_error.lock().unwrap_or_else(|e| e.into_inner()).take();
    Ok(ProduceOutcome {
        acked: acked.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        first_error,
        elapsed: started.elapsed(),
        latency,
    })
}

/// Runs `rivulet bench produce`.
pub async fn produce(bootstrap: &str, args: ProduceArgs) -> Result<()> {
    let env = Env::new(bootstrap, &args.target).await?;
    let t = &args.target;
    let partitions = env.topic(t).await?;
    let config = args.producer.config(5)?;
    let out = produce_load(
        &env,
        t,
        config,
        args.producers,
        Duration::from_secs(args.duration_secs),
        args.rate,
        t.json,
    )
    .await?;
    env.finish().await;
    let secs = out.elapsed.as_secs_f64();
    let rps = out.acked as f64 / secs;
    let mbps = rps * t.record_size as f64 / 1e6;
    if t.json {
        println!(
            "{}",
            json!({
                "records": out.acked, "failed": out.failed, "records_per_sec": rps,
                "mb_per_sec": mbps, "latency_ms": latency_json(&out.latency),
                "partitions": partitions, "replication_factor": t.replication_factor,
                "record_size": t.record_size, "producers": args.producers,
                "acks": format!("{:?}", args.producer.acks).to_lowercase(),
            })
        );
    } else {
        println!(
            "produced {} records of {} B to {} partitions (RF {}) in {:.1}s",
            out.acked, t.record_size, partitions, t.replication_factor, secs
        );
        println!("throughput     {rps:.0} records/s  {mbps:.1} MB/s");
        print_latency(&out.latency);
    }
    if out.failed > 0 {
        bail!(
            "{} records were not acknowledged; first: {}",
            out.failed,
            out.first_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// Runs `rivulet bench consume`.
pub async fn consume(bootstrap: &str, args: ConsumeArgs) -> Result<()> {
    let env = Env::new(bootstrap, &args.target).await?;
    let t = &args.target;
    let partitions = env.topic(t).await?;
    let admin = Admin::connect(env.client()).await?;
    let mut have = 0;
    for p in 0..partitions {
        have += admin.partition_offsets(&t.topic, p).await?.high_watermark;
    }
    if have < args.records {
        let missing = args.records - have;
        if !t.json {
            eprintln!("producing {missing} records first (acks=1)");
        }
        let config = ProducerConfig {
            acks: Acks::Leader,
            ..ProducerConfig::default()
        };
        let producer = Producer::connect(env.client(), config).await?;
        let value = Bytes::from(vec![b'x'; t.record_size]);
        let mut pending = std::collections::VecDeque::new();
        for _ in 0..missing {
            let rec = ProducerRecord {
                topic: t.topic.clone(),
                value: Some(value.clone()),
                ..ProducerRecord::default()
            };
            pending.push_back(producer.send(rec).await?);
            if pending.len() >= 1 << 16 {
                if let Some(d) = pending.pop_front() {
                    d.await?;
                }
            }
        }
        for d in pending {
            d.await?;
        }
    }
    let config = ConsumerConfig {
        offset_reset: OffsetReset::Earliest,
        max_wait: Duration::from_millis(100),
        partition_max_bytes: 4 << 20,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(env.client(), config).await?;
    consumer.assign(&t.topic, &[]).await?;
    consumer.seek(&t.topic, None, SeekTo::Beginning).await?;
    let started = Instant::now();
    let mut progress = Progress::new(t.json);
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut idle = Instant::now();
    while n < args.records {
        let records = consumer.poll().await?;
        if records.is_empty() {
            anyhow::ensure!(
                idle.elapsed() < Duration::from_secs(10),
                "no records for 10 s after {n} of {}",
                args.records
            );
        } else {
            idle = Instant::now();
        }
        for r in &records {
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
        }
        n += records.len() as u64;
        progress.tick("records consumed", n);
    }
    progress.done();
    let secs = started.elapsed().as_secs_f64();
    env.finish().await;
    let rps = n as f64 / secs;
    let mbps = bytes as f64 / secs / 1e6;
    if t.json {
        println!(
            "{}",
            json!({"records": n, "records_per_sec": rps, "mb_per_sec": mbps, "partitions": partitions})
        );
    } else {
        println!("consumed {n} records from {partitions} partitions in {secs:.2}s");
        println!("throughput     {rps:.0} records/s  {mbps:.1} MB/s");
    }
    Ok(())
}

/// Runs `rivulet bench e2e`: produce at a fixed rate, consume concurrently,
/// and measure the time from send to delivery to the consumer.
pub async fn e2e(bootstrap: &str, args: E2eArgs) -> Result<()> {
    let env = Env::new(bootstrap, &args.target).await?;
    let t = &args.target;
    anyhow::ensure!(
        t.record_size >= 8,
        "--record-size must be at least 8 for e2e"
    );
    anyhow::ensure!(args.rate > 0, "--rate must be positive");
    let partitions = env.topic(t).await?;
    let origin = Instant::now();
    let config = ConsumerConfig {
        offset_reset: OffsetReset::Latest,
        max_wait: Duration::from_millis(200),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(env.client(), config).await?;
    consumer.assign(&t.topic, &[]).await?;
    consumer.seek(&t.topic, None, SeekTo::End).await?;
    let total = args.rate * args.duration_secs;
    let consumed = Arc::new(AtomicU64::new(0));
    let reader = {
        let consumed = Arc::clone(&consumed);
        tokio::spawn(async move {
            let mut h = histogram();
            let mut idle = Instant::now();
            while consumed.load(Ordering::Relaxed) < total
                && idle.elapsed() < Duration::from_secs(10)
            {
                let records = consumer.poll().await?;
                let now = origin.elapsed().as_micros() as u64;
                if !records.is_empty() {
                    idle = Instant::now();
                }
                for r in &records {
                    let Some(v) = r.value.as_deref().filter(|v| v.len() >= 8) else {
                        continue;
                    };
                    let mut stamp = [0u8; 8];
                    stamp.copy_from_slice(&v[..8]);
                    let sent = u64::from_le_bytes(stamp);
                    let _ = h.record(now.saturating_sub(sent).max(1));
                }
                consumed.fetch_add(records.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok(h)
        })
    };
    let producer = Producer::connect(env.client(), args.producer.config(0)?).await?;
    let mut progress = Progress::new(t.json);
    let mut pending = std::collections::VecDeque::new();
    let (mut failed, mut first_error) = (0u64, None);
    for i in 0..total {
        let due = origin + Duration::from_secs_f64(i as f64 / args.rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let mut value = vec![b'x'; t.record_size];
        value[..8].copy_from_slice(&(origin.elapsed().as_micros() as u64).to_le_bytes());
        let rec = ProducerRecord {
            topic: t.topic.clone(),
            value: Some(Bytes::from(value)),
            ..ProducerRecord::default()
        };
        pending.push_back(producer.send(rec).await?);
        while pending.len() > 1 << 14 {
            let Some(d) = pending.pop_front() else { break };
            if let Err(e) = d.await {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
        progress.tick("records consumed", consumed.load(Ordering::Relaxed));
    }
    for d in pending {
        if let Err(e) = d.await {
            failed += 1;
            first_error.get_or_insert(e.to_string());
        }
    }
    let h = reader.await??;
    progress.done();
    env.finish().await;
    let n = consumed.load(Ordering::Relaxed);
    if t.json {
        println!(
            "{}",
            json!({"records": n, "rate": args.rate, "records_per_sec": n as f64 / args.duration_secs as f64,
                   "mb_per_sec": n as f64 * t.record_size as f64 / args.duration_secs as f64 / 1e6,
                   "latency_ms": latency_json(&h), "partitions": partitions, "failed": failed})
        );
    } else {
        println!(
            "end to end: {n} records at {} records/s over {partitions} partitions (RF {})",
            args.rate, t.replication_factor
        );
        print_latency(&h);
    }
    if failed > 0 || n < total {
        bail!(
            "{failed} sends failed and {} of {total} records were consumed; first error: {}",
            n,
            first_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// Runs `rivulet bench failover`: kill -9 the leader of a partition, time
/// the first acks=all produce acknowledged afterwards, restart the node and
/// time until the ISR is whole again.
pub async fn failover(bootstrap: &str, args: FailoverArgs) -> Result<()> {
    let t = &args.target;
    if t.local_cluster.is_none() {
        bail!("bench failover kills nodes: run it with --local-cluster 3");
    }
    anyhow::ensure!(
        t.replication_factor >= 2,
        "failover needs --replication-factor 2 or more"
    );
    let mut env = Env::new(bootstrap, t).await?;
    env.topic(t).await?;
    let admin = Admin::connect(env.client()).await?;
    let config = ProducerConfig {
        acks: Acks::All,
        linger: Duration::ZERO,
        retry_backoff: Duration::from_millis(5),
        retry_backoff_max: Duration::from_millis(20),
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(env.client(), config).await?;
    let record =
        |p: u32| ProducerRecord::new(t.topic.clone(), vec![b'x'; t.record_size]).partition(p);
    let (mut failovers, mut restores) = (histogram(), histogram());
    for round in 1..=args.rounds {
        // The victim: a partition whose leader is (or is not) the controller.
        let controller = admin.describe_cluster().await?.controller_leader;
        let info = admin.describe_topic(&t.topic).await?;
        let target = info
            .partitions
            .iter()
            .find(|p| p.leader.is_some() && (p.leader == controller) == args.with_controller)
            .with_context(|| {
                format!(
                    "no partition led by {} the active controller; use more partitions",
                    if args.with_controller {
                        ""
                    } else {
                        "a node other than"
                    }
                )
            })?;
        let (partition, leader) = (target.partition, target.leader.expect("filtered"));
        let replicas = target.replicas.len();
        let record = || record(partition);
        producer
            .send_and_wait(record())
            .await
            .context("produce before the kill")?;
        let local = env.local.as_mut().expect("a local cluster");
        let killed = Instant::now();
        local.kill(leader).await;
        producer
            .send_and_wait(record())
            .await
            .context("produce after the kill")?;
        let failover = killed.elapsed();
        // Ask the nodes that stayed up: the restarted one's image starts
        // from before the kill, ISR whole.
        let others: Vec<String> = local
            .ids()
            .into_iter()
            .filter(|i| *i != leader)
            .map(|i| local.addr(i))
            .collect();
        let watcher = Admin::connect(crate::tls::client_config(&others.join(","))).await?;
        local.start(leader)?;
        let restarted = Instant::now();
        loop {
            let info = watcher.describe_topic(&t.topic).await?;
            let isr = info
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .map_or(0, |p| p.isr.len());
            if isr == replicas {
                break;
            }
            anyhow::ensure!(
                restarted.elapsed() < Duration::from_secs(30),
                "the ISR was not whole 30 s after the restart"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let restore = restarted.elapsed();
        let _ = failovers.record(failover.as_micros().max(1) as u64);
        let _ = restores.record(restore.as_micros().max(1) as u64);
        if !t.json {
            println!(
                "round {round}: killed node {leader}, leader of partition {partition}{}; first acks=all ack after {:.0} ms; ISR whole {:.0} ms after restart",
                if args.with_controller { " and the controller" } else { "" },
                failover.as_secs_f64() * 1000.0,
                restore.as_secs_f64() * 1000.0
            );
        }
        // Let the restarted node settle (and leadership move back) before the next round.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    env.finish().await;
    let summary = |h: &Histogram<u64>| json!({"p50": ms(h, 0.5), "max": h.max() as f64 / 1000.0});
    if t.json {
        println!(
            "{}",
            json!({"rounds": args.rounds, "failover_ms": summary(&failovers), "isr_restore_ms": summary(&restores)})
        );
    } else {
        println!(
            "failover ms    p50 {:.0}  max {:.0}   ISR restore ms  p50 {:.0}  max {:.0}",
            ms(&failovers, 0.5),
            failovers.max() as f64 / 1000.0,
            ms(&restores, 0.5),
            restores.max() as f64 / 1000.0
        );
    }
    Ok(())
}
