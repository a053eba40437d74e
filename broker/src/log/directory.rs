//! The log directory's identity (KIP-858): a random id written into
//! `<data-dir>/directory.id` when the directory is first used. The broker
//! registers with it, so the controller can tell a restarted replica from a
//! new, empty one on a replaced disk: the same broker id with another
//! directory id holds none of the records its predecessor acknowledged.
//!
//! A directory that already holds data but no id (written by a version
//! before directory ids) gets an id too, and counts as the same storage.

use std::hash::{BuildHasher, Hasher};
use std::path::Path;

use super::{checkpoint, LogError};

/// The file holding the id.
pub const DIRECTORY_ID_FILE: &str = "directory.id";

/// The identity of a log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirectory {
    /// 32 hex digits, fixed when the directory was first used.
    pub id: String,
    /// The directory held nothing before this start: its replicas are new.
    pub new: bool,
}

/// Reads the id of `data_dir`, creating it (durably) if it is missing.
/// Errors if the id file exists but cannot be read as one: a directory of
/// unknown identity must not be taken for either the old storage or new.
pub fn open_log_directory(data_dir: &Path) -> Result<LogDirectory, LogError> {
    let path = data_dir.join(DIRECTORY_ID_FILE);
    if let Some(entries) = checkpoint::read(&path)? {
        return match entries.as_slice() {
            [id] if is_id(id) => Ok(LogDirectory {
                id: id.clone(),
                new: false,
            }),
            _ => Err(LogError::UnknownDirectory(format!(
                "{} does not hold a directory id; remove it only if this directory is new",
                path.display()
            ))),
        };
    }
    if path.exists() {
        return Err(LogError::UnknownDirectory(format!(
            "{} is unreadable; remove it only if this directory is new",
            path.display()
        )));
    }
    let new = std::fs::read_dir(data_dir)
        .map_err(LogError::io("read directory", data_dir))?
        .next()
        .is_none();
    let id = random_id();
    checkpoint::write(&path, std::slice::from_ref(&id))?;
    Ok(LogDirectory { id, new })
}

fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// 128 random bits as hex, from the standard library's OS-seeded hasher
/// keys (no extra dependency), mixed with the time and process id.
fn random_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(salt);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_gets_an_id_that_stays() {
        let dir = tempfile::tempdir().unwrap();
        let first = open_log_directory(dir.path()).unwrap();
        assert!(first.new);
        assert!(is_id(&first.id), "{}", first.id);
        let again = open_log_directory(dir.path()).unwrap();
        assert_eq!(again.id, first.id);
        assert!(!again.new);
    }

    #[test]
    fn a_wiped_directory_gets_another_id() {
        let dir = tempfile::tempdir().unwrap();
        let first = open_log_directory(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(DIRECTORY_ID_FILE)).unwrap();
        let second = open_log_directory(dir.path()).unwrap();
        assert!(second.new);
        assert_ne!(second.id, first.id);
    }

    #[test]
    fn data_without_an_id_is_old_storage_and_a_bad_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("orders-0")).unwrap();
        let d = open_log_directory(dir.path()).unwrap();
        assert!(!d.new, "a directory with data is not new storage");
        std::fs::write(dir.path().join(DIRECTORY_ID_FILE), "0\n1\nnot-an-id\n").unwrap();
        assert!(open_log_directory(dir.path()).is_err());
        std::fs::write(dir.path().join(DIRECTORY_ID_FILE), "garbage").unwrap();
        assert!(open_log_directory(dir.path()).is_err());
    }
}
