//! The APIs and versions the listener speaks, as ApiVersions advertises
//! them.
//!
//! Pitfalls these ranges avoid:
//! - Produce is advertised from v0 though v0–2 are refused when used (the
//!   connection is closed): librdkafka before 2.11.1 (Debian's kcat links
//!   2.0.2) checks for Produce v0 among its "feature" probes and turns
//!   compression off when it is missing.
//! - SaslHandshake likewise from v0, though v0 (the tokens then sent
//!   unframed, Kafka before 1.0) is refused: librdkafka's "Sasl" feature
//!   probe needs v0, or it reports "SASL Handshake not supported by broker".
//! - Produce and Fetch stop at v12: v13 addresses topics by id only.
//! - OffsetFetch stops at v7 and OffsetCommit at v9, before the batched and
//!   topic-id forms.

use kafka_protocol::messages::ApiKey;

/// `(api, lowest, highest)` version served.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// Produce below this version is advertised but refused (see above).
pub const PRODUCE_MIN_USABLE: i16 = 3;
/// SaslHandshake below this version is advertised but refused.
pub const SASL_HANDSHAKE_MIN_USABLE: i16 = 1;

/// The range served for `key`, if it is served.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, lo, hi)| (*lo, *hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;

    #[test]
    fn every_advertised_version_is_one_the_codec_speaks() {
        let codec = |k: ApiKey| k.valid_versions();
        for (key, lo, hi) in SUPPORTED {
            let v = codec(*key);
            let lo = match key {
                ApiKey::Produce => PRODUCE_MIN_USABLE,
                ApiKey::SaslHandshake => SASL_HANDSHAKE_MIN_USABLE,
                _ => *lo,
            };
            assert!(v.min <= lo && *hi <= v.max, "{key:?} {lo}..={hi} vs {v:?}");
        }
        assert_eq!(ProduceRequest::VERSIONS.min, PRODUCE_MIN_USABLE);
        assert_eq!(supported(ApiKey::Fetch), Some((4, 12)));
        assert_eq!(supported(ApiKey::EndTxn), None);
    }
}
