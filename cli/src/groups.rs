//! `rivulet group`: list, describe (with lag), reset offsets of, and delete
//! consumer groups.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rivulet_client::{Admin, GroupDescription, SeekTo};
use serde_json::json;

/// `rivulet group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List every consumer group: state, member count, coordinator.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a group's members and, per partition, the committed offset, the
    /// high watermark, the lag and the member reading it.
    Describe {
        /// Group id.
        group: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a group's committed offsets (only while it has no active
    /// members: stop its consumers first).
    ResetOffsets(ResetArgs),
    /// Delete a group without active members, with its committed offsets.
    Delete {
        /// Group id.
        group: String,
    },
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("to")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_timestamp"])
))]
pub struct ResetArgs {
    /// Group id.
    group: String,
    /// The topic whose offsets move.
    #[arg(long)]
    topic: String,
    /// Only these partitions (repeat the flag; default: all).
    #[arg(long)]
    partition: Vec<u32>,
    /// To the oldest record kept.
    #[arg(long)]
    to_earliest: bool,
    /// To the high watermark (skip everything written so far).
    #[arg(long)]
    to_latest: bool,
    /// To this offset (clamped to the log's start and high watermark).
    #[arg(long)]
    to_offset: Option<u64>,
    /// To the first record at or after this time (ms since the epoch).
    #[arg(long)]
    to_timestamp: Option<i64>,
    /// Print the new offsets without committing them.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `rivulet group ...`.
pub async fn run(bootstrap: &str, cmd: GroupCommand) -> Result<()> {
    let admin = Admin::connect(crate::tls::client_config(bootstrap))
        .await
        .context("cannot connect")?;
    match cmd {
        GroupCommand::List { json } => {
            let groups = admin.list_groups().await?;
            if json {
                let v: Vec<_> = groups
                    .iter()
                    .map(|g| json!({"group": g.group_id, "state": g.state, "members": g.members, "coordinator": g.coordinator}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<40} {:<12} {:>7} {:>11}",
                    "GROUP", "STATE", "MEMBERS", "COORDINATOR"
                );
                for g in &groups {
                    println!(
                        "{:<40} {:<12} {:>7} {:>11}",
                        g.group_id, g.state, g.members, g.coordinator
                    );
                }
            }
        }
        GroupCommand::Describe { group, json } => {
            let d = admin.describe_group(&group).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&describe_json(&d))?);
            } else {
                print_description(&d);
            }
        }
        GroupCommand::ResetOffsets(a) => {
            let to = match (a.to_earliest, a.to_latest, a.to_offset, a.to_timestamp) {
                (true, _, _, _) => SeekTo::Beginning,
                (_, true, _, _) => SeekTo::End,
                (_, _, Some(o), _) => SeekTo::Offset(o),
                (_, _, _, Some(ts)) => SeekTo::Timestamp(ts),
                _ => {
                    bail!("say where to: --to-earliest, --to-latest, --to-offset or --to-timestamp")
                }
            };
            // Committing offsets for an unknown group creates it (as Kafka's
            // tool does); say so rather than do it silently.
            let existed = match admin.describe_group(&a.group).await {
                Ok(_) => true,
                Err(e) if e.code() == Some(rivulet_client::ErrorCode::GroupIdNotFound) => false,
                Err(e) => return Err(e.into()),
            };
            let moved = admin
                .reset_offsets(&a.group, &a.topic, &a.partition, to, a.dry_run)
                .await?;
            if !existed {
                eprintln!(
                    "note: group {} did not exist; {}",
                    a.group,
                    if a.dry_run {
                        "resetting would create it"
                    } else {
                        "it now exists, with these committed offsets"
                    }
                );
            }
            if a.json {
                let v: Vec<_> = moved
                    .iter()
                    .map(|(t, p, o)| json!({"topic": t, "partition": p, "offset": o}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"group": a.group, "dry_run": a.dry_run, "created": !existed && !a.dry_run, "offsets": v})
                    )?
                );
            } else {
                println!("{:<30} {:>9} {:>14}", "TOPIC", "PARTITION", "NEW-OFFSET");
                for (t, p, o) in &moved {
                    println!("{t:<30} {p:>9} {o:>14}");
                }
                if a.dry_run {
                    println!("(dry run: nothing committed)");
                } else {
                    println!("reset {} partition(s) of group {}", moved.len(), a.group);
                }
            }
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}

fn describe_json(d: &GroupDescription) -> serde_json::Value {
    let tps = |v: &[(String, u32)]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|(t, p)| json!({"topic": t, "partition": p}))
            .collect()
    };
    json!({
        "group": d.group_id,
        "state": d.state,
        "group_epoch": d.group_epoch,
        "coordinator": d.coordinator,
        "total_lag": d.total_lag(),
        "members": d.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "client_id": m.client_id,
            "member_epoch": m.member_epoch,
            "subscribed_topics": m.subscribed_topics,
            "assignment": tps(&m.assignment),
            "revoking": tps(&m.revoking),
        })).collect::<Vec<_>>(),
        "partitions": d.partitions.iter().map(|p| json!({
            "topic": p.topic,
            "partition": p.partition,
            "committed_offset": p.committed,
            "high_watermark": p.high_watermark,
            "lag": p.lag,
            "member_id": p.member,
        })).collect::<Vec<_>>(),
    })
}

fn print_description(d: &GroupDescription) {
    println!(
        "group {}  state {}  epoch {}  coordinator {}  members {}  total lag {}",
        d.group_id,
        d.state,
        d.group_epoch,
        d.coordinator,
        d.members.len(),
        d.total_lag()
    );
    let dash = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |x| x.to_string());
    println!();
    println!(
        "{:<30} {:>9} {:>14} {:>14} {:>10}  MEMBER",
        "TOPIC", "PARTITION", "COMMITTED", "HIGH-WATER", "LAG"
    );
    for p in &d.partitions {
        println!(
            "{:<30} {:>9} {:>14} {:>14} {:>10}  {}",
            p.topic,
            p.partition,
            dash(p.committed),
            dash(p.high_watermark),
            dash(p.lag),
            p.member.as_deref().unwrap_or("-")
        );
    }
    if !d.members.is_empty() {
        println!();
        println!(
            "{:<32} {:>6} {:<20} ASSIGNMENT",
            "MEMBER", "EPOCH", "CLIENT"
        );
        for m in &d.members {
            let mut parts: Vec<String> = m
                .assignment
                .iter()
                .map(|(t, p)| format!("{t}-{p}"))
                .collect();
            parts.extend(m.revoking.iter().map(|(t, p)| format!("{t}-{p}(revoking)")));
            println!(
                "{:<32} {:>6} {:<20} {}",
                m.member_id,
                m.member_epoch,
                m.client_id,
                parts.join(",")
            );
        }
    }
}
