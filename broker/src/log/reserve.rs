//! Space held back for the metadata log on a full disk.
//!
//! The node's Raft store (sled) shares the data directory's file system with
//! the partition logs, and sled treats one failed write as fatal: the node
//! would stop. A partition log that hits a full disk is only a storage
//! failure (leadership moves, the broker leaves the ISR), and that handling
//! itself writes metadata. So the broker keeps a file of
//! [`RESERVED_BYTES`] in the data directory and deletes it the moment a log
//! write meets a full disk, before the resulting metadata change reaches
//! the Raft store. While it is released the partition logs refuse appends
//! (they would eat the freed space); it is taken back, and appends resume,
//! once the file system has room for it twice over.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{info, warn};

/// The file holding the reserved space.
pub const RESERVE_FILE: &str = "reserved-space";

/// How much is held back: far more than the metadata writes of a disk-full
/// episode (a few KiB), small next to any real disk.
pub const RESERVED_BYTES: u64 = 8 << 20;

/// Whether `error` says the disk (or the quota) is full.
pub fn is_disk_full(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::StorageFull
        || error.kind() == std::io::ErrorKind::QuotaExceeded
}

/// The reserved space of one data directory.
#[derive(Debug)]
pub struct DiskReserve {
    /// `<data-dir>/reserved-space`.
    path: PathBuf,
    /// Its size.
    bytes: u64,
    /// Whether the file is in place.
    held: AtomicBool,
}

impl DiskReserve {
    /// Holds `bytes` in `data_dir` (at once, if the disk has room).
    pub fn new(data_dir: &Path, bytes: u64) -> Self {
        let reserve = DiskReserve {
            path: data_dir.join(RESERVE_FILE),
            bytes,
            held: AtomicBool::new(false),
        };
        let held = std::fs::metadata(&reserve.path).is_ok_and(|m| m.len() == bytes);
        reserve.held.store(held, Ordering::Release);
        if !held {
            reserve.restore();
        }
        reserve
    }

    /// Whether the space is held.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Frees the space (a log write met a full disk). Returns whether it
    /// was held.
    pub fn release(&self) -> bool {
        if !self.held.swap(false, Ordering::AcqRel) {
            return false;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                warn!(
                    bytes = self.bytes,
                    "a log write failed: released the space reserved for the metadata log"
                );
                true
            }
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot release the reserved space");
                false
            }
        }
    }

    /// Takes the space back once the file system has room for it twice
    /// over (blocking: writes the file). Returns whether it is held.
    pub fn restore(&self) -> bool {
        if self.is_held() {
            return true;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if fs2::available_space(dir).map_or(true, |free| free < self.bytes.saturating_mul(2)) {
            return false;
        }
        let tmp = self.path.with_extension("tmp");
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            let chunk = vec![0u8; 1 << 20];
            let mut left = self.bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        match written {
            Ok(()) => {
                self.held.store(true, Ordering::Release);
                info!(
                    bytes = self.bytes,
                    "holding space in reserve for the metadata log"
                );
                true
            }
            Err(_) => {
                let _ = std::fs::remove_file(&tmp);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_releases_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let r = DiskReserve::new(dir.path(), 4096);
        assert!(r.is_held());
        assert_eq!(
            std::fs::metadata(dir.path().join(RESERVE_FILE))
                .unwrap()
                .len(),
            4096
        );
        assert!(r.release());
        assert!(!dir.path().join(RESERVE_FILE).exists());
        assert!(!r.release(), "released once");
        assert!(r.restore());
        assert!(r.is_held());
        // A restarted node finds its reserve in place.
        assert!(DiskReserve::new(dir.path(), 4096).is_held());
    }
}
