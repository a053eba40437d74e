"""Consumer groups of the classic protocol through clients we did not write:
librdkafka (eager and cooperative-sticky assignors) and kafka-python.

Usage: kafka_groups.py <kafka bootstrap> <topic with 6 partitions> <rivulet binary> <gRPC bootstrap>

Prints one line per check and "N passed, M failed"; exits non-zero on a
failure. `cluster-tests/tests/kafka.rs` runs it, then checks with `rivulet
group describe` that group `eager` has no lag left.
"""

import json
import subprocess
import sys
import threading
import time

from checks import check, finish
from confluent_kafka import Consumer, Producer
import kafka

BOOTSTRAP = sys.argv[1]
TOPIC = sys.argv[2]
RIVULET = [sys.argv[3], "--bootstrap", sys.argv[4]]
PARTITIONS = 6

next_value = 0



def produce(n):
    """n new records (values unique across the run); returns their values."""
    global next_value
    p = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "linger.ms": 5})
    values = [str(v) for v in range(next_value, next_value + n)]
    next_value += n
    for v in values:
        p.produce(TOPIC, key=v.encode(), value=v.encode())
    assert p.flush(30) == 0
    return set(values)


class Member:
    """A librdkafka group member polling in its own thread."""

    def __init__(self, group, strategy):
        self.seen = []
        self.assignment = set()
        self.stop = threading.Event()
        conf = {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 200,
        }
        if strategy == "kip-848":
            # The new protocol: the coordinator assigns (KIP-848).
            conf["group.protocol"] = "consumer"
        else:
            conf.update(
                {
                    "session.timeout.ms": 6000,
                    "heartbeat.interval.ms": 300,
                    "partition.assignment.strategy": strategy,
                }
            )
        self.consumer = Consumer(conf)
        # Both hand out partitions incrementally.
        self.cooperative = strategy in ("cooperative-sticky", "kip-848")
        self.consumer.subscribe([TOPIC], on_assign=self.on_assign, on_revoke=self.on_revoke)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def on_assign(self, c, parts):
        if self.cooperative:
            self.assignment |= {p.partition for p in parts}
        else:
            self.assignment = {p.partition for p in parts}

    def on_revoke(self, c, parts):
        if self.cooperative:
            self.assignment -= {p.partition for p in parts}
        else:
            self.assignment = set()

    def run(self):
        while not self.stop.is_set():
            m = self.consumer.poll(0.2)
            if m is not None and m.error() is None:
                self.seen.append(m.value().decode())

    def close(self):
        self.stop.set()
        self.thread.join()
        self.consumer.close()  # commits, then LeaveGroup


def wait_for(what, cond, timeout=40):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def settled(members):
    parts = [m.assignment for m in members]
    return all(parts) and sorted(p for s in parts for p in s) == list(range(PARTITIONS))


def read_exactly_once(members, values):
    wait_for(
        f"{len(values)} records",
        lambda: len(set(v for m in members for v in m.seen) & values) == len(values),
    )
    time.sleep(0.5)
    seen = [v for m in members for v in m.seen if v in values]
    assert len(seen) == len(values), f"{len(seen) - len(values)} records read twice"


state = {}


@check("three librdkafka members (eager range) split the partitions and read every record once")
def _():
    members = [Member("eager", "range") for _ in range(3)]
    state["eager"] = members
    wait_for("three members with two partitions each", lambda: settled(members))
    assert all(len(m.assignment) == 2 for m in members), [m.assignment for m in members]
    read_exactly_once(members, produce(3000))


@check("a member that leaves hands its partitions to the others; nothing is lost or read twice")
def _():
    members = state["eager"]
    gone = members.pop()
    gone.close()
    wait_for("two members owning every partition", lambda: settled(members))
    for m in members:
        m.seen.clear()
    read_exactly_once(members, produce(600))
    for m in members:
        m.close()


CHILD = """
import sys
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "killed", "session.timeout.ms": 6000,
              "heartbeat.interval.ms": 300, "auto.offset.reset": "latest"})
c.subscribe([sys.argv[2]], on_assign=lambda c, ps: print("assigned", len(ps), flush=True))
while True:
    c.poll(0.2)
"""


@check("a member killed with SIGKILL loses its partitions after its session; the survivor takes them and reads on")
def _():
    import os
    import signal

    child = subprocess.Popen([sys.executable, "-c", CHILD, BOOTSTRAP, TOPIC], stdout=subprocess.PIPE, text=True)
    survivor = Member("killed", "range")
    try:
        wait_for("the survivor to share the partitions", lambda: 0 < len(survivor.assignment) < PARTITIONS)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        started = time.monotonic()
        wait_for("the survivor to own every partition", lambda: len(survivor.assignment) == PARTITIONS, timeout=30)
        took = time.monotonic() - started
        assert took < 20, f"{took:.1f}s after the kill"
        survivor.seen.clear()
        read_exactly_once([survivor], produce(600))
    finally:
        if child.poll() is None:
            child.kill()
        survivor.close()


@check("cooperative-sticky members rebalance incrementally and read every record once")
def _():
    members = [Member("sticky", "cooperative-sticky") for _ in range(2)]
    wait_for("two sticky members", lambda: settled(members))
    before = [set(m.assignment) for m in members]
    values = produce(1200)
    read_exactly_once(members, values)
    members.append(Member("sticky", "cooperative-sticky"))
    wait_for("three sticky members", lambda: settled(members))
    # Sticky: the first two kept partitions they had.
    assert all(m.assignment <= b for m, b in zip(members, before)), (before, [m.assignment for m in members])
    for m in members:
        m.seen.clear()
    read_exactly_once(members, produce(900))
    for m in members:
        m.close()


@check("KIP-848 members (group.protocol=consumer) get their partitions from the coordinator and read every record once")
def _():
    members = [Member("kip848", "kip-848") for _ in range(2)]
    wait_for("two KIP-848 members", lambda: settled(members))
    read_exactly_once(members, produce(900))
    members.append(Member("kip848", "kip-848"))
    wait_for("three KIP-848 members", lambda: settled(members))
    for m in members:
        m.seen.clear()
    read_exactly_once(members, produce(600))
    for m in members:
        m.close()


def rivulet(*args):
    return subprocess.run(RIVULET + list(args), capture_output=True, text=True, timeout=30)


@check("`rivulet group describe` shows a classic group's members and assignments; reset-offsets and delete wait until it is empty")
def _():
    members = [Member("visible", "range"), Member("visible", "range")]
    try:
        wait_for("two members with every partition", lambda: settled(members))
        wait_for("the members in `rivulet group describe`", lambda: len(
            json.loads(rivulet("group", "describe", "visible", "--json").stdout or "{}").get("members", [])) == 2)
        d = json.loads(rivulet("group", "describe", "visible", "--json").stdout)
        assigned = sorted(p for m in d["members"] for p in (tp["partition"] for tp in m["assignment"]))
        assert assigned == list(range(PARTITIONS)), d
        assert all(m["subscribed_topics"] == [TOPIC] for m in d["members"]), d
        assert d["state"] == "Stable", d["state"]
        for args in [("group", "reset-offsets", "visible", "--topic", TOPIC, "--to-earliest"),
                     ("group", "delete", "visible")]:
            out = rivulet(*args)
            assert out.returncode != 0, out
            assert "active member" in out.stderr or "NON_EMPTY_GROUP" in out.stderr, out.stderr
    finally:
        for m in members:
            m.close()
    # Empty now (both left): the reset goes through.
    wait_for("the group to empty", lambda: json.loads(
        rivulet("group", "describe", "visible", "--json").stdout or '{"members": []}').get("members") == [])
    out = rivulet("group", "reset-offsets", "visible", "--topic", TOPIC, "--to-earliest")
    assert out.returncode == 0, out.stderr
    # The reset made through gRPC is what a Kafka client fetches.
    k = kafka.KafkaConsumer(bootstrap_servers=BOOTSTRAP.split(","), group_id="visible",
                            enable_auto_commit=False)
    got = [k.committed(kafka.TopicPartition(TOPIC, p)) for p in range(PARTITIONS)]
    k.close()
    assert got == [0] * PARTITIONS, got


@check("a kafka-python group consumer reads everything and commits")
def _():
    c = kafka.KafkaConsumer(
        TOPIC,
        bootstrap_servers=BOOTSTRAP.split(","),
        group_id="kafka-python-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10000,
    )
    values = set()
    for m in c:
        values.add(m.value.decode())
        if len(values) == next_value:
            break
    assert len(values) == next_value, (len(values), next_value)
    c.commit()
    committed = sum(c.committed(kafka.TopicPartition(TOPIC, p)) or 0 for p in range(PARTITIONS))
    assert committed == next_value, (committed, next_value)
    c.close()


print(f"records produced: {next_value}")
finish()
