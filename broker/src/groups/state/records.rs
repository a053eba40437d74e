//! What `__consumer_offsets` holds: group epochs, members and committed
//! offsets, as records with JSON keys and values. A `None` value is a
//! tombstone.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::Tp;

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
