//! Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup), the one every Kafka client uses by default: client-side
//! assignment, server-side membership. A pure state machine over `now`; the
//! handler holds the waiting JoinGroup and SyncGroup requests and hands them
//! the [`Effect`]s.
//!
//! ```text
//!  Empty ──join──▶ PreparingRebalance ──all joined / deadline──▶ CompletingRebalance
//!    ▲                 ▲      (generation+1, leader gets every member)   │ leader's SyncGroup
//!    └─ last leaves    └─ join, leave, expiry ◀──────────── Stable ◀──────┘
//! ```
//!
//! Membership lives in the coordinator's memory (committed offsets are in
//! `__consumer_offsets` as for every group): after a coordinator moves, the
//! members' next heartbeat gets UNKNOWN_MEMBER_ID and they join again, as
//! Kafka's clients do when a coordinator loses a group.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError as K;

/// How long a new group waits for more members before its first
/// generation (Kafka's `group.initial.rebalance.delay.ms` is 3 s).
pub const INITIAL_DELAY: Duration = Duration::from_millis(500);
/// Longest rebalance round accepted.
pub const MAX_REBALANCE: Duration = Duration::from_secs(300);
/// Session timeouts accepted (Kafka's group.min/max.session.timeout.ms).
pub const SESSION_RANGE: (u64, u64) = (1_000, 300_000);
/// Most members of one group (Kafka's `group.max.size`).
pub const MAX_MEMBERS: usize = 1_000;
/// Most members of all classic groups on one node.
pub const MAX_TOTAL_MEMBERS: usize = 100_000;
// A session may not outlast the longest round (`join` clamps to both).
const _: () = assert!(SESSION_RANGE.1 <= MAX_REBALANCE.as_millis() as u64);

/// Where a group is in its rebalance cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    /// Kafka's name, for DescribeGroups and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    client_id: String,
    session: Duration,
    rebalance: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    /// Joined in the current round (PreparingRebalance), in this order.
    joined: Option<u64>,
}

#[derive(Debug, Clone)]
struct Group {
    generation: i32,
    state: State,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// When the PreparingRebalance round ends regardless.
    deadline: Option<Instant>,
}

/// A JoinGroup's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata for the chosen protocol: the leader's only.
    pub members: Vec<(String, Bytes)>,
}

/// An answer for a request that waited.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Joined {
        group: String,
        member: String,
        joined: Joined,
    },
    Synced {
        group: String,
        member: String,
        result: Result<Bytes, i16>,
    },
}

/// A JoinGroup as the state machine sees it.
#[derive(Debug, Clone)]
pub struct Join<'a> {
    pub group: &'a str,
    /// Empty: a new member.
    pub member_id: &'a str,
    pub client_id: &'a str,
    pub protocol_type: &'a str,
    pub protocols: Vec<(String, Bytes)>,
    pub session: Duration,
    pub rebalance: Duration,
}

/// What a group looks like, for DescribeGroups and ListGroups.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub state: State,
    pub protocol_type: String,
    pub protocol: String,
    pub generation: i32,
    /// (member id, client id, metadata, assignment).
    pub members: Vec<(String, String, Bytes, Bytes)>,
}

/// Every classic group this node coordinates.
#[derive(Debug, Default)]
pub struct ClassicGroups {
    groups: HashMap<String, Group>,
    next_member: u64,
    join_seq: u64,
    total_members: usize,
}

fn err(e: K) -> i16 {
    e.code()
}

impl ClassicGroups {
    /// A member joins (or rejoins): `Ok(member id)` and the answers now
    /// due (this member's among them once the round completes); `Err` with
    /// Kafka's code when refused at once.
    pub fn join(&mut self, j: Join<'_>, now: Instant) -> Result<(String, Vec<Effect>), i16> {
        let session_ms = j.session.as_millis() as u64;
        if !(SESSION_RANGE.0..=SESSION_RANGE.1).contains(&session_ms) {
            return Err(err(K::InvalidSessionTimeout));
        }
        if j.protocol_type.is_empty() || j.protocols.is_empty() {
            return Err(err(K::InconsistentGroupProtocol));
        }
        let new_member = j.member_id.is_empty();
        let group = self
            .groups
            .entry(j.group.to_owned())
            .or_insert_with(|| Group {
                generation: 0,
                state: State::Empty,
                protocol_type: j.protocol_type.to_owned(),
                protocol: None,
                leader: None,
                members: BTreeMap::new(),
                deadline: None,
            });
        if !new_member && !group.members.contains_key(j.member_id) {
            return Err(err(K::UnknownMemberId));
        }
        let others: Vec<&Member> = group
            .members
            .iter()
            .filter(|(id, _)| *id != j.member_id)
            .map(|(_, m)| m)
            .collect();
        if !others.is_empty() {
            // The joiner must support a protocol every other member does,
            // or no round could ever complete.
            let shared = j.protocols.iter().any(|(p, _)| {
                others
                    .iter()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == p))
            });
            if group.protocol_type != j.protocol_type || !shared {
                return Err(err(K::InconsistentGroupProtocol));
            }
        } else {
            group.protocol_type = j.protocol_type.to_owned();
        }
        if new_member
            && (group.members.len() >= MAX_MEMBERS || self.total_members >= MAX_TOTAL_MEMBERS)
        {
            return Err(err(K::GroupMaxSizeReached));
        }
        let member_id = if new_member {
            self.next_member += 1;
            self.total_members += 1;
            format!(
                "{}-{}",
                sanitize(j.client_id),
                random_suffix(self.next_member)
            )
        } else {
            j.member_id.to_owned()
        };
        self.join_seq += 1;
        let seq = self.join_seq;
        let rebalance = j.rebalance.clamp(j.session, MAX_REBALANCE);
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                client_id: j.client_id.to_owned(),
                session: j.session,
                rebalance,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_seen: now,
                joined: None,
            });
        member.session = j.session;
        member.rebalance = rebalance;
        member.protocols = j.protocols;
        member.last_seen = now;
        member.joined = Some(seq);
        let mut effects = Vec::new();
        match group.state {
            State::Empty => {
                group.state = State::PreparingRebalance;
                group.deadline = Some(now + INITIAL_DELAY);
            }
            State::Stable | State::CompletingRebalance => {
                start_rebalance(j.group, group, now, &mut effects);
                // The joiner is here, not waiting for an assignment.
                effects.retain(
                    |e| !matches!(e, Effect::Synced { member, .. } if *member == member_id),
                );
                // The joiner has joined this round already.
                if let Some(m) = group.members.get_mut(&member_id) {
                    m.joined = Some(seq);
                }
            }
            State::PreparingRebalance => {}
        }
        if group.state == State::PreparingRebalance
            && group.generation > 0
            && group.members.values().all(|m| m.joined.is_some())
        {
            complete_round(j.group, group, now, &mut effects);
        }
        Ok((member_id, effects))
    }

    /// The leader hands out assignments, or a member asks for its own:
    /// `Ok(Some)` now, `Ok(None)` later (an [`Effect::Synced`]).
    #[allow(clippy::type_complexity)]
    pub fn sync(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> (Result<Option<Bytes>, i16>, Vec<Effect>) {
        let mut effects = Vec::new();
        let Some(group) = self.groups.get_mut(group_id) else {
            return (Err(err(K::UnknownMemberId)), effects);
        };
        let Some(member) = group.members.get_mut(member_id) else {
            return (Err(err(K::UnknownMemberId)), effects);
        };
        member.last_seen = now;
        if generation != group.generation {
            return (Err(err(K::IllegalGeneration)), effects);
        }
        match group.state {
            State::Empty | State::PreparingRebalance => (Err(err(K::RebalanceInProgress)), effects),
            State::Stable => (Ok(Some(member.assignment.clone())), effects),
            State::CompletingRebalance => {
                if group.leader.as_deref() != Some(member_id) {
                    return (Ok(None), effects);
                }
                let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                for (id, m) in group.members.iter_mut() {
                    m.assignment = given.remove(id).unwrap_or_default();
                    if id != member_id {
                        effects.push(Effect::Synced {
                            group: group_id.to_owned(),
                            member: id.clone(),
                            result: Ok(m.assignment.clone()),
                        });
                    }
                }
                group.state = State::Stable;
                let own = group.members[member_id].assignment.clone();
                (Ok(Some(own)), effects)
            }
        }
    }

    /// A member's heartbeat: Kafka's code.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> i16 {
        let Some(group) = self.groups.get_mut(group_id) else {
            return err(K::UnknownMemberId);
        };
        let Some(member) = group.members.get_mut(member_id) else {
            return err(K::UnknownMemberId);
        };
        member.last_seen = now;
        if generation != group.generation {
            return err(K::IllegalGeneration);
        }
        match group.state {
            State::PreparingRebalance => err(K::RebalanceInProgress),
            _ => 0,
        }
    }

    /// Members leave: one code per member, and the answers now due.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[String],
        now: Instant,
    ) -> (Vec<i16>, Vec<Effect>) {
        let mut effects = Vec::new();
        let Some(group) = self.groups.get_mut(group_id) else {
            return (vec![err(K::UnknownMemberId); members.len()], effects);
        };
        let mut codes = Vec::with_capacity(members.len());
        let mut removed = 0;
        for m in members {
            if group.members.remove(m).is_some() {
                removed += 1;
                codes.push(0);
            } else {
                codes.push(err(K::UnknownMemberId));
            }
        }
        self.total_members -= removed;
        if removed > 0 {
            membership_changed(group_id, group, now, &mut effects);
        }
        self.forget_if_empty(group_id);
        (codes, effects)
    }

    /// Whether `member_id` at `generation` may commit offsets for the
    /// group: members of the current generation may, and so may a client
    /// outside any generation (`-1`, no member id: manual assignment) while
    /// the group has no members.
    pub fn may_commit(&self, group_id: &str, member_id: &str, generation: i32) -> Result<(), i16> {
        let Some(group) = self.groups.get(group_id) else {
            return if generation < 0 {
                Ok(())
            } else {
                Err(err(K::UnknownMemberId))
            };
        };
        if generation < 0 && member_id.is_empty() {
            return if group.members.is_empty() {
                Ok(())
            } else {
                Err(err(K::UnknownMemberId))
            };
        }
        if !group.members.contains_key(member_id) {
            return Err(err(K::UnknownMemberId));
        }
        if generation != group.generation {
            return Err(err(K::IllegalGeneration));
        }
        // Eager members commit as they revoke, while the group prepares
        // the next round (their generation is still current then); between
        // the round and the leader's assignment nobody owns anything.
        if group.state == State::CompletingRebalance {
            return Err(err(K::RebalanceInProgress));
        }
        Ok(())
    }

    /// Ends rounds past their deadline and expires silent members.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            let before = group.members.len();
            match group.state {
                State::PreparingRebalance => {
                    if group.deadline.is_some_and(|d| now >= d) {
                        // Who did not rejoin in time is gone.
                        group.members.retain(|_, m| m.joined.is_some());
                        complete_round(&id, group, now, &mut effects);
                    }
                }
                State::CompletingRebalance | State::Stable => {
                    group
                        .members
                        .retain(|_, m| now.saturating_duration_since(m.last_seen) < m.session);
                    if group.members.len() < before {
                        membership_changed(&id, group, now, &mut effects);
                    }
                }
                State::Empty => {}
            }
            let gone = before - self.groups.get(&id).map_or(0, |g| g.members.len());
            self.total_members -= gone;
            self.forget_if_empty(&id);
        }
        effects
    }

    /// A group's state, if this node has it.
    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        let g = self.groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupView {
            state: g.state,
            protocol_type: g.protocol_type.clone(),
            protocol: protocol.clone(),
            generation: g.generation,
            members: g
                .members
                .iter()
                .map(|(id, m)| {
                    let meta = m
                        .protocols
                        .iter()
                        .find(|(p, _)| *p == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default();
                    (id.clone(), m.client_id.clone(), meta, m.assignment.clone())
                })
                .collect(),
        })
    }

    /// Every group this node has, with its state and protocol type.
    pub fn list(&self) -> Vec<(String, State, String)> {
        self.groups
            .iter()
            .map(|(id, g)| (id.clone(), g.state, g.protocol_type.clone()))
            .collect()
    }

    fn forget_if_empty(&mut self, group_id: &str) {
        if self
            .groups
            .get(group_id)
            .is_some_and(|g| g.members.is_empty() && g.state == State::Empty)
        {
            self.groups.remove(group_id);
        }
    }
}

/// 128 random bits (and a counter, unique even if the system's randomness
/// failed): another client cannot guess a member id to commit or leave as
/// it.
fn random_suffix(counter: u64) -> String {
    let mut raw = [0u8; 16];
    let _ = getrandom::fill(&mut raw);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}{counter:x}")
}

/// Client ids become part of member ids: keep them short and printable.
fn sanitize(client_id: &str) -> String {
    let s: String = client_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(64)
        .collect();
    if s.is_empty() {
        "member".to_owned()
    } else {
        s
    }
}

/// A new round: every member must join again before the deadline; members
/// waiting for their assignment are told to rejoin.
fn start_rebalance(group_id: &str, group: &mut Group, now: Instant, effects: &mut Vec<Effect>) {
    if group.state == State::CompletingRebalance {
        for id in group.members.keys() {
            if group.leader.as_deref() != Some(id.as_str()) {
                effects.push(Effect::Synced {
                    group: group_id.to_owned(),
                    member: id.clone(),
                    result: Err(err(K::RebalanceInProgress)),
                });
            }
        }
    }
    let rebalance = group
        .members
        .values()
        .map(|m| m.rebalance)
        .max()
        .unwrap_or(INITIAL_DELAY);
    group.state = State::PreparingRebalance;
    group.deadline = Some(now + rebalance);
    for m in group.members.values_mut() {
        m.joined = None;
    }
}

/// Members left or expired: rebalance the rest, or the group is empty.
fn membership_changed(group_id: &str, group: &mut Group, now: Instant, effects: &mut Vec<Effect>) {
    if group.members.is_empty() {
        group.state = State::Empty;
        group.generation += 1;
        group.leader = None;
        group.protocol = None;
        group.deadline = None;
        return;
    }
    match group.state {
        State::PreparingRebalance => {
            if group.members.values().all(|m| m.joined.is_some()) {
                complete_round(group_id, group, now, effects);
            }
        }
        _ => start_rebalance(group_id, group, now, effects),
    }
}

/// Ends a join round: a new generation, a leader, a protocol, answers to
/// every member that joined.
fn complete_round(group_id: &str, group: &mut Group, now: Instant, effects: &mut Vec<Effect>) {
    group.deadline = None;
    group.generation += 1;
    // Their sessions count from the end of the round they waited in.
    for m in group.members.values_mut() {
        m.last_seen = now;
    }
    if group.members.is_empty() {
        group.state = State::Empty;
        group.leader = None;
        group.protocol = None;
        return;
    }
    let mut order: Vec<(&String, &Member)> = group.members.iter().collect();
    order.sort_by_key(|(_, m)| m.joined);
    let leader = match &group.leader {
        Some(l) if group.members.contains_key(l) => l.clone(),
        _ => order[0].0.clone(),
    };
    // The leader's most preferred protocol every member supports.
    let protocol = group.members[&leader]
        .protocols
        .iter()
        .map(|(p, _)| p.clone())
        .find(|p| {
            group
                .members
                .values()
                .all(|m| m.protocols.iter().any(|(q, _)| q == p))
        });
    let Some(protocol) = protocol else {
        for (id, _) in &order {
            effects.push(Effect::Joined {
                group: group_id.to_owned(),
                member: (*id).clone(),
                joined: Joined {
                    error: err(K::InconsistentGroupProtocol),
                    generation: -1,
                    protocol_type: group.protocol_type.clone(),
                    protocol: None,
                    leader: String::new(),
                    member_id: (*id).clone(),
                    members: Vec::new(),
                },
            });
        }
        // Nobody can lead this round: whoever does not join again in time
        // is dropped.
        group.state = State::PreparingRebalance;
        group.deadline = Some(now + INITIAL_DELAY);
        for m in group.members.values_mut() {
            m.joined = None;
        }
        return;
    };
    let all: Vec<(String, Bytes)> = order
        .iter()
        .map(|(id, m)| {
            let meta = m
                .protocols
                .iter()
                .find(|(p, _)| *p == protocol)
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            ((*id).clone(), meta)
        })
        .collect();
    for (id, _) in &order {
        effects.push(Effect::Joined {
            group: group_id.to_owned(),
            member: (*id).clone(),
            joined: Joined {
                error: 0,
                generation: group.generation,
                protocol_type: group.protocol_type.clone(),
                protocol: Some(protocol.clone()),
                leader: leader.clone(),
                member_id: (*id).clone(),
                members: if **id == leader {
                    all.clone()
                } else {
                    Vec::new()
                },
            },
        });
    }
    group.leader = Some(leader);
    group.protocol = Some(protocol);
    group.state = State::CompletingRebalance;
    for m in group.members.values_mut() {
        m.joined = None;
        m.assignment = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join<'a>(g: &'a str, m: &'a str, protocols: &[&str]) -> Join<'a> {
        Join {
            group: g,
            member_id: m,
            client_id: "c",
            protocol_type: "consumer",
            protocols: protocols
                .iter()
                .map(|p| ((*p).to_owned(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            session: Duration::from_secs(10),
            rebalance: Duration::from_secs(30),
        }
    }

    fn joined(effects: &[Effect]) -> BTreeMap<String, Joined> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Joined { member, joined, .. } => Some((member.clone(), joined.clone())),
                Effect::Synced { .. } => None,
            })
            .collect()
    }

    #[test]
    fn two_members_form_a_generation_and_get_the_leaders_assignment() {
        let mut g = ClassicGroups::default();
        let t0 = Instant::now();
        let (a, fx) = g.join(join("g", "", &["range", "roundrobin"]), t0).unwrap();
        assert!(fx.is_empty(), "a new group waits for the initial delay");
        let (b, fx) = g.join(join("g", "", &["roundrobin"]), t0).unwrap();
        assert!(fx.is_empty());
        assert!(g.tick(t0 + INITIAL_DELAY / 2).is_empty());
        let done = joined(&g.tick(t0 + INITIAL_DELAY));
        assert_eq!(done.len(), 2);
        let (ja, jb) = (&done[&a], &done[&b]);
        assert_eq!((ja.generation, jb.generation), (1, 1));
        assert_eq!(ja.leader, a, "the first to join leads");
        assert_eq!(
            ja.protocol.as_deref(),
            Some("roundrobin"),
            "the only common one"
        );
        assert_eq!(ja.members.len(), 2, "the leader sees every member");
        assert!(jb.members.is_empty());
        // The follower waits for the leader's SyncGroup.
        let (r, fx) = g.sync("g", &b, 1, vec![], t0);
        assert_eq!(r, Ok(None));
        assert!(fx.is_empty());
        let (r, fx) = g.sync(
            "g",
            &a,
            1,
            vec![
                (a.clone(), Bytes::from_static(b"A")),
                (b.clone(), Bytes::from_static(b"B")),
            ],
            t0,
        );
        assert_eq!(r, Ok(Some(Bytes::from_static(b"A"))));
        assert_eq!(
            fx,
            vec![Effect::Synced {
                group: "g".into(),
                member: b.clone(),
                result: Ok(Bytes::from_static(b"B"))
            }]
        );
        assert_eq!(g.heartbeat("g", &b, 1, t0), 0);
        assert_eq!(g.heartbeat("g", &b, 0, t0), K::IllegalGeneration.code());
        assert_eq!(g.may_commit("g", &a, 1), Ok(()));
        assert_eq!(g.may_commit("g", "", -1), Err(K::UnknownMemberId.code()));
    }

    #[test]
    fn a_new_member_rebalances_the_group_and_silent_ones_are_dropped() {
        let mut g = ClassicGroups::default();
        let t0 = Instant::now();
        let (a, _) = g.join(join("g", "", &["range"]), t0).unwrap();
        let done = joined(&g.tick(t0 + INITIAL_DELAY));
        assert_eq!(done[&a].generation, 1);
        let (own, _) = g.sync(
            "g",
            &a,
            1,
            vec![(a.clone(), Bytes::from_static(b"all"))],
            t0,
        );
        assert_eq!(own, Ok(Some(Bytes::from_static(b"all"))));
        // A second member: the first learns of the round by heartbeat and
        // rejoins; the round completes once both are in.
        let (b, fx) = g.join(join("g", "", &["range"]), t0).unwrap();
        assert!(fx.is_empty());
        assert_eq!(g.heartbeat("g", &a, 1, t0), K::RebalanceInProgress.code());
        assert_eq!(g.may_commit("g", &a, 1), Ok(()), "revoking members commit");
        let (_, fx) = g.join(join("g", &a, &["range"]), t0).unwrap();
        let done = joined(&fx);
        assert_eq!((done[&a].generation, done[&b].generation), (2, 2));
        assert_eq!(done[&a].leader, a, "the leader stays the leader");
        // b never syncs nor heartbeats: it expires and a is alone again.
        assert_eq!(g.sync("g", &a, 2, vec![], t0).0, Ok(Some(Bytes::new())));
        let later = t0 + Duration::from_secs(11);
        assert_eq!(g.heartbeat("g", &a, 2, later - Duration::from_secs(1)), 0);
        g.tick(later);
        assert_eq!(g.heartbeat("g", &b, 2, later), K::UnknownMemberId.code());
        assert_eq!(
            g.heartbeat("g", &a, 2, later),
            K::RebalanceInProgress.code()
        );
        // a does not rejoin either: at the deadline the group is empty.
        g.tick(later + Duration::from_secs(29));
        assert!(g.describe("g").is_some(), "the round is still open");
        g.tick(later + Duration::from_secs(30));
        assert!(g.describe("g").is_none(), "an empty group is forgotten");
        assert_eq!(g.may_commit("g", "", -1), Ok(()));
        assert_eq!(g.total_members, 0);
    }

    #[test]
    fn leaving_hands_the_partitions_to_the_rest_and_refusals_are_kafkas() {
        let mut g = ClassicGroups::default();
        let t0 = Instant::now();
        let (a, _) = g.join(join("g", "", &["range"]), t0).unwrap();
        let (b, _) = g.join(join("g", "", &["range"]), t0).unwrap();
        g.tick(t0 + INITIAL_DELAY);
        // A third member while b waits for its assignment: b is told to
        // rejoin.
        let (c, fx) = g.join(join("g", "", &["range"]), t0).unwrap();
        assert_eq!(
            fx,
            vec![Effect::Synced {
                group: "g".into(),
                member: b.clone(),
                result: Err(K::RebalanceInProgress.code())
            }]
        );
        let (codes, fx) = g.leave("g", &[b.clone(), "nobody".into()], t0);
        assert_eq!(codes, vec![0, K::UnknownMemberId.code()]);
        assert!(fx.is_empty(), "a still has to rejoin");
        let (_, fx) = g.join(join("g", &a, &["range"]), t0).unwrap();
        let done = joined(&fx);
        assert_eq!((done[&a].generation, done[&c].generation), (2, 2));
        assert_eq!(done[&a].members.len(), 2);
        assert_eq!(
            g.join(join("g", "", &["other"]), t0).unwrap_err(),
            K::InconsistentGroupProtocol.code()
        );
        assert_eq!(
            g.join(join("g", "ghost", &["range"]), t0).unwrap_err(),
            K::UnknownMemberId.code()
        );
        let mut short = join("g", "", &["range"]);
        short.session = Duration::from_millis(10);
        assert_eq!(
            g.join(short, t0).unwrap_err(),
            K::InvalidSessionTimeout.code()
        );
        assert_eq!(
            g.sync("nope", "x", 1, vec![], t0).0,
            Err(K::UnknownMemberId.code())
        );
    }

    #[test]
    fn a_slow_round_keeps_its_members_and_commits_wait_for_the_assignment() {
        let mut g = ClassicGroups::default();
        let t0 = Instant::now();
        let (a, _) = g.join(join("g", "", &["range"]), t0).unwrap();
        let (b, _) = g.join(join("g", "", &["range"]), t0).unwrap();
        g.tick(t0 + INITIAL_DELAY);
        // Between the round and the leader's SyncGroup nobody owns anything.
        assert_eq!(g.may_commit("g", &a, 1), Err(K::RebalanceInProgress.code()));
        assert_eq!(g.sync("g", &a, 1, vec![], t0).0, Ok(Some(Bytes::new())));
        // A third member; a rejoins at once, b only after 17 s (within the
        // 30 s rebalance timeout): nobody expires at the round's end.
        let t1 = t0 + Duration::from_secs(1);
        let (c, _) = g.join(join("g", "", &["range"]), t1).unwrap();
        g.join(join("g", &a, &["range"]), t1).unwrap();
        let t2 = t0 + Duration::from_secs(9);
        assert_eq!(g.heartbeat("g", &b, 1, t2), K::RebalanceInProgress.code());
        let late = t0 + Duration::from_secs(18);
        let (_, fx) = g.join(join("g", &b, &["range"]), late).unwrap();
        assert_eq!(joined(&fx).len(), 3);
        g.tick(late + Duration::from_secs(1));
        let view = g.describe("g").unwrap();
        assert_eq!(view.members.len(), 3, "a and c waited 17 s in the round");
        assert!(view.members.iter().any(|m| m.0 == c));
    }

    #[test]
    fn a_joiner_must_share_a_protocol_with_every_member() {
        let mut g = ClassicGroups::default();
        let t0 = Instant::now();
        g.join(join("g", "", &["x", "y"]), t0).unwrap();
        g.join(join("g", "", &["x"]), t0).unwrap();
        // y is not supported by the second member: no round could complete.
        assert_eq!(
            g.join(join("g", "", &["y"]), t0).unwrap_err(),
            K::InconsistentGroupProtocol.code()
        );
        let done = joined(&g.tick(t0 + INITIAL_DELAY));
        assert!(done.values().all(|j| j.protocol.as_deref() == Some("x")));
    }

    #[test]
    fn member_ids_are_not_guessable() {
        let mut g = ClassicGroups::default();
        let t0 = Instant::now();
        let (a, _) = g.join(join("g", "", &["x"]), t0).unwrap();
        let (b, _) = g.join(join("g", "", &["x"]), t0).unwrap();
        assert!(a.starts_with("c-") && a.len() > 20, "{a}");
        assert_ne!(a[2..], b[2..]);
    }
}
