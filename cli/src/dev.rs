//! `rivulet dev`: a local N-node cluster as child processes of this command,
//! for trying Rivulet without docker. Every node is a controller voter and a
//! broker on 127.0.0.1; data and logs live under `--data-dir` and survive a
//! restart of the command. Ctrl-C stops the nodes (SIGTERM, then SIGKILL after
//! a grace period). A node that dies (say, you `kill -9` it to watch a
//! failover) is reported and the others keep running.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::local::LocalCluster;

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
    /// Serve TLS (and mutual TLS between the nodes), with a development CA
    /// and certificates made in `<data-dir>/tls` on first use.
    #[arg(long)]
    tls: bool,
    /// Require a user on every client call (implies --tls): the nodes run
    /// with --require-auth, a super user `admin` is created with a random
    /// password kept in `<data-dir>/users` (printed at start).
    #[arg(long)]
    require_auth: bool,
    /// Port of node 1's Kafka listener (node i: + i - 1), for kcat,
    /// librdkafka, kafka-python and the Java client.
    #[arg(long, default_value_t = 19092)]
    kafka_base_port: u16,
    /// Serve no Kafka listener. (With --tls it serves TLS; with
    /// --require-auth its clients authenticate with SASL SCRAM-SHA-256/512
    /// or PLAIN as `admin`.)
    #[arg(long)]
    no_kafka: bool,
}

/// Runs the dev cluster until Ctrl-C or SIGTERM.
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
    let ports: Vec<u16> = (0..args.nodes as u16).map(|i| args.base_port + i).collect();
    let tls = args.tls || args.require_auth;
    let mut extra = Vec::new();
    let mut admin_password = None;
    if args.require_auth {
        std::fs::create_dir_all(&args.data_dir)?;
        let file = args.data_dir.join("users");
        if !file.exists() {
            let mut raw = [0u8; 12];
            getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no random bytes: {e}"))?;
            let pw: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(&file, format!("admin:{pw}\n"))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        let text = std::fs::read_to_string(&file)?;
        let users = rivulet_metadata::security::parse_users_file(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let admin = users
            .into_iter()
            .find(|u| u.user == "admin")
            .ok_or_else(|| anyhow::anyhow!("{} has no admin user", file.display()))?;
        admin_password = Some(admin.password.clone());
        crate::tls::set_user(Some(admin), false);
        extra.extend([
            "--require-auth".to_owned(),
            "--super-users".to_owned(),
            "User:admin".to_owned(),
            "--initial-users-file".to_owned(),
            file.canonicalize()?.display().to_string(),
        ]);
    }
    let kafka_ports = if args.no_kafka {
        None
    } else {
        anyhow::ensure!(
            u32::from(args.kafka_base_port) + args.nodes as u32 <= 65_536,
            "--kafka-base-port leaves no room for {} nodes",
            args.nodes
        );
        Some(
            (0..args.nodes as u16)
                .map(|i| args.kafka_base_port + i)
                .collect(),
        )
    };
    let mut cluster =
        LocalCluster::spawn_with_kafka(&args.data_dir, ports, kafka_ports, &extra, tls)?;
    eprintln!(
        "starting {} nodes (logs in {})...",
        args.nodes,
        cluster.data_dir().display()
    );
    let cluster_id = cluster
        .wait_ready(args.nodes as usize, Duration::from_secs(30))
        .await?;
    println!("Rivulet dev cluster {cluster_id} is up.");
    println!();
    for i in cluster.ids() {
        println!(
            "  node {i}: {}  pid {}  log {}",
            cluster.addr(i),
            cluster.pid(i).map_or("-".into(), |p| p.to_string()),
            cluster.log_path(i).display()
        );
        println!("    restart it with: {}", cluster.command_line(i));
    }
    println!();
    println!("  export RIVULET_BOOTSTRAP={}", cluster.bootstrap());
    let ca = cluster
        .data_dir()
        .join(crate::local::TLS_DIR)
        .join("ca.pem");
    if let Some(k) = cluster.kafka_bootstrap() {
        let mut props = vec![format!("bootstrap.servers={k}")];
        match (tls, &admin_password) {
            (true, Some(pw)) => props.extend([
                "security.protocol=SASL_SSL".to_owned(),
                "sasl.mechanisms=SCRAM-SHA-256".to_owned(),
                "sasl.username=admin".to_owned(),
                format!("sasl.password={pw}"),
            ]),
            (true, None) => props.push("security.protocol=SSL".to_owned()),
            _ => {}
        }
        if tls {
            props.push(format!("ssl.ca.location={}", ca.display()));
        }
        let kcat: String = props.iter().skip(1).map(|p| format!(" -X {p}")).collect();
        println!("  Kafka clients: {}", props.join(" "));
        println!("    kcat -b {k}{kcat} -L");
    }
    if tls {
        println!("  export RIVULET_TLS_CA={}", ca.display());
    }
    if let Some(pw) = &admin_password {
        println!("  export RIVULET_USER=admin RIVULET_PASSWORD={pw}");
    }
    println!("  rivulet cluster status");
    println!("  rivulet topic create orders --partitions 3 --replication-factor 3");
    println!("  seq 1 1000 | rivulet produce orders");
    println!("  rivulet consume orders --from-beginning --timeout-ms 2000");
    println!("  rivulet topic describe orders");
    println!();
    println!("Press Ctrl-C to stop the cluster.");

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // SIGTERM (kill, a supervisor) stops the cluster like Ctrl-C does.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                for (i, status) in cluster.exited()? {
                    eprintln!("node {i} exited ({status}); the others keep running");
                }
            }
        }
    }
    eprintln!("stopping...");
    let data_dir = cluster.data_dir().to_path_buf();
    cluster.stop(Duration::from_secs(5)).await;
    eprintln!("stopped. Data kept in {}", data_dir.display());
    Ok(())
}
