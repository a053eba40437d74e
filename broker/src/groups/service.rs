//! The gRPC `Groups` service: the coordinator's edge.
//!
//! Every answer carries an error code; gRPC status codes are not used for
//! group problems, so clients handle NOT_COORDINATOR and friends in one place.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rivulet_metadata::security::{Access, Operation, ResourceType};
use rivulet_proto::v1::groups_server::{Groups as GroupsApi, GroupsServer};
use rivulet_proto::v1::{
    CommittedOffset, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    DeleteGroupRequest, DeleteGroupResponse, DescribeGroupRequest, DescribeGroupResponse,
    ErrorCode, FindCoordinatorRequest, FindCoordinatorResponse, GroupListing, GroupMember,
    ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicPartitions,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::debug;

use super::state::GroupError;
use super::state::{Group, Heartbeat, OffsetValue, Tp};
use super::{validate_group_id, CoordError, ExternalMemberCommit, GroupCoordinator};
use crate::replica::partition::now_ms;

/// The `Groups` service over one coordinator; cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupsRpc {
    coord: Arc<GroupCoordinator>,
}

impl GroupsRpc {
    /// NON_EMPTY_GROUP if `group` has members outside the coordinator.
    fn external_non_empty(&self, group: &str) -> Option<CoordError> {
        self.coord.external_members(group).map(|(_, members)| {
            CoordError::Group(GroupError::NonEmpty {
                group: group.to_owned(),
                members: members.len(),
            })
        })
    }

    /// The service's handlers without the gRPC server around them, for
    /// other edges (the Kafka listener) to call in process.
    pub fn new(coord: Arc<GroupCoordinator>) -> Self {
        Self { coord }
    }

    /// The service, behind the node's readiness gate (KIP-631).
    pub fn server(
        coord: Arc<GroupCoordinator>,
    ) -> tonic::service::interceptor::InterceptedService<
        GroupsServer<Self>,
        crate::control::ReadyGate,
    > {
        let gate = crate::control::ReadyGate(Arc::clone(&coord.mgr.registration));
        tonic::service::interceptor::InterceptedService::new(
            GroupsServer::new(Self { coord }),
            gate,
        )
    }

    fn topic_counts(&self) -> impl Fn(&str) -> Option<u32> {
        let image = self.coord.image();
        move |t: &str| {
            image
                .topic(t)
                .map(|t| u32::try_from(t.partitions.len()).unwrap_or(u32::MAX))
        }
    }
}

/// Topic partitions grouped per topic, for the wire.
pub fn to_wire(set: &BTreeSet<Tp>) -> Vec<TopicPartitions> {
    rivulet_common::ids::to_wire(set.iter().map(|(t, p)| (t.as_str(), *p)))
}

fn from_wire(list: &[TopicPartitions]) -> BTreeSet<Tp> {
    rivulet_common::ids::from_wire(list).collect()
}

fn committed(tp: &Tp, v: Option<&OffsetValue>) -> CommittedOffset {
    CommittedOffset {
        topic: tp.0.clone(),
        partition: tp.1,
        offset: v.map(|v| v.offset),
        metadata: v.map(|v| v.metadata.clone()).unwrap_or_default(),
        commit_timestamp_ms: v.map_or(-1, |v| v.timestamp_ms),
    }
}

/// (code, message) of a failure; `None` for success.
fn fail(e: &CoordError) -> (i32, String) {
    (e.code() as i32, e.to_string())
}

macro_rules! check_group {
    ($group:expr, $resp:ident) => {
        // Some responses have only the two error fields.
        #[allow(clippy::needless_update)]
        if let Err((code, message)) = validate_group_id($group) {
            return Ok(Response::new($resp {
                error_code: code as i32,
                error_message: message,
                ..Default::default()
            }));
        }
    };
}

/// An early GROUP_AUTHORIZATION_FAILED answer unless `$access` may do `$op`
/// on the group.
macro_rules! authorize_group {
    ($self:ident, $access:expr, $op:expr, $group:expr, $resp:ident) => {
        #[allow(clippy::needless_update)]
        if !$access.allows(&$self.coord.image(), $op, ResourceType::Group, $group) {
            return Ok(Response::new($resp {
                error_code: ErrorCode::GroupAuthorizationFailed as i32,
                error_message: format!(
                    "{} may not {} group {:?} (no ACL allows it)",
                    $access.principal,
                    $op.name(),
                    $group
                ),
                ..Default::default()
            }));
        }
    };
}

/// An early TOPIC_AUTHORIZATION_FAILED answer unless `$access` may do `$op`
/// on every topic of `$topics`.
macro_rules! authorize_topics {
    ($self:ident, $access:expr, $op:expr, $topics:expr, $resp:ident) => {
        let image = $self.coord.image();
        #[allow(clippy::needless_update)]
        if let Some(t) = $topics
            .into_iter()
            .find(|t: &&String| !$access.allows(&image, $op, ResourceType::Topic, t))
        {
            return Ok(Response::new($resp {
                error_code: ErrorCode::TopicAuthorizationFailed as i32,
                error_message: format!(
                    "{} may not {} topic {:?} (no ACL allows it)",
                    $access.principal,
                    $op.name(),
                    t
                ),
                ..Default::default()
            }));
        }
    };
}

/// The loaded shard of a group, or an early answer with the error code.
macro_rules! shard_or_refuse {
    ($self:ident, $group:expr, $resp:ident) => {
        match $self.coord.shard_for($group) {
            Ok(s) => s,
            Err(e) => {
                let (error_code, error_message) = fail(&e);
                return Ok(Response::new($resp {
                    error_code,
                    error_message,
                    ..Default::default()
                }));
            }
        }
    };
}

#[tonic::async_trait]
impl GroupsApi for GroupsRpc {
    async fn find_coordinator(
        &self,
        request: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        let access = Access::of(&request);
        let r = request.into_inner();
        check_group!(&r.group_id, FindCoordinatorResponse);
        authorize_group!(
            self,
            access,
            Operation::Describe,
            &r.group_id,
            FindCoordinatorResponse
        );
        Ok(Response::new(match self.coord.find(&r.group_id).await {
            Ok((broker, partition)) => FindCoordinatorResponse {
                coordinator: Some(broker),
                partition,
                ..Default::default()
            },
            Err(e) => {
                let (error_code, error_message) = fail(&e);
                FindCoordinatorResponse {
                    error_code,
                    error_message,
                    ..Default::default()
                }
            }
        }))
    }

    async fn consumer_group_heartbeat(
        &self,
        request: Request<ConsumerGroupHeartbeatRequest>,
    ) -> Result<Response<ConsumerGroupHeartbeatResponse>, Status> {
        let access = Access::of(&request);
        let r = request.into_inner();
        check_group!(&r.group_id, ConsumerGroupHeartbeatResponse);
        authorize_group!(
            self,
            access,
            Operation::Read,
            &r.group_id,
            ConsumerGroupHeartbeatResponse
        );
        authorize_topics!(
            self,
            access,
            Operation::Describe,
            &r.subscribed_topics,
            ConsumerGroupHeartbeatResponse
        );
        let session_ms = self.coord.session_timeout_ms(r.session_timeout_ms);
        let hb = Heartbeat {
            group: r.group_id.clone(),
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            subscribed: r.subscribed_topics,
            owned: from_wire(&r.owned_partitions),
            client_id: r.client_id,
            session_timeout_ms: session_ms,
        };
        let counts = self.topic_counts();
        let group = hb.group.clone();
        let outcome = self
            .coord
            .update(&group, |groups| {
                groups.heartbeat(hb, &counts, Instant::now(), now_ms())
            })
            .await;
        Ok(Response::new(match outcome {
            Ok(reply) => ConsumerGroupHeartbeatResponse {
                member_id: reply.member_id,
                member_epoch: reply.member_epoch,
                heartbeat_interval_ms: if reply.reconciling {
                    // Partitions are moving: come back soon for the rest.
                    self.coord.heartbeat_interval_ms(session_ms).min(200)
                } else {
                    self.coord.heartbeat_interval_ms(session_ms)
                },
                assignment: to_wire(&reply.assignment),
                ..Default::default()
            },
            Err(e) => {
                debug!(group = %r.group_id, error = %e, "heartbeat refused");
                let (error_code, error_message) = fail(&e);
                ConsumerGroupHeartbeatResponse {
                    error_code,
                    error_message,
                    ..Default::default()
                }
            }
        }))
    }

    async fn offset_commit(
        &self,
        request: Request<OffsetCommitRequest>,
    ) -> Result<Response<OffsetCommitResponse>, Status> {
        let access = Access::of(&request);
        let for_external_member = request.extensions().get::<ExternalMemberCommit>().is_some();
        let r = request.into_inner();
        check_group!(&r.group_id, OffsetCommitResponse);
        // Kafka: READ on the group and on every committed topic.
        authorize_group!(
            self,
            access,
            Operation::Read,
            &r.group_id,
            OffsetCommitResponse
        );
        authorize_topics!(
            self,
            access,
            Operation::Read,
            r.offsets.iter().map(|o| &o.topic),
            OffsetCommitResponse
        );
        // An administrator's commit (reset-offsets) while a classic group
        // of the Kafka listener has members: refused, as for members here.
        if r.member_id.is_empty() && r.member_epoch == -1 && !for_external_member {
            if let Some(refused) = self.external_non_empty(&r.group_id) {
                let (error_code, error_message) = fail(&refused);
                return Ok(Response::new(OffsetCommitResponse {
                    error_code,
                    error_message,
                }));
            }
        }
        let offsets: Vec<(Tp, u64, String)> = r
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.offset, o.metadata))
            .collect();
        let outcome = self
            .coord
            .update(&r.group_id, |groups| {
                let records = groups.commit(
                    &r.group_id,
                    &r.member_id,
                    r.member_epoch,
                    offsets,
                    Instant::now(),
                    now_ms(),
                )?;
                Ok((records, ()))
            })
            .await;
        let (error_code, error_message) = match outcome {
            Ok(()) => (ErrorCode::None as i32, String::new()),
            Err(e) => fail(&e),
        };
        Ok(Response::new(OffsetCommitResponse {
            error_code,
            error_message,
        }))
    }

    async fn offset_fetch(
        &self,
        request: Request<OffsetFetchRequest>,
    ) -> Result<Response<OffsetFetchResponse>, Status> {
        let access = Access::of(&request);
        let r = request.into_inner();
        check_group!(&r.group_id, OffsetFetchResponse);
        authorize_group!(
            self,
            access,
            Operation::Describe,
            &r.group_id,
            OffsetFetchResponse
        );
        let image = self.coord.image();
        let may_describe =
            |tp: &Tp| access.allows(&image, Operation::Describe, ResourceType::Topic, &tp.0);
        let shard = shard_or_refuse!(self, &r.group_id, OffsetFetchResponse);
        let groups = shard.groups.lock().await;
        let empty = BTreeMap::new();
        let stored = groups
            .groups
            .get(&r.group_id)
            .map_or(&empty, |g| &g.offsets);
        let offsets = if r.partitions.is_empty() {
            // Offsets of topics the caller may not describe are left out.
            stored
                .iter()
                .filter(|(tp, _)| may_describe(tp))
                .map(|(tp, v)| committed(tp, Some(v)))
                .collect()
        } else {
            from_wire(&r.partitions)
                .iter()
                .filter(|tp| may_describe(tp))
                .map(|tp| committed(tp, stored.get(tp)))
                .collect()
        };
        Ok(Response::new(OffsetFetchResponse {
            error_code: ErrorCode::None as i32,
            error_message: String::new(),
            offsets,
        }))
    }

    async fn describe_group(
        &self,
        request: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        let access = Access::of(&request);
        let r = request.into_inner();
        check_group!(&r.group_id, DescribeGroupResponse);
        authorize_group!(
            self,
            access,
            Operation::Describe,
            &r.group_id,
            DescribeGroupResponse
        );
        let shard = shard_or_refuse!(self, &r.group_id, DescribeGroupResponse);
        let counts = self.topic_counts();
        let mut groups = shard.groups.lock().await;
        let target = groups.target(&r.group_id, &counts);
        // A classic group of the Kafka listener: its members are there.
        let external = self.coord.external_members(&r.group_id);
        let external_members = |list: &[super::ExternalMember]| -> Vec<GroupMember> {
            list.iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.clone(),
                    client_id: m.client_id.clone(),
                    member_epoch: m.generation,
                    subscribed_topics: m.subscribed.clone(),
                    assignment: rivulet_common::ids::to_wire(
                        m.assigned.iter().map(|(t, p)| (t.as_str(), *p)),
                    ),
                    revoking: Vec::new(),
                    target: Vec::new(),
                })
                .collect()
        };
        let Some(g) = groups.groups.get_mut(&r.group_id) else {
            if let Some((state, list)) = &external {
                return Ok(Response::new(DescribeGroupResponse {
                    error_code: ErrorCode::None as i32,
                    group_id: r.group_id,
                    state: state.clone(),
                    coordinator: self.coord.broker_id(),
                    members: external_members(list),
                    ..Default::default()
                }));
            }
            return Ok(Response::new(DescribeGroupResponse {
                error_code: ErrorCode::GroupIdNotFound as i32,
                error_message: format!("group {} does not exist", r.group_id),
                group_id: r.group_id,
                ..Default::default()
            }));
        };
        let mut state = g.state(&counts).as_str().to_owned();
        if let Some((s, _)) = external.as_ref().filter(|_| g.members.is_empty()) {
            state.clone_from(s);
        }
        let mut members: Vec<GroupMember> = g
            .members
            .iter()
            .map(|(id, m)| GroupMember {
                member_id: id.clone(),
                client_id: m.value.client_id.clone(),
                member_epoch: m.value.epoch,
                subscribed_topics: m.value.subscribed.iter().cloned().collect(),
                assignment: to_wire(&m.value.assigned),
                revoking: to_wire(&m.value.revoking),
                target: to_wire(target.get(id).unwrap_or(&BTreeSet::new())),
            })
            .collect();
        if let Some((_, list)) = &external {
            members.extend(external_members(list));
        }
        Ok(Response::new(DescribeGroupResponse {
            error_code: ErrorCode::None as i32,
            error_message: String::new(),
            group_id: r.group_id,
            state,
            group_epoch: g.epoch,
            coordinator: self.coord.broker_id(),
            members,
            offsets: g
                .offsets
                .iter()
                .map(|(tp, v)| committed(tp, Some(v)))
                .collect(),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let access = Access::of(&request);
        let image = self.coord.image();
        let counts = self.topic_counts();
        let mut listings = Vec::new();
        for shard in self.coord.ready_shards() {
            let mut groups = shard.groups.lock().await;
            for (id, g) in groups.groups.iter_mut() {
                // Only the groups the caller may describe.
                if !access.allows(&image, Operation::Describe, ResourceType::Group, id) {
                    continue;
                }
                let mut l = listing(id, g, &counts, self.coord.broker_id());
                // A classic group of the Kafka listener: its members too.
                if let Some((state, members)) = self.coord.external_members(id) {
                    if l.members == 0 {
                        l.state = state;
                    }
                    l.members = l
                        .members
                        .saturating_add(u32::try_from(members.len()).unwrap_or(u32::MAX));
                }
                listings.push(l);
            }
        }
        listings.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(Response::new(ListGroupsResponse {
            error_code: ErrorCode::None as i32,
            error_message: String::new(),
            groups: listings,
        }))
    }

    async fn delete_group(
        &self,
        request: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        let access = Access::of(&request);
        let r = request.into_inner();
        check_group!(&r.group_id, DeleteGroupResponse);
        authorize_group!(
            self,
            access,
            Operation::Delete,
            &r.group_id,
            DeleteGroupResponse
        );
        if let Some(refused) = self.external_non_empty(&r.group_id) {
            let (error_code, error_message) = fail(&refused);
            return Ok(Response::new(DeleteGroupResponse {
                error_code,
                error_message,
            }));
        }
        let outcome = self
            .coord
            .update(&r.group_id, |groups| {
                Ok((groups.delete(&r.group_id, Instant::now())?, ()))
            })
            .await;
        let (error_code, error_message) = match outcome {
            Ok(()) => (ErrorCode::None as i32, String::new()),
            Err(e) => fail(&e),
        };
        Ok(Response::new(DeleteGroupResponse {
            error_code,
            error_message,
        }))
    }
}

fn listing(
    id: &str,
    g: &mut Group,
    counts: &dyn Fn(&str) -> Option<u32>,
    coordinator: u64,
) -> GroupListing {
    GroupListing {
        group_id: id.to_owned(),
        state: g.state(&counts).as_str().to_owned(),
        members: u32::try_from(g.members.len()).unwrap_or(u32::MAX),
        coordinator,
    }
}
