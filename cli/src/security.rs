//! `rivulet user` and `rivulet acl`: the cluster's users (SCRAM credentials
//! derived here, so the password never reaches the cluster on these calls)
//! and what each may do. Both need ALTER on the cluster to change and
//! DESCRIBE to list (super users and nodes may always).

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rivulet_metadata::convert::{credential_to_proto, operation_to_proto};
use rivulet_metadata::security::{Operation, ScramCredential, CLUSTER_RESOURCE};
use rivulet_proto::v1::{
    AclBinding, AclOperation, AclPatternType, AclPermission, AclResourceType, CreateAclsRequest,
    DeleteAclsRequest, DeleteUserRequest, ListAclsRequest, ListUsersRequest, UpsertUserRequest,
};
use serde_json::json;

use crate::admin::{check, connect, rpc_error};

/// `rivulet user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, or change its password. The password is read from
    /// stdin with --password-stdin; otherwise a random one is made and
    /// printed once.
    Create {
        /// The user's name (no ':' or ','; at most 255 bytes).
        name: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        /// Fail if the user exists (default: change its password).
        #[arg(long)]
        if_not_exists: bool,
    },
    /// Delete a user (its ACLs stay, as in Kafka).
    Delete {
        /// The user's name.
        name: String,
    },
    /// List the users and their SCRAM mechanisms.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `rivulet acl ...`
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Allow or deny a principal an operation on a topic, group or the
    /// cluster. Deny wins over allow; with --require-auth a principal no
    /// ACL allows is denied.
    Create(AclSpec),
    /// List ACLs (every selector given must match).
    List {
        #[command(flatten)]
        filter: AclSelectors,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete the ACLs matching the selectors (a principal and a resource
    /// are required, so one command cannot wipe every ACL by mistake).
    Delete {
        #[command(flatten)]
        filter: AclSelectors,
    },
}

/// A whole ACL.
#[derive(Debug, Args)]
pub struct AclSpec {
    /// `User:<name>` or `User:*` (everyone).
    #[arg(long)]
    principal: String,
    /// Allow the operation.
    #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
    allow: bool,
    /// Deny the operation (wins over any allow).
    #[arg(long)]
    deny: bool,
    /// read, write, create, delete, alter, describe, alter-configs,
    /// describe-configs, cluster-action or all. Read, write, delete and
    /// alter imply describe; alter-configs implies describe-configs.
    #[arg(long, value_parser = parse_operation)]
    operation: Operation,
    #[command(flatten)]
    resource: Resource,
    /// Match every name starting with --topic/--group's value.
    #[arg(long)]
    prefixed: bool,
    /// Only calls from this IP address (default: any).
    #[arg(long, default_value = "*")]
    host: String,
}

/// Exactly one resource.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Resource {
    /// A topic (`*`: every topic).
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group (`*`: every group).
    #[arg(long)]
    group: Option<String>,
    /// The cluster (user and ACL management, leader elections, creating
    /// topics).
    #[arg(long)]
    cluster: bool,
}

/// Selectors for list and delete.
#[derive(Debug, Args)]
pub struct AclSelectors {
    /// `User:<name>` or `User:*`.
    #[arg(long)]
    principal: Option<String>,
    /// Only allow ACLs.
    #[arg(long, conflicts_with = "deny")]
    allow: bool,
    /// Only deny ACLs.
    #[arg(long)]
    deny: bool,
    /// The operation.
    #[arg(long, value_parser = parse_operation)]
    operation: Option<Operation>,
    /// A topic.
    #[arg(long, conflicts_with_all = ["group", "cluster"])]
    topic: Option<String>,
    /// A group.
    #[arg(long, conflicts_with = "cluster")]
    group: Option<String>,
    /// The cluster.
    #[arg(long)]
    cluster: bool,
    /// Only prefixed ACLs.
    #[arg(long)]
    prefixed: bool,
    /// The host.
    #[arg(long)]
    host: Option<String>,
}

fn parse_operation(s: &str) -> Result<Operation, String> {
    Operation::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Operation::ALL.iter().map(|o| o.name()).collect();
        format!("unknown operation {s:?}; one of {}", names.join(", "))
    })
}

fn resource_of(
    topic: &Option<String>,
    group: &Option<String>,
    cluster: bool,
) -> (AclResourceType, String) {
    match (topic, group, cluster) {
        (Some(t), _, _) => (AclResourceType::Topic, t.clone()),
        (_, Some(g), _) => (AclResourceType::Group, g.clone()),
        (_, _, true) => (AclResourceType::Cluster, CLUSTER_RESOURCE.to_owned()),
        _ => (AclResourceType::Unspecified, String::new()),
    }
}

fn binding_text(b: &AclBinding) -> String {
    let perm = match AclPermission::try_from(b.permission) {
        Ok(AclPermission::Deny) => "DENY",
        _ => "ALLOW",
    };
    let op = AclOperation::try_from(b.operation)
        .map(|o| {
            o.as_str_name()
                .trim_start_matches("ACL_OPERATION_")
                .to_lowercase()
        })
        .unwrap_or_default();
    let rtype = AclResourceType::try_from(b.resource_type)
        .map(|o| {
            o.as_str_name()
                .trim_start_matches("ACL_RESOURCE_TYPE_")
                .to_lowercase()
        })
        .unwrap_or_default();
    let prefixed = b.pattern_type == AclPatternType::Prefixed as i32;
    format!(
        "{perm:<5} {:<20} {:<16} {:<15} {rtype}:{}{}",
        b.principal,
        op.replace('_', "-"),
        b.host,
        b.resource_name,
        if prefixed { "* (prefixed)" } else { "" }
    )
}

fn binding_json(b: &AclBinding) -> serde_json::Value {
    let strip = |s: &str, p: &str| s.trim_start_matches(p).to_lowercase().replace('_', "-");
    json!({
        "principal": b.principal,
        "host": b.host,
        "permission": AclPermission::try_from(b.permission).map(|p| strip(p.as_str_name(), "ACL_PERMISSION_")).unwrap_or_default(),
        "operation": AclOperation::try_from(b.operation).map(|p| strip(p.as_str_name(), "ACL_OPERATION_")).unwrap_or_default(),
        "resource_type": AclResourceType::try_from(b.resource_type).map(|p| strip(p.as_str_name(), "ACL_RESOURCE_TYPE_")).unwrap_or_default(),
        "pattern": AclPatternType::try_from(b.pattern_type).map(|p| strip(p.as_str_name(), "ACL_PATTERN_TYPE_")).unwrap_or_default(),
        "name": b.resource_name,
    })
}

/// Runs `rivulet user ...`.
pub async fn user(bootstrap: &str, cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Create {
            name,
            password_stdin,
            if_not_exists,
        } => {
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("cannot read the password from stdin")?;
                let p = line.trim_end_matches(['\n', '\r']).to_owned();
                if p.is_empty() {
                    bail!("--password-stdin: the first line of stdin is empty");
                }
                (p, false)
            } else {
                let mut raw = [0u8; 18];
                getrandom::fill(&mut raw)
                    .map_err(|e| anyhow::anyhow!("no random bytes for a password: {e}"))?;
                (raw.iter().map(|b| format!("{b:02x}")).collect(), true)
            };
            let credentials =
                ScramCredential::generate_all(&password).map_err(anyhow::Error::msg)?;
            let mut c = connect(bootstrap).await?;
            let r = c
                .upsert_user(UpsertUserRequest {
                    name: name.clone(),
                    credentials: credentials.iter().map(credential_to_proto).collect(),
                    create_only: if_not_exists,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            check(r.error_code, &r.error_message)?;
            if if_not_exists && !r.created {
                bail!("user {name} exists; left as it is");
            }
            let what = if r.created {
                "created user"
            } else {
                "changed the password of user"
            };
            if generated {
                println!("{what} {name}; its password (shown once): {password}");
            } else {
                println!("{what} {name}");
            }
        }
        UserCommand::Delete { name } => {
            let mut c = connect(bootstrap).await?;
            let r = c
                .delete_user(DeleteUserRequest { name: name.clone() })
                .await
                .map_err(rpc_error)?
                .into_inner();
            check(r.error_code, &r.error_message)?;
            println!("deleted user {name}");
        }
        UserCommand::List { json } => {
            let mut c = connect(bootstrap).await?;
            let r = c
                .list_users(ListUsersRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            if json {
                let v: Vec<_> = r
                    .users
                    .iter()
                    .map(|u| json!({"name": u.name, "mechanisms": u.mechanisms}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if r.users.is_empty() {
                println!("no users");
            } else {
                for u in &r.users {
                    println!("{:<24} {}", u.name, u.mechanisms.join(","));
                }
            }
        }
    }
    Ok(())
}

/// Runs `rivulet acl ...`.
pub async fn acl(bootstrap: &str, cmd: AclCommand) -> Result<()> {
    match cmd {
        AclCommand::Create(spec) => {
            let (rtype, name) = resource_of(
                &spec.resource.topic,
                &spec.resource.group,
                spec.resource.cluster,
            );
            if spec.prefixed && rtype == AclResourceType::Cluster {
                bail!("--prefixed is for --topic and --group");
            }
            let binding = AclBinding {
                principal: spec.principal,
                host: spec.host,
                operation: operation_to_proto(spec.operation).into(),
                resource_type: rtype.into(),
                pattern_type: if spec.prefixed {
                    AclPatternType::Prefixed
                } else {
                    AclPatternType::Literal
                }
                .into(),
                resource_name: name,
                permission: if spec.deny {
                    AclPermission::Deny
                } else {
                    AclPermission::Allow
                }
                .into(),
            };
            let text = binding_text(&binding);
            let mut c = connect(bootstrap).await?;
            let r = c
                .create_acls(CreateAclsRequest {
                    acls: vec![binding],
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            check(r.error_code, &r.error_message)?;
            println!("created {text}");
        }
        AclCommand::List { filter, json } => {
            let mut c = connect(bootstrap).await?;
            let r = c
                .list_acls(ListAclsRequest {
                    filter: Some(selectors(&filter)),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            if json {
                let v: Vec<_> = r.acls.iter().map(binding_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if r.acls.is_empty() {
                println!("no ACLs");
            } else {
                for a in &r.acls {
                    println!("{}", binding_text(a));
                }
            }
        }
        AclCommand::Delete { filter } => {
            if filter.principal.is_none()
                || (filter.topic.is_none() && filter.group.is_none() && !filter.cluster)
            {
                bail!("give --principal and one of --topic, --group or --cluster");
            }
            let mut c = connect(bootstrap).await?;
            let r = c
                .delete_acls(DeleteAclsRequest {
                    filter: Some(selectors(&filter)),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            check(r.error_code, &r.error_message)?;
            if r.deleted.is_empty() {
                println!("no ACL matched");
            }
            for a in &r.deleted {
                println!("deleted {}", binding_text(a));
            }
        }
    }
    Ok(())
}

fn selectors(f: &AclSelectors) -> AclBinding {
    let (rtype, name) = resource_of(&f.topic, &f.group, f.cluster);
    AclBinding {
        principal: f.principal.clone().unwrap_or_default(),
        host: f.host.clone().unwrap_or_default(),
        operation: f
            .operation
            .map_or(AclOperation::Unspecified, operation_to_proto)
            .into(),
        resource_type: rtype.into(),
        pattern_type: if f.prefixed {
            AclPatternType::Prefixed
        } else {
            AclPatternType::Unspecified
        }
        .into(),
        resource_name: name,
        permission: if f.allow {
            AclPermission::Allow
        } else if f.deny {
            AclPermission::Deny
        } else {
            AclPermission::Unspecified
        }
        .into(),
    }
}
