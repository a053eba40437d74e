//! The gRPC contract through a client we did not write: Python grpcio with
//! stubs generated from our .proto files (`cluster-tests/python/
//! grpc_contract.py`, and `auth_contract.py` for users and ACLs), against a
//! real three-node cluster.
//!
//! `./scripts/test` makes the virtualenv (grpcio, grpcio-tools from PyPI) and
//! sets `RIVULET_PYTHON`; without it the test says SKIPPED.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use cluster_tests::{cli, Cluster};

/// Runs `python/<script> <proto dir> <bootstrap> <extra>...` against `c` and
/// asserts every check passed and no node logged an unexpected error.
async fn run_script(python: OsString, c: &Cluster, script: &str, extra: Vec<OsString>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("python").join(script);
    let protos = root.join("../proto/proto");
    let bootstrap = cli::bootstrap(c);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(protos)
            .arg(bootstrap)
            .args(extra)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "the Python grpcio checks failed");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    c.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_contract_holds_for_a_python_grpcio_client() {
    let Some(python) = std::env::var_os("RIVULET_PYTHON") else {
        eprintln!("SKIPPED: RIVULET_PYTHON is not set (./scripts/test sets it up)");
        return;
    };
    let c = Cluster::start(3).await;
    c.wait_unfenced(&c.ids(), Duration::from_secs(20)).await;
    run_script(python, &c, "grpc_contract.py", Vec::new()).await;
}

/// Users and ACLs through Python grpcio over TLS, a user's SCRAM
/// credentials derived with Python's hashlib (`python/auth_contract.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_acls_hold_for_a_python_grpcio_client() {
    let Some(python) = std::env::var_os("RIVULET_PYTHON") else {
        eprintln!("SKIPPED: RIVULET_PYTHON is not set (./scripts/test sets it up)");
        return;
    };
    let c = Cluster::start_secured(3).await;
    c.wait_unfenced(&c.ids(), Duration::from_secs(20)).await;
    let extra = vec![
        c.tls_dir().join("ca.pem").into_os_string(),
        cluster_tests::ADMIN.0.into(),
        cluster_tests::ADMIN.1.into(),
    ];
    run_script(python, &c, "auth_contract.py", extra).await;
}
