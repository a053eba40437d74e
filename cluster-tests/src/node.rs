//! One `rivulet node` process: how it is started, signalled and reaped, and
//! where its files are.
//!
//! The process's stdout and stderr go to `node-<id>.log`, opened for append so
//! the log of every run of the node is kept, each run preceded by a marker
//! line written by the harness (as are kills, pauses and resumes).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// The cluster secret's file name in the cluster's directory.
pub(crate) const SECRET_FILE: &str = "cluster.secret";

/// What the process of a node is doing.
#[derive(Debug)]
pub(crate) enum State {
    /// Not running (never started, exited, killed or terminated).
    Stopped,
    /// Running.
    Running(Child),
    /// Stopped with SIGSTOP; continues on SIGCONT.
    Paused(Child),
}

/// A node of the cluster and its process.
#[derive(Debug)]
pub(crate) struct Node {
    /// The node id, also its broker id.
    pub(crate) id: u64,
    /// The gRPC address. Fixed for the node's life: it is in every node's
    /// voter list.
    pub(crate) addr: SocketAddr,
    /// `<root>/node-<id>/data`, the node's `--data-dir`.
    pub(crate) data_dir: PathBuf,
    /// `<root>/node-<id>.log`: stdout and stderr of every run.
    pub(crate) log_path: PathBuf,
    /// The process, if any.
    pub(crate) state: State,
    /// The network namespace it runs in, if the cluster has them.
    pub(crate) netns: Option<String>,
    /// `<root>/cluster.secret`, shared by every node of the cluster
    /// (`None`: the node runs without one, proven by its TLS certificate).
    pub(crate) secret_file: Option<PathBuf>,
    /// More `rivulet node` flags (TLS, the Kafka listener).
    pub(crate) extra_args: Vec<String>,
    /// Its Kafka listener's address, if it serves one.
    pub(crate) kafka_addr: Option<SocketAddr>,
}

impl Node {
    pub(crate) fn new(root: &Path, id: u64, addr: SocketAddr) -> Self {
        Self {
            id,
            addr,
            data_dir: root.join(format!("node-{id}")).join("data"),
            log_path: root.join(format!("node-{id}.log")),
            state: State::Stopped,
            netns: None,
            secret_file: Some(root.join(SECRET_FILE)),
            extra_args: Vec::new(),
            kafka_addr: None,
        }
    }

    /// Appends a harness marker line to the node's log.
    pub(crate) fn mark(&self, what: &str) {
        if let Ok(mut f) = self.open_log() {
            let _ = writeln!(f, "=== cluster-tests {} UTC: {what} ===", utc_time_of_day());
        }
    }

    fn open_log(&self) -> std::io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
    }

    /// Spawns `rivulet node` for this node.
    pub(crate) fn spawn(&mut self, bin: &Path, voters: &str, log_filter: &str) {
        assert!(
            matches!(self.state, State::Stopped),
            "node {} is already running",
            self.id
        );
        std::fs::create_dir_all(&self.data_dir).expect("cannot create the data dir");
        let log = self.open_log().expect("cannot open the node log");
        // `ip netns exec` enters the namespace and execs the node: same pid.
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .arg("node")
            .args(["--id", &self.id.to_string()])
            .args(["--listen", &self.addr.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--voters", voters])
            .args(
                self.secret_file
                    .iter()
                    .flat_map(|f| [std::ffi::OsStr::new("--cluster-secret-file"), f.as_os_str()]),
            )
            .args(&self.extra_args)
            .env("RIVULET_LOG", log_filter)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.mark(&format!(
            "started node {} on {} as pid {}",
            self.id,
            self.addr,
            child.id()
        ));
        self.state = State::Running(child);
    }

    /// The pid of the running or paused process.
    pub(crate) fn pid(&self) -> Option<u32> {
        match &self.state {
            State::Running(c) | State::Paused(c) => Some(c.id()),
            State::Stopped => None,
        }
    }

    /// Whether the process is running and not paused.
    pub(crate) fn is_running(&self) -> bool {
        matches!(self.state, State::Running(_))
    }

    /// The exit status if the process has exited (it is then reaped and the
    /// node is `Stopped`); the caller writes the marker, since it knows why.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        let State::Running(child) = &mut self.state else {
            return None;
        };
        let status = child.try_wait().expect("cannot wait for the node")?;
        self.state = State::Stopped;
        Some(status)
    }

    /// Sends `signal` (a name `kill -s` knows: TERM, STOP, CONT) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("node {} has no process to send SIG{signal} to", self.id));
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .expect("cannot run kill(1)");
        assert!(status.success(), "kill -s {signal} {pid} failed: {status}");
    }

    /// SIGKILLs the process (paused or not) and reaps it. No-op when stopped.
    pub(crate) fn kill(&mut self) {
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::Running(mut c) | State::Paused(mut c) => {
                // Fails only if the process already exited; either way it is
                // reaped by the wait.
                let _ = c.kill();
                let _ = c.wait();
                self.mark(&format!("SIGKILLed node {} (pid {})", self.id, c.id()));
            }
            State::Stopped => {}
        }
    }
}

/// The current UTC time of day, `HH:MM:SS.mmm`, to line markers up with the
/// nodes' own timestamps.
fn utc_time_of_day() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let s = since_epoch.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        since_epoch.subsec_millis()
    )
}
