//! `rivulet cluster` and `rivulet topic`: admin tools over the Controller
//! service. Any node answers (writes are forwarded to the active controller);
//! `--bootstrap` lists the nodes to try, in order.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use rivulet_client::{Admin, PartitionOffsets, NOT_READY_PATIENCE};
use rivulet_proto::user_auth::UserChannel as Channel;
use rivulet_proto::v1::controller_client::ControllerClient;
use rivulet_proto::v1::{
    AlterTopicConfigRequest, ConfigEntry, CreatePartitionsRequest, CreateTopicRequest,
    DeleteTopicRequest, DescribeClusterRequest, DescribeTopicsRequest, ErrorCode, TopicInfo,
};
use serde_json::json;

/// Connects to the first node of `bootstrap` (comma separated) that answers.
pub async fn connect(bootstrap: &str) -> Result<ControllerClient<Channel>> {
    let mut candidates: Vec<String> = bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!candidates.is_empty(), "--bootstrap names no node");
    let deadline = std::time::Instant::now() + NOT_READY_PATIENCE;
    loop {
        let mut failures = Vec::new();
        let mut not_ready = false;
        let mut i = 0;
        while let Some(addr) = candidates.get(i).cloned() {
            i += 1;
            match probe(&addr).await? {
                Ok(client) => return Ok(client),
                Err(Probe::NotReady { reason, others }) => {
                    not_ready = true;
                    for o in others {
                        if !candidates.contains(&o) && candidates.len() < 64 {
                            candidates.push(o);
                        }
                    }
                    failures.push(format!("{addr}: {reason}"));
                }
                Err(Probe::Failed(reason)) => failures.push(format!("{addr}: {reason}")),
            }
        }
        if !not_ready || std::time::Instant::now() >= deadline {
            bail!(
                "cannot reach any node of --bootstrap {bootstrap} that is ready ({}); is the cluster running?",
                failures.join("; ")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Deadline of every admin RPC the CLI makes: a frozen node accepts the
/// connection and never answers.
const RPC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a node was passed over.
enum Probe {
    /// Catching up with the metadata log; `others` are nodes to try.
    NotReady { reason: String, others: Vec<String> },
    /// Unreachable or not answering.
    Failed(String),
}

/// Connects to `addr` and asks it for the cluster (with a short deadline):
/// a client to it if it answers, ready.
async fn probe(addr: &str) -> Result<Result<ControllerClient<Channel>, Probe>> {
    let endpoint = rivulet_proto::tls::endpoint(
        addr,
        std::time::Duration::from_secs(2),
        crate::tls::client().as_ref(),
    )
    .with_context(|| format!("bad address {addr:?} in --bootstrap"))?
    .timeout(RPC_TIMEOUT);
    let channel = match endpoint.connect().await {
        Ok(ch) => ch,
        Err(e) => {
            let why = rivulet_proto::tls::explain_error(&e)
                .map_or_else(|| format!("{e}: {}", source_text(&e)), str::to_owned);
            return Ok(Err(Probe::Failed(why)));
        }
    };
    let (user, plaintext) = crate::tls::user();
    if user.is_some() && crate::tls::client().is_none() && !plaintext {
        bail!(
            "refusing to send a password over a plaintext connection: connect with TLS \
             (--tls-ca), or allow it explicitly (--allow-plaintext-password)"
        );
    }
    let mut client = ControllerClient::new(Channel::new(channel, user.as_ref()));
    let mut req = tonic::Request::new(DescribeClusterRequest {});
    req.set_timeout(std::time::Duration::from_secs(3));
    match tokio::time::timeout(
        std::time::Duration::from_secs(4),
        client.describe_cluster(req),
    )
    .await
    {
        Ok(Ok(_)) => Ok(Ok(client)),
        Ok(Err(s)) if rivulet_client::is_not_ready(&s) => Ok(Err(Probe::NotReady {
            reason: s.message().to_owned(),
            others: rivulet_client::hinted_nodes(&s),
        })),
        // Another node would say the same: stop at once.
        Ok(Err(s))
            if matches!(
                s.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ) && rivulet_proto::tls::explain(&s).is_none() =>
        {
            bail!("{addr}: {}", s.message())
        }
        Ok(Err(s)) => Ok(Err(Probe::Failed(
            rivulet_proto::tls::explain(&s).map_or_else(|| s.message().to_owned(), str::to_owned),
        ))),
        Err(_) => Ok(Err(Probe::Failed("no answer within 4 s".to_owned()))),
    }
}

/// The innermost cause of `e` (tonic's own message is "transport error").
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Turns a response's error code into an error naming it.
pub(crate) fn check(code: i32, message: &str) -> Result<()> {
    match ErrorCode::try_from(code) {
        Ok(ErrorCode::None) => Ok(()),
        Ok(c) => bail!("{} ({})", message, c.as_str_name()),
        Err(_) => bail!("{message} (error code {code})"),
    }
}

pub(crate) fn rpc_error(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::Unavailable => {
            anyhow!("the cluster is unavailable: {}; retry shortly", s.message())
        }
        tonic::Code::PermissionDenied => anyhow!("permission denied: {}", s.message()),
        tonic::Code::Unauthenticated => anyhow!("not authenticated: {}", s.message()),
        _ => anyhow!("{}: {}", s.code(), s.message()),
    }
}

/// `rivulet cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The controller quorum and the brokers, as the contacted node sees them.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a learner (a node that is not a voter) from the controller
    /// quorum, e.g. a decommissioned node: the metadata log stops streaming
    /// to it. Stop the node first; voters cannot be removed.
    RemoveLearner {
        /// The learner's node id.
        id: u64,
    },
    /// Write a new random cluster secret (256 bits, hex) to a file readable
    /// by its owner only, for `rivulet node --cluster-secret-file`. Give
    /// every node of the cluster the same file. Needs no cluster.
    NewSecret {
        /// The file to create; an existing file is never overwritten.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Succeed without writing when the file exists already (for
        /// start-up scripts).
        #[arg(long)]
        if_missing: bool,
    },
}

/// `rivulet topic ...`
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics (internal ones such as `__consumer_offsets` with
    /// `--internal`).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Include internal topics (names starting with `__`).
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions: leader, epochs, replicas, in-sync replicas.
    Describe {
        /// Topic name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Change topic configs (the others keep their values).
    AlterConfig {
        /// Topic name.
        name: String,
        /// Topic config `key=value` (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", required = true)]
        configs: Vec<String>,
    },
    /// Grow a topic to more partitions (never fewer; Kafka's
    /// `kafka-topics --alter --partitions`). Keys hash over the new count
    /// from then on, so a key's records may land in a new partition.
    AddPartitions {
        /// Topic name.
        name: String,
        /// The new total partition count.
        #[arg(long = "partitions", value_name = "N")]
        total: u32,
        /// Only check that it would be accepted.
        #[arg(long)]
        validate_only: bool,
    },
}

/// Options of `rivulet topic create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Topic name: letters, digits, `.`, `_`, `-`; up to 249 characters.
    name: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Replicas per partition (at most the number of live brokers); by
    /// default 3, or every live broker when fewer are live.
    #[arg(long)]
    replication_factor: Option<u32>,
    /// Topic config `key=value` (repeatable): min.insync.replicas, retention.ms,
    /// retention.bytes, segment.bytes, cleanup.policy, unclean.leader.election.enable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    configs: Vec<String>,
}

/// Runs `rivulet cluster ...`.
pub async fn cluster(bootstrap: &str, cmd: ClusterCommand) -> Result<()> {
    let json = match cmd {
        ClusterCommand::Status { json } => json,
        ClusterCommand::RemoveLearner { id } => {
            let mut c = connect(bootstrap).await?;
            let r = c
                .remove_learner(rivulet_proto::v1::RemoveLearnerRequest { node_id: id })
                .await
                .map_err(rpc_error)?
                .into_inner();
            check(r.error_code, &r.error_message)?;
            println!("removed learner {id} from the controller quorum");
            return Ok(());
        }
        ClusterCommand::NewSecret { out, if_missing } => {
            let made = rivulet_proto::node_auth::ClusterSecret::create_file(&out, if_missing)?;
            if made {
                println!(
                    "wrote a new cluster secret to {} (mode 0600); start every node with \
                     --cluster-secret-file {}",
                    out.display(),
                    out.display()
                );
            } else {
                println!("{} exists; left as it is", out.display());
            }
            return Ok(());
        }
    };
    let mut c = connect(bootstrap).await?;
    let d = c
        .describe_cluster(DescribeClusterRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        let v = json!({
            "cluster_id": d.cluster_id,
            "controller_leader": d.controller_leader,
            "answered_by": d.node_id,
            "raft_term": d.raft_term,
            "metadata_offset": d.metadata_offset,
            "voters": d.voters.iter().map(|v| json!({"id": v.id, "address": v.address, "learner": v.learner})).collect::<Vec<_>>(),
            "brokers": d.brokers.iter().map(|b| json!({"id": b.id, "address": b.address, "rack": b.rack, "broker_epoch": b.broker_epoch, "fenced": b.fenced, "state": broker_state(b), "directory_id": b.directory_id})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("cluster id:        {}", d.cluster_id);
    println!(
        "active controller: {}",
        d.controller_leader
            .map_or("none (election in progress)".to_owned(), |l| l.to_string())
    );
    println!("raft term:         {}", d.raft_term);
    println!(
        "metadata offset:   {} (as seen by node {})",
        d.metadata_offset, d.node_id
    );
    println!();
    println!(
        "{:<6} {:<24} {:<10} {:<12} {:<6}",
        "ID", "ADDRESS", "ROLE", "STATE", "EPOCH"
    );
    for v in &d.voters {
        let b = d.brokers.iter().find(|b| b.id == v.id);
        let role = if d.controller_leader == Some(v.id) {
            "leader"
        } else if v.learner {
            "learner"
        } else {
            "voter"
        };
        let state = b.map_or("unregistered", broker_state);
        let epoch = b.map_or("-".to_owned(), |b| b.broker_epoch.to_string());
        println!(
            "{:<6} {:<24} {:<10} {:<12} {:<6}",
            v.id, v.address, role, state, epoch
        );
    }
    Ok(())
}

/// `live`, `catching-up` (registered, replaying the metadata log) or
/// `fenced`; from the state field, or the fenced flag of older nodes.
fn broker_state(b: &rivulet_proto::v1::BrokerInfo) -> &str {
    match b.state.as_str() {
        "" if b.fenced => "fenced",
        "" => "live",
        s => s,
    }
}

fn parse_configs(raw: &[String]) -> Result<Vec<ConfigEntry>> {
    raw.iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("--config {kv:?} is not key=value"))?;
            Ok(ConfigEntry {
                key: k.trim().to_owned(),
                value: v.trim().to_owned(),
            })
        })
        .collect()
}

/// Log start and high watermark per partition, from the leaders; `None`
/// where a leader does not answer (offline partition, node down).
async fn offsets(bootstrap: &str, t: &TopicInfo) -> Vec<Option<PartitionOffsets>> {
    let Ok(admin) = Admin::connect(crate::tls::client_config(bootstrap)).await else {
        return vec![None; t.partitions.len()];
    };
    let mut out = Vec::with_capacity(t.partitions.len());
    for p in &t.partitions {
        let o = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            admin.partition_offsets(&t.name, p.partition),
        )
        .await;
        out.push(o.ok().and_then(Result::ok));
    }
    out
}

fn topic_json(t: &TopicInfo, offsets: &[Option<PartitionOffsets>]) -> serde_json::Value {
    json!({
        "name": t.name,
        "topic_id": t.topic_id,
        "partitions": t.partitions.iter().enumerate().map(|(i, p)| {
            let o = offsets.get(i).copied().flatten();
            json!({
                "partition": p.partition,
                "leader": p.leader,
                "leader_epoch": p.leader_epoch,
                "partition_epoch": p.partition_epoch,
                "replicas": p.replicas,
                "isr": p.isr,
                "elr": p.elr,
                "offline": p.leader.is_none(),
                // null when the leader could not be asked.
                "high_watermark": o.map(|o| o.high_watermark),
                "log_start_offset": o.map(|o| o.log_start_offset),
            })
        }).collect::<Vec<_>>(),
        "configs": t.configs.iter().map(|c| (c.key.clone(), json!(c.value))).collect::<serde_json::Map<_, _>>(),
    })
}

fn or_dash(s: String) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s
    }
}

fn ids(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Runs `rivulet topic ...`.
pub async fn topic(bootstrap: &str, cmd: TopicCommand) -> Result<()> {
    let mut c = connect(bootstrap).await?;
    match cmd {
        TopicCommand::Create(a) => {
            let (replication_factor, chosen) = match a.replication_factor {
                Some(rf) => (rf, ""),
                None => {
                    let d = c
                        .describe_cluster(DescribeClusterRequest {})
                        .await
                        .map_err(rpc_error)?
                        .into_inner();
                    let live = d.brokers.iter().filter(|b| !b.fenced).count();
                    let rf = u32::try_from(live.clamp(1, 3)).unwrap_or(1);
                    (
                        rf,
                        " (the default: 3, or every live broker when fewer are live)",
                    )
                }
            };
            let r = c
                .create_topic(CreateTopicRequest {
                    name: a.name.clone(),
                    partitions: a.partitions,
                    replication_factor,
                    configs: parse_configs(&a.configs)?,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            check(r.error_code, &r.error_message)?;
            println!(
                "created topic {} with {} partition(s), replication factor {replication_factor}{chosen}",
                a.name, a.partitions
            );
        }
        TopicCommand::Delete { name } => {
            let r = c
                .delete_topic(DeleteTopicRequest { name: name.clone() })
                .await
                .map_err(rpc_error)?
                .into_inner();
            check(r.error_code, &r.error_message)?;
            println!("deleted topic {name}");
        }
        TopicCommand::AlterConfig { name, configs } => {
            let r = c
                .alter_topic_config(AlterTopicConfigRequest {
                    name: name.clone(),
                    configs: parse_configs(&configs)?,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            check(r.error_code, &r.error_message)?;
            let all: Vec<String> = r
                .configs
                .iter()
                .map(|c| format!("{}={}", c.key, c.value))
                .collect();
            println!("altered topic {name}: {}", all.join(" "));
        }
        TopicCommand::AddPartitions {
            name,
            total,
            validate_only,
        } => {
            let r = c
                .create_partitions(CreatePartitionsRequest {
                    name: name.clone(),
                    total,
                    validate_only,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            check(r.error_code, &r.error_message)?;
            if validate_only {
                println!("topic {name} can grow to {total} partitions");
            } else {
                println!("topic {name} now has {total} partitions");
            }
        }
        TopicCommand::List { json, internal } => {
            let r = c
                .describe_topics(DescribeTopicsRequest { names: Vec::new() })
                .await
                .map_err(rpc_error)?
                .into_inner();
            check(r.error_code, &r.error_message)?;
            let mut topics = r.topics;
            topics.retain(|t| internal || !t.name.starts_with("__"));
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                let v: Vec<_> = topics.iter().map(|t| topic_json(t, &[])).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:<40} {:>10} {:>8}", "TOPIC", "PARTITIONS", "REPLICAS");
                for t in &topics {
                    let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
                    println!("{:<40} {:>10} {:>8}", t.name, t.partitions.len(), rf);
                }
            }
        }
        TopicCommand::Describe { name, json } => {
            let r = c
                .describe_topics(DescribeTopicsRequest {
                    names: vec![name.clone()],
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            check(r.error_code, &r.error_message)?;
            let t = r
                .topics
                .first()
                .ok_or_else(|| anyhow!("unknown topic {name}"))?;
            let offsets = offsets(bootstrap, t).await;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&topic_json(t, &offsets))?
                );
            } else {
                println!("topic {} (id {})", t.name, t.topic_id);
                let cfg: Vec<String> = t
                    .configs
                    .iter()
                    .map(|c| format!("{}={}", c.key, c.value))
                    .collect();
                println!("configs: {}", cfg.join(" "));
                println!(
                    "{:>9} {:>8} {:>12} {:>15} {:<16} {:<16} {:<10} {:>14} {:>9}",
                    "PARTITION",
                    "LEADER",
                    "LEADER_EPOCH",
                    "PARTITION_EPOCH",
                    "REPLICAS",
                    "ISR",
                    "ELR",
                    "HIGH_WATERMARK",
                    "LOG_START"
                );
                for (i, p) in t.partitions.iter().enumerate() {
                    let o = offsets.get(i).copied().flatten();
                    println!(
                        "{:>9} {:>8} {:>12} {:>15} {:<16} {:<16} {:<10} {:>14} {:>9}",
                        p.partition,
                        p.leader.map_or("OFFLINE".to_owned(), |l| l.to_string()),
                        p.leader_epoch,
                        p.partition_epoch,
                        ids(&p.replicas),
                        or_dash(ids(&p.isr)),
                        or_dash(ids(&p.elr)),
                        o.map_or("-".to_owned(), |o| o.high_watermark.to_string()),
                        o.map_or("-".to_owned(), |o| o.log_start_offset.to_string()),
                    );
                }
            }
        }
    }
    Ok(())
}
