//! `chaos`: random fault episodes against a real cluster, each checked by the
//! durability checker.
//!
//! ```text
//! cargo build --release -p rivulet-cli -p cluster-tests
//! RIVULET_BIN=target/release/rivulet target/release/chaos --episodes 100 --seed 42
//! ```
//!
//! Starts `--nodes` voters, creates one topic (RF=3, min.insync.replicas=2),
//! then per episode picks a fault and a target at random (from `--seed`),
//! runs the workload through the fault, heals, checks, and prints one line.
//! At the end: a table of the run. Exits non-zero if anything was lost or
//! any invariant broke (the failing episode's problems are printed).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use cluster_tests::chaos::{Fault, Scenario, Tally, Target};
use cluster_tests::checker::{SplitMix64, WorkloadConfig};
use cluster_tests::{fmt_duration, Cluster};

/// Random fault episodes against a real Rivulet cluster.
#[derive(Debug, Parser)]
struct Args {
    /// Episodes to run.
    #[arg(long, default_value_t = 20)]
    episodes: u64,
    /// Seed of the fault, target and batch-size choices (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes, all controller voters and brokers (3 or more).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Approximate length of one episode, in seconds.
    #[arg(long, default_value_t = 6)]
    episode_secs: u64,
    /// Partitions of the topic under test.
    #[arg(long, default_value_t = 2)]
    partitions: u32,
    /// Concurrent producers (producer k writes partition k % partitions).
    #[arg(long, default_value_t = 4)]
    producers: u32,
    /// Records per send: 1..=max-batch.
    #[arg(long, default_value_t = 5)]
    max_batch: u32,
    /// Pause of each producer after an acknowledged send, in ms.
    #[arg(long, default_value_t = 10)]
    send_interval_ms: u64,
    /// Stop at the first failed episode (the cluster's directory is kept).
    #[arg(long)]
    stop_on_failure: bool,
    /// Run the nodes on loopback, without network namespaces or small disks
    /// (no network cuts, no disk-full). By default, where the machine allows
    /// (root, iproute2), each node gets its own namespace and a 256 MiB tmpfs
    /// data dir, so isolation, cuts and full disks are in the mix.
    #[arg(long)]
    loopback: bool,
    /// Every node serves TLS (mutual TLS between them) and the checker's
    /// clients connect over it.
    #[arg(long)]
    tls: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    assert!(args.nodes >= 3, "RF=3 topics need three nodes");
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    println!(
        "chaos: seed {seed}, {} episodes of ~{} s on {} nodes",
        args.episodes, args.episode_secs, args.nodes
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let ok = rt.block_on(run(&args, seed));
    println!(
        "reproduce: cargo run -p cluster-tests --release --bin chaos -- --episodes {} --seed {seed} \
         --nodes {} --episode-secs {} --partitions {} --producers {} --max-batch {} \
         --send-interval-ms {}{}{}",
        args.episodes,
        args.nodes,
        args.episode_secs,
        args.partitions,
        args.producers,
        args.max_batch,
        args.send_interval_ms,
        if args.loopback { " --loopback" } else { "" },
        if args.tls { " --tls" } else { "" }
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(args: &Args, seed: u64) -> bool {
    let started = Instant::now();
    let mut rng = SplitMix64::new(seed);
    let plain = |tls: bool| async move {
        if tls {
            Cluster::start_tls(args.nodes).await
        } else {
            Cluster::start(args.nodes).await
        }
    };
    let mut c = if args.loopback {
        plain(args.tls).await
    } else {
        // A small tmpfs data dir per node too, so disk-full is in the mix.
        match Cluster::start_isolated_with(args.nodes, Some(256), args.tls).await {
            Ok(c) => c,
            Err(e) => {
                println!("chaos: no network namespaces ({e}); no network faults this run");
                plain(args.tls).await
            }
        }
    };
    let on_off = |on: bool, what: &'static str| if on { what } else { "off" };
    println!(
        "chaos: network faults {}, disk-full {}, TLS {}",
        on_off(c.has_network(), "on (a namespace per node)"),
        on_off(c.has_small_disks(), "on (256 MiB tmpfs data dirs)"),
        on_off(c.client_tls().is_some(), "on (mutual TLS between nodes)")
    );
    c.wait_unfenced(&c.ids(), Duration::from_secs(20)).await;
    let cfg = WorkloadConfig {
        topic: "chaos".into(),
        partitions: args.partitions,
        producers: args.producers,
        max_batch: args.max_batch,
        send_interval: Duration::from_millis(args.send_interval_ms),
        seed,
    };
    let mut scenario = Scenario::create(&c, cfg, &[]).await;
    let nodes = usize::try_from(args.nodes).expect("node count fits usize");
    let mut tally = Tally::default();
    let mut healthy = true;
    for _ in 0..args.episodes {
        let fault = Fault::random(&mut rng, nodes, c.has_network(), c.has_small_disks());
        let target = *rng.pick(&Target::ALL);
        let length = Duration::from_secs(args.episode_secs);
        let e = scenario
            .episode(&mut c, fault, target, length, &mut rng)
            .await;
        println!("{}", e.line());
        tally.add(&e);
        if e.failed() {
            for p in e.problems() {
                println!("    {p}");
            }
            if e.heal.is_err() || args.stop_on_failure {
                healthy = false;
                break;
            }
        }
    }
    println!();
    println!(
        "chaos: seed {seed}, {} nodes, {}",
        args.nodes,
        fmt_duration(started.elapsed())
    );
    print!("{}", tally.table());
    let ok = healthy && tally.failed == 0 && tally.lost == 0;
    if ok {
        // Marks the run as checked: the cluster's directory is removed.
        c.assert_no_unexpected_errors(&[]);
    } else {
        println!("chaos: FAILED; the node logs are kept (path below)");
    }
    ok
}
