//! Admin operations: topics and the cluster. Writes go to any node, which
//! forwards them to the active controller.

use std::time::Duration;

use rivulet_proto::v1::list_offsets_partition::Spec;
use rivulet_proto::v1::{
    AlterTopicConfigRequest, ConfigEntry, CreateTopicRequest, DeleteTopicRequest,
    DescribeClusterRequest, DescribeClusterResponse, ErrorCode, ListOffsetsPartition,
    ListOffsetsRequest, OffsetSpec, TopicInfo,
};

use crate::cluster::{ClientConfig, Cluster};
use crate::error::{Error, Result};

/// A partition's offsets at its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The first offset still kept.
    pub log_start_offset: u64,
    /// The high watermark: records below it are committed.
    pub high_watermark: u64,
}

/// Admin client.
#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Cluster,
}

fn check(code: i32, message: String) -> Result<()> {
    if code == ErrorCode::None as i32 {
        Ok(())
    } else {
        Err(Error::broker(code, message))
    }
}

impl Admin {
    /// Connects (one metadata round trip).
    pub async fn connect(client: ClientConfig) -> Result<Self> {
        let cluster = Cluster::new(client)?;
        cluster.refresh(&[]).await?;
        Ok(Self { cluster })
    }

    pub(crate) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Runs `f` against nodes in turn until one answers at the RPC level
    /// (see [`Cluster::on_any_node`]).
    async fn any_node<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(
            rivulet_proto::v1::controller_client::ControllerClient<crate::cluster::Channel>,
        ) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.cluster
            .on_any_node(|addr| {
                let client = self
                    .cluster
                    .controller(&addr)
                    .map_err(|e| tonic::Status::invalid_argument(e.to_string()));
                let call = client.map(&f);
                async move { call?.await }
            })
            .await
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: &[(String, String)],
    ) -> Result<TopicInfo> {
        let req = CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            replication_factor,
            configs: configs
                .iter()
                .map(|(k, v)| ConfigEntry {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        };
        let r = self
            .any_node(|mut c| {
                let req = req.clone();
                async move { c.create_topic(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        check(r.error_code, r.error_message)?;
        r.topic
            .ok_or_else(|| Error::Rpc("CreateTopic answered without the topic".into()))
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let r = self
            .any_node(|mut c| async move {
                c.delete_topic(DeleteTopicRequest {
                    name: name.to_owned(),
                })
                .await
                .map(|r| r.into_inner())
            })
            .await?;
        check(r.error_code, r.error_message)
    }

    /// Changes topic configs; returns the full resulting config.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        configs: &[(String, String)],
    ) -> Result<Vec<(String, String)>> {
        let entries: Vec<ConfigEntry> = configs
            .iter()
            .map(|(k, v)| ConfigEntry {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        let r = self
            .any_node(|mut c| {
                let req = AlterTopicConfigRequest {
                    name: name.to_owned(),
                    configs: entries.clone(),
                };
                async move { c.alter_topic_config(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        check(r.error_code, r.error_message)?;
        Ok(r.configs.into_iter().map(|e| (e.key, e.value)).collect())
    }

    /// Every topic with its partitions and configs.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let mut topics = self.cluster.refresh(&[]).await?.topics;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// One topic.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        let r = self.cluster.refresh(&[name.to_owned()]).await?;
        r.topics
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))
    }

    /// Log start and high watermark of a partition, from its leader.
    pub async fn partition_offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets> {
        let leader = self.cluster.leader_or_refresh(topic, partition).await?;
        let mut c = self.cluster.broker(&leader.address)?;
        let spec = |s: OffsetSpec| ListOffsetsPartition {
            topic: topic.to_owned(),
            partition,
            spec: Some(Spec::OffsetSpec(s as i32)),
            current_leader_epoch: None,
        };
        let mut req = tonic::Request::new(ListOffsetsRequest {
            partitions: vec![spec(OffsetSpec::Earliest), spec(OffsetSpec::Latest)],
        });
        req.set_timeout(Duration::from_secs(5));
        let r = c.list_offsets(req).await?.into_inner();
        let mut it = r.partitions.into_iter();
        let (Some(start), Some(end)) = (it.next(), it.next()) else {
            return Err(Error::Rpc("short ListOffsets answer".into()));
        };
        check(start.error_code, start.error_message)?;
        check(end.error_code, end.error_message)?;
        Ok(PartitionOffsets {
            log_start_offset: start.offset.unwrap_or(0),
            high_watermark: end.offset.unwrap_or(0),
        })
    }

    /// The quorum and the brokers, as the first node that answers sees them.
    pub async fn describe_cluster(&self) -> Result<DescribeClusterResponse> {
        self.any_node(|mut c| async move {
            c.describe_cluster(DescribeClusterRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await
    }
}
