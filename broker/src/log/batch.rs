//! Kafka v2 record batches, as bytes.
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
//! Records are built and parsed (by clients, tests and the rare broker path
//! that needs a record timestamp) with the `kafka-protocol` crate.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::LogError;

/// Bytes before the `len` field counts: base offset (8) + length (4).
pub const LOG_OVERHEAD: usize = 12;
/// The fixed v2 batch header, up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// The only batch format Rivulet stores.
pub const MAGIC_V2: i8 = 2;

const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const FIRST_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const RECORD_COUNT_AT: usize = 57;

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
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

    /// The compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression_codec(&self) -> i16 {
        self.attributes & 0x7
    }
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

/// Where one validated batch sits in an append buffer, with its header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchMeta {
    /// Byte position of the batch within the append buffer.
    pub position: usize,
    /// The header after offsets and epoch were assigned.
    pub header: BatchHeader,
}

/// Who is appending, which decides who assigns offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// The partition leader in the given epoch: the log assigns offsets from its
    /// end and stamps the epoch into every batch.
    Leader {
        /// The leader epoch the write is made in.
        epoch: u32,
    },
    /// A follower copying batches from its leader: offsets and epochs are kept
    /// as they are and must continue the log densely.
    Replica,
}

/// Kafka's LogValidator for a leader append, run by every log *before* it
/// takes its lock (decompressing is slow): no batch whose records cannot be
/// read reaches the log, where it would poison every consumer. The records of
/// all batches of one append together may inflate to at most
/// [`MAX_DECOMPRESSED_BATCH_BYTES`](super::records::MAX_DECOMPRESSED_BATCH_BYTES).
/// Replica appends copy what a leader validated and are not walked again.
/// Framing problems are left to [`prepare_append`], which reports them.
pub(crate) fn validate_leader_contents(buf: &[u8], origin: AppendOrigin) -> Result<(), LogError> {
    if origin == AppendOrigin::Replica {
        return Ok(());
    }
    let mut budget = super::records::MAX_DECOMPRESSED_BATCH_BYTES;
    let mut pos = 0usize;
    while buf.len() - pos >= HEADER_LEN {
        let rest = &buf[pos..];
        let Some(size) = batch_size_from_prefix(rest).filter(|s| *s <= rest.len()) else {
            return Ok(());
        };
        let Ok(header) = validate(&rest[..size]) else {
            return Ok(());
        };
        super::records::validate_records(&rest[..size], &header, &mut budget).map_err(
            |e| match e {
                super::records::RecordsError::Corrupt(reason) => LogError::corrupt(pos, reason),
                super::records::RecordsError::Invalid(reason) => LogError::InvalidRecord {
                    position: pos,
                    reason,
                },
            },
        )?;
        pos += size;
    }
    Ok(())
}

/// Splits `buf` into batches, validates each, and (for a leader append)
/// assigns dense offsets from `next_offset` and stamps the epoch. For a replica
/// append, checks that the batches continue the log at `next_offset` and that
/// epochs never go backwards from `latest_epoch`.
///
/// Shared by every [`PartitionLog`](super::PartitionLog) implementation so they
/// accept and refuse exactly the same input.
pub(crate) fn prepare_append(
    buf: &mut [u8],
    origin: AppendOrigin,
    next_offset: u64,
    latest_epoch: Option<u32>,
    max_batch_bytes: usize,
) -> Result<Vec<BatchMeta>, LogError> {
    if buf.is_empty() {
        return Err(LogError::corrupt(0, "empty append"));
    }
    if let (AppendOrigin::Leader { epoch }, Some(latest)) = (origin, latest_epoch) {
        if epoch < latest {
            return Err(LogError::StaleLeaderEpoch { epoch, latest });
        }
    }
    let mut metas = Vec::with_capacity(1);
    let mut pos = 0usize;
    let mut next = next_offset;
    let mut last_epoch = latest_epoch;
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.len() < HEADER_LEN {
            return Err(LogError::corrupt(
                pos,
                "trailing bytes shorter than a batch header",
            ));
        }
        let size = batch_size_from_prefix(rest)
            .ok_or_else(|| LogError::corrupt(pos, "impossible batch length"))?;
        if size > rest.len() {
            return Err(LogError::corrupt(
                pos,
                "batch length runs past the end of the request",
            ));
        }
        if size > max_batch_bytes {
            return Err(LogError::BatchTooLarge {
                size,
                max: max_batch_bytes,
            });
        }
        let batch = &mut buf[pos..pos + size];
        let mut header = validate(batch).map_err(|reason| LogError::corrupt(pos, reason))?;
        match origin {
            AppendOrigin::Leader { epoch } => {
                if header.last_offset_delta.checked_add(1) != Some(header.record_count) {
                    return Err(LogError::corrupt(
                        pos,
                        "record count disagrees with the last offset delta",
                    ));
                }
                stamp(batch, next, epoch);
                header.base_offset = next;
                header.leader_epoch = epoch as i32;
            }
            AppendOrigin::Replica => {
                if header.base_offset != next {
                    return Err(LogError::NonContiguousAppend {
                        expected: next,
                        got: header.base_offset,
                    });
                }
                if header.leader_epoch < 0 {
                    return Err(LogError::corrupt(
                        pos,
                        "replicated batch has no leader epoch",
                    ));
                }
                let epoch = header.leader_epoch as u32;
                if last_epoch.is_some_and(|l| epoch < l) {
                    return Err(LogError::corrupt(pos, "leader epoch goes backwards"));
                }
                last_epoch = Some(epoch);
            }
        }
        next = header.next_offset();
        metas.push(BatchMeta {
            position: pos,
            header,
        });
        pos += size;
    }
    Ok(metas)
}

/// One record for [`build_batch`]: what a producer sends.
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

/// Encodes `records` as one v2 batch with base offset 0 and no producer id.
/// The leader assigns the real offsets on append.
pub fn build_batch(records: &[RecordInput]) -> Result<Bytes, LogError> {
    if records.is_empty() {
        return Err(LogError::corrupt(0, "a batch needs at least one record"));
    }
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder groups records whose offset - sequence is constant;
            // this keeps one batch and yields base sequence -1 (none).
            sequence: i as i32 - 1,
            timestamp: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.clone().into(), v.clone()))
                .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let opts = RecordEncodeOptions {
        version: MAGIC_V2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &recs, &opts)
        .map_err(|e| LogError::corrupt(0, format!("cannot encode batch: {e}")))?;
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
}

/// Decodes every record in `bytes` (one or more whole batches).
pub fn decode_records(bytes: &[u8]) -> Result<Vec<DecodedRecord>, LogError> {
    let mut buf = Bytes::copy_from_slice(bytes);
    let sets = RecordBatchDecoder::decode_all(&mut buf)
        .map_err(|e| LogError::corrupt(0, format!("cannot decode batch: {e}")))?;
    Ok(sets
        .into_iter()
        .flat_map(|s| s.records)
        .map(|r| DecodedRecord {
            offset: r.offset as u64,
            timestamp_ms: r.timestamp,
            key: r.key,
            value: r.value,
        })
        .collect())
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
        let b = build_batch(&[rec("a", 10), rec("b", 30), rec("c", 20)]).unwrap();
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
    }

    #[test]
    fn bit_flips_in_crc_region_are_detected() {
        let b = build_batch(&[rec("hello", 1)]).unwrap();
        for i in ATTRIBUTES_AT..b.len() {
            let mut m = b.to_vec();
            m[i] ^= 0x10;
            assert!(validate(&m).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn prepare_leader_assigns_dense_offsets() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&build_batch(&[rec("a", 1), rec("b", 1)]).unwrap());
        buf.extend_from_slice(&build_batch(&[rec("c", 2)]).unwrap());
        let metas = prepare_append(
            &mut buf,
            AppendOrigin::Leader { epoch: 3 },
            40,
            None,
            1 << 20,
        )
        .unwrap();
        assert_eq!(metas.len(), 2);
        assert_eq!(metas[0].header.base_offset, 40);
        assert_eq!(metas[1].header.base_offset, 42);
        let hs: Vec<_> = headers(&buf)
            .map(|(_, h)| (h.base_offset, h.leader_epoch))
            .collect();
        assert_eq!(hs, vec![(40, 3), (42, 3)]);
    }

    #[test]
    fn prepare_refuses_bad_input() {
        let good = build_batch(&[rec("a", 1)]).unwrap().to_vec();
        let leader = AppendOrigin::Leader { epoch: 1 };
        // Too large.
        let mut b = good.clone();
        assert!(matches!(
            prepare_append(&mut b, leader, 0, None, 10),
            Err(LogError::BatchTooLarge { .. })
        ));
        // Truncated.
        let mut b = good[..good.len() - 1].to_vec();
        assert!(matches!(
            prepare_append(&mut b, leader, 0, None, 1 << 20),
            Err(LogError::CorruptBatch { .. })
        ));
        // Garbage.
        let mut b = vec![0xffu8; 100];
        assert!(prepare_append(&mut b, leader, 0, None, 1 << 20).is_err());
        // Stale leader epoch.
        let mut b = good.clone();
        assert!(matches!(
            prepare_append(&mut b, leader, 0, Some(2), 1 << 20),
            Err(LogError::StaleLeaderEpoch { .. })
        ));
        // Replica batch that does not continue the log.
        let mut b = good.clone();
        stamp(&mut b, 5, 1);
        assert!(matches!(
            prepare_append(&mut b, AppendOrigin::Replica, 0, None, 1 << 20),
            Err(LogError::NonContiguousAppend {
                expected: 0,
                got: 5
            })
        ));
        // Replica batch whose epoch goes backwards.
        let mut b = good;
        stamp(&mut b, 0, 1);
        assert!(prepare_append(&mut b, AppendOrigin::Replica, 0, Some(2), 1 << 20).is_err());
    }
}
