//! Multi-process tests for Rivulet: a harness that runs real `rivulet node`
//! processes on loopback, and (in `tests/`) the tests that crash, pause and
//! restart them.
//!
//! # Running
//!
//! ```text
//! cargo build -p rivulet-cli        # the binary the nodes run
//! cargo test -p cluster-tests       # all multi-process tests
//! cargo test -p cluster-tests -- --ignored   # known node bugs, as reproducers
//! RIVULET_LOG=debug cargo test -p cluster-tests --test controller -- --nocapture
//! ```
//!
//! Environment:
//! - `RIVULET_BIN`: the `rivulet` binary to run. Otherwise the newer of
//!   `target/debug/rivulet` and `target/release/rivulet` (under
//!   `CARGO_TARGET_DIR` if set); if neither exists it is built once with
//!   `cargo build -p rivulet-cli`. The choice and the binary's age are
//!   printed: rebuild it when you change the node.
//! - `RIVULET_LOG`: the nodes' log filter (default `info`).
//! - `RIVULET_KEEP_TEST_DIRS`: keep every cluster's directory (node data
//!   dirs and logs). A failed test always keeps its directory and prints the
//!   tail of each node's log.
//!
//! Clusters in one test process run one at a time (see [`Cluster`]).
//!
//! # Modules
//!
//! - [`checker`]: the durability checker — a concurrent acks=all workload
//!   that records every send, a reader watching the high watermark, and the
//!   full-read check of each partition ([`checker::CheckReport`]).
//! - [`chaos`]: fault episodes (kill, terminate, bounces, pause, whole
//!   cluster) run under the workload, healed and checked; used by the
//!   `chaos` binary and `tests/faults.rs`.
//! - [`cluster`]: [`Cluster`] — start n voters, kill/terminate/pause/resume/
//!   restart/wipe a node, RPC helpers, leader agreement, the ERROR-line scan.
//! - [`data`]: produce to the leader, read a partition back, compare the
//!   raw logs of replicas.
//! - `node`: one node process, its files and signals.
//! - [`logs`]: log tails, ERROR-line detection, [`DEFAULT_ALLOWED_ERRORS`].
//! - `ports`: race-free port reservation on 127.0.0.1.
//! - `binary`: finding (or building) the `rivulet` binary.
//! - [`wait`]: [`wait_until`], polling a condition with a deadline.

mod binary;
pub mod chaos;
pub mod checker;
pub mod cli;
pub mod cluster;
pub mod data;
pub mod logs;
pub mod netns;
mod node;
mod ports;
pub mod wait;

pub use binary::rivulet_binary;
pub use cluster::{fmt_duration, Channel, Cluster, ADMIN};
pub use data::{ProduceOutcome, ReadRecord};
pub use logs::DEFAULT_ALLOWED_ERRORS;
pub use wait::wait_until;
