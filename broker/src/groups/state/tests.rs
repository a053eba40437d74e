//! The group state machine, replayed and driven without tokio's runtime.

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
    let g = gs.groups.get_mut("g").unwrap();
    assert_eq!(g.state(&counts), GroupState::Stable);
    let b = join(&mut gs, "b");
    assert!(b.1.is_empty(), "b got partitions a still holds: {b:?}");
    let g = gs.groups.get_mut("g").unwrap();
    assert_eq!(g.state(&counts), GroupState::Reconciling);
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
    let values =
        |g: &Group| -> Vec<MemberValue> { g.members.values().map(|m| m.value.clone()).collect() };
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
