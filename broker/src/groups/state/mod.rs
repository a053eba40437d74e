//! Consumer-group state: members, target assignment, reconciliation and
//! committed offsets, as a pure state machine over [`GroupRecord`]s.
//!
//! Every change goes through a record: an operation (heartbeat, commit,
//! expiry, delete) emits records and applies them with [`Groups::apply`], the
//! same function that replays `__consumer_offsets` when a coordinator loads
//! the partition. What a coordinator answers is therefore exactly what a new
//! coordinator rebuilds from the log.
//!
//! ```text
//!   heartbeat ──▶ membership / subscription change? ──▶ Epoch{e+1} + Member
//!            └─▶ reconcile: release what the member no longer owns,
//!                revoke (assigned − target), assign (target − held by others)
//! ```
//!
//! A partition is *held* by a member while it is assigned to it or being
//! revoked from it; it is given to another member only once released, so no
//! partition is ever read by two members of a group at once (as long as
//! members honour revocations) and nobody pauses the partitions it keeps.

//!
//! - [`records`]: what `__consumer_offsets` holds, and its encoding.
//! - [`member`]: the member state machine — a heartbeat leaves, joins, or is
//!   checked against the member's epoch, then reconciles its assignment.
//! - [`assignor`]: the uniform sticky target assignment.

mod assignor;
mod member;
mod records;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

pub use assignor::assign;
pub use member::{Heartbeat, HeartbeatReply};
pub use records::{GroupRecord, MemberValue, OffsetValue};

/// A topic partition.
pub type Tp = (String, u32);

/// Why a group operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The member id is not in the group.
    #[error("member {member} is not in group {group}; join again")]
    UnknownMember { group: String, member: String },
    /// The member epoch is stale (or from the future).
    #[error("member {member} of group {group} sent epoch {sent}, its epoch is {current}; rejoin")]
    FencedEpoch {
        group: String,
        member: String,
        sent: i32,
        current: i32,
    },
    /// The operation needs a group with no members.
    #[error("group {group} has {members} active member(s)")]
    NonEmpty { group: String, members: usize },
    /// No such group.
    #[error("group {0} does not exist")]
    NotFound(String),
    /// A malformed request.
    #[error("{0}")]
    Invalid(String),
}

/// A live member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub value: MemberValue,
    /// When the member expires without a heartbeat.
    pub deadline: Instant,
}

/// One group.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub epoch: i32,
    pub members: BTreeMap<String, Member>,
    pub offsets: BTreeMap<Tp, OffsetValue>,
    /// The assignor's answer for `target_for`, reused while nothing changed.
    target: BTreeMap<String, BTreeSet<Tp>>,
    target_for: Option<(i32, BTreeMap<String, u32>)>,
}

/// Every group of one `__consumer_offsets` partition.
#[derive(Debug, Default)]
pub struct Groups {
    pub groups: BTreeMap<String, Group>,
    next_member: u64,
}

/// Partition counts of topics (from the metadata image).
pub trait TopicCounts {
    fn partitions(&self, topic: &str) -> Option<u32>;
}

impl<F: Fn(&str) -> Option<u32>> TopicCounts for F {
    fn partitions(&self, topic: &str) -> Option<u32> {
        self(topic)
    }
}

impl Groups {
    /// Applies one record (live or replayed).
    pub fn apply(&mut self, record: &GroupRecord, now: Instant) {
        match record {
            GroupRecord::Epoch { group, epoch: None } => {
                self.groups.remove(group);
            }
            GroupRecord::Epoch {
                group,
                epoch: Some(e),
            } => self.groups.entry(group.clone()).or_default().epoch = *e,
            GroupRecord::Member {
                group,
                member,
                value,
            } => {
                let g = self.groups.entry(group.clone()).or_default();
                match value {
                    Some(v) => {
                        let timeout = Duration::from_millis(u64::from(v.session_timeout_ms));
                        g.members.insert(
                            member.clone(),
                            Member {
                                value: v.clone(),
                                deadline: now + timeout,
                            },
                        );
                    }
                    None => {
                        g.members.remove(member);
                    }
                }
            }
            GroupRecord::Offset { group, tp, value } => {
                let g = self.groups.entry(group.clone()).or_default();
                match value {
                    Some(v) => {
                        g.offsets.insert(tp.clone(), v.clone());
                    }
                    None => {
                        g.offsets.remove(tp);
                    }
                }
            }
        }
    }

    pub(super) fn emit(&mut self, out: &mut Vec<GroupRecord>, record: GroupRecord, now: Instant) {
        self.apply(&record, now);
        out.push(record);
    }

    pub(super) fn bump_epoch(&mut self, group: &str, out: &mut Vec<GroupRecord>, now: Instant) {
        let epoch = self.groups.get(group).map_or(0, |g| g.epoch) + 1;
        self.emit(
            out,
            GroupRecord::Epoch {
                group: group.to_owned(),
                epoch: Some(epoch),
            },
            now,
        );
    }

    pub(super) fn new_member_id(&mut self, group: &str, now_ms: i64) -> String {
        self.next_member += 1;
        let taken = |id: &str| {
            self.groups
                .get(group)
                .is_some_and(|g| g.members.contains_key(id))
        };
        let mut id = format!("m-{now_ms:x}-{}", self.next_member);
        while taken(&id) {
            self.next_member += 1;
            id = format!("m-{now_ms:x}-{}", self.next_member);
        }
        id
    }

    pub(super) fn all_counts(g: &Group, topics: &dyn TopicCounts) -> BTreeMap<String, u32> {
        g.members
            .values()
            .flat_map(|m| &m.value.subscribed)
            .map(|t| (t.clone(), topics.partitions(t).unwrap_or(0)))
            .collect()
    }

    /// Commits offsets for a member (with its current or previous epoch) or,
    /// with an empty member id and epoch -1, for an administrator while the
    /// group has no members.
    pub fn commit(
        &mut self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<(Tp, u64, String)>,
        now: Instant,
        now_ms: i64,
    ) -> Result<Vec<GroupRecord>, GroupError> {
        let g = self.groups.get(group);
        if member_id.is_empty() && member_epoch == -1 {
            let members = g.map_or(0, |g| g.members.len());
            if members > 0 {
                return Err(GroupError::NonEmpty {
                    group: group.to_owned(),
                    members,
                });
            }
        } else {
            let Some(m) = g.and_then(|g| g.members.get(member_id)) else {
                return Err(GroupError::UnknownMember {
                    group: group.to_owned(),
                    member: member_id.to_owned(),
                });
            };
            if member_epoch != m.value.epoch && member_epoch != m.value.previous_epoch {
                return Err(GroupError::FencedEpoch {
                    group: group.to_owned(),
                    member: member_id.to_owned(),
                    sent: member_epoch,
                    current: m.value.epoch,
                });
            }
        }
        let mut out = Vec::new();
        for (tp, offset, metadata) in offsets {
            self.emit(
                &mut out,
                GroupRecord::Offset {
                    group: group.to_owned(),
                    tp,
                    value: Some(OffsetValue {
                        offset,
                        metadata,
                        timestamp_ms: now_ms,
                    }),
                },
                now,
            );
        }
        Ok(out)
    }

    /// Removes members whose session ran out.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, String, Vec<GroupRecord>)> {
        let expired: Vec<(String, String)> = self
            .groups
            .iter()
            .flat_map(|(gid, g)| {
                g.members
                    .iter()
                    .filter(|(_, m)| m.deadline <= now)
                    .map(|(mid, _)| (gid.clone(), mid.clone()))
            })
            .collect();
        let mut all = Vec::new();
        for (group, member) in expired {
            let mut out = Vec::new();
            self.emit(
                &mut out,
                GroupRecord::Member {
                    group: group.clone(),
                    member: member.clone(),
                    value: None,
                },
                now,
            );
            self.bump_epoch(&group, &mut out, now);
            all.push((group, member, out));
        }
        all
    }

    /// Deletes a group without members, offsets and all.
    pub fn delete(&mut self, group: &str, now: Instant) -> Result<Vec<GroupRecord>, GroupError> {
        let Some(g) = self.groups.get(group) else {
            return Err(GroupError::NotFound(group.to_owned()));
        };
        if !g.members.is_empty() {
            return Err(GroupError::NonEmpty {
                group: group.to_owned(),
                members: g.members.len(),
            });
        }
        let mut out: Vec<GroupRecord> = g
            .offsets
            .keys()
            .map(|tp| GroupRecord::Offset {
                group: group.to_owned(),
                tp: tp.clone(),
                value: None,
            })
            .collect();
        out.push(GroupRecord::Epoch {
            group: group.to_owned(),
            epoch: None,
        });
        for r in &out {
            self.apply(r, now);
        }
        Ok(out)
    }

    /// The target assignment of every member of `group`.
    pub fn target(
        &mut self,
        group: &str,
        topics: &dyn TopicCounts,
    ) -> BTreeMap<String, BTreeSet<Tp>> {
        match self.groups.get_mut(group) {
            Some(g) => {
                let counts = Self::all_counts(g, topics);
                g.target(&counts).clone()
            }
            None => BTreeMap::new(),
        }
    }
}

/// Where a group stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Some member still has partitions to receive or release.
    Reconciling,
    /// Every member holds exactly its target.
    Stable,
}

impl GroupState {
    /// The name clients see: `empty`, `reconciling` or `stable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Reconciling => "reconciling",
            Self::Stable => "stable",
        }
    }
}

impl std::fmt::Display for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Group {
    /// Where the group stands.
    pub fn state(&mut self, topics: &dyn TopicCounts) -> GroupState {
        if self.members.is_empty() {
            return GroupState::Empty;
        }
        let counts = Groups::all_counts(self, topics);
        let target = self.target(&counts).clone();
        let settled = self.members.iter().all(|(id, m)| {
            m.value.revoking.is_empty() && target.get(id).is_some_and(|t| *t == m.value.assigned)
        });
        if settled {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }
}

#[cfg(test)]
mod tests;
