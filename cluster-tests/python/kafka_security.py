"""The Kafka listener of a --require-auth cluster over TLS, through clients we
did not write: SASL SCRAM-SHA-256/512 and PLAIN with confluent-kafka
(librdkafka), kafka-python and aiokafka; ACLs created, described and
deleted with the Kafka admin APIs, and enforced on a plain user.

Usage: kafka_security.py <kafka bootstrap> <ca.pem> <admin> <admin password>
                         <user> <user password>

The user exists and has no ACLs. Prints one line per check and
"N passed, M failed"; exits non-zero on a failure. `cluster-tests/tests/
kafka.rs` runs it.
"""

import asyncio
import socket
import ssl
import struct
import sys
import time

from checks import check, finish
import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
import kafka
import kafka.admin

BOOTSTRAP, CA, ADMIN, ADMIN_PW, USER, USER_PW = sys.argv[1:7]
TOPIC = "sec"
GROUP = "sec-group"


def conf(user, password, mechanism="SCRAM-SHA-256", **extra):
    c = {
        "bootstrap.servers": BOOTSTRAP,
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": CA,
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }
    c.update(extra)
    return c


def admin():
    return AdminClient(conf(ADMIN, ADMIN_PW))


def produce(c, n, prefix, idempotent=True):
    # Without Write on any topic InitProducerId is refused (KIP-679), so the
    # refusals are seen by a plain producer.
    p = Producer(dict(c, **{"enable.idempotence": idempotent, "acks": "all", "message.timeout.ms": 15000}))
    errors = []
    for i in range(n):
        p.produce(TOPIC, key=f"k{i}".encode(), value=f"{prefix}-{i}".encode(),
                  on_delivery=lambda err, _m: errors.append(err) if err else None)
    left = p.flush(30)
    return left, errors


def consume(c, want, group=None, seconds=20):
    extra = {"group.id": group or GROUP, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    consumer = Consumer(dict(c, **extra))
    consumer.subscribe([TOPIC])
    seen, errors = [], []
    deadline = time.monotonic() + seconds
    try:
        while len(seen) < want and time.monotonic() < deadline and not errors:
            m = consumer.poll(0.5)
            if m is None:
                continue
            if m.error():
                errors.append(m.error())
                continue
            seen.append(m.value().decode())
        if seen and not errors:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return seen, errors


@check("SCRAM-SHA-256 over TLS: the super user creates a topic, produces and consumes with librdkafka")
def _():
    a = admin()
    for f in a.create_topics([NewTopic(TOPIC, 3, 3)]).values():
        f.result()
    left, errors = produce(conf(ADMIN, ADMIN_PW), 100, "admin")
    assert left == 0 and not errors, (left, errors)
    seen, errors = consume(conf(ADMIN, ADMIN_PW), 100, group="admin-group")
    assert not errors and len(seen) == 100 and len(set(seen)) == 100, (len(seen), errors)


@check("SCRAM-SHA-512 and PLAIN authenticate too (librdkafka)")
def _():
    for mech in ["SCRAM-SHA-512", "PLAIN"]:
        md = AdminClient(conf(ADMIN, ADMIN_PW, mech)).list_topics(timeout=10)
        assert TOPIC in md.topics, (mech, md.topics)


@check("a wrong password, an unknown user and no SASL at all are refused")
def _():
    for c in [
        conf(ADMIN, "wrong"),
        conf(ADMIN, "wrong", "SCRAM-SHA-512"),
        conf(ADMIN, "wrong", "PLAIN"),
        conf("nobody", "whatever"),
    ]:
        try:
            AdminClient(c).list_topics(timeout=3)
            raise AssertionError(f"{c['sasl.mechanisms']} {c['sasl.username']}: listed topics")
        except KafkaException as e:
            code = e.args[0].code()
            assert code in (KafkaError._AUTHENTICATION, KafkaError._TRANSPORT, KafkaError._TIMED_OUT), e
    plain_tls = {"bootstrap.servers": BOOTSTRAP, "security.protocol": "SSL", "ssl.ca.location": CA}
    try:
        AdminClient(plain_tls).list_topics(timeout=5)
        raise AssertionError("listed topics without SASL")
    except KafkaException:
        pass


@check("a request before authentication closes the connection (raw frames over TLS)")
def _():
    host, port = BOOTSTRAP.split(",")[0].rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=CA)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            # Metadata v1, correlation 7, client id "raw", all topics (-1).
            body = struct.pack(">hhih", 3, 1, 7, 3) + b"raw" + struct.pack(">i", -1)
            s.sendall(struct.pack(">i", len(body)) + body)
            s.settimeout(10)
            assert s.recv(4) == b"", "the node answered an unauthenticated Metadata"


@check("a user with no ACLs is refused TOPIC_AUTHORIZATION_FAILED and sees no topics")
def _():
    left, errors = produce(conf(USER, USER_PW), 1, "denied", idempotent=False)
    codes = {e.code() for e in errors}
    assert left == 0 and codes == {KafkaError.TOPIC_AUTHORIZATION_FAILED}, (left, errors)
    md = AdminClient(conf(USER, USER_PW)).list_topics(timeout=10)
    assert TOPIC not in md.topics, md.topics


def binding(op, rtype=ResourceType.TOPIC, name=TOPIC):
    return AclBinding(rtype, name, ResourcePatternType.LITERAL, f"User:{USER}", "*", op,
                      AclPermissionType.ALLOW)


@check("CreateAcls and DescribeAcls (librdkafka and kafka-python) on the same ACLs as `rivulet acl`")
def _():
    a = admin()
    wanted = [
        binding(AclOperation.WRITE),
        binding(AclOperation.READ),
        binding(AclOperation.READ, ResourceType.GROUP, GROUP),
    ]
    for f in a.create_acls(wanted).values():
        f.result()
    found = a.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{USER}", None,
        AclOperation.ANY, AclPermissionType.ANY)).result()
    assert sorted(map(str, found)) == sorted(map(str, wanted)), found
    # A MATCH filter finds what applies to the topic.
    match = a.describe_acls(AclBindingFilter(
        ResourceType.TOPIC, TOPIC, ResourcePatternType.MATCH, None, None,
        AclOperation.ANY, AclPermissionType.ANY)).result()
    assert len(match) == 2, match
    kp = kafka.KafkaAdminClient(
        bootstrap_servers=BOOTSTRAP.split(","), security_protocol="SASL_SSL", ssl_cafile=CA,
        sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=ADMIN, sasl_plain_password=ADMIN_PW)
    acls, error = kp.describe_acls(kafka.admin.ACLFilter(
        principal=f"User:{USER}", host="*", operation=kafka.admin.ACLOperation.ANY,
        permission_type=kafka.admin.ACLPermissionType.ANY,
        resource_pattern=kafka.admin.ResourcePatternFilter(
            kafka.admin.ResourceType.GROUP, None, kafka.admin.ACLResourcePatternType.ANY)))
    assert error is kafka.errors.NoError, error
    assert [(x.resource_pattern.resource_name, x.operation) for x in acls] == \
        [(GROUP, kafka.admin.ACLOperation.READ)], acls
    kp.close()
    # A plain user may not change ACLs.
    try:
        plain = AdminClient(conf(USER, USER_PW))
        for f in plain.create_acls([binding(AclOperation.ALL)]).values():
            f.result()
        raise AssertionError("a plain user created an ACL")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED, e


@check("with the ACLs the user produces (librdkafka) and consumes in its group (kafka-python, SCRAM-SHA-512); aiokafka reads as admin (SCRAM-SHA-256)")
def _():
    # Each node applies the ACLs from the metadata log: retry briefly.
    deadline = time.monotonic() + 10
    while True:
        left, errors = produce(conf(USER, USER_PW), 20, "user")
        if not errors or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left == 0 and not errors, (left, errors)
    c = kafka.KafkaConsumer(
        TOPIC, bootstrap_servers=BOOTSTRAP.split(","), group_id=GROUP,
        auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=15000,
        security_protocol="SASL_SSL", ssl_cafile=CA, sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=USER, sasl_plain_password=USER_PW)
    seen = [m.value.decode() for m, _ in zip(c, range(120))]
    c.commit()
    c.close()
    assert len(seen) == 120 and len(set(seen)) == 120, len(seen)

    async def aio():
        import aiokafka
        from aiokafka.helpers import create_ssl_context
        consumer = aiokafka.AIOKafkaConsumer(
            TOPIC, bootstrap_servers=BOOTSTRAP, group_id="aio-" + GROUP, auto_offset_reset="earliest",
            security_protocol="SASL_SSL", ssl_context=create_ssl_context(cafile=CA),
            sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=ADMIN, sasl_plain_password=ADMIN_PW)
        await consumer.start()
        try:
            got = []
            while len(got) < 120:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 20)
                for msgs in batch.values():
                    got.extend(m.value for m in msgs)
            return got
        finally:
            await consumer.stop()

    assert len(asyncio.run(aio())) == 120


@check("DeleteAcls removes them and the user is refused again")
def _():
    a = admin()
    results = a.delete_acls([AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{USER}", None,
        AclOperation.ANY, AclPermissionType.ANY)])
    deleted = [b for f in results.values() for b in f.result()]
    assert len(deleted) == 3, deleted
    left = a.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{USER}", None,
        AclOperation.ANY, AclPermissionType.ANY)).result()
    assert left == [], left
    deadline = time.monotonic() + 10
    while True:
        left, errors = produce(conf(USER, USER_PW), 1, "after", idempotent=False)
        if errors or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {e.code() for e in errors} == {KafkaError.TOPIC_AUTHORIZATION_FAILED}, errors


finish(f" (librdkafka {confluent_kafka.libversion()[0]}, kafka-python {kafka.__version__})")
