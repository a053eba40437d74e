//! The `rivulet` CLI end to end against a real three-node cluster: the admin
//! commands, their `--json` shapes (a contract scripts rely on), and the
//! one-line errors with a non-zero exit for bad input.

use std::process::Output;
use std::time::Duration;

use cluster_tests::{rivulet_binary, wait_until, Cluster};
use serde_json::Value;

/// Runs `rivulet --bootstrap <all nodes> <args>`.
fn rivulet(c: &Cluster, args: &[&str]) -> Output {
    let bootstrap: Vec<String> = c.ids().iter().map(|id| c.addr(*id).to_string()).collect();
    std::process::Command::new(rivulet_binary())
        .arg("--bootstrap")
        .arg(bootstrap.join(","))
        .args(args)
        .output()
        .expect("run rivulet")
}

fn ok_json(c: &Cluster, args: &[&str]) -> Value {
    let out = rivulet(c, args);
    assert!(
        out.status.success(),
        "rivulet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rivulet {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn fails_with(c: &Cluster, args: &[&str], needle: &str) {
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
        for key in ["high_watermark", "log_start_offset"] {
            assert!(p.get(key).is_some(), "{key} missing from the JSON shape");
        }
    }
    assert_eq!(t["configs"]["min.insync.replicas"], "2");

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
