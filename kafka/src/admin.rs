//! The admin APIs of the Kafka listener: topics (CreateTopics, DeleteTopics,
//! DescribeConfigs, IncrementalAlterConfigs), the cluster (DescribeCluster)
//! and groups (ListGroups, DescribeGroups, DeleteGroups). Topic changes go
//! to the active controller through the broker's control plane after the
//! client's ACLs are checked here.

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError as K;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use rivulet_broker::control::{ControlError, NewTopic};
use rivulet_metadata::security::{Access, Operation, ResourceType};
use rivulet_metadata::TopicConfig;
use rivulet_proto::v1::groups_server::Groups as _;
use rivulet_proto::v1::{self as pb, ErrorCode};

use crate::codes::kafka_code_raw;
use crate::handler::{broker_id, decode, encode, host_port, str_bytes, Failed, Handler};

/// Kafka's resource types in config requests.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Kafka's config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

/// Kafka's code and message for a refused control-plane call.
pub(crate) fn control_error(e: &ControlError) -> (i16, String) {
    match e {
        ControlError::Refused { code, message } => (kafka_code_raw(*code), message.clone()),
        // Retriable for admin clients: they find the controller again.
        ControlError::NoController | ControlError::Unreachable(_) => {
            (K::NotController.code(), e.to_string())
        }
    }
}

impl Handler {
    fn may(&self, access: &Access, op: Operation, rtype: ResourceType, name: &str) -> bool {
        access.allows(&self.image(), op, rtype, name)
    }

    pub(crate) async fn create_topics(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: CreateTopicsRequest = decode(body, ApiKey::CreateTopics, version)?;
        let mut r = CreateTopicsResponse::default();
        let live = self
            .image()
            .brokers()
            .values()
            .filter(|b| !b.fenced)
            .count();
        for t in req.topics {
            let topic = t.name.0.to_string();
            let mut out = CreatableTopicResult::default().with_name(t.name.clone());
            let refused: Option<(i16, String)> = if !self.may(
                access,
                Operation::Create,
                ResourceType::Topic,
                &topic,
            ) && !self.may(
                access,
                Operation::Create,
                ResourceType::Cluster,
                "kafka-cluster",
            ) {
                Some((
                    K::TopicAuthorizationFailed.code(),
                    format!("{} may not create topic {topic:?}", access.principal),
                ))
            } else if !t.assignments.is_empty() {
                Some((K::InvalidRequest.code(), "manual replica assignments are not supported: give a partition count and replication factor".into()))
            } else {
                None
            };
            let partitions = if t.num_partitions == -1 {
                1
            } else {
                t.num_partitions
            };
            let rf = if t.replication_factor == -1 {
                live.clamp(1, 3) as i16
            } else {
                t.replication_factor
            };
            let configs: Vec<(String, String)> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            let outcome = match refused {
                Some(e) => Err(e),
                None => match (u32::try_from(partitions), u32::try_from(rf)) {
                    (Ok(p), Ok(f)) if p > 0 && f > 0 => {
                        if req.validate_only {
                            TopicConfig::from_pairs(configs.iter().map(|(k, v)| (k, v)))
                                .and_then(|c| c.validate(f))
                                .map_err(|e| (K::InvalidConfig.code(), e.to_string()))
                        } else {
                            self.registration
                                .control()
                                .create_topic(NewTopic {
                                    name: topic.clone(),
                                    partitions: p,
                                    replication_factor: f,
                                    configs: configs.clone(),
                                })
                                .await
                                .map_err(|e| control_error(&e))
                        }
                    }
                    _ => Err((
                        K::InvalidPartitions.code(),
                        format!("{partitions} partitions with replication factor {rf}"),
                    )),
                },
            };
            match outcome {
                Ok(()) => {
                    if version >= 5 {
                        out.num_partitions = partitions;
                        out.replication_factor = rf;
                        let view = self
                            .api
                            .metadata(std::slice::from_ref(&topic), access)
                            .await;
                        if let Some(ti) = view.image.topic(&topic) {
                            if version >= 7 {
                                out.topic_id = uuid::Uuid::from_u128(ti.id.as_u128());
                            }
                            out.configs = Some(
                                config_entries(&ti.config)
                                    .into_iter()
                                    .map(|(k, v, source)| {
                                        CreatableTopicConfigs::default()
                                            .with_name(str_bytes(&k))
                                            .with_value(Some(str_bytes(&v)))
                                            .with_config_source(source)
                                    })
                                    .collect(),
                            );
                        }
                    }
                }
                Err((code, message)) => {
                    out.error_code = code;
                    if version >= 1 {
                        out.error_message = Some(str_bytes(&message));
                    }
                }
            }
            r.topics.push(out);
        }
        encode(&r, ApiKey::CreateTopics, version)
    }

    pub(crate) async fn create_partitions(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: CreatePartitionsRequest = decode(body, ApiKey::CreatePartitions, version)?;
        let mut r = CreatePartitionsResponse::default();
        for t in req.topics {
            let topic = t.name.0.to_string();
            let outcome: Result<(), (i16, String)> =
                if !self.may(access, Operation::Alter, ResourceType::Topic, &topic) {
                    Err((
                        K::TopicAuthorizationFailed.code(),
                        format!("{} may not alter topic {topic:?}", access.principal),
                    ))
                } else if t.assignments.is_some() {
                    Err((
                    K::InvalidRequest.code(),
                    "manual replica assignments are not supported: give the new partition count"
                        .into(),
                ))
                } else {
                    match u32::try_from(t.count) {
                        Err(_) => Err((
                            K::InvalidPartitions.code(),
                            format!("{} partitions", t.count),
                        )),
                        Ok(total) => self
                            .registration
                            .control()
                            .create_partitions(topic.clone(), total, req.validate_only)
                            .await
                            .map_err(|e| control_error(&e)),
                    }
                };
            let mut out = CreatePartitionsTopicResult::default().with_name(t.name);
            if let Err((code, why)) = outcome {
                out.error_code = code;
                out.error_message = Some(str_bytes(&why));
            } else {
                out.error_message = None;
            }
            r.results.push(out);
        }
        encode(&r, ApiKey::CreatePartitions, version)
    }

    pub(crate) async fn delete_topics(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: DeleteTopicsRequest = decode(body, ApiKey::DeleteTopics, version)?;
        let mut r = DeleteTopicsResponse::default();
        for t in req.topic_names {
            let topic = t.0.to_string();
            let mut out = DeletableTopicResult::default().with_name(Some(t));
            let outcome = if !self.may(access, Operation::Delete, ResourceType::Topic, &topic) {
                Err((
                    K::TopicAuthorizationFailed.code(),
                    format!("{} may not delete topic {topic:?}", access.principal),
                ))
            } else {
                self.registration
                    .control()
                    .delete_topic(topic)
                    .await
                    .map_err(|e| control_error(&e))
            };
            if let Err((code, message)) = outcome {
                out.error_code = code;
                if version >= 5 {
                    out.error_message = Some(str_bytes(&message));
                }
            }
            r.responses.push(out);
        }
        encode(&r, ApiKey::DeleteTopics, version)
    }

    pub(crate) fn describe_configs(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: DescribeConfigsRequest = decode(body, ApiKey::DescribeConfigs, version)?;
        let image = self.image();
        let mut r = DescribeConfigsResponse::default();
        for res in req.resources {
            let mut out = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let wanted = |k: &str| {
                res.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|w| w.as_str() == k))
            };
            let topic = res.resource_name.to_string();
            match res.resource_type {
                TOPIC
                    if !self.may(
                        access,
                        Operation::DescribeConfigs,
                        ResourceType::Topic,
                        &topic,
                    ) =>
                {
                    out.error_code = K::TopicAuthorizationFailed.code();
                }
                TOPIC => match image.topic(&topic) {
                    None => {
                        out.error_code = K::UnknownTopicOrPartition.code();
                        out.error_message = Some(str_bytes(&format!("no topic {topic:?}")));
                    }
                    Some(t) => {
                        out.configs = config_entries(&t.config)
                            .into_iter()
                            .filter(|(k, _, _)| wanted(k))
                            .map(|(k, v, source)| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(str_bytes(&k))
                                    .with_value(Some(str_bytes(&v)))
                                    .with_config_source(source)
                            })
                            .collect();
                    }
                },
                // Broker settings are flags; consoles only need an answer.
                BROKER => {}
                other => {
                    out.error_code = K::InvalidRequest.code();
                    out.error_message = Some(str_bytes(&format!(
                        "resource type {other} has no configs here"
                    )));
                }
            }
            r.results.push(out);
        }
        encode(&r, ApiKey::DescribeConfigs, version)
    }

    pub(crate) async fn alter_configs(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: IncrementalAlterConfigsRequest =
            decode(body, ApiKey::IncrementalAlterConfigs, version)?;
        let defaults: Vec<(String, String)> = TopicConfig::default().to_pairs();
        let mut r = IncrementalAlterConfigsResponse::default();
        for res in req.resources {
            let mut out = AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let topic = res.resource_name.to_string();
            let outcome: Result<(), (i16, String)> = if res.resource_type != TOPIC {
                Err((
                    K::InvalidRequest.code(),
                    "only topic configs can be altered (broker settings are flags)".into(),
                ))
            } else if !self.may(access, Operation::AlterConfigs, ResourceType::Topic, &topic) {
                Err((
                    K::TopicAuthorizationFailed.code(),
                    format!("{} may not alter topic {topic:?}", access.principal),
                ))
            } else {
                let mut pairs = Vec::new();
                let mut bad = None;
                for c in &res.configs {
                    let key = c.name.to_string();
                    match c.config_operation {
                        0 => pairs.push((
                            key,
                            c.value.as_ref().map_or(String::new(), |v| v.to_string()),
                        )),
                        1 => match defaults.iter().find(|(k, _)| *k == key) {
                            Some((_, d)) => pairs.push((key, d.clone())),
                            None => {
                                bad = Some((
                                    K::InvalidConfig.code(),
                                    format!("unknown config {key:?}"),
                                ))
                            }
                        },
                        op => {
                            bad = Some((
                                K::InvalidRequest.code(),
                                format!("config operation {op} (APPEND/SUBTRACT) is not supported"),
                            ))
                        }
                    }
                }
                match (bad, self.image().topic(&topic)) {
                    (Some(e), _) => Err(e),
                    (None, None) => Err((
                        K::UnknownTopicOrPartition.code(),
                        format!("no topic {topic:?}"),
                    )),
                    (None, Some(t)) => match t.config.with_pairs(pairs.iter().map(|(k, v)| (k, v)))
                    {
                        Err(e) => Err((K::InvalidConfig.code(), e.to_string())),
                        Ok(_) if req.validate_only => Ok(()),
                        Ok(_) => self
                            .registration
                            .control()
                            .alter_topic_config(topic, pairs)
                            .await
                            .map_err(|e| control_error(&e)),
                    },
                }
            };
            if let Err((code, message)) = outcome {
                out.error_code = code;
                out.error_message = Some(str_bytes(&message));
            }
            r.responses.push(out);
        }
        encode(&r, ApiKey::IncrementalAlterConfigs, version)
    }

    pub(crate) fn describe_cluster(
        &self,
        body: &mut Bytes,
        version: i16,
    ) -> Result<BytesMut, Failed> {
        let _req: DescribeClusterRequest = decode(body, ApiKey::DescribeCluster, version)?;
        let image = self.image();
        let mut r = DescribeClusterResponse::default()
            .with_cluster_id(str_bytes(image.cluster_id()))
            .with_controller_id(
                self.registration
                    .control()
                    .controller()
                    .and_then(|(id, _)| id)
                    .map_or(BrokerId(-1), broker_id),
            );
        if version >= 1 {
            r.endpoint_type = 1;
        }
        r.brokers = image
            .brokers()
            .values()
            .filter(|b| !b.fenced)
            .filter_map(|b| {
                let (host, port) = host_port(b.kafka_address.as_deref()?)?;
                Some(
                    DescribeClusterBroker::default()
                        .with_broker_id(broker_id(b.id.0))
                        .with_host(host)
                        .with_port(port)
                        .with_rack(b.rack.as_deref().map(str_bytes)),
                )
            })
            .collect();
        encode(&r, ApiKey::DescribeCluster, version)
    }

    pub(crate) fn describe_log_dirs(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        use kafka_protocol::messages::describe_log_dirs_response::{
            DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
        };
        let req: DescribeLogDirsRequest = decode(body, ApiKey::DescribeLogDirs, version)?;
        let mut r = DescribeLogDirsResponse::default();
        let Some(dir) = self.api.describe_log_dir(access) else {
            if version >= 3 {
                r.error_code = K::ClusterAuthorizationFailed.code();
            }
            return encode(&r, ApiKey::DescribeLogDirs, version);
        };
        let wanted = |t: &str, p: u32| match &req.topics {
            None => true,
            Some(ts) => ts.iter().any(|w| {
                w.topic.0.as_str() == t
                    && w.partitions.iter().any(|q| i64::from(*q) == i64::from(p))
            }),
        };
        let mut out = DescribeLogDirsResult::default()
            .with_log_dir(str_bytes(&dir.path.display().to_string()));
        if version >= 4 {
            out.total_bytes = dir
                .total_bytes
                .and_then(|b| i64::try_from(b).ok())
                .unwrap_or(-1);
            out.usable_bytes = dir
                .usable_bytes
                .and_then(|b| i64::try_from(b).ok())
                .unwrap_or(-1);
        }
        for (topic, partition, size, lag) in dir.replicas {
            if !wanted(&topic, partition) {
                continue;
            }
            let p = DescribeLogDirsPartition::default()
                .with_partition_index(i32::try_from(partition).unwrap_or(i32::MAX))
                .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                .with_offset_lag(i64::try_from(lag).unwrap_or(0));
            match out.topics.last_mut() {
                Some(t) if t.name.0.as_str() == topic => t.partitions.push(p),
                _ => out.topics.push(
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(str_bytes(&topic)))
                        .with_partitions(vec![p]),
                ),
            }
        }
        r.results.push(out);
        encode(&r, ApiKey::DescribeLogDirs, version)
    }

    pub(crate) async fn list_groups(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: ListGroupsRequest = decode(body, ApiKey::ListGroups, version)?;
        let mut listed: Vec<(String, String, String)> = self
            .classic()
            .groups
            .list()
            .into_iter()
            .map(|(g, state, ptype)| (g, state.as_str().to_owned(), ptype))
            .collect();
        if let Ok(a) = self
            .groups
            .list_groups(Self::group_request(pb::ListGroupsRequest {}, access))
            .await
        {
            let me = self.mgr.broker_id();
            for g in a.into_inner().groups {
                if g.coordinator == me && !listed.iter().any(|(id, _, _)| *id == g.group_id) {
                    let state = match g.state.as_str() {
                        "empty" => "Empty",
                        "stable" => "Stable",
                        _ => "Reconciling",
                    };
                    listed.push((g.group_id, state.to_owned(), "consumer".to_owned()));
                }
            }
        }
        let mut r = ListGroupsResponse::default();
        for (group, state, ptype) in listed {
            if !self.may(access, Operation::Describe, ResourceType::Group, &group) {
                continue;
            }
            if version >= 4
                && !req.states_filter.is_empty()
                && !req
                    .states_filter
                    .iter()
                    .any(|s| s.as_str().eq_ignore_ascii_case(&state))
            {
                continue;
            }
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&group)))
                .with_protocol_type(str_bytes(&ptype));
            if version >= 4 {
                g.group_state = str_bytes(&state);
            }
            r.groups.push(g);
        }
        encode(&r, ApiKey::ListGroups, version)
    }

    pub(crate) async fn describe_groups(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: DescribeGroupsRequest = decode(body, ApiKey::DescribeGroups, version)?;
        let mut r = DescribeGroupsResponse::default();
        for gid in req.groups {
            let group = gid.0.to_string();
            let mut out = DescribedGroup::default().with_group_id(gid);
            if let Err(code) = self.group_check(&group, access, Operation::Describe) {
                out.error_code = code;
                r.groups.push(out);
                continue;
            }
            let classic = self.classic().groups.describe(&group);
            match classic {
                Some(view) => {
                    out.group_state = str_bytes(view.state.as_str());
                    out.protocol_type = str_bytes(&view.protocol_type);
                    out.protocol_data = str_bytes(&view.protocol);
                    out.members = view
                        .members
                        .into_iter()
                        .map(|(id, client, meta, assignment)| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(&id))
                                .with_client_id(str_bytes(&client))
                                .with_member_metadata(meta)
                                .with_member_assignment(assignment)
                        })
                        .collect();
                }
                None => {
                    let a = self
                        .groups
                        .describe_group(Self::group_request(
                            pb::DescribeGroupRequest {
                                group_id: group.clone(),
                            },
                            access,
                        ))
                        .await
                        .map(tonic::Response::into_inner);
                    match a {
                        Ok(a) if a.error_code == ErrorCode::None as i32 => {
                            out.group_state = str_bytes(match a.state.as_str() {
                                "empty" => "Empty",
                                "stable" => "Stable",
                                _ => "Reconciling",
                            });
                            out.protocol_type = str_bytes("consumer");
                            out.members = a
                                .members
                                .into_iter()
                                .map(|m| {
                                    DescribedGroupMember::default()
                                        .with_member_id(str_bytes(&m.member_id))
                                        .with_client_id(str_bytes(&m.client_id))
                                })
                                .collect();
                        }
                        // Kafka describes a group it does not know as Dead.
                        Ok(a) if a.error_code == ErrorCode::GroupIdNotFound as i32 => {
                            out.group_state = str_bytes("Dead");
                        }
                        Ok(a) => out.error_code = kafka_code_raw(a.error_code),
                        Err(_) => out.error_code = K::CoordinatorNotAvailable.code(),
                    }
                }
            }
            r.groups.push(out);
        }
        encode(&r, ApiKey::DescribeGroups, version)
    }

    pub(crate) async fn delete_groups(
        &self,
        body: &mut Bytes,
        version: i16,
        access: &Access,
    ) -> Result<BytesMut, Failed> {
        let req: DeleteGroupsRequest = decode(body, ApiKey::DeleteGroups, version)?;
        let mut r = DeleteGroupsResponse::default();
        for gid in req.groups_names {
            let group = gid.0.to_string();
            let mut out = DeletableGroupResult::default().with_group_id(gid);
            out.error_code = match self.group_check(&group, access, Operation::Delete) {
                Err(code) => code,
                Ok(()) if self.classic().groups.describe(&group).is_some() => {
                    K::NonEmptyGroup.code()
                }
                Ok(()) => match self
                    .groups
                    .delete_group(Self::group_request(
                        pb::DeleteGroupRequest {
                            group_id: group.clone(),
                        },
                        access,
                    ))
                    .await
                {
                    Ok(a) => kafka_code_raw(a.get_ref().error_code),
                    Err(_) => K::CoordinatorNotAvailable.code(),
                },
            };
            r.results.push(out);
        }
        encode(&r, ApiKey::DeleteGroups, version)
    }
}

/// Every topic config with its value and Kafka's source: the topic's own
/// where it differs from the default, the default otherwise.
fn config_entries(config: &TopicConfig) -> Vec<(String, String, i8)> {
    let defaults = TopicConfig::default().to_pairs();
    config
        .to_pairs()
        .into_iter()
        .map(|(k, v)| {
            let default = defaults.iter().any(|(dk, dv)| *dk == k && *dv == v);
            let source = if default {
                SOURCE_DEFAULT
            } else {
                SOURCE_TOPIC
            };
            (k, v, source)
        })
        .collect()
}
