"""Rivulet's Kafka listener through clients we did not write: confluent-kafka
(librdkafka), kafka-python and aiokafka, against a real cluster.

Usage: kafka_clients.py <kafka bootstrap> <topic with 3 partitions>

Prints one line per check and "N passed, M failed"; exits non-zero on a
failure. `cluster-tests/tests/kafka.rs` runs it.
"""

import asyncio
import sys
import time

from checks import check, finish
import confluent_kafka
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
import kafka
from kafka.partitioner.default import murmur2

BOOTSTRAP = sys.argv[1]
TOPIC = sys.argv[2]
PARTITIONS = 3
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PER_CODEC = 200

produced = {}  # value -> (partition, key)



def java_partition(key: bytes) -> int:
    """The partition Kafka's Java client (and `rivulet produce`) picks."""
    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


@check("Metadata lists every broker at its Kafka address and the topic's partitions")
def _():
    md = AdminClient({"bootstrap.servers": BOOTSTRAP}).list_topics(timeout=10)
    hosts = sorted(f"{b.host}:{b.port}" for b in md.brokers.values())
    assert hosts == sorted(BOOTSTRAP.split(",")), hosts
    t = md.topics[TOPIC]
    assert t.error is None, t.error
    assert sorted(t.partitions) == list(range(PARTITIONS)), t.partitions
    for p in t.partitions.values():
        assert p.leader in md.brokers and len(p.replicas) == 3 and len(p.isrs) == 3, p
    missing = AdminClient({"bootstrap.servers": BOOTSTRAP}).list_topics(
        topic="no-such-topic", timeout=10
    )
    err = missing.topics["no-such-topic"].error
    assert err is not None and err.code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART, err


@check("an idempotent acks=all librdkafka producer lands keyed records where Kafka's partitioner puts them, in every codec")
def _():
    for codec in CODECS:
        p = Producer(
            {
                "bootstrap.servers": BOOTSTRAP,
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": codec,
                "partitioner": "murmur2_random",
                "linger.ms": 5,
            }
        )
        results = []

        def done(err, msg):
            results.append((err, msg))

        for i in range(PER_CODEC):
            key = f"key-{i % 17}".encode()
            p.produce(TOPIC, key=key, value=f"{codec}-{i}".encode(), on_delivery=done)
        assert p.flush(30) == 0, "undelivered records"
        assert len(results) == PER_CODEC, len(results)
        for err, msg in results:
            assert err is None, f"{codec}: {err}"
            assert msg.partition() == java_partition(msg.key()), (msg.key(), msg.partition())
            assert msg.offset() >= 0
            produced[msg.value().decode()] = (msg.partition(), msg.key())


def consume_all(expected, group=None, extra=None):
    conf = {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": group or "reader",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    conf.update(extra or {})
    c = Consumer(conf)
    c.assign([TopicPartition(TOPIC, p, confluent_kafka.OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen = {}
    deadline = time.monotonic() + 30
    while len(seen) < expected and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        v = m.value().decode()
        assert v not in seen, f"{v} read twice"
        seen[v] = (m.partition(), m.key(), m.offset())
    return c, seen


@check("a librdkafka consumer reads every record once, from every codec, with keys and partitions intact")
def _():
    c, seen = consume_all(len(produced))
    c.close()
    assert set(seen) == set(produced), (len(seen), len(produced))
    for v, (partition, key, _) in seen.items():
        assert (partition, key) == produced[v], v


@check("ListOffsets: earliest, latest and by timestamp (librdkafka)")
def _():
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "offsets"})
    total = 0
    for p in range(PARTITIONS):
        lo, hi = c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)
        assert lo == 0 and hi >= 0, (lo, hi)
        total += hi
    assert total == len(produced), (total, len(produced))
    future = int(time.time() * 1000) + 3_600_000
    past = c.offsets_for_times([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)], timeout=10)
    assert all(tp.offset == 0 for tp in past if tp.error is None), past
    later = c.offsets_for_times([TopicPartition(TOPIC, p, future) for p in range(PARTITIONS)], timeout=10)
    assert all(tp.offset == -1 for tp in later), later
    c.close()


@check("offsets committed by a librdkafka consumer are fetched back (OffsetCommit/OffsetFetch)")
def _():
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "kafka-committer", "enable.auto.commit": False})
    want = [TopicPartition(TOPIC, p, 5 + p) for p in range(PARTITIONS)]
    c.commit(offsets=want, asynchronous=False)
    got = c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
    assert [(tp.partition, tp.offset) for tp in got] == [(p, 5 + p) for p in range(PARTITIONS)], got
    none = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "never-committed"})
    got = none.committed([TopicPartition(TOPIC, 0)], timeout=10)
    assert got[0].offset == confluent_kafka.OFFSET_INVALID, got
    none.close()
    c.close()


@check("kafka-python (idempotent by default) produces and reads back; end offsets agree")
def _():
    p = kafka.KafkaProducer(bootstrap_servers=BOOTSTRAP.split(","), acks="all")
    futures = [p.send(TOPIC, key=f"kp-{i}".encode(), value=f"kafka-python-{i}".encode()) for i in range(100)]
    for i, f in enumerate(futures):
        md = f.get(timeout=30)
        assert md.partition == java_partition(f"kp-{i}".encode()), (i, md.partition)
        produced[f"kafka-python-{i}"] = (md.partition, f"kp-{i}".encode())
    p.close()
    c = kafka.KafkaConsumer(bootstrap_servers=BOOTSTRAP.split(","), enable_auto_commit=False, consumer_timeout_ms=5000)
    tps = [kafka.TopicPartition(TOPIC, i) for i in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_beginning()
    ends = c.end_offsets(tps)
    assert sum(ends.values()) == len(produced), (ends, len(produced))
    values = set()
    for m in c:
        values.add(m.value.decode())
        if len(values) == len(produced):
            break
    c.close()
    assert values == set(produced), (len(values), len(produced))


@check("aiokafka produces and reads back")
def _():
    import aiokafka

    async def run():
        p = aiokafka.AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
        await p.start()
        try:
            for i in range(50):
                md = await p.send_and_wait(TOPIC, key=f"ak-{i}".encode(), value=f"aiokafka-{i}".encode())
                produced[f"aiokafka-{i}"] = (md.partition, f"ak-{i}".encode())
        finally:
            await p.stop()
        c = aiokafka.AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
        await c.start()
        try:
            tps = [aiokafka.TopicPartition(TOPIC, i) for i in range(PARTITIONS)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            values = set()
            deadline = time.monotonic() + 30
            while len(values) < len(produced) and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=500)
                for msgs in batch.values():
                    values.update(m.value.decode() for m in msgs)
            assert values == set(produced), (len(values), len(produced))
        finally:
            await c.stop()

    asyncio.run(run())


@check("kafka-python admin: create a topic with a config, describe and alter it, see it in Metadata, delete it")
def _():
    from kafka.admin import KafkaAdminClient, NewTopic, ConfigResource, ConfigResourceType

    a = KafkaAdminClient(bootstrap_servers=BOOTSTRAP.split(","))
    r = a.create_topics([NewTopic("kp-admin", 4, 3, topic_configs={"retention.ms": "3600000"})])
    t = r["topics"][0]
    assert t["error_code"] == 0 and t["num_partitions"] == 4, t
    assert t["configs"]["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG", t
    assert t["configs"]["segment.bytes"]["config_source"] == "DEFAULT_CONFIG", t
    assert "kp-admin" in a.list_topics()
    d = a.describe_topics(["kp-admin"])[0]
    assert len(d["partitions"]) == 4 and all(len(p["isr_nodes"]) == 3 for p in d["partitions"]), d
    cfg = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-admin")])
    assert cfg["topic"]["kp-admin"]["retention.ms"]["value"] == "3600000", cfg
    a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-admin", configs={"retention.ms": "7200000"})])
    cfg = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-admin")])
    assert cfg["topic"]["kp-admin"]["retention.ms"]["value"] == "7200000", cfg
    cluster = a.describe_cluster()
    assert len(cluster["brokers"]) == 3 and cluster["controller_id"] >= 1, cluster
    try:
        a.create_topics([NewTopic("kp-admin", 1, 1)])
        raise AssertionError("a second create of the same topic succeeded")
    except kafka.errors.TopicAlreadyExistsError:
        pass
    a.delete_topics(["kp-admin"])
    deadline = time.monotonic() + 10
    while "kp-admin" in a.list_topics() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "kp-admin" not in a.list_topics()
    a.close()


@check("kafka-python and librdkafka add partitions (CreatePartitions); a record lands in a new one; fewer are refused")
def _():
    from kafka.admin import KafkaAdminClient, NewTopic
    from confluent_kafka.admin import NewPartitions

    a = KafkaAdminClient(bootstrap_servers=BOOTSTRAP.split(","))
    a.create_topics([NewTopic("kp-grow", 2, 3)])
    a.create_partitions({"kp-grow": 4}, validate_only=True)
    assert len(a.describe_topics(["kp-grow"])[0]["partitions"]) == 2
    a.create_partitions({"kp-grow": 4})
    try:
        a.create_partitions({"kp-grow": 3})
        raise AssertionError("shrinking to 3 partitions was accepted")
    except kafka.errors.InvalidPartitionsError:
        pass
    c = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for f in c.create_partitions([NewPartitions("kp-grow", 6)]).values():
        f.result()
    deadline = time.monotonic() + 10
    while True:
        md = c.list_topics(topic="kp-grow", timeout=10).topics["kp-grow"]
        if len(md.partitions) == 6 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(md.partitions) == list(range(6)), md.partitions
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
    results = []
    p.produce("kp-grow", value=b"in-a-new-partition", partition=5,
              on_delivery=lambda err, msg: results.append((err, msg)))
    assert p.flush(20) == 0 and results[0][0] is None, results
    assert results[0][1].partition() == 5 and results[0][1].offset() == 0, results
    a.delete_topics(["kp-grow"])
    a.close()


@check("DeleteRecords (librdkafka and kafka-python): the log start moves, readers start there, past the HW is refused; ListOffsets by time answers the record's timestamp")
def _():
    from confluent_kafka.admin import NewTopic as CkNewTopic

    c = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for f in c.create_topics([CkNewTopic("kp-del", num_partitions=1, replication_factor=3)]).values():
        f.result()
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "linger.ms": 0})
    for i in range(50):
        p.produce("kp-del", value=f"d{i}".encode(), partition=0, timestamp=1_000_000 + i * 1000)
        p.poll(0)
    assert p.flush(20) == 0
    # ListOffsets by time answers the found record's timestamp.
    kc = kafka.KafkaConsumer(bootstrap_servers=BOOTSTRAP.split(","))
    from kafka import TopicPartition as KTp

    hit = kc.offsets_for_times({KTp("kp-del", 0): 1_005_500})[KTp("kp-del", 0)]
    assert (hit.offset, hit.timestamp) == (6, 1_006_000), hit
    done = c.delete_records([TopicPartition("kp-del", 0, 20)])
    deleted = list(done.values())[0].result()
    assert deleted.low_watermark == 20, deleted
    lo, hi = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "wm"}).get_watermark_offsets(
        TopicPartition("kp-del", 0), timeout=10)
    assert (lo, hi) == (20, 50), (lo, hi)
    cons = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "kp-del-reader",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
    cons.assign([TopicPartition("kp-del", 0, confluent_kafka.OFFSET_BEGINNING)])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 30 and time.monotonic() < deadline:
        m = cons.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.offset(), m.value().decode()))
    cons.close()
    assert got[0] == (20, "d20") and len(got) == 30, got[:3]
    # Below the new log start: the first record kept.
    hit = kc.offsets_for_times({KTp("kp-del", 0): 1_005_500})[KTp("kp-del", 0)]
    assert (hit.offset, hit.timestamp) == (20, 1_020_000), hit
    kc.close()
    # kafka-python: past the high watermark is refused; -1 means the HW.
    from kafka.admin import KafkaAdminClient

    a = KafkaAdminClient(bootstrap_servers=BOOTSTRAP.split(","))
    try:
        a.delete_records({KTp("kp-del", 0): 51})
        raise AssertionError("deleting past the high watermark was accepted")
    except kafka.errors.OffsetOutOfRangeError:
        pass
    out = a.delete_records({KTp("kp-del", 0): -1})
    assert list(out.values())[0]["low_watermark"] == 50, out
    a.delete_topics(["kp-del"])
    a.close()


@check("librdkafka admin: alter a config incrementally, describe every config with its source, list and describe groups")
def _():
    from confluent_kafka.admin import NewTopic, ConfigResource, ConfigEntry, AlterConfigOpType

    c = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for f in c.create_topics([NewTopic("ck-admin", num_partitions=2, replication_factor=3)]).values():
        f.result()
    res = ConfigResource(
        "topic",
        "ck-admin",
        incremental_configs=[ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)],
    )
    for f in c.incremental_alter_configs([res]).values():
        f.result()
    for f in c.describe_configs([ConfigResource("topic", "ck-admin")]).values():
        d = {k: (v.value, v.source) for k, v in f.result().items()}
    assert d["retention.ms"] == ("60000", 1), d
    assert d["cleanup.policy"] == ("delete", 5), d
    assert len(d) >= 6, d
    bad = ConfigResource(
        "topic",
        "ck-admin",
        incremental_configs=[ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)],
    )
    for f in c.incremental_alter_configs([bad]).values():
        try:
            f.result()
            raise AssertionError("an unknown config was accepted")
        except confluent_kafka.KafkaException as e:
            assert e.args[0].code() == confluent_kafka.KafkaError.INVALID_CONFIG, e
    groups = {g.group_id for g in c.list_consumer_groups().result().valid}
    assert "kafka-committer" in groups, groups
    described = c.describe_consumer_groups(["kafka-committer"])["kafka-committer"].result()
    assert str(described.state).endswith("EMPTY"), described.state
    for f in c.delete_topics(["ck-admin"]).values():
        f.result()


print(f"records produced: {len(produced)}")
finish(f" (confluent-kafka {confluent_kafka.version()}, librdkafka {confluent_kafka.libversion()[0]}, kafka-python {kafka.__version__})")
