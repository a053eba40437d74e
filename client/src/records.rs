//! Records, Kafka v2 batches and Kafka's default key partitioner.

use bytes::Bytes;
use rivulet_common::batch::{BatchError, BatchRecord};
pub use rivulet_common::batch::{Compression, UndecodableBatch};

use crate::error::{Error, Result};

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic.
    pub topic: String,
    /// An explicit partition; otherwise chosen by key hash, or sticky.
    pub partition: Option<u32>,
    /// The key (partitioning, compaction).
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Create time (ms since the Unix epoch); `None`: now.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record of `value` for `topic`.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets an explicit partition.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// Sets the create time.
    pub fn timestamp_ms(mut self, ts: i64) -> Self {
        self.timestamp_ms = Some(ts);
        self
    }

    /// Approximate encoded size, for batching decisions.
    pub(crate) fn size_hint(&self) -> usize {
        16 + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len) + 4)
                .sum::<usize>()
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: u64,
    /// Create time (ms).
    pub timestamp_ms: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl BatchRecord for ProducerRecord {
    fn key(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }
    fn value(&self) -> Option<&Bytes> {
        self.value.as_ref()
    }
    fn headers(&self) -> &[(String, Option<Bytes>)] {
        &self.headers
    }
    fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }
}

/// Encodes records (offsets from 0) into one v2 batch.
pub fn encode_batch(records: &[ProducerRecord], compression: Compression) -> Result<Bytes> {
    encode_producer_batch(records, compression, None)
}

/// [`encode_batch`] for an idempotent producer: the header carries its id,
/// epoch and the batch's base sequence.
pub fn encode_producer_batch(
    records: &[ProducerRecord],
    compression: Compression,
    producer: Option<rivulet_common::batch::ProducerStamp>,
) -> Result<Bytes> {
    rivulet_common::batch::build_producer_batch(records, compression, producer).map_err(|e| match e
    {
        BatchError::Empty => Error::Invalid(e.to_string()),
        other => Error::Codec(other.to_string()),
    })
}

/// The records of a fetch response, and the batches that would not decode.
pub type Decoded = rivulet_common::batch::Decoded<ConsumerRecord>;

/// Decodes the whole batches fetched from `topic`/`partition` one by one,
/// keeping offsets `>= from` (a fetch may start mid-batch). A batch that does
/// not decode is reported in [`Decoded::undecodable`]; with `skip` the
/// batches after it are decoded too, without it decoding stops there so the
/// consumer never moves past it silently.
pub fn decode_batches(topic: &str, partition: u32, bytes: Bytes, from: u64, skip: bool) -> Decoded {
    rivulet_common::batch::decode_batches(bytes, from, skip, |r| ConsumerRecord {
        topic: topic.to_owned(),
        partition,
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key: r.key,
        value: r.value,
        headers: r.headers,
    })
}

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use rivulet_common::batch::HEADER_LEN;

    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input), want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn batches_round_trip_with_every_compression() {
        let records: Vec<ProducerRecord> = (0..50)
            .map(|i| {
                ProducerRecord::new("t", format!("value-{i}").repeat(10))
                    .key(format!("k{i}"))
                    .header("h", "x")
                    .timestamp_ms(1_000 + i)
            })
            .collect();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = encode_batch(&records, c).unwrap();
            let back = decode_batches("t", 3, batch.clone(), 0, false).records;
            assert_eq!(back.len(), 50, "{c:?}");
            assert_eq!(back[7].value.as_deref(), records[7].value.as_deref());
            assert_eq!(back[7].key.as_deref(), Some(&b"k7"[..]));
            assert_eq!(back[7].timestamp_ms, 1_007);
            assert_eq!(
                back[7].headers,
                vec![("h".to_owned(), Some(Bytes::from("x")))]
            );
            assert_eq!(decode_batches("t", 3, batch, 45, false).records.len(), 5);
            if c != Compression::None {
                let plain = encode_batch(&records, Compression::None).unwrap();
                let packed = encode_batch(&records, c).unwrap();
                assert!(
                    packed.len() < plain.len() / 2,
                    "{c:?} compresses repetitive values"
                );
            }
        }
    }

    /// Three batches at offsets 0..2, 2..4, 4..6; the middle one has a valid
    /// CRC over records that do not parse (as stored before the broker
    /// validated records).
    fn with_poison_in_the_middle() -> Bytes {
        let recs = |a: &str, b: &str| {
            vec![
                ProducerRecord::new("t", a.to_owned()),
                ProducerRecord::new("t", b.to_owned()),
            ]
        };
        let mut out = BytesMut::new();
        for (i, (a, b)) in [("a", "b"), ("c", "d"), ("e", "f")].into_iter().enumerate() {
            let mut batch = encode_batch(&recs(a, b), Compression::None)
                .unwrap()
                .to_vec();
            batch[0..8].copy_from_slice(&(2 * i as i64).to_be_bytes());
            if i == 1 {
                for byte in &mut batch[HEADER_LEN..] {
                    *byte = 0xff;
                }
                let crc = crc32c::crc32c(&batch[21..]);
                batch[17..21].copy_from_slice(&crc.to_be_bytes());
            }
            out.extend_from_slice(&batch);
        }
        out.freeze()
    }

    #[test]
    fn an_undecodable_batch_stops_decoding_unless_skipped() {
        let bytes = with_poison_in_the_middle();
        let d = decode_batches("t", 0, bytes.clone(), 0, false);
        let offsets: Vec<u64> = d.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 1], "the records before it are delivered");
        assert_eq!(d.undecodable.len(), 1);
        assert_eq!(
            (d.undecodable[0].offset, d.undecodable[0].next_offset),
            (2, 4)
        );

        let d = decode_batches("t", 0, bytes, 0, true);
        let offsets: Vec<u64> = d.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 1, 4, 5], "and after it, when skipping");
        assert_eq!(d.undecodable.len(), 1);
    }

    #[test]
    fn keys_spread_over_partitions_like_kafka() {
        assert_eq!(partition_for_key(b"21", 1), 0);
        let hits: std::collections::BTreeSet<u32> = (0..100)
            .map(|i| partition_for_key(format!("key-{i}").as_bytes(), 6))
            .collect();
        assert_eq!(hits.len(), 6);
    }
}
