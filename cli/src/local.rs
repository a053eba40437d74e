//! A local cluster of `rivulet node` child processes on 127.0.0.1, used by
//! `rivulet dev` and by the benchmarks' `--local-cluster`. Every node is a
//! controller voter and a broker; node `i` listens on `ports[i-1]`, keeps its
//! data in `<data_dir>/node-<i>` and appends its output to
//! `<data_dir>/node-<i>.log`. Dropping the cluster kills the nodes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rivulet_proto::v1::DescribeClusterRequest;
use tokio::process::{Child, Command};

/// Running nodes.
#[derive(Debug)]
pub struct LocalCluster {
    exe: PathBuf,
    data_dir: PathBuf,
    ports: Vec<u16>,
    /// Node i's Kafka listener port, when the nodes serve Kafka clients.
    kafka_ports: Option<Vec<u16>>,
    extra_args: Vec<String>,
    children: BTreeMap<u64, Child>,
}

/// Sends `sig` (e.g. `TERM`) to a child.
fn signal(child: &Child, sig: &str) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status();
    }
}

/// `n` ports that were free a moment ago.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("cannot find free ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The cluster secret's file in a local cluster's data directory.
pub const SECRET_FILE: &str = "cluster.secret";
/// Where a local cluster started with TLS keeps its certificates.
pub const TLS_DIR: &str = "tls";

impl LocalCluster {
    /// Starts one node per port, with `extra_args` added to every
    /// `rivulet node` command line. The nodes share a cluster secret,
    /// `<data_dir>/cluster.secret`, made on first use. With `tls` they
    /// serve TLS with certificates made on first use in `<data_dir>/tls`
    /// (for 127.0.0.1 and localhost), and this process's clients trust
    /// their CA.
    pub fn spawn(
        data_dir: &Path,
        ports: Vec<u16>,
        extra_args: &[String],
        tls: bool,
    ) -> Result<Self> {
        Self::spawn_with_kafka(data_dir, ports, None, extra_args, tls)
    }

    /// [`Self::spawn`], node i also serving the Kafka protocol on
    /// `kafka_ports[i - 1]` when given.
    pub fn spawn_with_kafka(
        data_dir: &Path,
        ports: Vec<u16>,
        kafka_ports: Option<Vec<u16>>,
        extra_args: &[String],
        tls: bool,
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the rivulet binary")?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        rivulet_proto::node_auth::ClusterSecret::create_file(&data_dir.join(SECRET_FILE), true)?;
        let mut extra_args = extra_args.to_vec();
        if tls {
            let dir = data_dir.join(TLS_DIR);
            let files = crate::tls::CertFiles::in_dir(&dir);
            if !files.ca.exists() {
                // The CA certificate is written last: without it the
                // directory is an interrupted run's, ours to redo.
                let _ = std::fs::remove_dir_all(&dir);
                crate::tls::make_certs(&dir, &["127.0.0.1".into(), "localhost".into()], 825)?;
            }
            extra_args.extend(files.node_flags());
            crate::tls::set_client(Some(rivulet_proto::tls::ClientTls::from_files(
                &files.ca, None,
            )?));
        }
        let mut c = Self {
            exe,
            data_dir: data_dir.canonicalize()?,
            ports,
            kafka_ports,
            extra_args,
            children: BTreeMap::new(),
        };
        for i in c.ids() {
            c.start(i)?;
        }
        Ok(c)
    }

    /// Node ids, 1..=n.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.ports.len() as u64).collect()
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: u64) -> String {
        format!("127.0.0.1:{}", self.ports[(i - 1) as usize])
    }

    /// Every node's address, comma separated.
    pub fn bootstrap(&self) -> String {
        self.ids()
            .iter()
            .map(|i| self.addr(*i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s Kafka address, if the nodes serve Kafka clients.
    pub fn kafka_addr(&self, i: u64) -> Option<String> {
        let ports = self.kafka_ports.as_ref()?;
        Some(format!("127.0.0.1:{}", ports[(i - 1) as usize]))
    }

    /// Every node's Kafka address, comma separated (`bootstrap.servers`).
    pub fn kafka_bootstrap(&self) -> Option<String> {
        let all: Option<Vec<String>> = self.ids().iter().map(|i| self.kafka_addr(*i)).collect();
        all.map(|a| a.join(","))
    }

    /// Node `i`'s log file.
    pub fn log_path(&self, i: u64) -> PathBuf {
        self.data_dir.join(format!("node-{i}.log"))
    }

    /// Where the nodes keep their data.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Node `i`'s pid while it runs.
    pub fn pid(&self, i: u64) -> Option<u32> {
        self.children.get(&i).and_then(Child::id)
    }

    /// The arguments of `rivulet` that run node `i`.
    fn node_args(&self, i: u64) -> Vec<String> {
        let voters: Vec<String> = self
            .ids()
            .iter()
            .map(|id| format!("{id}@{}", self.addr(*id)))
            .collect();
        let mut args: Vec<String> = vec![
            "node".into(),
            "--id".into(),
            i.to_string(),
            "--listen".into(),
            self.addr(i),
            "--data-dir".into(),
            self.data_dir
                .join(format!("node-{i}"))
                .display()
                .to_string(),
            "--voters".into(),
            voters.join(","),
            "--cluster-secret-file".into(),
            self.data_dir.join(SECRET_FILE).display().to_string(),
        ];
        if let Some(k) = self.kafka_addr(i) {
            args.extend(["--kafka-listen".into(), k]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The shell command that starts node `i` again by hand.
    pub fn command_line(&self, i: u64) -> String {
        std::iter::once(self.exe.display().to_string())
            .chain(self.node_args(i))
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Starts (or restarts) node `i`.
    pub fn start(&mut self, i: u64) -> Result<()> {
        let log_path = self.log_path(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let child = Command::new(&self.exe)
            .args(self.node_args(i))
            // The flags say all; a client's TLS settings in the environment
            // (`export RIVULET_TLS_CA=...`) are not the node's.
            .env_remove("RIVULET_TLS_CA")
            .env_remove("RIVULET_TLS_CERT")
            .env_remove("RIVULET_TLS_KEY")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {i}"))?;
        self.children.insert(i, child);
        Ok(())
    }

    /// SIGKILLs node `i` and reaps it.
    pub async fn kill(&mut self, i: u64) {
        if let Some(mut c) = self.children.remove(&i) {
            let _ = c.kill().await;
        }
    }

    /// Waits until a controller is elected and `brokers` brokers are live,
    /// as node 1 (or any answering node) sees it; returns the cluster id.
    pub async fn wait_ready(&mut self, brokers: usize, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            for i in self.ids() {
                let ready = async {
                    let mut c = crate::admin::connect(&self.addr(i)).await.ok()?;
                    let d = c
                        .describe_cluster(DescribeClusterRequest {})
                        .await
                        .ok()?
                        .into_inner();
                    let live = d.brokers.iter().filter(|b| !b.fenced).count();
                    (d.controller_leader.is_some() && live >= brokers).then_some(d.cluster_id)
                }
                .await;
                if let Some(id) = ready {
                    return Ok(id);
                }
            }
            for (i, c) in &mut self.children {
                if let Some(status) = c.try_wait()? {
                    bail!(
                        "node {i} exited ({status}); see {}",
                        self.data_dir.join(format!("node-{i}.log")).display()
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the cluster was not ready within {timeout:?}; see the logs in {}",
                    self.data_dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Nodes that exited since the last call, with their status.
    pub fn exited(&mut self) -> Result<Vec<(u64, std::process::ExitStatus)>> {
        let mut out = Vec::new();
        for (i, c) in &mut self.children {
            if let Some(status) = c.try_wait()? {
                out.push((*i, status));
            }
        }
        for (i, _) in &out {
            self.children.remove(i);
        }
        Ok(out)
    }

    /// SIGTERM to every node, SIGKILL to those still up after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        for c in self.children.values() {
            signal(c, "TERM");
        }
        let deadline = Instant::now() + grace;
        for (i, c) in &mut self.children {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, c.wait()).await.is_err() {
                eprintln!("node {i} did not stop in time; killing it");
                let _ = c.kill().await;
            }
        }
    }
}

/// `s` quoted for a POSIX shell where it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@,=".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
