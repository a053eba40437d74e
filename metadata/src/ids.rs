//! Identifiers shared by the image, the records and the controller.
//!
//! Why a module of its own: broker ids, topic ids and topic-partition names
//! appear in every other module, and each has a wire form that must never
//! change once snapshots and Raft logs exist.
//!
//! Invariants:
//! - [`BrokerId`] is chosen by the operator (the node's configuration) and
//!   serializes as a plain integer.
//! - [`TopicId`] is chosen by the controller, deterministically (a hash of the
//!   cluster id, the topic name and the metadata offset the decision was made
//!   at), and carried in the `CreateTopic` record so that every replica of the
//!   image holds the same id. The all-zero id is reserved and never assigned.
//!   It serializes as 32 lowercase hex digits, a string, so that formats
//!   without 128-bit integers (JSON readers in other languages, serde's
//!   buffered enums) still carry it exactly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use rivulet_common::BrokerId;

/// The cluster-unique id of a topic. A topic deleted and re-created under the
/// same name gets a different id, so a broker holding stale metadata can tell
/// the two incarnations apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicId(u128);

impl TopicId {
    /// The reserved "no topic" id; never assigned to a topic.
    pub const ZERO: TopicId = TopicId(0);

    /// Wraps a raw 128-bit value.
    pub const fn from_u128(value: u128) -> Self {
        TopicId(value)
    }

    /// The raw 128-bit value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// Whether this is the reserved [`TopicId::ZERO`].
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Derives an id from what the controller knows when it decides to create
    /// a topic. Deterministic: the same inputs give the same id on every node
    /// and in every run. `salt` lets the controller step past the (in
    /// practice impossible) collision with an existing id or with zero.
    ///
    /// The hash is 128-bit FNV-1a over length-prefixed fields, so that
    /// ("ab", "c") and ("a", "bc") hash differently.
    pub(crate) fn derive(cluster_id: &str, name: &str, metadata_offset: u64, salt: u64) -> Self {
        const FNV_OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        const FNV_PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
        let mut hash = FNV_OFFSET_BASIS;
        let mut feed = |bytes: &[u8]| {
            for byte in bytes {
                hash ^= u128::from(*byte);
                hash = hash.wrapping_mul(FNV_PRIME);
            }
        };
        feed(&(cluster_id.len() as u64).to_le_bytes());
        feed(cluster_id.as_bytes());
        feed(&(name.len() as u64).to_le_bytes());
        feed(name.as_bytes());
        feed(&metadata_offset.to_le_bytes());
        feed(&salt.to_le_bytes());
        TopicId(hash)
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A string that is not 32 hex digits was given where a [`TopicId`] was
/// expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic id '{text}': expected 32 hexadecimal digits")]
pub struct TopicIdParseError {
    /// The text that failed to parse.
    pub text: String,
}

impl FromStr for TopicId {
    type Err = TopicIdParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || TopicIdParseError {
            text: text.to_owned(),
        };
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(error());
        }
        u128::from_str_radix(text, 16)
            .map(TopicId)
            .map_err(|_| error())
    }
}

impl Serialize for TopicId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TopicId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TopicId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a topic id of 32 hexadecimal digits")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<TopicId, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

pub use rivulet_common::TopicPartition;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_id_displays_as_32_hex_digits_and_parses_back() {
        let id = TopicId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let text = id.to_string();
        assert_eq!(text, "0123456789abcdef0011223344556677");
        assert_eq!(text.parse::<TopicId>(), Ok(id));
        assert_eq!(TopicId::ZERO.to_string(), "0".repeat(32));
    }

    #[test]
    fn topic_id_parse_refuses_bad_text() {
        for bad in [
            "",
            "abc",
            "+123456789abcdef0011223344556677",
            &"g".repeat(32),
        ] {
            let error = bad.parse::<TopicId>().unwrap_err();
            assert_eq!(error.text, bad);
            assert!(error.to_string().contains("32 hexadecimal digits"));
        }
    }

    #[test]
    fn topic_id_serializes_as_a_string() {
        let id = TopicId::from_u128(u128::MAX - 5);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<TopicId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<TopicId>("12").is_err());
    }

    #[test]
    fn topic_id_derivation_is_deterministic_and_input_sensitive() {
        let base = TopicId::derive("cluster", "orders", 7, 0);
        assert_eq!(base, TopicId::derive("cluster", "orders", 7, 0));
        assert_ne!(base, TopicId::derive("cluster", "orders", 8, 0));
        assert_ne!(base, TopicId::derive("cluster", "orders", 7, 1));
        assert_ne!(base, TopicId::derive("cluster", "order", 7, 0));
        assert_ne!(base, TopicId::derive("other", "orders", 7, 0));
        assert_ne!(
            TopicId::derive("ab", "c", 0, 0),
            TopicId::derive("a", "bc", 0, 0)
        );
    }

    #[test]
    fn broker_id_serializes_as_a_plain_integer() {
        assert_eq!(serde_json::to_string(&BrokerId(42)).unwrap(), "42");
        assert_eq!(BrokerId(42).to_string(), "42");
    }
}
