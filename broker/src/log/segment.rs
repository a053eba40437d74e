//! One segment of a partition log: `<base offset>.log` holding whole v2
//! batches back to back, with its sparse `.index` and `.timeindex`.
//!
//! Invariants: the `.log` holds exactly `size` valid bytes; batches in it have
//! dense offsets `[base_offset, next_offset)`; index entries point at batch
//! starts below `size`. A segment is written only at its end, and shrinks only
//! through [`LogSegment::truncate_to`].

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::{self, BatchHeader, BatchMeta, HEADER_LEN};
use super::index::{OffsetEntry, SparseIndex, TimeEntry};
use super::LogError;

/// File name of a segment file: the base offset as 20 digits plus `ext`.
pub(crate) fn file_name(base_offset: u64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// What recovering a segment found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// Bytes cut from the end because they were not valid batches.
    pub bytes_dropped: u64,
    /// Why the scan stopped early, if it did.
    pub reason: Option<&'static str>,
}

/// A segment and its indexes.
#[derive(Debug)]
pub(crate) struct LogSegment {
    /// Offset of the first batch (and the file name).
    base_offset: u64,
    /// Path of the `.log` file.
    path: PathBuf,
    /// The `.log` file; shared so a flusher can fsync without the log lock.
    file: Arc<File>,
    /// Bytes of valid batches in the file.
    size: u64,
    /// Offset after the last batch (`base_offset` when empty).
    next_offset: u64,
    /// Largest batch max-timestamp (-1 when empty).
    max_timestamp: i64,
    /// Offset → position, one entry per `index_interval_bytes`.
    offset_index: SparseIndex<OffsetEntry>,
    /// Max timestamp so far → offset, added with offset index entries.
    time_index: SparseIndex<TimeEntry>,
    /// Bytes appended since the last index entry.
    bytes_since_index: u64,
    /// How sparse the indexes are.
    index_interval_bytes: u64,
}

impl LogSegment {
    /// Creates a new empty segment, replacing any files of the same name.
    pub(crate) fn create(
        dir: &Path,
        base_offset: u64,
        index_interval_bytes: u64,
    ) -> Result<Self, LogError> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(LogError::io("create segment", &path))?;
        Ok(Self {
            base_offset,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_index: SparseIndex::create(&dir.join(file_name(base_offset, "index")))?,
            time_index: SparseIndex::create(&dir.join(file_name(base_offset, "timeindex")))?,
            bytes_since_index: 0,
            index_interval_bytes,
            path,
        })
    }

    /// Opens an existing segment. With `recover`, every batch is validated
    /// (CRC, magic, dense offsets), a damaged tail is cut off and the indexes
    /// are rebuilt; without it, the indexes are loaded (rebuilt if damaged) and
    /// only the part after the last index entry is scanned.
    pub(crate) fn open(
        dir: &Path,
        base_offset: u64,
        index_interval_bytes: u64,
        recover: bool,
    ) -> Result<(Self, Recovery), LogError> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io("open segment", &path))?;
        let size = file
            .metadata()
            .map_err(LogError::io("stat segment", &path))?
            .len();
        let index_path = dir.join(file_name(base_offset, "index"));
        let time_path = dir.join(file_name(base_offset, "timeindex"));
        let loaded = if recover {
            None
        } else {
            let max_rel = size.min(u64::from(u32::MAX)) as u32;
            let oi = SparseIndex::<OffsetEntry>::load(&index_path, |e| {
                u64::from(e.position) < size && e.position <= max_rel
            })?;
            let ti = SparseIndex::<TimeEntry>::load(&time_path, |_| true)?;
            oi.zip(ti)
        };
        let rebuild = loaded.is_none();
        let (offset_index, time_index) = match loaded {
            Some(pair) => pair,
            None => (
                SparseIndex::create(&index_path)?,
                SparseIndex::create(&time_path)?,
            ),
        };
        let mut seg = Self {
            base_offset,
            path,
            file: Arc::new(file),
            size,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_index,
            time_index,
            bytes_since_index: 0,
            index_interval_bytes,
        };
        let recovery = if rebuild {
            seg.rescan(recover)?
        } else {
            seg.scan_tail_state()?;
            Recovery::default()
        };
        Ok((seg, recovery))
    }

    /// Scans from the start, rebuilding indexes and in-memory state. With
    /// `validate`, stops at the first invalid batch and truncates the file there.
    fn rescan(&mut self, validate: bool) -> Result<Recovery, LogError> {
        let file_len = self.size;
        self.size = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.bytes_since_index = 0;
        let mut pos = 0u64;
        let mut buf = Vec::new();
        let mut reason = None;
        while pos < file_len {
            let h = match self.read_header_at(pos, file_len) {
                Ok(h) => h,
                Err(r) => {
                    reason = Some(r);
                    break;
                }
            };
            if pos + h.size as u64 > file_len {
                reason = Some("batch runs past the end of the file (torn write)");
                break;
            }
            if validate {
                buf.resize(h.size, 0);
                self.file
                    .read_exact_at(&mut buf, pos)
                    .map_err(LogError::io("read segment", &self.path))?;
                if let Err(r) = batch::validate(&buf) {
                    reason = Some(r);
                    break;
                }
                if h.base_offset != self.next_offset {
                    reason = Some("batch offset does not continue the segment");
                    break;
                }
            }
            self.track_batch(pos, &h)?;
            pos += h.size as u64;
        }
        let dropped = file_len - pos;
        if dropped > 0 && validate {
            self.file
                .set_len(pos)
                .map_err(LogError::io("truncate segment", &self.path))?;
            self.file
                .sync_all()
                .map_err(LogError::io("fsync segment", &self.path))?;
        }
        self.size = pos;
        Ok(Recovery {
            bytes_dropped: dropped,
            reason: if dropped > 0 { reason } else { None },
        })
    }

    /// Recomputes `next_offset`, `max_timestamp` and the index spacing by
    /// scanning headers after the last offset index entry.
    fn scan_tail_state(&mut self) -> Result<(), LogError> {
        let (mut pos, start_offset) = match self.offset_index.last() {
            Some(e) => (
                u64::from(e.position),
                self.base_offset + u64::from(e.relative_offset),
            ),
            None => (0, self.base_offset),
        };
        self.next_offset = start_offset;
        self.max_timestamp = self.time_index.last().map_or(-1, |e| e.timestamp_ms);
        self.bytes_since_index = 0;
        while pos < self.size {
            let Ok(h) = self.read_header_at(pos, self.size) else {
                break;
            };
            self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
            self.next_offset = h.next_offset();
            self.bytes_since_index += h.size as u64;
            pos += h.size as u64;
        }
        Ok(())
    }

    /// Updates in-memory state and indexes for a batch written at `pos`.
    fn track_batch(&mut self, pos: u64, h: &BatchHeader) -> Result<(), LogError> {
        if self.bytes_since_index >= self.index_interval_bytes {
            let rel = (h.base_offset - self.base_offset) as u32;
            self.offset_index.append(OffsetEntry {
                relative_offset: rel,
                position: pos as u32,
            })?;
            // Every record before this batch has a timestamp <= max_timestamp.
            if self.max_timestamp >= 0 {
                self.time_index.append(TimeEntry {
                    timestamp_ms: self.max_timestamp,
                    relative_offset: rel,
                })?;
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.size as u64;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        self.next_offset = h.next_offset();
        Ok(())
    }

    /// Reads the header of the batch at `pos` of a file of `len` valid bytes.
    fn read_header_at(&self, pos: u64, len: u64) -> Result<BatchHeader, &'static str> {
        if pos + HEADER_LEN as u64 > len {
            return Err("batch header runs past the end of the file (torn write)");
        }
        let mut h = [0u8; HEADER_LEN];
        self.file
            .read_exact_at(&mut h, pos)
            .map_err(|_| "segment read failed")?;
        BatchHeader::parse(&h)
    }

    /// Appends already-validated batches (`buf`, described by `metas`).
    pub(crate) fn append(&mut self, buf: &[u8], metas: &[BatchMeta]) -> Result<(), LogError> {
        self.file
            .write_all_at(buf, self.size)
            .map_err(LogError::io("write segment", &self.path))?;
        let start = self.size;
        for m in metas {
            self.track_batch(start + m.position as u64, &m.header)?;
        }
        self.size += buf.len() as u64;
        Ok(())
    }

    /// Position and header of the batch holding `offset` (the first batch whose
    /// last offset is `>= offset`), or `None` if `offset` is past the end.
    pub(crate) fn find(&self, offset: u64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let rel = offset
            .saturating_sub(self.base_offset)
            .min(u64::from(u32::MAX)) as i64;
        let mut pos = self
            .offset_index
            .floor(rel)
            .map_or(0, |e| u64::from(e.position));
        self.scan_from(&mut pos, |h| h.last_offset() >= offset)
    }

    /// Scans batch headers from `*pos` until `stop` accepts one.
    fn scan_from(
        &self,
        pos: &mut u64,
        stop: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        while *pos < self.size {
            let h = self.read_header_at(*pos, self.size).map_err(|reason| {
                LogError::corrupt(*pos as usize, format!("{}: {reason}", self.path.display()))
            })?;
            if stop(&h) {
                return Ok(Some((*pos, h)));
            }
            *pos += h.size as u64;
        }
        Ok(None)
    }

    /// Reads whole batches from `pos` while their last offset is below
    /// `upper_offset` and they fit in `max_bytes` (the first batch always fits).
    pub(crate) fn read_from(
        &self,
        pos: u64,
        upper_offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, LogError> {
        let mut end = pos;
        while end < self.size {
            let h = self.read_header_at(end, self.size).map_err(|reason| {
                LogError::corrupt(end as usize, format!("{}: {reason}", self.path.display()))
            })?;
            if h.last_offset() >= upper_offset {
                break;
            }
            if end > pos && (end - pos) as usize + h.size > max_bytes {
                break;
            }
            end += h.size as u64;
        }
        let mut out = vec![0u8; (end - pos) as usize];
        self.file
            .read_exact_at(&mut out, pos)
            .map_err(LogError::io("read segment", &self.path))?;
        Ok(out)
    }

    /// The first batch whose max timestamp is `>= timestamp_ms`, as its bytes.
    pub(crate) fn batch_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<Vec<u8>>, LogError> {
        if self.max_timestamp < timestamp_ms {
            return Ok(None);
        }
        let mut pos = match self.time_index.below(timestamp_ms) {
            Some(e) => {
                let rel = i64::from(e.relative_offset);
                self.offset_index
                    .floor(rel)
                    .map_or(0, |o| u64::from(o.position))
            }
            None => 0,
        };
        match self.scan_from(&mut pos, |h| h.max_timestamp >= timestamp_ms)? {
            Some((p, h)) => {
                let mut out = vec![0u8; h.size];
                self.file
                    .read_exact_at(&mut out, p)
                    .map_err(LogError::io("read segment", &self.path))?;
                Ok(Some(out))
            }
            None => Ok(None),
        }
    }

    /// Removes every batch whose last offset is `>= offset` and fsyncs, so a
    /// truncated (possibly diverged) tail cannot come back after a crash.
    pub(crate) fn truncate_to(&mut self, offset: u64) -> Result<(), LogError> {
        let Some((pos, h)) = self.find(offset)? else {
            return Ok(());
        };
        let new_next = h.base_offset;
        let rel_keep = new_next - self.base_offset;
        self.file
            .set_len(pos)
            .map_err(LogError::io("truncate segment", &self.path))?;
        self.file
            .sync_all()
            .map_err(LogError::io("fsync segment", &self.path))?;
        self.size = pos;
        self.offset_index
            .truncate_while(|e| u64::from(e.relative_offset) < rel_keep)?;
        self.time_index
            .truncate_while(|e| u64::from(e.relative_offset) < rel_keep)?;
        self.scan_tail_state()
    }

    /// Fsyncs the data file and writes out the indexes.
    pub(crate) fn flush(&mut self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(LogError::io("fsync segment", &self.path))?;
        self.flush_indexes()
    }

    /// Writes out (and fsyncs) index entries the index files lack.
    pub(crate) fn flush_indexes(&mut self) -> Result<(), LogError> {
        self.offset_index.flush()?;
        self.time_index.flush()
    }

    /// Fsyncs everything and writes out the indexes: the segment is no
    /// longer appended to.
    pub(crate) fn seal(&mut self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(LogError::io("fsync segment", &self.path))?;
        self.offset_index.seal()?;
        self.time_index.seal()
    }

    /// Deletes the segment's files.
    pub(crate) fn delete(self) -> Result<(), LogError> {
        let dir = self.path.parent().map(Path::to_owned).unwrap_or_default();
        for ext in ["log", "index", "timeindex"] {
            let p = dir.join(file_name(self.base_offset, ext));
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("delete segment file", &p)(e)),
            }
        }
        Ok(())
    }

    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset
    }
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
