//! TLS with real processes (issue 15, item 2): nodes serve TLS and talk to
//! each other over mutual TLS with certificates `rivulet cert` made; the CLI
//! produces and consumes through it with `--tls-ca`; a plaintext client and
//! one trusting another CA are refused with a one-line error that says why.
//! (The fault suite runs an episode over TLS too: `faults.rs`.)

use std::future::Future;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_tests::{cli, rivulet_binary, Cluster};

const TEST_LIMIT: Duration = Duration::from_secs(180);
const SETTLE: Duration = Duration::from_secs(20);

async fn bounded(body: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("the test exceeded its {TEST_LIMIT:?} limit");
    }
}

fn produce_lines(c: &Cluster, topic: &str, lines: &str) {
    let mut child = Command::new(rivulet_binary())
        .env("RIVULET_TLS_CA", c.tls_dir().join("ca.pem"))
        .args(["--bootstrap", &cli::bootstrap(c), "produce", topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rivulet <args>` against the cluster with `env` set and no inherited
/// TLS settings; its exit status and stderr.
fn run_with(c: &Cluster, env: &[(&str, String)], args: &[&str]) -> (bool, String) {
    let mut command = Command::new(rivulet_binary());
    for v in ["RIVULET_TLS_CA", "RIVULET_TLS_CERT", "RIVULET_TLS_KEY"] {
        command.env_remove(v);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command
        .args(["--bootstrap", &cli::bootstrap(c)])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_end_to_end_and_untrusted_clients_are_refused() {
    bounded(async {
        let c = Cluster::start_tls(3).await;
        // Registration, heartbeats and Raft ran over mutual TLS: every
        // broker is live.
        c.wait_unfenced(&c.ids(), SETTLE).await;
        let out = cli::ok_stdout(
            &c,
            &[
                "topic",
                "create",
                "secure",
                "--partitions",
                "2",
                "--replication-factor",
                "3",
                "--config",
                "min.insync.replicas=3",
            ],
        );
        assert!(out.contains("secure"), "{out}");
        c.wait_isr("secure", 0, &[1, 2, 3], SETTLE).await;
        c.wait_isr("secure", 1, &[1, 2, 3], SETTLE).await;
        let lines: String = (0..500).map(|i| format!("tls-{i}\n")).collect();
        // acks=all with min.insync.replicas=3: acknowledged only once both
        // followers fetched over TLS.
        produce_lines(&c, "secure", &lines);
        let got = cli::ok_stdout(
            &c,
            &[
                "consume",
                "secure",
                "--from-beginning",
                "--max-messages",
                "500",
                "--timeout-ms",
                "10000",
            ],
        );
        let mut got: Vec<&str> = got.lines().collect();
        got.sort_unstable();
        let mut want: Vec<String> = (0..500).map(|i| format!("tls-{i}")).collect();
        want.sort_unstable();
        assert_eq!(got, want);
        // The replicas hold the same bytes (acks=all with
        // min.insync.replicas=3: every replica had them when acknowledged).
        let mut total = 0;
        for p in [0, 1] {
            let first = c.replica_log_bytes(1, "secure", p);
            total += first.len();
            for id in [2, 3] {
                assert_eq!(
                    c.replica_log_bytes(id, "secure", p),
                    first,
                    "partition {p} node {id}"
                );
            }
        }
        assert!(total > 500 * 5, "the records are in the logs");

        // A plaintext client.
        let (ok, err) = run_with(&c, &[], &["cluster", "status"]);
        assert!(!ok);
        assert!(err.contains("--tls-ca"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        // A client trusting another CA.
        let other = c.tls_dir().join("other");
        let made = Command::new(rivulet_binary())
            .args(["cert", "--out-dir"])
            .arg(&other)
            .output()
            .unwrap();
        assert!(made.status.success());
        let (ok, err) = run_with(
            &c,
            &[("RIVULET_TLS_CA", other.join("ca.pem").display().to_string())],
            &["topic", "list"],
        );
        assert!(!ok);
        assert!(err.contains("not signed by the CA"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        // A raw plaintext gRPC call gets no answer.
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr(1)))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        let r = rivulet_proto::v1::controller_client::ControllerClient::new(plain)
            .describe_cluster(rivulet_proto::v1::DescribeClusterRequest {})
            .await;
        assert!(r.is_err(), "{r:?}");
        // A client presenting the client certificate works too.
        let dir = c.tls_dir();
        let (ok, err) = run_with(
            &c,
            &[
                ("RIVULET_TLS_CA", dir.join("ca.pem").display().to_string()),
                (
                    "RIVULET_TLS_CERT",
                    dir.join("client.pem").display().to_string(),
                ),
                (
                    "RIVULET_TLS_KEY",
                    dir.join("client.key").display().to_string(),
                ),
            ],
            &["cluster", "status"],
        );
        assert!(ok, "{err}");
        // A certificate without its key is a usage error.
        let (ok, err) = run_with(
            &c,
            &[
                ("RIVULET_TLS_CA", dir.join("ca.pem").display().to_string()),
                (
                    "RIVULET_TLS_CERT",
                    dir.join("client.pem").display().to_string(),
                ),
            ],
            &["cluster", "status"],
        );
        assert!(!ok);
        assert!(
            err.contains("--tls-cert and --tls-key go together"),
            "{err}"
        );
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}

/// Without a cluster secret, node certificates over mutual TLS prove the
/// nodes (the "accepted alternative proof"): the cluster forms and
/// replicates, while a client presenting the CA's *client* certificate, or
/// none, cannot make a node-only call even when it claims a node id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_prove_nodes_without_a_secret() {
    use rivulet_proto::v1::replication_client::ReplicationClient;
    use rivulet_proto::v1::{ReplicaFetchPartition, ReplicaFetchRequest};
    bounded(async {
        let c = Cluster::start_tls_without_secret(3).await;
        c.wait_unfenced(&c.ids(), SETTLE).await;
        assert_eq!(c.create_topic_with(1, "mtls", 1, 3, &[]).await, 0);
        c.wait_isr("mtls", 0, &[1, 2, 3], SETTLE).await;
        produce_lines(&c, "mtls", "one\ntwo\nthree\n");
        let out = cli::ok_stdout(
            &c,
            &[
                "consume",
                "mtls",
                "--from-beginning",
                "--timeout-ms",
                "2000",
            ],
        );
        assert_eq!(out.lines().count(), 3, "{out}");
        let log = std::fs::read_to_string(c.log_path(1)).unwrap();
        assert!(
            log.contains("proven by node certificates"),
            "node 1 says how nodes are proven"
        );

        let dir = c.tls_dir();
        let with_client_cert = rivulet_proto::tls::ClientTls::from_files(
            &dir.join("ca.pem"),
            Some((&dir.join("client.pem"), &dir.join("client.key"))),
        )
        .unwrap();
        let fetch = |id: u64| {
            let mut req = tonic::Request::new(ReplicaFetchRequest {
                replica_id: id,
                broker_epoch: 1,
                max_wait_ms: 10,
                min_bytes: 0,
                max_bytes: 1 << 20,
                partitions: vec![ReplicaFetchPartition {
                    topic: "mtls".into(),
                    partition: 0,
                    current_leader_epoch: 0,
                    fetch_offset: 0,
                    last_fetched_epoch: None,
                    partition_max_bytes: 1 << 20,
                    storage_failed: false,
                }],
            });
            req.metadata_mut().insert(
                "x-rivulet-node-proof",
                format!("mtls.{id}").parse().unwrap(),
            );
            req
        };
        for tls in [Some(&with_client_cert), c.client_tls()] {
            let ch = rivulet_proto::channel(&c.addr(1).to_string(), Duration::from_secs(2), tls)
                .unwrap();
            let s = ReplicationClient::new(ch)
                .replica_fetch(fetch(2))
                .await
                .expect_err("a client is not a node");
            assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
            assert!(s.message().contains("node certificate"), "{s:?}");
        }
        // The ISR is untouched by the forged fetches.
        c.wait_isr("mtls", 0, &[1, 2, 3], SETTLE).await;
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}
