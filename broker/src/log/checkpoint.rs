//! Small checkpoint files beside a partition's segments: the high watermark,
//! the log start offset and the leader-epoch cache.
//!
//! Every checkpoint is written whole to `<name>.tmp`, fsynced, renamed over the
//! old file and the directory fsynced, so a crash leaves either the old or the
//! new content, never a mix. The format is text, Kafka style: a version line,
//! an entry count, then one entry per line. A file that does not parse is
//! reported as `None` and the caller falls back to a safe default.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::LogError;

const VERSION: &str = "0";

/// Writes `entries` (each a line) to `path` atomically and durably.
pub(crate) fn write(path: &Path, entries: &[String]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let mut body = String::with_capacity(16 + entries.len() * 24);
    body.push_str(VERSION);
    body.push('\n');
    body.push_str(&entries.len().to_string());
    body.push('\n');
    for e in entries {
        body.push_str(e);
        body.push('\n');
    }
    let mut f = File::create(&tmp).map_err(LogError::io("create", &tmp))?;
    f.write_all(body.as_bytes())
        .map_err(LogError::io("write", &tmp))?;
    f.sync_all().map_err(LogError::io("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(LogError::io("rename", &tmp))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Reads the entry lines of a checkpoint; `Ok(None)` if it is missing or malformed.
pub(crate) fn read(path: &Path) -> Result<Option<Vec<String>>, LogError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Ok(None),
        Err(e) => return Err(LogError::io("read", path)(e)),
    };
    let mut lines = text.lines();
    if lines.next() != Some(VERSION) {
        return Ok(None);
    }
    let Some(Ok(count)) = lines.next().map(str::parse::<usize>) else {
        return Ok(None);
    };
    let entries: Vec<String> = lines.map(str::to_owned).collect();
    if entries.len() != count {
        return Ok(None);
    }
    Ok(Some(entries))
}

/// Writes a single number.
pub(crate) fn write_u64(path: &Path, value: u64) -> Result<(), LogError> {
    write(path, &[value.to_string()])
}

/// Reads a single number; `Ok(None)` if missing or malformed.
pub(crate) fn read_u64(path: &Path) -> Result<Option<u64>, LogError> {
    Ok(read(path)?.and_then(|e| match e.as_slice() {
        [v] => v.parse().ok(),
        _ => None,
    }))
}

/// Fsyncs a directory so a create, rename or delete in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.checkpoint");
        assert_eq!(read_u64(&p).unwrap(), None);
        write_u64(&p, 42).unwrap();
        assert_eq!(read_u64(&p).unwrap(), Some(42));
        assert!(!p.with_extension("tmp").exists());
        fs::write(&p, "0\n2\n1\n").unwrap();
        assert_eq!(read(&p).unwrap(), None, "count disagrees");
        fs::write(&p, "9\n1\n1\n").unwrap();
        assert_eq!(read(&p).unwrap(), None, "unknown version");
        fs::write(&p, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(read(&p).unwrap(), None, "not text");
    }
}
