//! `rivulet`: one binary for the node and the client tools.
//!
//! `main` only parses arguments, sets up logging and dispatches; each
//! subcommand lives in its own module.

mod bench;

use clap::{Parser, Subcommand};

/// Rivulet: a Kafka-style event streaming cluster.
#[derive(Debug, Parser)]
#[command(name = "rivulet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure Rivulet's performance.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RIVULET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(cmd) => bench::run(cmd),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
