//! Sparse indexes beside each segment: the offset index (`.index`, offset →
//! byte position) and the time index (`.timeindex`, max timestamp so far →
//! offset). One entry is added every `index_interval_bytes` of log.
//!
//! Entries live in memory and are written through to the file. The files are
//! accelerators, never the source of truth: a missing or damaged index is
//! rebuilt from the segment, and any prefix of a valid index is still valid
//! (lookups scan forward from the floor entry), so an index that lost its tail
//! in a crash only costs a longer scan.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::LogError;

/// One fixed-size entry of a sparse index.
pub(crate) trait IndexEntry: Copy + std::fmt::Debug {
    /// Bytes per entry on disk.
    const SIZE: usize;
    fn encode(&self, out: &mut [u8]);
    fn decode(b: &[u8]) -> Self;
    /// The ordering key; must increase along the index.
    fn key(&self) -> i64;
}

/// `.index`: offset relative to the segment base → byte position in the `.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        Self {
            relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
    fn key(&self) -> i64 {
        i64::from(self.relative_offset)
    }
}

/// `.timeindex`: the largest timestamp seen so far in the segment, and the
/// relative base offset of the batch that brought it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[0..8]);
        Self {
            timestamp_ms: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
    fn key(&self) -> i64 {
        self.timestamp_ms
    }
}

/// A sparse index file and its entries in memory.
///
/// The file holds no descriptor between writes: new entries collect in
/// memory and are written (and fsynced) when the segment is sealed at a roll
/// (and after the active segment is rebuilt on open), so a replica's active
/// segment holds one descriptor (its `.log`), not three, and 10,000
/// partitions fit a node's descriptor limit. Nothing is lost by writing
/// late: the index is derived data, and the active segment's is rebuilt by
/// scanning it whenever the log is opened.
#[derive(Debug)]
pub(crate) struct SparseIndex<E: IndexEntry> {
    /// The index file.
    path: PathBuf,
    /// All entries, keys strictly increasing.
    entries: Vec<E>,
    /// How many of `entries` the file holds.
    written: usize,
}

impl<E: IndexEntry> SparseIndex<E> {
    /// Creates (or empties) the index file.
    pub(crate) fn create(path: &Path) -> Result<Self, LogError> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(LogError::io("create index", path))?;
        Ok(Self {
            path: path.to_owned(),
            entries: Vec::new(),
            written: 0,
        })
    }

    /// Loads an existing index. `Ok(None)` if it is missing or fails `check`
    /// (a torn size, keys out of order, or an entry `check` rejects): the caller
    /// rebuilds it from the segment.
    pub(crate) fn load(path: &Path, check: impl Fn(&E) -> bool) -> Result<Option<Self>, LogError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogError::io("read index", path)(e)),
        };
        if bytes.len() % E::SIZE != 0 {
            return Ok(None);
        }
        let entries: Vec<E> = bytes.chunks_exact(E::SIZE).map(E::decode).collect();
        let ordered = entries.windows(2).all(|w| w[0].key() < w[1].key());
        if !ordered || !entries.iter().all(check) {
            return Ok(None);
        }
        let written = entries.len();
        Ok(Some(Self {
            path: path.to_owned(),
            entries,
            written,
        }))
    }

    fn open(&self) -> Result<File, LogError> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(LogError::io("open index", &self.path))
    }

    /// Writes the entries the file lacks and fsyncs it.
    pub(crate) fn flush(&mut self) -> Result<(), LogError> {
        if self.written == self.entries.len() {
            return Ok(());
        }
        let mut buf = vec![0u8; (self.entries.len() - self.written) * E::SIZE];
        for (e, chunk) in self.entries[self.written..]
            .iter()
            .zip(buf.chunks_exact_mut(E::SIZE))
        {
            e.encode(chunk);
        }
        let f = self.open()?;
        f.write_all_at(&buf, (self.written * E::SIZE) as u64)
            .and_then(|()| f.sync_data())
            .map_err(LogError::io("write index", &self.path))?;
        self.written = self.entries.len();
        Ok(())
    }

    /// Writes out what is pending: the segment is no longer appended to.
    pub(crate) fn seal(&mut self) -> Result<(), LogError> {
        self.flush()
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[E] {
        &self.entries
    }

    pub(crate) fn last(&self) -> Option<E> {
        self.entries.last().copied()
    }

    /// Appends an entry (in memory until the next flush); ignored unless its
    /// key is larger than the last one.
    pub(crate) fn append(&mut self, entry: E) -> Result<(), LogError> {
        if self.last().is_some_and(|l| entry.key() <= l.key()) {
            return Ok(());
        }
        self.entries.push(entry);
        Ok(())
    }

    /// The last entry whose key is `<= key`.
    pub(crate) fn floor(&self, key: i64) -> Option<E> {
        let idx = self.entries.partition_point(|e| e.key() <= key);
        idx.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry whose key is `< key`.
    pub(crate) fn below(&self, key: i64) -> Option<E> {
        let idx = self.entries.partition_point(|e| e.key() < key);
        idx.checked_sub(1).map(|i| self.entries[i])
    }

    /// Keeps only the entries `keep` accepts (a prefix: it must be monotone).
    pub(crate) fn truncate_while(&mut self, keep: impl Fn(&E) -> bool) -> Result<(), LogError> {
        let n = self.entries.partition_point(keep);
        if n == self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(n);
        if n < self.written {
            self.open()?
                .set_len((n * E::SIZE) as u64)
                .map_err(LogError::io("truncate index", &self.path))?;
            self.written = n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_lookup_truncate_reload() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        let mut idx = SparseIndex::<OffsetEntry>::create(&p).unwrap();
        for i in 0..10u32 {
            idx.append(OffsetEntry {
                relative_offset: i * 10,
                position: i * 4096,
            })
            .unwrap();
        }
        // A non-increasing key is ignored.
        idx.append(OffsetEntry {
            relative_offset: 5,
            position: 1,
        })
        .unwrap();
        assert_eq!(idx.entries().len(), 10);
        assert_eq!(idx.floor(35).unwrap().relative_offset, 30);
        assert_eq!(idx.floor(30).unwrap().relative_offset, 30);
        assert_eq!(idx.below(30).unwrap().relative_offset, 20);
        assert!(idx.below(0).is_none());
        idx.flush().unwrap();
        idx.truncate_while(|e| e.relative_offset < 50).unwrap();
        assert_eq!(idx.entries().len(), 5);

        let loaded = SparseIndex::<OffsetEntry>::load(&p, |_| true)
            .unwrap()
            .unwrap();
        assert_eq!(loaded.entries(), idx.entries());
        // A check that rejects an entry makes the load fail (caller rebuilds).
        assert!(SparseIndex::<OffsetEntry>::load(&p, |e| e.position < 8192)
            .unwrap()
            .is_none());
        // A torn file fails too.
        std::fs::write(&p, [0u8; 13]).unwrap();
        assert!(SparseIndex::<OffsetEntry>::load(&p, |_| true)
            .unwrap()
            .is_none());
    }
}
