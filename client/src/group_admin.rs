//! Admin operations on consumer groups: list, describe with lag, reset
//! offsets, delete.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rivulet_proto::v1::list_offsets_partition::Spec;
use rivulet_proto::v1::{
    CommitOffset, DeleteGroupRequest, DescribeGroupRequest, ErrorCode, GroupListing,
    ListGroupsRequest, ListOffsetsPartition, ListOffsetsRequest, OffsetCommitRequest,
};

use crate::admin::Admin;
use crate::consumer::SeekTo;
use crate::error::{Error, Result};
use crate::group::{from_wire, Coordinator, TopicPartition};

/// How long group admin calls follow a moving coordinator.
const CALL_DEADLINE: Duration = Duration::from_secs(15);

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub member_epoch: i32,
    pub subscribed_topics: Vec<String>,
    /// What it reads now.
    pub assignment: Vec<TopicPartition>,
    /// What it was told to give up and has not released yet.
    pub revoking: Vec<TopicPartition>,
}

/// A partition of a described group: committed offset, high watermark, lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will read, if it committed one.
    pub committed: Option<u64>,
    /// The partition's high watermark (what consumers can read up to).
    pub high_watermark: Option<u64>,
    /// `high_watermark − committed`, when both are known.
    pub lag: Option<u64>,
    /// The member reading it now.
    pub member: Option<String>,
}

/// What `describe_group` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// "empty", "reconciling" or "stable".
    pub state: String,
    pub group_epoch: i32,
    /// The coordinator's broker id.
    pub coordinator: u64,
    pub members: Vec<MemberDescription>,
    /// Every partition with a committed offset or an owner, sorted.
    pub partitions: Vec<PartitionLag>,
}

impl GroupDescription {
    /// The sum of the known per-partition lags.
    pub fn total_lag(&self) -> u64 {
        self.partitions.iter().filter_map(|p| p.lag).sum()
    }
}

impl Admin {
    fn coordinator(&self, group: &str) -> Coordinator {
        Coordinator::new(self.cluster().clone(), group)
    }

    /// Every group, asking each live broker for the groups it coordinates.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let cluster = self.describe_cluster().await?;
        let mut out: BTreeMap<String, GroupListing> = BTreeMap::new();
        let mut failures = Vec::new();
        for b in cluster.brokers.iter().filter(|b| !b.fenced) {
            let ch = self.cluster().channel(&b.address)?;
            let mut req = tonic::Request::new(ListGroupsRequest {});
            req.set_timeout(Duration::from_secs(5));
            match rivulet_proto::v1::groups_client::GroupsClient::new(ch)
                .list_groups(req)
                .await
            {
                Ok(r) => {
                    for g in r.into_inner().groups {
                        out.entry(g.group_id.clone()).or_insert(g);
                    }
                }
                Err(s) => failures.push(format!("broker {}: {}", b.id, s.message())),
            }
        }
        if out.is_empty() && !failures.is_empty() {
            return Err(Error::Unreachable(failures.join("; ")));
        }
        Ok(out.into_values().collect())
    }

    /// Members, assignments, committed offsets and lag of `group`.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let id = group.to_owned();
        let r = self
            .coordinator(group)
            .call(CALL_DEADLINE, |mut c| {
                let req = DescribeGroupRequest {
                    group_id: id.clone(),
                };
                async move { c.describe_group(req).await }
            })
            .await?;
        let mut owner: BTreeMap<TopicPartition, String> = BTreeMap::new();
        let members: Vec<MemberDescription> = r
            .members
            .iter()
            .map(|m| {
                let assignment: Vec<TopicPartition> =
                    from_wire(&m.assignment).into_iter().collect();
                for tp in &assignment {
                    owner.insert(tp.clone(), m.member_id.clone());
                }
                MemberDescription {
                    member_id: m.member_id.clone(),
                    client_id: m.client_id.clone(),
                    member_epoch: m.member_epoch,
                    subscribed_topics: m.subscribed_topics.clone(),
                    assignment,
                    revoking: from_wire(&m.revoking).into_iter().collect(),
                }
            })
            .collect();
        let committed: BTreeMap<TopicPartition, u64> = r
            .offsets
            .iter()
            .filter_map(|o| o.offset.map(|off| ((o.topic.clone(), o.partition), off)))
            .collect();
        let all: BTreeSet<TopicPartition> = committed.keys().chain(owner.keys()).cloned().collect();
        let mut partitions = Vec::with_capacity(all.len());
        for (topic, partition) in all {
            let hw = self
                .partition_offsets(&topic, partition)
                .await
                .ok()
                .map(|o| o.high_watermark);
            let c = committed.get(&(topic.clone(), partition)).copied();
            partitions.push(PartitionLag {
                lag: hw.zip(c).map(|(h, c)| h.saturating_sub(c)),
                member: owner.get(&(topic.clone(), partition)).cloned(),
                topic,
                partition,
                committed: c,
                high_watermark: hw,
            });
        }
        Ok(GroupDescription {
            group_id: r.group_id,
            state: r.state,
            group_epoch: r.group_epoch,
            coordinator: r.coordinator,
            members,
            partitions,
        })
    }

    /// Deletes a group without active members, with its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let id = group.to_owned();
        self.coordinator(group)
            .call(CALL_DEADLINE, |mut c| {
                let req = DeleteGroupRequest {
                    group_id: id.clone(),
                };
                async move { c.delete_group(req).await }
            })
            .await?;
        Ok(())
    }

    /// Moves the committed offsets of `group` on `topic` (`partitions`, or
    /// all when empty) to `to`, clamped to what the log holds. Only while the
    /// group has no active members (NON_EMPTY_GROUP otherwise). With
    /// `dry_run`, computes the new offsets without committing them. Returns
    /// `(topic, partition, new offset)`.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[u32],
        to: SeekTo,
        dry_run: bool,
    ) -> Result<Vec<(String, u32, u64)>> {
        let info = self.describe_topic(topic).await?;
        let n = u32::try_from(info.partitions.len()).unwrap_or(u32::MAX);
        let list: Vec<u32> = if partitions.is_empty() {
            (0..n).collect()
        } else {
            partitions.to_vec()
        };
        let mut out = Vec::with_capacity(list.len());
        for p in list {
            if p >= n {
                return Err(Error::UnknownPartition {
                    topic: topic.to_owned(),
                    partition: p,
                });
            }
            let bounds = self.partition_offsets(topic, p).await?;
            let offset = match to {
                SeekTo::Beginning => bounds.log_start_offset,
                SeekTo::End => bounds.high_watermark,
                SeekTo::Offset(o) => o.clamp(bounds.log_start_offset, bounds.high_watermark),
                SeekTo::Timestamp(ts) => self
                    .offset_for_timestamp(topic, p, ts)
                    .await?
                    .unwrap_or(bounds.high_watermark),
            };
            out.push((topic.to_owned(), p, offset));
        }
        if dry_run {
            return Ok(out);
        }
        let req = OffsetCommitRequest {
            group_id: group.to_owned(),
            member_id: String::new(),
            member_epoch: -1,
            offsets: out
                .iter()
                .map(|(t, p, o)| CommitOffset {
                    topic: t.clone(),
                    partition: *p,
                    offset: *o,
                    metadata: "reset-offsets".into(),
                })
                .collect(),
        };
        self.coordinator(group)
            .call(CALL_DEADLINE, |mut c| {
                let req = req.clone();
                async move { c.offset_commit(req).await }
            })
            .await?;
        Ok(out)
    }

    /// The first offset at or after `ts`, from the partition's leader.
    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        ts: i64,
    ) -> Result<Option<u64>> {
        let leader = self.cluster().leader_or_refresh(topic, partition).await?;
        let mut req = tonic::Request::new(ListOffsetsRequest {
            partitions: vec![ListOffsetsPartition {
                topic: topic.to_owned(),
                partition,
                spec: Some(Spec::TimestampMs(ts)),
                current_leader_epoch: None,
            }],
        });
        req.set_timeout(Duration::from_secs(5));
        let r = self
            .cluster()
            .broker(&leader.address)?
            .list_offsets(req)
            .await?
            .into_inner();
        let Some(p) = r.partitions.into_iter().next() else {
            return Err(Error::Rpc("empty ListOffsets answer".into()));
        };
        if p.error_code != ErrorCode::None as i32 {
            return Err(Error::broker(p.error_code, p.error_message));
        }
        Ok(p.offset)
    }
}
