//! Who a Kafka connection is and what it may do: SaslHandshake (KIP-43)
//! and SaslAuthenticate (KIP-152) over [`crate::sasl`], and the ACL APIs
//! (DescribeAcls, CreateAcls, DeleteAcls; KIP-140) on the same ACLs as
//! `rivulet acl`.
//!
//! The listener follows Kafka's `SaslServerAuthenticator`: ApiVersions may
//! come first, then SaslHandshake, then SaslAuthenticate until the
//! mechanism is done; a failed exchange is answered and the connection
//! closed. On a node with `--require-auth` nothing else is served before
//! authentication; without it SASL is optional (a password given is still
//! checked) but must come before any other request. Re-authentication
//! (KIP-368) is not offered: `session_lifetime_ms` is 0.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError as K;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::*;
use rivulet_metadata::edge::RateLimit;
use rivulet_metadata::security::{
    hmac, Access, Acl, Operation, PatternType, Permission, Principal, ResourceType, ScramMechanism,
    CLUSTER_RESOURCE, MAX_ACLS,
};

use crate::admin::control_error;
use crate::handler::{decode, encode, frame_response, str_bytes, Answer, Failed, Handler, Request};
use crate::sasl::{parse_plain, Mechanism, SaslError, ScramServer, Session};

/// A [`KafkaFilter`] from a DescribeAcls request or a DeleteAcls filter:
/// two message types with the same fields.
macro_rules! kafka_filter {
    ($f:expr) => {
        KafkaFilter {
            resource_type: $f.resource_type_filter,
            name: $f.resource_name_filter.as_deref().map(str::to_owned),
            pattern: $f.pattern_type_filter,
            principal: $f.principal_filter.as_deref().map(str::to_owned),
            host: $f.host_filter.as_deref().map(str::to_owned),
            operation: $f.operation,
            permission: $f.permission_type,
        }
    };
}

static REFUSED: RateLimit = RateLimit::new(Duration::from_secs(10));

impl Handler {
    /// Whether this node's Kafka clients must authenticate.
    pub(crate) fn sasl_required(&self) -> bool {
        self.authorizer.require_auth
    }

    /// The mechanisms offered: PLAIN only where a password may travel.
    fn mechanisms(&self) -> Vec<Mechanism> {
        let mut m = vec![
            Mechanism::Scram(ScramMechanism::Sha256),
            Mechanism::Scram(ScramMechanism::Sha512),
        ];
        if self.auth.passwords_allowed() {
            m.push(Mechanism::Plain);
        }
        m
    }

    /// Handles a SaslHandshake or SaslAuthenticate request of a connection
    /// in `session` (which it moves on).
    pub(crate) async fn sasl(
        &self,
        req: Request,
        peer: std::net::SocketAddr,
        session: &mut Session,
    ) -> Answer {
        let (key, version, correlation_id) = (req.key(), req.version(), req.correlation_id());
        let mut body = req.into_body();
        let answered = match key {
            ApiKey::SaslHandshake => self.sasl_handshake(&mut body, version, session),
            _ => {
                self.sasl_authenticate(&mut body, version, peer, session)
                    .await
            }
        };
        match answered {
            Ok((frame, last)) => {
                let bytes =
                    frame_response(correlation_id, key.response_header_version(version), &frame);
                if last {
                    Answer::Last(bytes)
                } else {
                    Answer::Bytes(bytes)
                }
            }
            Err(why) => Answer::Close(why),
        }
    }

    /// The response, and whether the connection closes after it.
    fn sasl_handshake(
        &self,
        body: &mut Bytes,
        version: i16,
        session: &mut Session,
    ) -> Result<(BytesMut, bool), Failed> {
        let req: SaslHandshakeRequest = decode(body, ApiKey::SaslHandshake, version)?;
        let offered = self.mechanisms();
        let mut r = SaslHandshakeResponse::default();
        r.mechanisms = offered.iter().map(|m| str_bytes(m.name())).collect();
        let last = if !matches!(session, Session::Fresh) {
            r.error_code = K::IllegalSaslState.code();
            true
        } else {
            match Mechanism::parse(&req.mechanism).filter(|m| offered.contains(m)) {
                Some(m) => {
                    *session = Session::Handshaken(m);
                    false
                }
                None => {
                    r.error_code = K::UnsupportedSaslMechanism.code();
                    true
                }
            }
        };
        Ok((encode(&r, ApiKey::SaslHandshake, version)?, last))
    }

    async fn sasl_authenticate(
        &self,
        body: &mut Bytes,
        version: i16,
        peer: std::net::SocketAddr,
        session: &mut Session,
    ) -> Result<(BytesMut, bool), Failed> {
        let req: SaslAuthenticateRequest = decode(body, ApiKey::SaslAuthenticate, version)?;
        let mut r = SaslAuthenticateResponse::default();
        // The default is Some(""): the message of a failure, if not the
        // error's own.
        r.error_message = None;
        let step: Result<Bytes, SaslError> = match std::mem::replace(session, Session::Anonymous) {
            Session::Handshaken(Mechanism::Plain) => match parse_plain(&req.auth_bytes) {
                Err(e) => Err(e),
                Ok((user, password)) => match self.auth.check_password(&user, &password).await {
                    Ok(true) => {
                        *session = Session::Authenticated(Principal::User(user));
                        Ok(Bytes::new())
                    }
                    Ok(false) => {
                        self.log_refused(&user, peer, "PLAIN");
                        Err(SaslError::Failed("PLAIN"))
                    }
                    Err(status) => {
                        r.error_message = Some(str_bytes(status.message()));
                        Err(SaslError::Failed("PLAIN"))
                    }
                },
            },
            Session::Handshaken(Mechanism::Scram(m)) => {
                let mut server = ScramServer::new(m);
                let image = self.auth.image();
                let mut nonce = [0u8; 18];
                let _ = getrandom::fill(&mut nonce);
                let step = server.client_first(
                    &req.auth_bytes,
                    |user| image.credential(user, m).cloned(),
                    &B64.encode(nonce),
                    |user| hmac(m, &self.fake_salt_key, user.as_bytes())[..24].to_vec(),
                );
                if step.is_ok() {
                    *session = Session::Scram(Box::new(server));
                }
                step.map(Bytes::from)
            }
            Session::Scram(mut server) => {
                let user = server.user().unwrap_or_default().to_owned();
                match server.client_final(&req.auth_bytes) {
                    Ok((user, last)) => {
                        *session = Session::Authenticated(Principal::User(user));
                        Ok(Bytes::from(last))
                    }
                    Err(e) => {
                        if let SaslError::Failed(m) = e {
                            self.log_refused(&user, peer, m);
                        }
                        Err(e)
                    }
                }
            }
            other => {
                *session = other;
                r.error_code = K::IllegalSaslState.code();
                r.error_message = Some(str_bytes(
                    "SaslAuthenticate without a SaslHandshake before it",
                ));
                return Ok((encode(&r, ApiKey::SaslAuthenticate, version)?, true));
            }
        };
        let last = match step {
            Ok(bytes) => {
                r.auth_bytes = bytes;
                false
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "a SASL exchange failed");
                r.error_code = K::SaslAuthenticationFailed.code();
                if r.error_message.is_none() {
                    r.error_message = Some(str_bytes(&e.to_string()));
                }
                true
            }
        };
        Ok((encode(&r, ApiKey::SaslAuthenticate, version)?, last))
    }

    fn log_refused(&self, user: &str, peer: std::net::SocketAddr, mechanism: &str) {
        if let Some(suppressed) = REFUSED.allow() {
            tracing::info!(user, %peer, mechanism, suppressed,
                "refused a Kafka client: wrong user name or password");
        }
    }

    pub(crate) fn describe_acls(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: DescribeAclsRequest = decode(body, ApiKey::DescribeAcls, version)?;
        let mut r = DescribeAclsResponse::default();
        let image = self.image();
        if !access.allows_cluster(&image, Operation::Describe) {
            r.error_code = K::ClusterAuthorizationFailed.code();
            r.error_message = Some(str_bytes(&format!(
                "{} may not describe the cluster's ACLs",
                access.principal
            )));
            return encode(&r, ApiKey::DescribeAcls, version);
        }
        let filter = kafka_filter!(req);
        if let Err(why) = filter.check() {
            r.error_code = K::InvalidRequest.code();
            r.error_message = Some(str_bytes(&why));
            return encode(&r, ApiKey::DescribeAcls, version);
        }
        // One entry per resource, its ACLs under it (the image's order).
        let mut resources: Vec<DescribeAclsResource> = Vec::new();
        for acl in image.acls().iter().filter(|a| filter.matches(a)) {
            let (rt, pt) = (
                resource_to_kafka(acl.resource_type),
                pattern_to_kafka(acl.pattern),
            );
            let description = AclDescription::default()
                .with_principal(str_bytes(&acl.principal))
                .with_host(str_bytes(&acl.host))
                .with_operation(operation_to_kafka(acl.operation))
                .with_permission_type(permission_to_kafka(acl.permission));
            match resources.iter_mut().find(|r| {
                r.resource_type == rt && r.pattern_type == pt && *r.resource_name == *acl.name
            }) {
                Some(res) => res.acls.push(description),
                None => resources.push(
                    DescribeAclsResource::default()
                        .with_resource_type(rt)
                        .with_resource_name(str_bytes(&acl.name))
                        .with_pattern_type(pt)
                        .with_acls(vec![description]),
                ),
            }
        }
        r.resources = resources;
        encode(&r, ApiKey::DescribeAcls, version)
    }

    pub(crate) async fn create_acls(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: CreateAclsRequest = decode(body, ApiKey::CreateAcls, version)?;
        let mut r = CreateAclsResponse::default();
        let allowed = access.allows_cluster(&self.image(), Operation::Alter);
        for c in req.creations.iter().take(MAX_ACLS) {
            let outcome: Result<(), (i16, String)> = if !allowed {
                Err((
                    K::ClusterAuthorizationFailed.code(),
                    format!("{} may not alter the cluster's ACLs", access.principal),
                ))
            } else {
                match acl_from_kafka(c) {
                    Err(why) => Err((K::InvalidRequest.code(), why)),
                    Ok(acl) => match acl.problem() {
                        Some(why) => Err((K::InvalidRequest.code(), why)),
                        None => self
                            .registration
                            .control()
                            .create_acls(vec![acl])
                            .await
                            .map_err(|e| control_error(&e)),
                    },
                }
            };
            let mut out = AclCreationResult::default();
            if let Err((code, why)) = outcome {
                out.error_code = code;
                out.error_message = Some(str_bytes(&why));
            }
            r.results.push(out);
        }
        encode(&r, ApiKey::CreateAcls, version)
    }

    pub(crate) async fn delete_acls(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: DeleteAclsRequest = decode(body, ApiKey::DeleteAcls, version)?;
        let mut r = DeleteAclsResponse::default();
        let allowed = access.allows_cluster(&self.image(), Operation::Alter);
        for f in &req.filters {
            let mut out = DeleteAclsFilterResult::default();
            let filter = kafka_filter!(f);
            let refused = if !allowed {
                Some((
                    K::ClusterAuthorizationFailed.code(),
                    format!("{} may not alter the cluster's ACLs", access.principal),
                ))
            } else {
                filter.check().err().map(|w| (K::InvalidRequest.code(), w))
            };
            if let Some((code, why)) = refused {
                out.error_code = code;
                out.error_message = Some(str_bytes(&why));
                r.filter_results.push(out);
                continue;
            }
            // Each matching ACL removed exactly, so MATCH and ANY filters
            // mean what Kafka means by them.
            let matching: Vec<Acl> = self
                .image()
                .acls()
                .iter()
                .filter(|a| filter.matches(a))
                .cloned()
                .collect();
            for acl in matching {
                let mut m = DeleteAclsMatchingAcl::default()
                    .with_resource_type(resource_to_kafka(acl.resource_type))
                    .with_resource_name(str_bytes(&acl.name))
                    .with_pattern_type(pattern_to_kafka(acl.pattern))
                    .with_principal(str_bytes(&acl.principal))
                    .with_host(str_bytes(&acl.host))
                    .with_operation(operation_to_kafka(acl.operation))
                    .with_permission_type(permission_to_kafka(acl.permission));
                match self.registration.control().delete_acl(acl).await {
                    // Removed by someone else meanwhile: not ours to list.
                    Ok(gone) if gone.is_empty() => continue,
                    Ok(_) => {}
                    Err(e) => {
                        let (code, why) = control_error(&e);
                        m.error_code = code;
                        m.error_message = Some(str_bytes(&why));
                    }
                }
                out.matching_acls.push(m);
            }
            r.filter_results.push(out);
        }
        encode(&r, ApiKey::DeleteAcls, version)
    }
}

// Kafka's numbers (org.apache.kafka.common.resource / acl).
const ANY: i8 = 1;
const PATTERN_MATCH: i8 = 2;
const PATTERN_LITERAL: i8 = 3;
const PATTERN_PREFIXED: i8 = 4;
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_GROUP: i8 = 3;
const RESOURCE_CLUSTER: i8 = 4;
const DENY: i8 = 2;
const ALLOW: i8 = 3;

fn resource_to_kafka(r: ResourceType) -> i8 {
    match r {
        ResourceType::Topic => RESOURCE_TOPIC,
        ResourceType::Group => RESOURCE_GROUP,
        ResourceType::Cluster => RESOURCE_CLUSTER,
    }
}

fn resource_from_kafka(r: i8) -> Option<ResourceType> {
    match r {
        RESOURCE_TOPIC => Some(ResourceType::Topic),
        RESOURCE_GROUP => Some(ResourceType::Group),
        RESOURCE_CLUSTER => Some(ResourceType::Cluster),
        _ => None,
    }
}

fn pattern_to_kafka(p: PatternType) -> i8 {
    match p {
        PatternType::Literal => PATTERN_LITERAL,
        PatternType::Prefixed => PATTERN_PREFIXED,
    }
}

fn permission_to_kafka(p: Permission) -> i8 {
    match p {
        Permission::Allow => ALLOW,
        Permission::Deny => DENY,
    }
}

/// Kafka's `AclOperation` codes.
const OPERATIONS: [(i8, Operation); 10] = [
    (2, Operation::All),
    (3, Operation::Read),
    (4, Operation::Write),
    (5, Operation::Create),
    (6, Operation::Delete),
    (7, Operation::Alter),
    (8, Operation::Describe),
    (9, Operation::ClusterAction),
    (10, Operation::DescribeConfigs),
    (11, Operation::AlterConfigs),
];

fn operation_to_kafka(o: Operation) -> i8 {
    OPERATIONS
        .iter()
        .find(|(_, x)| *x == o)
        .map_or(0, |(c, _)| *c)
}

fn operation_from_kafka(c: i8) -> Option<Operation> {
    OPERATIONS.iter().find(|(x, _)| *x == c).map(|(_, o)| *o)
}

/// A new ACL from CreateAcls.
fn acl_from_kafka(c: &create_acls_request::AclCreation) -> Result<Acl, String> {
    let resource_type = resource_from_kafka(c.resource_type).ok_or_else(|| {
        format!(
            "resource type {}: only TOPIC (2), GROUP (3) and CLUSTER (4) have ACLs here",
            c.resource_type
        )
    })?;
    let pattern = match c.resource_pattern_type {
        PATTERN_LITERAL => PatternType::Literal,
        PATTERN_PREFIXED => PatternType::Prefixed,
        p => {
            return Err(format!(
                "pattern type {p}: give LITERAL (3) or PREFIXED (4)"
            ))
        }
    };
    let operation = operation_from_kafka(c.operation).ok_or_else(|| {
        format!(
            "operation {}: not one Rivulet's ACLs know (IDEMPOTENT_WRITE and the token \
             operations are not used)",
            c.operation
        )
    })?;
    let permission = match c.permission_type {
        ALLOW => Permission::Allow,
        DENY => Permission::Deny,
        p => return Err(format!("permission {p}: give ALLOW (3) or DENY (2)")),
    };
    Ok(Acl {
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation,
        resource_type,
        pattern,
        name: if resource_type == ResourceType::Cluster && c.resource_name.is_empty() {
            CLUSTER_RESOURCE.to_owned()
        } else {
            c.resource_name.to_string()
        },
        permission,
    })
}

/// A DescribeAcls or DeleteAcls filter, in Kafka's terms: ANY matches
/// everything, a null string anything; pattern MATCH finds the ACLs that
/// apply to the named resource (its literal name, `*`, and prefixes of it).
#[derive(Debug)]
struct KafkaFilter {
    resource_type: i8,
    name: Option<String>,
    pattern: i8,
    principal: Option<String>,
    host: Option<String>,
    operation: i8,
    permission: i8,
}

impl KafkaFilter {
    /// Why the filter is not one Kafka allows, if it is not.
    fn check(&self) -> Result<(), String> {
        // Kafka: UNKNOWN (0) is an error; a type or operation with no ACLs
        // here matches nothing.
        if self.resource_type == 0 {
            return Err("resource type UNKNOWN".into());
        }
        if !matches!(
            self.pattern,
            ANY | PATTERN_MATCH | PATTERN_LITERAL | PATTERN_PREFIXED
        ) {
            return Err(format!("pattern type {}", self.pattern));
        }
        if self.operation == 0 {
            return Err("operation UNKNOWN".into());
        }
        if !matches!(self.permission, ANY | DENY | ALLOW) {
            return Err(format!("permission type {}", self.permission));
        }
        Ok(())
    }

    fn matches(&self, acl: &Acl) -> bool {
        let rt =
            self.resource_type == ANY || self.resource_type == resource_to_kafka(acl.resource_type);
        let name = match (self.pattern, &self.name) {
            (PATTERN_MATCH, Some(n)) => match acl.pattern {
                PatternType::Literal => acl.name == *n || acl.name == "*",
                PatternType::Prefixed => n.starts_with(&acl.name),
            },
            (_, Some(n)) => acl.name == *n,
            (_, None) => true,
        };
        let pattern = match self.pattern {
            ANY | PATTERN_MATCH => true,
            p => p == pattern_to_kafka(acl.pattern),
        };
        rt && name
            && pattern
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && (self.operation == ANY || self.operation == operation_to_kafka(acl.operation))
            && (self.permission == ANY || self.permission == permission_to_kafka(acl.permission))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(name: &str, pattern: PatternType, op: Operation) -> Acl {
        Acl {
            principal: "User:alice".into(),
            host: "*".into(),
            operation: op,
            resource_type: ResourceType::Topic,
            pattern,
            name: name.into(),
            permission: Permission::Allow,
        }
    }

    fn filter(name: Option<&str>, pattern: i8) -> KafkaFilter {
        KafkaFilter {
            resource_type: ANY,
            name: name.map(str::to_owned),
            pattern,
            principal: None,
            host: None,
            operation: ANY,
            permission: ANY,
        }
    }

    #[test]
    fn filters_mean_what_kafka_means() {
        let acls = [
            acl("orders", PatternType::Literal, Operation::Read),
            acl("*", PatternType::Literal, Operation::Describe),
            acl("ord", PatternType::Prefixed, Operation::Write),
            acl("other", PatternType::Literal, Operation::Read),
        ];
        let hits = |f: &KafkaFilter| acls.iter().filter(|a| f.matches(a)).count();
        assert_eq!(hits(&filter(None, ANY)), 4);
        // MATCH: everything that applies to topic "orders".
        assert_eq!(hits(&filter(Some("orders"), PATTERN_MATCH)), 3);
        assert_eq!(hits(&filter(Some("orders"), ANY)), 1);
        assert_eq!(hits(&filter(Some("ord"), PATTERN_PREFIXED)), 1);
        assert_eq!(hits(&filter(Some("ord"), PATTERN_LITERAL)), 0);
        let mut f = filter(None, ANY);
        f.operation = 3;
        assert_eq!(hits(&f), 2);
        f.resource_type = RESOURCE_GROUP;
        assert_eq!(hits(&f), 0);
        assert!(filter(None, 9).check().is_err());
        f.operation = 0;
        assert!(f.check().is_err());
    }

    #[test]
    fn operations_round_trip_kafka_codes() {
        for (code, op) in OPERATIONS {
            assert_eq!(operation_to_kafka(op), code);
            assert_eq!(operation_from_kafka(code), Some(op));
        }
        assert_eq!(operation_from_kafka(12), None);
    }
}
