//! `rivulet bench`: performance measurements that print numbers.
//!
//! `bench storage` measures the partition log on this machine's disk: append
//! throughput with flush `never` and `always` (one writer, and several writers
//! sharing fsyncs through group commit), sequential read throughput, and the
//! disk's own sequential write + fdatasync rate as the yardstick for `always`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use rivulet_broker::log::batch::build_batch;
use rivulet_broker::log::{
    AppendOrigin, FileLog, FlushPolicy, LogConfig, PartitionLog, ReadBound, RecordInput,
};
use serde::Serialize;

/// What to benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Partition log storage on this disk: append and read throughput.
    Storage(StorageArgs),
    /// Produce throughput and send-to-ack latency.
    Produce(crate::bench_cluster::ProduceArgs),
    /// Consume throughput (records are produced first if needed).
    Consume(crate::bench_cluster::ConsumeArgs),
    /// Produce-to-consume latency at a fixed rate.
    E2e(crate::bench_cluster::E2eArgs),
    /// kill -9 of a partition leader: time to the first acks=all produce
    /// acknowledged, and to a whole ISR after a restart (needs --local-cluster).
    Failover(crate::bench_cluster::FailoverArgs),
}

/// Options of `rivulet bench storage`.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Directory to benchmark in (a temporary directory is made inside it and
    /// removed afterwards). Default: the system temp directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Bytes per record value (keys are 8 bytes).
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Batch sizes to test, in KiB, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [16usize, 64])]
    batch_kib: Vec<usize>,
    /// Megabytes appended per `flush=never` run (and read back).
    #[arg(long, default_value_t = 512)]
    never_mb: u64,
    /// Megabytes appended per `flush=always` run (each append waits for an fsync).
    #[arg(long, default_value_t = 48)]
    always_mb: u64,
    /// Concurrent writers in the group-commit run.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// One measured scenario.
#[derive(Debug, Serialize)]
struct Row {
    /// What was measured: `append`, `read` or `disk-baseline`.
    op: &'static str,
    /// Flush policy (or `fdatasync` for the baseline).
    flush: &'static str,
    /// Concurrent writers.
    writers: usize,
    /// Bytes per batch (per write for the baseline).
    batch_bytes: usize,
    /// Bytes moved.
    bytes: u64,
    /// Records moved.
    records: u64,
    /// Wall time.
    seconds: f64,
    /// Throughput in MB/s (10^6 bytes).
    mb_per_sec: f64,
    /// Throughput in records/s.
    records_per_sec: f64,
    /// fsync calls made (append rows).
    fsyncs: u64,
}

impl Row {
    #[allow(clippy::too_many_arguments)]
    fn new(
        op: &'static str,
        flush: &'static str,
        writers: usize,
        batch_bytes: usize,
        bytes: u64,
        records: u64,
        elapsed: Duration,
        fsyncs: u64,
    ) -> Self {
        let s = elapsed.as_secs_f64().max(1e-9);
        Self {
            op,
            flush,
            writers,
            batch_bytes,
            bytes,
            records,
            seconds: s,
            mb_per_sec: bytes as f64 / s / 1e6,
            records_per_sec: records as f64 / s,
            fsyncs,
        }
    }
}

/// Runs a benchmark subcommand.
pub fn run(cmd: BenchCommand, bootstrap: &str) -> Result<()> {
    use crate::bench_cluster as c;
    let rt = || crate::runtime(2);
    match cmd {
        BenchCommand::Storage(args) => storage(args),
        BenchCommand::Produce(args) => rt()?.block_on(c::produce(bootstrap, args)),
        BenchCommand::Consume(args) => rt()?.block_on(c::consume(bootstrap, args)),
        BenchCommand::E2e(args) => rt()?.block_on(c::e2e(bootstrap, args)),
        BenchCommand::Failover(args) => rt()?.block_on(c::failover(bootstrap, args)),
    }
}

/// A batch of about `target_bytes` made of `record_size`-byte records.
fn make_batch(target_bytes: usize, record_size: usize) -> Result<(Vec<u8>, u64)> {
    let value = Bytes::from(vec![b'x'; record_size]);
    // ~ varints + attributes + 8-byte key per record.
    let per_record = record_size + 8 + 8;
    let n = (target_bytes.saturating_sub(61) / per_record).max(1);
    let records: Vec<RecordInput> = (0..n)
        .map(|i| RecordInput {
            key: Some(Bytes::from(format!("{i:08}"))),
            value: Some(value.clone()),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000,
        })
        .collect();
    Ok((build_batch(&records)?.to_vec(), n as u64))
}

fn storage(args: StorageArgs) -> Result<()> {
    anyhow::ensure!(args.record_size > 0, "--record-size must be at least 1");
    anyhow::ensure!(
        !args.batch_kib.is_empty(),
        "--batch-kib needs at least one size"
    );
    anyhow::ensure!(args.writers > 0, "--writers must be at least 1");
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let root = tempfile::Builder::new()
        .prefix("rivulet-bench-storage-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    let mut rows = Vec::new();
    let progress = |what: String| {
        if !args.json {
            eprintln!("running: {what}");
        }
    };

    for &kib in &args.batch_kib {
        anyhow::ensure!(
            kib > 0 && kib <= 1024,
            "--batch-kib values must be 1..=1024"
        );
        let (template, per_batch) = make_batch(kib * 1024, args.record_size)?;
        let bb = template.len();
        let never_mb = args.never_mb;
        let always_mb = args.always_mb;

        progress(format!(
            "disk baseline: {kib} KiB writes + fdatasync, {always_mb} MB"
        ));
        let path = root.path().join(format!("baseline-{kib}"));
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        let writes = (always_mb * 1_000_000 / bb as u64).max(1);
        let start = Instant::now();
        for _ in 0..writes {
            f.write_all(&template)?;
            f.sync_data()?;
        }
        rows.push(Row::new(
            "disk-baseline",
            "fdatasync",
            1,
            bb,
            writes * bb as u64,
            writes * per_batch,
            start.elapsed(),
            writes,
        ));
        drop(f);
        std::fs::remove_file(&path)?;

        for (flush, name, mb, writers) in [
            (FlushPolicy::Never, "never", never_mb, 1),
            (FlushPolicy::Always, "always", always_mb, 1),
            (FlushPolicy::Always, "always", always_mb, args.writers),
        ] {
            progress(format!(
                "append: {kib} KiB batches, flush={name}, {writers} writer(s), {mb} MB"
            ));
            let dir = root.path().join(format!("log-{kib}-{name}-{writers}"));
            let config = LogConfig {
                flush,
                ..LogConfig::default()
            };
            let log = Arc::new(FileLog::open(&dir, config)?);
            let appends = (mb * 1_000_000 / bb as u64).max(writers as u64);
            let per_writer = appends / writers as u64;
            let start = Instant::now();
            std::thread::scope(|s| -> Result<()> {
                let handles: Vec<_> = (0..writers)
                    .map(|_| {
                        let log = Arc::clone(&log);
                        let template = &template;
                        s.spawn(move || -> Result<()> {
                            let mut buf = template.clone();
                            for _ in 0..per_writer {
                                buf.copy_from_slice(template);
                                log.append(&mut buf, AppendOrigin::Leader { epoch: 1 })?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for h in handles {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
                }
                Ok(())
            })?;
            let elapsed = start.elapsed();
            let total = per_writer * writers as u64;
            rows.push(Row::new(
                "append",
                name,
                writers,
                bb,
                total * bb as u64,
                total * per_batch,
                elapsed,
                log.stats().fsyncs.load(Ordering::Relaxed),
            ));

            if matches!(flush, FlushPolicy::Never) {
                progress(format!("read: {kib} KiB batches, sequential, 1 MiB reads"));
                let end = log.offsets().log_end_offset;
                log.set_high_watermark(end);
                let start = Instant::now();
                let (mut offset, mut bytes) = (0u64, 0u64);
                while offset < end {
                    let chunk = log.read(offset, 1 << 20, ReadBound::HighWatermark)?;
                    anyhow::ensure!(!chunk.is_empty(), "read stalled at offset {offset}");
                    let last = rivulet_broker::log::batch::headers(&chunk)
                        .last()
                        .map(|(_, h)| h.next_offset())
                        .context("read returned no whole batch")?;
                    bytes += chunk.len() as u64;
                    offset = last;
                }
                rows.push(Row::new("read", "-", 1, bb, bytes, end, start.elapsed(), 0));
            }
            drop(log);
            std::fs::remove_dir_all(&dir)?;
        }
    }

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "storage": rows }))?
        );
    } else {
        println!(
            "{:<14} {:<10} {:>7} {:>9} {:>10} {:>14} {:>9} {:>8}",
            "op", "flush", "writers", "batch", "MB/s", "records/s", "fsyncs", "seconds"
        );
        for r in &rows {
            println!(
                "{:<14} {:<10} {:>7} {:>8}K {:>10.1} {:>14.0} {:>9} {:>8.2}",
                r.op,
                r.flush,
                r.writers,
                r.batch_bytes / 1024,
                r.mb_per_sec,
                r.records_per_sec,
                r.fsyncs,
                r.seconds
            );
        }
    }
    Ok(())
}
