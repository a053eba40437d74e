//! Kafka v2 record batches, as bytes: the one codec every Rivulet crate uses.
//!
//! The broker never decodes records on the produce, replicate or fetch paths:
//! it reads the fixed 61-byte batch header, checks the CRC-32C, and rewrites
//! two fields in place — the base offset and the partition leader epoch. Both
//! sit before the CRC'd region, so stamping them never invalidates the CRC.
//!
//! ```text
//!  0        8      12           16    17    21    23          27        35        43     51      53      57      61
//!  | base   | len  | leader     |magic| crc | attr| last      | first   | max     | prod  | prod  | base  | rec   | records ...
//!  | offset |      | epoch      | =2  |     |     | off delta | ts      | ts      | id    | epoch | seq   | count |
//!  +--------+------+------------+-----+-----+-----+-----------+---------+---------+-------+-------+-------+-------+
//!                  |<------------- len counts from here to the end of the batch ---------------------------->|
//!                                           |<-------------- CRC-32C covers attr .. end --------------------->|
//! ```
//!
//! Records are built ([`build_batch`], any compression) and parsed
//! ([`decode_batches`], batch by batch, so one bad batch is reported rather
//! than hiding the others) with the `kafka-protocol` crate.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression as KafkaCompression, Record, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};

/// Why a batch could not be built or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A batch holds at least one record.
    #[error("a batch needs at least one record")]
    Empty,
    /// The encoder failed.
    #[error("cannot encode batch: {0}")]
    Encode(String),
    /// Bytes that are not whole, valid batches.
    #[error("cannot decode batch at offset {offset}: {reason}")]
    Decode {
        /// Base offset of the first batch that did not decode.
        offset: u64,
        /// What the decoder said.
        reason: String,
    },
}

/// Bytes before the `len` field counts: base offset (8) + length (4).
pub const LOG_OVERHEAD: usize = 12;
/// The fixed v2 batch header, up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// The only batch format Rivulet stores.
pub const MAGIC_V2: i8 = 2;

/// Byte offsets of the header fields.
pub const LEADER_EPOCH_AT: usize = 12;
/// See [`LEADER_EPOCH_AT`].
pub const MAGIC_AT: usize = 16;
/// See [`LEADER_EPOCH_AT`].
pub const CRC_AT: usize = 17;
/// See [`LEADER_EPOCH_AT`].
pub const ATTRIBUTES_AT: usize = 21;
/// See [`LEADER_EPOCH_AT`].
pub const LAST_OFFSET_DELTA_AT: usize = 23;
/// See [`LEADER_EPOCH_AT`].
pub const FIRST_TIMESTAMP_AT: usize = 27;
/// See [`LEADER_EPOCH_AT`].
pub const MAX_TIMESTAMP_AT: usize = 35;
/// See [`LEADER_EPOCH_AT`].
pub const PRODUCER_ID_AT: usize = 43;
/// See [`LEADER_EPOCH_AT`].
pub const PRODUCER_EPOCH_AT: usize = 51;
/// See [`LEADER_EPOCH_AT`].
pub const BASE_SEQUENCE_AT: usize = 53;
/// See [`LEADER_EPOCH_AT`].
pub const RECORD_COUNT_AT: usize = 57;
/// A batch without a producer (not idempotent).
pub const NO_PRODUCER_ID: i64 = -1;

/// The big-endian `i64` at `at`.
pub fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// The big-endian `i32` at `at`.
pub fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

/// Total on-disk size of the batch whose first [`LOG_OVERHEAD`] bytes are `prefix`,
/// or `None` if the length field is impossible (negative or shorter than a header).
pub fn batch_size_from_prefix(prefix: &[u8]) -> Option<usize> {
    let len = be_i32(prefix, 8);
    if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return None;
    }
    Some(len as usize + LOG_OVERHEAD)
}

/// The header fields of one batch, read from its first [`HEADER_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Whole batch size in bytes, [`LOG_OVERHEAD`] included.
    pub size: usize,
    /// Epoch of the leader that wrote the batch (`-1` if never stamped).
    pub leader_epoch: i32,
    /// Format version; always [`MAGIC_V2`] for a valid batch.
    pub magic: i8,
    /// CRC-32C stored in the header.
    pub crc: u32,
    /// Compression codec and flags.
    pub attributes: i16,
    /// Offset of the last record minus the base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record (ms).
    pub first_timestamp: i64,
    /// Largest record timestamp in the batch (ms).
    pub max_timestamp: i64,
    /// The idempotent producer's id, or [`NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// The producer's epoch (`-1` without a producer).
    pub producer_epoch: i16,
    /// The sequence number of the first record (`-1` without a producer).
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads the header from `b`, which must hold at least [`HEADER_LEN`] bytes.
    /// Checks only that the length field is possible; see [`validate`].
    pub fn parse(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() < HEADER_LEN {
            return Err("shorter than a batch header");
        }
        let size = batch_size_from_prefix(b).ok_or("impossible batch length")?;
        let base_offset = be_i64(b, 0);
        if base_offset < 0 {
            return Err("negative base offset");
        }
        Ok(Self {
            base_offset: base_offset as u64,
            size,
            leader_epoch: be_i32(b, LEADER_EPOCH_AT),
            magic: b[MAGIC_AT] as i8,
            crc: be_i32(b, CRC_AT) as u32,
            attributes: i16::from_be_bytes([b[ATTRIBUTES_AT], b[ATTRIBUTES_AT + 1]]),
            last_offset_delta: be_i32(b, LAST_OFFSET_DELTA_AT),
            first_timestamp: be_i64(b, FIRST_TIMESTAMP_AT),
            max_timestamp: be_i64(b, MAX_TIMESTAMP_AT),
            producer_id: be_i64(b, PRODUCER_ID_AT),
            producer_epoch: i16::from_be_bytes([b[PRODUCER_EPOCH_AT], b[PRODUCER_EPOCH_AT + 1]]),
            base_sequence: be_i32(b, BASE_SEQUENCE_AT),
            record_count: be_i32(b, RECORD_COUNT_AT),
        })
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + self.last_offset_delta.max(0) as u64
    }

    /// The offset right after the batch.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// Whether an idempotent producer wrote the batch.
    pub fn has_producer(&self) -> bool {
        self.producer_id >= 0
    }

    /// The sequence number of the last record: the base sequence plus the
    /// last offset delta, wrapping past `i32::MAX` to 0 as Kafka's does.
    pub fn last_sequence(&self) -> i32 {
        add_sequence(self.base_sequence, self.last_offset_delta.max(0))
    }

    /// The compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression_codec(&self) -> i16 {
        self.attributes & 0x7
    }
}

/// `seq + n`, wrapping past `i32::MAX` to 0 (Kafka's sequence arithmetic).
pub fn add_sequence(seq: i32, n: i32) -> i32 {
    let sum = i64::from(seq) + i64::from(n);
    if sum > i64::from(i32::MAX) {
        (sum - i64::from(i32::MAX) - 1) as i32
    } else {
        sum as i32
    }
}

/// The idempotent producer a batch is built for (KIP-98): its id, epoch and
/// the sequence number of the batch's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// The producer id.
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i16,
    /// The sequence of the first record.
    pub base_sequence: i32,
}

/// Checks one whole batch (`b` is exactly the batch): the header fields, the
/// magic byte and the CRC-32C. Returns the parsed header.
pub fn validate(b: &[u8]) -> Result<BatchHeader, &'static str> {
    let h = BatchHeader::parse(b)?;
    if h.size != b.len() {
        return Err("length field disagrees with the batch size");
    }
    if h.magic != MAGIC_V2 {
        return Err("not a v2 record batch (magic byte is not 2)");
    }
    if h.last_offset_delta < 0 {
        return Err("negative last offset delta");
    }
    if h.record_count < 0 {
        return Err("negative record count");
    }
    if h.compression_codec() > 4 {
        return Err("unknown compression codec");
    }
    if crc32c::crc32c(&b[ATTRIBUTES_AT..]) != h.crc {
        return Err("CRC-32C mismatch");
    }
    Ok(h)
}

/// Rewrites the base offset and partition leader epoch of the batch at the
/// start of `b`. The CRC does not cover these fields, so it stays valid.
pub fn stamp(b: &mut [u8], base_offset: u64, leader_epoch: u32) {
    b[0..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
    b[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&(leader_epoch as i32).to_be_bytes());
}

/// Iterates over the whole batches in a buffer of concatenated batches,
/// yielding `(position, header)`; stops at the first incomplete batch.
pub fn headers(buf: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let h = BatchHeader::parse(buf.get(pos..)?).ok()?;
        if pos + h.size > buf.len() {
            return None;
        }
        let at = pos;
        pos += h.size;
        Some((at, h))
    })
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

/// An unknown compression name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?}: use none, gzip, snappy, lz4 or zstd")]
pub struct UnknownCompression(pub String);

impl std::str::FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            "snappy" => Ok(Self::Snappy),
            "lz4" => Ok(Self::Lz4),
            "zstd" => Ok(Self::Zstd),
            _ => Err(UnknownCompression(s.to_owned())),
        }
    }
}

impl Compression {
    fn kafka(self) -> KafkaCompression {
        match self {
            Self::None => KafkaCompression::None,
            Self::Gzip => KafkaCompression::Gzip,
            Self::Snappy => KafkaCompression::Snappy,
            Self::Lz4 => KafkaCompression::Lz4,
            Self::Zstd => KafkaCompression::Zstd,
        }
    }
}

/// A record as [`build_batch`] reads it: the client's producer record and
/// [`RecordInput`] both are one.
pub trait BatchRecord {
    /// The key, if any.
    fn key(&self) -> Option<&Bytes>;
    /// The value; `None` is a tombstone.
    fn value(&self) -> Option<&Bytes>;
    /// Application headers.
    fn headers(&self) -> &[(String, Option<Bytes>)];
    /// Create time in ms since the epoch; `None`: now.
    fn timestamp_ms(&self) -> Option<i64>;
}

/// One record to put in a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordInput {
    /// Optional key (partitioning, compaction).
    pub key: Option<Bytes>,
    /// The payload; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Application headers.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Create time in ms since the epoch.
    pub timestamp_ms: i64,
}

impl BatchRecord for RecordInput {
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
        Some(self.timestamp_ms)
    }
}

/// Encodes `records` as one v2 batch with base offset 0 and no producer id,
/// compressed with `compression`. The leader assigns the real offsets on
/// append.
pub fn build_batch<R: BatchRecord>(
    records: &[R],
    compression: Compression,
) -> Result<Bytes, BatchError> {
    build_producer_batch(records, compression, None)
}

/// [`build_batch`] for an idempotent producer: the header carries `producer`'s
/// id, epoch and base sequence (inside the CRC, so a resent batch is the same
/// bytes and the leader can recognise it).
pub fn build_producer_batch<R: BatchRecord>(
    records: &[R],
    compression: Compression,
    producer: Option<ProducerStamp>,
) -> Result<Bytes, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let now = crate::time::now_ms();
    let mut size = 128;
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            size += 16
                + r.key().map_or(0, Bytes::len)
                + r.value().map_or(0, Bytes::len)
                + r.headers()
                    .iter()
                    .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len) + 4)
                    .sum::<usize>();
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: producer.map_or(NO_PRODUCER_ID, |p| p.producer_id),
                producer_epoch: producer.map_or(-1, |p| p.producer_epoch),
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder groups records whose offset - sequence is
                // constant; without a producer this keeps one batch and
                // yields base sequence -1 (none).
                sequence: match producer {
                    Some(p) => add_sequence(p.base_sequence, i as i32),
                    None => i as i32 - 1,
                },
                timestamp: r.timestamp_ms().unwrap_or(now),
                key: r.key().cloned(),
                value: r.value().cloned(),
                headers: r
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.clone().into(), v.clone()))
                    .collect(),
            }
        })
        .collect();
    let mut buf = BytesMut::with_capacity(size);
    let opts = RecordEncodeOptions {
        version: MAGIC_V2,
        compression: compression.kafka(),
    };
    RecordBatchEncoder::encode(&mut buf, &recs, &opts)
        .map_err(|e| BatchError::Encode(e.to_string()))?;
    Ok(buf.freeze())
}

/// One decoded record: what a consumer sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    /// The record's offset in the partition.
    pub offset: u64,
    /// Timestamp in ms.
    pub timestamp_ms: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Application headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A fetched batch that does not decode: its records are lost to a consumer
/// unless it is skipped on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndecodableBatch {
    /// Base offset of the batch.
    pub offset: u64,
    /// The offset right after it.
    pub next_offset: u64,
    /// What the decoder said.
    pub reason: String,
}

/// The records of some fetched bytes, and the batches that would not decode
/// (when not skipping, decoding stops at the first, so nothing after it is
/// returned).
#[derive(Debug)]
pub struct Decoded<T> {
    /// The records, in offset order.
    pub records: Vec<T>,
    /// Batches that did not decode, in offset order.
    pub undecodable: Vec<UndecodableBatch>,
}

/// Decodes the whole batches in `bytes` one by one, keeping offsets
/// `>= from` (a fetch may start mid-batch), each record turned into a `T` by
/// `each`. A batch that does not decode is reported in
/// [`Decoded::undecodable`]; with `skip` the batches after it are decoded
/// too, without it decoding stops there so a consumer never moves past it
/// silently. A partial batch at the end (a size-limited fetch) is ignored.
pub fn decode_batches<T>(
    bytes: Bytes,
    from: u64,
    skip: bool,
    mut each: impl FnMut(DecodedRecord) -> T,
) -> Decoded<T> {
    let mut out = Decoded {
        records: Vec::new(),
        undecodable: Vec::new(),
    };
    let mut pos = 0usize;
    while bytes.len() - pos >= HEADER_LEN {
        let b = &bytes[pos..];
        let base = be_i64(b, 0);
        let len = be_i32(b, 8);
        let delta = be_i32(b, LAST_OFFSET_DELTA_AT);
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
                    .map(|r| {
                        each(DecodedRecord {
                            offset: r.offset as u64,
                            timestamp_ms: r.timestamp,
                            key: r.key,
                            value: r.value,
                            headers: r
                                .headers
                                .into_iter()
                                .map(|(k, v)| (k.to_string(), v))
                                .collect(),
                        })
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

/// Decodes every record in `bytes`, which must be whole batches that all
/// decode: a partial batch or trailing bytes are an error here (the
/// durability checker relies on it), unlike in [`decode_batches`].
pub fn decode_records(bytes: &[u8]) -> Result<Vec<DecodedRecord>, BatchError> {
    let whole: usize = headers(bytes).map(|(_, h)| h.size).sum();
    if whole != bytes.len() {
        return Err(BatchError::Decode {
            offset: headers(bytes).last().map_or(0, |(_, h)| h.next_offset()),
            reason: format!(
                "{} trailing bytes are not a whole batch",
                bytes.len() - whole
            ),
        });
    }
    let d = decode_batches(Bytes::copy_from_slice(bytes), 0, false, |r| r);
    match d.undecodable.into_iter().next() {
        Some(u) => Err(BatchError::Decode {
            offset: u.offset,
            reason: u.reason,
        }),
        None => Ok(d.records),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: &str, ts: i64) -> RecordInput {
        RecordInput {
            key: Some(Bytes::from(format!("k-{v}"))),
            value: Some(Bytes::from(v.to_owned())),
            headers: vec![("h".into(), Some(Bytes::from_static(b"x")))],
            timestamp_ms: ts,
        }
    }

    #[test]
    fn build_validate_stamp_decode() {
        let b = build_batch(
            &[rec("a", 10), rec("b", 30), rec("c", 20)],
            Compression::None,
        )
        .unwrap();
        let h = validate(&b).unwrap();
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.first_timestamp, 10);
        assert_eq!(h.max_timestamp, 30);
        assert_eq!(h.size, b.len());

        let mut m = b.to_vec();
        stamp(&mut m, 1000, 7);
        let h2 = validate(&m).expect("stamping keeps the CRC valid");
        assert_eq!(h2.base_offset, 1000);
        assert_eq!(h2.leader_epoch, 7);
        let recs = decode_records(&m).unwrap();
        let offsets: Vec<u64> = recs.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![1000, 1001, 1002]);
        assert_eq!(recs[1].value.as_deref(), Some(&b"b"[..]));
        assert_eq!(
            recs[1].headers,
            [("h".to_owned(), Some(Bytes::from_static(b"x")))]
        );
    }

    #[test]
    fn every_codec_round_trips() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records: Vec<RecordInput> = (0..50).map(|i| rec(&format!("v{i}"), i)).collect();
            let b = build_batch(&records, c).unwrap();
            let h = validate(&b).unwrap();
            assert_eq!(h.compression_codec(), c as i16, "{c:?}");
            let back = decode_records(&b).unwrap();
            assert_eq!(back.len(), 50, "{c:?}");
            assert_eq!(back[49].value.as_deref(), Some(&b"v49"[..]));
        }
        assert_eq!("zstd".parse::<Compression>(), Ok(Compression::Zstd));
        assert!("brotli".parse::<Compression>().is_err());
        assert_eq!(
            build_batch::<RecordInput>(&[], Compression::None),
            Err(BatchError::Empty)
        );
    }

    #[test]
    fn a_bad_batch_is_reported_and_skipped_only_on_request() {
        let mut bytes = Vec::new();
        let mut first = build_batch(&[rec("a", 1)], Compression::None)
            .unwrap()
            .to_vec();
        stamp(&mut first, 0, 0);
        let mut bad = build_batch(&[rec("b", 1)], Compression::None)
            .unwrap()
            .to_vec();
        stamp(&mut bad, 1, 0);
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        let mut last = build_batch(&[rec("c", 1)], Compression::None)
            .unwrap()
            .to_vec();
        stamp(&mut last, 2, 0);
        for b in [&first, &bad, &last] {
            bytes.extend_from_slice(b);
        }
        let bytes = Bytes::from(bytes);
        let stop = decode_batches(bytes.clone(), 0, false, |r| r.offset);
        assert_eq!(stop.records, [0]);
        assert_eq!(stop.undecodable.len(), 1);
        assert_eq!(
            (stop.undecodable[0].offset, stop.undecodable[0].next_offset),
            (1, 2)
        );
        let skip = decode_batches(bytes.clone(), 0, true, |r| r.offset);
        assert_eq!(skip.records, [0, 2]);
        // A fetch that starts mid-way keeps only offsets from there; a
        // partial batch at the end is not an error.
        let from = decode_batches(bytes.slice(..bytes.len() - 3), 1, true, |r| r.offset);
        assert!(from.records.is_empty());
        assert!(decode_records(&bytes).is_err());
        // decode_records takes whole batches only.
        assert_eq!(decode_records(&first).unwrap().len(), 1);
        let cut = decode_records(&first[..first.len() - 1]).unwrap_err();
        assert!(cut.to_string().contains("not a whole batch"), "{cut}");
        let mut trailing = first.clone();
        trailing.extend_from_slice(&[0u8; 10]);
        assert!(decode_records(&trailing).is_err());
    }

    #[test]
    fn bit_flips_in_crc_region_are_detected() {
        let b = build_batch(&[rec("hello", 1)], Compression::None).unwrap();
        for i in ATTRIBUTES_AT..b.len() {
            let mut m = b.to_vec();
            m[i] ^= 0x10;
            assert!(validate(&m).is_err(), "flip at {i} not detected");
        }
    }
}
