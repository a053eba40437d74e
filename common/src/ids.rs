//! The ids every crate names: brokers and topic partitions, and the wire
//! form of a set of topic partitions.
//!
//! [`BrokerId`] is chosen by the operator (the node's configuration) and
//! serializes as a plain integer; it is in snapshots and Raft logs, so its
//! wire form never changes.

use std::collections::BTreeMap;
use std::fmt;

use rivulet_proto::v1::TopicPartitions;
use serde::{Deserialize, Serialize};

/// The id of a broker (a node of the cluster), as configured on that node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BrokerId(pub u64);

impl fmt::Display for BrokerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for BrokerId {
    fn from(id: u64) -> Self {
        BrokerId(id)
    }
}

/// One partition of one topic, by name: what responses and queries list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition index within the topic, from 0.
    pub partition: u32,
}

impl TopicPartition {
    /// Names partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    /// Kafka's `topic-partition` form, e.g. `orders-3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// `(topic, partition)` pairs grouped per topic, topics in name order, for
/// the wire (`repeated TopicPartitions`).
pub fn to_wire<'a>(pairs: impl IntoIterator<Item = (&'a str, u32)>) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in pairs {
        by_topic.entry(t).or_default().push(p);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.to_owned(),
            partitions,
        })
        .collect()
}

/// The `(topic, partition)` pairs of a wire list.
pub fn from_wire(list: &[TopicPartitions]) -> impl Iterator<Item = (String, u32)> + '_ {
    list.iter()
        .flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.clone(), *p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_id_displays_as_a_plain_integer() {
        assert_eq!(BrokerId(42).to_string(), "42");
    }

    #[test]
    fn topic_partition_displays_kafka_style() {
        assert_eq!(TopicPartition::new("orders", 3).to_string(), "orders-3");
    }

    #[test]
    fn topic_partitions_round_trip_through_the_wire_form() {
        let pairs = [("b", 1), ("a", 2), ("b", 0), ("a", 0)];
        let wire = to_wire(pairs);
        assert_eq!(wire.len(), 2);
        assert_eq!(wire[0].topic, "a");
        assert_eq!(wire[0].partitions, [2, 0]);
        let mut back: Vec<(String, u32)> = from_wire(&wire).collect();
        back.sort();
        let mut expected: Vec<(String, u32)> =
            pairs.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect();
        expected.sort();
        assert_eq!(back, expected);
    }
}
