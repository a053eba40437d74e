//! The docker quickstart end to end: build the registry-free image with
//! `docker/build-image.sh`, start `docker-compose.yml`'s three nodes, create
//! a replicated topic, produce and consume with the `rivulet` CLI from the
//! host, `docker kill` partition 0's leader, and check that a new leader
//! takes over and every record is still there.
//!
//! Skipped (the test passes, saying why on stderr) when `docker info` fails
//! or there is no docker-compose. It builds `rivulet:cluster-test` from the binary
//! the other cluster tests use (see `cluster_tests::rivulet_binary`) and
//! runs the compose project under a unique name, a free /24 subnet and free
//! host ports, so a cluster you started with the defaults (172.28.0.0/24,
//! 9092-9094) is left alone. The project's containers, network and volumes
//! are removed at the end, also when the test fails; the image stays.
//!
//! Linux only, like the compose file: the CLI runs on the host and follows
//! partition leaders to the containers' advertised bridge IPs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use cluster_tests::checker::{check, Ledger, Nodes, Workload, WorkloadConfig};
use cluster_tests::{fmt_duration, rivulet_binary, wait_until, DEFAULT_ALLOWED_ERRORS};
use serde_json::Value;

/// Bound on `docker info` / `docker-compose version` (a hung daemon).
/// The image the test builds and runs (not `rivulet:dev`, which users build).
const TEST_IMAGE: &str = "rivulet:cluster-test";
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on building the image (copying a debug binary into a layer).
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on `docker-compose up -d` / `down -v`.
const COMPOSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on the cluster becoming ready after `up -d` (three unfenced brokers,
/// three healthy containers; the healthcheck runs every 5 s).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one `rivulet` CLI invocation.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a new leader for partition 0 after its leader's container is
/// killed (the controller fences a broker whose stream broke within about
/// a second; the lease is 1.5 s).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// `rivulet consume --timeout-ms`: stop after this long without a record.
const CONSUME_IDLE_MS: &str = "3000";
/// Records produced before and after the failover.
const RECORDS: usize = 50;

/// The repository root: the compose file and docker/build-image.sh live there.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cluster-tests lives inside the workspace")
        .to_path_buf()
}

/// Runs `cmd` to completion, feeding it `stdin`, killing it after `timeout`.
/// Err names what failed to start or did not finish.
fn run_bounded(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        // Dropping the pipe at the end of the thread closes the child's stdin.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} did not finish within {timeout:?}"));
            }
            Err(e) => return Err(format!("cannot wait for {what}: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// [`run_bounded`], panicking if the command could not run or timed out.
fn run(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    run_bounded(cmd, stdin, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Panics with the command's stderr unless it succeeded; returns stdout.
fn success(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How to run compose here: `docker-compose` (1.x or 2.x), else the
/// `docker compose` plugin. None if neither answers.
fn find_compose() -> Option<Vec<String>> {
    let candidates: [&[&str]; 2] = [&["docker-compose"], &["docker", "compose"]];
    candidates.iter().find_map(|argv| {
        let out = run_bounded(
            Command::new(argv[0]).args(&argv[1..]).arg("version"),
            None,
            PROBE_TIMEOUT,
        )
        .ok()?;
        out.status
            .success()
            .then(|| argv.iter().map(|s| (*s).to_owned()).collect())
    })
}

/// Why the test cannot run here, if it cannot.
fn docker_unavailable() -> Option<String> {
    match run_bounded(Command::new("docker").arg("info"), None, PROBE_TIMEOUT) {
        Err(e) => Some(format!("docker is not usable: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "`docker info` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// The IPv4 subnets, as (network, mask), that Docker networks and host
/// routes already use.
fn subnets_in_use() -> Vec<(u32, u32)> {
    let mut used = Vec::new();
    // Host routes: /proc/net/route holds destination and mask as hex of the
    // address bytes read as a native (little-endian) integer.
    if let Ok(routes) = std::fs::read_to_string("/proc/net/route") {
        for line in routes.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 7 {
                if let (Ok(dst), Ok(mask)) =
                    (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16))
                {
                    if mask != 0 {
                        let ip = |x: u32| u32::from(Ipv4Addr::from(x.to_le_bytes()));
                        used.push((ip(dst), ip(mask)));
                    }
                }
            }
        }
    }
    // Docker networks (a network without a bridge on this host has no route).
    let ids = run(
        Command::new("docker").args(["network", "ls", "-q"]),
        None,
        PROBE_TIMEOUT,
    );
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        let out = run(
            Command::new("docker")
                .args(["network", "inspect", "--format"])
                .arg("{{range .IPAM.Config}}{{.Subnet}} {{end}}")
                .args(&ids),
            None,
            PROBE_TIMEOUT,
        );
        for cidr in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let Some((addr, len)) = cidr.split_once('/') else {
                continue;
            };
            let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
                continue; // IPv6
            };
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            used.push((u32::from(addr) & mask, mask));
        }
    }
    used
}

/// A `172.28.N` prefix (N >= 100, so never the compose file's default
/// 172.28.0) whose /24 overlaps no Docker network and no host route.
fn free_subnet_prefix() -> String {
    let used = subnets_in_use();
    let start = std::process::id() % 155;
    (0..155)
        .map(|i| 100 + (start + i) % 155)
        .find(|n| {
            let net = u32::from(Ipv4Addr::new(172, 28, *n as u8, 0));
            let mask = u32::MAX << 8;
            used.iter().all(|(other, other_mask)| {
                let common = mask & other_mask;
                (net & common) != (other & common)
            })
        })
        .map(|n| format!("172.28.{n}"))
        .expect("no free 172.28.N.0/24 subnet for the test network")
}

/// Three distinct free ports on 127.0.0.1 (all bound before any is released).
fn free_ports() -> [u16; 6] {
    let listeners: Vec<TcpListener> = (0..6)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().expect("bound").port();
    std::array::from_fn(port)
}

/// One compose project; `docker-compose down -v` when dropped, whatever
/// happened (its containers, network and volumes go; the image stays).
struct Project {
    /// The compose command: `docker-compose`, or `docker compose`.
    compose: Vec<String>,
    /// Unique per run, so containers, network and volumes are this run's own.
    name: String,
    /// The repository's `docker-compose.yml`: the file users run.
    file: PathBuf,
    /// `RIVULET_SUBNET_PREFIX`: a /24 no other network uses.
    subnet_prefix: String,
    /// `RIVULET_PORT_1..3`: free host ports for node 1..3's published port,
    /// then `RIVULET_KAFKA_PORT_1..3` for their Kafka listeners.
    ports: [u16; 6],
    /// `docker/compose.tls.yml` over the base file, and the CA the host CLI
    /// trusts (copied out of node 1 once up).
    tls: Option<(PathBuf, PathBuf)>,
    /// Holds that CA file.
    _ca_dir: tempfile::TempDir,
}

impl Project {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..])
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(&self.file);
        if let Some((overlay, _)) = &self.tls {
            cmd.arg("-f").arg(overlay);
        }
        cmd.env("RIVULET_IMAGE", TEST_IMAGE)
            .env("RIVULET_SUBNET_PREFIX", &self.subnet_prefix);
        for (i, port) in self.ports[..3].iter().enumerate() {
            cmd.env(format!("RIVULET_PORT_{}", i + 1), port.to_string());
        }
        for (i, port) in self.ports[3..].iter().enumerate() {
            cmd.env(format!("RIVULET_KAFKA_PORT_{}", i + 1), port.to_string());
        }
        cmd
    }

    fn compose(&self, args: &[&str]) -> String {
        let out = run(self.command().args(args), None, COMPOSE_TIMEOUT);
        success(
            &format!("{} {}", self.compose.join(" "), args.join(" ")),
            out,
        )
    }

    /// The host's `rivulet`, trusting the cluster's CA when it serves TLS.
    fn cli(&self) -> Command {
        let mut cmd = Command::new(rivulet_binary());
        cmd.env_remove("RIVULET_TLS_CA");
        if let Some((_, ca)) = &self.tls {
            cmd.env("RIVULET_TLS_CA", ca);
        }
        cmd
    }

    /// `--bootstrap` for the CLI on the host: every node's published port.
    fn bootstrap(&self) -> String {
        self.ports[..3]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The container id of node `id`'s service.
    fn container(&self, id: u64) -> String {
        let out = self.compose(&["ps", "-q", &format!("node{id}")]);
        let container = out.trim();
        assert!(!container.is_empty(), "no container for node{id}");
        container.to_owned()
    }

    /// `rivulet --bootstrap <every node> <args>`, fed `stdin`.
    fn rivulet(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run(
            self.cli()
                .arg("--bootstrap")
                .arg(self.bootstrap())
                .args(args),
            stdin,
            CLI_TIMEOUT,
        )
    }

    /// `rivulet ... --json` through every node but `skip` (a paused node
    /// accepts connections and never answers), parsed; None if it failed.
    fn rivulet_json_without(&self, skip: u64, args: &[&str]) -> Option<Value> {
        let bootstrap: Vec<String> = (1..=3u64)
            .zip(&self.ports[..3])
            .filter(|(id, _)| *id != skip)
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect();
        let out = run_bounded(
            self.cli()
                .arg("--bootstrap")
                .arg(bootstrap.join(","))
                .args(args),
            None,
            CLI_TIMEOUT,
        )
        .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `rivulet ... --json`, parsed; None if it failed (a node may be down).
    fn rivulet_json(&self, args: &[&str]) -> Option<Value> {
        let out = self.rivulet(args, None);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Every node's log (the killed one's too), from `docker logs`.
    fn logs(&self) -> BTreeMap<u64, String> {
        (1..=3)
            .map(|id| {
                let c = self.container(id);
                let out = run(
                    Command::new("docker").args(["logs", &c]),
                    None,
                    COMPOSE_TIMEOUT,
                );
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                (id, text)
            })
            .collect()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(out) = run_bounded(
                self.command().args(["logs", "--no-color", "--tail", "40"]),
                None,
                COMPOSE_TIMEOUT,
            ) {
                eprintln!(
                    "----- docker-compose logs (last 40 lines per node) -----\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        match run_bounded(
            self.command().args(["down", "-v", "--timeout", "5"]),
            None,
            COMPOSE_TIMEOUT,
        ) {
            Ok(out) if out.status.success() => {
                eprintln!("docker test: removed project {}", self.name);
            }
            Ok(out) => eprintln!(
                "docker test: `down -v` of project {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("docker test: `down -v` of project {}: {e}", self.name),
        }
    }
}

/// Whether a log line reports an error (level ERROR, or a panic).
fn is_error_line(line: &str) -> bool {
    line.split_whitespace().take(4).any(|w| w == "ERROR") || line.contains("panicked at")
}

/// Partition `p` of a `topic describe --json`.
fn partition(topic: &Value, p: u64) -> &Value {
    topic["partitions"]
        .as_array()
        .and_then(|ps| ps.iter().find(|x| x["partition"].as_u64() == Some(p)))
        .unwrap_or_else(|| panic!("partition {p} missing from {topic}"))
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Produces `values` (one record per line, acks=all) and checks every one
/// was acknowledged.
fn produce(project: &Project, topic: &str, values: &[String]) {
    let input = values.iter().map(|v| format!("{v}\n")).collect::<String>();
    let started = Instant::now();
    let out = project.rivulet(&["produce", topic], Some(input.as_bytes()));
    success(&format!("rivulet produce {topic}"), out);
    eprintln!(
        "docker test: produced {} records in {}",
        values.len(),
        fmt_duration(started.elapsed())
    );
}

/// Every value of `topic`, read from the beginning, sorted (partitions
/// interleave arbitrarily).
fn consume_all(project: &Project, topic: &str) -> Vec<String> {
    let out = project.rivulet(
        &[
            "consume",
            topic,
            "--from-beginning",
            "--timeout-ms",
            CONSUME_IDLE_MS,
        ],
        None,
    );
    let stdout = success(&format!("rivulet consume {topic}"), out);
    let mut values: Vec<String> = stdout.lines().map(str::to_owned).collect();
    values.sort();
    values
}

/// Builds the test image and brings a compose project up on a free subnet
/// and ports, waiting until every broker is unfenced and every container
/// healthy; `None` (with a SKIPPED message) without a Docker daemon.
async fn compose_up(tls: bool) -> Option<Project> {
    if let Some(why) = docker_unavailable() {
        eprintln!("docker test: SKIPPED: {why}");
        return None;
    }
    let Some(compose) = find_compose() else {
        eprintln!(
            "docker test: SKIPPED: neither `docker-compose` nor `docker compose` is available"
        );
        return None;
    };
    let root = workspace_root();

    // The image, from the binary every cluster test runs.
    let started = Instant::now();
    let binary = rivulet_binary();
    let out = run(
        // Its own tag: a user's release image stays as it is.
        Command::new(root.join("docker/build-image.sh"))
            .env("RIVULET_IMAGE_TAGS", TEST_IMAGE)
            .arg("--binary")
            .arg(binary),
        None,
        BUILD_TIMEOUT,
    );
    success("docker/build-image.sh", out);
    eprintln!(
        "docker test: built {TEST_IMAGE} from {} in {}",
        binary.display(),
        fmt_duration(started.elapsed())
    );

    // The cluster, beside any other.
    let project = Project {
        compose,
        name: format!(
            "rivulet-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
                % 1_000_000
        ),
        file: root.join("docker-compose.yml"),
        subnet_prefix: free_subnet_prefix(),
        ports: free_ports(),
        tls: None,
        _ca_dir: tempfile::tempdir().expect("a temp dir for the CA"),
    };
    let mut project = project;
    if tls {
        project.tls = Some((
            root.join("docker/compose.tls.yml"),
            project._ca_dir.path().join("ca.pem"),
        ));
    }
    eprintln!(
        "docker test: project {} on {}.0/24, host ports {:?}",
        project.name, project.subnet_prefix, project.ports
    );
    let started = Instant::now();
    project.compose(&["up", "-d"]);
    let containers: Vec<String> = (1..=3).map(|id| project.container(id)).collect();
    if let Some((_, ca)) = &project.tls {
        // The CA `certs` made on the shared volume, for the host's CLI.
        let out = run(
            Command::new("docker")
                .arg("cp")
                .arg(format!("{}:/tls/ca.pem", containers[0]))
                .arg(ca),
            None,
            PROBE_TIMEOUT,
        );
        success("docker cp ca.pem", out);
    }
    wait_until(
        "three unfenced brokers and three healthy containers",
        READY_TIMEOUT,
        || async {
            let status = project.rivulet_json(&["cluster", "status", "--json"])?;
            status["controller_leader"].as_u64()?;
            let brokers = status["brokers"].as_array()?;
            let live = brokers
                .iter()
                .filter(|b| b["fenced"] == Value::Bool(false))
                .count();
            if brokers.len() != 3 || live != 3 {
                return None;
            }
            let health = run(
                Command::new("docker")
                    .args(["inspect", "--format", "{{.State.Health.Status}}"])
                    .args(&containers),
                None,
                PROBE_TIMEOUT,
            );
            let health = String::from_utf8_lossy(&health.stdout).into_owned();
            (health
                .split_whitespace()
                .filter(|h| *h == "healthy")
                .count()
                == 3)
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "docker test: cluster up and healthy {} after `up -d`",
        fmt_duration(started.elapsed())
    );
    Some(project)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_serves_the_cli_and_fails_over_when_a_container_is_killed() {
    let test_started = Instant::now();
    let Some(project) = compose_up(false).await else {
        return;
    };
    let status = project
        .rivulet_json(&["cluster", "status", "--json"])
        .expect("cluster status");
    for b in status["brokers"].as_array().expect("brokers") {
        let id = b["id"].as_u64().expect("broker id");
        assert_eq!(
            b["address"].as_str(),
            Some(format!("{}.1{id}:9092", project.subnet_prefix).as_str()),
            "broker {id} should advertise its container IP"
        );
    }

    // Kafka clients bootstrap from the published port and are sent on to
    // the containers' Kafka listeners.
    if let Some(kcat) = std::env::var_os("RIVULET_KCAT") {
        let out = run(
            Command::new(kcat).args(["-b", &format!("127.0.0.1:{}", project.ports[3]), "-L"]),
            None,
            CLI_TIMEOUT,
        );
        let listed = success("kcat -L", out);
        for id in 1..=3 {
            let want = format!("broker {id} at {}.1{id}:19092", project.subnet_prefix);
            assert!(listed.contains(&want), "{want} missing from {listed}");
        }
    }

    // A topic every node replicates.
    let out = project.rivulet(
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ],
        None,
    );
    success("rivulet topic create", out);
    let topic = wait_until(
        "every partition of t led, with three in-sync replicas",
        Duration::from_secs(10),
        || async {
            let t = project.rivulet_json(&["topic", "describe", "t", "--json"])?;
            let ready = (0..3).all(|p| {
                let p = partition(&t, p);
                p["leader"].as_u64().is_some() && ids(&p["isr"]).len() == 3
            });
            ready.then_some(t)
        },
    )
    .await;

    // Records in and out, through the published port and the leaders' IPs.
    let before: Vec<String> = (0..RECORDS).map(|i| format!("before-{i:03}")).collect();
    produce(&project, "t", &before);
    assert_eq!(consume_all(&project, "t"), before, "consumed != produced");

    // Kill partition 0's leader's container.
    let old_leader = partition(&topic, 0)["leader"].as_u64().expect("a leader");
    let old_epoch = partition(&topic, 0)["leader_epoch"]
        .as_u64()
        .expect("an epoch");
    let killed = project.container(old_leader);
    // Failover is timed from the start of `docker kill` (SIGKILL is sent at
    // once; the command returns once Docker has seen the container exit).
    let killed_at = Instant::now();
    let out = run(
        Command::new("docker").args(["kill", &killed]),
        None,
        PROBE_TIMEOUT,
    );
    success("docker kill", out);
    eprintln!(
        "docker test: killed node{old_leader}, leader of t-0 at epoch {old_epoch} \
         (`docker kill` took {})",
        fmt_duration(killed_at.elapsed())
    );
    let after_failover = wait_until(
        "a new leader of t-0, without the killed node in its ISR",
        FAILOVER_TIMEOUT,
        || async {
            let t = project.rivulet_json(&["topic", "describe", "t", "--json"])?;
            let p = partition(&t, 0);
            let leader = p["leader"].as_u64()?;
            (leader != old_leader && !ids(&p["isr"]).contains(&old_leader)).then_some(t)
        },
    )
    .await;
    let p0 = partition(&after_failover, 0);
    eprintln!(
        "docker test: t-0 led by node{} at epoch {} with ISR {:?}, {} after `docker kill` began",
        p0["leader"],
        p0["leader_epoch"],
        ids(&p0["isr"]),
        fmt_duration(killed_at.elapsed())
    );
    assert!(
        p0["leader_epoch"].as_u64() > Some(old_epoch),
        "the leader epoch must grow: {p0}"
    );

    // Two of three replicas left, min.insync.replicas=2: acks=all still works,
    // and nothing acknowledged before the kill is lost.
    let after: Vec<String> = (0..RECORDS).map(|i| format!("after-{i:03}")).collect();
    produce(&project, "t", &after);
    let consumed = consume_all(&project, "t");
    for v in before.iter().chain(&after) {
        assert!(consumed.contains(v), "record {v:?} lost after the failover");
    }
    let mut expected: Vec<String> = before.iter().chain(&after).cloned().collect();
    expected.sort();
    assert_eq!(
        consumed, expected,
        "after the failover: consumed != produced (duplicates or foreign records)"
    );

    // No node logged an unexpected ERROR (the same rule as every cluster test).
    let allowed: Vec<&str> = DEFAULT_ALLOWED_ERRORS.iter().map(|(s, _)| *s).collect();
    let unexpected: Vec<String> = project
        .logs()
        .into_iter()
        .flat_map(|(id, log)| {
            log.lines()
                .filter(|l| is_error_line(l) && !allowed.iter().any(|a| l.contains(a)))
                .map(|l| format!("node{id}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} unexpected ERROR line(s):\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    eprintln!(
        "docker test: passed in {} (before teardown)",
        fmt_duration(test_started.elapsed())
    );
}

/// A fault the docker checker test injects into one container.
#[derive(Debug, Clone, Copy)]
enum DockerFault {
    /// `docker kill`, then `docker start` 2 s later.
    Kill,
    /// `docker pause` for 3 s (past the 1.5 s lease), then `docker unpause`.
    Pause,
    /// `docker network disconnect` for 4 s, then `connect` with its IP.
    Disconnect,
}

/// The durability checker against the compose cluster: the concurrent acks=all
/// workload runs while partition 0's leader is killed, paused and cut off
/// the network in turn; after each heal every partition is read in full and
/// checked (nothing acknowledged lost, offsets dense, no refused record, per
/// producer order, nothing consumed vanishing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_finds_nothing_lost_under_docker_kill_pause_and_disconnect() {
    let Some(project) = compose_up(false).await else {
        return;
    };
    let topic = "ck";
    success(
        "rivulet topic create",
        project.rivulet(
            &[
                "topic",
                "create",
                topic,
                "--partitions",
                "3",
                "--replication-factor",
                "3",
                "--config",
                "min.insync.replicas=2",
            ],
            None,
        ),
    );
    let healed = || async {
        let status = project.rivulet_json(&["cluster", "status", "--json"])?;
        let live = status["brokers"]
            .as_array()?
            .iter()
            .filter(|b| b["fenced"] == Value::Bool(false))
            .count();
        let t = project.rivulet_json(&["topic", "describe", topic, "--json"])?;
        let whole = (0..3).all(|p| {
            let p = partition(&t, p);
            p["leader"].as_u64().is_some() && ids(&p["isr"]).len() == 3
        });
        (live == 3 && whole).then_some(t)
    };
    wait_until("the topic fully replicated", READY_TIMEOUT, healed).await;

    let addrs: Vec<(u64, String)> = (1..=3)
        .map(|id| (id, format!("{}.1{id}:9092", project.subnet_prefix)))
        .collect();
    let nodes = Nodes::at(&addrs);
    let network = format!("{}_rivulet", project.name);
    let cfg = WorkloadConfig {
        topic: topic.into(),
        partitions: 3,
        producers: 3,
        max_batch: 5,
        send_interval: Duration::from_millis(10),
        seed: 23,
    };
    let mut ledger = Ledger::new();
    let mut next_message = 0;
    let mut read_from = BTreeMap::new();
    for fault in [
        DockerFault::Kill,
        DockerFault::Pause,
        DockerFault::Disconnect,
    ] {
        let t = wait_until("a healed cluster", READY_TIMEOUT, healed).await;
        let workload = Workload::start(&nodes, &cfg, next_message, &read_from);
        // Strike under load.
        assert!(
            workload.wait_acked(20, READY_TIMEOUT).await,
            "the workload acknowledged nothing before {fault:?}"
        );
        let victim = partition(&t, 0)["leader"].as_u64().expect("a leader");
        let container = project.container(victim);
        let docker = |args: &[&str]| {
            success(
                &format!("docker {}", args.join(" ")),
                run(Command::new("docker").args(args), None, PROBE_TIMEOUT),
            )
        };
        // The fault lasts until the cluster has moved partition 0 away from
        // the victim (so a paused or cut-off node comes back deposed).
        let deposed = || async {
            let t =
                project.rivulet_json_without(victim, &["topic", "describe", topic, "--json"])?;
            let leader = partition(&t, 0)["leader"].as_u64()?;
            (leader != victim).then_some(())
        };
        match fault {
            DockerFault::Kill => {
                docker(&["kill", &container]);
                wait_until("a new leader of ck-0", FAILOVER_TIMEOUT, deposed).await;
                docker(&["start", &container]);
            }
            DockerFault::Pause => {
                docker(&["pause", &container]);
                wait_until("a new leader of ck-0", FAILOVER_TIMEOUT, deposed).await;
                docker(&["unpause", &container]);
            }
            DockerFault::Disconnect => {
                docker(&["network", "disconnect", &network, &container]);
                wait_until("a new leader of ck-0", FAILOVER_TIMEOUT, deposed).await;
                let ip = format!("{}.1{victim}", project.subnet_prefix);
                docker(&["network", "connect", "--ip", &ip, &network, &container]);
            }
        }
        let heal_started = Instant::now();
        wait_until("the cluster to heal", Duration::from_secs(60), healed).await;
        let heal = heal_started.elapsed();
        // Availability is back: more acknowledgements after the heal.
        assert!(
            workload.wait_acked(20, READY_TIMEOUT).await,
            "nothing acknowledged after healing {fault:?}"
        );
        let run = workload.stop().await;
        for s in &run.sends {
            next_message = next_message.max(s.message + 1);
        }
        for s in run.sends.iter().cloned() {
            ledger.record(s);
        }
        let report = check(&nodes, topic, cfg.partitions, &ledger, &run).await;
        for p in &report.partitions {
            read_from.insert(p.partition, p.records);
        }
        eprintln!(
            "docker checker: {fault:?} of node{victim} (leader of {topic}-0): acked {} failed {} \
             unknown {} lost {} duplicates {} longest unavailability {} heal {}",
            report.acked,
            report.failed,
            report.unknown,
            report.lost(),
            report.duplicates(),
            fmt_duration(report.longest_unavailable),
            fmt_duration(heal)
        );
        report.assert_ok();
        assert!(report.acked > 0, "nothing acknowledged during {fault:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_with_tls_serves_the_cli_and_refuses_plaintext() {
    let Some(project) = compose_up(true).await else {
        return;
    };
    let status = project
        .rivulet_json(&["cluster", "status", "--json"])
        .expect("cluster status over TLS");
    assert_eq!(
        status["brokers"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    success(
        "rivulet topic create",
        project.rivulet(
            &[
                "topic",
                "create",
                "secure",
                "--partitions",
                "3",
                "--replication-factor",
                "3",
            ],
            None,
        ),
    );
    let values: Vec<String> = (0..RECORDS).map(|i| format!("tls-{i:03}")).collect();
    produce(&project, "secure", &values);
    let mut expected = values.clone();
    expected.sort();
    assert_eq!(consume_all(&project, "secure"), expected);
    // Without the CA the CLI is refused with one line that says why.
    let out = run(
        Command::new(rivulet_binary())
            .env_remove("RIVULET_TLS_CA")
            .arg("--bootstrap")
            .arg(project.bootstrap())
            .args(["cluster", "status"]),
        None,
        CLI_TIMEOUT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS on one side only"), "{err}");
    // The Kafka listeners serve TLS with the same certificates.
    if let (Some(kcat), Some((_, ca))) = (std::env::var_os("RIVULET_KCAT"), &project.tls) {
        let out = run(
            Command::new(kcat)
                .args(["-b", &format!("127.0.0.1:{}", project.ports[3]), "-L"])
                .args(["-X", "security.protocol=SSL", "-X"])
                .arg(format!("ssl.ca.location={}", ca.display())),
            None,
            CLI_TIMEOUT,
        );
        let listed = success("kcat -L over TLS", out);
        assert!(
            listed.contains("topic \"secure\" with 3 partitions"),
            "{listed}"
        );
    }
    let allowed: Vec<&str> = DEFAULT_ALLOWED_ERRORS.iter().map(|(s, _)| *s).collect();
    for (id, log) in project.logs() {
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| is_error_line(l) && !allowed.iter().any(|a| l.contains(a)))
            .collect();
        assert!(errors.is_empty(), "node {id} logged errors: {errors:#?}");
    }
}
