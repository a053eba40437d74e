//! Finding the `rivulet` binary the nodes run: `RIVULET_BIN`, else the newer
//! of `target/debug/rivulet` and `target/release/rivulet`, else build it once
//! with `cargo build -p rivulet-cli`.
//!
//! The choice is made once per test process and printed on stderr, with the
//! binary's age, so a stale binary is visible in the test output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The workspace root: this crate's parent directory.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cluster-tests lives inside the workspace")
        .to_path_buf()
}

/// The `rivulet` binary, located (or built) on first use.
pub fn rivulet_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(locate)
}

fn locate() -> PathBuf {
    if let Some(bin) = std::env::var_os("RIVULET_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "RIVULET_BIN={} is not a file", bin.display());
        eprintln!("cluster-tests: using RIVULET_BIN={}", bin.display());
        return bin;
    }
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| root.join(t))
        .unwrap_or_else(|| root.join("target"));
    let newest = ["debug", "release"]
        .iter()
        .map(|profile| target.join(profile).join("rivulet"))
        .filter_map(|p| {
            let modified = p.metadata().and_then(|m| m.modified()).ok()?;
            Some((modified, p))
        })
        .max();
    if let Some((modified, bin)) = newest {
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        eprintln!(
            "cluster-tests: using {} (built {}s ago; set RIVULET_BIN to choose another, \
             or run `cargo build -p rivulet-cli` if it is stale)",
            bin.display(),
            age.as_secs()
        );
        return bin;
    }
    eprintln!(
        "cluster-tests: no rivulet binary under {}; running `cargo build -p rivulet-cli` once",
        target.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "rivulet-cli"])
        .current_dir(&root)
        .status()
        .expect("cannot run cargo");
    assert!(
        status.success(),
        "`cargo build -p rivulet-cli` failed: {status}"
    );
    let bin = target.join("debug").join("rivulet");
    assert!(bin.is_file(), "cargo built no {}", bin.display());
    bin
}
