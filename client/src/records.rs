//! Records, Kafka v2 batches and Kafka's default key partitioner.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression as KafkaCompression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};

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

/// Batch compression. The broker stores compressed batches as they are; the
/// consumer decompresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// None (default).
    #[default]
    None,
    /// Gzip.
    Gzip,
    /// Snappy (xerial-framed, as Kafka's Java client writes it).
    Snappy,
    /// LZ4 frames.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            "snappy" => Ok(Self::Snappy),
            "lz4" => Ok(Self::Lz4),
            "zstd" => Ok(Self::Zstd),
            _ => Err(Error::Invalid(format!(
                "unknown compression {s:?}: use none, gzip, snappy, lz4 or zstd"
            ))),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Encodes records (offsets from 0) into one v2 batch.
pub fn encode_batch(records: &[ProducerRecord], compression: Compression) -> Result<Bytes> {
    if records.is_empty() {
        return Err(Error::Invalid("a batch needs at least one record".into()));
    }
    let now = now_ms();
    let recs: Vec<KafkaRecord> = records
        .iter()
        .enumerate()
        .map(|(i, r)| KafkaRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Keeps offset - sequence constant, so the encoder emits one
            // batch with no producer sequence.
            sequence: i as i32 - 1,
            timestamp: r.timestamp_ms.unwrap_or(now),
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.clone().into(), v.clone()))
                .collect(),
        })
        .collect();
    let mut buf =
        BytesMut::with_capacity(records.iter().map(|r| r.size_hint()).sum::<usize>() + 128);
    let opts = RecordEncodeOptions {
        version: 2,
        compression: match compression {
            Compression::None => KafkaCompression::None,
            Compression::Gzip => KafkaCompression::Gzip,
            Compression::Snappy => KafkaCompression::Snappy,
            Compression::Lz4 => KafkaCompression::Lz4,
            Compression::Zstd => KafkaCompression::Zstd,
        },
    };
    RecordBatchEncoder::encode(&mut buf, &recs, &opts)
        .map_err(|e| Error::Codec(format!("cannot encode: {e}")))?;
    Ok(buf.freeze())
}

/// A fetched batch the client cannot decode: its records are lost to this
/// consumer unless it is skipped on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndecodableBatch {
    /// Base offset of the batch.
    pub offset: u64,
    /// The offset right after it.
    pub next_offset: u64,
    /// What the decoder said.
    pub reason: String,
}

/// The records of a fetch response, and the first batch that would not
/// decode (when not skipping, nothing after it is returned).
#[derive(Debug, Default)]
pub struct Decoded {
    /// The records, in offset order.
    pub records: Vec<ConsumerRecord>,
    /// Batches that did not decode, in offset order.
    pub undecodable: Vec<UndecodableBatch>,
}

const LOG_OVERHEAD: usize = 12;
const HEADER_LEN: usize = 61;

/// Decodes the whole batches fetched from `topic`/`partition` one by one,
/// keeping offsets `>= from` (a fetch may start mid-batch). A batch that does
/// not decode is reported in [`Decoded::undecodable`]; with `skip` the
/// batches after it are decoded too, without it decoding stops there so the
/// consumer never moves past it silently.
pub fn decode_batches(topic: &str, partition: u32, bytes: Bytes, from: u64, skip: bool) -> Decoded {
    let mut out = Decoded::default();
    let mut pos = 0usize;
    while bytes.len() - pos >= HEADER_LEN {
        let b = &bytes[pos..];
        let base = i64::from_be_bytes(b[0..8].try_into().unwrap_or([0; 8]));
        let len = i32::from_be_bytes(b[8..12].try_into().unwrap_or([0; 4]));
        let delta = i32::from_be_bytes(b[23..27].try_into().unwrap_or([0; 4]));
        let size = LOG_OVERHEAD as i64 + i64::from(len);
        if base < 0 || len < (HEADER_LEN - LOG_OVERHEAD) as i32 || size > b.len() as i64 {
            // A partial batch at the end of a size-limited fetch is normal;
            // a broken length is not decodable at all: stop either way.
            if base >= 0 && len >= (HEADER_LEN - LOG_OVERHEAD) as i32 {
                break;
            }
            out.undecodable.push(UndecodableBatch {
                offset: base.max(0) as u64,
                next_offset: base.max(0) as u64,
                reason: format!("impossible batch length {len}"),
            });
            break;
        }
        let size = size as usize;
        let next_offset = base as u64 + u64::from(delta.max(0) as u32) + 1;
        let mut one = bytes.slice(pos..pos + size);
        pos += size;
        match RecordBatchDecoder::decode(&mut one) {
            Ok(set) => out.records.extend(
                set.records
                    .into_iter()
                    .filter(|r| r.offset >= 0 && r.offset as u64 >= from)
                    .map(|r| ConsumerRecord {
                        topic: topic.to_owned(),
                        partition,
                        offset: r.offset as u64,
                        timestamp_ms: r.timestamp,
                        key: r.key,
                        value: r.value,
                        headers: r
                            .headers
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect(),
                    }),
            ),
            Err(e) => {
                out.undecodable.push(UndecodableBatch {
                    offset: base as u64,
                    next_offset,
                    reason: format!("{e:#}"),
                });
                if !skip {
                    break;
                }
            }
        }
    }
    out
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
