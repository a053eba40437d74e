//! Users and ACLs: who a caller is ([`Principal`]), how a user's password is
//! kept ([`ScramCredential`], never the password itself) and what a principal
//! may do ([`Acl`], [`Authorizer`]): Kafka's model (KIP-554 for SCRAM
//! credentials in the metadata log, KIP-11's ACLs as KRaft's
//! `StandardAuthorizer` reads them).
//!
//! Pure code: the edge ([`crate::edge`]) finds the principal, the services
//! ask [`Access::allows`] before they act.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::edge::RateLimit;
use crate::image::MetadataImage;

/// SCRAM iterations for new credentials (Kafka's default and minimum).
pub const SCRAM_ITERATIONS: u32 = 4_096;
/// Iterations a credential may carry: enough to be safe, few enough that
/// checking a password cannot take a node's CPU for long.
pub const SCRAM_ITERATIONS_RANGE: std::ops::RangeInclusive<u32> = 4_096..=65_536;
/// Most users a cluster holds.
pub const MAX_USERS: usize = 10_000;
/// Most ACLs a cluster holds.
pub const MAX_ACLS: usize = 10_000;
/// Longest user name.
pub const MAX_USER_NAME: usize = 255;
/// The one cluster resource's name (Kafka's).
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";

/// A SCRAM hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramMechanism {
    /// Both, in the order credentials are made.
    pub const ALL: [Self; 2] = [Self::Sha256, Self::Sha512];

    /// The SASL name.
    pub fn sasl_name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }
}

macro_rules! with_digest {
    ($mech:expr, $d:ident => $body:expr) => {
        match $mech {
            ScramMechanism::Sha256 => {
                type $d = Sha256;
                $body
            }
            ScramMechanism::Sha512 => {
                type $d = Sha512;
                $body
            }
        }
    };
}

/// HMAC with the hash of `mech` (SCRAM's `HMAC`).
pub fn hmac(mech: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    with_digest!(mech, D => {
        let mut m = <Hmac<D> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    })
}

/// The hash of `mech` (SCRAM's `H`).
pub fn hash(mech: ScramMechanism, data: &[u8]) -> Vec<u8> {
    with_digest!(mech, D => D::digest(data).to_vec())
}

/// PBKDF2 with HMAC of `mech`, one block (SCRAM's `Hi`, RFC 5802).
pub fn pbkdf2(mech: ScramMechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    with_digest!(mech, D => {
        let keyed = <Hmac<D> as Mac>::new_from_slice(password).expect("HMAC takes keys of any length");
        let mut m = keyed.clone();
        m.update(salt);
        m.update(&1u32.to_be_bytes());
        let mut u = m.finalize().into_bytes();
        let mut out = u;
        for _ in 1..iterations {
            let mut m = keyed.clone();
            m.update(&u);
            u = m.finalize().into_bytes();
            for (o, x) in out.iter_mut().zip(u.iter()) {
                *o ^= x;
            }
        }
        out.to_vec()
    })
}

/// What the cluster keeps of a user's password for one mechanism: enough
/// to check it (and for a SCRAM exchange), never the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// The hash.
    pub mechanism: ScramMechanism,
    /// Random salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// The credential for `password` with `salt`.
    pub fn derive(mechanism: ScramMechanism, password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = pbkdf2(mechanism, password.as_bytes(), salt, iterations);
        let client_key = hmac(mechanism, &salted, b"Client Key");
        Self {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: hash(mechanism, &client_key),
            server_key: hmac(mechanism, &salted, b"Server Key"),
        }
    }

    /// A credential for `password` with a fresh random salt and
    /// [`SCRAM_ITERATIONS`].
    pub fn generate(mechanism: ScramMechanism, password: &str) -> Result<Self, String> {
        let mut salt = [0u8; 24];
        getrandom::fill(&mut salt).map_err(|e| format!("no random bytes for a salt: {e}"))?;
        Ok(Self::derive(mechanism, password, &salt, SCRAM_ITERATIONS))
    }

    /// One credential per mechanism for `password`.
    pub fn generate_all(password: &str) -> Result<Vec<Self>, String> {
        ScramMechanism::ALL
            .into_iter()
            .map(|m| Self::generate(m, password))
            .collect()
    }

    /// Whether `password` is the one this credential was made from
    /// (compared in constant time).
    pub fn matches(&self, password: &str) -> bool {
        let salted = pbkdf2(
            self.mechanism,
            password.as_bytes(),
            &self.salt,
            self.iterations,
        );
        let stored = hash(
            self.mechanism,
            &hmac(self.mechanism, &salted, b"Client Key"),
        );
        constant_time_eq(&stored, &self.stored_key)
    }

    /// Why the credential cannot be stored, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let len = match self.mechanism {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        };
        if !SCRAM_ITERATIONS_RANGE.contains(&self.iterations) {
            return Some(format!(
                "{} iterations: {}..={} are accepted",
                self.iterations,
                SCRAM_ITERATIONS_RANGE.start(),
                SCRAM_ITERATIONS_RANGE.end()
            ));
        }
        if !(16..=64).contains(&self.salt.len()) {
            return Some("the salt must be 16 to 64 bytes".into());
        }
        if self.stored_key.len() != len || self.server_key.len() != len {
            return Some(format!(
                "{} keys are {len} bytes",
                self.mechanism.sasl_name()
            ));
        }
        None
    }
}

/// Whether `a == b`, in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a user name cannot be used, if it cannot.
pub fn user_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_USER_NAME {
        return Some(format!("a user name is 1 to {MAX_USER_NAME} bytes"));
    }
    if name == "*" || name.chars().any(|c| c.is_control() || c == ':' || c == ',') {
        return Some(format!(
            "user name {name:?}: no control characters, ':' or ',', and not '*'"
        ));
    }
    None
}

/// Who makes a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A node of the cluster (proved the cluster secret): may do anything,
    /// as Kafka's inter-broker principal.
    Node(u64),
    /// A user who gave a valid password.
    User(String),
    /// No credentials (allowed only without `--require-auth`).
    Anonymous,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node(id) => write!(f, "Node:{id}"),
            Self::User(n) => write!(f, "User:{n}"),
            Self::Anonymous => f.write_str("User:ANONYMOUS"),
        }
    }
}

/// An operation (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Every operation.
    All,
    /// Consume; join or commit for a group.
    Read,
    /// Produce.
    Write,
    /// Create topics.
    Create,
    /// Delete topics or groups.
    Delete,
    /// Change ACLs and users, elect leaders (on the cluster).
    Alter,
    /// See a topic, group or the cluster.
    Describe,
    /// Change a topic's configs.
    AlterConfigs,
    /// See a topic's configs.
    DescribeConfigs,
    /// Node-to-node calls (only nodes make them).
    ClusterAction,
}

impl Operation {
    /// Every operation, for `--help` and parsing.
    pub const ALL: [Self; 10] = [
        Self::All,
        Self::Read,
        Self::Write,
        Self::Create,
        Self::Delete,
        Self::Alter,
        Self::Describe,
        Self::AlterConfigs,
        Self::DescribeConfigs,
        Self::ClusterAction,
    ];

    /// The CLI's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Read => "read",
            Self::Write => "write",
            Self::Create => "create",
            Self::Delete => "delete",
            Self::Alter => "alter",
            Self::Describe => "describe",
            Self::AlterConfigs => "alter-configs",
            Self::DescribeConfigs => "describe-configs",
            Self::ClusterAction => "cluster-action",
        }
    }

    /// From the CLI's name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.name() == s)
    }

    /// Whether an ALLOW for `self` allows `asked`: `all` allows everything,
    /// read, write, delete and alter imply describe, alter-configs implies
    /// describe-configs (Kafka's implied operations).
    fn allow_covers(self, asked: Self) -> bool {
        self == Self::All
            || self == asked
            || (asked == Self::Describe
                && matches!(self, Self::Read | Self::Write | Self::Delete | Self::Alter))
            || (asked == Self::DescribeConfigs && self == Self::AlterConfigs)
    }

    /// Whether a DENY for `self` denies `asked`: only itself and `all`.
    fn deny_covers(self, asked: Self) -> bool {
        self == Self::All || self == asked
    }
}

/// What an ACL protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster (named [`CLUSTER_RESOURCE`]).
    Cluster,
}

impl ResourceType {
    /// The CLI's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Group => "group",
            Self::Cluster => "cluster",
        }
    }
}

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The exact name (or `*`: every name).
    Literal,
    /// Every name starting with it.
    Prefixed,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Allows, unless a DENY matches too.
    Allow,
    /// Denies, whatever ALLOWs match.
    Deny,
}

/// One access rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Acl {
    /// `User:<name>` or `User:*`.
    pub principal: String,
    /// The client's IP address, or `*`.
    pub host: String,
    /// What it grants or denies.
    pub operation: Operation,
    /// On what kind of resource.
    pub resource_type: ResourceType,
    /// How `name` matches.
    pub pattern: PatternType,
    /// The resource name (`*` with literal: all of the type).
    pub name: String,
    /// Allow or deny.
    pub permission: Permission,
}

impl Acl {
    /// Why the ACL cannot be stored, if it cannot.
    pub fn problem(&self) -> Option<String> {
        match self.principal.strip_prefix("User:") {
            Some("*") => {}
            Some(n) => {
                if let Some(p) = user_name_problem(n) {
                    return Some(p);
                }
            }
            None => {
                return Some(format!(
                    "principal {:?}: give User:<name> or User:*",
                    self.principal
                ))
            }
        }
        if self.host != "*" && self.host.parse::<IpAddr>().is_err() {
            return Some(format!("host {:?}: give an IP address or *", self.host));
        }
        if self.name.is_empty() || self.name.len() > 255 {
            return Some("a resource name is 1 to 255 bytes".into());
        }
        if self.resource_type == ResourceType::Cluster
            && (self.name != CLUSTER_RESOURCE || self.pattern != PatternType::Literal)
        {
            return Some(format!(
                "the cluster resource is the literal {CLUSTER_RESOURCE:?}"
            ));
        }
        if self.pattern == PatternType::Prefixed && self.name == "*" {
            return Some("a prefixed ACL's name is a prefix, not *".into());
        }
        None
    }

    fn matches(
        &self,
        principal: &str,
        host: Option<IpAddr>,
        rtype: ResourceType,
        name: &str,
    ) -> bool {
        self.resource_type == rtype
            && (self.principal == principal || self.principal == "User:*")
            && (self.host == "*" || host.is_some_and(|h| self.host.parse() == Ok(h)))
            && match self.pattern {
                PatternType::Literal => self.name == name || self.name == "*",
                PatternType::Prefixed => name.starts_with(&self.name),
            }
    }
}

/// A filter over ACLs (for list and delete): every field that is set must
/// be equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFilter {
    /// Principal.
    pub principal: Option<String>,
    /// Host.
    pub host: Option<String>,
    /// Operation.
    pub operation: Option<Operation>,
    /// Resource type.
    pub resource_type: Option<ResourceType>,
    /// Pattern type.
    pub pattern: Option<PatternType>,
    /// Resource name.
    pub name: Option<String>,
    /// Permission.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// Whether `acl` passes.
    pub fn matches(&self, acl: &Acl) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.resource_type.is_none_or(|r| r == acl.resource_type)
            && self.pattern.is_none_or(|p| p == acl.pattern)
            && self.name.as_ref().is_none_or(|n| *n == acl.name)
            && self.permission.is_none_or(|p| p == acl.permission)
    }
}

/// A node's security settings beyond the cluster secret and TLS.
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    /// Who may do what.
    pub authorizer: Authorizer,
    /// `--allow-plaintext-passwords`: accept passwords over connections
    /// without TLS.
    pub allow_plaintext_passwords: bool,
    /// `--initial-users-file`: users created when the cluster has none of
    /// that name.
    pub initial_users: Vec<rivulet_proto::user_auth::UserCredentials>,
}

/// Reads an initial users file: lines `name:password`; blank lines and
/// lines starting with `#` are skipped.
pub fn parse_users_file(
    text: &str,
) -> Result<Vec<rivulet_proto::user_auth::UserCredentials>, String> {
    let mut out: Vec<rivulet_proto::user_auth::UserCredentials> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((name, password)) = line.split_once(':') else {
            return Err(format!("line {}: expected name:password", i + 1));
        };
        if let Some(p) = user_name_problem(name) {
            return Err(format!("line {}: {p}", i + 1));
        }
        if password.is_empty() {
            return Err(format!("line {}: user {name} has an empty password", i + 1));
        }
        if out.iter().any(|u| u.user == name) {
            return Err(format!("line {}: user {name} is listed twice", i + 1));
        }
        out.push(rivulet_proto::user_auth::UserCredentials::new(
            name, password,
        ));
    }
    Ok(out)
}

/// The node's authorization settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorizer {
    /// `--require-auth`: every client call names a user, and ACLs decide.
    /// Without it the cluster is open: passwords given are still checked,
    /// ACLs are kept but not enforced.
    pub require_auth: bool,
    /// `--super-users`: principals (`User:<name>`) that may do everything.
    pub super_users: BTreeSet<String>,
}

static DENIALS: RateLimit = RateLimit::new(Duration::from_secs(1));

impl Authorizer {
    /// Whether `principal` from `host` may do `op` on `rtype` `name`, by the
    /// ACLs in `acls`: nodes and super users may do everything; otherwise a
    /// matching DENY refuses, a matching ALLOW allows, nothing matching
    /// refuses (Kafka's `allow.everyone.if.no.acl.found=false`).
    pub fn allows<'a>(
        &self,
        acls: impl IntoIterator<Item = &'a Acl>,
        principal: &Principal,
        host: Option<IpAddr>,
        op: Operation,
        rtype: ResourceType,
        name: &str,
    ) -> bool {
        if !self.require_auth {
            return true;
        }
        let who = match principal {
            Principal::Node(_) => return true,
            Principal::Anonymous => return false,
            Principal::User(_) => principal.to_string(),
        };
        if self.super_users.contains(&who) {
            return true;
        }
        let mut allowed = false;
        for acl in acls {
            if !acl.matches(&who, host, rtype, name) {
                continue;
            }
            match acl.permission {
                Permission::Deny if acl.operation.deny_covers(op) => return false,
                Permission::Allow if acl.operation.allow_covers(op) => allowed = true,
                _ => {}
            }
        }
        allowed
    }
}

/// A call's principal and where it came from, with the node's authorizer:
/// the edge puts one into every request's extensions.
#[derive(Debug, Clone)]
pub struct Access {
    /// Who calls.
    pub principal: Principal,
    /// The caller's IP address.
    pub host: Option<IpAddr>,
    /// The node's settings.
    pub authorizer: Arc<Authorizer>,
}

impl Access {
    /// No checks: for calls that did not come through the edge (in-process
    /// tests, a node's own calls).
    pub fn open() -> Self {
        Self {
            principal: Principal::Anonymous,
            host: None,
            authorizer: Arc::default(),
        }
    }

    /// The access of a gRPC request (open if the edge put none).
    pub fn of<T>(req: &tonic::Request<T>) -> Self {
        req.extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(Self::open)
    }

    /// Whether the caller may do `op` on `rtype` `name` by `image`'s ACLs.
    /// A refusal is logged at INFO (the audit trail), at most once a second.
    pub fn allows(
        &self,
        image: &MetadataImage,
        op: Operation,
        rtype: ResourceType,
        name: &str,
    ) -> bool {
        let ok = self
            .authorizer
            .allows(image.acls(), &self.principal, self.host, op, rtype, name);
        if !ok {
            if let Some(suppressed) = DENIALS.allow() {
                tracing::info!(
                    principal = %self.principal,
                    host = ?self.host,
                    operation = op.name(),
                    resource = %format_args!("{}:{name}", rtype.name()),
                    suppressed,
                    "denied"
                );
            }
        }
        ok
    }

    /// [`Self::allows`] on the cluster resource.
    pub fn allows_cluster(&self, image: &MetadataImage, op: Operation) -> bool {
        self.allows(image, op, ResourceType::Cluster, CLUSTER_RESOURCE)
    }

    /// `PERMISSION_DENIED` naming what was refused, unless allowed.
    #[allow(clippy::result_large_err)]
    pub fn require(
        &self,
        image: &MetadataImage,
        op: Operation,
        rtype: ResourceType,
        name: &str,
    ) -> Result<(), tonic::Status> {
        if self.allows(image, op, rtype, name) {
            Ok(())
        } else {
            Err(tonic::Status::permission_denied(format!(
                "{} may not {} {} {name:?} (no ACL allows it)",
                self.principal,
                op.name(),
                rtype.name()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn pbkdf2_matches_the_rfc_7914_vector() {
        // RFC 7914 §11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1; the
        // first 32 bytes are its first block.
        assert_eq!(
            hex(&pbkdf2(ScramMechanism::Sha256, b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }

    #[test]
    fn scram_keys_match_rfc_7677() {
        // RFC 7677 §3: user "user", password "pencil", salt
        // W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations; the server signature
        // there is HMAC(ServerKey, AuthMessage) — checked through it.
        let salt = [
            0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36,
            0xfa, 0x81,
        ];
        let c = ScramCredential::derive(ScramMechanism::Sha256, "pencil", &salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = hmac(
            ScramMechanism::Sha256,
            &c.server_key,
            auth_message.as_bytes(),
        );
        // v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=
        assert_eq!(
            hex(&sig),
            "eabae24d1062db75a9451ff0b6ea7e98c8546549ff741e672d3251b2397de46e"
        );
        assert!(c.matches("pencil"));
        assert!(!c.matches("pencil "));
        assert!(!c.matches(""));
        assert_eq!(c.problem(), None);
        let c512 = ScramCredential::derive(ScramMechanism::Sha512, "pencil", &salt, 4096);
        assert!(c512.matches("pencil") && !c512.matches("Pencil"));
        assert_eq!(c512.problem(), None);
    }

    #[test]
    fn credentials_out_of_bounds_are_refused() {
        let mut c = ScramCredential::derive(ScramMechanism::Sha256, "p", &[1; 16], 4096);
        c.iterations = 10_000_000;
        assert!(c.problem().unwrap().contains("iterations"));
        let mut c = ScramCredential::derive(ScramMechanism::Sha256, "p", &[1; 16], 4096);
        c.salt = vec![1; 4];
        assert!(c.problem().is_some());
        c.salt = vec![1; 16];
        c.stored_key.pop();
        assert!(c.problem().is_some());
        assert!(!format!("{c:?}").contains("stored_key"), "Debug hides keys");
    }

    fn acl(
        principal: &str,
        op: Operation,
        rtype: ResourceType,
        pattern: PatternType,
        name: &str,
        perm: Permission,
    ) -> Acl {
        Acl {
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            resource_type: rtype,
            pattern,
            name: name.into(),
            permission: perm,
        }
    }

    fn enforcing() -> Authorizer {
        Authorizer {
            require_auth: true,
            super_users: ["User:admin".to_string()].into(),
        }
    }

    fn alice() -> Principal {
        Principal::User("alice".into())
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    #[test]
    fn each_acl_grants_exactly_its_operation() {
        let a = enforcing();
        let acls = [acl("User:alice", Write, Topic, Literal, "orders", Allow)];
        let may = |op, rt, name: &str| a.allows(&acls, &alice(), None, op, rt, name);
        assert!(may(Write, Topic, "orders"));
        assert!(may(Describe, Topic, "orders"), "write implies describe");
        assert!(!may(Read, Topic, "orders"));
        assert!(!may(Delete, Topic, "orders"));
        assert!(!may(AlterConfigs, Topic, "orders"));
        assert!(!may(Write, Topic, "orders2"), "literal is exact");
        assert!(!may(Write, Group, "orders"), "another resource type");
        assert!(!a.allows(
            &acls,
            &Principal::User("bob".into()),
            None,
            Write,
            Topic,
            "orders"
        ));
        assert!(!a.allows(&acls, &Principal::Anonymous, None, Write, Topic, "orders"));
    }

    #[test]
    fn no_acl_denies_and_nodes_and_super_users_pass() {
        let a = enforcing();
        let none: [Acl; 0] = [];
        assert!(!a.allows(&none, &alice(), None, Describe, Topic, "t"));
        assert!(a.allows(
            &none,
            &Principal::User("admin".into()),
            None,
            Delete,
            Topic,
            "t"
        ));
        assert!(a.allows(
            &none,
            &Principal::Node(2),
            None,
            All,
            Cluster,
            CLUSTER_RESOURCE
        ));
        let open = Authorizer::default();
        assert!(open.allows(&none, &Principal::Anonymous, None, Delete, Topic, "t"));
    }

    #[test]
    fn prefixed_wildcards_and_deny_beats_allow() {
        let a = enforcing();
        let acls = [
            acl("User:*", Read, Topic, Prefixed, "logs.", Allow),
            acl("User:alice", Read, Topic, Literal, "logs.secret", Deny),
            acl("User:alice", All, Group, Literal, "*", Allow),
        ];
        let may = |op, rt, name: &str| a.allows(&acls, &alice(), None, op, rt, name);
        assert!(may(Read, Topic, "logs.app"));
        assert!(may(Describe, Topic, "logs.app"));
        assert!(!may(Read, Topic, "logs"), "the prefix itself is shorter");
        assert!(!may(Read, Topic, "logs.secret"), "deny wins");
        assert!(
            may(Describe, Topic, "logs.secret"),
            "deny read leaves describe"
        );
        assert!(may(Delete, Group, "anything"));
        assert!(a.allows(
            &acls,
            &Principal::User("bob".into()),
            None,
            Read,
            Topic,
            "logs.x"
        ));
    }

    #[test]
    fn hosts_match_exactly() {
        let a = enforcing();
        let mut rule = acl("User:alice", Read, Topic, Literal, "t", Allow);
        rule.host = "10.0.0.1".into();
        let acls = [rule];
        let ip = |s: &str| Some(s.parse().unwrap());
        assert!(a.allows(&acls, &alice(), ip("10.0.0.1"), Read, Topic, "t"));
        assert!(!a.allows(&acls, &alice(), ip("10.0.0.2"), Read, Topic, "t"));
        assert!(!a.allows(&acls, &alice(), None, Read, Topic, "t"));
    }

    #[test]
    fn users_files_are_read_strictly() {
        let users = parse_users_file("# admins\nadmin:s3cr:et\n\nalice:pw\r\n").unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(
            (users[0].user.as_str(), users[0].password.as_str()),
            ("admin", "s3cr:et")
        );
        assert_eq!(users[1].password, "pw");
        assert!(parse_users_file("admin").unwrap_err().contains("line 1"));
        assert!(parse_users_file("a:x\na:y").unwrap_err().contains("twice"));
        assert!(parse_users_file("a:").unwrap_err().contains("empty"));
        let c = ScramCredential::generate_all("pw").unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.matches("pw") && c.problem().is_none()));
        assert_ne!(
            c[0].salt,
            ScramCredential::generate(ScramMechanism::Sha256, "pw")
                .unwrap()
                .salt
        );
    }

    #[test]
    fn bad_acls_and_names_are_refused() {
        let ok = acl("User:alice", Read, Topic, Literal, "t", Allow);
        assert_eq!(ok.problem(), None);
        let mut bad = ok.clone();
        bad.principal = "alice".into();
        assert!(bad.problem().is_some());
        let mut bad = ok.clone();
        bad.host = "somewhere".into();
        assert!(bad.problem().is_some());
        let mut bad = ok.clone();
        bad.resource_type = Cluster;
        assert!(bad.problem().is_some());
        let mut bad = ok;
        bad.pattern = Prefixed;
        bad.name = "*".into();
        assert!(bad.problem().is_some());
        for n in ["", "a:b", "*", "x,y", "tab\t"] {
            assert!(user_name_problem(n).is_some(), "{n:?}");
        }
        assert_eq!(user_name_problem("alice.smith@example"), None);
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.name()), Some(op));
        }
    }
}
