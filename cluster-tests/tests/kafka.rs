//! The Kafka listener on real processes, through clients we did not write:
//! confluent-kafka (librdkafka 2.16), kafka-python and aiokafka
//! (`python/kafka_clients.py`), Debian's kcat (librdkafka 2.0), and raw
//! bytes for the frames a hostile client sends.
//!
//! `./scripts/test` makes the virtualenv and installs kcat, and sets
//! `RIVULET_PYTHON` and `RIVULET_KCAT`; without them those tests say SKIPPED.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_tests::{cli, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(20);

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// Runs the Python check script `name` with `args` (off the async
/// threads), prints what it said, and asserts it ran `passed` checks and
/// none failed; its stdout.
async fn checks(
    python: std::ffi::OsString,
    name: &str,
    args: Vec<std::ffi::OsString>,
    passed: usize,
) -> String {
    let path = script(name);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(path)
            .args(args)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the checks of {name} failed");
    assert!(
        stdout.contains(&format!("{passed} passed, 0 failed")),
        "{stdout}"
    );
    stdout
}

/// Records `rivulet consume` reads from `topic` (all partitions).
fn grpc_count(c: &Cluster, topic: &str) -> usize {
    cli::ok_stdout(
        c,
        &["consume", topic, "--from-beginning", "--timeout-ms", "3000"],
    )
    .lines()
    .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_produce_consume_and_commit_through_the_kafka_listener() {
    let Some(python) = std::env::var_os("RIVULET_PYTHON") else {
        eprintln!("SKIPPED: RIVULET_PYTHON is not set (./scripts/test sets it up)");
        return;
    };
    let c = Cluster::start(3).await;
    c.wait_unfenced(&c.ids(), TIMEOUT).await;
    assert_eq!(c.create_topic_with(1, "kc", 3, 3, &[]).await, 0);
    for p in 0..3 {
        c.wait_isr("kc", p, &[1, 2, 3], TIMEOUT).await;
    }
    let bootstrap = c.kafka_bootstrap();
    let stdout = checks(
        python,
        "kafka_clients.py",
        vec![bootstrap.into(), "kc".into()],
        11,
    )
    .await;
    // Every record the Kafka clients wrote (gzip, snappy, lz4 and zstd
    // batches from librdkafka among them) is read by the gRPC consumer.
    let produced: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("records produced: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the script reports its record count");
    assert_eq!(grpc_count(&c, "kc"), produced);
    // The offsets librdkafka committed are the gRPC coordinator's: the CLI
    // shows them with their lag.
    let group = cli::ok_json(&c, &["group", "describe", "kafka-committer", "--json"]);
    let mut commits: Vec<(u64, u64, u64)> = group["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| p["topic"] == "kc")
        .map(|p| {
            let n = |k: &str| p[k].as_u64().expect(k);
            (n("partition"), n("committed_offset"), n("lag"))
        })
        .collect();
    commits.sort_unstable();
    assert_eq!(
        commits.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
        vec![(0, 5), (1, 6), (2, 7)],
        "{group}"
    );
    let lag: u64 = commits.iter().map(|c| c.2).sum();
    assert_eq!(lag as usize, produced - 18, "{group}");
    // And the other way: offsets the CLI resets are what librdkafka's
    // committed() reads.
    cli::ok_stdout(
        &c,
        &[
            "group",
            "reset-offsets",
            "kafka-committer",
            "--topic",
            "kc",
            "--to-offset",
            "3",
        ],
    );
    let python = std::env::var_os("RIVULET_PYTHON").unwrap();
    let probe = format!(
        "from confluent_kafka import Consumer, TopicPartition as T\n\
         c = Consumer({{'bootstrap.servers': '{}', 'group.id': 'kafka-committer'}})\n\
         print([t.offset for t in c.committed([T('kc', p) for p in range(3)], timeout=10)])",
        c.kafka_bootstrap()
    );
    let out = Command::new(python).args(["-c", &probe]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[3, 3, 3]",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_and_consumes_compressed_batches() {
    let Some(kcat) = std::env::var_os("RIVULET_KCAT") else {
        eprintln!("SKIPPED: RIVULET_KCAT is not set (./scripts/test sets it up)");
        return;
    };
    let c = Cluster::start(3).await;
    c.wait_unfenced(&c.ids(), TIMEOUT).await;
    assert_eq!(c.create_topic_with(1, "kcat", 3, 3, &[]).await, 0);
    c.wait_isr("kcat", 0, &[1, 2, 3], TIMEOUT).await;
    let bootstrap = c.kafka_bootstrap();
    let listed = Command::new(&kcat)
        .args(["-b", &bootstrap, "-L", "-t", "kcat"])
        .output()
        .expect("kcat -L");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains("3 brokers"), "{listed}");
    assert!(listed.contains("3 partitions"), "{listed}");
    let mut want = 0;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let lines: String = (0..300).map(|i| format!("{codec}-{i}\n")).collect();
        let mut child = Command::new(&kcat)
            .args(["-b", &bootstrap, "-P", "-t", "kcat", "-z", codec])
            .args(["-X", "acks=all"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kcat -P");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kcat -P -z {codec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        want += 300;
    }
    // acks=0: no answers at all, and the records still land.
    let lines: String = (0..200).map(|i| format!("acks0-{i}\n")).collect();
    let mut child = Command::new(&kcat)
        .args(["-b", &bootstrap, "-P", "-t", "kcat", "-X", "acks=0"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat -P");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
    }
    assert!(child.wait().unwrap().success());
    want += 200;
    // acks=0 answered nothing: its records may still be replicating.
    let distinct = || {
        let read = Command::new(&kcat)
            .args(["-b", &bootstrap, "-C", "-t", "kcat", "-e", "-q"])
            .output()
            .expect("kcat -C");
        let read = String::from_utf8_lossy(&read.stdout).into_owned();
        let mut values: Vec<String> = read.lines().map(str::to_owned).collect();
        let all = values.len();
        values.sort_unstable();
        values.dedup();
        (all, values.len())
    };
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut read = distinct();
    while read.1 < want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        read = distinct();
    }
    assert_eq!(read, (want, want), "kcat read back (all, distinct)");
    assert_eq!(grpc_count(&c, "kcat"), want);
    c.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_librdkafka_producer_loses_and_duplicates_nothing_through_a_leader_kill() {
    let Some(python) = std::env::var_os("RIVULET_PYTHON") else {
        eprintln!("SKIPPED: RIVULET_PYTHON is not set (./scripts/test sets it up)");
        return;
    };
    let mut c = Cluster::start(3).await;
    c.wait_unfenced(&c.ids(), TIMEOUT).await;
    assert_eq!(
        c.create_topic_with(1, "kfail", 3, 3, &[("min.insync.replicas", "2")])
            .await,
        0
    );
    for p in 0..3 {
        c.wait_isr("kfail", p, &[1, 2, 3], TIMEOUT).await;
    }
    let leader = c
        .wait_partition_leader("kfail", 0, TIMEOUT)
        .await
        .leader
        .expect("a leader");
    let mut child = Command::new(python)
        .arg(script("kafka_failover.py"))
        .args([c.kafka_bootstrap().as_str(), "kfail", "24000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("kafka_failover.py: {line}");
            let _ = tx.send(line);
        }
    });
    // Kill the leader of partition 0 once a quarter of the records are in.
    let killed_at = tokio::task::spawn_blocking(move || {
        rx.iter()
            .find_map(|l| {
                l.strip_prefix("progress ")
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|n| *n >= 6000)
            })
            .expect("the producer reports progress")
    })
    .await
    .unwrap();
    c.kill(leader);
    eprintln!("killed node {leader} (leader of kfail-0) at {killed_at} acknowledged");
    let status = tokio::task::spawn_blocking(move || child.wait().expect("wait python"))
        .await
        .unwrap();
    reader.join().unwrap();
    assert!(
        status.success(),
        "records lost, duplicated or failed (see above)"
    );
    c.restart(leader).await;
    c.assert_no_unexpected_errors(&[]);
}

/// One request frame: size, header v1 (key, version, correlation id, null
/// client id), body.
fn frame(key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&((10 + body.len()) as i32).to_be_bytes());
    f.extend_from_slice(&key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&correlation.to_be_bytes());
    f.extend_from_slice(&(-1i16).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// Reads one response frame: (correlation id, rest).
async fn response(s: &mut TcpStream) -> (i32, Vec<u8>) {
    let mut size = [0u8; 4];
    tokio::time::timeout(TIMEOUT, s.read_exact(&mut size))
        .await
        .expect("an answer in time")
        .expect("an answer, not a closed connection");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).await.expect("the whole answer");
    let corr = i32::from_be_bytes(body[..4].try_into().unwrap());
    (corr, body[4..].to_vec())
}

/// Whether the node closed the connection (rather than answering).
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(TIMEOUT, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_kafka_frames_close_the_connection_and_the_node_keeps_serving() {
    let c = Cluster::start(1).await;
    c.wait_unfenced(&[1], TIMEOUT).await;
    let addr = c.kafka_addr(1).expect("the node serves Kafka");
    let api_versions_v0 = frame(18, 0, 1, &[]);

    // A size past the limit (2 GiB) and a negative one: closed unread, with
    // nothing allocated for them.
    for size in [i32::MAX, -1, 3] {
        let mut s = connect(addr).await;
        s.write_all(&size.to_be_bytes()).await.unwrap();
        assert!(closed(&mut s).await, "size {size} was not refused");
    }
    // An unknown API key, and an API the listener does not serve.
    for key in [999i16, 26 /* EndTxn */] {
        let mut s = connect(addr).await;
        s.write_all(&frame(key, 0, 5, &[0; 8])).await.unwrap();
        assert!(closed(&mut s).await, "API key {key} was not refused");
    }
    // Metadata v1 whose topic array claims a million, and 2^31 - 1, entries
    // it lacks (the second would abort the process on an allocation of
    // ~100 GiB if the count were trusted).
    for count in [1_000_000i32, i32::MAX] {
        let mut s = connect(addr).await;
        s.write_all(&frame(3, 1, 6, &count.to_be_bytes()))
            .await
            .unwrap();
        assert!(
            closed(&mut s).await,
            "a Metadata of {count} topics was not refused"
        );
    }
    // Garbage with a plausible size.
    let mut s = connect(addr).await;
    let mut garbage = vec![0xa5u8; 1024];
    garbage[..4].copy_from_slice(&1020i32.to_be_bytes());
    s.write_all(&garbage).await.unwrap();
    assert!(closed(&mut s).await, "garbage was not refused");
    // Produce v2 is advertised (old librdkafka looks for it) but refused.
    let mut s = connect(addr).await;
    s.write_all(&frame(0, 2, 8, &[0; 16])).await.unwrap();
    assert!(closed(&mut s).await, "Produce v2 was not refused");

    // ApiVersions of a version from the future: UNSUPPORTED_VERSION, with
    // our range in the v0 form (KIP-511).
    let mut s = connect(addr).await;
    s.write_all(&frame(18, 99, 7, &[])).await.unwrap();
    let (corr, body) = response(&mut s).await;
    assert_eq!(corr, 7);
    assert_eq!(i16::from_be_bytes([body[0], body[1]]), 35, "{body:?}");
    let n = i32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
    let ranges: Vec<(i16, i16, i16)> = (0..n)
        .map(|i| {
            let e = &body[6 + i * 6..12 + i * 6];
            (
                i16::from_be_bytes([e[0], e[1]]),
                i16::from_be_bytes([e[2], e[3]]),
                i16::from_be_bytes([e[4], e[5]]),
            )
        })
        .collect();
    assert!(ranges.contains(&(0, 0, 12)), "Produce v0..=12: {ranges:?}");
    assert!(ranges.contains(&(1, 4, 12)), "Fetch v4..=12: {ranges:?}");

    // Pipelined requests on one connection are answered in order.
    let mut s = connect(addr).await;
    let mut three = Vec::new();
    for corr in [11, 12, 13] {
        three.extend(frame(18, 0, corr, &[]));
        // Metadata v0 of every topic between them.
        three.extend(frame(3, 0, corr + 100, &0i32.to_be_bytes()));
    }
    s.write_all(&three).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(response(&mut s).await.0);
    }
    assert_eq!(order, vec![11, 111, 12, 112, 13, 113]);

    // The node still serves, Kafka and gRPC alike.
    let mut s = connect(addr).await;
    s.write_all(&api_versions_v0).await.unwrap();
    let (corr, body) = response(&mut s).await;
    assert_eq!((corr, i16::from_be_bytes([body[0], body[1]])), (1, 0));
    cli::ok_stdout(&c, &["cluster", "status"]);
    c.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_consumer_groups_split_partitions_and_hand_them_over() {
    let Some(python) = std::env::var_os("RIVULET_PYTHON") else {
        eprintln!("SKIPPED: RIVULET_PYTHON is not set (./scripts/test sets it up)");
        return;
    };
    let c = Cluster::start(3).await;
    c.wait_unfenced(&c.ids(), TIMEOUT).await;
    assert_eq!(c.create_topic_with(1, "kg", 6, 3, &[]).await, 0);
    for p in 0..6 {
        c.wait_isr("kg", p, &[1, 2, 3], TIMEOUT).await;
    }
    let bootstrap = c.kafka_bootstrap();
    let grpc = cli::bootstrap(&c);
    checks(
        python,
        "kafka_groups.py",
        vec![
            bootstrap.into(),
            "kg".into(),
            cluster_tests::rivulet_binary().into(),
            grpc.into(),
        ],
        7,
    )
    .await;
    // kafka-python committed everything: `rivulet group describe` sees the
    // group's offsets at the high watermarks.
    let group = cli::ok_json(&c, &["group", "describe", "kafka-python-group", "--json"]);
    let parts = group["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 6, "{group}");
    assert!(parts.iter().all(|p| p["lag"] == 0), "{group}");
    // The KIP-848 group is the coordinator's own kind: its members left
    // (closing committed), and it is empty with commits on every partition.
    let group = cli::ok_json(&c, &["group", "describe", "kip848", "--json"]);
    assert_eq!(
        group["members"].as_array().map(Vec::len),
        Some(0),
        "{group}"
    );
    let parts = group["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 6, "{group}");
    assert!(
        parts.iter().all(|p| p["committed_offset"].is_u64()),
        "{group}"
    );
    c.assert_no_unexpected_errors(&[]);
}

/// OffsetForLeaderEpoch v2 for `topic`-0: (error, leader epoch, end offset).
async fn epoch_end(
    addr: SocketAddr,
    topic: &str,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> (i16, i32, i64) {
    let mut body = Vec::new();
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&current_leader_epoch.to_be_bytes());
    body.extend_from_slice(&leader_epoch.to_be_bytes());
    let mut s = connect(addr).await;
    s.write_all(&frame(23, 2, 3, &body)).await.unwrap();
    let (corr, r) = response(&mut s).await;
    assert_eq!(corr, 3);
    // throttle, 1 topic, its name, 1 partition, then the answer.
    let at = 4 + 4 + 2 + topic.len() + 4;
    let p = &r[at..];
    (
        i16::from_be_bytes([p[0], p[1]]),
        i32::from_be_bytes(p[6..10].try_into().unwrap()),
        i64::from_be_bytes(p[10..18].try_into().unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_for_leader_epoch_answers_where_an_epoch_ends_up_to_the_high_watermark() {
    let mut c = Cluster::start(3).await;
    c.wait_unfenced(&c.ids(), TIMEOUT).await;
    assert_eq!(c.create_topic_with(1, "epochs", 1, 3, &[]).await, 0);
    c.wait_isr("epochs", 0, &[1, 2, 3], TIMEOUT).await;
    let lines: String = (0..10).map(|i| format!("a{i}\n")).collect();
    let out = cli::rivulet_as_with_stdin(&c, None, &["produce", "epochs"], &lines);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = c.wait_partition_leader("epochs", 0, TIMEOUT).await;
    let leader = first.leader.expect("a leader");
    let addr = c.kafka_addr(leader).expect("Kafka listener");
    assert_eq!(epoch_end(addr, "epochs", -1, 0).await, (0, 0, 10));
    // A newer epoch than the leader's: the latest it has, ending at the HW.
    assert_eq!(epoch_end(addr, "epochs", -1, 9).await, (0, 0, 10));
    // A current epoch from the future, and a follower asked.
    assert_eq!(
        epoch_end(addr, "epochs", 9, 0).await.0,
        75,
        "UNKNOWN_LEADER_EPOCH"
    );
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let faddr = c.kafka_addr(follower).unwrap();
    assert_eq!(
        epoch_end(faddr, "epochs", -1, 0).await.0,
        6,
        "NOT_LEADER_OR_FOLLOWER"
    );
    // After a failover, epoch 0 ends where the new epoch starts.
    c.kill(leader);
    let next = cluster_tests::wait_until("a new leader", TIMEOUT, || async {
        let p = c.partition_info("epochs", 0).await?;
        p.leader
            .filter(|l| *l != leader)
            .map(|l| (l, p.leader_epoch))
    })
    .await;
    let lines: String = (0..5).map(|i| format!("b{i}\n")).collect();
    let out = cli::rivulet_as_with_stdin(&c, None, &["produce", "epochs"], &lines);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = c.kafka_addr(next.0).unwrap();
    assert_eq!(epoch_end(addr, "epochs", -1, 0).await, (0, 0, 10));
    let (code, epoch, end) = epoch_end(addr, "epochs", -1, next.1 as i32).await;
    assert_eq!((code, epoch, end), (0, next.1 as i32, 15));
    c.restart(leader).await;
    c.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_produces_on_one_connection_land_in_the_order_sent() {
    let c = Cluster::start(3).await;
    c.wait_unfenced(&c.ids(), TIMEOUT).await;
    assert_eq!(
        c.create_topic_with(1, "ordered", 1, 3, &[("min.insync.replicas", "2")])
            .await,
        0
    );
    c.wait_isr("ordered", 0, &[1, 2, 3], TIMEOUT).await;
    let leader = c
        .wait_partition_leader("ordered", 0, TIMEOUT)
        .await
        .leader
        .expect("a leader");
    let mut s = connect(c.kafka_addr(leader).unwrap()).await;
    // 40 Produce v3 requests (acks=all, one batch of 50 records each,
    // without idempotence: nothing but the connection orders them), written
    // at once; each request's records must follow the previous request's.
    const N: i32 = 40;
    let mut wire = Vec::new();
    for r in 0..N {
        let records: Vec<rivulet_common::batch::RecordInput> = (0..50)
            .map(|i| rivulet_common::batch::RecordInput {
                key: None,
                value: Some(format!("{r}-{i}").into_bytes().into()),
                headers: Vec::new(),
                timestamp_ms: 1,
            })
            .collect();
        let batch =
            rivulet_common::batch::build_batch(&records, rivulet_common::batch::Compression::None)
                .unwrap();
        let mut body = Vec::new();
        body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
        body.extend_from_slice(&(-1i16).to_be_bytes()); // acks=all
        body.extend_from_slice(&10_000i32.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&7i16.to_be_bytes());
        body.extend_from_slice(b"ordered");
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
        body.extend_from_slice(&batch);
        wire.extend(frame(0, 3, 1000 + r, &body));
    }
    s.write_all(&wire).await.unwrap();
    let mut bases = Vec::new();
    for r in 0..N {
        let (corr, body) = response(&mut s).await;
        assert_eq!(corr, 1000 + r, "answers in request order");
        // 1 topic ("ordered"), 1 partition: index, error, base offset.
        let at = 4 + 2 + 7 + 4 + 4;
        let error = i16::from_be_bytes([body[at], body[at + 1]]);
        assert_eq!(error, 0, "request {r}");
        bases.push(i64::from_be_bytes(
            body[at + 2..at + 10].try_into().unwrap(),
        ));
    }
    let expected: Vec<i64> = (0..i64::from(N)).map(|r| r * 50).collect();
    assert_eq!(bases, expected, "appended in the order sent");
    c.assert_no_unexpected_errors(&[]);
}

/// A `--require-auth` cluster over TLS: the Kafka listener serves TLS and
/// SASL (SCRAM-SHA-256/512, PLAIN) with the users `rivulet user` makes, and
/// the ACLs the Kafka admin APIs create are the ones `rivulet acl` shows and
/// every node enforces (`python/kafka_security.py`); Debian's kcat
/// (librdkafka 2.0) authenticates too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_over_tls_and_acls_through_the_kafka_listener() {
    let Some(python) = std::env::var_os("RIVULET_PYTHON") else {
        eprintln!("SKIPPED: RIVULET_PYTHON is not set (./scripts/test sets it up)");
        return;
    };
    let c = Cluster::start_secured(3).await;
    c.wait_unfenced(&c.ids(), TIMEOUT).await;
    let admin = cluster_tests::ADMIN;
    let user = ("kafka-alice", "alice-password");
    let out = cli::rivulet_as_with_stdin(
        &c,
        Some(admin),
        &["user", "create", user.0, "--password-stdin"],
        &format!("{}\n", user.1),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = c.tls_dir().join("ca.pem");
    let bootstrap = c.kafka_bootstrap();
    let args: Vec<std::ffi::OsString> = vec![
        bootstrap.clone().into(),
        ca.clone().into(),
        admin.0.into(),
        admin.1.into(),
        user.0.into(),
        user.1.into(),
    ];
    checks(python, "kafka_security.py", args, 8).await;
    // The topic the super user made over Kafka, and the user's records,
    // through gRPC; the ACLs the script deleted are gone for `rivulet acl`.
    let listed = cli::rivulet_as(&c, Some(admin), &["acl", "list", "--json"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(!listed.contains(user.0), "{listed}");
    let read = cli::rivulet_as(
        &c,
        Some(admin),
        &["consume", "sec", "--from-beginning", "--timeout-ms", "3000"],
    );
    let values = String::from_utf8_lossy(&read.stdout).into_owned();
    assert_eq!(
        values.lines().filter(|l| l.starts_with("user-")).count(),
        20
    );
    assert_eq!(
        values.lines().filter(|l| l.starts_with("admin-")).count(),
        100
    );

    if let Some(kcat) = std::env::var_os("RIVULET_KCAT") {
        let sasl = |password: &str| -> std::process::Output {
            Command::new(&kcat)
                .args(["-b", &bootstrap, "-L", "-t", "sec", "-m", "10"])
                .args(["-X", "security.protocol=SASL_SSL"])
                .args(["-X", "sasl.mechanisms=SCRAM-SHA-512"])
                .args(["-X", &format!("sasl.username={}", admin.0)])
                .args(["-X", &format!("sasl.password={password}")])
                .arg("-X")
                .arg(format!("ssl.ca.location={}", ca.display()))
                .output()
                .expect("run kcat")
        };
        let ok = sasl(admin.1);
        let listing = String::from_utf8_lossy(&ok.stdout);
        assert!(
            ok.status.success() && listing.contains("topic \"sec\" with 3 partitions"),
            "{listing}{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let bad = sasl("wrong");
        assert!(!bad.status.success(), "kcat listed with a wrong password");
    } else {
        eprintln!("SKIPPED the kcat part: RIVULET_KCAT is not set");
    }
}
