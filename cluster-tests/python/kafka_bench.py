"""Producer throughput and produce->consume latency through the Kafka
listener with librdkafka (confluent-kafka), to set beside `rivulet bench
produce` and `rivulet bench e2e` on the same cluster (docs/benchmarks.md).

Usage:
  kafka_bench.py produce <bootstrap> <topic> [--seconds 10] [--size 100]
  kafka_bench.py e2e <bootstrap> <topic> [--seconds 10] [--rate 10000] [--size 100]

Prints one JSON line: records/s (produce) or latency percentiles in ms
(e2e). A benchmark, not a test: bounded by --seconds.
"""

import argparse
import json
import struct
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_END


def percentiles(samples):
    samples = sorted(samples)
    if not samples:
        return {}

    def at(q):
        return samples[min(len(samples) - 1, int(q * len(samples)))]

    return {"p50": at(0.5), "p99": at(0.99), "p999": at(0.999), "max": samples[-1]}


def producer(bootstrap, linger_ms, topic):
    """An idempotent acks=all producer, warmed up: librdkafka asks for its
    producer id only once a broker connection is up (it retries after
    500 ms), so without a first flushed record the first half second of
    records would measure client start-up."""
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "none",
            "linger.ms": linger_ms,
            "batch.size": 1 << 20,
            "queue.buffering.max.kbytes": 1 << 20,
        }
    )
    p.produce(topic, value=b"warm-up")
    assert p.flush(30) == 0
    return p


def produce(args):
    p = producer(args.bootstrap, args.linger_ms, args.topic)
    value = b"x" * args.size
    acked = [0]
    failed = [0]
    latency = []

    def done(err, msg):
        if err is None:
            acked[0] += 1
            if acked[0] % 100 == 0:
                latency.append(msg.latency() * 1000)
        else:
            failed[0] += 1

    started = time.monotonic()
    deadline = started + args.seconds
    while time.monotonic() < deadline:
        for _ in range(1000):
            try:
                p.produce(args.topic, value=value, on_delivery=done)
            except BufferError:
                p.poll(0.001)
        p.poll(0)
    p.flush(60)
    elapsed = time.monotonic() - started
    out = {
        "client": "librdkafka (confluent-kafka)",
        "records_per_sec": round(acked[0] / elapsed),
        "mib_per_sec": round(acked[0] * args.size / elapsed / (1 << 20), 1),
        "failed": failed[0],
        "send_to_ack_ms": {k: round(v, 2) for k, v in percentiles(latency).items()},
    }
    print(json.dumps(out))


def e2e(args):
    c = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "kafka-bench-e2e",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
            "fetch.min.bytes": 1,
        }
    )
    parts = c.list_topics(args.topic, timeout=10).topics[args.topic].partitions
    c.assign([TopicPartition(args.topic, q, OFFSET_END) for q in parts])
    # Let the consumer reach the end before the first record.
    for _ in range(10):
        c.poll(0.1)
    latency = []
    stop = threading.Event()

    def consume():
        while not stop.is_set():
            m = c.poll(0.1)
            if m is None or m.error() is not None:
                continue
            if len(m.value()) < 8 or m.value() == b"warm-up":
                continue
            sent = struct.unpack_from(">q", m.value())[0]
            latency.append((time.monotonic_ns() - sent) / 1e6)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    p = producer(args.bootstrap, args.linger_ms, args.topic)
    pad = b"x" * max(0, args.size - 8)
    interval = 1.0 / args.rate
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < args.seconds:
        due = started + n * interval
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        p.produce(args.topic, value=struct.pack(">q", time.monotonic_ns()) + pad)
        p.poll(0)
        n += 1
    p.flush(30)
    time.sleep(1)
    stop.set()
    t.join()
    c.close()
    out = {
        "client": "librdkafka (confluent-kafka)",
        "rate": args.rate,
        "sent": n,
        "received": len(latency),
        "e2e_ms": {k: round(v, 2) for k, v in percentiles(latency).items()},
        "linger_ms": args.linger_ms,
    }
    print(json.dumps(out))


ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=["produce", "e2e"])
ap.add_argument("bootstrap")
ap.add_argument("topic")
ap.add_argument("--seconds", type=float, default=10)
ap.add_argument("--rate", type=int, default=10000)
ap.add_argument("--size", type=int, default=100)
ap.add_argument("--linger-ms", type=float, default=None, help="default: 5 for produce, 0 for e2e")
a = ap.parse_args()
if a.linger_ms is None:
    a.linger_ms = 5 if a.mode == "produce" else 0
produce(a) if a.mode == "produce" else e2e(a)
