"""An idempotent acks=all librdkafka producer through a leader's kill -9.

Usage: kafka_failover.py <kafka bootstrap> <topic> <records>

Produces <records> records (values 0..n-1) at a steady pace, printing
"progress <acknowledged>" lines so the test can kill the leader midway, then
reads the topic back with a librdkafka consumer and checks that every
acknowledged record is there exactly once. Prints "lost L duplicated D" and
exits non-zero if either is above 0 or a record failed.
"""

import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

BOOTSTRAP, TOPIC, N = sys.argv[1], sys.argv[2], int(sys.argv[3])

acked = set()
failed = []


def done(err, msg):
    if err is None:
        acked.add(int(msg.value()))
    else:
        failed.append(str(err))


p = Producer(
    {
        "bootstrap.servers": BOOTSTRAP,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "message.timeout.ms": 60000,
        "retry.backoff.ms": 50,
        "topic.metadata.refresh.interval.ms": 1000,
    }
)
started = time.monotonic()
for i in range(N):
    while True:
        try:
            p.produce(TOPIC, key=str(i % 64).encode(), value=str(i).encode(), on_delivery=done)
            break
        except BufferError:
            p.poll(0.05)
    p.poll(0)
    if i % 200 == 0:
        print(f"progress {len(acked)}", flush=True)
        # About 4,000 records a second: the run spans the kill.
        time.sleep(max(0.0, started + i / 4000 - time.monotonic()))
left = p.flush(90)
print(f"produced: acked {len(acked)} failed {len(failed)} unflushed {left}", flush=True)

partitions = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "x"}).list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "failover-reader", "enable.auto.commit": False})
c.assign([TopicPartition(TOPIC, q, OFFSET_BEGINNING) for q in partitions])
seen = {}
ends = {q: c.get_watermark_offsets(TopicPartition(TOPIC, q), timeout=10)[1] for q in partitions}
positions = {q: 0 for q in partitions}
deadline = time.monotonic() + 60
while any(positions[q] < ends[q] for q in partitions) and time.monotonic() < deadline:
    m = c.poll(0.5)
    if m is None or m.error() is not None:
        continue
    v = int(m.value())
    seen[v] = seen.get(v, 0) + 1
    positions[m.partition()] = m.offset() + 1
c.close()
lost = len(acked - set(seen))
duplicated = sum(n - 1 for n in seen.values() if n > 1)
print(f"lost {lost} duplicated {duplicated} stored {len(seen)} errors {failed[:3]}", flush=True)
sys.exit(0 if lost == 0 and duplicated == 0 and not failed and left == 0 else 1)
