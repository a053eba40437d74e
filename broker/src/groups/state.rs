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

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

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

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    /// The next offset to read.
    pub offset: u64,
    /// Free text from the committer.
    #[serde(default)]
    pub metadata: String,
    /// When it was committed (ms since the epoch).
    pub timestamp_ms: i64,
}

/// A member as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberValue {
    pub epoch: i32,
    pub previous_epoch: i32,
    #[serde(default)]
    pub client_id: String,
    pub subscribed: BTreeSet<String>,
    pub assigned: BTreeSet<Tp>,
    pub revoking: BTreeSet<Tp>,
    pub session_timeout_ms: u32,
}

/// One entry of `__consumer_offsets`. A `None` value is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    /// The group epoch; a tombstone deletes the whole group.
    Epoch { group: String, epoch: Option<i32> },
    /// A member's state; a tombstone removes the member.
    Member {
        group: String,
        member: String,
        value: Option<MemberValue>,
    },
    /// A committed offset; a tombstone forgets it.
    Offset {
        group: String,
        tp: Tp,
        value: Option<OffsetValue>,
    },
}

/// The record key, as a JSON array (compaction would keep the last value per
/// key).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Key {
    Three(String, String, String),
    Four(String, String, String, u32),
}

impl GroupRecord {
    /// The group the record belongs to.
    pub fn group(&self) -> &str {
        match self {
            Self::Epoch { group, .. } | Self::Member { group, .. } | Self::Offset { group, .. } => {
                group
            }
        }
    }

    /// Encodes as (key, value) bytes.
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            Self::Epoch { group, epoch } => (
                json(&Key::Three("epoch".into(), group.clone(), String::new())),
                epoch.map(|e| json(&e)),
            ),
            Self::Member {
                group,
                member,
                value,
            } => (
                json(&Key::Three("member".into(), group.clone(), member.clone())),
                value.as_ref().map(json),
            ),
            Self::Offset { group, tp, value } => (
                json(&Key::Four(
                    "offset".into(),
                    group.clone(),
                    tp.0.clone(),
                    tp.1,
                )),
                value.as_ref().map(json),
            ),
        }
    }

    /// Decodes a record written by [`GroupRecord::encode`].
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Self, String> {
        let key: Key = serde_json::from_slice(key).map_err(|e| format!("bad key: {e}"))?;
        let bad = |e: serde_json::Error| format!("bad value: {e}");
        Ok(match key {
            Key::Three(kind, group, _) if kind == "epoch" => Self::Epoch {
                group,
                epoch: value.map(serde_json::from_slice).transpose().map_err(bad)?,
            },
            Key::Three(kind, group, member) if kind == "member" => Self::Member {
                group,
                member,
                value: value.map(serde_json::from_slice).transpose().map_err(bad)?,
            },
            Key::Four(kind, group, topic, partition) if kind == "offset" => Self::Offset {
                group,
                tp: (topic, partition),
                value: value.map(serde_json::from_slice).transpose().map_err(bad)?,
            },
            _ => return Err("unknown record kind".into()),
        })
    }
}

/// JSON bytes of a plain struct of strings and integers (cannot fail).
fn json<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
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

/// What a heartbeat answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    pub assignment: BTreeSet<Tp>,
    /// The member still has partitions to receive or release: it should
    /// heartbeat again soon.
    pub reconciling: bool,
}

/// A heartbeat, as the coordinator sees it.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub group: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub subscribed: Vec<String>,
    pub owned: BTreeSet<Tp>,
    pub client_id: String,
    pub session_timeout_ms: u32,
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

    fn emit(&mut self, out: &mut Vec<GroupRecord>, record: GroupRecord, now: Instant) {
        self.apply(&record, now);
        out.push(record);
    }

    fn bump_epoch(&mut self, group: &str, out: &mut Vec<GroupRecord>, now: Instant) {
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

    fn new_member_id(&mut self, group: &str, now_ms: i64) -> String {
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

    /// Handles a heartbeat: join, stay, or leave. `session_timeout_ms` must
    /// already be clamped.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        topics: &dyn TopicCounts,
        now: Instant,
        now_ms: i64,
    ) -> Result<(Vec<GroupRecord>, HeartbeatReply), GroupError> {
        let mut out = Vec::new();
        let group = hb.group.clone();
        if hb.member_epoch == -1 {
            if self
                .groups
                .get(&group)
                .is_some_and(|g| g.members.contains_key(&hb.member_id))
            {
                self.emit(
                    &mut out,
                    GroupRecord::Member {
                        group: group.clone(),
                        member: hb.member_id.clone(),
                        value: None,
                    },
                    now,
                );
                self.bump_epoch(&group, &mut out, now);
            }
            return Ok((
                out,
                HeartbeatReply {
                    member_id: hb.member_id,
                    member_epoch: -1,
                    assignment: BTreeSet::new(),
                    reconciling: false,
                },
            ));
        }
        let subscribed: BTreeSet<String> = hb.subscribed.iter().cloned().collect();
        let member_id;
        let mut value;
        if hb.member_epoch == 0 {
            if subscribed.is_empty() {
                return Err(GroupError::Invalid(
                    "joining needs at least one subscribed topic".into(),
                ));
            }
            member_id = if hb.member_id.is_empty() {
                self.new_member_id(&group, now_ms)
            } else {
                hb.member_id.clone()
            };
            // A member (re)joining owns nothing: it dropped everything first.
            self.bump_epoch(&group, &mut out, now);
            let epoch = self.groups.get(&group).map_or(1, |g| g.epoch);
            value = MemberValue {
                epoch,
                previous_epoch: epoch,
                client_id: hb.client_id.clone(),
                subscribed,
                assigned: BTreeSet::new(),
                revoking: BTreeSet::new(),
                session_timeout_ms: hb.session_timeout_ms,
            };
            self.emit(
                &mut out,
                GroupRecord::Member {
                    group: group.clone(),
                    member: member_id.clone(),
                    value: Some(value.clone()),
                },
                now,
            );
        } else {
            let Some(m) = self
                .groups
                .get(&group)
                .and_then(|g| g.members.get(&hb.member_id))
            else {
                return Err(GroupError::UnknownMember {
                    group,
                    member: hb.member_id,
                });
            };
            let v = &m.value;
            if hb.member_epoch != v.epoch && hb.member_epoch != v.previous_epoch {
                return Err(GroupError::FencedEpoch {
                    group,
                    member: hb.member_id,
                    sent: hb.member_epoch,
                    current: v.epoch,
                });
            }
            member_id = hb.member_id.clone();
            value = v.clone();
            if !subscribed.is_empty() && subscribed != value.subscribed {
                value.subscribed = subscribed;
                self.bump_epoch(&group, &mut out, now);
            }
            if hb.session_timeout_ms != value.session_timeout_ms {
                value.session_timeout_ms = hb.session_timeout_ms;
            }
            // Released: revoking partitions the member no longer reports.
            value.revoking.retain(|tp| hb.owned.contains(tp));
        }

        // The member's pending value takes part in the assignment.
        if let Some(m) = self
            .groups
            .get_mut(&group)
            .and_then(|g| g.members.get_mut(&member_id))
        {
            m.value.subscribed = value.subscribed.clone();
        }
        // A subscribed topic that grew (or appeared) changes the target of
        // an epoch nothing else moved: a new epoch.
        let all_counts = self
            .groups
            .get(&group)
            .map(|g| Self::all_counts(g, topics))
            .unwrap_or_default();
        let grew = self.groups.get(&group).is_some_and(|g| {
            g.target_for
                .as_ref()
                .is_some_and(|(e, c)| *e == g.epoch && *c != all_counts)
        });
        if grew {
            self.bump_epoch(&group, &mut out, now);
        }
        let g = self.groups.entry(group.clone()).or_default();
        let target = g
            .target(&all_counts)
            .get(&member_id)
            .cloned()
            .unwrap_or_default();
        let held_by_others: BTreeSet<&Tp> = g
            .members
            .iter()
            .filter(|(id, _)| **id != member_id)
            .flat_map(|(_, m)| m.value.assigned.iter().chain(&m.value.revoking))
            .collect();
        let before = value.assigned.clone();
        // Revoke what the member should no longer have.
        let revoke: Vec<Tp> = value.assigned.difference(&target).cloned().collect();
        for tp in revoke {
            value.assigned.remove(&tp);
            value.revoking.insert(tp);
        }
        // Assign what is free; take back what it was dropping if wanted again.
        for tp in &target {
            if value.assigned.contains(tp) || held_by_others.contains(tp) {
                continue;
            }
            value.revoking.remove(tp);
            value.assigned.insert(tp.clone());
        }
        if value.assigned != before && value.epoch < g.epoch {
            value.previous_epoch = value.epoch;
            value.epoch = g.epoch;
        }
        value.client_id = if hb.client_id.is_empty() {
            value.client_id
        } else {
            hb.client_id.clone()
        };
        let current = g.members.get(&member_id).map(|m| m.value.clone());
        if current.as_ref() != Some(&value) {
            self.emit(
                &mut out,
                GroupRecord::Member {
                    group: group.clone(),
                    member: member_id.clone(),
                    value: Some(value.clone()),
                },
                now,
            );
        } else if let Some(m) = self
            .groups
            .get_mut(&group)
            .and_then(|g| g.members.get_mut(&member_id))
        {
            m.deadline = now + Duration::from_millis(u64::from(value.session_timeout_ms));
        }
        let reconciling = !value.revoking.is_empty() || value.assigned != target;
        Ok((
            out,
            HeartbeatReply {
                member_id,
                member_epoch: value.epoch,
                assignment: value.assigned,
                reconciling,
            },
        ))
    }

    fn all_counts(g: &Group, topics: &dyn TopicCounts) -> BTreeMap<String, u32> {
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

impl Group {
    /// "empty", "reconciling" or "stable".
    pub fn state(&mut self, topics: &dyn TopicCounts) -> &'static str {
        if self.members.is_empty() {
            return "empty";
        }
        let counts = Groups::all_counts(self, topics);
        let target = self.target(&counts).clone();
        let settled = self.members.iter().all(|(id, m)| {
            m.value.revoking.is_empty() && target.get(id).is_some_and(|t| *t == m.value.assigned)
        });
        if settled {
            "stable"
        } else {
            "reconciling"
        }
    }

    /// The uniform, sticky target assignment for the current epoch and
    /// topic sizes (cached until either changes).
    fn target(&mut self, counts: &BTreeMap<String, u32>) -> &BTreeMap<String, BTreeSet<Tp>> {
        let key = (self.epoch, counts.clone());
        if self.target_for.as_ref() != Some(&key) {
            let previous = if self.target_for.is_some() {
                self.target.clone()
            } else {
                BTreeMap::new()
            };
            self.target = assign(&self.members, counts, &previous);
            self.target_for = Some(key);
        }
        &self.target
    }
}

/// Uniform sticky assignment, topic by topic: each subscriber of a topic gets
/// ⌊n/k⌋ or ⌈n/k⌉ of its n partitions, keeping what it had (in the previous
/// target, else what it holds) up to its quota.
pub fn assign(
    members: &BTreeMap<String, Member>,
    counts: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, BTreeSet<Tp>>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out: BTreeMap<String, BTreeSet<Tp>> = members
        .keys()
        .map(|id| (id.clone(), BTreeSet::new()))
        .collect();
    for (topic, &n) in counts {
        let subs: Vec<&String> = members
            .iter()
            .filter(|(_, m)| m.value.subscribed.contains(topic))
            .map(|(id, _)| id)
            .collect();
        if subs.is_empty() || n == 0 {
            continue;
        }
        // What each subscriber had of this topic.
        let mut taken = BTreeSet::new();
        let mut had: BTreeMap<&String, Vec<u32>> = BTreeMap::new();
        for id in &subs {
            let source = previous.get(*id).unwrap_or(&members[*id].value.assigned);
            let mut ps: Vec<u32> = source
                .iter()
                .filter(|(t, p)| t == topic && *p < n)
                .map(|(_, p)| *p)
                .filter(|p| taken.insert(*p))
                .collect();
            ps.sort_unstable();
            had.insert(id, ps);
        }
        let k = subs.len() as u32;
        let (base, extra) = (n / k, n % k);
        // The ⌈n/k⌉ quotas go to those holding the most (least movement).
        let mut order = subs.clone();
        order.sort_by_key(|id| (std::cmp::Reverse(had[*id].len()), (*id).clone()));
        let quota: BTreeMap<&String, usize> = order
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, (base + u32::from((i as u32) < extra)) as usize))
            .collect();
        let mut free: BTreeSet<u32> = (0..n).collect();
        let mut got: BTreeMap<&String, Vec<u32>> = BTreeMap::new();
        for id in &subs {
            let keep: Vec<u32> = had[*id].iter().take(quota[*id]).copied().collect();
            for p in &keep {
                free.remove(p);
            }
            got.insert(id, keep);
        }
        for p in free {
            let Some(id) = order
                .iter()
                .filter(|id| got[**id].len() < quota[**id])
                .min_by_key(|id| (got[**id].len(), (**id).clone()))
            else {
                break;
            };
            if let Some(v) = got.get_mut(*id) {
                v.push(p);
            }
        }
        for (id, ps) in got {
            let set = out.entry(id.clone()).or_default();
            set.extend(ps.into_iter().map(|p| (topic.clone(), p)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(t: &str) -> Option<u32> {
        match t {
            "orders" => Some(6),
            "audit" => Some(2),
            _ => None,
        }
    }

    fn hb(member: &str, epoch: i32, owned: &BTreeSet<Tp>) -> Heartbeat {
        Heartbeat {
            group: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            subscribed: vec!["orders".into()],
            owned: owned.clone(),
            client_id: String::new(),
            session_timeout_ms: 10_000,
        }
    }

    /// Heartbeats every member until nothing changes; returns assignments.
    fn settle(gs: &mut Groups, members: &mut BTreeMap<String, (i32, BTreeSet<Tp>)>) {
        for _ in 0..10 {
            let mut changed = false;
            for (id, (epoch, owned)) in members.iter_mut() {
                let (recs, r) = gs
                    .heartbeat(hb(id, *epoch, owned), &counts, Instant::now(), 0)
                    .expect("heartbeat");
                changed |= !recs.is_empty() || r.assignment != *owned;
                *epoch = r.member_epoch;
                *owned = r.assignment;
            }
            if !changed {
                return;
            }
        }
        panic!("the group did not settle");
    }

    fn join(gs: &mut Groups, id: &str) -> (i32, BTreeSet<Tp>) {
        let (_, r) = gs
            .heartbeat(hb(id, 0, &BTreeSet::new()), &counts, Instant::now(), 0)
            .expect("join");
        (r.member_epoch, r.assignment)
    }

    fn assert_partitioned(members: &BTreeMap<String, (i32, BTreeSet<Tp>)>, n: u32) {
        let mut all = BTreeSet::new();
        for (_, owned) in members.values() {
            for tp in owned {
                assert!(all.insert(tp.clone()), "{tp:?} owned twice: {members:?}");
            }
        }
        assert_eq!(all.len() as u32, n, "{members:?}");
        let sizes: Vec<usize> = members.values().map(|(_, o)| o.len()).collect();
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{sizes:?}");
    }

    #[test]
    fn members_split_partitions_and_move_them_without_overlap() {
        let mut gs = Groups::default();
        let mut members = BTreeMap::new();
        members.insert("a".to_owned(), join(&mut gs, "a"));
        settle(&mut gs, &mut members);
        assert_partitioned(&members, 6);
        // b joins: a must release before b gets anything.
        let b = join(&mut gs, "b");
        assert!(b.1.is_empty(), "b got partitions a still holds: {b:?}");
        members.insert("b".to_owned(), b);
        settle(&mut gs, &mut members);
        assert_partitioned(&members, 6);
        let a_before = members["a"].1.clone();
        members.insert("c".to_owned(), join(&mut gs, "c"));
        settle(&mut gs, &mut members);
        assert_partitioned(&members, 6);
        assert!(
            members["a"].1.is_subset(&a_before),
            "sticky: a only lost partitions"
        );
    }

    #[test]
    fn a_partition_is_not_given_away_before_its_owner_releases_it() {
        let mut gs = Groups::default();
        let mut members = BTreeMap::new();
        members.insert("a".to_owned(), join(&mut gs, "a"));
        settle(&mut gs, &mut members);
        let (_, b_owned) = join(&mut gs, "b");
        assert!(b_owned.is_empty());
        // a heartbeats but keeps reporting everything: it is told to drop 3.
        let a_all = members["a"].1.clone();
        let (_, r) = gs
            .heartbeat(hb("a", members["a"].0, &a_all), &counts, Instant::now(), 0)
            .expect("a");
        assert_eq!(r.assignment.len(), 3);
        // b still gets nothing while a has not released.
        let b_epoch = gs.groups["g"].members["b"].value.epoch;
        let (_, rb) = gs
            .heartbeat(
                hb("b", b_epoch, &BTreeSet::new()),
                &counts,
                Instant::now(),
                0,
            )
            .expect("b");
        assert!(rb.assignment.is_empty(), "{rb:?}");
        // a releases: b gets them.
        gs.heartbeat(
            hb("a", r.member_epoch, &r.assignment),
            &counts,
            Instant::now(),
            0,
        )
        .expect("a");
        let (_, rb) = gs
            .heartbeat(
                hb("b", rb.member_epoch, &BTreeSet::new()),
                &counts,
                Instant::now(),
                0,
            )
            .expect("b");
        assert_eq!(rb.assignment.len(), 3);
        assert!(rb.assignment.is_disjoint(&r.assignment));
    }

    #[test]
    fn stale_epochs_and_unknown_members_are_fenced() {
        let mut gs = Groups::default();
        let (e1, _) = join(&mut gs, "a");
        let _ = join(&mut gs, "b");
        let _ = join(&mut gs, "c");
        // a's epoch moves as its assignment changes.
        let mut members = BTreeMap::new();
        members.insert("a".to_owned(), (e1, BTreeSet::new()));
        let mut all = members.clone();
        for id in ["b", "c"] {
            let e = gs.groups["g"].members[id].value.epoch;
            all.insert(id.to_owned(), (e, BTreeSet::new()));
        }
        settle(&mut gs, &mut all);
        let a = &gs.groups["g"].members["a"].value;
        let stale = a.epoch.min(a.previous_epoch) - 1;
        let err = gs
            .commit(
                "g",
                "a",
                stale,
                vec![(("orders".into(), 0), 5, String::new())],
                Instant::now(),
                0,
            )
            .expect_err("stale commit");
        assert!(matches!(err, GroupError::FencedEpoch { .. }), "{err}");
        let err = gs
            .commit("g", "zz", 1, vec![], Instant::now(), 0)
            .expect_err("unknown member");
        assert!(matches!(err, GroupError::UnknownMember { .. }));
        let err = gs
            .commit("g", "", -1, vec![], Instant::now(), 0)
            .expect_err("admin commit with members");
        assert!(matches!(err, GroupError::NonEmpty { .. }));
    }

    #[test]
    fn replaying_the_records_rebuilds_the_same_state() {
        let mut gs = Groups::default();
        let mut log = Vec::new();
        let mut members = BTreeMap::new();
        for id in ["a", "b"] {
            let (recs, r) = gs
                .heartbeat(hb(id, 0, &BTreeSet::new()), &counts, Instant::now(), 0)
                .expect("join");
            log.extend(recs);
            members.insert(id.to_owned(), (r.member_epoch, r.assignment));
        }
        for _ in 0..4 {
            for (id, (epoch, owned)) in members.iter_mut() {
                let (recs, r) = gs
                    .heartbeat(hb(id, *epoch, owned), &counts, Instant::now(), 0)
                    .expect("hb");
                log.extend(recs);
                *epoch = r.member_epoch;
                *owned = r.assignment;
            }
        }
        let a_epoch = members["a"].0;
        log.extend(
            gs.commit(
                "g",
                "a",
                a_epoch,
                vec![(("orders".into(), 1), 42, "m".into())],
                Instant::now(),
                7,
            )
            .expect("commit"),
        );
        let mut replayed = Groups::default();
        for r in &log {
            let (k, v) = r.encode();
            let back = GroupRecord::decode(&k, v.as_deref()).expect("decode");
            assert_eq!(&back, r);
            replayed.apply(&back, Instant::now());
        }
        let (g1, g2) = (&gs.groups["g"], &replayed.groups["g"]);
        assert_eq!(g1.epoch, g2.epoch);
        assert_eq!(g1.offsets, g2.offsets);
        let values = |g: &Group| -> Vec<MemberValue> {
            g.members.values().map(|m| m.value.clone()).collect()
        };
        assert_eq!(values(g1), values(g2));
    }

    #[test]
    fn partitions_added_to_a_topic_are_assigned_under_a_new_epoch() {
        let mut gs = Groups::default();
        let mut members = BTreeMap::new();
        members.insert("a".to_owned(), join(&mut gs, "a"));
        members.insert("b".to_owned(), join(&mut gs, "b"));
        settle(&mut gs, &mut members);
        let epoch = gs.groups["g"].epoch;
        let grown = |t: &str| (t == "orders").then_some(8);
        for (id, (e, owned)) in members.iter_mut() {
            let (_, r) = gs
                .heartbeat(hb(id, *e, owned), &grown, Instant::now(), 0)
                .expect("heartbeat");
            *e = r.member_epoch;
            *owned = r.assignment;
        }
        assert_eq!(gs.groups["g"].epoch, epoch + 1, "one bump for the growth");
        for (id, (e, owned)) in members.iter_mut() {
            let (_, r) = gs
                .heartbeat(hb(id, *e, owned), &grown, Instant::now(), 0)
                .expect("heartbeat");
            *e = r.member_epoch;
            *owned = r.assignment;
        }
        assert_partitioned(&members, 8);
    }

    #[test]
    fn leaving_and_expiring_release_partitions() {
        let mut gs = Groups::default();
        let mut members = BTreeMap::new();
        members.insert("a".to_owned(), join(&mut gs, "a"));
        members.insert("b".to_owned(), join(&mut gs, "b"));
        settle(&mut gs, &mut members);
        let far = Instant::now() + Duration::from_secs(11);
        // Only b keeps heartbeating; a expires.
        let b_epoch = members["b"].0;
        let b_owned = members["b"].1.clone();
        gs.heartbeat(hb("b", b_epoch, &b_owned), &counts, far, 0)
            .expect("b");
        let expired = gs.expire(far + Duration::from_millis(1));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].1, "a");
        members.remove("a");
        settle(&mut gs, &mut members);
        assert_eq!(members["b"].1.len(), 6);
        // b leaves: the group is empty and can be deleted.
        gs.heartbeat(hb("b", -1, &BTreeSet::new()), &counts, far, 0)
            .expect("leave");
        assert!(gs.groups["g"].members.is_empty());
        gs.delete("g", far).expect("delete");
        assert!(!gs.groups.contains_key("g"));
    }
}
