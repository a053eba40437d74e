//! `rivulet node`: runs one cluster node — the controller quorum member and
//! the broker in one process. This file turns the command line into a
//! [`compose::NodeSpec`]; [`compose`] builds and runs the node.

mod compose;
mod control;
#[cfg(test)]
mod quorum_tests;

pub use compose::{Node, NodeSpec};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use rivulet_broker::log::FlushPolicy;
use rivulet_broker::{BrokerConfig, BrokerIdentity, CoordinatorConfig};
use rivulet_metadata::edge::EdgeLimits;
use rivulet_metadata::quorum::{default_cluster_id, parse_voters, QuorumConfig, QuorumTiming};
use tracing::{info, warn};

/// Options of `rivulet node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// This node's id (unique in the cluster).
    #[arg(long, env = "RIVULET_NODE_ID")]
    pub id: u64,
    /// Address to serve gRPC on (clients, brokers and controllers all use it).
    #[arg(long, env = "RIVULET_LISTEN", default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Address other nodes and clients reach this node at; default: --listen.
    #[arg(long, env = "RIVULET_ADVERTISE")]
    advertise: Option<String>,
    /// Address to serve the Kafka wire protocol on (kcat, librdkafka,
    /// kafka-python, the Java client); off unless given. Over TLS when the
    /// node has --tls-cert; with --require-auth clients authenticate with
    /// SASL (SCRAM-SHA-256/512, or PLAIN over TLS) as the cluster's users.
    #[arg(long, env = "RIVULET_KAFKA_LISTEN")]
    kafka_listen: Option<SocketAddr>,
    /// Address Kafka clients reach this node at (what Metadata and
    /// FindCoordinator answer); default: --kafka-listen.
    #[arg(long, env = "RIVULET_KAFKA_ADVERTISE", requires = "kafka_listen")]
    kafka_advertise: Option<String>,
    /// Directory for the node's data (metadata log, partition logs).
    #[arg(long, env = "RIVULET_DATA_DIR")]
    data_dir: PathBuf,
    /// The controller voters, `id@host:port,...`; the same on every node. A
    /// node not listed joins as a learner (broker only).
    #[arg(long, env = "RIVULET_VOTERS")]
    voters: String,
    /// Cluster id; default: derived from --voters, so all nodes agree.
    #[arg(long, env = "RIVULET_CLUSTER_ID")]
    cluster_id: Option<String>,
    /// A file holding the cluster secret (at least 32 bytes; `rivulet
    /// cluster new-secret --out <file>` makes one), the same on every node.
    /// Every node-to-node call (Raft, registration, heartbeats, ISR changes,
    /// replica fetches) proves it holds the secret, and calls without the
    /// proof are refused with UNAUTHENTICATED. Without it, node-to-node
    /// calls are unauthenticated (a WARN at start).
    #[arg(long, env = "RIVULET_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Create --cluster-secret-file with a new random secret if it does not
    /// exist, atomically, so nodes sharing one volume (docker compose) agree
    /// on one. Elsewhere make the file once with `rivulet cluster
    /// new-secret` and copy it to every node.
    #[arg(
        long,
        env = "RIVULET_CREATE_CLUSTER_SECRET",
        requires = "cluster_secret_file"
    )]
    create_cluster_secret: bool,
    /// Every client call must name a user (`--user` and a password) whose
    /// password matches; calls without one, or with a wrong one, are refused
    /// with UNAUTHENTICATED, and ACLs decide what each user may do (no ACL:
    /// nothing). Needs --cluster-secret-file or node certificates (TLS),
    /// so node-only calls cannot be forged. Without it the cluster is
    /// open: passwords given are still checked, ACLs are not enforced.
    #[arg(long, env = "RIVULET_REQUIRE_AUTH")]
    require_auth: bool,
    /// Principals that may do everything, whatever the ACLs:
    /// `User:admin[,User:ops]`.
    #[arg(long, env = "RIVULET_SUPER_USERS", value_delimiter = ',')]
    super_users: Vec<String>,
    /// A file of lines `name:password`: users created when the cluster
    /// starts and has no user of that name (so a secured cluster can be
    /// bootstrapped). Existing users are left alone.
    #[arg(long, env = "RIVULET_INITIAL_USERS_FILE")]
    initial_users_file: Option<PathBuf>,
    /// Accept passwords over connections without TLS (a password then
    /// crosses the network readable by anyone on the path). Off by default:
    /// with --require-auth, use TLS.
    #[arg(long, env = "RIVULET_ALLOW_PLAINTEXT_PASSWORDS")]
    allow_plaintext_passwords: bool,
    /// Rack of this broker, for rack-aware replica placement.
    #[arg(long, env = "RIVULET_RACK")]
    rack: Option<String>,
    /// A broker not heard from for this long is fenced (ms).
    #[arg(long, env = "RIVULET_BROKER_LEASE_MS", default_value_t = QuorumTiming::DEFAULT_BROKER_LEASE_MS)]
    broker_lease_ms: u64,
    /// How often the active controller moves leadership back to preferred
    /// replicas that are in sync again (ms); 0 turns it off.
    #[arg(
        long,
        env = "RIVULET_PREFERRED_LEADER_CHECK_MS",
        default_value_t = QuorumTiming::DEFAULT_PREFERRED_LEADER_CHECK_MS
    )]
    preferred_leader_check_ms: u64,
    /// When appended records are fsynced: `always` (before acknowledging;
    /// concurrent appends share an fsync), `interval:<ms>`, or `never`.
    #[arg(long, env = "RIVULET_FLUSH", default_value = "always")]
    flush: FlushPolicy,
    /// A follower that has not caught up with the leader for this long is
    /// removed from the in-sync replicas (ms).
    #[arg(
        long,
        env = "RIVULET_REPLICA_LAG_TIME_MAX_MS",
        default_value_t = BrokerConfig::DEFAULT_REPLICA_LAG_TIME_MAX_MS
    )]
    replica_lag_time_max_ms: u64,
    /// The most record bytes one Fetch response carries, whatever the
    /// request asks (Kafka's `fetch.max.bytes`); also the per-partition cap.
    /// At least one batch is always returned, so it must exceed the largest
    /// batch (1 MiB to 256 MiB).
    #[arg(
        long,
        env = "RIVULET_FETCH_MAX_BYTES",
        default_value_t = BrokerConfig::DEFAULT_FETCH_MAX_BYTES
    )]
    fetch_max_bytes: u64,
    /// Most client and peer connections the node holds at once; past it a
    /// new connection is closed at once, with a WARN (Kafka's
    /// `max.connections`).
    #[arg(
        long,
        env = "RIVULET_MAX_CONNECTIONS",
        default_value_t = EdgeLimits::DEFAULT_MAX_CONNECTIONS
    )]
    max_connections: u64,
    /// Bytes of client requests and responses held in flight at once
    /// (Kafka's `queued.max.request.bytes`): past it, new produce bytes and
    /// fetch reads wait (HTTP/2 flow control holds the senders back).
    #[arg(
        long,
        env = "RIVULET_MAX_INFLIGHT_BYTES",
        default_value_t = BrokerConfig::DEFAULT_MAX_INFLIGHT_BYTES
    )]
    max_inflight_bytes: u64,
    /// A new connection that sends nothing (not even the HTTP/2 preface)
    /// for this long is closed (ms).
    #[arg(
        long,
        env = "RIVULET_HANDSHAKE_TIMEOUT_MS",
        default_value_t = EdgeLimits::DEFAULT_HANDSHAKE_TIMEOUT_MS
    )]
    handshake_timeout_ms: u64,
    /// A connection that sends nothing for this long is closed (ms; Kafka's
    /// `connections.max.idle.ms`). Live peers answer the node's keep-alive
    /// pings every 30 s, so only dead or stuck ones reach it.
    #[arg(
        long,
        env = "RIVULET_IDLE_TIMEOUT_MS",
        default_value_t = EdgeLimits::DEFAULT_IDLE_TIMEOUT_MS
    )]
    idle_timeout_ms: u64,
    /// Partitions of `__consumer_offsets`, the internal topic of consumer
    /// groups, when the first group creates it.
    #[arg(
        long,
        env = "RIVULET_OFFSETS_TOPIC_PARTITIONS",
        default_value_t = CoordinatorConfig::DEFAULT_OFFSETS_PARTITIONS
    )]
    offsets_topic_partitions: u32,
    /// Its replication factor (capped by the live brokers at creation).
    #[arg(
        long,
        env = "RIVULET_OFFSETS_TOPIC_REPLICATION_FACTOR",
        default_value_t = CoordinatorConfig::DEFAULT_OFFSETS_REPLICATION
    )]
    offsets_topic_replication_factor: u32,
    /// A consumer-group member not heard from for this long loses its
    /// partitions, unless it asks for another timeout (ms; members may ask
    /// for 500 to 300000).
    #[arg(
        long,
        env = "RIVULET_GROUP_SESSION_TIMEOUT_MS",
        default_value_t = CoordinatorConfig::DEFAULT_SESSION_TIMEOUT_MS
    )]
    group_session_timeout_ms: u64,
    /// A TOML file of node options, keyed by flag name
    /// (`data-dir = "/var/lib/rivulet"`, `broker-lease-ms = 1500`); flags and
    /// `RIVULET_*` environment variables override it.
    #[arg(long, env = "RIVULET_CONFIG")]
    config: Option<PathBuf>,
    /// Runtime worker threads (several nodes may share a small machine).
    #[arg(long, env = "RIVULET_THREADS", default_value_t = 2)]
    pub threads: usize,
}

/// Runs the node until SIGTERM or Ctrl-C.
/// Users, ACL enforcement and initial users from the flags.
fn security_config(args: &NodeArgs) -> Result<rivulet_metadata::security::SecurityConfig> {
    let mut super_users = std::collections::BTreeSet::new();
    for p in &args.super_users {
        let p = p.trim();
        match p.strip_prefix("User:") {
            Some(name) if rivulet_metadata::security::user_name_problem(name).is_none() => {
                super_users.insert(p.to_owned());
            }
            _ => bail!("--super-users: {p:?} is not User:<name>"),
        }
    }
    let initial_users = match &args.initial_users_file {
        None => Vec::new(),
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read --initial-users-file {}", f.display()))?;
            rivulet_metadata::security::parse_users_file(&text)
                .map_err(|e| anyhow::anyhow!("--initial-users-file {}: {e}", f.display()))?
        }
    };
    if args.require_auth && args.allow_plaintext_passwords {
        warn!("--allow-plaintext-passwords: passwords cross the network unencrypted");
    }
    Ok(rivulet_metadata::security::SecurityConfig {
        authorizer: rivulet_metadata::security::Authorizer {
            require_auth: args.require_auth,
            super_users,
        },
        allow_plaintext_passwords: args.allow_plaintext_passwords,
        initial_users,
    })
}

pub async fn run(args: NodeArgs, tls_args: &crate::tls::TlsArgs) -> Result<()> {
    let tls = crate::tls::node(tls_args)?;
    let process_started = std::time::Instant::now();
    let voters = parse_voters(&args.voters)?;
    let advertise = match &args.advertise {
        Some(a) => a.clone(),
        None if args.listen.ip().is_unspecified() => {
            bail!(
                "--listen {} is a wildcard address: give --advertise host:port",
                args.listen
            )
        }
        None => args.listen.to_string(),
    };
    let kafka_advertise = match (&args.kafka_listen, &args.kafka_advertise) {
        (None, _) => None,
        (Some(_), Some(a)) => Some(a.clone()),
        (Some(l), None) if l.ip().is_unspecified() => {
            bail!("--kafka-listen {l} is a wildcard address: give --kafka-advertise host:port")
        }
        (Some(l), None) => Some(l.to_string()),
    };
    if let Some(a) = &kafka_advertise {
        match a.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
            Some((h, Ok(_))) if !h.is_empty() && a.len() <= 255 => {}
            _ => bail!("--kafka-advertise {a:?} is not host:port"),
        }
    }
    if let Some(listed) = voters.get(&args.id) {
        if *listed != advertise {
            bail!(
                "--voters lists node {} at {listed}, but this node advertises {advertise}",
                args.id
            );
        }
    }
    // The settings, each checked by its own type, before anything touches
    // the disk or the network.
    let timing = QuorumTiming {
        broker_lease_ms: args.broker_lease_ms,
        preferred_leader_check_ms: (args.preferred_leader_check_ms > 0)
            .then_some(args.preferred_leader_check_ms),
        ..QuorumTiming::default()
    };
    let edge = EdgeLimits {
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        handshake_timeout: Duration::from_millis(args.handshake_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
    };
    let broker_config = BrokerConfig {
        flush: args.flush,
        replica_lag_time_max_ms: i64::try_from(args.replica_lag_time_max_ms).unwrap_or(i64::MAX),
        fetch_max_bytes: usize::try_from(args.fetch_max_bytes).unwrap_or(usize::MAX),
        max_inflight_bytes: usize::try_from(args.max_inflight_bytes).unwrap_or(usize::MAX),
        ..BrokerConfig::new(args.id, &args.data_dir)
    };
    let group_config = CoordinatorConfig {
        offsets_partitions: args.offsets_topic_partitions,
        offsets_replication: args.offsets_topic_replication_factor,
        session_timeout: Duration::from_millis(args.group_session_timeout_ms),
        ..CoordinatorConfig::default()
    };
    for checked in [
        timing.validate(),
        edge.validate(),
        broker_config.validate(),
        group_config.validate(),
    ] {
        checked.map_err(|e| anyhow::anyhow!("--{e}"))?;
    }
    if let (true, Some(file)) = (args.create_cluster_secret, &args.cluster_secret_file) {
        if rivulet_proto::node_auth::ClusterSecret::create_file(file, true)? {
            info!(file = %file.display(), "created the cluster secret");
        }
    }
    let security = security_config(&args)?;
    if args.cluster_secret_file.is_none() {
        // Without a secret, the node certificate is what proves a node.
        let node_cert = match &tls_args.tls_cert {
            Some(cert) if tls.is_some() => Some((
                cert,
                rivulet_proto::node_auth::is_node_certificate_file(cert)
                    .map_err(anyhow::Error::msg)?,
            )),
            _ => None,
        };
        match node_cert {
            Some((cert, false)) => bail!(
                "--tls-cert {} is not a node certificate (valid for {}); without \
                 --cluster-secret-file nodes prove themselves with one (`rivulet cert` \
                 makes it), or give every node --cluster-secret-file",
                cert.display(),
                rivulet_proto::node_auth::NODE_CERT_NAME
            ),
            None if args.require_auth => bail!(
                "--require-auth needs --cluster-secret-file or TLS with node certificates: \
                 otherwise node-only calls could be forged"
            ),
            _ => {}
        }
    }
    let cluster_secret = args
        .cluster_secret_file
        .as_deref()
        .map(rivulet_proto::node_auth::ClusterSecret::from_file)
        .transpose()?;
    // Every segment keeps a file open; thousands of partitions need more
    // than the usual soft limit of 1024.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => info!(open_files = n, "raised the open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", args.data_dir.display()))?;
    // Before anything else writes into it: an empty directory is new storage.
    let directory = rivulet_broker::log::open_log_directory(&args.data_dir)
        .with_context(|| format!("cannot open --data-dir {}", args.data_dir.display()))?;
    if directory.new {
        info!(directory_id = %directory.id, "new data directory");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let kafka = match args.kafka_listen {
        None => None,
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --kafka-listen {addr}"))?;
            // The Kafka listener serves TLS when the node does, with its
            // certificate.
            let acceptor = match &tls {
                Some(t) => Some(
                    rivulet_kafka::conn::tls_acceptor(&t.identity_pem.0, &t.identity_pem.1)
                        .map_err(|e| anyhow::anyhow!("the Kafka listener's TLS: {e}"))?,
                ),
                None => None,
            };
            Some((
                l,
                rivulet_kafka::KafkaLimits {
                    max_connections: edge.max_connections,
                    idle_timeout: edge.idle_timeout.max(Duration::from_secs(60)),
                    ..rivulet_kafka::KafkaLimits::default()
                },
                acceptor,
            ))
        }
    };
    let config = QuorumConfig {
        node_id: args.id,
        advertise: advertise.clone(),
        cluster_id: args
            .cluster_id
            .clone()
            .unwrap_or_else(|| default_cluster_id(&voters)),
        voters,
        data_dir: args.data_dir.clone(),
        timing,
        edge,
        cluster_secret,
        tls,
        security,
    };
    let identity = BrokerIdentity {
        address: advertise.clone(),
        rack: args.rack.clone(),
        directory_id: directory.id.clone(),
        kafka_address: kafka_advertise.clone(),
        new_directory: directory.new,
        log_fsynced: matches!(args.flush, rivulet_broker::log::FlushPolicy::Always),
        process_started,
    };
    let spec = NodeSpec {
        quorum: config,
        identity,
        data_plane: Some((broker_config, group_config)),
        kafka,
    };
    let node = Node::start(listener, spec)
        .await
        .context("cannot start the node")?;
    let command: Vec<String> = std::env::args()
        .map(|a| crate::local::shell_quote(&a))
        .collect();
    if let Some(k) = &kafka_advertise {
        info!(kafka_advertise = %k, "Kafka clients: bootstrap.servers={k}");
    }
    info!(listen = %args.listen, advertise = %advertise, data_dir = %args.data_dir.display(),
        command = %command.join(" "), "node started (restart it with `command`)");
    let cancel = node.cancel_token();
    let registration = std::sync::Arc::clone(node.registration());
    tokio::spawn(async move {
        wait_for_signal().await;
        // Controlled shutdown: leaderships move to other in-sync replicas
        // while this node still serves, so clients fail over at once. A
        // second signal stops at once.
        info!("shutdown requested; handing over leadership first (a second signal stops at once)");
        let started = std::time::Instant::now();
        let handed_over = tokio::select! {
            done = registration.controlled_shutdown(CONTROLLED_SHUTDOWN_TIMEOUT) => done,
            _ = wait_for_signal() => false,
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if handed_over {
            info!(elapsed_ms, "leadership handed over; stopping");
        } else {
            warn!(elapsed_ms, "stopping without handing every leadership over");
        }
        cancel.cancel();
    });
    match node.run_until_cancelled().await {
        Ok(()) => {
            info!("node stopped");
            Ok(())
        }
        Err(reason) => bail!("node stopped after a fatal error: {reason}"),
    }
}

/// Longest a SIGTERM waits for the controller to move leadership away.
const CONTROLLED_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The options a `--config` file may set, with the environment variable
/// each one stands for.
const CONFIG_KEYS: &[(&str, &str)] = &[
    ("id", "RIVULET_NODE_ID"),
    ("listen", "RIVULET_LISTEN"),
    ("advertise", "RIVULET_ADVERTISE"),
    ("kafka-listen", "RIVULET_KAFKA_LISTEN"),
    ("kafka-advertise", "RIVULET_KAFKA_ADVERTISE"),
    ("data-dir", "RIVULET_DATA_DIR"),
    ("voters", "RIVULET_VOTERS"),
    ("cluster-id", "RIVULET_CLUSTER_ID"),
    ("rack", "RIVULET_RACK"),
    ("cluster-secret-file", "RIVULET_CLUSTER_SECRET_FILE"),
    ("tls-ca", "RIVULET_TLS_CA"),
    ("tls-cert", "RIVULET_TLS_CERT"),
    ("tls-key", "RIVULET_TLS_KEY"),
    ("create-cluster-secret", "RIVULET_CREATE_CLUSTER_SECRET"),
    ("broker-lease-ms", "RIVULET_BROKER_LEASE_MS"),
    (
        "preferred-leader-check-ms",
        "RIVULET_PREFERRED_LEADER_CHECK_MS",
    ),
    ("flush", "RIVULET_FLUSH"),
    ("replica-lag-time-max-ms", "RIVULET_REPLICA_LAG_TIME_MAX_MS"),
    ("fetch-max-bytes", "RIVULET_FETCH_MAX_BYTES"),
    ("max-connections", "RIVULET_MAX_CONNECTIONS"),
    ("max-inflight-bytes", "RIVULET_MAX_INFLIGHT_BYTES"),
    ("handshake-timeout-ms", "RIVULET_HANDSHAKE_TIMEOUT_MS"),
    ("idle-timeout-ms", "RIVULET_IDLE_TIMEOUT_MS"),
    (
        "offsets-topic-partitions",
        "RIVULET_OFFSETS_TOPIC_PARTITIONS",
    ),
    (
        "offsets-topic-replication-factor",
        "RIVULET_OFFSETS_TOPIC_REPLICATION_FACTOR",
    ),
    (
        "group-session-timeout-ms",
        "RIVULET_GROUP_SESSION_TIMEOUT_MS",
    ),
    ("threads", "RIVULET_THREADS"),
];

/// For `rivulet node --config <file>`: reads the file before the command
/// line is parsed and turns each key into its `RIVULET_*` environment
/// variable unless that is already set, so the precedence is flag, then
/// environment, then file.
pub fn apply_config_file(args: &[std::ffi::OsString]) -> Result<()> {
    let mut path = None;
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        if a == "--config" {
            path = it.next();
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.to_owned());
        }
    }
    let Some(path) = path.or_else(|| std::env::var("RIVULET_CONFIG").ok()) else {
        return Ok(());
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("cannot read --config {path}"))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("--config {path} is not valid TOML"))?;
    for (key, value) in table {
        let name = key.replace('_', "-");
        let Some((_, var)) = CONFIG_KEYS.iter().find(|(k, _)| *k == name) else {
            let known: Vec<&str> = CONFIG_KEYS.iter().map(|(k, _)| *k).collect();
            bail!(
                "--config {path}: unknown key {key:?}; known keys: {}",
                known.join(", ")
            );
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => bail!("--config {path}: {key} = {other:?} is not a string, number or list"),
        };
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_fills_in_what_flags_and_environment_leave_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "rack = \"r-7\"\ncluster_id = \"c-1\"\n").unwrap();
        std::env::set_var("RIVULET_CLUSTER_ID", "from-env");
        let args: Vec<std::ffi::OsString> = vec![
            "rivulet".into(),
            "node".into(),
            "--config".into(),
            file.clone().into(),
        ];
        apply_config_file(&args).unwrap();
        assert_eq!(std::env::var("RIVULET_RACK").unwrap(), "r-7");
        assert_eq!(std::env::var("RIVULET_CLUSTER_ID").unwrap(), "from-env");

        std::fs::write(&file, "colour = 1\n").unwrap();
        let err = apply_config_file(&args).unwrap_err().to_string();
        assert!(err.contains("unknown key \"colour\""), "{err}");
        std::fs::write(&file, "rack = \n").unwrap();
        assert!(apply_config_file(&args)
            .unwrap_err()
            .to_string()
            .contains("not valid TOML"));
    }
}
