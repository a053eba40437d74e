//! `rivulet produce` and `rivulet consume`: stdin lines to records, records
//! to stdout lines, through the rivulet-client producer and consumer.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use rivulet_client::{
    Acks, Compression, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig, GroupConsumer,
    OffsetReset, Partitioner, Producer, ProducerConfig, ProducerRecord, RebalanceEvent, SeekTo,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// `--acks` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AcksArg {
    /// Do not wait for the broker.
    #[value(name = "0")]
    Zero,
    /// Wait for the leader's append.
    #[value(name = "1")]
    One,
    /// Wait until every in-sync replica has the record.
    #[value(name = "all")]
    All,
}

/// Options of `rivulet produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value = "all")]
    acks: AcksArg,
    /// Write every record to this partition (default: by key hash, or
    /// spread over partitions for records without a key).
    #[arg(long)]
    partition: Option<u32>,
    /// Split each line at the first occurrence of this string into key and
    /// value (e.g. `--key-separator :` reads `key:value`).
    #[arg(long)]
    key_separator: Option<String>,
    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// How long a batch waits for more records (ms).
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Give up on a record after this long, retries included (ms).
    #[arg(long, default_value_t = 30_000)]
    delivery_timeout_ms: u64,
    /// Where records without a key go: `until-sent` (one partition until
    /// its batch is sent: fewest, largest appends) or `uniform-sticky`
    /// (Kafka's KIP-794: move on after batch-size bytes, evenly).
    #[arg(long, default_value = "until-sent")]
    partitioner: String,
    /// Turn the idempotent producer off. With acks=all (the default) it is
    /// on: a batch resent after a lost answer or a leader change is stored
    /// once (Kafka's enable.idempotence). Other acks levels never use it.
    #[arg(long)]
    no_idempotence: bool,
}

/// Options of `rivulet consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Start at the oldest record kept (default: only new records).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (in every consumed partition).
    #[arg(long)]
    offset: Option<u64>,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Exit after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Exit after this long without a new record (ms); default: run until Ctrl-C.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print each record's key before its value, tab separated.
    #[arg(long)]
    print_key: bool,
    /// Print `partition:offset` before each record, tab separated.
    #[arg(long)]
    print_offset: bool,
    /// Read as a member of this consumer group: the group's coordinator
    /// splits the topic's partitions among its members, reading starts at
    /// the group's committed offsets (else at the end, or the beginning with
    /// --from-beginning), and offsets are committed every 5 s, before a
    /// partition moves to another member, and on exit.
    #[arg(long, conflicts_with_all = ["offset", "partition"])]
    group: Option<String>,
    /// With --group: expire this member after this long without a heartbeat
    /// (ms).
    #[arg(long, requires = "group", default_value_t = 10_000)]
    session_timeout_ms: u64,
    /// Skip record batches that cannot be decoded (written before the
    /// cluster checked records on produce, or damaged), with a warning naming
    /// each one's partition and offsets. Without it, consuming stops at such
    /// a batch with an error saying where it is. Skipped records are lost to
    /// this consumer (and, with --group, the commit moves past them).
    #[arg(long)]
    skip_undecodable: bool,
}

/// Strips one trailing `\n` or `\r\n`.
fn chomp(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    line
}

/// Splits `line` at the first `sep`.
fn split_key(line: &[u8], sep: &[u8]) -> Option<(Bytes, Bytes)> {
    let at = line.windows(sep.len()).position(|w| w == sep)?;
    Some((
        Bytes::copy_from_slice(&line[..at]),
        Bytes::copy_from_slice(&line[at + sep.len()..]),
    ))
}

/// Runs `rivulet produce`.
pub async fn produce(bootstrap: &str, args: ProduceArgs) -> Result<()> {
    let compression: Compression = args.compression.parse()?;
    let partitioner: Partitioner = args.partitioner.parse()?;
    if args.key_separator.as_deref() == Some("") {
        bail!("--key-separator must not be empty");
    }
    let config = ProducerConfig {
        acks: match args.acks {
            AcksArg::Zero => Acks::None,
            AcksArg::One => Acks::Leader,
            AcksArg::All => Acks::All,
        },
        linger: Duration::from_millis(args.linger_ms),
        compression,
        delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
        partitioner,
        idempotence: args.no_idempotence.then_some(false),
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(crate::tls::client_config(bootstrap), config)
        .await
        .context("cannot start the producer")?;
    // Fail before reading stdin when the target cannot exist.
    let partitions = producer.partitions(&args.topic).await?;
    if let Some(p) = args.partition.filter(|p| *p >= partitions) {
        bail!(
            "topic '{}' has no partition {p}: it has {partitions} (0..{})",
            args.topic,
            partitions - 1
        );
    }

    // Deliveries are awaited in order by a collector, so memory stays bounded.
    let (tx, mut rx) = mpsc::channel::<(u64, rivulet_client::DeliveryFuture)>(100_000);
    let collector = tokio::spawn(async move {
        let (mut acked, mut failed, mut first_error) = (0u64, 0u64, None);
        while let Some((line, delivery)) = rx.recv().await {
            match delivery.await {
                Ok(_) => acked += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("line {line}: {e}"));
                }
            }
        }
        (acked, failed, first_error)
    });

    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let mut lines = BufReader::new(tokio::io::stdin());
    let mut buf = Vec::new();
    let (mut n, mut bad_lines, mut first_bad) = (0u64, 0u64, None);
    loop {
        buf.clear();
        if lines.read_until(b'\n', &mut buf).await? == 0 {
            break;
        }
        n += 1;
        let line = chomp(std::mem::take(&mut buf));
        let mut rec = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            ..ProducerRecord::default()
        };
        match &args.key_separator {
            Some(sep) => match split_key(&line, sep.as_bytes()) {
                Some((k, v)) => {
                    rec.key = Some(k);
                    rec.value = Some(v);
                }
                None => {
                    bad_lines += 1;
                    first_bad
                        .get_or_insert_with(|| format!("line {n} has no key separator {sep:?}"));
                    continue;
                }
            },
            None => rec.value = Some(Bytes::from(line)),
        }
        let delivery = producer.send(rec).await?;
        if tx.send((n, delivery)).await.is_err() {
            break;
        }
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprint!("\rsent {n} records ({:.0}/s)   ", n as f64 / secs);
        }
    }
    drop(tx);
    producer.flush().await?;
    let (acked, failed, first_error) = collector.await?;
    if progress && started.elapsed() >= Duration::from_secs(1) {
        eprintln!();
    }
    let total_failed = failed + bad_lines;
    if total_failed > 0 {
        let reason = first_bad.or(first_error).unwrap_or_default();
        bail!("{total_failed} of {n} records were not acknowledged; first: {reason}");
    }
    if progress {
        eprintln!(
            "produced {acked} records to {} in {:.2}s",
            args.topic,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Writes one record as `rivulet consume` prints it.
fn print_record(out: &mut impl Write, args: &ConsumeArgs, r: &ConsumerRecord) -> Result<()> {
    if args.print_offset {
        write!(out, "{}:{}\t", r.partition, r.offset)?;
    }
    if args.print_key {
        out.write_all(r.key.as_deref().unwrap_or_default())?;
        out.write_all(b"\t")?;
    }
    out.write_all(r.value.as_deref().unwrap_or_default())?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs `rivulet consume --group`: prints records of the partitions the
/// coordinator assigns, commits what it printed.
async fn consume_group(bootstrap: &str, group: &str, args: &ConsumeArgs) -> Result<()> {
    let config = GroupConfig {
        consumer: ConsumerConfig {
            offset_reset: if args.from_beginning {
                OffsetReset::Earliest
            } else {
                OffsetReset::Latest
            },
            max_wait: Duration::from_millis(args.timeout_ms.unwrap_or(500).clamp(10, 500)),
            skip_undecodable: args.skip_undecodable,
            ..ConsumerConfig::default()
        },
        session_timeout: Duration::from_millis(args.session_timeout_ms),
        client_id: format!("rivulet-cli@{}", std::process::id()),
        ..GroupConfig::default()
    };
    let mut consumer = GroupConsumer::subscribe(
        crate::tls::client_config(bootstrap),
        group,
        &[&args.topic],
        config,
    )
    .await
    .context("cannot join the group")?;
    let timeout = args.timeout_ms.map(Duration::from_millis);
    let progress = std::io::stderr().is_terminal();
    let mut last_record = Instant::now();
    let mut count = 0u64;
    let stdout = std::io::stdout();
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        if args.max_messages.is_some_and(|m| count >= m)
            || timeout.is_some_and(|t| last_record.elapsed() >= t)
        {
            break;
        }
        let records = tokio::select! {
            r = consumer.poll() => r?,
            _ = &mut stop => break,
        };
        if progress {
            for e in consumer.take_events() {
                eprintln!("{}", describe_event(&e));
            }
        }
        if !records.is_empty() {
            last_record = Instant::now();
        }
        let mut out = stdout.lock();
        // Where to rewind partitions whose records were not printed.
        let mut unprinted: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for r in &records {
            if args.max_messages.is_some_and(|m| count >= m) {
                unprinted
                    .entry((r.topic.clone(), r.partition))
                    .or_insert(r.offset);
                continue;
            }
            print_record(&mut out, args, r)?;
            count += 1;
        }
        out.flush()?;
        for ((t, p), o) in unprinted {
            consumer.seek(&t, p, o)?;
        }
    }
    let (member, _) = consumer.member();
    consumer
        .close()
        .await
        .context("committing offsets on exit failed")?;
    if progress {
        eprintln!(
            "consumed {count} records from {} as {member} of group {group}",
            args.topic
        );
    }
    Ok(())
}

fn describe_event(e: &RebalanceEvent) -> String {
    let list = |v: &[(String, u32)]| {
        v.iter()
            .map(|(t, p)| format!("{t}-{p}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    match e {
        RebalanceEvent::Assigned(v) => format!("assigned {}", list(v)),
        RebalanceEvent::Revoked(v) => format!("revoked {}", list(v)),
        RebalanceEvent::Lost(v) => format!("lost {} (fenced; rejoined)", list(v)),
    }
}

/// Refuses `--offset` past the end of a partition it applies to: the
/// consumer would otherwise reset to the end silently.
async fn check_offset_in_range(
    bootstrap: &str,
    topic: &str,
    partition: Option<u32>,
    offset: u64,
) -> Result<()> {
    let admin = rivulet_client::Admin::connect(crate::tls::client_config(bootstrap)).await?;
    let partitions: Vec<u32> = match partition {
        Some(p) => vec![p],
        None => {
            let t = admin.describe_topic(topic).await?;
            t.partitions.iter().map(|p| p.partition).collect()
        }
    };
    let mut past = Vec::new();
    for p in partitions {
        let o = admin.partition_offsets(topic, p).await?;
        if offset > o.high_watermark {
            past.push(format!("{topic}-{p} ends at {}", o.high_watermark));
        }
    }
    anyhow::ensure!(
        past.is_empty(),
        "--offset {offset} is past the end of the log: {}",
        past.join(", ")
    );
    Ok(())
}

/// Runs `rivulet consume`.
pub async fn consume(bootstrap: &str, args: ConsumeArgs) -> Result<()> {
    if let Some(group) = args.group.clone() {
        return consume_group(bootstrap, &group, &args).await;
    }
    let config = ConsumerConfig {
        offset_reset: if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        max_wait: Duration::from_millis(args.timeout_ms.unwrap_or(500).clamp(10, 500)),
        skip_undecodable: args.skip_undecodable,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(crate::tls::client_config(bootstrap), config)
        .await
        .context("cannot connect")?;
    let partitions: Vec<u32> = args.partition.into_iter().collect();
    consumer.assign(&args.topic, &partitions).await?;
    if let Some(o) = args.offset {
        check_offset_in_range(bootstrap, &args.topic, args.partition, o).await?;
        consumer
            .seek(&args.topic, args.partition, SeekTo::Offset(o))
            .await?;
    } else if args.from_beginning {
        consumer
            .seek(&args.topic, args.partition, SeekTo::Beginning)
            .await?;
    } else {
        consumer
            .seek(&args.topic, args.partition, SeekTo::End)
            .await?;
    }
    let timeout = args.timeout_ms.map(Duration::from_millis);
    let progress = std::io::stderr().is_terminal() && !std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_record = Instant::now();
    let mut count = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.max_messages.is_some_and(|m| count >= m) {
            break;
        }
        if timeout.is_some_and(|t| last_record.elapsed() >= t) {
            break;
        }
        let records = tokio::select! {
            r = consumer.poll() => r?,
            _ = tokio::signal::ctrl_c() => break,
        };
        if !records.is_empty() {
            last_record = Instant::now();
        }
        let mut out = stdout.lock();
        for r in records {
            if args.max_messages.is_some_and(|m| count >= m) {
                break;
            }
            print_record(&mut out, &args, &r)?;
            count += 1;
        }
        out.flush()?;
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprint!(
                "\rconsumed {count} records ({:.0}/s)   ",
                count as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    if progress {
        eprintln!("\rconsumed {count} records from {}", args.topic);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_their_line_ending_only() {
        assert_eq!(chomp(b"a b\r\n".to_vec()), b"a b");
        assert_eq!(chomp(b"a\n".to_vec()), b"a");
        assert_eq!(chomp(b"a".to_vec()), b"a");
        assert_eq!(chomp(b"\n".to_vec()), b"");
    }

    #[test]
    fn keys_split_at_the_first_separator() {
        let (k, v) = split_key(b"user-1::a::b", b"::").unwrap();
        assert_eq!((&k[..], &v[..]), (&b"user-1"[..], &b"a::b"[..]));
        assert!(split_key(b"no-separator", b":").is_none());
    }
}
