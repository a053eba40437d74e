//! `rivulet`: one binary for the node and the client tools.
//!
//! `main` only parses arguments, sets up logging and the runtime, and
//! dispatches; each subcommand lives in its own module.

mod admin;
mod bench;
mod bench_cluster;
mod clients;
mod dev;
mod groups;
mod local;
mod logging;
mod node;
mod security;
mod tls;

use clap::{Parser, Subcommand};

/// Rivulet: a Kafka-style event streaming cluster.
#[derive(Debug, Parser)]
#[command(name = "rivulet", version, about, long_about = None)]
struct Cli {
    /// Nodes to contact, `host:port,...` (any node answers; the first that
    /// responds is used).
    #[arg(
        long,
        global = true,
        env = "RIVULET_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: String,
    #[command(flatten)]
    tls: tls::TlsArgs,
    #[command(flatten)]
    user: tls::UserArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a cluster node (controller voter or learner, and broker).
    Node(Box<node::NodeArgs>),
    /// Run a local N-node cluster as child processes (no docker needed).
    Dev(dev::DevArgs),
    /// Inspect the cluster.
    #[command(subcommand)]
    Cluster(admin::ClusterCommand),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(admin::TopicCommand),
    /// Write stdin lines to a topic, one record per line.
    Produce(clients::ProduceArgs),
    /// Print a topic's records to stdout, one value per line (alone, or as
    /// a member of a consumer group with `--group`).
    Consume(clients::ConsumeArgs),
    /// List, describe (with lag), reset and delete consumer groups.
    #[command(subcommand)]
    Group(groups::GroupCommand),
    /// Measure Rivulet's performance.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Make a development CA and TLS certificates for nodes and clients
    /// (no openssl needed).
    Cert(tls::CertArgs),
    /// Create, list and delete users (SCRAM credentials; the password never
    /// leaves this process).
    #[command(subcommand)]
    User(security::UserCommand),
    /// Create, list and delete ACLs (what each user may do).
    #[command(subcommand)]
    Acl(security::AclCommand),
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        // Log I/O runs on blocking threads: a bound, so no request can make
        // a node spawn hundreds (tokio's default is 512).
        .max_blocking_threads(64)
        .enable_all()
        .build()?)
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "node") {
        if let Err(e) = node::apply_config_file(&args) {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
    let cli = Cli::parse();
    if let Err(e) = tls::init_client(&cli.tls).and_then(|()| tls::init_user(&cli.user)) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
    let result = match cli.command {
        Command::Node(args) => {
            // openraft's replication module logs every failed RPC to a down peer at
            // ERROR, twice a second; our own lines report the peer's fencing.
            logging::init(
                Some(args.id),
                "info,openraft=warn,openraft::replication=off",
            );
            runtime(args.threads).and_then(|rt| rt.block_on(node::run(*args, &cli.tls)))
        }
        Command::Dev(args) => {
            logging::init(None, "warn");
            runtime(2).and_then(|rt| rt.block_on(dev::run(args)))
        }
        Command::Cluster(cmd) => {
            logging::init(None, "warn");
            runtime(1).and_then(|rt| rt.block_on(admin::cluster(&cli.bootstrap, cmd)))
        }
        Command::Topic(cmd) => {
            logging::init(None, "warn");
            runtime(1).and_then(|rt| rt.block_on(admin::topic(&cli.bootstrap, cmd)))
        }
        Command::Group(cmd) => {
            logging::init(None, "warn");
            runtime(1).and_then(|rt| rt.block_on(groups::run(&cli.bootstrap, cmd)))
        }
        Command::Produce(args) => {
            logging::init(None, "warn");
            runtime(2).and_then(|rt| rt.block_on(clients::produce(&cli.bootstrap, args)))
        }
        Command::Consume(args) => {
            logging::init(None, "warn");
            runtime(2).and_then(|rt| rt.block_on(clients::consume(&cli.bootstrap, args)))
        }
        Command::Bench(cmd) => {
            logging::init(None, "warn");
            bench::run(cmd, &cli.bootstrap)
        }
        Command::Cert(args) => tls::run_cert(&args),
        Command::User(cmd) => {
            logging::init(None, "warn");
            runtime(1).and_then(|rt| rt.block_on(security::user(&cli.bootstrap, cmd)))
        }
        Command::Acl(cmd) => {
            logging::init(None, "warn");
            runtime(1).and_then(|rt| rt.block_on(security::acl(&cli.bootstrap, cmd)))
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
