//! What a broker must do so its replicas match a metadata image: the pure
//! half of reconciling (`image, me, hosted → plan`). The replica manager
//! executes the plan: opens logs, switches roles, deletes removed replicas.
//!
//! ```text
//!   for each partition of the image with a replica on `me`:
//!     not hosted              → Open, then Lead / Follow
//!     hosted, same topic id   → Keep, then Lead / Follow
//!     hosted, other topic id  → Replace (a deleted topic re-created under
//!                               the same name: its old data is deleted)
//!   hosted but not in the image → Remove (stop, delete the data)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use rivulet_metadata::{BrokerId, MetadataImage, TopicConfig, TopicId};

/// A replica's key: topic name and partition index.
pub(crate) type Key = (String, u32);

/// What to do with a replica's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogStep {
    /// Hosted already, for this topic id.
    Keep,
    /// Not hosted: open (or create) its log.
    Open,
    /// Hosted for an older topic of the same name: stop it, delete its
    /// data, open a new log.
    Replace,
}

/// The role a replica takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// This broker leads it.
    Lead {
        /// The leader epoch it leads under.
        leader_epoch: u32,
        /// The partition epoch of this state.
        partition_epoch: u32,
        /// Every replica.
        replicas: Vec<u64>,
        /// The in-sync replicas.
        isr: Vec<u64>,
    },
    /// Another broker leads it (or nobody, while it is offline).
    Follow {
        /// The leader, if any.
        leader: Option<u64>,
        /// The leader epoch.
        leader_epoch: u32,
    },
}

/// One replica the image assigns to this broker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wanted {
    /// Which replica.
    pub key: Key,
    /// The topic's id.
    pub topic_id: TopicId,
    /// The topic's configs.
    pub config: TopicConfig,
    /// What to do with its log.
    pub log: LogStep,
    /// Its role.
    pub role: Role,
}

/// Everything to do for one image.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Plan {
    /// The replicas to host, in the image's order.
    pub wanted: Vec<Wanted>,
    /// Hosted replicas the image no longer assigns here.
    pub remove: Vec<Key>,
}

impl Plan {
    /// The keys of every wanted replica.
    pub fn wanted_keys(&self) -> BTreeSet<Key> {
        self.wanted.iter().map(|w| w.key.clone()).collect()
    }
}

/// The plan for broker `me`, hosting `hosted` (key → topic id), to match
/// `image`.
pub(crate) fn plan(image: &MetadataImage, me: BrokerId, hosted: &BTreeMap<Key, TopicId>) -> Plan {
    let mut wanted = Vec::new();
    for (topic, p) in image.partitions() {
        if !p.is_replica(me) {
            continue;
        }
        let key = (topic.name.clone(), p.partition);
        let log = match hosted.get(&key) {
            Some(id) if *id == topic.id => LogStep::Keep,
            Some(_) => LogStep::Replace,
            None => LogStep::Open,
        };
        let role = if p.leader == Some(me) {
            Role::Lead {
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                replicas: p.replicas.iter().map(|b| b.0).collect(),
                isr: p.isr.iter().map(|b| b.0).collect(),
            }
        } else {
            Role::Follow {
                leader: p.leader.map(|b| b.0),
                leader_epoch: p.leader_epoch,
            }
        };
        wanted.push(Wanted {
            key,
            topic_id: topic.id,
            config: topic.config.clone(),
            log,
            role,
        });
    }
    let keys: BTreeSet<&Key> = wanted.iter().map(|w| &w.key).collect();
    let remove = hosted
        .keys()
        .filter(|k| !keys.contains(k))
        .cloned()
        .collect();
    Plan { wanted, remove }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ImageBuilder;

    fn hosted_after(plan: &Plan, image: &MetadataImage) -> BTreeMap<Key, TopicId> {
        plan.wanted
            .iter()
            .map(|w| (w.key.clone(), image.topic(&w.key.0).unwrap().id))
            .collect()
    }

    #[test]
    fn a_broker_hosts_exactly_its_replicas_and_leads_where_the_image_says() {
        let mut b = ImageBuilder::new(3);
        b.create_topic("events", 3, 2);
        let image = b.image();
        for me in 1..=3u64 {
            let p = plan(&image, BrokerId(me), &BTreeMap::new());
            let expected: Vec<Key> = image
                .partitions()
                .filter(|(_, p)| p.is_replica(BrokerId(me)))
                .map(|(t, p)| (t.name.clone(), p.partition))
                .collect();
            assert_eq!(
                p.wanted.iter().map(|w| w.key.clone()).collect::<Vec<_>>(),
                expected
            );
            assert!(p.remove.is_empty());
            for w in &p.wanted {
                assert_eq!(w.log, LogStep::Open);
                let part = image.partition(&w.key.0, w.key.1).unwrap();
                match &w.role {
                    Role::Lead { isr, replicas, .. } => {
                        assert_eq!(part.leader, Some(BrokerId(me)));
                        assert_eq!(isr.len(), 2);
                        assert_eq!(replicas.len(), 2);
                    }
                    Role::Follow {
                        leader,
                        leader_epoch,
                    } => {
                        assert_eq!(*leader, part.leader.map(|l| l.0));
                        assert_ne!(*leader, Some(me));
                        assert_eq!(*leader_epoch, part.leader_epoch);
                    }
                }
            }
        }
    }

    #[test]
    fn hosted_replicas_are_kept_replaced_or_removed() {
        let mut b = ImageBuilder::new(1);
        b.create_topic("a", 2, 1);
        b.create_topic("b", 1, 1);
        let first = b.image();
        let me = BrokerId(1);
        let hosted = hosted_after(&plan(&first, me, &BTreeMap::new()), &first);
        assert_eq!(hosted.len(), 3);

        // Nothing changed: everything is kept.
        let again = plan(&first, me, &hosted);
        assert!(again.wanted.iter().all(|w| w.log == LogStep::Keep));
        assert!(again.remove.is_empty());

        // "a" re-created under the same name, "b" deleted.
        b.delete_topic("a");
        b.delete_topic("b");
        b.create_topic("a", 1, 1);
        let next = b.image();
        let p = plan(&next, me, &hosted);
        assert_eq!(p.wanted.len(), 1);
        assert_eq!(p.wanted[0].key, ("a".to_owned(), 0));
        assert_eq!(p.wanted[0].log, LogStep::Replace);
        assert_eq!(p.remove, [("a".to_owned(), 1), ("b".to_owned(), 0)]);
    }

    #[test]
    fn a_fenced_leader_leaves_followers_following_a_new_epoch() {
        let mut b = ImageBuilder::new(3);
        b.create_topic("t", 1, 3);
        let before = b.image();
        let leader = before.partition("t", 0).unwrap().leader.unwrap();
        b.fence(leader.0);
        let after = b.image();
        let part = after.partition("t", 0).unwrap();
        let new_leader = part.leader.unwrap();
        assert_ne!(new_leader, leader);
        let p = plan(&after, new_leader, &BTreeMap::new());
        match &p.wanted[0].role {
            Role::Lead {
                leader_epoch, isr, ..
            } => {
                assert!(*leader_epoch > before.partition("t", 0).unwrap().leader_epoch);
                assert!(!isr.contains(&leader.0));
            }
            other => panic!("the new leader does not lead: {other:?}"),
        }
        // The fenced broker still hosts its replica, following the new epoch.
        let p = plan(&after, leader, &BTreeMap::new());
        assert_eq!(
            p.wanted[0].role,
            Role::Follow {
                leader: Some(new_leader.0),
                leader_epoch: part.leader_epoch
            }
        );
    }
}
