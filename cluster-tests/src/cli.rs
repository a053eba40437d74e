//! Running the `rivulet` CLI against a [`Cluster`], for the tests that
//! drive it end to end: its output, its `--json` shapes, its one-line errors.

use std::process::{Command, Output};

use serde_json::Value;

use crate::{rivulet_binary, Cluster};

/// `--bootstrap` naming every node of `c`.
pub fn bootstrap(c: &Cluster) -> String {
    c.ids()
        .iter()
        .map(|id| c.addr(*id).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `rivulet --bootstrap <all nodes> <args>` to completion (trusting
/// the cluster's CA if it serves TLS; an explicit `--tls-ca` in `args`
/// wins).
pub fn rivulet(c: &Cluster, args: &[&str]) -> Output {
    let mut command = Command::new(rivulet_binary());
    command.env_remove("RIVULET_TLS_CA");
    if c.client_tls().is_some() {
        command.env("RIVULET_TLS_CA", c.tls_dir().join("ca.pem"));
    }
    for v in ["RIVULET_USER", "RIVULET_PASSWORD", "RIVULET_PASSWORD_FILE"] {
        command.env_remove(v);
    }
    if let Some(u) = c.user() {
        command
            .env("RIVULET_USER", u.user)
            .env("RIVULET_PASSWORD", u.password);
    }
    command
        .arg("--bootstrap")
        .arg(bootstrap(c))
        .args(args)
        .output()
        .expect("run rivulet")
}

/// [`rivulet`] as `user` with `password` (anonymous with `None`).
pub fn rivulet_as(c: &Cluster, user: Option<(&str, &str)>, args: &[&str]) -> Output {
    rivulet_as_with_stdin(c, user, args, "")
}

/// [`rivulet_as`] with `stdin` fed to the command.
pub fn rivulet_as_with_stdin(
    c: &Cluster,
    user: Option<(&str, &str)>,
    args: &[&str],
    stdin: &str,
) -> Output {
    use std::io::Write;
    let mut command = Command::new(rivulet_binary());
    for v in [
        "RIVULET_TLS_CA",
        "RIVULET_TLS_CERT",
        "RIVULET_TLS_KEY",
        "RIVULET_USER",
        "RIVULET_PASSWORD",
        "RIVULET_PASSWORD_FILE",
    ] {
        command.env_remove(v);
    }
    if c.client_tls().is_some() {
        command.env("RIVULET_TLS_CA", c.tls_dir().join("ca.pem"));
    }
    if let Some((u, p)) = user {
        command.env("RIVULET_USER", u).env("RIVULET_PASSWORD", p);
    }
    let mut child = command
        .arg("--bootstrap")
        .arg(bootstrap(c))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run rivulet");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("run rivulet")
}

/// Its stdout; panics with its stderr if it failed.
pub fn ok_stdout(c: &Cluster, args: &[&str]) -> String {
    let out = rivulet(c, args);
    assert!(
        out.status.success(),
        "rivulet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Its stdout as JSON; panics if it failed or printed something else.
pub fn ok_json(c: &Cluster, args: &[&str]) -> Value {
    let out = ok_stdout(c, args);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("rivulet {args:?} printed no JSON ({e}): {out}"))
}

/// Asserts it fails with one line on stderr containing `needle`, and no
/// panic.
pub fn fails_with(c: &Cluster, args: &[&str], needle: &str) {
    let out = rivulet(c, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rivulet {args:?} should fail");
    assert!(
        stderr.contains(needle),
        "rivulet {args:?}: {stderr:?} lacks {needle:?}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
