//! [`MemoryLog`]: a [`PartitionLog`] in a `Vec`, for tests of the layers above
//! the storage (replication, the services). Same validation, offsets, epoch
//! cache and error behaviour as [`FileLog`](super::FileLog), checked by the
//! shared conformance suite; nothing survives the process. Retention treats
//! every batch as its own segment.

use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use super::batch::{self, AppendOrigin, BatchHeader};
use super::epoch::LeaderEpochCache;
use super::producers::{self, ProducerStates};
use super::{
    AppendInfo, LogConfig, LogError, LogOffsets, PartitionLog, ReadBound, RetentionOutcome,
    RetentionPolicy,
};

#[derive(Debug)]
struct StoredBatch {
    header: BatchHeader,
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Batches in offset order, dense from `log_start_offset`.
    batches: Vec<StoredBatch>,
    /// First offset readers may ask for.
    log_start_offset: u64,
    /// Offset of the next record when there are no batches.
    empty_end_offset: u64,
    /// Committed offset.
    high_watermark: u64,
    /// Epoch → first offset.
    epochs: LeaderEpochCache,
    /// Idempotent producers, from the batches held.
    producers: ProducerStates,
}

impl Inner {
    fn log_end_offset(&self) -> u64 {
        self.batches
            .last()
            .map_or(self.empty_end_offset, |b| b.header.next_offset())
    }

    /// The producer state again from the batches held (after a truncation).
    fn rebuild_producers(&mut self) {
        let mut states = ProducerStates::new();
        let now = super::now_ms();
        for b in &self.batches {
            states.record(&b.header, now);
        }
        self.producers = states;
    }
}

/// An in-memory partition log.
#[derive(Debug)]
pub struct MemoryLog {
    /// Only `max_batch_bytes` matters here.
    config: LogConfig,
    inner: Mutex<Inner>,
}

impl MemoryLog {
    /// An empty log starting at offset 0.
    pub fn new(config: LogConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PartitionLog for MemoryLog {
    fn append(&self, batches: &mut [u8], origin: AppendOrigin) -> Result<AppendInfo, LogError> {
        batch::validate_leader_contents(batches, origin)?;
        let mut inner = self.lock();
        let leo = inner.log_end_offset();
        let metas = batch::prepare_append(
            batches,
            origin,
            leo,
            inner.epochs.latest_epoch(),
            self.config.max_batch_bytes,
        )?;
        if matches!(origin, AppendOrigin::Leader { .. }) {
            if let Some(dup) = producers::check_leader_append(&inner.producers, &metas)? {
                return Ok(producers::duplicate_info(&dup));
            }
        }
        let mut info = AppendInfo {
            base_offset: leo,
            last_offset: leo,
            max_timestamp: -1,
            size_bytes: batches.len(),
            duplicate: false,
        };
        for m in &metas {
            let h = m.header;
            inner.producers.record(&h, super::now_ms());
            if h.leader_epoch >= 0 {
                inner.epochs.assign(h.leader_epoch as u32, h.base_offset);
            }
            info.last_offset = h.last_offset();
            info.max_timestamp = info.max_timestamp.max(h.max_timestamp);
            inner.batches.push(StoredBatch {
                header: h,
                bytes: batches[m.position..m.position + h.size].to_vec(),
            });
        }
        Ok(info)
    }

    fn read(&self, offset: u64, max_bytes: usize, bound: ReadBound) -> Result<Bytes, LogError> {
        let inner = self.lock();
        let leo = inner.log_end_offset();
        if offset < inner.log_start_offset || offset > leo {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: inner.log_start_offset,
                log_end_offset: leo,
            });
        }
        let upper = match bound {
            ReadBound::HighWatermark => inner.high_watermark,
            ReadBound::LogEnd => leo,
        };
        let first = inner
            .batches
            .partition_point(|b| b.header.last_offset() < offset);
        let mut out = Vec::new();
        for b in &inner.batches[first..] {
            if b.header.last_offset() >= upper {
                break;
            }
            if !out.is_empty() && out.len() + b.bytes.len() > max_bytes {
                break;
            }
            out.extend_from_slice(&b.bytes);
        }
        Ok(Bytes::from(out))
    }

    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(u64, i64)>, LogError> {
        let inner = self.lock();
        let Some(b) = inner
            .batches
            .iter()
            .find(|b| b.header.max_timestamp >= timestamp_ms)
        else {
            return Ok(None);
        };
        Ok(Some(super::timestamp_hit(
            &b.bytes,
            &b.header,
            timestamp_ms,
            inner.log_start_offset,
        )))
    }

    fn truncate_to(&self, offset: u64) -> Result<(), LogError> {
        let mut inner = self.lock();
        if offset < inner.log_start_offset {
            return Err(LogError::TruncateBelowStart {
                offset,
                log_start_offset: inner.log_start_offset,
            });
        }
        if offset >= inner.log_end_offset() {
            // Nothing to cut, but an epoch assigned at the end (a leadership
            // that wrote nothing) goes.
            inner.epochs.truncate_from_end(offset);
            return Ok(());
        }
        let keep = inner
            .batches
            .partition_point(|b| b.header.last_offset() < offset);
        if let Some(b) = inner.batches.get(keep) {
            inner.empty_end_offset = b.header.base_offset;
        }
        inner.batches.truncate(keep);
        let leo = inner.log_end_offset();
        inner.log_start_offset = inner.log_start_offset.min(leo);
        inner.high_watermark = inner.high_watermark.min(leo);
        inner.epochs.truncate_from_end(leo);
        inner.rebuild_producers();
        Ok(())
    }

    fn truncate_fully_and_start_at(&self, offset: u64) -> Result<(), LogError> {
        let mut inner = self.lock();
        *inner = Inner {
            log_start_offset: offset,
            empty_end_offset: offset,
            high_watermark: offset,
            ..Inner::default()
        };
        Ok(())
    }

    fn offsets(&self) -> LogOffsets {
        let inner = self.lock();
        LogOffsets {
            log_start_offset: inner.log_start_offset,
            log_end_offset: inner.log_end_offset(),
            high_watermark: inner.high_watermark,
        }
    }

    fn set_high_watermark(&self, offset: u64) {
        let mut inner = self.lock();
        let leo = inner.log_end_offset();
        inner.high_watermark = offset.clamp(inner.log_start_offset, leo);
    }

    fn checkpoint(&self) -> Result<(), LogError> {
        Ok(())
    }

    fn roll(&self) -> Result<(), LogError> {
        Ok(())
    }

    fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
    ) -> Result<RetentionOutcome, LogError> {
        let mut inner = self.lock();
        inner
            .producers
            .expire(now_ms, self.config.producer_id_expiration_ms);
        let hw = inner.high_watermark;
        let mut total: u64 = inner.batches.iter().map(|b| b.bytes.len() as u64).sum();
        let mut outcome = RetentionOutcome::default();
        // Like FileLog: never the newest "segment", never above the HW.
        let candidates = inner.batches.len().saturating_sub(1);
        let mut n = 0;
        for b in &inner.batches[..candidates] {
            let size = b.bytes.len() as u64;
            let expired = policy
                .retention_ms
                .is_some_and(|ms| b.header.max_timestamp < now_ms.saturating_sub(ms));
            let oversized = policy
                .retention_bytes
                .is_some_and(|max| total.saturating_sub(size) >= max);
            if b.header.next_offset() > hw || !(expired || oversized) {
                break;
            }
            total -= size;
            outcome.bytes_deleted += size;
            n += 1;
        }
        if n > 0 {
            inner.batches.drain(..n);
            let start = inner.batches[0].header.base_offset;
            inner.log_start_offset = inner.log_start_offset.max(start);
            inner.epochs.truncate_from_start(start);
        }
        outcome.segments_deleted = n;
        outcome.log_start_offset = inner.log_start_offset;
        Ok(outcome)
    }

    fn advance_log_start(&self, offset: u64) -> Result<u64, LogError> {
        let mut inner = self.lock();
        let start = offset.min(inner.high_watermark);
        if start > inner.log_start_offset {
            // Whole batches below it, never the newest (as FileLog keeps
            // its active segment).
            let keep_from = inner.batches.len().saturating_sub(1);
            let n = inner.batches[..keep_from]
                .iter()
                .take_while(|b| b.header.next_offset() <= start)
                .count();
            inner.batches.drain(..n);
            inner.log_start_offset = start;
            inner.epochs.truncate_from_start(start);
        }
        Ok(inner.log_start_offset)
    }

    fn flush(&self) -> Result<(), LogError> {
        Ok(())
    }

    fn assign_epoch(&self, epoch: u32) -> Result<(), LogError> {
        let mut inner = self.lock();
        let leo = inner.log_end_offset();
        inner.epochs.assign(epoch, leo);
        Ok(())
    }

    fn latest_epoch(&self) -> Option<u32> {
        self.lock().epochs.latest_epoch()
    }

    fn size_bytes(&self) -> u64 {
        self.lock()
            .batches
            .iter()
            .map(|b| b.bytes.len() as u64)
            .sum()
    }

    fn snapshot_producers(&self) -> Result<(), LogError> {
        Ok(())
    }

    fn producer_stats(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.producers.len(), inner.producers.approx_memory_bytes())
    }

    fn end_offset_for_epoch(&self, epoch: u32) -> Option<(u32, u64)> {
        let inner = self.lock();
        inner.epochs.end_offset_for(epoch, inner.log_end_offset())
    }
}
