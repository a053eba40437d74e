//! Typed per-topic configuration, parsed from Kafka-style `key=value` pairs.
//!
//! Why: users (the CLI, any Kafka-minded admin tool) speak in Kafka's config
//! names and strings, while the broker wants typed values. This module is the
//! one place that turns the first into the second, and back for `describe`.
//!
//! ```text
//!  [("min.insync.replicas","2"), ...] --with_pairs--> TopicConfig --to_pairs--> [("cleanup.policy","delete"), ...]
//!                                                          |
//!                                                 validate(replication factor)
//! ```
//!
//! Invariants (checked by [`TopicConfig::validate`], which the controller runs
//! before writing a config into a record and `apply` runs again before
//! accepting one):
//! - `min_insync_replicas` is at least 1 and at most the topic's replication
//!   factor;
//! - `retention_ms`, when set, is at least 0 (`-1` on the wire is `None`:
//!   keep forever);
//! - `segment_bytes` lies in [`MIN_SEGMENT_BYTES`]..=[`MAX_SEGMENT_BYTES`].
//!
//! Unknown keys are refused rather than ignored: a misspelt
//! `retention.msec` silently doing nothing is worse than an error.

use serde::{Deserialize, Serialize};

/// `min.insync.replicas`: with `acks=all`, the fewest in-sync replicas a
/// partition needs to accept a write.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
/// `retention.ms`: how long a segment is kept, in milliseconds; `-1` forever.
pub const RETENTION_MS: &str = "retention.ms";
/// `retention.bytes`: the largest a partition's log may grow before its
/// oldest segments are deleted; `-1` no limit.
pub const RETENTION_BYTES: &str = "retention.bytes";
/// `segment.bytes`: the size at which the active segment is rolled.
pub const SEGMENT_BYTES: &str = "segment.bytes";
/// `cleanup.policy`: `delete` (retention by age and size) or `compact`.
pub const CLEANUP_POLICY: &str = "cleanup.policy";
/// `unclean.leader.election.enable`: whether an out-of-sync replica may be
/// made leader when no in-sync replica is alive (trading data for
/// availability).
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// Every key this module understands, sorted: the order of
/// [`TopicConfig::to_pairs`] and of the "valid keys" hint in errors.
pub const CONFIG_KEYS: [&str; 6] = [
    CLEANUP_POLICY,
    MIN_INSYNC_REPLICAS,
    RETENTION_BYTES,
    RETENTION_MS,
    SEGMENT_BYTES,
    UNCLEAN_LEADER_ELECTION_ENABLE,
];

/// Default `retention.ms`: 7 days, as in Kafka.
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Default `segment.bytes`: 1 GiB, as in Kafka.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;
/// Smallest `segment.bytes`: 1 MiB (Kafka 4's bound), so that a typo cannot
/// make a partition roll a segment per batch and exhaust file handles.
pub const MIN_SEGMENT_BYTES: u64 = 1024 * 1024;
/// Largest `segment.bytes`: `i32::MAX`, as in Kafka, so that positions within
/// a segment fit the 32-bit fields of the offset and time indexes.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

/// What happens to old data in a partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    /// Delete whole segments by age (`retention.ms`) and size
    /// (`retention.bytes`).
    #[default]
    Delete,
    /// Keep at least the latest record of every key.
    Compact,
}

impl CleanupPolicy {
    /// Kafka's name for the policy, as used in `cleanup.policy`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        }
    }
}

/// The typed configuration of one topic. Missing fields deserialize to their
/// defaults so that an image written before a field existed still loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicConfig {
    /// With `acks=all`, the leader refuses a write while the ISR has fewer
    /// members than this (NOT_ENOUGH_REPLICAS). 1 ..= replication factor.
    pub min_insync_replicas: u32,
    /// How long data is kept, in milliseconds; `None` keeps it forever
    /// (`-1` on the wire). Never negative when set.
    pub retention_ms: Option<i64>,
    /// The size, in bytes, above which a partition's oldest segments are
    /// deleted; `None` means no size limit (`-1` on the wire).
    pub retention_bytes: Option<u64>,
    /// The active segment is rolled once it reaches this many bytes.
    pub segment_bytes: u64,
    /// Delete old segments, or compact by key.
    pub cleanup_policy: CleanupPolicy,
    /// Whether an out-of-sync replica may become leader when no in-sync
    /// replica is alive. Off by default: availability is not worth silently
    /// losing acknowledged writes.
    pub unclean_leader_election_enable: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            min_insync_replicas: 1,
            retention_ms: Some(DEFAULT_RETENTION_MS),
            retention_bytes: None,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            cleanup_policy: CleanupPolicy::Delete,
            unclean_leader_election_enable: false,
        }
    }
}

/// Why a topic configuration was refused. Every variant names the key and,
/// where there is one, the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key this crate does not know.
    #[error("unknown topic config '{key}'; valid keys are: {}", CONFIG_KEYS.join(", "))]
    UnknownKey {
        /// The key as given.
        key: String,
    },
    /// The same key was given twice in one request; which one should win is
    /// ambiguous, so neither does.
    #[error("topic config '{key}' is given more than once")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// A known key with a value that does not parse or is out of range.
    #[error("invalid value '{value}' for topic config '{key}': expected {expected}")]
    InvalidValue {
        /// The key (one of [`CONFIG_KEYS`]).
        key: &'static str,
        /// The value as given (or, for a deserialized config, as stored).
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// `min.insync.replicas` can never be met by the topic's replicas.
    #[error(
        "invalid value '{min_insync_replicas}' for topic config 'min.insync.replicas': \
         it is larger than the replication factor {replication_factor}, \
         so acks=all writes could never succeed"
    )]
    MinInsyncAboveReplicationFactor {
        /// The configured `min.insync.replicas`.
        min_insync_replicas: u32,
        /// The topic's replication factor.
        replication_factor: u32,
    },
}

const EXPECTED_MIN_INSYNC: &str = "an integer of at least 1";
const EXPECTED_RETENTION_MS: &str =
    "an integer of at least -1 (milliseconds; -1 keeps data forever)";
const EXPECTED_RETENTION_BYTES: &str = "an integer of at least -1 (bytes; -1 means no size limit)";
const EXPECTED_SEGMENT_BYTES: &str = "an integer from 1048576 (1 MiB) to 2147483647";
const EXPECTED_CLEANUP_POLICY: &str = "'delete' or 'compact'";
const EXPECTED_BOOLEAN: &str = "'true' or 'false'";

impl TopicConfig {
    /// The defaults with `pairs` applied: what `CreateTopic` stores. Does
    /// not check against a replication factor; see [`TopicConfig::validate`].
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        TopicConfig::default().with_pairs(pairs)
    }

    /// A copy of `self` with `pairs` applied over it: what `AlterTopicConfig`
    /// stores. Refuses unknown keys, a key given twice and bad values; on
    /// error nothing is applied.
    pub fn with_pairs<I, K, V>(&self, pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut config = self.clone();
        let mut seen: Vec<&'static str> = Vec::new();
        for (key, value) in pairs {
            let key = config.set(key.as_ref(), value.as_ref())?;
            if seen.contains(&key) {
                return Err(ConfigError::DuplicateKey {
                    key: key.to_owned(),
                });
            }
            seen.push(key);
        }
        Ok(config)
    }

    /// Parses one pair into `self`, returning the canonical key.
    fn set(&mut self, key: &str, raw_value: &str) -> Result<&'static str, ConfigError> {
        // Kafka trims numeric and boolean values before parsing; do the same
        // so `retention.ms = 1000` from a properties file works.
        let value = raw_value.trim();
        let invalid = |key: &'static str, expected: &'static str| ConfigError::InvalidValue {
            key,
            value: raw_value.to_owned(),
            expected,
        };
        match key {
            MIN_INSYNC_REPLICAS => {
                self.min_insync_replicas = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| invalid(MIN_INSYNC_REPLICAS, EXPECTED_MIN_INSYNC))?;
                Ok(MIN_INSYNC_REPLICAS)
            }
            RETENTION_MS => {
                self.retention_ms = match value.parse::<i64>() {
                    Ok(-1) => None,
                    Ok(ms) if ms >= 0 => Some(ms),
                    _ => return Err(invalid(RETENTION_MS, EXPECTED_RETENTION_MS)),
                };
                Ok(RETENTION_MS)
            }
            RETENTION_BYTES => {
                self.retention_bytes = match value.parse::<i64>() {
                    Ok(-1) => None,
                    Ok(bytes) => Some(
                        u64::try_from(bytes)
                            .map_err(|_| invalid(RETENTION_BYTES, EXPECTED_RETENTION_BYTES))?,
                    ),
                    Err(_) => return Err(invalid(RETENTION_BYTES, EXPECTED_RETENTION_BYTES)),
                };
                Ok(RETENTION_BYTES)
            }
            SEGMENT_BYTES => {
                self.segment_bytes = value
                    .parse::<u64>()
                    .ok()
                    .filter(|bytes| (MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(bytes))
                    .ok_or_else(|| invalid(SEGMENT_BYTES, EXPECTED_SEGMENT_BYTES))?;
                Ok(SEGMENT_BYTES)
            }
            CLEANUP_POLICY => {
                self.cleanup_policy = match value.to_ascii_lowercase().as_str() {
                    "delete" => CleanupPolicy::Delete,
                    "compact" => CleanupPolicy::Compact,
                    _ => return Err(invalid(CLEANUP_POLICY, EXPECTED_CLEANUP_POLICY)),
                };
                Ok(CLEANUP_POLICY)
            }
            UNCLEAN_LEADER_ELECTION_ENABLE => {
                self.unclean_leader_election_enable = match value.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid(UNCLEAN_LEADER_ELECTION_ENABLE, EXPECTED_BOOLEAN)),
                };
                Ok(UNCLEAN_LEADER_ELECTION_ENABLE)
            }
            _ => Err(ConfigError::UnknownKey {
                key: key.to_owned(),
            }),
        }
    }

    /// Checks the invariants listed in the module header for a topic whose
    /// partitions have `replication_factor` replicas each. Also catches out
    /// of range values in a config that was deserialized rather than parsed.
    pub fn validate(&self, replication_factor: u32) -> Result<(), ConfigError> {
        if self.min_insync_replicas < 1 {
            return Err(ConfigError::InvalidValue {
                key: MIN_INSYNC_REPLICAS,
                value: self.min_insync_replicas.to_string(),
                expected: EXPECTED_MIN_INSYNC,
            });
        }
        if let Some(ms) = self.retention_ms.filter(|ms| *ms < 0) {
            return Err(ConfigError::InvalidValue {
                key: RETENTION_MS,
                value: ms.to_string(),
                expected: EXPECTED_RETENTION_MS,
            });
        }
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(ConfigError::InvalidValue {
                key: SEGMENT_BYTES,
                value: self.segment_bytes.to_string(),
                expected: EXPECTED_SEGMENT_BYTES,
            });
        }
        if self.min_insync_replicas > replication_factor {
            return Err(ConfigError::MinInsyncAboveReplicationFactor {
                min_insync_replicas: self.min_insync_replicas,
                replication_factor,
            });
        }
        Ok(())
    }

    /// Every setting as Kafka-style pairs, sorted by key, for `describe`.
    /// Feeding the result to [`TopicConfig::from_pairs`] gives `self` back.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let pairs = [
            (CLEANUP_POLICY, self.cleanup_policy.as_str().to_owned()),
            (MIN_INSYNC_REPLICAS, self.min_insync_replicas.to_string()),
            (
                RETENTION_BYTES,
                self.retention_bytes
                    .map_or_else(|| "-1".to_owned(), |bytes| bytes.to_string()),
            ),
            (
                RETENTION_MS,
                self.retention_ms
                    .map_or_else(|| "-1".to_owned(), |ms| ms.to_string()),
            ),
            (SEGMENT_BYTES, self.segment_bytes.to_string()),
            (
                UNCLEAN_LEADER_ELECTION_ENABLE,
                self.unclean_leader_election_enable.to_string(),
            ),
        ];
        pairs
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<TopicConfig, ConfigError> {
        TopicConfig::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn defaults_are_kafkas() {
        let config = TopicConfig::default();
        assert_eq!(config.min_insync_replicas, 1);
        assert_eq!(config.retention_ms, Some(604_800_000));
        assert_eq!(config.retention_bytes, None);
        assert_eq!(config.segment_bytes, 1 << 30);
        assert_eq!(config.cleanup_policy, CleanupPolicy::Delete);
        assert!(!config.unclean_leader_election_enable);
        assert_eq!(parse(&[]), Ok(config));
    }

    #[test]
    fn parses_every_key() {
        let config = parse(&[
            ("min.insync.replicas", "2"),
            ("retention.ms", "3600000"),
            ("retention.bytes", "1073741824"),
            ("segment.bytes", "1048576"),
            ("cleanup.policy", "compact"),
            ("unclean.leader.election.enable", "true"),
        ])
        .unwrap();
        assert_eq!(
            config,
            TopicConfig {
                min_insync_replicas: 2,
                retention_ms: Some(3_600_000),
                retention_bytes: Some(1 << 30),
                segment_bytes: 1 << 20,
                cleanup_policy: CleanupPolicy::Compact,
                unclean_leader_election_enable: true,
            }
        );
    }

    #[test]
    fn minus_one_means_unlimited_retention() {
        let config = parse(&[("retention.ms", "-1"), ("retention.bytes", "-1")]).unwrap();
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.retention_bytes, None);
        let zero = parse(&[("retention.ms", "0"), ("retention.bytes", "0")]).unwrap();
        assert_eq!(zero.retention_ms, Some(0));
        assert_eq!(zero.retention_bytes, Some(0));
    }

    #[test]
    fn values_are_trimmed_and_words_case_insensitive() {
        let config = parse(&[
            ("retention.ms", " 1000 "),
            ("cleanup.policy", "Compact"),
            ("unclean.leader.election.enable", "TRUE"),
        ])
        .unwrap();
        assert_eq!(config.retention_ms, Some(1000));
        assert_eq!(config.cleanup_policy, CleanupPolicy::Compact);
        assert!(config.unclean_leader_election_enable);
    }

    #[test]
    fn bad_values_are_refused_naming_key_and_value() {
        let cases = [
            ("min.insync.replicas", "0"),
            ("min.insync.replicas", "two"),
            ("min.insync.replicas", "-1"),
            ("retention.ms", "-2"),
            ("retention.ms", "1.5"),
            ("retention.ms", "99999999999999999999"),
            ("retention.bytes", "-5"),
            ("retention.bytes", "lots"),
            ("segment.bytes", "1048575"),
            ("segment.bytes", "2147483648"),
            ("segment.bytes", ""),
            ("cleanup.policy", "compact,delete"),
            ("unclean.leader.election.enable", "yes"),
        ];
        for (key, value) in cases {
            let error = parse(&[(key, value)]).unwrap_err();
            match &error {
                ConfigError::InvalidValue {
                    key: got_key,
                    value: got_value,
                    ..
                } => {
                    assert_eq!(*got_key, key);
                    assert_eq!(got_value, value);
                }
                other => panic!("{key}={value}: unexpected error {other:?}"),
            }
            let message = error.to_string();
            assert!(message.contains(key), "{message}");
            assert!(message.contains(&format!("'{value}'")), "{message}");
            assert!(message.contains("expected"), "{message}");
        }
    }

    #[test]
    fn unknown_key_is_refused_with_the_valid_keys() {
        let error = parse(&[("retention.msec", "5")]).unwrap_err();
        assert_eq!(
            error,
            ConfigError::UnknownKey {
                key: "retention.msec".to_owned()
            }
        );
        let message = error.to_string();
        assert!(message.contains("retention.msec"));
        assert!(message.contains("retention.ms,"));
    }

    #[test]
    fn duplicate_key_is_refused() {
        let error = parse(&[("retention.ms", "5"), ("retention.ms", "6")]).unwrap_err();
        assert_eq!(
            error,
            ConfigError::DuplicateKey {
                key: "retention.ms".to_owned()
            }
        );
    }

    #[test]
    fn with_pairs_merges_over_the_existing_config() {
        let base = parse(&[("min.insync.replicas", "2"), ("retention.ms", "5000")]).unwrap();
        let merged = base.with_pairs([("retention.ms", "-1")]).unwrap();
        assert_eq!(merged.min_insync_replicas, 2);
        assert_eq!(merged.retention_ms, None);
        // A failed merge leaves the original untouched (it is borrowed).
        assert!(base.with_pairs([("retention.ms", "x")]).is_err());
        assert_eq!(base.retention_ms, Some(5000));
    }

    #[test]
    fn validate_checks_min_insync_against_replication_factor() {
        let config = parse(&[("min.insync.replicas", "3")]).unwrap();
        assert_eq!(config.validate(3), Ok(()));
        let error = config.validate(2).unwrap_err();
        assert_eq!(
            error,
            ConfigError::MinInsyncAboveReplicationFactor {
                min_insync_replicas: 3,
                replication_factor: 2
            }
        );
        assert!(error.to_string().contains("replication factor 2"));
    }

    #[test]
    fn validate_catches_out_of_range_deserialized_values() {
        let bad_segment = TopicConfig {
            segment_bytes: 10,
            ..TopicConfig::default()
        };
        assert!(matches!(
            bad_segment.validate(1),
            Err(ConfigError::InvalidValue {
                key: SEGMENT_BYTES,
                ..
            })
        ));
        let bad_retention = TopicConfig {
            retention_ms: Some(-7),
            ..TopicConfig::default()
        };
        assert!(matches!(
            bad_retention.validate(1),
            Err(ConfigError::InvalidValue {
                key: RETENTION_MS,
                ..
            })
        ));
        let bad_min_insync = TopicConfig {
            min_insync_replicas: 0,
            ..TopicConfig::default()
        };
        assert!(matches!(
            bad_min_insync.validate(1),
            Err(ConfigError::InvalidValue {
                key: MIN_INSYNC_REPLICAS,
                ..
            })
        ));
    }

    #[test]
    fn to_pairs_is_sorted_complete_and_round_trips() {
        for config in [
            TopicConfig::default(),
            parse(&[
                ("retention.ms", "-1"),
                ("retention.bytes", "123"),
                ("cleanup.policy", "compact"),
                ("unclean.leader.election.enable", "true"),
            ])
            .unwrap(),
        ] {
            let pairs = config.to_pairs();
            let keys: Vec<&str> = pairs.iter().map(|(key, _)| key.as_str()).collect();
            assert_eq!(keys, CONFIG_KEYS);
            assert_eq!(TopicConfig::from_pairs(pairs), Ok(config));
        }
        let defaults = TopicConfig::default().to_pairs();
        assert!(defaults.contains(&("retention.bytes".to_owned(), "-1".to_owned())));
        assert!(defaults.contains(&("cleanup.policy".to_owned(), "delete".to_owned())));
    }

    #[test]
    fn serde_fills_missing_fields_with_defaults() {
        let config: TopicConfig = serde_json::from_str(r#"{"min_insync_replicas":2}"#).unwrap();
        assert_eq!(config.min_insync_replicas, 2);
        assert_eq!(config.segment_bytes, DEFAULT_SEGMENT_BYTES);
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains(r#""cleanup_policy":"delete""#));
        assert_eq!(serde_json::from_str::<TopicConfig>(&json).unwrap(), config);
    }
}
