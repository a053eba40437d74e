//! [`Cluster`]: n `rivulet node` processes on loopback, all voters, with the
//! operations tests need — crash, graceful stop, pause, restart, wipe — and
//! the gRPC helpers to observe them.
//!
//! ```text
//!  <tmp>/rivulet-cluster-XXXX/
//!    node-1/data   --data-dir of node 1 (kept across restarts)
//!    node-1.log    stdout+stderr of every run of node 1, with harness markers
//!    node-2/...
//! ```
//!
//! Invariants: a node's id, address and data dir never change (the voter list
//! names them); every wait has a deadline; dropping the cluster SIGKILLs every
//! process it started, and when the test did not reach
//! [`Cluster::assert_no_unexpected_errors`] (it panicked, returned early or
//! was cancelled by a timeout) prints the tail of every node's log and keeps
//! the directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rivulet_proto::v1::controller_client::ControllerClient;
use rivulet_proto::v1::{
    CreateTopicRequest, DescribeClusterRequest, DescribeClusterResponse, DescribeTopicsRequest,
    ErrorCode, TopicInfo,
};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tonic::transport::Endpoint;

/// The harness's client channel: as the cluster's admin on secured
/// clusters ([`Cluster::start_secured`]), anonymous otherwise.
pub type Channel = rivulet_proto::user_auth::UserChannel;

/// The super user of secured clusters, and its password.
pub const ADMIN: (&str, &str) = ("admin", "admin-password");
use tonic::Status;

use crate::netns::Net;
use crate::node::{Node, State};
use crate::wait::{wait_until, POLL_INTERVAL};
use crate::{binary, logs, ports};

/// Deadline for `Cluster::start`: every node up and a leader agreed on.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Deadline for one node to answer `DescribeCluster` after it is spawned.
pub const NODE_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for all running nodes to agree on a leader.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for a node to exit after SIGTERM.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-RPC deadline of [`Cluster::client`]; a paused node accepts TCP
/// connections but never answers, so every RPC needs one.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of one readiness probe of a starting node.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// TCP connect deadline of the clients.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How many fresh sets of ports `start` tries when a node loses a port race.
const START_ATTEMPTS: usize = 3;
/// Log lines printed per node when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// Why a spawned node did not come up.
#[derive(Debug)]
enum NotUp {
    /// The node exited because its port was taken (a reservation race).
    PortTaken,
    /// The node exited for another reason.
    Exited(ExitStatus),
    /// The node did not answer in time.
    Timeout,
}

impl std::fmt::Display for NotUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PortTaken => f.write_str("its port was taken by another process"),
            Self::Exited(status) => write!(f, "it exited ({status})"),
            Self::Timeout => f.write_str("it did not answer DescribeCluster in time"),
        }
    }
}

/// A cluster of `rivulet node` processes; see the module docs.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster's directory; `None` once kept (persisted) on failure.
    root: Option<tempfile::TempDir>,
    /// Its path, still valid after the directory was kept.
    root_path: PathBuf,
    /// The nodes, ids 1..=n; all of them voters.
    nodes: BTreeMap<u64, Node>,
    /// `--voters`, the same for every node: `1@127.0.0.1:p1,2@...`.
    voters: String,
    /// The `rivulet` binary.
    bin: &'static Path,
    /// `RIVULET_LOG` for the nodes: the test's own `RIVULET_LOG`, else `info`.
    log_filter: String,
    /// Set by the final error scan; if unset at drop, the test failed.
    checked: AtomicBool,
    /// Per-node network namespaces, for network faults (`start_netns`).
    net: Option<Arc<Net>>,
    /// Size of the tmpfs each node's data dir is mounted on, if any.
    disk_mb: Option<u64>,
    /// The tmpfs mounts to undo at drop.
    mounts: Vec<PathBuf>,
    /// Whether the nodes serve TLS (certificates from `rivulet cert` in
    /// `<root>/tls`), and how this harness's clients connect then.
    tls: bool,
    client_tls: Option<rivulet_proto::tls::ClientTls>,
    /// Whether the nodes run with `--require-auth` (and [`ADMIN`] as super
    /// user, created from an initial users file).
    secured: bool,
    /// Whether the nodes run without the cluster secret (TLS clusters:
    /// their node certificates prove them).
    without_secret: bool,
    /// One cluster per test process at a time: tests run in parallel threads,
    /// and two clusters on a 2-core machine would turn timing assertions
    /// (failover within 2 s) into coin flips.
    _turn: OwnedMutexGuard<()>,
}

impl Cluster {
    /// Starts `n` nodes, all voters, and waits until every node answers and
    /// all agree on a leader (within [`START_TIMEOUT`]).
    pub async fn start(n: u64) -> Self {
        Self::start_with(n, None, None, false, false).await
    }

    /// Like [`Cluster::start_tls`], the nodes requiring a user on every
    /// client call (`--require-auth`), with [`ADMIN`] a super user created
    /// by `--initial-users-file`; the harness's own clients call as it.
    pub async fn start_secured(n: u64) -> Self {
        Self::start_with(n, None, None, true, true).await
    }

    /// Like [`Cluster::start_tls`], the nodes started without a cluster
    /// secret: node certificates over mutual TLS are their proof.
    pub async fn start_tls_without_secret(n: u64) -> Self {
        Self::start_opts(n, None, None, true, false, true).await
    }

    /// Like [`Cluster::start`], every node serving TLS (mutual TLS between
    /// nodes) with certificates `rivulet cert` made; the harness's clients
    /// trust its CA.
    pub async fn start_tls(n: u64) -> Self {
        Self::start_with(n, None, None, true, false).await
    }

    /// Like [`Cluster::start`], each node in its own network namespace so
    /// [`Cluster::cut`] can partition the network; `Err` says why the
    /// namespaces cannot be made here (tests then skip).
    pub async fn start_netns(n: u64) -> Result<Self, String> {
        Self::start_isolated(n, None).await
    }

    /// [`Cluster::start_netns`], and with `disk_mb` each node's data dir on
    /// a tmpfs of that many MiB, so [`Cluster::fill_disk`] can fill it.
    pub async fn start_isolated(n: u64, disk_mb: Option<u64>) -> Result<Self, String> {
        Self::start_isolated_with(n, disk_mb, false).await
    }

    /// [`Cluster::start_isolated`], serving TLS if `tls` (see
    /// [`Cluster::start_tls`]).
    pub async fn start_isolated_with(
        n: u64,
        disk_mb: Option<u64>,
        tls: bool,
    ) -> Result<Self, String> {
        let ids: Vec<u64> = (1..=n).collect();
        let net = Net::create(&ids)?;
        Ok(Self::start_with(n, Some(Arc::new(net)), disk_mb, tls, false).await)
    }

    async fn start_with(
        n: u64,
        net: Option<Arc<Net>>,
        disk_mb: Option<u64>,
        tls: bool,
        secured: bool,
    ) -> Self {
        Self::start_opts(n, net, disk_mb, tls, secured, false).await
    }

    async fn start_opts(
        n: u64,
        net: Option<Arc<Net>>,
        disk_mb: Option<u64>,
        tls: bool,
        secured: bool,
        without_secret: bool,
    ) -> Self {
        assert!(n >= 1, "a cluster needs a node");
        static TURN: OnceLock<Arc<Mutex<()>>> = OnceLock::new();
        let turn = Arc::clone(TURN.get_or_init(Default::default))
            .lock_owned()
            .await;
        let started = Instant::now();
        let mut c = Self {
            root: None,
            root_path: PathBuf::new(),
            nodes: BTreeMap::new(),
            voters: String::new(),
            bin: binary::rivulet_binary(),
            log_filter: std::env::var("RIVULET_LOG").unwrap_or_else(|_| "info".into()),
            checked: AtomicBool::new(false),
            net,
            disk_mb,
            mounts: Vec::new(),
            tls,
            client_tls: None,
            secured,
            without_secret,
            _turn: turn,
        };
        for attempt in 1..=START_ATTEMPTS {
            c.layout(n);
            c.mount_disks();
            for node in c.nodes.values_mut() {
                node.spawn(c.bin, &c.voters, &c.log_filter);
            }
            let mut outcome = Ok(());
            for id in c.ids() {
                let left = START_TIMEOUT.saturating_sub(started.elapsed());
                if let Err(e) = c.wait_up(id, left).await {
                    outcome = Err((id, e));
                    break;
                }
            }
            match outcome {
                Ok(()) => {
                    let left = START_TIMEOUT.saturating_sub(started.elapsed());
                    let leader =
                        wait_until("the nodes to agree on a leader", left, || c.agreed_leader())
                            .await;
                    eprintln!(
                        "cluster-tests: {n} nodes up in {}, leader {leader}, in {}",
                        c.root_path.display(),
                        fmt_duration(started.elapsed())
                    );
                    return c;
                }
                Err((id, NotUp::PortTaken)) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "cluster-tests: node {id} lost its port to another process; \
                         retrying with fresh ports"
                    );
                    for node in c.nodes.values_mut() {
                        node.kill();
                    }
                }
                Err((id, e)) => panic!("node {id} did not come up: {e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// A fresh directory and fresh ports for `n` nodes.
    fn layout(&mut self, n: u64) {
        let root = tempfile::Builder::new()
            .prefix("rivulet-cluster-")
            .tempdir()
            .expect("cannot create a temp dir");
        self.root_path = root.path().to_path_buf();
        self.root = Some(root);
        rivulet_proto::node_auth::ClusterSecret::create_file(
            &self.root_path.join(crate::node::SECRET_FILE),
            false,
        )
        .expect("cannot write the cluster secret");
        let count = usize::try_from(n).expect("node count fits usize");
        // Every node serves Kafka clients too (over TLS on TLS clusters,
        // with SASL on --require-auth ones).
        let (addrs, kafka_addrs): (Vec<SocketAddr>, Vec<Option<SocketAddr>>) = match &self.net {
            // Each namespace has its own address: any port will do.
            Some(net) => (1..=n)
                .map(|id| {
                    let kafka = Some(SocketAddr::new(net.ip(id), 9093));
                    (SocketAddr::new(net.ip(id), 9092), kafka)
                })
                .unzip(),
            None => {
                let mut all = ports::reserve(count * 2);
                let kafka = all.split_off(count);
                (all, kafka.into_iter().map(Some).collect())
            }
        };
        let mut tls_flags = Vec::new();
        self.client_tls = None;
        if self.tls {
            let dir = self.tls_dir();
            // Valid for every address a node is dialled at (namespaces
            // give each node its own IP).
            let mut hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
            for a in &addrs {
                let ip = a.ip().to_string();
                if !hosts.contains(&ip) {
                    hosts.push(ip);
                }
            }
            let mut command = std::process::Command::new(self.bin);
            command.args(["cert", "--out-dir"]).arg(&dir);
            for h in &hosts {
                command.args(["--host", h]);
            }
            let out = command.output().expect("run rivulet cert");
            assert!(
                out.status.success(),
                "rivulet cert failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for (flag, file) in [
                ("--tls-ca", "ca.pem"),
                ("--tls-cert", "node.pem"),
                ("--tls-key", "node.key"),
            ] {
                tls_flags.push(flag.to_owned());
                tls_flags.push(dir.join(file).display().to_string());
            }
            self.client_tls = Some(
                rivulet_proto::tls::ClientTls::from_files(&dir.join("ca.pem"), None)
                    .expect("the CA rivulet cert made"),
            );
        }
        if self.secured {
            let users = self.root_path.join("users");
            std::fs::write(&users, format!("{}:{}\n", ADMIN.0, ADMIN.1))
                .expect("write the initial users file");
            tls_flags.extend([
                "--require-auth".to_owned(),
                "--super-users".to_owned(),
                format!("User:{}", ADMIN.0),
                "--initial-users-file".to_owned(),
                users.display().to_string(),
            ]);
        }
        self.nodes = (1..=n)
            .zip(addrs.into_iter().zip(kafka_addrs))
            .map(|(id, (addr, kafka))| {
                let mut node = Node::new(&self.root_path, id, addr);
                node.netns = self.net.as_ref().map(|net| net.namespace(id));
                node.extra_args = tls_flags.clone();
                if let Some(k) = kafka {
                    node.extra_args
                        .extend(["--kafka-listen".to_owned(), k.to_string()]);
                    node.kafka_addr = Some(k);
                }
                if self.without_secret {
                    node.secret_file = None;
                }
                (id, node)
            })
            .collect();
        self.voters = self
            .nodes
            .values()
            .map(|node| format!("{}@{}", node.id, node.addr))
            .collect::<Vec<_>>()
            .join(",");
    }

    /// Waits until node `id` answers `DescribeCluster` as itself.
    async fn wait_up(&mut self, id: u64, timeout: Duration) -> Result<(), NotUp> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.node_mut(id).exited() {
                return Err(self.classify_exit(id, status));
            }
            // A short deadline: whatever holds the port may accept and never answer.
            let probe = self
                .client_with_timeout(id, PROBE_TIMEOUT)
                .describe_cluster(DescribeClusterRequest {})
                .await;
            if probe.is_ok_and(|d| d.get_ref().node_id == id) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(match self.node_mut(id).exited() {
                    Some(status) => self.classify_exit(id, status),
                    None => NotUp::Timeout,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Why node `id` exited during start-up, with a marker in its log.
    fn classify_exit(&self, id: u64, status: ExitStatus) -> NotUp {
        let node = self.node(id);
        node.mark(&format!("node {id} exited during start-up: {status}"));
        if port_taken(&node.log_path) {
            NotUp::PortTaken
        } else {
            NotUp::Exited(status)
        }
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id} in the cluster"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id} in the cluster"))
    }

    // ----- small disks -----

    /// Mounts a tmpfs of `disk_mb` on every node's data dir (when asked).
    fn mount_disks(&mut self) {
        let Some(mb) = self.disk_mb else { return };
        for node in self.nodes.values() {
            std::fs::create_dir_all(&node.data_dir).expect("cannot create the data dir");
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
                .arg(&node.data_dir)
                .output()
                .expect("run mount");
            assert!(
                out.status.success(),
                "cannot mount a tmpfs on {}: {}",
                node.data_dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            self.mounts.push(node.data_dir.clone());
        }
    }

    /// Fills node `id`'s (tmpfs) data dir until it has no space left;
    /// returns the bytes written. [`Cluster::free_disk`] undoes it.
    pub fn fill_disk(&self, id: u64) -> u64 {
        use std::io::Write;
        assert!(
            self.disk_mb.is_some(),
            "fill_disk needs a cluster on small disks"
        );
        let node = self.node(id);
        node.mark("disk filled");
        let mut f = std::fs::File::create(node.data_dir.join("filler")).expect("create the filler");
        let chunk = vec![0u8; 64 << 10];
        let mut written = 0u64;
        while f.write_all(&chunk).is_ok() {
            written += chunk.len() as u64;
        }
        // The last partial chunk, byte by byte in 4 KiB steps.
        while f.write_all(&chunk[..4096]).is_ok() {
            written += 4096;
        }
        let _ = f.sync_all();
        written
    }

    /// Frees what [`Cluster::fill_disk`] took.
    pub fn free_disk(&self, id: u64) {
        let node = self.node(id);
        node.mark("disk freed");
        let _ = std::fs::remove_file(node.data_dir.join("filler"));
    }

    /// Whether the nodes' data dirs are small tmpfs disks.
    pub fn has_small_disks(&self) -> bool {
        self.disk_mb.is_some()
    }

    // ----- the network -----

    fn net(&self) -> &Net {
        self.net
            .as_deref()
            .expect("network faults need Cluster::start_netns")
    }

    /// Cuts the network between nodes `a` and `b` (both ways; the test's
    /// own connections stay up).
    pub fn cut(&self, a: u64, b: u64) {
        self.node(a)
            .mark(&format!("network cut between {a} and {b}"));
        self.node(b)
            .mark(&format!("network cut between {a} and {b}"));
        self.net()
            .cut(a, b)
            .unwrap_or_else(|e| panic!("cannot cut {a}-{b}: {e}"));
    }

    /// Cuts node `a` off from every other node.
    pub fn isolate(&self, a: u64) {
        for b in self.ids().into_iter().filter(|b| *b != a) {
            self.cut(a, b);
        }
    }

    /// Restores every cut.
    pub fn heal_network(&self) {
        for id in self.ids() {
            self.node(id).mark("network healed");
        }
        self.net()
            .heal_all()
            .unwrap_or_else(|e| panic!("cannot heal the network: {e}"));
    }

    /// Whether the nodes run in network namespaces.
    pub fn has_network(&self) -> bool {
        self.net.is_some()
    }

    // ----- the nodes -----

    /// Every node id, running or not.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The nodes whose process runs and is not paused.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// The nodes stopped with SIGSTOP.
    pub fn paused(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| matches!(n.state, State::Paused(_)))
            .map(|n| n.id)
            .collect()
    }

    /// Node `id`'s gRPC address.
    pub fn addr(&self, id: u64) -> SocketAddr {
        self.node(id).addr
    }

    /// Node `id`'s Kafka listener, if it serves one.
    pub fn kafka_addr(&self, id: u64) -> Option<SocketAddr> {
        self.nodes[&id].kafka_addr
    }

    /// Every node's Kafka address, comma separated (`bootstrap.servers`).
    pub fn kafka_bootstrap(&self) -> String {
        self.ids()
            .iter()
            .map(|id| {
                self.kafka_addr(*id)
                    .expect("this cluster's nodes have no Kafka listener")
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `id`'s `--data-dir`.
    pub fn data_dir(&self, id: u64) -> &Path {
        &self.node(id).data_dir
    }

    /// Node `id`'s log file.
    pub fn log_path(&self, id: u64) -> &Path {
        &self.node(id).log_path
    }

    /// The pid of node `id`'s process, if it has one.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).pid()
    }

    /// Crashes node `id`: SIGKILL (works on a paused node too).
    pub fn kill(&mut self, id: u64) {
        self.node_mut(id).kill();
    }

    /// Stops node `id` gracefully: SIGTERM, then waits for it to exit
    /// successfully (within [`TERMINATE_TIMEOUT`]).
    pub async fn terminate(&mut self, id: u64) {
        self.signal_term(id);
        self.wait_terminated(id).await;
    }

    /// [`Cluster::terminate`] for every running node, all signalled at once.
    pub async fn terminate_all(&mut self) {
        let running = self.running();
        for id in &running {
            self.signal_term(*id);
        }
        for id in running {
            self.wait_terminated(id).await;
        }
    }

    fn signal_term(&mut self, id: u64) {
        let node = self.node(id);
        assert!(node.is_running(), "node {id} is not running");
        node.mark(&format!("SIGTERM to node {id}"));
        node.signal("TERM");
    }

    async fn wait_terminated(&mut self, id: u64) {
        let deadline = Instant::now() + TERMINATE_TIMEOUT;
        let status = loop {
            if let Some(status) = self.node_mut(id).exited() {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill(id);
                panic!("node {id} did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        self.node(id)
            .mark(&format!("node {id} exited after SIGTERM: {status}"));
        assert!(
            status.success(),
            "node {id} exited with {status} after SIGTERM"
        );
    }

    /// Freezes node `id` with SIGSTOP: its sockets stay open, it answers nothing.
    pub fn pause(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.signal("STOP");
        node.state = match std::mem::replace(&mut node.state, State::Stopped) {
            State::Running(c) => State::Paused(c),
            other => panic!("node {id} is not running: {other:?}"),
        };
        node.mark(&format!("SIGSTOP to node {id}"));
    }

    /// Lets a paused node `id` continue (SIGCONT).
    pub fn resume(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.signal("CONT");
        node.state = match std::mem::replace(&mut node.state, State::Stopped) {
            State::Paused(c) => State::Running(c),
            other => panic!("node {id} is not paused: {other:?}"),
        };
        node.mark(&format!("SIGCONT to node {id}"));
    }

    /// Starts node `id` again with the same id, address and data dir, and
    /// waits until it answers. A node still running is SIGKILLed first (call
    /// [`Cluster::terminate`] before for a graceful restart).
    pub async fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn_and_wait(id).await;
    }

    /// Starts every stopped node again, then waits until each answers.
    pub async fn restart_stopped(&mut self) {
        let stopped: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.pid().is_none())
            .map(|n| n.id)
            .collect();
        for id in &stopped {
            let (bin, voters, filter) = (self.bin, self.voters.clone(), self.log_filter.clone());
            self.node_mut(*id).spawn(bin, &voters, &filter);
        }
        for id in stopped {
            self.wait_up_retrying_port(id).await;
        }
    }

    /// Starts stopped node `id` without waiting for it to answer, so a test
    /// can ask it questions from its first moment.
    pub fn spawn_stopped(&mut self, id: u64) {
        let (bin, voters, filter) = (self.bin, self.voters.clone(), self.log_filter.clone());
        self.node_mut(id).spawn(bin, &voters, &filter);
    }

    /// Waits until started node `id` answers as itself, ready.
    pub async fn wait_node_up(&mut self, id: u64) {
        self.wait_up_retrying_port(id).await;
    }

    /// Empties stopped node `id`'s data dir: its disk was replaced. (The
    /// entries, not the directory: it may be a tmpfs mount point.)
    pub fn wipe(&self, id: u64) {
        let node = self.node(id);
        assert!(
            node.pid().is_none(),
            "wipe node {id} only while it is stopped"
        );
        if let Ok(entries) = std::fs::read_dir(&node.data_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.unwrap_or_else(|e| panic!("cannot wipe {}: {e}", path.display()));
            }
        }
        node.mark(&format!("wiped {}", node.data_dir.display()));
    }

    /// Crashes node `id`, empties its data dir and starts it again.
    pub async fn wipe_and_restart(&mut self, id: u64) {
        self.kill(id);
        self.wipe(id);
        self.spawn_and_wait(id).await;
    }

    async fn spawn_and_wait(&mut self, id: u64) {
        let (bin, voters, filter) = (self.bin, self.voters.clone(), self.log_filter.clone());
        self.node_mut(id).spawn(bin, &voters, &filter);
        self.wait_up_retrying_port(id).await;
    }

    /// Waits for a just-spawned node; while its port is still held (by a
    /// socket of the previous run, or another process) it is respawned.
    async fn wait_up_retrying_port(&mut self, id: u64) {
        let deadline = Instant::now() + NODE_UP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_up(id, left).await {
                Ok(()) => return,
                Err(NotUp::PortTaken) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let (bin, voters, filter) =
                        (self.bin, self.voters.clone(), self.log_filter.clone());
                    self.node_mut(id).spawn(bin, &voters, &filter);
                }
                Err(e) => panic!("node {id} did not come back up: {e}"),
            }
        }
    }

    // ----- observing the cluster -----

    /// A Controller client for node `id`, with [`RPC_TIMEOUT`] per call.
    pub fn client(&self, id: u64) -> ControllerClient<Channel> {
        self.client_with_timeout(id, RPC_TIMEOUT)
    }

    /// A Controller client for node `id` whose calls fail after `timeout`.
    pub fn client_with_timeout(&self, id: u64, timeout: Duration) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel(id, timeout))
    }

    /// A channel to node `id` (over TLS if the cluster serves it) whose
    /// calls fail after `timeout`.
    pub fn channel(&self, id: u64, timeout: Duration) -> Channel {
        Channel::new(self.raw_channel(id, timeout), self.user().as_ref())
    }

    /// A channel to node `id` calling as `user` (anonymous with `None`).
    pub fn channel_as(
        &self,
        id: u64,
        timeout: Duration,
        user: Option<&rivulet_proto::user_auth::UserCredentials>,
    ) -> Channel {
        Channel::new(self.raw_channel(id, timeout), user)
    }

    /// The user the harness calls as: [`ADMIN`] on secured clusters.
    pub fn user(&self) -> Option<rivulet_proto::user_auth::UserCredentials> {
        self.secured
            .then(|| rivulet_proto::user_auth::UserCredentials::new(ADMIN.0, ADMIN.1))
    }

    fn raw_channel(&self, id: u64, timeout: Duration) -> tonic::transport::Channel {
        self.endpoint(id, CONNECT_TIMEOUT)
            .timeout(timeout)
            .connect_lazy()
    }

    fn endpoint(&self, id: u64, connect_timeout: Duration) -> Endpoint {
        rivulet_proto::tls::endpoint(
            &self.addr(id).to_string(),
            connect_timeout,
            self.client_tls(),
        )
        .expect("a socket address is a valid URI")
    }

    /// How clients connect to this cluster: its CA when it serves TLS.
    pub fn client_tls(&self) -> Option<&rivulet_proto::tls::ClientTls> {
        self.client_tls.as_ref()
    }

    /// Where `rivulet cert` put the cluster's certificates (TLS clusters).
    pub fn tls_dir(&self) -> PathBuf {
        self.root_path.join("tls")
    }

    /// The file holding the cluster's secret (every node gets
    /// `--cluster-secret-file` with it).
    pub fn secret_file(&self) -> PathBuf {
        self.root_path.join(crate::node::SECRET_FILE)
    }

    /// A channel to node `to` whose calls carry node `as_node`'s proof of
    /// the cluster secret: what a real node sends.
    pub fn node_channel(&self, to: u64, as_node: u64) -> rivulet_proto::node_auth::NodeChannel {
        use rivulet_proto::node_auth::{ClusterSecret, NodeChannel, NodeCredentials};
        let secret = ClusterSecret::from_file(&self.secret_file()).expect("the cluster secret");
        let channel = self.raw_channel(to, RPC_TIMEOUT);
        NodeChannel::new(channel, NodeCredentials::new(as_node, Some(secret)))
    }

    /// `DescribeCluster` on node `id`: its own view.
    pub async fn describe(&self, id: u64) -> Result<DescribeClusterResponse, Status> {
        self.client(id)
            .describe_cluster(DescribeClusterRequest {})
            .await
            .map(|r| r.into_inner())
    }

    /// Every topic in node `id`'s image.
    pub async fn topics(&self, id: u64) -> Result<Vec<TopicInfo>, Status> {
        let r = self
            .client(id)
            .describe_topics(DescribeTopicsRequest { names: Vec::new() })
            .await?
            .into_inner();
        if r.error_code != ErrorCode::None as i32 {
            return Err(Status::internal(format!(
                "DescribeTopics on node {id}: error {} {}",
                r.error_code, r.error_message
            )));
        }
        Ok(r.topics)
    }

    /// Topic `name` in node `id`'s image, if there.
    pub async fn topic(&self, id: u64, name: &str) -> Result<Option<TopicInfo>, Status> {
        Ok(self.topics(id).await?.into_iter().find(|t| t.name == name))
    }

    /// `CreateTopic` sent to node `via`: the response's `error_code` (see
    /// `ErrorCode`), or the gRPC status of a whole-request failure
    /// (`Unavailable`: no controller right now).
    pub async fn create_topic(
        &self,
        via: u64,
        name: &str,
        partitions: u32,
        replication_factor: u32,
    ) -> Result<i32, Status> {
        self.client(via)
            .create_topic(CreateTopicRequest {
                name: name.into(),
                partitions,
                replication_factor,
                configs: Vec::new(),
            })
            .await
            .map(|r| r.into_inner().error_code)
    }

    /// The leader every running node names, if they agree on a running one.
    pub async fn agreed_leader(&self) -> Option<u64> {
        let running = self.running();
        let mut leader = None;
        for id in &running {
            let named = self.describe(*id).await.ok()?.controller_leader?;
            if *leader.get_or_insert(named) != named {
                return None;
            }
        }
        leader.filter(|l| running.contains(l))
    }

    /// Waits (within [`LEADER_TIMEOUT`]) until all running nodes agree on a
    /// running leader, and returns it.
    pub async fn leader(&self) -> u64 {
        wait_until(
            "the running nodes to agree on a leader",
            LEADER_TIMEOUT,
            || self.agreed_leader(),
        )
        .await
    }

    /// Waits until every running node sees each of `brokers` registered and
    /// unfenced.
    pub async fn wait_unfenced(&self, brokers: &[u64], timeout: Duration) {
        let what = format!("brokers {brokers:?} unfenced on every running node");
        wait_until(&what, timeout, || async {
            for id in self.running() {
                let d = self.describe(id).await.ok()?;
                let ok = brokers
                    .iter()
                    .all(|b| d.brokers.iter().any(|info| info.id == *b && !info.fenced));
                if !ok {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// The last `n` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, n: usize) -> Vec<String> {
        logs::tail(self.log_path(id), n)
    }

    /// Every ERROR line (or panic) so far, as `node-<id>.log: <line>`, that
    /// contains none of [`logs::DEFAULT_ALLOWED_ERRORS`] and none of
    /// `allowed`: for runs that report instead of panicking.
    pub fn unexpected_errors(&self, allowed: &[&str]) -> Vec<String> {
        let allowed: Vec<&str> = logs::DEFAULT_ALLOWED_ERRORS
            .iter()
            .map(|(s, _why)| *s)
            .chain(allowed.iter().copied())
            .collect();
        self.nodes
            .values()
            .flat_map(|node| {
                logs::unexpected_errors(&node.log_path, &allowed)
                    .into_iter()
                    .map(move |line| format!("node-{}.log: {line}", node.id))
            })
            .collect()
    }

    /// Fails the test if any node logged an ERROR line (or panicked) that
    /// contains none of [`logs::DEFAULT_ALLOWED_ERRORS`] and none of
    /// `allowed`. Call it at the end of every test: it also marks the test as
    /// having reached its end (see the module docs).
    pub fn assert_no_unexpected_errors(&self, allowed: &[&str]) {
        let allowed: Vec<&str> = logs::DEFAULT_ALLOWED_ERRORS
            .iter()
            .map(|(s, _why)| *s)
            .chain(allowed.iter().copied())
            .collect();
        let mut found = Vec::new();
        for node in self.nodes.values() {
            for line in logs::unexpected_errors(&node.log_path, &allowed) {
                found.push(format!("node-{}.log: {line}", node.id));
            }
        }
        assert!(
            found.is_empty(),
            "{} unexpected ERROR line(s):\n{}",
            found.len(),
            found.join("\n")
        );
        self.checked.store(true, Ordering::Relaxed);
    }

    /// Prints the last [`LOG_TAIL_LINES`] lines of every node's log.
    pub fn print_log_tails(&self) {
        for node in self.nodes.values() {
            eprintln!(
                "----- {} (last {LOG_TAIL_LINES} lines) -----",
                node.log_path.display()
            );
            for line in logs::tail(&node.log_path, LOG_TAIL_LINES) {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            node.kill();
        }
        for dir in self.mounts.drain(..) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&dir)
                .status();
        }
        let failed = std::thread::panicking() || !self.checked.load(Ordering::Relaxed);
        if failed {
            self.print_log_tails();
        }
        if failed || std::env::var_os("RIVULET_KEEP_TEST_DIRS").is_some() {
            if let Some(root) = self.root.take() {
                eprintln!(
                    "cluster-tests: node logs and data kept in {}",
                    root.keep().display()
                );
            }
        }
    }
}

/// Whether the node's last run failed to bind its address.
fn port_taken(log: &Path) -> bool {
    let lines = logs::read_lines(log);
    let last_run = lines
        .iter()
        .rposition(|l| l.contains("=== cluster-tests") && l.contains(": started node"))
        .unwrap_or(0);
    lines[last_run..].iter().any(|l| {
        let l = l.to_ascii_lowercase();
        l.contains("address already in use") || l.contains("addrinuse")
    })
}

/// `1.234s`.
pub fn fmt_duration(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}
