//! Unit tests of the controller decisions: each decision's success and
//! refusals, and the image that results from applying what it decided.

use super::*;
use crate::error::ErrorKind;
use crate::image::ApplyOutcome;

fn b(id: u64) -> BrokerId {
    BrokerId(id)
}

fn bs(ids: &[u64]) -> Vec<BrokerId> {
    ids.iter().copied().map(BrokerId).collect()
}

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Runs a decision against `image`, applies its records (each must apply)
/// and checks the image invariants; returns the response.
#[track_caller]
fn decide<R>(
    image: &mut MetadataImage,
    decision: impl FnOnce(&MetadataImage) -> ControllerResult<R>,
) -> R {
    let result = decision(image);
    let offset_before = image.metadata_offset();
    for record in &result.records {
        assert_eq!(image.apply(record), ApplyOutcome::Applied, "{record:?}");
    }
    assert_eq!(
        image.metadata_offset(),
        offset_before + result.records.len() as u64
    );
    assert_eq!(image.invariant_violations(), Vec::<String>::new());
    result.response
}

/// A registration of broker `id` with its directory `dir-<id>` and fsynced
/// logs.
fn reg(id: u64, address: &str, rack: Option<&str>) -> BrokerRegistrationRequest {
    BrokerRegistrationRequest {
        id: b(id),
        address: address.to_owned(),
        rack: rack.map(str::to_owned),
        directory_id: Some(format!("dir-{id}")),
        log_fsynced: true,
        kafka_address: None,
    }
}

/// Registers `request` and, once it caught up, unfences it.
#[track_caller]
fn join(image: &mut MetadataImage, request: BrokerRegistrationRequest) -> RegisterBrokerResponse {
    let id = request.id;
    let response = decide(image, |img| register_broker(img, request));
    decide(image, |img| {
        unfence_broker(img, id, response.broker_epoch).unwrap()
    });
    response
}

/// An image with brokers 1..=n registered and caught up (epochs 1..=n), no
/// topics.
fn cluster(n: u64) -> MetadataImage {
    let mut image = MetadataImage::new("test-cluster");
    for id in 1..=n {
        join(&mut image, reg(id, &format!("node{id}:9092"), None));
    }
    image
}

#[track_caller]
fn create(
    image: &mut MetadataImage,
    name: &str,
    partitions: u32,
    rf: u32,
    config: &[(&str, &str)],
) {
    let config = pairs(config);
    decide(image, |img| {
        create_topic(img, name, partitions, rf, &config).unwrap()
    });
}

#[track_caller]
fn fence(image: &mut MetadataImage, id: u64) -> FenceBrokerResponse {
    decide(image, |img| fence_broker(img, b(id)).unwrap())
}

#[track_caller]
fn unfence(image: &mut MetadataImage, id: u64) -> UnfenceBrokerResponse {
    let epoch = image.broker(b(id)).unwrap().broker_epoch;
    decide(image, |img| unfence_broker(img, b(id), epoch).unwrap())
}

fn partition(image: &MetadataImage, topic: &str, index: u32) -> PartitionImage {
    image.partition(topic, index).unwrap().clone()
}

fn state(
    index: u32,
    replicas: &[u64],
    leader: Option<u64>,
    isr: &[u64],
    leader_epoch: u32,
    partition_epoch: u32,
) -> PartitionImage {
    PartitionImage {
        partition: index,
        replicas: bs(replicas),
        isr: bs(isr),
        elr: Vec::new(),
        leader: leader.map(BrokerId),
        leader_epoch,
        partition_epoch,
    }
}

fn alter_request(
    image: &MetadataImage,
    topic: &str,
    index: u32,
    broker: u64,
    new_isr: &[u64],
) -> AlterPartitionRequest {
    let p = image.partition(topic, index).unwrap();
    AlterPartitionRequest {
        topic: topic.to_owned(),
        topic_id: image.topic(topic).unwrap().id,
        partition: index,
        broker_id: b(broker),
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: bs(new_isr),
    }
}

#[track_caller]
fn set_isr(image: &mut MetadataImage, topic: &str, index: u32, new_isr: &[u64]) {
    let leader = image.partition(topic, index).unwrap().leader.unwrap();
    let request = alter_request(image, topic, index, leader.0, new_isr);
    decide(image, |img| alter_partition(img, request).unwrap());
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

// ---------------------------------------------------------------- register

#[test]
fn register_broker_gives_increasing_unique_epochs() {
    let mut image = MetadataImage::new("c");
    let first = decide(&mut image, |img| register_broker(img, reg(5, "a:1", None)));
    let second = decide(&mut image, |img| {
        register_broker(img, reg(6, "b:1", Some("r1")))
    });
    assert_eq!(first.broker_epoch, 1);
    assert_eq!(second.broker_epoch, 2);
    assert!(first.changed.is_empty());
    let broker = image.broker(b(6)).unwrap();
    assert_eq!(broker.rack.as_deref(), Some("r1"));
    // KIP-631: fenced, catching up, until its heartbeats show it applied
    // the log up to its registration.
    assert!(broker.fenced && broker.catching_up, "{broker:?}");
    assert_eq!(broker.state(), "catching-up");
    assert_eq!(broker.registered_offset, image.metadata_offset());
    assert_eq!(broker.directory_id.as_deref(), Some("dir-6"));
    decide(&mut image, |img| unfence_broker(img, b(6), 2).unwrap());
    assert_eq!(image.broker(b(6)).unwrap().state(), "live");
    // Re-registration: a new epoch, the same id.
    let third = decide(&mut image, |img| register_broker(img, reg(5, "a:2", None)));
    assert_eq!(third.broker_epoch, 3);
    assert_eq!(image.broker(b(5)).unwrap().address, "a:2");
    assert_eq!(image.brokers().len(), 2);
}

#[test]
fn register_broker_record_carries_the_request() {
    let image = MetadataImage::new("c");
    let result = register_broker(&image, reg(1, "h:9092", Some("rack-a")));
    assert_eq!(
        result.records,
        vec![Record::RegisterBroker {
            id: b(1),
            address: "h:9092".to_owned(),
            rack: Some("rack-a".to_owned()),
            broker_epoch: 1,
            directory_id: Some("dir-1".to_owned()),
            catching_up: true,
            kafka_address: None,
        }]
    );
}

#[test]
fn re_registering_a_live_leader_with_intact_storage_moves_only_leadership() {
    let mut image = cluster(3);
    create(&mut image, "t", 3, 3, &[]);
    let response = decide(&mut image, |img| {
        register_broker(img, reg(1, "node1:9093", None))
    });
    assert_eq!(response.broker_epoch, 4);
    assert!(!response.storage_replaced);
    assert_eq!(response.changed, vec![tp("t", 0)]);
    // Partition 0 was led by 1: the next ISR member in replica order leads;
    // 1 keeps its place (its fsynced log holds all it acknowledged).
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2, 3], Some(2), &[1, 2, 3], 1, 1)
    );
    assert_eq!(
        partition(&image, "t", 1),
        state(1, &[2, 3, 1], Some(2), &[2, 3, 1], 0, 0)
    );
    // The registration is the last record, and the new incarnation is not
    // live (it leads nothing) until it caught up.
    assert!(!image.is_live(b(1)));
    assert_eq!(image.broker(b(1)).unwrap().state(), "catching-up");
}

#[test]
fn re_registering_with_unflushed_logs_leaves_the_isrs() {
    let mut image = cluster(3);
    create(&mut image, "t", 3, 3, &[]);
    let request = BrokerRegistrationRequest {
        log_fsynced: false,
        kafka_address: None,
        ..reg(1, "node1:9093", None)
    };
    let response = decide(&mut image, |img| register_broker(img, request));
    assert_eq!(response.changed, vec![tp("t", 0), tp("t", 1), tp("t", 2)]);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2, 3], Some(2), &[2, 3], 1, 1)
    );
    assert_eq!(
        partition(&image, "t", 2),
        state(2, &[3, 1, 2], Some(3), &[3, 2], 0, 1)
    );
}

#[test]
fn re_registering_the_sole_replica_waits_offline_then_leads_under_a_new_epoch() {
    let mut image = cluster(2);
    create(&mut image, "solo", 1, 1, &[]);
    let leader = partition(&image, "solo", 0).leader.unwrap();
    let result = register_broker(&image, reg(leader.0, "again:1", None));
    assert!(matches!(
        result.records.last(),
        Some(Record::RegisterBroker { .. })
    ));
    let epoch = decide(&mut image, |_| result).broker_epoch;
    assert_eq!(
        partition(&image, "solo", 0),
        state(0, &[leader.0], None, &[leader.0], 1, 1)
    );
    let elected = decide(&mut image, |img| {
        unfence_broker(img, leader, epoch).unwrap()
    });
    assert_eq!(elected.elected, vec![tp("solo", 0)]);
    assert_eq!(
        partition(&image, "solo", 0),
        state(0, &[leader.0], Some(leader.0), &[leader.0], 2, 2)
    );
}

#[test]
fn re_registering_a_fenced_broker_restores_its_offline_partitions_once_caught_up() {
    let mut image = cluster(2);
    create(&mut image, "solo", 1, 1, &[]);
    let leader = partition(&image, "solo", 0).leader.unwrap();
    fence(&mut image, leader.0);
    assert!(partition(&image, "solo", 0).is_offline());
    let response = decide(&mut image, |img| {
        register_broker(img, reg(leader.0, "again:1", None))
    });
    assert!(response.changed.is_empty());
    assert!(partition(&image, "solo", 0).is_offline());
    decide(&mut image, |img| {
        unfence_broker(img, leader, response.broker_epoch).unwrap()
    });
    assert_eq!(
        partition(&image, "solo", 0),
        state(0, &[leader.0], Some(leader.0), &[leader.0], 2, 2)
    );
}

#[test]
fn a_broker_that_dies_while_catching_up_gives_up_its_isr_places() {
    let mut image = cluster(3);
    create(&mut image, "t", 1, 3, &[]);
    decide(&mut image, |img| {
        register_broker(img, reg(3, "node3:1", None))
    });
    assert_eq!(partition(&image, "t", 0).isr, bs(&[1, 2, 3]));
    fence(&mut image, 3);
    assert_eq!(partition(&image, "t", 0).isr, bs(&[1, 2]));
    assert_eq!(image.broker(b(3)).unwrap().state(), "fenced");
}

#[test]
fn a_replaced_disk_is_never_elected_over_the_copies_that_hold_the_data() {
    // The last ISR member comes back with a new, empty directory: it leaves
    // the ISR (which empties) and the partition stays offline rather than
    // electing it; unfencing it elects nothing.
    let mut image = cluster(3);
    create(&mut image, "t", 1, 3, &[("min.insync.replicas", "2")]);
    fence(&mut image, 1);
    fence(&mut image, 2);
    fence(&mut image, 3);
    let p = partition(&image, "t", 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (None, bs(&[3]), bs(&[2]))
    );
    let wiped = BrokerRegistrationRequest {
        directory_id: Some("new-disk".to_owned()),
        ..reg(3, "node3:1", None)
    };
    let response = join(&mut image, wiped);
    assert!(response.storage_replaced);
    let p = partition(&image, "t", 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (None, vec![], bs(&[2]))
    );
    // The ELR member comes back: it leads, alone, under a new epoch.
    join(&mut image, reg(2, "node2:1", None));
    let p = partition(&image, "t", 0);
    assert_eq!((p.leader, p.isr.clone()), (Some(b(2)), bs(&[2])));
}

/// Every order of `items`.
fn permutations(items: &[u64]) -> Vec<Vec<u64>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for (i, first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, *first);
            out.push(tail);
        }
    }
    out
}

#[test]
fn whole_cluster_restarts_with_one_disk_replaced_never_elect_the_empty_replica() {
    // The reproduction, on the decisions alone: RF 3, min.insync 2,
    // every node stops (a power loss: nobody fenced; or graceful stops in
    // order), one node's directory is replaced, and the nodes come back in
    // every order, with fsynced logs or not. Whatever the order, no
    // partition is ever led by the replaced replica, and once every node is
    // back every partition is led by a replica with intact storage.
    for graceful in [false, true] {
        for fsynced in [true, false] {
            for wiped in 1..=3 {
                for order in permutations(&[1, 2, 3]) {
                    let case = format!(
                        "graceful={graceful} fsynced={fsynced} wiped={wiped} order={order:?}"
                    );
                    let mut image = cluster(3);
                    create(&mut image, "t", 3, 3, &[("min.insync.replicas", "2")]);
                    if graceful {
                        for id in 1..=3 {
                            decide(&mut image, |img| shut_down_broker(img, b(id)).unwrap());
                            fence(&mut image, id);
                        }
                    }
                    let mut epochs = Vec::new();
                    for id in &order {
                        let request = BrokerRegistrationRequest {
                            directory_id: Some(if *id == wiped {
                                "replaced".to_owned()
                            } else {
                                format!("dir-{id}")
                            }),
                            log_fsynced: fsynced,
                            kafka_address: None,
                            ..reg(*id, &format!("node{id}:1"), None)
                        };
                        let r = decide(&mut image, |img| register_broker(img, request));
                        epochs.push((*id, r.broker_epoch));
                        // Until it re-registers, the image names the old
                        // incarnation, which held the data; from then on the
                        // replaced replica is neither leader nor eligible.
                        if epochs.iter().any(|(e, _)| *e == wiped) {
                            for (_, p) in image.partitions() {
                                assert_ne!(p.leader, Some(b(wiped)), "{case}: {p:?}");
                                assert!(!p.is_eligible(b(wiped)), "{case}: {p:?}");
                            }
                        }
                    }
                    for (id, epoch) in epochs {
                        decide(&mut image, |img| unfence_broker(img, b(id), epoch).unwrap());
                        for (_, p) in image.partitions() {
                            assert_ne!(p.leader, Some(b(wiped)), "{case}: {p:?}");
                            assert!(!p.is_eligible(b(wiped)), "{case}: {p:?}");
                        }
                    }
                    for (_, p) in image.partitions() {
                        assert!(p.leader.is_some(), "{case}: offline {p:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn elr_follows_the_isr_below_min_insync() {
    let mut image = cluster(3);
    create(&mut image, "t", 1, 3, &[("min.insync.replicas", "2")]);
    fence(&mut image, 3);
    // ISR [1, 2] has min.insync members: acks=all can go on without 3.
    assert!(partition(&image, "t", 0).elr.is_empty());
    fence(&mut image, 2);
    // ISR [1] is below: nothing acks=all is acknowledged without 2 now.
    let p = partition(&image, "t", 0);
    assert_eq!((p.isr.clone(), p.elr.clone()), (bs(&[1]), bs(&[2])));
    unfence(&mut image, 3);
    // 3 rejoining the ISR brings it back to min.insync: the ELR empties.
    set_isr(&mut image, "t", 0, &[1, 3]);
    assert!(partition(&image, "t", 0).elr.is_empty());
}

// ---------------------------------------------------------------- fence

#[test]
fn fencing_a_leader_elects_the_next_isr_member_and_shrinks_the_isr() {
    let mut image = cluster(3);
    create(&mut image, "t", 3, 3, &[]);
    let result = fence_broker(&image, b(1)).unwrap();
    assert_eq!(
        result.records.first(),
        Some(&Record::FenceBroker {
            id: b(1),
            broker_epoch: 1
        })
    );
    assert_eq!(result.records.len(), 4);
    let response = decide(&mut image, |_| result);
    assert_eq!(response.changed, vec![tp("t", 0), tp("t", 1), tp("t", 2)]);
    assert!(response.offline.is_empty());
    assert!(image.broker(b(1)).unwrap().fenced);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2, 3], Some(2), &[2, 3], 1, 1)
    );
    assert_eq!(
        partition(&image, "t", 1),
        state(1, &[2, 3, 1], Some(2), &[2, 3], 0, 1)
    );
    assert_eq!(
        partition(&image, "t", 2),
        state(2, &[3, 1, 2], Some(3), &[3, 2], 0, 1)
    );
    assert!(image.partitions_led_by(b(1)).is_empty());
    assert!(image.partitions_in_isr_of(b(1)).is_empty());
}

#[test]
fn a_broker_that_cannot_write_loses_leadership_and_isr_membership_but_not_the_last_copy() {
    let mut image = cluster(3);
    create(&mut image, "t", 2, 3, &[]);
    set_isr(&mut image, "t", 1, &[2]);
    let failed = vec![
        ("t".to_owned(), 0),
        ("t".to_owned(), 1),
        ("gone".to_owned(), 0),
    ];
    let moved = decide(&mut image, |img| {
        drop_failed_replicas(img, b(1), &failed).unwrap()
    });
    assert_eq!(moved, vec![tp("t", 0)]);
    // t-0: led by 1 → 2 takes over, 1 leaves the ISR.
    let p0 = partition(&image, "t", 0);
    assert_eq!((p0.leader, p0.isr.clone()), (Some(b(2)), bs(&[2, 3])));
    assert_eq!(p0.leader_epoch, 1);
    // t-1: 1 is not in the ISR: nothing to do. Reporting again changes nothing.
    let again = drop_failed_replicas(&image, b(1), &failed).unwrap();
    assert!(again.records.is_empty());
    // The last in-sync copy stays where it is.
    set_isr(&mut image, "t", 0, &[2]);
    let last = drop_failed_replicas(&image, b(2), &[("t".to_owned(), 0)]).unwrap();
    assert!(last.records.is_empty());
}

#[test]
fn a_stopping_broker_hands_over_every_leadership_it_can() {
    let mut image = cluster(3);
    create(&mut image, "t", 3, 3, &[]);
    create(&mut image, "solo", 1, 1, &[]);
    let moved = decide(&mut image, |img| shut_down_broker(img, b(1)).unwrap());
    // Every t partition: 1 out of the ISR, a new leader where it led.
    assert_eq!(moved, vec![tp("t", 0), tp("t", 1), tp("t", 2)]);
    for p in 0..3 {
        let state = partition(&image, "t", p);
        assert_ne!(state.leader, Some(b(1)));
        assert!(!state.isr.contains(&b(1)), "{state:?}");
    }
    // A single-replica partition stays: its only copy is on 1.
    let solo = partition(&image, "solo", 0);
    assert!(solo.isr.contains(&b(1)) || solo.leader != Some(b(1)));
    assert!(shut_down_broker(&image, b(1)).unwrap().records.is_empty());
}

#[test]
fn fencing_prefers_replica_order_over_isr_order() {
    let mut image = cluster(3);
    create(&mut image, "t", 1, 3, &[]);
    // The ISR lists 3 before 2; replica order says 2 comes first.
    set_isr(&mut image, "t", 0, &[1, 3, 2]);
    fence(&mut image, 1);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2, 3], Some(2), &[3, 2], 1, 2)
    );
}

#[test]
fn fencing_skips_fenced_isr_members() {
    let mut image = cluster(3);
    create(&mut image, "t", 1, 3, &[]);
    fence(&mut image, 2);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2, 3], Some(1), &[1, 3], 0, 1)
    );
    fence(&mut image, 1);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2, 3], Some(3), &[3], 1, 2)
    );
}

#[test]
fn fencing_the_last_isr_member_takes_the_partition_offline() {
    let mut image = cluster(2);
    create(&mut image, "t", 1, 2, &[]);
    fence(&mut image, 1);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2], Some(2), &[2], 1, 1)
    );
    let response = fence(&mut image, 2);
    assert_eq!(response.offline, vec![tp("t", 0)]);
    // The ISR keeps its last member so it can lead cleanly when it returns.
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2], None, &[2], 2, 2)
    );
    assert_eq!(image.offline_partitions(), vec![tp("t", 0)]);
}

#[test]
fn fencing_elects_an_out_of_sync_replica_when_unclean_election_is_enabled() {
    let mut image = cluster(2);
    create(
        &mut image,
        "t",
        1,
        2,
        &[("unclean.leader.election.enable", "true")],
    );
    set_isr(&mut image, "t", 0, &[1]);
    let response = fence(&mut image, 1);
    assert!(response.offline.is_empty());
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2], Some(2), &[2], 1, 2)
    );
}

#[test]
fn fencing_without_unclean_election_leaves_an_out_of_sync_replica_alone() {
    let mut image = cluster(2);
    create(&mut image, "t", 1, 2, &[]);
    set_isr(&mut image, "t", 0, &[1]);
    let response = fence(&mut image, 1);
    assert_eq!(response.offline, vec![tp("t", 0)]);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2], None, &[1], 1, 2)
    );
}

#[test]
fn fencing_an_unknown_broker_is_refused_and_a_fenced_one_is_a_no_op() {
    let mut image = cluster(1);
    let error = fence_broker(&image, b(9)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BrokerNotAvailable);
    assert_eq!(error.to_string(), "broker 9 is not registered");
    fence(&mut image, 1);
    let again = fence_broker(&image, b(1)).unwrap();
    assert!(again.records.is_empty());
}

// ---------------------------------------------------------------- unfence

#[test]
fn unfencing_the_last_isr_member_restores_the_offline_partition() {
    let mut image = cluster(2);
    create(&mut image, "t", 1, 2, &[]);
    fence(&mut image, 1);
    fence(&mut image, 2);
    // Broker 1 is not in the ISR: it may not lead (unclean election is off).
    let response = unfence(&mut image, 1);
    assert!(response.elected.is_empty());
    assert!(partition(&image, "t", 0).is_offline());
    let response = unfence(&mut image, 2);
    assert_eq!(response.elected, vec![tp("t", 0)]);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2], Some(2), &[2], 3, 3)
    );
    assert!(image.offline_partitions().is_empty());
}

#[test]
fn unfencing_a_replica_of_an_unclean_topic_elects_it() {
    let mut image = cluster(2);
    create(
        &mut image,
        "t",
        1,
        2,
        &[("unclean.leader.election.enable", "true")],
    );
    fence(&mut image, 1);
    fence(&mut image, 2);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2], None, &[2], 2, 2)
    );
    let response = unfence(&mut image, 1);
    assert_eq!(response.elected, vec![tp("t", 0)]);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2], Some(1), &[1], 3, 3)
    );
}

#[test]
fn unfence_refuses_unknown_brokers_and_stale_epochs() {
    let mut image = cluster(1);
    fence(&mut image, 1);
    let error = unfence_broker(&image, b(2), 1).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BrokerNotAvailable);
    let error = unfence_broker(&image, b(1), 0).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StaleBrokerEpoch);
    assert_eq!(
        error,
        ControllerError::StaleBrokerEpoch {
            broker: b(1),
            request_epoch: 0,
            current_epoch: 1
        }
    );
    assert!(error.to_string().contains("epoch 0 of broker 1 is stale"));
}

#[test]
fn unfencing_an_unfenced_broker_writes_nothing() {
    let image = cluster(1);
    let result = unfence_broker(&image, b(1), 1).unwrap();
    assert!(result.records.is_empty());
}

// ---------------------------------------------------------------- create

#[test]
fn placement_spreads_leaders_and_replicas_evenly() {
    let mut image = cluster(3);
    let config = pairs(&[]);
    let response = decide(&mut image, |img| {
        create_topic(img, "t", 6, 3, &config).unwrap()
    });
    assert_eq!(
        response.assignments,
        vec![
            bs(&[1, 2, 3]),
            bs(&[2, 3, 1]),
            bs(&[3, 1, 2]),
            bs(&[1, 2, 3]),
            bs(&[2, 3, 1]),
            bs(&[3, 1, 2]),
        ]
    );
    for id in 1..=3 {
        assert_eq!(image.partitions_led_by(b(id)).len(), 2, "broker {id}");
        assert_eq!(
            image.partitions_replicated_on(b(id)).len(),
            6,
            "broker {id}"
        );
    }
    let p = partition(&image, "t", 4);
    assert_eq!(p, state(4, &[2, 3, 1], Some(2), &[2, 3, 1], 0, 0));
}

#[test]
fn placement_continues_the_rotation_across_topics() {
    let mut image = cluster(3);
    for name in ["a", "b", "c", "d"] {
        create(&mut image, name, 1, 1, &[]);
    }
    let leaders: Vec<BrokerId> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| partition(&image, name, 0).leader.unwrap())
        .collect();
    assert_eq!(leaders, bs(&[1, 2, 3, 1]));
}

#[test]
fn placement_uses_only_unfenced_brokers() {
    let mut image = cluster(3);
    fence(&mut image, 2);
    let config = pairs(&[]);
    let response = decide(&mut image, |img| {
        create_topic(img, "t", 4, 2, &config).unwrap()
    });
    assert!(response
        .assignments
        .iter()
        .flatten()
        .all(|broker| *broker != b(2)));
    let error = create_topic(&image, "u", 1, 3, &config).unwrap_err();
    assert_eq!(
        error,
        ControllerError::ReplicationFactorTooLarge {
            requested: 3,
            live_brokers: 2
        }
    );
    assert_eq!(
        error.to_string(),
        "replication factor 3 is larger than the 2 live brokers"
    );
}

#[test]
fn placement_puts_replicas_in_different_racks() {
    let mut image = MetadataImage::new("c");
    for (id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b")] {
        join(&mut image, reg(id, &format!("n{id}:1"), Some(rack)));
    }
    let config = pairs(&[]);
    let response = decide(&mut image, |img| {
        create_topic(img, "t", 4, 2, &config).unwrap()
    });
    assert_eq!(
        response.assignments,
        vec![bs(&[1, 3]), bs(&[3, 2]), bs(&[2, 4]), bs(&[4, 1])]
    );
    for replicas in &response.assignments {
        let racks: Vec<_> = replicas
            .iter()
            .map(|id| image.broker(*id).unwrap().rack.clone())
            .collect();
        assert_ne!(racks[0], racks[1]);
    }
}

#[test]
fn create_topic_stores_the_parsed_config_and_a_deterministic_id() {
    let image = cluster(3);
    let config = pairs(&[("min.insync.replicas", "2"), ("cleanup.policy", "compact")]);
    let first = create_topic(&image, "orders", 3, 3, &config).unwrap();
    let again = create_topic(&image, "orders", 3, 3, &config).unwrap();
    assert_eq!(first, again);
    let response = &first.response;
    assert!(!response.topic_id.is_zero());
    assert_eq!(response.config.min_insync_replicas, 2);
    assert_eq!(
        response.config.cleanup_policy,
        crate::CleanupPolicy::Compact
    );
    assert_eq!(
        first.records,
        vec![Record::CreateTopic {
            topic_id: response.topic_id,
            name: "orders".to_owned(),
            config: response.config.clone(),
            assignments: response.assignments.clone(),
        }]
    );
}

#[test]
fn a_re_created_topic_gets_a_new_id() {
    let mut image = cluster(1);
    create(&mut image, "t", 1, 1, &[]);
    let first_id = image.topic("t").unwrap().id;
    decide(&mut image, |img| delete_topic(img, "t").unwrap());
    create(&mut image, "t", 1, 1, &[]);
    assert_ne!(image.topic("t").unwrap().id, first_id);
}

#[test]
fn create_topic_refuses_bad_names() {
    let mut image = cluster(1);
    create(&mut image, "metrics.cpu", 1, 1, &[]);
    let long = "x".repeat(250);
    let cases: Vec<(&str, TopicNameProblem)> = vec![
        ("", TopicNameProblem::Empty),
        (".", TopicNameProblem::DotOrDotDot),
        ("..", TopicNameProblem::DotOrDotDot),
        (
            long.as_str(),
            TopicNameProblem::TooLong {
                length: 250,
                max: 249,
            },
        ),
        ("a b", TopicNameProblem::IllegalCharacter { character: ' ' }),
        ("a/b", TopicNameProblem::IllegalCharacter { character: '/' }),
        (
            "ünïcode",
            TopicNameProblem::IllegalCharacter { character: 'ü' },
        ),
        (
            "metrics_cpu",
            TopicNameProblem::CollidesWith {
                existing: "metrics.cpu".to_owned(),
            },
        ),
    ];
    for (name, problem) in cases {
        let error = create_topic(&image, name, 1, 1, &[]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidTopic, "{name}");
        assert_eq!(
            error,
            ControllerError::InvalidTopicName {
                name: name.to_owned(),
                problem
            }
        );
    }
    // The limits themselves are fine.
    for name in ["x".repeat(249), "A-z_0.9".to_owned(), "...".to_owned()] {
        assert!(create_topic(&image, &name, 1, 1, &[]).is_ok(), "{name}");
    }
}

#[test]
fn create_topic_refuses_a_taken_name() {
    let mut image = cluster(1);
    create(&mut image, "t", 1, 1, &[]);
    let error = create_topic(&image, "t", 1, 1, &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TopicAlreadyExists);
    assert_eq!(error.to_string(), "topic 't' already exists");
}

#[test]
fn create_topic_refuses_bad_partition_counts() {
    let image = cluster(1);
    for partitions in [0, MAX_PARTITIONS_PER_TOPIC + 1, u32::MAX] {
        let error = create_topic(&image, "t", partitions, 1, &[]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidPartitions);
        assert_eq!(
            error.to_string(),
            format!("the partition count must be between 1 and 10000, got {partitions}")
        );
    }
    assert!(create_topic(&image, "t", MAX_PARTITIONS_PER_TOPIC, 1, &[]).is_ok());
}

#[test]
fn create_topic_refuses_bad_replication_factors() {
    let image = cluster(2);
    let error = create_topic(&image, "t", 1, 0, &[]).unwrap_err();
    assert_eq!(error, ControllerError::ReplicationFactorZero);
    assert_eq!(error.kind(), ErrorKind::InvalidReplicationFactor);
    let error = create_topic(&image, "t", 1, 3, &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidReplicationFactor);
    let empty = MetadataImage::new("c");
    let error = create_topic(&empty, "t", 1, 1, &[]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "replication factor 1 is larger than the 0 live brokers"
    );
}

#[test]
fn create_topic_refuses_bad_configs() {
    let image = cluster(2);
    let cases = [
        pairs(&[("retention.ms", "soon")]),
        pairs(&[("no.such.key", "1")]),
        pairs(&[("min.insync.replicas", "3")]),
        pairs(&[("segment.bytes", "1"), ("segment.bytes", "2")]),
    ];
    for config in cases {
        let error = create_topic(&image, "t", 1, 2, &config).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidConfig, "{config:?}");
        assert!(
            error
                .to_string()
                .starts_with("invalid config for topic 't': "),
            "{error}"
        );
        assert!(std::error::Error::source(&error).is_some());
    }
    let error =
        create_topic(&image, "t", 1, 2, &pairs(&[("min.insync.replicas", "3")])).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("larger than the replication factor 2"),
        "{error}"
    );
}

// ---------------------------------------------------------------- delete

#[test]
fn delete_topic_removes_it() {
    let mut image = cluster(1);
    create(&mut image, "t", 2, 1, &[]);
    let id = image.topic("t").unwrap().id;
    let response = decide(&mut image, |img| delete_topic(img, "t").unwrap());
    assert_eq!(response.topic_id, id);
    assert!(image.topic("t").is_none());
    assert_eq!(image.partition_count(), 0);
}

#[test]
fn delete_topic_refuses_an_unknown_topic() {
    let image = cluster(1);
    let error = delete_topic(&image, "ghost").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownTopicOrPartition);
    assert_eq!(error.to_string(), "topic 'ghost' does not exist");
}

// ---------------------------------------------------------------- alter config

#[test]
fn alter_topic_config_merges_over_the_current_config() {
    let mut image = cluster(3);
    create(&mut image, "t", 1, 3, &[("retention.ms", "1000")]);
    let change = pairs(&[("min.insync.replicas", "2")]);
    let response = decide(&mut image, |img| {
        alter_topic_config(img, "t", &change).unwrap()
    });
    let config = &image.topic("t").unwrap().config;
    assert_eq!(*config, response.config);
    assert_eq!(config.min_insync_replicas, 2);
    assert_eq!(config.retention_ms, Some(1000));
    assert!(response.elected.is_empty());
    // Setting what is already set writes nothing.
    let result = alter_topic_config(&image, "t", &change).unwrap();
    assert!(result.records.is_empty());
}

#[test]
fn alter_topic_config_refuses_unknown_topics_and_bad_configs() {
    let mut image = cluster(2);
    create(&mut image, "t", 1, 2, &[]);
    let error = alter_topic_config(&image, "ghost", &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownTopicOrPartition);
    for config in [
        pairs(&[("cleanup.policy", "shred")]),
        pairs(&[("min.insync.replicas", "3")]),
        pairs(&[("retention.msec", "1")]),
    ] {
        let error = alter_topic_config(&image, "t", &config).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidConfig, "{config:?}");
    }
}

#[test]
fn enabling_unclean_election_elects_offline_partitions() {
    let mut image = cluster(2);
    create(&mut image, "t", 1, 2, &[]);
    set_isr(&mut image, "t", 0, &[1]);
    fence(&mut image, 1);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2], None, &[1], 1, 2)
    );
    let change = pairs(&[("unclean.leader.election.enable", "true")]);
    let response = decide(&mut image, |img| {
        alter_topic_config(img, "t", &change).unwrap()
    });
    assert_eq!(response.elected, vec![tp("t", 0)]);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2], Some(2), &[2], 2, 3)
    );
}

// ---------------------------------------------------------------- alter partition

#[test]
fn alter_partition_shrinks_and_expands_the_isr() {
    let mut image = cluster(3);
    create(&mut image, "t", 1, 3, &[]);
    let request = alter_request(&image, "t", 0, 1, &[1, 2]);
    let result = alter_partition(&image, request).unwrap();
    assert_eq!(
        result.response,
        state(0, &[1, 2, 3], Some(1), &[1, 2], 0, 1)
    );
    assert_eq!(result.records.len(), 1);
    let response = decide(&mut image, |_| result);
    assert_eq!(partition(&image, "t", 0), response);

    let request = alter_request(&image, "t", 0, 1, &[1, 2, 3]);
    decide(&mut image, |img| alter_partition(img, request).unwrap());
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2, 3], Some(1), &[1, 2, 3], 0, 2)
    );
}

#[test]
fn alter_partition_with_the_current_isr_writes_nothing() {
    let mut image = cluster(2);
    create(&mut image, "t", 1, 2, &[]);
    let request = alter_request(&image, "t", 0, 1, &[1, 2]);
    let result = alter_partition(&image, request).unwrap();
    assert!(result.records.is_empty());
    assert_eq!(result.response, partition(&image, "t", 0));
}

#[test]
fn alter_partition_refuses_unknown_topics_partitions_and_ids() {
    let mut image = cluster(2);
    create(&mut image, "t", 2, 2, &[]);
    let mut request = alter_request(&image, "t", 0, 1, &[1]);
    request.topic = "ghost".to_owned();
    let error = alter_partition(&image, request).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownTopicOrPartition);

    let mut request = alter_request(&image, "t", 0, 1, &[1]);
    request.partition = 2;
    let error = alter_partition(&image, request).unwrap_err();
    assert_eq!(
        error,
        ControllerError::UnknownPartition {
            topic: "t".to_owned(),
            partition: 2,
            partition_count: 2
        }
    );
    assert_eq!(error.kind(), ErrorKind::UnknownTopicOrPartition);

    let mut request = alter_request(&image, "t", 0, 1, &[1]);
    request.topic_id = TopicId::from_u128(42);
    let error = alter_partition(&image, request).unwrap_err();
    assert!(matches!(error, ControllerError::TopicIdMismatch { .. }));
    assert_eq!(error.kind(), ErrorKind::UnknownTopicOrPartition);
}

#[test]
fn alter_partition_refuses_a_requester_that_is_not_the_leader() {
    let mut image = cluster(2);
    create(&mut image, "t", 1, 2, &[]);
    let request = alter_request(&image, "t", 0, 2, &[2]);
    let error = alter_partition(&image, request).unwrap_err();
    assert_eq!(
        error,
        ControllerError::NotLeaderOrFollower {
            topic: "t".to_owned(),
            partition: 0,
            broker: b(2),
            leader: Some(b(1))
        }
    );
    assert_eq!(error.kind(), ErrorKind::NotLeaderOrFollower);
}

#[test]
fn alter_partition_refuses_a_stale_leader_epoch() {
    let mut image = cluster(3);
    create(&mut image, "t", 1, 3, &[]);
    // Broker 1 leads under epoch 0, is fenced, comes back as a follower, and
    // then sends the AlterPartition it prepared while it led.
    let stale = alter_request(&image, "t", 0, 1, &[1, 2]);
    fence(&mut image, 1);
    unfence(&mut image, 1);
    let error = alter_partition(&image, stale).unwrap_err();
    assert_eq!(
        error,
        ControllerError::FencedLeaderEpoch {
            topic: "t".to_owned(),
            partition: 0,
            request_epoch: 0,
            current_epoch: 1
        }
    );
    assert_eq!(error.kind(), ErrorKind::FencedLeaderEpoch);
}

#[test]
fn alter_partition_refuses_a_stale_partition_epoch() {
    let mut image = cluster(3);
    create(&mut image, "t", 1, 3, &[]);
    let first = alter_request(&image, "t", 0, 1, &[1, 2]);
    let second = alter_request(&image, "t", 0, 1, &[1, 3]);
    decide(&mut image, |img| alter_partition(img, first).unwrap());
    let error = alter_partition(&image, second).unwrap_err();
    assert_eq!(
        error,
        ControllerError::InvalidUpdateVersion {
            topic: "t".to_owned(),
            partition: 0,
            request_epoch: 0,
            current_epoch: 1
        }
    );
    assert_eq!(error.kind(), ErrorKind::InvalidUpdateVersion);
}

#[test]
fn alter_partition_refuses_ineligible_isrs() {
    let mut image = cluster(4);
    create(&mut image, "t", 1, 3, &[]);
    // Replicas [1, 2, 3]; broker 4 holds no replica.
    fence(&mut image, 3);
    let cases = [
        (vec![], IsrProblem::Empty),
        (vec![2], IsrProblem::MissingLeader { leader: b(1) }),
        (vec![1, 2, 1], IsrProblem::Duplicate { broker: b(1) }),
        (vec![1, 4], IsrProblem::NotAReplica { broker: b(4) }),
        (vec![1, 3], IsrProblem::Fenced { broker: b(3) }),
    ];
    for (new_isr, problem) in cases {
        let mut request = alter_request(&image, "t", 0, 1, &[]);
        request.new_isr = bs(&new_isr);
        let error = alter_partition(&image, request).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::IneligibleReplica, "{new_isr:?}");
        assert_eq!(
            error,
            ControllerError::IneligibleReplica {
                topic: "t".to_owned(),
                partition: 0,
                problem
            }
        );
    }
    let mut request = alter_request(&image, "t", 0, 1, &[]);
    request.new_isr = bs(&[1, 3]);
    let message = alter_partition(&image, request).unwrap_err().to_string();
    assert_eq!(message, "cannot set the ISR of t-0: broker 3 is fenced");
}

// ---------------------------------------------------------------- elections

#[test]
fn preferred_leaders_are_restored_once_back_in_the_isr() {
    let mut image = cluster(3);
    create(&mut image, "t", 3, 3, &[]);
    fence(&mut image, 1);
    unfence(&mut image, 1);
    // Broker 1 is back but not yet in sync: nothing to elect.
    let result = elect_preferred_leaders(&image);
    assert!(result.records.is_empty());
    assert_eq!(partition(&image, "t", 0).leader, Some(b(2)));
    // Its leader adds it back to the ISR once it has caught up.
    set_isr(&mut image, "t", 0, &[2, 3, 1]);
    let response = decide(&mut image, elect_preferred_leaders);
    assert_eq!(response.elected, vec![tp("t", 0)]);
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2, 3], Some(1), &[2, 3, 1], 2, 3)
    );
    for id in 1..=3 {
        assert_eq!(image.partitions_led_by(b(id)).len(), 1);
    }
    // Balanced: a second run has nothing to do.
    assert!(elect_preferred_leaders(&image).records.is_empty());
}

#[test]
fn elect_leader_moves_one_partition_to_its_preferred_replica() {
    let mut image = cluster(2);
    create(&mut image, "t", 2, 2, &[]);
    fence(&mut image, 1);
    unfence(&mut image, 1);
    set_isr(&mut image, "t", 0, &[2, 1]);
    let response = decide(&mut image, |img| elect_leader(img, "t", 0).unwrap());
    assert!(response.changed);
    assert_eq!(response.partition, partition(&image, "t", 0));
    assert_eq!(
        partition(&image, "t", 0),
        state(0, &[1, 2], Some(1), &[2, 1], 2, 3)
    );
    // Partition 1's preferred replica (2) already leads.
    let result = elect_leader(&image, "t", 1).unwrap();
    assert!(result.records.is_empty());
    assert!(!result.response.changed);
}

#[test]
fn elect_leader_refuses_when_the_preferred_replica_cannot_lead() {
    let mut image = cluster(2);
    create(&mut image, "t", 1, 2, &[]);
    fence(&mut image, 1);
    let error = elect_leader(&image, "t", 0).unwrap_err();
    assert_eq!(
        error,
        ControllerError::PreferredLeaderNotAvailable {
            topic: "t".to_owned(),
            partition: 0,
            problem: PreferredLeaderProblem::Fenced { broker: b(1) }
        }
    );
    assert_eq!(error.kind(), ErrorKind::PreferredLeaderNotAvailable);
    unfence(&mut image, 1);
    let error = elect_leader(&image, "t", 0).unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot move leadership of t-0 to its preferred replica: the preferred replica 1 is not in the ISR yet"
    );
    assert_eq!(
        elect_leader(&image, "t", 1).unwrap_err().kind(),
        ErrorKind::UnknownTopicOrPartition
    );
    assert_eq!(
        elect_leader(&image, "u", 0).unwrap_err().kind(),
        ErrorKind::UnknownTopicOrPartition
    );
}

// ---------------------------------------------------------------- whole story

/// A cluster's life through every decision, checking the image it leads to,
/// then replaying the same records on a second image: same image, same bytes.
#[test]
fn decisions_applied_give_the_expected_image_on_every_node() {
    let mut image = cluster(3);
    create(&mut image, "orders", 2, 3, &[("min.insync.replicas", "2")]);
    create(&mut image, "audit", 1, 1, &[]);
    // "audit" continues the rotation: 2 partitions exist, so it starts at 3.
    assert_eq!(partition(&image, "audit", 0).replicas, bs(&[3]));

    set_isr(&mut image, "orders", 1, &[2, 3]);
    fence(&mut image, 3);
    fence(&mut image, 2);
    unfence(&mut image, 3);
    let change = pairs(&[("retention.ms", "-1")]);
    decide(&mut image, |img| {
        alter_topic_config(img, "orders", &change).unwrap()
    });

    // 3 fenced: ISR [1, 2] (min.insync 2, no ELR); 2 fenced: ISR [1], and
    // 2 eligible (nothing acks=all was acknowledged without it since).
    assert_eq!(
        partition(&image, "orders", 0),
        PartitionImage {
            elr: bs(&[2]),
            ..state(0, &[1, 2, 3], Some(1), &[1], 0, 2)
        }
    );
    // Led by 2, ISR [2, 3]; 3 fenced: ISR [2], ELR [3]; 2 fenced: offline,
    // ISR [2]; 3 back: an ELR member, it leads alone, 2 eligible.
    assert_eq!(
        partition(&image, "orders", 1),
        PartitionImage {
            elr: bs(&[2]),
            ..state(1, &[2, 3, 1], Some(3), &[3], 2, 4)
        }
    );
    // audit's only replica, 3, was fenced (offline) and came back.
    assert_eq!(
        partition(&image, "audit", 0),
        state(0, &[3], Some(3), &[3], 2, 2)
    );
    assert_eq!(image.topic("orders").unwrap().config.retention_ms, None);
    assert_eq!(image.live_broker_ids(), bs(&[1, 3]));
    assert!(image.offline_partitions().is_empty());

    // Replay everything on a fresh node from a log built the same way.
    let mut log = Vec::new();
    let mut leader_view = MetadataImage::new("test-cluster");
    let mut record = |view: &mut MetadataImage, records: Vec<Record>| {
        for r in records {
            assert!(view.apply(&r).is_applied());
            log.push(r);
        }
    };
    for id in 1..=3 {
        let result = register_broker(&leader_view, reg(id, &format!("node{id}:9092"), None));
        record(&mut leader_view, result.records);
        let result = unfence_broker(&leader_view, b(id), id).unwrap();
        record(&mut leader_view, result.records);
    }
    let result = create_topic(
        &leader_view,
        "orders",
        2,
        3,
        &pairs(&[("min.insync.replicas", "2")]),
    )
    .unwrap();
    record(&mut leader_view, result.records);
    let result = create_topic(&leader_view, "audit", 1, 1, &[]).unwrap();
    record(&mut leader_view, result.records);
    let request = alter_request(&leader_view, "orders", 1, 2, &[2, 3]);
    let result = alter_partition(&leader_view, request).unwrap();
    record(&mut leader_view, result.records);
    for id in [3, 2] {
        let result = fence_broker(&leader_view, b(id)).unwrap();
        record(&mut leader_view, result.records);
    }
    let result = unfence_broker(&leader_view, b(3), 3).unwrap();
    record(&mut leader_view, result.records);
    let result = alter_topic_config(&leader_view, "orders", &change).unwrap();
    record(&mut leader_view, result.records);
    assert_eq!(leader_view, image);

    let mut follower = MetadataImage::new("test-cluster");
    for r in &log {
        assert!(follower.apply(r).is_applied());
    }
    assert_eq!(follower, image);
    assert_eq!(
        serde_json::to_vec(&follower).unwrap(),
        serde_json::to_vec(&image).unwrap()
    );
    // Through the wire format too.
    let wire = serde_json::to_vec(&log).unwrap();
    let mut from_wire = MetadataImage::new("test-cluster");
    for r in serde_json::from_slice::<Vec<Record>>(&wire).unwrap() {
        assert!(from_wire.apply(&r).is_applied());
    }
    assert_eq!(from_wire, image);
}

/// Two decisions made on the same image race; the second one's records no
/// longer fit once the first is applied, and are skipped, not misapplied.
#[test]
fn racing_decisions_are_caught_by_apply() {
    let mut image = cluster(3);
    create(&mut image, "t", 1, 3, &[]);
    let fence_one = fence_broker(&image, b(1)).unwrap();
    let shrink = alter_partition(&image, alter_request(&image, "t", 0, 1, &[1, 3])).unwrap();
    decide(&mut image, |_| fence_one);
    let before = image.partition("t", 0).cloned();
    for record in &shrink.records {
        assert!(matches!(image.apply(record), ApplyOutcome::Skipped(_)));
    }
    assert_eq!(image.partition("t", 0).cloned(), before);

    let first = register_broker(&image, reg(7, "x:1", None));
    let second = register_broker(&image, reg(8, "y:1", None));
    decide(&mut image, |_| first);
    assert!(second.records.iter().all(|r| !image.apply(r).is_applied()));
    assert!(image.broker(b(8)).is_none());
}

#[test]
fn a_reregistering_broker_never_keeps_leading_its_old_epoch() {
    // However the image came to name a fenced broker as a leader, its next
    // incarnation must not lead that partition in the same epoch.
    let mut image = cluster(3);
    create(&mut image, "t", 1, 3, &[]);
    let before = partition(&image, "t", 0);
    let leader = before.leader.unwrap();
    let epoch = image.broker(leader).unwrap().broker_epoch;
    let outcome = image.apply(&Record::FenceBroker {
        id: leader,
        broker_epoch: epoch,
    });
    if !outcome.is_applied() {
        // The image refuses the inconsistent state outright: nothing to guard.
        return;
    }
    let result = register_broker(&image, reg(leader.0, "again:9092", None));
    for record in &result.records {
        let _ = image.apply(record);
    }
    let after = partition(&image, "t", 0);
    assert!(
        after.leader != Some(leader) || after.leader_epoch > before.leader_epoch,
        "{after:?} after {before:?}"
    );
}

#[test]
fn producer_id_blocks_never_overlap_and_survive_replay() {
    let mut image = cluster(3);
    let epoch = |img: &MetadataImage, id| img.broker(b(id)).unwrap().broker_epoch;
    let mut blocks = Vec::new();
    for id in [1, 2, 1, 3] {
        let e = epoch(&image, id);
        blocks.push(decide(&mut image, |img| {
            allocate_producer_ids(img, b(id), e).unwrap()
        }));
    }
    for w in blocks.windows(2) {
        assert_eq!(w[0].first_id + w[0].count, w[1].first_id, "{blocks:?}");
    }
    assert_eq!(blocks[0].first_id, 0);
    assert_eq!(image.next_producer_id(), 4 * PRODUCER_ID_BLOCK_SIZE);
    // A stale incarnation or an unknown broker gets nothing.
    let stale = epoch(&image, 2) - 1;
    assert_eq!(
        allocate_producer_ids(&image, b(2), stale)
            .unwrap_err()
            .kind(),
        ErrorKind::StaleBrokerEpoch
    );
    assert!(allocate_producer_ids(&image, b(9), 1).is_err());
    // A record that does not start at the next free id is skipped on
    // replay: it could overlap a block already given out.
    let replayed = Record::AllocateProducerIds {
        broker_id: b(1),
        broker_epoch: epoch(&image, 1),
        first_id: 0,
        count: 1000,
    };
    assert!(matches!(image.apply(&replayed), ApplyOutcome::Skipped(_)));
    assert_eq!(image.next_producer_id(), 4 * PRODUCER_ID_BLOCK_SIZE);
    // The image's snapshot form keeps the counter.
    let json = serde_json::to_string(&image).unwrap();
    let back: MetadataImage = serde_json::from_str(&json).unwrap();
    assert_eq!(back.next_producer_id(), image.next_producer_id());
}

#[test]
fn create_partitions_adds_partitions_placed_like_new_ones_and_never_removes() {
    let mut image = cluster(3);
    create(&mut image, "t", 2, 2, &[]);
    let id = image.topic("t").unwrap().id;
    let added = decide(&mut image, |img| create_partitions(img, "t", 5).unwrap());
    assert_eq!(added.len(), 3);
    let topic = image.topic("t").unwrap();
    assert_eq!(topic.id, id, "the same topic");
    assert_eq!(topic.partition_count(), 5);
    for (p, replicas) in (2u32..).zip(&added) {
        let part = partition(&image, "t", p);
        assert_eq!(part.partition, p);
        assert_eq!(&part.replicas, replicas);
        assert_eq!(part.isr, part.replicas, "every replica starts in sync");
        assert_eq!(part.leader, replicas.first().copied());
        assert_eq!((part.leader_epoch, part.partition_epoch), (0, 0));
        assert_eq!(replicas.len(), 2, "the topic's replication factor");
    }
    // The old partitions are untouched.
    assert_eq!(partition(&image, "t", 0).replicas.len(), 2);
    // Not fewer, not the same, not past the limit, not a missing topic.
    for (total, kind) in [
        (5, ErrorKind::InvalidPartitions),
        (4, ErrorKind::InvalidPartitions),
        (MAX_PARTITIONS_PER_TOPIC + 1, ErrorKind::InvalidPartitions),
    ] {
        assert_eq!(
            create_partitions(&image, "t", total).unwrap_err().kind(),
            kind
        );
    }
    assert_eq!(
        create_partitions(&image, "t", 4).unwrap_err().to_string(),
        "topic 't' has 5 partitions; a new count must be larger, got 4"
    );
    assert_eq!(
        create_partitions(&image, "nope", 9).unwrap_err().kind(),
        ErrorKind::UnknownTopicOrPartition
    );
    // The offsets topic keeps its count (groups hash over it).
    create(&mut image, "__consumer_offsets", 2, 3, &[]);
    assert_eq!(
        create_partitions(&image, "__consumer_offsets", 4)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidRequest
    );
    // With one broker left, a replication factor of 2 cannot be placed.
    fence(&mut image, 2);
    fence(&mut image, 3);
    assert_eq!(
        create_partitions(&image, "t", 6).unwrap_err().kind(),
        ErrorKind::InvalidReplicationFactor
    );
}

#[test]
fn a_stale_or_malformed_create_partitions_record_is_skipped() {
    let mut image = cluster(2);
    create(&mut image, "t", 1, 2, &[]);
    let id = image.topic("t").unwrap().id;
    let stale = Record::CreatePartitions {
        name: "t".to_owned(),
        topic_id: TopicId::from_u128(42),
        assignments: vec![bs(&[1, 2])],
    };
    let wrong_rf = Record::CreatePartitions {
        name: "t".to_owned(),
        topic_id: id,
        assignments: vec![bs(&[1])],
    };
    let unknown_broker = Record::CreatePartitions {
        name: "t".to_owned(),
        topic_id: id,
        assignments: vec![bs(&[1, 9])],
    };
    for r in [stale, wrong_rf, unknown_broker] {
        assert!(matches!(image.apply(&r), ApplyOutcome::Skipped(_)), "{r:?}");
        assert_eq!(image.topic("t").unwrap().partition_count(), 1);
    }
}
