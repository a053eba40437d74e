//! Fault episodes: inject one fault into a running [`Cluster`] while the
//! [`checker`](crate::checker) workload runs, heal everything, and check.
//! Used by the `chaos` binary (random faults) and `tests/faults.rs` (a fixed
//! subset for CI).
//!
//! ```text
//!  episode:  workload ──────────────────────────────────────────┐ stop
//!            warm-up │ pick target │ fault (+ its own timing) │ heal │ settle │ check
//!                      (live state:   kill / term / bounce×k /    restart, resume,
//!                       controller,   pause / whole cluster       unfenced, ISR whole
//!                       leaders)
//! ```
//!
//! One topic (RF=3, min.insync.replicas=2) lives for the whole run and the
//! ledger keeps every send ever made to it, so each episode's check reads
//! every partition in full: data acknowledged in episode 1 must survive the
//! faults of episode 100 too.
//!
//! Invariants: every wait is bounded; an episode that cannot heal within
//! [`HEAL_TIMEOUT`] is reported as a failure, not waited on forever.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checker::{check, CheckReport, Ledger, Nodes, SplitMix64, Workload, WorkloadConfig};
use crate::cluster::{fmt_duration, Cluster};
use crate::wait::try_wait_until;

/// The broker lease of the nodes (`--broker-lease-ms` default).
pub const BROKER_LEASE: Duration = Duration::from_millis(1_500);
/// How long a pause lasts: past the lease, so the paused node is fenced
/// and comes back as a zombie that must learn it was deposed.
pub const PAUSE: Duration = Duration::from_millis(2_500);
/// How long a network cut lasts: past the lease.
pub const PARTITION: Duration = Duration::from_millis(4_000);
/// How long a killed or stopped node stays down before the heal.
pub const DOWN: Duration = Duration::from_millis(2_000);
/// Workload before the fault, so the fault hits a loaded cluster.
pub const WARM_UP: Duration = Duration::from_millis(1_000);
/// Workload after the heal, so the episode shows availability came back.
pub const SETTLE: Duration = Duration::from_millis(1_000);
/// Deadline for everything to be healed: nodes up, unfenced, ISRs whole.
pub const HEAL_TIMEOUT: Duration = Duration::from_secs(40);

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the target; it stays down for [`DOWN`].
    Kill,
    /// SIGTERM the target (graceful stop); it stays down for [`DOWN`].
    Terminate,
    /// SIGTERM and restart, this many times (the target is re-picked by role
    /// before each bounce).
    CleanBounce(u32),
    /// SIGKILL and restart, this many times.
    HardBounce(u32),
    /// SIGSTOP for [`PAUSE`] (past the broker lease), then SIGCONT: a zombie.
    Pause,
    /// SIGKILL two followers of one partition (only where the controller
    /// quorum survives it: five nodes or more).
    KillTwoFollowers,
    /// SIGKILL every node, then start them all again.
    WholeCluster,
    /// SIGKILL the target, empty its data dir (a replaced disk: its logs and
    /// its Raft store are gone), start it again: it must re-fetch, never lead
    /// with its empty logs.
    ReplaceDisk,
    /// SIGKILL every node, replace the target's disk, start them all again:
    /// the copies on the other nodes must be the ones that lead.
    WholeClusterReplaceDisk,
    /// SIGKILL the target and cut some bytes off the end of the last segment
    /// of each of its partition logs (a torn write), then restart it.
    TornTail,
    /// Cut the target off from every other node for [`PARTITION`] (the
    /// test's clients still reach it): a minority of one.
    Isolate,
    /// Cut the target from the active controller only (another node when
    /// the target is the controller).
    CutFromController,
    /// Cut one follower of partition 0 from its leader only.
    CutFromLeader,
    /// Fill the target's disk for [`PARTITION`], then free it (clusters on
    /// small disks only).
    DiskFull,
    /// Split the network in two for [`PARTITION`]: the target and the next
    /// node (the controller, if the target is not it) against the rest; with
    /// five nodes a minority of two against a majority of three.
    Split,
}

impl Fault {
    /// The kind, without the repeat count (for tables).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kill => "sigkill",
            Self::Terminate => "sigterm",
            Self::CleanBounce(_) => "clean-bounce",
            Self::HardBounce(_) => "hard-bounce",
            Self::Pause => "sigstop-zombie",
            Self::KillTwoFollowers => "kill-2-followers",
            Self::WholeCluster => "whole-cluster-kill",
            Self::ReplaceDisk => "replace-disk",
            Self::WholeClusterReplaceDisk => "whole-cluster-replace-disk",
            Self::TornTail => "torn-tail",
            Self::Isolate => "isolate",
            Self::CutFromController => "cut-from-controller",
            Self::CutFromLeader => "cut-follower-from-leader",
            Self::DiskFull => "disk-full",
            Self::Split => "split",
        }
    }

    /// Every kind that makes sense on `nodes` nodes (network cuts only when
    /// the cluster runs in network namespaces), with repeat counts drawn
    /// from `rng` for the bounces.
    pub fn random(rng: &mut SplitMix64, nodes: usize, network: bool, disks: bool) -> Self {
        let k = 2 + u32::try_from(rng.below(4)).expect("small"); // 2..=5
        let mut choices = vec![
            Self::Kill,
            Self::Terminate,
            Self::CleanBounce(k),
            Self::HardBounce(k),
            Self::Pause,
            Self::WholeCluster,
            Self::TornTail,
            Self::ReplaceDisk,
            Self::WholeClusterReplaceDisk,
        ];
        if network {
            choices.extend([Self::Isolate, Self::CutFromController, Self::CutFromLeader]);
        }
        if disks {
            choices.push(Self::DiskFull);
        }
        if network && nodes >= 5 {
            choices.push(Self::Split);
        }
        if nodes >= 5 {
            choices.push(Self::KillTwoFollowers);
        }
        *rng.pick(&choices)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CleanBounce(k) | Self::HardBounce(k) => write!(f, "{}x{k}", self.kind()),
            _ => f.write_str(self.kind()),
        }
    }
}

/// Which node a fault hits, chosen from the live state when it strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A partition leader that is not the active controller (if any).
    Leader,
    /// A node leading no partition and not the controller (failing that, one
    /// leading none; failing that, a follower of some partition).
    Follower,
    /// The active controller.
    Controller,
    /// The active controller when it also leads a partition; otherwise the
    /// controller alone (the episode line says which roles it had).
    Both,
}

impl Target {
    /// All targets.
    pub const ALL: [Self; 4] = [Self::Leader, Self::Follower, Self::Controller, Self::Both];

    /// Its name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Leader => "leader",
            Self::Follower => "follower",
            Self::Controller => "controller",
            Self::Both => "both",
        }
    }
}

/// A node picked for a fault, and the roles it had then.
#[derive(Debug, Clone)]
struct Picked {
    /// The node.
    id: u64,
    /// E.g. `controller+leader(p1)`.
    roles: String,
}

/// The state of a run across episodes: the topic, the workload's shape and
/// every send made so far.
#[derive(Debug)]
pub struct Scenario {
    /// The workload (topic, partitions, producers).
    pub cfg: WorkloadConfig,
    /// Channels to the nodes, for the workload and the checker.
    nodes: Arc<Nodes>,
    /// Every send to the topic so far.
    ledger: Ledger,
    /// The first message number of the next workload (values stay unique).
    next_message: u64,
    /// Per partition, where the next readers start (the last check's HW).
    read_from: BTreeMap<u32, u64>,
    /// ERROR substrings the faults legitimately produce.
    allowed_errors: Vec<&'static str>,
    /// Unexpected ERROR lines already reported.
    errors_reported: usize,
    /// Episodes run.
    episodes: u64,
}

/// What one episode came to.
#[derive(Debug, Clone)]
pub struct EpisodeReport {
    /// 1-based.
    pub episode: u64,
    /// The fault.
    pub fault: Fault,
    /// The target asked for.
    pub target: Target,
    /// The nodes hit and their roles, e.g. `2 controller+leader(p0)`.
    pub hit: String,
    /// The check after the heal.
    pub check: CheckReport,
    /// How long the heal took, or why it failed.
    pub heal: Result<Duration, String>,
    /// New unexpected ERROR lines in the nodes' logs.
    pub new_errors: Vec<String>,
    /// Wall time of the episode.
    pub took: Duration,
}

impl EpisodeReport {
    /// Whether anything broke: a violation, a failed heal, an ERROR line.
    pub fn failed(&self) -> bool {
        self.check.violations() > 0 || self.heal.is_err() || !self.new_errors.is_empty()
    }

    /// One line for the run's output.
    pub fn line(&self) -> String {
        let (lag_n, lag_max) = self.check.hw_lag();
        format!(
            "episode {:>3} {:<22} {:<10} hit {:<34} acked {:>5} failed {:>3} unknown {:>3} \
             lost {} dup {} unavail {} (p{}) hw-lag {lag_n}/{lag_max} heal {} took {} {}",
            self.episode,
            self.fault.to_string(),
            self.target.name(),
            self.hit,
            self.check.acked,
            self.check.failed,
            self.check.unknown,
            self.check.lost(),
            self.check.duplicates(),
            fmt_duration(self.check.longest_unavailable),
            self.check.longest_unavailable_partition,
            match &self.heal {
                Ok(d) => fmt_duration(*d),
                Err(_) => "FAILED".into(),
            },
            fmt_duration(self.took),
            if self.failed() { "FAIL" } else { "ok" }
        )
    }

    /// What broke, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.check.problems();
        if let Err(e) = &self.heal {
            out.push(format!("heal: {e}"));
        }
        out.extend(self.new_errors.iter().map(|l| format!("ERROR line: {l}")));
        out
    }

    /// Panics with the problems if anything broke.
    pub fn assert_ok(&self) {
        assert!(
            !self.failed(),
            "{}\n{}",
            self.line(),
            self.problems().join("\n")
        );
    }
}

impl Scenario {
    /// Creates the topic (RF=3, min.insync.replicas=2) and waits until every
    /// partition has a leader and a whole ISR. `allowed_errors` are ERROR-line
    /// substrings the faults legitimately produce (each with a reason where
    /// it is defined).
    pub async fn create(c: &Cluster, cfg: WorkloadConfig, allowed_errors: &[&'static str]) -> Self {
        let created = c
            .create_topic_with(
                c.leader().await,
                &cfg.topic,
                cfg.partitions,
                3,
                &[("min.insync.replicas", "2")],
            )
            .await;
        assert_eq!(created, 0, "CreateTopic {}: error {created}", cfg.topic);
        let s = Self {
            nodes: Nodes::of(c),
            cfg,
            ledger: Ledger::new(),
            next_message: 0,
            read_from: BTreeMap::new(),
            allowed_errors: allowed_errors.to_vec(),
            errors_reported: 0,
            episodes: 0,
        };
        if let Err(e) = s.wait_healed(c, HEAL_TIMEOUT).await {
            panic!("the new topic did not settle: {e}");
        }
        s
    }

    /// The ledger of every send so far.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Runs one episode: the workload for about `length` in all, `fault` on
    /// `target` after [`WARM_UP`], the heal, [`SETTLE`] more workload, the
    /// check. Panics only on harness failures (a node that cannot be
    /// started); broken invariants are in the report.
    pub async fn episode(
        &mut self,
        c: &mut Cluster,
        fault: Fault,
        target: Target,
        length: Duration,
        rng: &mut SplitMix64,
    ) -> EpisodeReport {
        self.episodes += 1;
        let started = Instant::now();
        let mut cfg = self.cfg.clone();
        cfg.seed = rng.next_u64();
        let workload = Workload::start(&self.nodes, &cfg, self.next_message, &self.read_from);
        tokio::time::sleep(WARM_UP).await;
        let hit = self.inject(c, fault, target).await;
        let heal_started = Instant::now();
        let heal = match self.heal(c).await {
            Ok(()) => Ok(heal_started.elapsed()),
            Err(e) => Err(e),
        };
        let rest = length.saturating_sub(started.elapsed()).max(SETTLE);
        tokio::time::sleep(rest).await;
        let run = workload.stop().await;
        for s in &run.sends {
            self.next_message = self.next_message.max(s.message + 1);
        }
        for s in run.sends.iter().cloned() {
            self.ledger.record(s);
        }
        let mut report = check(
            &self.nodes,
            &self.cfg.topic,
            self.cfg.partitions,
            &self.ledger,
            &run,
        )
        .await;
        for p in &report.partitions {
            self.read_from.insert(p.partition, p.records);
        }
        if heal.is_ok() {
            for p in 0..self.cfg.partitions {
                if let Err(e) = self.replicas_identical(c, p).await {
                    report.unreadable.push(e);
                }
            }
        }
        let errors = c.unexpected_errors(&self.allowed_errors);
        let new_errors = errors[self.errors_reported.min(errors.len())..].to_vec();
        self.errors_reported = errors.len();
        EpisodeReport {
            episode: self.episodes,
            fault,
            target,
            hit,
            check: report,
            heal,
            new_errors,
            took: started.elapsed(),
        }
    }

    /// Picks the node for `target` from the live state.
    async fn pick(&self, c: &Cluster, target: Target) -> Picked {
        let controller = c.leader().await;
        let mut leads: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        let mut follows: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for p in 0..self.cfg.partitions {
            let Some(info) = c.partition_info(&self.cfg.topic, p).await else {
                continue;
            };
            for r in info.replicas {
                if info.leader == Some(r) {
                    leads.entry(r).or_default().push(p);
                } else {
                    follows.entry(r).or_default().push(p);
                }
            }
        }
        let running = c.running();
        let leads_none = |id: &u64| !leads.contains_key(id);
        let first = |f: &dyn Fn(&u64) -> bool| running.iter().copied().find(|id| f(id));
        let id = match target {
            Target::Leader => first(&|id| leads.contains_key(id) && *id != controller)
                .or_else(|| first(&|id| leads.contains_key(id)))
                .unwrap_or(controller),
            Target::Follower => first(&|id| leads_none(id) && *id != controller)
                .or_else(|| first(&|id| leads_none(id)))
                .or_else(|| first(&|id| follows.contains_key(id) && *id != controller))
                .unwrap_or(controller),
            Target::Controller | Target::Both => controller,
        };
        let mut roles = Vec::new();
        if id == controller {
            roles.push("controller".to_string());
        }
        if let Some(ps) = leads.get(&id) {
            let ps: Vec<String> = ps.iter().map(|p| format!("p{p}")).collect();
            roles.push(format!("leader({})", ps.join(",")));
        }
        if roles.is_empty() {
            roles.push("follower".into());
        }
        Picked {
            id,
            roles: roles.join("+"),
        }
    }

    /// Injects `fault`; returns the nodes hit, with their roles.
    async fn inject(&self, c: &mut Cluster, fault: Fault, target: Target) -> String {
        match fault {
            Fault::Kill => {
                let t = self.pick(c, target).await;
                c.kill(t.id);
                tokio::time::sleep(DOWN).await;
                format!("{} {}", t.id, t.roles)
            }
            Fault::Terminate => {
                let t = self.pick(c, target).await;
                c.terminate(t.id).await;
                tokio::time::sleep(DOWN).await;
                format!("{} {}", t.id, t.roles)
            }
            Fault::CleanBounce(k) | Fault::HardBounce(k) => {
                let mut hit = Vec::new();
                for _ in 0..k {
                    let t = self.pick(c, target).await;
                    if matches!(fault, Fault::CleanBounce(_)) {
                        c.terminate(t.id).await;
                    } else {
                        c.kill(t.id);
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    c.restart(t.id).await;
                    // Let it register and start catching up before the next.
                    c.wait_unfenced(&[t.id], Duration::from_secs(15)).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    hit.push(format!("{} {}", t.id, t.roles));
                }
                hit.join("; ")
            }
            Fault::Pause => {
                let t = self.pick(c, target).await;
                c.pause(t.id);
                tokio::time::sleep(PAUSE).await;
                c.resume(t.id);
                format!("{} {}", t.id, t.roles)
            }
            Fault::KillTwoFollowers => {
                assert!(
                    c.ids().len() >= 5,
                    "killing two followers on {} nodes loses the quorum",
                    c.ids().len()
                );
                let info = c
                    .partition_info(&self.cfg.topic, 0)
                    .await
                    .expect("partition 0 state");
                let followers: Vec<u64> = info
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| Some(*r) != info.leader)
                    .collect();
                for f in &followers {
                    c.kill(*f);
                }
                tokio::time::sleep(DOWN).await;
                format!("{followers:?} followers of p0")
            }
            Fault::WholeCluster => {
                for id in c.ids() {
                    c.kill(id);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                c.restart_stopped().await;
                "all".into()
            }
            Fault::ReplaceDisk => {
                let t = self.pick(c, target).await;
                c.kill(t.id);
                c.wipe(t.id);
                tokio::time::sleep(Duration::from_millis(300)).await;
                c.restart_stopped().await;
                format!("{} {}", t.id, t.roles)
            }
            Fault::WholeClusterReplaceDisk => {
                let t = self.pick(c, target).await;
                for id in c.ids() {
                    c.kill(id);
                }
                c.wipe(t.id);
                tokio::time::sleep(Duration::from_millis(500)).await;
                c.restart_stopped().await;
                format!("{} {} (all killed)", t.id, t.roles)
            }
            Fault::TornTail => {
                let t = self.pick(c, target).await;
                c.kill(t.id);
                let torn = tear_tails(c, t.id, &self.cfg.topic, self.cfg.partitions, self.episodes);
                tokio::time::sleep(Duration::from_millis(500)).await;
                format!("{} {} ({torn})", t.id, t.roles)
            }
            Fault::DiskFull => {
                let t = self.pick(c, target).await;
                let filled = c.fill_disk(t.id);
                tokio::time::sleep(PARTITION).await;
                c.free_disk(t.id);
                format!("{} {} ({} MiB filled)", t.id, t.roles, filled >> 20)
            }
            Fault::Split => {
                let t = self.pick(c, target).await;
                let controller = c.leader().await;
                let ids = c.ids();
                let second = if t.id == controller {
                    ids.iter().copied().find(|id| *id != t.id)
                } else {
                    Some(controller)
                }
                .unwrap_or(t.id);
                let minority = [t.id, second];
                let majority: Vec<u64> = ids
                    .into_iter()
                    .filter(|id| !minority.contains(id))
                    .collect();
                for a in minority {
                    for b in &majority {
                        c.cut(a, *b);
                    }
                }
                tokio::time::sleep(PARTITION).await;
                c.heal_network();
                format!("{minority:?} | {majority:?} (target {} {})", t.id, t.roles)
            }
            Fault::Isolate => {
                let t = self.pick(c, target).await;
                c.isolate(t.id);
                tokio::time::sleep(PARTITION).await;
                c.heal_network();
                format!("{} {}", t.id, t.roles)
            }
            Fault::CutFromController => {
                let t = self.pick(c, target).await;
                let controller = c.leader().await;
                let other = if t.id == controller {
                    c.ids()
                        .into_iter()
                        .find(|id| *id != controller)
                        .unwrap_or(t.id)
                } else {
                    t.id
                };
                c.cut(other, controller);
                tokio::time::sleep(PARTITION).await;
                c.heal_network();
                format!(
                    "{other} cut from controller {controller} (target {} {})",
                    t.id, t.roles
                )
            }
            Fault::CutFromLeader => {
                let info = c
                    .partition_info(&self.cfg.topic, 0)
                    .await
                    .expect("partition 0 state");
                let leader = info.leader.unwrap_or(1);
                let follower = info
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| *r != leader)
                    .unwrap_or(leader);
                c.cut(follower, leader);
                tokio::time::sleep(PARTITION).await;
                c.heal_network();
                format!("follower {follower} cut from p0 leader {leader}")
            }
        }
    }

    /// Resumes paused nodes, starts stopped ones, and waits (bounded) until
    /// every broker is unfenced and every ISR whole.
    async fn heal(&self, c: &mut Cluster) -> Result<(), String> {
        if c.has_network() {
            c.heal_network();
        }
        for id in c.paused() {
            c.resume(id);
        }
        c.restart_stopped().await;
        self.wait_healed(c, HEAL_TIMEOUT).await
    }

    async fn wait_healed(&self, c: &Cluster, timeout: Duration) -> Result<(), String> {
        let ids = c.ids();
        let unfenced = try_wait_until(timeout, || async {
            for id in c.running() {
                let d = c.describe(id).await.ok()?;
                let ok = ids
                    .iter()
                    .all(|b| d.brokers.iter().any(|i| i.id == *b && !i.fenced));
                if !ok {
                    return None;
                }
            }
            Some(())
        })
        .await;
        if unfenced.is_none() {
            return Err(format!("brokers not all unfenced within {timeout:?}"));
        }
        for p in 0..self.cfg.partitions {
            let whole = try_wait_until(timeout, || async {
                let info = c.partition_info(&self.cfg.topic, p).await?;
                (info.leader.is_some() && info.isr.len() == info.replicas.len()).then_some(())
            })
            .await;
            if whole.is_none() {
                let info = c.partition_info(&self.cfg.topic, p).await;
                return Err(format!("p{p}: ISR not whole within {timeout:?}: {info:?}"));
            }
        }
        Ok(())
    }

    /// Every replica of partition `p` holds the same bytes (retried for a
    /// while: followers may still be fetching the last batches).
    async fn replicas_identical(&self, c: &Cluster, p: u32) -> Result<(), String> {
        let Some(info) = c.partition_info(&self.cfg.topic, p).await else {
            return Err(format!("p{p}: no partition state"));
        };
        let same = try_wait_until(Duration::from_secs(10), || async {
            let logs: Vec<Vec<u8>> = info
                .replicas
                .iter()
                .map(|id| c.replica_log_bytes(*id, &self.cfg.topic, p))
                .collect();
            logs.windows(2).all(|w| w[0] == w[1]).then_some(())
        })
        .await;
        same.ok_or_else(|| {
            let sizes: Vec<(u64, usize)> = info
                .replicas
                .iter()
                .map(|id| (*id, c.replica_log_bytes(*id, &self.cfg.topic, p).len()))
                .collect();
            format!("p{p}: replica logs differ after 10 s (node, bytes): {sizes:?}")
        })
    }
}

/// Totals over a run's episodes, for the final table.
#[derive(Debug, Default)]
pub struct Tally {
    /// Episodes run.
    pub episodes: u64,
    /// Episodes that failed.
    pub failed: u64,
    /// Per fault kind: (episodes, longest unavailability).
    pub by_fault: BTreeMap<&'static str, (u64, Duration)>,
    /// Per target asked for: episodes.
    pub by_target: BTreeMap<&'static str, u64>,
    /// Per role the (first) node hit actually had: episodes.
    pub by_role: BTreeMap<&'static str, u64>,
    /// Records acknowledged.
    pub acked: u64,
    /// Records of sends with an unknown outcome.
    pub unknown: u64,
    /// Records of refused sends.
    pub failed_records: u64,
    /// Lost acked records in the last check (it covers the whole topic).
    pub lost: u64,
    /// Duplicates in the last check (the whole topic).
    pub duplicates: u64,
    /// Broken invariants, summed over episodes.
    pub violations: u64,
    /// The longest unavailability of any episode.
    pub longest_unavailable: Duration,
    /// HW lag after failover: (observations, deepest).
    pub hw_lag: (u64, u64),
}

impl Tally {
    /// Adds an episode.
    pub fn add(&mut self, e: &EpisodeReport) {
        self.episodes += 1;
        self.failed += u64::from(e.failed());
        let f = self.by_fault.entry(e.fault.kind()).or_default();
        f.0 += 1;
        f.1 = f.1.max(e.check.longest_unavailable);
        *self.by_target.entry(e.target.name()).or_default() += 1;
        let first = e.hit.split(';').next().unwrap_or_default();
        let role = if e.hit == "all" {
            "all nodes"
        } else if first.contains("controller+leader(") {
            "controller+leader"
        } else if first.contains("controller") {
            "controller only"
        } else if first.contains("leader(") {
            "leader only"
        } else {
            "follower only"
        };
        *self.by_role.entry(role).or_default() += 1;
        self.acked += e.check.acked;
        self.unknown += e.check.unknown;
        self.failed_records += e.check.failed;
        self.lost = e.check.lost();
        self.duplicates = e.check.duplicates();
        self.violations += e.check.violations();
        self.longest_unavailable = self.longest_unavailable.max(e.check.longest_unavailable);
        let (n, max) = e.check.hw_lag();
        self.hw_lag = (self.hw_lag.0 + n, self.hw_lag.1.max(max));
    }

    /// The final table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("| {k:<34} | {v:>16} |\n"));
        row("episodes", self.episodes.to_string());
        row("episodes failed", self.failed.to_string());
        for (kind, (n, unavail)) in &self.by_fault {
            row(
                &format!("  fault {kind}"),
                format!("{n} (max {})", fmt_duration(*unavail)),
            );
        }
        for (t, n) in &self.by_target {
            row(&format!("  target asked: {t}"), n.to_string());
        }
        for (t, n) in &self.by_role {
            row(&format!("  node hit was: {t}"), n.to_string());
        }
        row("records acked", self.acked.to_string());
        row("records failed (refused)", self.failed_records.to_string());
        row("records unknown", self.unknown.to_string());
        row("lost (acked, missing or moved)", self.lost.to_string());
        row(
            "duplicates (stored twice; idempotent producers)",
            self.duplicates.to_string(),
        );
        row("invariant violations", self.violations.to_string());
        row(
            "longest unavailability",
            fmt_duration(self.longest_unavailable),
        );
        row(
            "HW lag after failover (n/deepest)",
            format!("{}/{}", self.hw_lag.0, self.hw_lag.1),
        );
        format!(
            "| {:<34} | {:>16} |\n|{}|{}|\n{out}",
            "what",
            "value",
            "-".repeat(36),
            "-".repeat(18)
        )
    }
}

/// Cuts 1..=200 bytes (chosen from `salt`) off the last segment of each of
/// node `id`'s partition logs of `topic`, as a torn write at a crash would.
/// Returns what it did, for the episode line.
fn tear_tails(c: &Cluster, id: u64, topic: &str, partitions: u32, salt: u64) -> String {
    let mut done = Vec::new();
    for p in 0..partitions {
        let dir = c.data_dir(id).join("logs").join(format!("{topic}-{p}"));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut segments: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        segments.sort();
        let Some(last) = segments.last() else {
            continue;
        };
        let Ok(len) = std::fs::metadata(last).map(|m| m.len()) else {
            continue;
        };
        let cut = (salt.wrapping_mul(2_654_435_761).wrapping_add(u64::from(p)) % 200 + 1).min(len);
        let torn = std::fs::OpenOptions::new()
            .write(true)
            .open(last)
            .and_then(|f| f.set_len(len - cut));
        match torn {
            Ok(()) => done.push(format!("p{p} -{cut} B")),
            Err(e) => done.push(format!("p{p}: cannot tear: {e}")),
        }
    }
    done.join(", ")
}
