"""The gRPC contract, checked through Python grpcio: a client we did not
write, with stubs generated from our .proto files at run time.

Run by cluster-tests/tests/python_grpc.rs against a live cluster:
    python grpc_contract.py <proto dir> <host:port,...>
Prints one line per check and "N passed, N failed" at the end; exits 1 if
any check failed.
"""

import os
import sys
import tempfile
import time
import traceback

import grpc
from grpc_tools import protoc


def generate(proto_dir):
    out = tempfile.mkdtemp(prefix="rivulet-py-")
    files = [
        os.path.join("rivulet", "v1", f)
        for f in sorted(os.listdir(os.path.join(proto_dir, "rivulet", "v1")))
        if f.endswith(".proto")
    ]
    import grpc_tools

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(
        ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
        + files
    )
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc})")
    sys.path.insert(0, out)


def main():
    proto_dir, addrs = sys.argv[1], sys.argv[2].split(",")
    generate(proto_dir)
    from rivulet.v1 import broker_pb2 as b, broker_pb2_grpc as bg
    from rivulet.v1 import common_pb2 as common
    from rivulet.v1 import controller_pb2 as ctl, controller_pb2_grpc as cg

    channels = {a: grpc.insecure_channel(a) for a in addrs}
    controller = cg.ControllerStub(channels[addrs[0]])
    results = []

    def check(name, fn):
        try:
            fn()
            results.append((name, None))
            print(f"PASS {name}")
        except Exception as e:  # noqa: BLE001 - report every failure
            results.append((name, e))
            print(f"FAIL {name}: {e!r}")
            traceback.print_exc()

    def leader_stub(topic, partition):
        deadline = time.monotonic() + 15
        while True:
            meta = bg.BrokerStub(channels[addrs[0]]).Metadata(b.MetadataRequest(topics=[topic]), timeout=10)
            brokers = {x.id: x.address for x in meta.brokers}
            p = [p for t in meta.topics if t.name == topic for p in t.partitions if p.partition == partition][0]
            if p.HasField("leader") or time.monotonic() >= deadline:
                return bg.BrokerStub(grpc.insecure_channel(brokers[p.leader])), p
            time.sleep(0.1)

    def cluster_state():
        d = controller.DescribeCluster(ctl.DescribeClusterRequest(), timeout=10)
        assert d.brokers, d
        for x in d.brokers:
            assert x.state == "live", x
            assert len(x.directory_id) == 32, x

    def create():
        r = controller.CreateTopic(
            ctl.CreateTopicRequest(name="py-contract", partitions=1, replication_factor=3), timeout=10
        )
        assert r.error_code == common.NONE, r
        assert list(r.topic.partitions[0].elr) == [], r
        # A new partition takes writes once its leader has applied the
        # change: retriable errors until then, as for any client.
        retriable = {common.NOT_LEADER_OR_FOLLOWER, common.LEADER_NOT_AVAILABLE, common.NOT_ENOUGH_REPLICAS}
        deadline = time.monotonic() + 15
        while True:
            stub, _ = leader_stub("py-contract", 0)
            entry = b.ProducePartition(
                topic="py-contract", partition=0, records=b.RecordList(records=[b.Record(value=b"first")])
            )
            got = stub.Produce(b.ProduceRequest(acks=b.ACKS_ALL, partitions=[entry]), timeout=10).partitions[0]
            if got.error_code == common.NONE:
                return
            assert got.error_code in retriable and time.monotonic() < deadline, got
            time.sleep(0.1)

    def same_partition_entries_in_order():
        stub, _ = leader_stub("py-contract", 0)
        entries = [
            b.ProducePartition(
                topic="py-contract",
                partition=0,
                records=b.RecordList(records=[b.Record(value=f"v{i}".encode())]),
            )
            for i in range(20)
        ]
        r = stub.Produce(b.ProduceRequest(acks=b.ACKS_ALL, timeout_ms=10000, partitions=entries), timeout=15)
        offsets = [p.base_offset for p in r.partitions]
        assert all(p.error_code == common.NONE for p in r.partitions), r
        assert offsets == list(range(offsets[0], offsets[0] + 20)), offsets
        assert all(p.leader_epoch == r.partitions[0].leader_epoch for p in r.partitions)

    def idempotent_records_are_stored_once():
        stub, _ = leader_stub("py-contract", 0)
        init = stub.InitProducerId(b.InitProducerIdRequest(), timeout=15)
        assert init.error_code == common.NONE, init
        assert init.producer_id >= 0 and init.producer_epoch == 0, init
        pid, epoch = init.producer_id, init.producer_epoch

        def entry(values, seq, ep=epoch):
            return b.ProducePartition(
                topic="py-contract",
                partition=0,
                records=b.RecordList(records=[b.Record(value=v) for v in values]),
                producer_id=pid,
                producer_epoch=ep,
                base_sequence=seq,
            )

        def produce(e):
            return stub.Produce(b.ProduceRequest(acks=b.ACKS_ALL, partitions=[e]), timeout=10).partitions[0]

        first = produce(entry([b"i0", b"i1"], 0))
        assert first.error_code == common.NONE, first
        again = produce(entry([b"i0", b"i1"], 0))
        assert (again.error_code, again.base_offset) == (common.NONE, first.base_offset), again
        end = stub.ListOffsets(
            b.ListOffsetsRequest(partitions=[b.ListOffsetsPartition(topic="py-contract", partition=0, offset_spec=b.LATEST)]),
            timeout=10,
        ).partitions[0]
        assert end.offset == first.base_offset + 2, (end, first)
        gap = produce(entry([b"i9"], 9))
        assert gap.error_code == common.OUT_OF_ORDER_SEQUENCE_NUMBER and not gap.appended, gap
        bumped = stub.InitProducerId(b.InitProducerIdRequest(producer_id=pid, producer_epoch=epoch), timeout=15)
        assert (bumped.producer_id, bumped.producer_epoch) == (pid, epoch + 1), bumped
        assert produce(entry([b"i2"], 0, epoch + 1)).error_code == common.NONE
        fenced = produce(entry([b"i3"], 2))
        assert fenced.error_code == common.INVALID_PRODUCER_EPOCH, fenced
        half = b.ProducePartition(topic="py-contract", partition=0, records=b.RecordList(records=[b.Record(value=b"x")]), producer_id=pid)
        assert produce(half).error_code == common.INVALID_REQUEST
        tx = stub.InitProducerId(b.InitProducerIdRequest(transactional_id="tx"), timeout=15)
        assert tx.error_code == common.TRANSACTIONS_NOT_SUPPORTED, tx

    def kafka_timestamp_conventions():
        stub, _ = leader_stub("py-contract", 0)

        def ask(**spec):
            req = b.ListOffsetsRequest(partitions=[b.ListOffsetsPartition(topic="py-contract", partition=0, **spec)])
            p = stub.ListOffsets(req, timeout=10).partitions[0]
            assert p.error_code == common.NONE, p
            return p.offset

        assert ask(timestamp_ms=-1) == ask(offset_spec=b.LATEST)
        assert ask(timestamp_ms=-2) == ask(offset_spec=b.EARLIEST)

    def stale_epoch_list_offsets_is_fenced():
        stub, p = leader_stub("py-contract", 0)
        if p.leader_epoch == 0:
            req_epoch = p.leader_epoch + 1
            want = common.UNKNOWN_LEADER_EPOCH
        else:
            req_epoch, want = p.leader_epoch - 1, common.FENCED_LEADER_EPOCH
        req = b.ListOffsetsRequest(
            partitions=[
                b.ListOffsetsPartition(
                    topic="py-contract", partition=0, offset_spec=b.LATEST, current_leader_epoch=req_epoch
                )
            ]
        )
        got = stub.ListOffsets(req, timeout=10).partitions[0]
        assert got.error_code == want, got

    def bad_acks_and_timeouts_are_invalid_argument():
        stub, _ = leader_stub("py-contract", 0)
        entry = b.ProducePartition(
            topic="py-contract", partition=0, records=b.RecordList(records=[b.Record(value=b"x")])
        )
        for req, needle in [
            (b.ProduceRequest(acks=99, partitions=[entry]), "ACKS_NONE (1)"),
            (b.ProduceRequest(acks=b.ACKS_ALL, timeout_ms=2**32 - 1, partitions=[entry]), "over the limit"),
            (b.ProduceRequest(acks=b.ACKS_ALL, partitions=[entry] * 1001), "at most 1000"),
        ]:
            try:
                stub.Produce(req, timeout=10)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
                assert needle in e.details(), e.details()
            else:
                raise AssertionError(f"accepted: {needle}")

    def raw(method, payload, timeout=30):
        call = channels[addrs[0]].unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(payload, timeout=timeout)
        except grpc.RpcError as e:
            return e
        raise AssertionError(f"{method} accepted {len(payload)} bytes")

    def malformed_requests_are_invalid_argument():
        # MetadataRequest.topics (field 1, a string) holding invalid UTF-8,
        # and bytes that are no protobuf at all: the caller's fault.
        for payload, needle in [(b"\x0a\x02\xff\xfe", "UTF-8"), (b"\xff\xff\xff\xff", "malformed")]:
            for method in ["/rivulet.v1.Broker/Metadata", "/rivulet.v1.Controller/DescribeTopics"]:
                e = raw(method, payload)
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, e.code(), e.details())
                assert needle in e.details(), e.details()

    def oversized_request_is_resource_exhausted():
        # A 257 MiB Produce: over the 256 MiB a request may be.
        big = b"\x1a" + b"\xff\xff\xff\x80\x01" + b"\0" * (257 << 20)
        e = raw("/rivulet.v1.Broker/Produce", big, timeout=60)
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (e.code(), e.details())
        assert "MESSAGE_TOO_LARGE" in e.details() and "268435456" in e.details(), e.details()

    def poison_batch_is_corrupt_record():
        # A v2 batch header with a valid CRC-32C over records that do not
        # parse; the good batch beside it lands.
        import struct

        def crc32c(data):
            crc = 0xFFFFFFFF
            for byte in data:
                crc ^= byte
                for _ in range(8):
                    crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
            return crc ^ 0xFFFFFFFF

        def batch(records_bytes, count, attributes=0):
            after_crc = struct.pack(">hiqqqhii", attributes, count - 1, 1, 1, -1, -1, -1, count) + records_bytes
            body = struct.pack(">ib", -1, 2) + struct.pack(">I", crc32c(after_crc)) + after_crc
            return struct.pack(">qi", 0, len(body)) + body

        def varint(n):
            n = (n << 1) ^ (n >> 63)
            out = b""
            while n >= 0x80:
                out += bytes([(n & 0x7F) | 0x80])
                n >>= 7
            return out + bytes([n])

        rec = b"\0" + varint(0) + varint(0) + varint(-1) + varint(2) + b"ok" + varint(0)
        good = batch(varint(len(rec)) + rec, 1)
        poison = batch(b"\xff" * 20, 1)
        stub, _ = leader_stub("py-contract", 0)
        entries = [b.ProducePartition(topic="py-contract", partition=0, record_batch=x) for x in (poison, good)]
        r = stub.Produce(b.ProduceRequest(acks=b.ACKS_ALL, partitions=entries), timeout=10).partitions
        assert r[0].error_code == common.CORRUPT_RECORD and not r[0].appended, r[0]
        assert r[1].error_code == common.NONE and r[1].appended, r[1]
        transactional = batch(varint(len(rec)) + rec, 1, attributes=0x10)
        entry = b.ProducePartition(topic="py-contract", partition=0, record_batch=transactional)
        r = stub.Produce(b.ProduceRequest(acks=b.ACKS_ALL, partitions=[entry]), timeout=10).partitions[0]
        assert r.error_code == common.INVALID_RECORD and "transactional" in r.error_message, r

    def forged_node_calls_are_unauthenticated():
        # The cluster runs with a secret: the cluster's own calls from a
        # plain client are refused before they reach any service, and
        # change nothing.
        from rivulet.v1 import raft_pb2 as raft, raft_pb2_grpc as rg

        before = controller.DescribeCluster(ctl.DescribeClusterRequest(), timeout=10)
        vote = b'{"vote":{"leader_id":{"term":1000,"node_id":3},"committed":false},"last_log_id":null}'
        victim = sorted(x.id for x in before.brokers)[-1]
        epoch = [x.broker_epoch for x in before.brokers if x.id == victim][0]
        calls = [
            lambda: rg.RaftStub(channels[addrs[0]]).Vote(raft.RaftMessage(json=vote), timeout=10),
            lambda: controller.RegisterBroker(
                ctl.RegisterBrokerRequest(broker_id=victim, address="203.0.113.9:9092", directory_id="x"), timeout=10
            ),
            lambda: controller.RegisterBroker(ctl.RegisterBrokerRequest(broker_id=77, address="203.0.113.9:9092"), timeout=10),
            lambda: controller.AddLearner(ctl.AddLearnerRequest(node_id=77, address="203.0.113.9:9092"), timeout=10),
            lambda: bg.ReplicationStub(channels[addrs[0]]).ReplicaFetch(
                b.ReplicaFetchRequest(replica_id=victim, broker_epoch=epoch, max_wait_ms=10), timeout=10
            ),
            # Headers that look like a proof are not one.
            lambda: rg.RaftStub(channels[addrs[0]]).Vote(
                raft.RaftMessage(json=vote),
                timeout=10,
                metadata=[("x-rivulet-node-proof", "v1.3.%d.%s.%s" % (int(time.time() * 1000), "0" * 32, "0" * 64))],
            ),
        ]
        for i, call in enumerate(calls):
            try:
                call()
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED, (i, e.code(), e.details())
            else:
                raise AssertionError(f"forged call {i} accepted")
        after = controller.DescribeCluster(ctl.DescribeClusterRequest(), timeout=10)
        assert after.raft_term == before.raft_term, (before.raft_term, after.raft_term)
        assert after.controller_leader == before.controller_leader
        assert [(x.id, x.address, x.broker_epoch) for x in after.brokers] == [
            (x.id, x.address, x.broker_epoch) for x in before.brokers
        ], after.brokers
        assert [(v.id, v.learner) for v in after.voters] == [(v.id, v.learner) for v in before.voters]

    def create_partitions():
        r = controller.CreateTopic(
            ctl.CreateTopicRequest(name="py-grow", partitions=2, replication_factor=3), timeout=10
        )
        assert r.error_code == common.NONE, r
        grow = lambda total, validate=False, name="py-grow": controller.CreatePartitions(  # noqa: E731
            ctl.CreatePartitionsRequest(name=name, total=total, validate_only=validate), timeout=10
        )
        v = grow(5, validate=True)
        assert v.error_code == common.NONE and len(v.topic.partitions) == 2, v
        g = grow(5)
        assert g.error_code == common.NONE and len(g.topic.partitions) == 5, g
        assert all(len(p.replicas) == 3 and list(p.isr) == list(p.replicas) for p in g.topic.partitions), g
        # Fewer, the same, past the limit, 2^32-1, an unknown topic, a bad name.
        for total, name, code in [
            (4, "py-grow", common.INVALID_PARTITIONS),
            (5, "py-grow", common.INVALID_PARTITIONS),
            (10_001, "py-grow", common.INVALID_PARTITIONS),
            (2**32 - 1, "py-grow", common.INVALID_PARTITIONS),
            (9, "py-nope", common.UNKNOWN_TOPIC_OR_PARTITION),
            (9, "bad name\u0000", common.UNKNOWN_TOPIC_OR_PARTITION),
        ]:
            r = grow(total, name=name)
            assert r.error_code == code, (total, name, r)
        assert len(grow(5, validate=True).topic.partitions) == 5

    check("DescribeCluster: every broker live, with a directory id", cluster_state)
    check("CreatePartitions: grows a topic, validate-only changes nothing, fewer/too many/unknown refused", create_partitions)
    check("Node-to-node calls from a plain client are UNAUTHENTICATED and change nothing", forged_node_calls_are_unauthenticated)
    check("CreateTopic", create)
    check("Produce: entries for one partition are appended in request order", same_partition_entries_in_order)
    check("InitProducerId and idempotent records: a resend is stored once, gaps and old epochs refused", idempotent_records_are_stored_once)
    check("ListOffsets: timestamps -1 and -2 are LATEST and EARLIEST", kafka_timestamp_conventions)
    check("ListOffsets: current_leader_epoch is checked", stale_epoch_list_offsets_is_fenced)
    check("Produce: bad acks, timeout and entry count are INVALID_ARGUMENT", bad_acks_and_timeouts_are_invalid_argument)
    check("Malformed protobuf and invalid UTF-8 are INVALID_ARGUMENT", malformed_requests_are_invalid_argument)
    check("A request over the size limit is RESOURCE_EXHAUSTED naming the limit", oversized_request_is_resource_exhausted)
    check("Produce: a batch with a valid CRC but unreadable records is CORRUPT_RECORD", poison_batch_is_corrupt_record)

    failed = sum(1 for _, e in results if e is not None)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
