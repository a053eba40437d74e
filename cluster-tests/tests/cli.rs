//! The `rivulet` CLI end to end against a real three-node cluster: the admin
//! commands, their `--json` shapes (a contract scripts rely on), and the
//! one-line errors with a non-zero exit for bad input.

use std::process::Output;
use std::time::Duration;

use cluster_tests::cli::{fails_with, ok_json, ok_stdout, rivulet};
use cluster_tests::{rivulet_binary, wait_until, Cluster};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_work_end_to_end_with_json_and_clear_errors() {
    let c = Cluster::start(3).await;
    c.leader().await;
    c.wait_unfenced(&c.ids(), Duration::from_secs(10)).await;

    let status = ok_json(&c, &["cluster", "status", "--json"]);
    assert!(status["cluster_id"]
        .as_str()
        .is_some_and(|s| s.starts_with("rivulet-")));
    assert!(status["controller_leader"].as_u64().is_some());
    let brokers = status["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 3);
    for b in brokers {
        assert!(b["id"].as_u64().is_some() && b["address"].as_str().is_some());
        assert_eq!(b["fenced"], Value::Bool(false));
    }

    let out = rivulet(
        &c,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let t = ok_json(&c, &["topic", "describe", "orders", "--json"]);
    assert_eq!(t["name"], "orders");
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"].as_u64(), Some(i as u64));
        assert!(p["leader"].as_u64().is_some());
        assert_eq!(p["replicas"].as_array().unwrap().len(), 3);
        assert_eq!(p["isr"].as_array().unwrap().len(), 3);
        assert!(p["leader_epoch"].as_u64().is_some());
        for key in ["high_watermark", "log_start_offset", "elr", "offline"] {
            assert!(p.get(key).is_some(), "{key} missing from the JSON shape");
        }
        assert_eq!(p["offline"], false);
    }
    assert_eq!(t["configs"]["min.insync.replicas"], "2");

    // Without --replication-factor: 3 on a 3-node cluster, and said so.
    let out = ok_stdout(&c, &["topic", "create", "defaulted", "--partitions", "2"]);
    assert!(out.contains("replication factor 3 (the default"), "{out}");
    let t = ok_json(&c, &["topic", "describe", "defaulted", "--json"]);
    assert_eq!(t["partitions"][0]["replicas"].as_array().unwrap().len(), 3);

    // More partitions, never fewer; the new ones are led and in sync.
    let out = ok_stdout(
        &c,
        &["topic", "add-partitions", "defaulted", "--partitions", "4"],
    );
    assert!(out.contains("now has 4 partitions"), "{out}");
    let t = ok_json(&c, &["topic", "describe", "defaulted", "--json"]);
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    assert!(parts[3]["isr"].as_array().unwrap().len() == 3, "{t}");
    fails_with(
        &c,
        &["topic", "add-partitions", "defaulted", "--partitions", "3"],
        "INVALID_PARTITIONS",
    );

    let list = ok_json(&c, &["topic", "list", "--json"]);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "orders"));

    fails_with(&c, &["topic", "create", "orders"], "TOPIC_ALREADY_EXISTS");
    fails_with(&c, &["topic", "create", "bad name"], "INVALID_TOPIC");
    fails_with(
        &c,
        &["topic", "create", "wide", "--replication-factor", "4"],
        "INVALID_REPLICATION_FACTOR",
    );
    fails_with(
        &c,
        &["topic", "create", "cfg", "--config", "retention.ms=soon"],
        "INVALID_CONFIG",
    );
    fails_with(
        &c,
        &["topic", "create", "cfg", "--config", "novalue"],
        "key=value",
    );
    fails_with(
        &c,
        &["topic", "describe", "nope"],
        "UNKNOWN_TOPIC_OR_PARTITION",
    );

    let out = rivulet(&c, &["topic", "delete", "orders"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        "the deleted topic to disappear",
        Duration::from_secs(5),
        || async {
            let list = ok_json(&c, &["topic", "list", "--json"]);
            (!list
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "orders"))
            .then_some(())
        },
    )
    .await;
    c.assert_no_unexpected_errors(&[]);
}

#[test]
fn an_unreachable_cluster_is_a_one_line_error() {
    let out = std::process::Command::new(rivulet_binary())
        .args(["--bootstrap", "127.0.0.1:1", "cluster", "status"])
        .output()
        .expect("run rivulet");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot reach any node"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// Runs `rivulet --bootstrap <all nodes> <args>` with `input` on stdin.
fn rivulet_stdin(c: &Cluster, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let bootstrap: Vec<String> = c.ids().iter().map(|id| c.addr(*id).to_string()).collect();
    let mut child = std::process::Command::new(rivulet_binary())
        .arg("--bootstrap")
        .arg(bootstrap.join(","))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rivulet");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("rivulet output");
    writer.join().expect("writer").expect("write stdin");
    out
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_through_the_cli() {
    let mut c = Cluster::start(3).await;
    c.leader().await;
    c.wait_unfenced(&c.ids(), Duration::from_secs(10)).await;
    let create = [
        "topic",
        "create",
        "events",
        "--partitions",
        "3",
        "--replication-factor",
        "3",
        "--config",
        "min.insync.replicas=2",
    ];
    assert!(rivulet(&c, &create).status.success());

    // Keyed records: one key always lands on one partition, in order.
    let input: String = (0..300)
        .map(|i| format!("user-{}:event-{i}\n", i % 7))
        .collect();
    let out = rivulet_stdin(
        &c,
        &["produce", "events", "--key-separator", ":"],
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "produce: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = rivulet(
        &c,
        &[
            "consume",
            "events",
            "--from-beginning",
            "--timeout-ms",
            "1500",
            "--print-key",
            "--print-offset",
        ],
    );
    assert!(
        out.status.success(),
        "consume: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = lines(&out);
    assert_eq!(got.len(), 300, "every record once");
    let mut partition_of_key = std::collections::BTreeMap::new();
    let mut last_seq = std::collections::BTreeMap::new();
    for line in &got {
        let mut f = line.split('\t');
        let (po, key, value) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let partition = po.split(':').next().unwrap().to_owned();
        let prev = partition_of_key.insert(key.to_owned(), partition.clone());
        assert!(
            prev.is_none_or(|p| p == partition),
            "{key} on two partitions"
        );
        let seq: u32 = value.trim_start_matches("event-").parse().unwrap();
        if let Some(prev) = last_seq.insert(key.to_owned(), seq) {
            assert!(prev < seq, "{key}: event-{seq} after event-{prev}");
        }
    }

    // Plain values to one partition; --offset and --max-messages.
    let out = rivulet_stdin(
        &c,
        &["produce", "events", "--partition", "1", "--acks", "1"],
        b"a\nb\nc\n",
    );
    assert!(out.status.success());
    let hw = ok_json(&c, &["topic", "describe", "events", "--json"])["partitions"][1]
        ["high_watermark"]
        .as_u64()
        .expect("a high watermark");
    let out = rivulet(
        &c,
        &[
            "consume",
            "events",
            "--partition",
            "1",
            "--offset",
            &(hw - 3).to_string(),
            "--max-messages",
            "2",
            "--timeout-ms",
            "3000",
        ],
    );
    assert_eq!(lines(&out), vec!["a", "b"]);
    // Past the end: said, with where the log ends, instead of a silent exit.
    fails_with(
        &c,
        &[
            "consume",
            "events",
            "--partition",
            "1",
            "--offset",
            &(hw + 10).to_string(),
        ],
        &format!("is past the end of the log: events-1 ends at {hw}"),
    );

    // Failures name the reason and exit non-zero.
    fails_with(&c, &["produce", "nope"], "does not exist");
    let out = rivulet_stdin(&c, &["produce", "nope"], b"x\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNKNOWN_TOPIC_OR_PARTITION"));
    let out = rivulet_stdin(
        &c,
        &["produce", "events", "--key-separator", ":"],
        b"no separator here\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key separator"));
    fails_with(
        &c,
        &["consume", "nope", "--timeout-ms", "100"],
        "does not exist",
    );
    fails_with(
        &c,
        &["produce", "events", "--partition", "9"],
        "no partition 9",
    );

    // A producer keeps going through the death of a leader: nothing lost.
    let info = wait_until("a leader of events-0", Duration::from_secs(10), || async {
        c.partition_info("events", 0)
            .await
            .filter(|p| p.leader.is_some())
    })
    .await;
    let victim = info.leader.unwrap();
    let bootstrap: Vec<String> = c.ids().iter().map(|id| c.addr(*id).to_string()).collect();
    let mut child = std::process::Command::new(rivulet_binary())
        .args([
            "--bootstrap",
            &bootstrap.join(","),
            "produce",
            "events",
            "--partition",
            "0",
        ])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run rivulet produce");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for i in 0..4000 {
            writeln!(stdin, "fo-{i}").unwrap();
            if i % 500 == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.kill(victim);
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "produce through failover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = rivulet(
        &c,
        &[
            "consume",
            "events",
            "--partition",
            "0",
            "--from-beginning",
            "--timeout-ms",
            "2000",
        ],
    );
    let got: std::collections::BTreeSet<String> = lines(&out)
        .into_iter()
        .filter(|l| l.starts_with("fo-"))
        .collect();
    assert_eq!(
        got.len(),
        4000,
        "every acknowledged record after the failover"
    );
    c.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_move_on_after_batch_size_with_the_uniform_sticky_partitioner() {
    let c = Cluster::start(1).await;
    c.leader().await;
    c.wait_unfenced(&c.ids(), Duration::from_secs(10)).await;
    let create = [
        "topic",
        "create",
        "spread",
        "--partitions",
        "6",
        "--replication-factor",
        "1",
    ];
    assert!(rivulet(&c, &create).status.success());
    // 3,000 keyless records of 100 bytes: about five 64 KiB runs, and
    // KIP-794 never picks the same partition twice in a row.
    let input: String = (0..3_000).map(|i| format!("{i:0>100}\n")).collect();
    let out = rivulet_stdin(
        &c,
        &["produce", "spread", "--partitioner", "uniform-sticky"],
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "produce: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let described = ok_json(&c, &["topic", "describe", "spread", "--json"]);
    let counts: Vec<u64> = described["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["high_watermark"].as_u64().expect("a high watermark"))
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 3_000, "{counts:?}");
    let used = counts.iter().filter(|n| **n > 0).count();
    assert!(used >= 2, "every record on one partition: {counts:?}");
    // An unknown partitioner is a one-line error.
    let bad = rivulet_stdin(
        &c,
        &["produce", "spread", "--partitioner", "random"],
        b"x\n",
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("unknown partitioner"), "{err}");
}
