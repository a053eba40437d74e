//! [`FileLog`]: the on-disk [`PartitionLog`], a directory of segments.
//!
//! Locking: one `RwLock` over the segment map and offsets (reads share it,
//! appends and truncations take it exclusively), and a separate `Mutex` +
//! `Condvar` for group commit, so an fsync never holds the log lock:
//!
//! ```text
//!  appender A: [write lock: write bytes]--sync_to(a)--[fsync ........]--> done
//!  appender B:     [write lock: write bytes]--sync_to(b)--wait------------+-> done (covered by A's fsync? no: next one)
//!  appender C:       [write lock: write bytes]--sync_to(c)--wait----------+
//!                                                               B fsyncs once for B and C
//! ```
//!
//! Recovery on open: every segment but the last is trusted up to its size
//! (it was fsynced when it was rolled); the last one is scanned batch by
//! batch and cut at the first torn or corrupt batch, with a warning naming
//! the file and the bytes dropped.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, warn};

use super::batch::{self, AppendOrigin};
use super::checkpoint;
use super::epoch::LeaderEpochCache;
use super::producers::{self, ProducerStates};
use super::segment::LogSegment;
use super::{
    now_ms, AppendInfo, FlushPolicy, LogConfig, LogError, LogOffsets, PartitionLog, ReadBound,
    RetentionOutcome, RetentionPolicy,
};

const EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
const HW_CHECKPOINT: &str = "high-watermark-checkpoint";
const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";

/// The mutable state behind the log lock.
#[derive(Debug)]
struct Inner {
    /// Segments by base offset; the last one is active. Never empty.
    segments: BTreeMap<u64, LogSegment>,
    /// First offset readers may ask for.
    log_start_offset: u64,
    /// Committed offset; `log_start_offset <= hw <= log_end_offset`.
    high_watermark: u64,
    /// Epoch → first offset, checkpointed whenever it changes.
    epochs: LeaderEpochCache,
    /// Wall-clock ms of the first append into the active segment (or of
    /// opening a non-empty one): age-based rolling counts from here, not from
    /// record timestamps, which clients choose and may set far in the past.
    active_since_ms: Option<i64>,
    /// Idempotent producers of the batches in the log.
    producers: ProducerStates,
}

impl Inner {
    /// The producer state of the log as it is now: the newest snapshot not
    /// past the log end, plus every batch after it. Snapshots past the end
    /// (their batches were cut) are deleted.
    fn load_producers(&self, dir: &Path) -> Result<ProducerStates, LogError> {
        let leo = self.log_end_offset();
        let first_base = *self.segments.keys().next().unwrap_or(&0);
        producers::remove_snapshots(dir, |o| o > leo)?;
        let mut loaded = None;
        for o in producers::snapshot_offsets(dir)?.into_iter().rev() {
            if let Some(s) = ProducerStates::read_snapshot(&producers::snapshot_path(dir, o))? {
                loaded = Some((o, s));
                break;
            }
            warn!(dir = %dir.display(), offset = o, "ignoring an unreadable producer snapshot");
        }
        let (from, mut states) = match loaded {
            Some((o, s)) => (o.max(first_base), s),
            None => (first_base, ProducerStates::new()),
        };
        let now = now_ms();
        for_each_header(&self.segments, from, |h| states.record(h, now))?;
        states.mark_clean();
        Ok(states)
    }
}

impl Inner {
    fn active(&self) -> &LogSegment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut LogSegment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn log_end_offset(&self) -> u64 {
        self.active().next_offset()
    }

    fn offsets(&self) -> LogOffsets {
        LogOffsets {
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
            high_watermark: self.high_watermark,
        }
    }

    /// The segment holding `offset`, for `log_start_offset <= offset < LEO`.
    fn segment_for(&self, offset: u64) -> Option<&LogSegment> {
        let floor = self.segments.range(..=offset).next_back().map(|(_, s)| s);
        floor
            .into_iter()
            .chain(self.segments.range(offset + 1..).map(|(_, s)| s))
            .find(|s| s.next_offset() > offset)
    }
}

/// Group-commit state, guarded separately from the log so fsyncs run unlocked.
#[derive(Debug)]
struct SyncState {
    /// Every offset below this is on disk.
    durable_offset: u64,
    /// An fsync is in flight; others wait on the condvar instead of issuing their own.
    syncing: bool,
    /// Bumped by every truncation, so an fsync that raced one cannot claim
    /// durability for bytes that were replaced.
    generation: u64,
    /// When the last fsync finished (for [`FlushPolicy::Interval`]).
    last_sync: Instant,
}

/// Counters for tests and benchmarks.
#[derive(Debug, Default)]
pub struct FileLogStats {
    /// fdatasync calls issued for appends.
    pub fsyncs: AtomicU64,
    /// Append calls.
    pub appends: AtomicU64,
}

/// Where a [`FileLog`] reads wall-clock time (ms since the Unix epoch); tests
/// substitute a manual clock.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(now_ms))
    }

    /// A clock that reads `f`.
    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// A partition log stored as segment files in one directory.
#[derive(Debug)]
pub struct FileLog {
    /// `<data-dir>/<topic>-<partition>`.
    dir: PathBuf,
    /// Segment, index and flush settings.
    config: LogConfig,
    /// Segments and offsets.
    inner: RwLock<Inner>,
    /// Group commit.
    sync: Mutex<SyncState>,
    /// Signalled when an fsync completes.
    synced: Condvar,
    /// Counters.
    stats: FileLogStats,
    /// Wall-clock time for age-based rolling.
    clock: Clock,
}

impl FileLog {
    /// Opens (creating if needed) the log in `dir`, recovering a damaged tail.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self, LogError> {
        Self::open_with_clock(dir, config, Clock::system())
    }

    /// [`FileLog::open`] with a chosen clock.
    pub fn open_with_clock(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Clock,
    ) -> Result<Self, LogError> {
        config.validate()?;
        let dir = dir.as_ref().to_owned();
        let created = !dir.exists();
        fs::create_dir_all(&dir).map_err(LogError::io("create log directory", &dir))?;
        if created {
            if let Some(parent) = dir.parent() {
                checkpoint::sync_dir(parent)?;
            }
        }

        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir).map_err(LogError::io("list log directory", &dir))? {
            let entry = entry.map_err(LogError::io("list log directory", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                match stem.parse::<u64>() {
                    Ok(base) if stem.len() == 20 => bases.push(base),
                    _ => {
                        warn!(file = %entry.path().display(), "ignoring unexpected file in log directory")
                    }
                }
            } else if name.ends_with(".tmp") {
                // A checkpoint whose rename never happened: the old file stands.
                let _ = fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        // Index files whose segment is gone.
        for entry in fs::read_dir(&dir).map_err(LogError::io("list log directory", &dir))? {
            let entry = entry.map_err(LogError::io("list log directory", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let stem = name
                .strip_suffix(".index")
                .or_else(|| name.strip_suffix(".timeindex"));
            if let Some(base) = stem.and_then(|s| s.parse::<u64>().ok()) {
                if bases.binary_search(&base).is_err() {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }

        let saved_start = checkpoint::read_u64(&dir.join(LOG_START_CHECKPOINT))?;
        let mut segments = BTreeMap::new();
        if bases.is_empty() {
            let base = saved_start.unwrap_or(0);
            segments.insert(
                base,
                LogSegment::create(&dir, base, config.index_interval_bytes)?,
            );
            checkpoint::sync_dir(&dir)?;
        }
        let last = bases.len().saturating_sub(1);
        for (i, &base) in bases.iter().enumerate() {
            let tail = i == last;
            let (mut seg, recovery) =
                LogSegment::open(&dir, base, config.index_interval_bytes, tail)?;
            if !tail {
                // Closes index files a rebuild may have opened.
                seg.seal()?;
            }
            if recovery.bytes_dropped > 0 {
                warn!(
                    file = %seg.path().display(),
                    bytes_dropped = recovery.bytes_dropped,
                    valid_bytes = seg.size(),
                    reason = recovery.reason.unwrap_or("unknown"),
                    "truncated a torn or corrupt segment tail during recovery"
                );
            }
            segments.insert(base, seg);
        }
        let mut prev_end: Option<u64> = None;
        for seg in segments.values() {
            if let Some(end) = prev_end {
                if seg.base_offset() != end {
                    warn!(
                        file = %seg.path().display(),
                        expected_base = end,
                        "segment does not start where the previous one ends"
                    );
                }
            }
            prev_end = Some(seg.next_offset());
        }

        let mut inner = Inner {
            segments,
            log_start_offset: 0,
            high_watermark: 0,
            epochs: LeaderEpochCache::default(),
            active_since_ms: None,
            producers: ProducerStates::new(),
        };
        let leo = inner.log_end_offset();
        let first_base = *inner.segments.keys().next().unwrap_or(&0);
        inner.log_start_offset = saved_start.unwrap_or(first_base).clamp(first_base, leo);

        // Epoch cache: the checkpoint, cut to the recovered end, completed by
        // the epochs stamped in the active segment (a crash can land between
        // a write and its checkpoint). Rebuilt from every batch if unreadable.
        let saved_epochs = checkpoint::read(&dir.join(EPOCH_CHECKPOINT))?.and_then(|lines| {
            lines
                .iter()
                .map(|l| {
                    let (e, o) = l.split_once(' ')?;
                    Some((e.parse().ok()?, o.parse().ok()?))
                })
                .collect::<Option<Vec<(u32, u64)>>>()
        });
        let rescan_from = match saved_epochs {
            Some(entries) => {
                inner.epochs = LeaderEpochCache::from_entries(entries);
                // Entries past the recovered end go; one starting exactly at
                // the end is a leader epoch assigned before its first append.
                inner.epochs.truncate_from_end(leo + 1);
                inner.active().base_offset()
            }
            None => first_base,
        };
        let latest_before = inner.epochs.entries().to_vec();
        {
            let Inner {
                segments, epochs, ..
            } = &mut inner;
            for_each_header(segments, rescan_from, |h| {
                if h.leader_epoch >= 0 {
                    epochs.assign(h.leader_epoch as u32, h.base_offset);
                }
            })?;
        }
        inner.epochs.truncate_from_start(inner.log_start_offset);
        if inner.epochs.entries() != latest_before.as_slice() {
            write_epochs(&dir, &inner.epochs)?;
        }

        inner.producers = inner.load_producers(&dir)?;

        let saved_hw = checkpoint::read_u64(&dir.join(HW_CHECKPOINT))?;
        inner.high_watermark = saved_hw.unwrap_or(0).clamp(inner.log_start_offset, leo);

        if inner.active().size() > 0 {
            inner.active_since_ms = Some(clock.now_ms());
        }
        // Everything recovered counts as durable from here on.
        inner.active_mut().flush()?;
        debug!(dir = %dir.display(), log_start = inner.log_start_offset, leo, hw = inner.high_watermark, "opened log");
        Ok(Self {
            dir,
            config,
            inner: RwLock::new(inner),
            sync: Mutex::new(SyncState {
                durable_offset: leo,
                syncing: false,
                generation: 0,
                last_sync: Instant::now(),
            }),
            synced: Condvar::new(),
            stats: FileLogStats::default(),
            clock,
        })
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters (fsyncs, appends).
    pub fn stats(&self) -> &FileLogStats {
        &self.stats
    }

    /// Every offset below this is on disk.
    pub fn durable_offset(&self) -> u64 {
        self.lock_sync().durable_offset
    }

    /// Total bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.read_inner()
            .segments
            .values()
            .map(LogSegment::size)
            .sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.read_inner().segments.len()
    }

    // A poisoned lock means a thread panicked mid-operation; the state it
    // guards was only ever changed by complete steps, so carry on with it.
    fn read_inner(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_inner(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sync(&self) -> MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the active segment must roll before `incoming` bytes whose
    /// batches span `offset_span` offsets are appended.
    fn should_roll(&self, inner: &Inner, incoming: usize, offset_span: u64) -> bool {
        let active = inner.active();
        if active.size() == 0 {
            return false;
        }
        let too_big = active.size() + incoming as u64 > self.config.segment_bytes;
        let too_old = match (self.config.segment_ms, inner.active_since_ms) {
            (Some(ms), Some(since)) => self.clock.now_ms().saturating_sub(since) >= ms,
            _ => false,
        };
        // Index entries hold offsets relative to the base as u32.
        let offsets_overflow =
            active.next_offset() + offset_span - active.base_offset() > u64::from(u32::MAX);
        too_big || too_old || offsets_overflow
    }

    /// Fsyncs the active segment, then starts a new one at the log end.
    /// Sets the log start to `start` and makes it durable: the checkpoint,
    /// producer snapshots below the newest at or before it (they describe
    /// nothing a recovery would replay), leader epochs that end below it.
    fn set_log_start_locked(&self, inner: &mut Inner, start: u64) -> Result<(), LogError> {
        inner.log_start_offset = start;
        checkpoint::write_u64(&self.dir.join(LOG_START_CHECKPOINT), start)?;
        if let Some(keep) = producers::snapshot_offsets(&self.dir)?
            .into_iter()
            .filter(|o| *o <= start)
            .max()
        {
            producers::remove_snapshots(&self.dir, |o| o < keep)?;
        }
        if inner.epochs.truncate_from_start(start) {
            write_epochs(&self.dir, &inner.epochs)?;
        }
        Ok(())
    }

    fn roll_locked(&self, inner: &mut Inner) -> Result<(), LogError> {
        let leo = inner.log_end_offset();
        if inner.active().size() == 0 {
            return Ok(());
        }
        inner.active_mut().seal()?;
        // The producers of every batch below the new segment: recovery
        // replays only the headers after it.
        inner.producers.write_snapshot(&self.dir, leo)?;
        inner.producers.mark_clean();
        let seg = LogSegment::create(&self.dir, leo, self.config.index_interval_bytes)?;
        checkpoint::sync_dir(&self.dir)?;
        debug!(dir = %self.dir.display(), base_offset = leo, "rolled segment");
        inner.segments.insert(leo, seg);
        inner.active_since_ms = None;
        Ok(())
    }

    /// Blocks until every offset below `target` is fsynced, issuing the fsync
    /// itself unless one is already in flight (then it waits and re-checks).
    /// `generation` is the sync generation the append was made in.
    fn sync_to(&self, target: u64, generation: u64) -> Result<(), LogError> {
        let mut st = self.lock_sync();
        loop {
            if st.generation != generation {
                return Err(LogError::TruncatedBeforeDurable { offset: target });
            }
            if st.durable_offset >= target {
                return Ok(());
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.syncing = true;
            drop(st);
            let (file, path, leo) = {
                let inner = self.read_inner();
                let a = inner.active();
                (
                    a.file().clone(),
                    a.path().to_owned(),
                    inner.log_end_offset(),
                )
            };
            let result = file.sync_data();
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            st = self.lock_sync();
            st.syncing = false;
            if result.is_ok() && st.generation == generation {
                st.durable_offset = st.durable_offset.max(leo);
                st.last_sync = Instant::now();
            }
            self.synced.notify_all();
            result.map_err(LogError::io("fsync segment", path))?;
        }
    }

    /// Marks a truncation: in-flight fsyncs no longer prove anything.
    fn bump_generation(&self, new_end: u64) {
        let mut st = self.lock_sync();
        st.generation += 1;
        st.durable_offset = st.durable_offset.min(new_end);
    }
}

/// Calls `each` with the header of every batch whose base offset is at
/// or after `from`, in offset order (reads 61 bytes per batch).
fn for_each_header(
    segments: &BTreeMap<u64, LogSegment>,
    from: u64,
    mut each: impl FnMut(&batch::BatchHeader),
) -> Result<(), LogError> {
    use std::os::unix::fs::FileExt;
    let first = segments.range(..=from).next_back().map_or(0, |(b, _)| *b);
    let mut buf = [0u8; batch::HEADER_LEN];
    for seg in segments.range(first..).map(|(_, s)| s) {
        let mut pos = match seg.find(from)? {
            Some((pos, _)) if seg.base_offset() <= from => pos,
            Some(_) => 0,
            None => continue,
        };
        while pos + batch::HEADER_LEN as u64 <= seg.size() {
            seg.file()
                .read_exact_at(&mut buf, pos)
                .map_err(LogError::io("read segment", seg.path()))?;
            let Ok(h) = batch::BatchHeader::parse(&buf) else {
                break;
            };
            if h.base_offset >= from {
                each(&h);
            }
            pos += h.size as u64;
        }
    }
    Ok(())
}

fn write_epochs(dir: &Path, epochs: &LeaderEpochCache) -> Result<(), LogError> {
    let lines: Vec<String> = epochs
        .entries()
        .iter()
        .map(|(e, o)| format!("{e} {o}"))
        .collect();
    checkpoint::write(&dir.join(EPOCH_CHECKPOINT), &lines)
}

impl PartitionLog for FileLog {
    fn append(&self, batches: &mut [u8], origin: AppendOrigin) -> Result<AppendInfo, LogError> {
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        batch::validate_leader_contents(batches, origin)?;
        let (info, generation) = {
            let mut inner = self.write_inner();
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
                    // Nothing to write; the original must be as durable as
                    // a new append would be before it is answered.
                    let generation = self.lock_sync().generation;
                    drop(inner);
                    if self.config.flush == FlushPolicy::Always {
                        self.sync_to(dup.last_offset + 1, generation)?;
                    }
                    return Ok(producers::duplicate_info(&dup));
                }
            }
            let (first, last) = match (metas.first(), metas.last()) {
                (Some(f), Some(l)) => (f.header, l.header),
                _ => return Err(LogError::corrupt(0, "empty append")),
            };
            if self.should_roll(
                &inner,
                batches.len(),
                last.next_offset() - first.base_offset,
            ) {
                self.roll_locked(&mut inner)?;
            }
            inner.active_mut().append(batches, &metas)?;
            if inner.active_since_ms.is_none() {
                inner.active_since_ms = Some(self.clock.now_ms());
            }
            let mut epochs_changed = false;
            for m in &metas {
                inner.producers.record(&m.header, now_ms());
                if m.header.leader_epoch >= 0 {
                    epochs_changed |= inner
                        .epochs
                        .assign(m.header.leader_epoch as u32, m.header.base_offset);
                }
            }
            if epochs_changed {
                write_epochs(&self.dir, &inner.epochs)?;
            }
            let info = AppendInfo {
                base_offset: first.base_offset,
                last_offset: last.last_offset(),
                max_timestamp: metas
                    .iter()
                    .map(|m| m.header.max_timestamp)
                    .max()
                    .unwrap_or(-1),
                size_bytes: batches.len(),
                duplicate: false,
            };
            (info, self.lock_sync().generation)
        };
        let end = info.last_offset + 1;
        match self.config.flush {
            FlushPolicy::Always => self.sync_to(end, generation)?,
            FlushPolicy::Interval(every) => {
                let due = self.lock_sync().last_sync.elapsed() >= every;
                if due {
                    self.sync_to(end, generation)?;
                }
            }
            FlushPolicy::Never => {}
        }
        Ok(info)
    }

    fn read(&self, offset: u64, max_bytes: usize, bound: ReadBound) -> Result<Bytes, LogError> {
        let inner = self.read_inner();
        let o = inner.offsets();
        if offset < o.log_start_offset || offset > o.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: o.log_start_offset,
                log_end_offset: o.log_end_offset,
            });
        }
        let upper = match bound {
            ReadBound::HighWatermark => o.high_watermark,
            ReadBound::LogEnd => o.log_end_offset,
        };
        if offset >= upper {
            return Ok(Bytes::new());
        }
        let Some(seg) = inner.segment_for(offset) else {
            return Ok(Bytes::new());
        };
        let Some((pos, _)) = seg.find(offset)? else {
            return Ok(Bytes::new());
        };
        Ok(Bytes::from(seg.read_from(pos, upper, max_bytes)?))
    }

    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(u64, i64)>, LogError> {
        let inner = self.read_inner();
        for seg in inner.segments.values() {
            if let Some(bytes) = seg.batch_for_timestamp(timestamp_ms)? {
                let header =
                    batch::BatchHeader::parse(&bytes).map_err(|r| LogError::corrupt(0, r))?;
                // Exact record offset where the records can be decoded; a batch
                // we cannot decode (an unsupported codec) answers with its start.
                return Ok(Some(super::timestamp_hit(
                    &bytes,
                    &header,
                    timestamp_ms,
                    inner.log_start_offset,
                )));
            }
        }
        Ok(None)
    }

    fn truncate_to(&self, offset: u64) -> Result<(), LogError> {
        let mut inner = self.write_inner();
        if offset < inner.log_start_offset {
            return Err(LogError::TruncateBelowStart {
                offset,
                log_start_offset: inner.log_start_offset,
            });
        }
        if offset >= inner.log_end_offset() {
            // Nothing to cut, but an epoch assigned at the end (a leadership
            // that wrote nothing) goes.
            if inner.epochs.truncate_from_end(offset) {
                write_epochs(&self.dir, &inner.epochs)?;
            }
            return Ok(());
        }
        // Whole segments past the point go; the one holding it is cut.
        let doomed: Vec<u64> = inner
            .segments
            .range(offset + 1..)
            .map(|(b, _)| *b)
            .collect();
        for base in doomed {
            if inner.segments.len() == 1 {
                break;
            }
            if let Some(seg) = inner.segments.remove(&base) {
                seg.delete()?;
            }
        }
        inner.active_mut().truncate_to(offset)?;
        checkpoint::sync_dir(&self.dir)?;
        let leo = inner.log_end_offset();
        inner.log_start_offset = inner.log_start_offset.min(leo);
        inner.high_watermark = inner.high_watermark.min(leo);
        if inner.epochs.truncate_from_end(leo) {
            write_epochs(&self.dir, &inner.epochs)?;
        }
        inner.producers = inner.load_producers(&self.dir)?;
        self.bump_generation(leo);
        debug!(dir = %self.dir.display(), requested = offset, leo, "truncated log");
        Ok(())
    }

    fn truncate_fully_and_start_at(&self, offset: u64) -> Result<(), LogError> {
        let mut inner = self.write_inner();
        // The segment map is never empty at any step, so an I/O error part
        // way returns an error and leaves a log that still works, never one
        // without an active segment. First the new (empty) segment at
        // `offset`: a segment already based there is emptied and reused.
        if let Some(seg) = inner.segments.get_mut(&offset) {
            seg.truncate_to(offset)?;
        } else {
            let seg = LogSegment::create(&self.dir, offset, self.config.index_interval_bytes)?;
            inner.segments.insert(offset, seg);
        }
        let others: Vec<u64> = inner
            .segments
            .keys()
            .copied()
            .filter(|b| *b != offset)
            .collect();
        for base in others {
            if let Some(seg) = inner.segments.remove(&base) {
                seg.delete()?;
            }
        }
        checkpoint::sync_dir(&self.dir)?;
        inner.log_start_offset = offset;
        inner.high_watermark = offset;
        inner.epochs.clear();
        write_epochs(&self.dir, &inner.epochs)?;
        producers::remove_snapshots(&self.dir, |_| true)?;
        inner.producers = ProducerStates::new();
        checkpoint::write_u64(&self.dir.join(LOG_START_CHECKPOINT), offset)?;
        checkpoint::write_u64(&self.dir.join(HW_CHECKPOINT), offset)?;
        self.bump_generation(offset);
        Ok(())
    }

    fn offsets(&self) -> LogOffsets {
        self.read_inner().offsets()
    }

    fn set_high_watermark(&self, offset: u64) {
        let mut inner = self.write_inner();
        let leo = inner.log_end_offset();
        inner.high_watermark = offset.clamp(inner.log_start_offset, leo);
    }

    fn checkpoint(&self) -> Result<(), LogError> {
        let hw = self.read_inner().high_watermark;
        checkpoint::write_u64(&self.dir.join(HW_CHECKPOINT), hw)
    }

    fn roll(&self) -> Result<(), LogError> {
        let mut inner = self.write_inner();
        self.roll_locked(&mut inner)
    }

    fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
    ) -> Result<RetentionOutcome, LogError> {
        let mut inner = self.write_inner();
        let expired = inner
            .producers
            .expire(now_ms, self.config.producer_id_expiration_ms);
        if expired > 0 {
            debug!(dir = %self.dir.display(), expired, "forgot idle producers");
        }
        let hw = inner.high_watermark;
        let mut total: u64 = inner.segments.values().map(LogSegment::size).sum();
        let mut doomed = Vec::new();
        // Oldest first, never the active segment, never data not yet committed.
        for seg in inner.segments.values().rev().skip(1).rev() {
            if seg.next_offset() > hw {
                break;
            }
            let expired = policy
                .retention_ms
                .is_some_and(|ms| seg.max_timestamp() < now_ms.saturating_sub(ms));
            let oversized = policy
                .retention_bytes
                .is_some_and(|max| total.saturating_sub(seg.size()) >= max);
            if !(expired || oversized) {
                break;
            }
            total -= seg.size();
            doomed.push(seg.base_offset());
        }
        let mut outcome = RetentionOutcome {
            log_start_offset: inner.log_start_offset,
            ..RetentionOutcome::default()
        };
        if doomed.is_empty() {
            return Ok(outcome);
        }
        for base in doomed {
            if let Some(seg) = inner.segments.remove(&base) {
                outcome.segments_deleted += 1;
                outcome.bytes_deleted += seg.size();
                seg.delete()?;
            }
        }
        let first_base = *inner.segments.keys().next().unwrap_or(&0);
        let start = inner.log_start_offset.max(first_base);
        self.set_log_start_locked(&mut inner, start)?;
        outcome.log_start_offset = start;
        debug!(dir = %self.dir.display(), ?outcome, "applied retention");
        Ok(outcome)
    }

    fn advance_log_start(&self, offset: u64) -> Result<u64, LogError> {
        let mut inner = self.write_inner();
        let start = offset.min(inner.high_watermark);
        if start <= inner.log_start_offset {
            return Ok(inner.log_start_offset);
        }
        // Whole segments below the new start, never the active one.
        let doomed: Vec<u64> = inner
            .segments
            .values()
            .rev()
            .skip(1)
            .rev()
            .take_while(|s| s.next_offset() <= start)
            .map(LogSegment::base_offset)
            .collect();
        // The checkpoint first: a crash after it reopens at the new start
        // whatever segments are still there.
        self.set_log_start_locked(&mut inner, start)?;
        for base in doomed {
            if let Some(seg) = inner.segments.remove(&base) {
                seg.delete()?;
            }
        }
        debug!(dir = %self.dir.display(), log_start = start, "advanced the log start");
        Ok(start)
    }

    fn flush(&self) -> Result<(), LogError> {
        let (leo, generation) = {
            let inner = self.read_inner();
            (inner.log_end_offset(), self.lock_sync().generation)
        };
        self.sync_to(leo, generation)
    }

    fn assign_epoch(&self, epoch: u32) -> Result<(), LogError> {
        let mut inner = self.write_inner();
        let leo = inner.log_end_offset();
        if inner.epochs.assign(epoch, leo) {
            write_epochs(&self.dir, &inner.epochs)?;
        }
        Ok(())
    }

    fn snapshot_producers(&self) -> Result<(), LogError> {
        let mut inner = self.write_inner();
        if !inner.producers.is_dirty() {
            return Ok(());
        }
        let leo = inner.log_end_offset();
        inner.producers.write_snapshot(&self.dir, leo)?;
        inner.producers.mark_clean();
        Ok(())
    }

    fn producer_stats(&self) -> (usize, usize) {
        let inner = self.read_inner();
        (inner.producers.len(), inner.producers.approx_memory_bytes())
    }

    fn latest_epoch(&self) -> Option<u32> {
        self.read_inner().epochs.latest_epoch()
    }

    fn size_bytes(&self) -> u64 {
        FileLog::size_bytes(self)
    }

    fn end_offset_for_epoch(&self, epoch: u32) -> Option<(u32, u64)> {
        let inner = self.read_inner();
        inner.epochs.end_offset_for(epoch, inner.log_end_offset())
    }
}
