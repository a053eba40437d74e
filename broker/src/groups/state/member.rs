//! The member state machine of KIP-848's consumer protocol, one heartbeat at
//! a time:
//!
//! ```text
//!   epoch -1 ─────────────▶ leave: remove the member, bump the group epoch
//!   epoch  0 ─────────────▶ join: a new (or rejoining) member owning nothing,
//!                           under a new group epoch
//!   epoch  e ─────────────▶ check: a known member at its epoch (or the one
//!                           before); else UNKNOWN_MEMBER / FENCED_EPOCH
//!   then (join or check) ─▶ reconcile: release what it no longer reports,
//!                           revoke assigned − target, assign target − held
//!                           by others; move its epoch once its assignment moved
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::{GroupError, GroupRecord, Groups, MemberValue, TopicCounts, Tp};

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

/// The member epoch a heartbeat sends to leave the group.
const LEAVE_EPOCH: i32 = -1;
/// The member epoch a heartbeat sends to join.
const JOIN_EPOCH: i32 = 0;

impl Groups {
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
        if hb.member_epoch == LEAVE_EPOCH {
            let reply = self.leave(&hb, &mut out, now);
            return Ok((out, reply));
        }
        let subscribed: BTreeSet<String> = hb.subscribed.iter().cloned().collect();
        let (member_id, value) = if hb.member_epoch == JOIN_EPOCH {
            self.join(&hb, subscribed, &mut out, now, now_ms)?
        } else {
            self.check(&hb, subscribed, &mut out, now)?
        };
        let reply = self.reconcile(&hb, member_id, value, topics, &mut out, now);
        Ok((out, reply))
    }

    /// A member leaves: it is removed and the group moves to a new epoch.
    fn leave(
        &mut self,
        hb: &Heartbeat,
        out: &mut Vec<GroupRecord>,
        now: Instant,
    ) -> HeartbeatReply {
        let group = &hb.group;
        if self
            .groups
            .get(group)
            .is_some_and(|g| g.members.contains_key(&hb.member_id))
        {
            self.emit_member(group, &hb.member_id, None, out, now);
            self.bump_epoch(group, out, now);
        }
        HeartbeatReply {
            member_id: hb.member_id.clone(),
            member_epoch: LEAVE_EPOCH,
            assignment: BTreeSet::new(),
            reconciling: false,
        }
    }

    /// A member joins (or rejoins, owning nothing: it dropped everything
    /// first) under a new group epoch.
    fn join(
        &mut self,
        hb: &Heartbeat,
        subscribed: BTreeSet<String>,
        out: &mut Vec<GroupRecord>,
        now: Instant,
        now_ms: i64,
    ) -> Result<(String, MemberValue), GroupError> {
        if subscribed.is_empty() {
            return Err(GroupError::Invalid(
                "joining needs at least one subscribed topic".into(),
            ));
        }
        let group = &hb.group;
        let member_id = if hb.member_id.is_empty() {
            self.new_member_id(group, now_ms)
        } else {
            hb.member_id.clone()
        };
        self.bump_epoch(group, out, now);
        let epoch = self.groups.get(group).map_or(1, |g| g.epoch);
        let value = MemberValue {
            epoch,
            previous_epoch: epoch,
            client_id: hb.client_id.clone(),
            subscribed,
            assigned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            session_timeout_ms: hb.session_timeout_ms,
        };
        self.emit_member(group, &member_id, Some(value.clone()), out, now);
        Ok((member_id, value))
    }

    /// A known member at its epoch (or the previous one, whose answer it may
    /// not have seen); a new subscription moves the group to a new epoch.
    /// Partitions it was revoking and no longer reports are released.
    fn check(
        &mut self,
        hb: &Heartbeat,
        subscribed: BTreeSet<String>,
        out: &mut Vec<GroupRecord>,
        now: Instant,
    ) -> Result<(String, MemberValue), GroupError> {
        let group = &hb.group;
        let Some(m) = self
            .groups
            .get(group)
            .and_then(|g| g.members.get(&hb.member_id))
        else {
            return Err(GroupError::UnknownMember {
                group: group.clone(),
                member: hb.member_id.clone(),
            });
        };
        let v = &m.value;
        if hb.member_epoch != v.epoch && hb.member_epoch != v.previous_epoch {
            return Err(GroupError::FencedEpoch {
                group: group.clone(),
                member: hb.member_id.clone(),
                sent: hb.member_epoch,
                current: v.epoch,
            });
        }
        let mut value = v.clone();
        if !subscribed.is_empty() && subscribed != value.subscribed {
            value.subscribed = subscribed;
            self.bump_epoch(group, out, now);
        }
        value.session_timeout_ms = hb.session_timeout_ms;
        value.revoking.retain(|tp| hb.owned.contains(tp));
        Ok((hb.member_id.clone(), value))
    }

    /// Moves the member toward its target: revokes what it should no longer
    /// have, assigns what is free, and records the new value (or just
    /// extends its session when nothing changed).
    fn reconcile(
        &mut self,
        hb: &Heartbeat,
        member_id: String,
        mut value: MemberValue,
        topics: &dyn TopicCounts,
        out: &mut Vec<GroupRecord>,
        now: Instant,
    ) -> HeartbeatReply {
        let group = &hb.group;
        // The member's pending value takes part in the assignment.
        if let Some(m) = self
            .groups
            .get_mut(group)
            .and_then(|g| g.members.get_mut(&member_id))
        {
            m.value.subscribed = value.subscribed.clone();
        }
        // A subscribed topic that grew (or appeared) changes the target of
        // an epoch nothing else moved: a new epoch.
        let all_counts = self
            .groups
            .get(group)
            .map(|g| Self::all_counts(g, topics))
            .unwrap_or_default();
        let grew = self.groups.get(group).is_some_and(|g| {
            g.target_for
                .as_ref()
                .is_some_and(|(e, c)| *e == g.epoch && *c != all_counts)
        });
        if grew {
            self.bump_epoch(group, out, now);
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
        move_toward(&mut value, &target, &held_by_others);
        if value.assigned != before && value.epoch < g.epoch {
            value.previous_epoch = value.epoch;
            value.epoch = g.epoch;
        }
        if !hb.client_id.is_empty() {
            value.client_id = hb.client_id.clone();
        }
        let current = g.members.get(&member_id).map(|m| m.value.clone());
        if current.as_ref() != Some(&value) {
            self.emit_member(group, &member_id, Some(value.clone()), out, now);
        } else if let Some(m) = self
            .groups
            .get_mut(group)
            .and_then(|g| g.members.get_mut(&member_id))
        {
            m.deadline = now + Duration::from_millis(u64::from(value.session_timeout_ms));
        }
        let reconciling = !value.revoking.is_empty() || value.assigned != target;
        HeartbeatReply {
            member_id,
            member_epoch: value.epoch,
            assignment: value.assigned,
            reconciling,
        }
    }
}

impl Groups {
    /// Emits a member's new value (`None`: it left).
    fn emit_member(
        &mut self,
        group: &str,
        member: &str,
        value: Option<MemberValue>,
        out: &mut Vec<GroupRecord>,
        now: Instant,
    ) {
        let record = GroupRecord::Member {
            group: group.to_owned(),
            member: member.to_owned(),
            value,
        };
        self.emit(out, record, now);
    }
}

/// Revokes what `value` holds beyond `target`, and assigns what of `target`
/// nobody else holds (taking back what it was dropping, if wanted again).
fn move_toward(value: &mut MemberValue, target: &BTreeSet<Tp>, held_by_others: &BTreeSet<&Tp>) {
    let revoke: Vec<Tp> = value.assigned.difference(target).cloned().collect();
    for tp in revoke {
        value.assigned.remove(&tp);
        value.revoking.insert(tp);
    }
    for tp in target {
        if value.assigned.contains(tp) || held_by_others.contains(tp) {
            continue;
        }
        value.revoking.remove(tp);
        value.assigned.insert(tp.clone());
    }
}
