//! The broker's rules for Kafka v2 record batches on append: who assigns
//! offsets, what a leader accepts, how batches are stamped. The batch codec
//! itself (header, CRC, stamping, build, decode) is `rivulet_common::batch`,
//! re-exported here.

pub use rivulet_common::batch::{
    batch_size_from_prefix, headers, stamp, validate, BatchHeader, Compression, DecodedRecord,
    RecordInput, HEADER_LEN, LOG_OVERHEAD, MAGIC_V2,
};

use bytes::Bytes;

use super::LogError;

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

/// Encodes `records` as one uncompressed v2 batch with base offset 0 and
/// no producer id. The leader assigns the real offsets on append.
pub fn build_batch(records: &[RecordInput]) -> Result<Bytes, LogError> {
    rivulet_common::batch::build_batch(records, Compression::None)
        .map_err(|e| LogError::corrupt(0, e.to_string()))
}

/// Decodes every record in `bytes` (one or more whole batches).
pub fn decode_records(bytes: &[u8]) -> Result<Vec<DecodedRecord>, LogError> {
    rivulet_common::batch::decode_records(bytes).map_err(|e| LogError::corrupt(0, e.to_string()))
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
