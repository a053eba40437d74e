//! `rivulet dev`: a local N-node cluster as child processes of this command,
//! for trying Rivulet without docker. Every node is a controller voter and a
//! broker on 127.0.0.1; data and logs live under `--data-dir` and survive a
//! restart of the command. Ctrl-C stops the nodes (SIGTERM, then SIGKILL after
//! a grace period). A node that dies (say, you `kill -9` it to watch a
//! failover) is reported and the others keep running.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use rivulet_proto::v1::DescribeClusterRequest;
use tokio::process::{Child, Command};

/// Options of `rivulet dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Number of nodes (each a controller voter and a broker).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Where the nodes keep their data and logs.
    #[arg(long, default_value = "rivulet-dev-data")]
    data_dir: PathBuf,
    /// Port of node 1; node i listens on base-port + i - 1.
    #[arg(long, default_value_t = 9092)]
    base_port: u16,
}

fn signal(child: &Child, sig: &str) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status();
    }
}

/// Runs the dev cluster until Ctrl-C.
pub async fn run(args: DevArgs) -> Result<()> {
    anyhow::ensure!(
        (1..=9).contains(&args.nodes),
        "--nodes must be between 1 and 9"
    );
    anyhow::ensure!(
        u32::from(args.base_port) + args.nodes as u32 <= 65_536,
        "--base-port leaves no room for {} nodes",
        args.nodes
    );
    let exe = std::env::current_exe().context("cannot find the rivulet binary")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let addr = |i: u64| format!("127.0.0.1:{}", u64::from(args.base_port) + i - 1);
    let voters: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{i}@{}", addr(i)))
        .collect();
    let voters = voters.join(",");

    let mut children: Vec<(u64, Child)> = Vec::new();
    for i in 1..=args.nodes {
        let log_path = data_dir.join(format!("node-{i}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let child = Command::new(&exe)
            .args(["node", "--id", &i.to_string(), "--listen", &addr(i)])
            .arg("--data-dir")
            .arg(data_dir.join(format!("node-{i}")))
            .args(["--voters", &voters])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {i}"))?;
        children.push((i, child));
    }
    eprintln!(
        "starting {} nodes (logs in {})...",
        args.nodes,
        data_dir.display()
    );

    // Ready: node 1 knows a leader and every broker registered.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = async {
            let mut c = crate::admin::connect(&addr(1)).await.ok()?;
            let d = c
                .describe_cluster(DescribeClusterRequest {})
                .await
                .ok()?
                .into_inner();
            let live = d.brokers.iter().filter(|b| !b.fenced).count() as u64;
            (d.controller_leader.is_some() && live == args.nodes).then_some(d)
        }
        .await;
        if let Some(d) = ready {
            println!("Rivulet dev cluster {} is up.", d.cluster_id);
            break;
        }
        for (i, c) in &mut children {
            if let Some(status) = c.try_wait()? {
                anyhow::bail!(
                    "node {i} exited during start-up ({status}); see {}",
                    data_dir.join(format!("node-{i}.log")).display()
                );
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the cluster did not come up within 30 s; see the logs in {}",
            data_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bootstrap: Vec<String> = (1..=args.nodes).map(addr).collect();
    println!();
    for (i, c) in &children {
        println!(
            "  node {i}: {}  pid {}  log {}",
            addr(*i),
            c.id().map_or("-".into(), |p| p.to_string()),
            data_dir.join(format!("node-{i}.log")).display()
        );
    }
    println!();
    println!("  export RIVULET_BOOTSTRAP={}", bootstrap.join(","));
    println!("  rivulet cluster status");
    println!("  rivulet topic create orders --partitions 3 --replication-factor 3");
    println!("  rivulet topic describe orders");
    println!();
    println!("Press Ctrl-C to stop the cluster.");

    let mut reported = vec![false; children.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // SIGTERM (kill, a supervisor) stops the cluster like Ctrl-C does.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                for (k, (i, c)) in children.iter_mut().enumerate() {
                    if !reported[k] {
                        if let Some(status) = c.try_wait()? {
                            eprintln!("node {i} exited ({status}); the others keep running");
                            reported[k] = true;
                        }
                    }
                }
            }
        }
    }
    eprintln!("stopping...");
    for (_, c) in &children {
        signal(c, "TERM");
    }
    let grace = Instant::now() + Duration::from_secs(5);
    for (i, c) in &mut children {
        let left = grace.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, c.wait()).await.is_err() {
            eprintln!("node {i} did not stop in time; killing it");
            let _ = c.kill().await;
        }
    }
    eprintln!("stopped. Data kept in {}", data_dir.display());
    Ok(())
}
