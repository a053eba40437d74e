"""Users and ACLs, checked through Python grpcio (a client we did not write)
against a cluster started with --require-auth over TLS.

Run by cluster-tests/tests/python_grpc.rs:
    python auth_contract.py <proto dir> <host:port,...> <ca.pem> <admin> <password>

The SCRAM credentials of a new user are derived here with Python's hashlib
(RFC 5802), not with Rivulet's code: the node must accept that user's
password, which checks our derivation against an independent one.
Prints one line per check and "N passed, N failed"; exits 1 on a failure.
"""

import base64
import hashlib
import hmac
import os
import sys
import time
import traceback

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpc_contract import generate  # noqa: E402


def scram(name, password, salt, iterations):
    salted = hashlib.pbkdf2_hmac(name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", name).digest()
    stored_key = hashlib.new(name, client_key).digest()
    server_key = hmac.new(salted, b"Server Key", name).digest()
    return stored_key, server_key


def basic(user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return (("authorization", f"Basic {token}"),)


def main():
    proto_dir, addrs, ca, admin, admin_pw = sys.argv[1:6]
    addrs = addrs.split(",")
    generate(proto_dir)
    from rivulet.v1 import broker_pb2 as b, broker_pb2_grpc as bg
    from rivulet.v1 import common_pb2 as common
    from rivulet.v1 import controller_pb2 as ctl, controller_pb2_grpc as cg

    creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
    channel = grpc.secure_channel(addrs[0], creds)
    controller = cg.ControllerStub(channel)
    broker = bg.BrokerStub(channel)
    as_admin = basic(admin, admin_pw)
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

    def code_of(call):
        try:
            call()
        except grpc.RpcError as e:
            return e.code()
        return grpc.StatusCode.OK

    def anonymous_is_unauthenticated():
        assert code_of(lambda: broker.Metadata(b.MetadataRequest(), timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: controller.ListUsers(ctl.ListUsersRequest(), timeout=5)) == grpc.StatusCode.UNAUTHENTICATED

    def wrong_password_is_unauthenticated():
        bad = basic(admin, admin_pw + "x")
        assert code_of(lambda: broker.Metadata(b.MetadataRequest(), metadata=bad, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
        garbage = (("authorization", "Basic !!!"),)
        assert code_of(lambda: broker.Metadata(b.MetadataRequest(), metadata=garbage, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED

    def bad_credentials_are_refused():
        r = controller.UpsertUser(
            ctl.UpsertUserRequest(
                name="carol",
                credentials=[ctl.ScramCredential(mechanism=ctl.SCRAM_MECHANISM_SHA_256, salt=b"short", iterations=4096, stored_key=b"x" * 32, server_key=b"x" * 32)],
            ),
            metadata=as_admin,
            timeout=10,
        )
        assert r.error_code == common.INVALID_REQUEST, r
        r = controller.UpsertUser(ctl.UpsertUserRequest(name="a:b", credentials=[]), metadata=as_admin, timeout=10)
        assert r.error_code == common.INVALID_REQUEST, r
        assert code_of(
            lambda: controller.CreateAcls(ctl.CreateAclsRequest(acls=[ctl.AclBinding(principal="alice")]), metadata=as_admin, timeout=10)
        ) == grpc.StatusCode.INVALID_ARGUMENT

    def a_user_made_with_hashlib_can_log_in_and_acls_apply():
        salt = os.urandom(16)
        creds = []
        for mech, name in ((ctl.SCRAM_MECHANISM_SHA_256, "sha256"), (ctl.SCRAM_MECHANISM_SHA_512, "sha512")):
            stored, server = scram(name, "py-secret", salt, 4096)
            creds.append(ctl.ScramCredential(mechanism=mech, salt=salt, iterations=4096, stored_key=stored, server_key=server))
        r = controller.UpsertUser(ctl.UpsertUserRequest(name="pyuser", credentials=creds), metadata=as_admin, timeout=10)
        assert r.error_code == 0 and r.created, r
        users = controller.ListUsers(ctl.ListUsersRequest(), metadata=as_admin, timeout=10)
        assert any(u.name == "pyuser" and list(u.mechanisms) == ["SCRAM-SHA-256", "SCRAM-SHA-512"] for u in users.users), users
        me = basic("pyuser", "py-secret")
        # Logged in, but no ACL: the topic is not shown, ListUsers is denied.
        md = broker.Metadata(b.MetadataRequest(topics=["pytopic"]), metadata=me, timeout=10)
        assert list(md.unauthorized_topics) == ["pytopic"], md
        assert code_of(lambda: controller.ListUsers(ctl.ListUsersRequest(), metadata=me, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
        acl = ctl.AclBinding(
            principal="User:pyuser",
            operation=ctl.ACL_OPERATION_DESCRIBE,
            resource_type=ctl.ACL_RESOURCE_TYPE_TOPIC,
            pattern_type=ctl.ACL_PATTERN_TYPE_LITERAL,
            resource_name="pytopic",
            permission=ctl.ACL_PERMISSION_ALLOW,
        )
        r = controller.CreateAcls(ctl.CreateAclsRequest(acls=[acl]), metadata=as_admin, timeout=10)
        assert r.error_code == 0, r
        listed = controller.ListAcls(ctl.ListAclsRequest(filter=ctl.AclBinding(principal="User:pyuser")), metadata=as_admin, timeout=10)
        assert len(listed.acls) == 1 and listed.acls[0].host == "*", listed
        md = broker.Metadata(b.MetadataRequest(topics=["pytopic"]), metadata=me, timeout=10)
        assert list(md.unauthorized_topics) == [] and list(md.unknown_topics) == ["pytopic"], md
        r = controller.DeleteAcls(ctl.DeleteAclsRequest(filter=ctl.AclBinding(principal="User:pyuser")), metadata=as_admin, timeout=10)
        assert len(r.deleted) == 1, r
        r = controller.DeleteUser(ctl.DeleteUserRequest(name="pyuser"), metadata=as_admin, timeout=10)
        assert r.error_code == 0, r
        # Each node drops the user once it applies the deletion (ms later).
        deadline = time.monotonic() + 5
        while code_of(lambda: broker.Metadata(b.MetadataRequest(), metadata=me, timeout=5)) != grpc.StatusCode.UNAUTHENTICATED:
            assert time.monotonic() < deadline, "the deleted user still works after 5 s"
            time.sleep(0.05)
        r = controller.DeleteUser(ctl.DeleteUserRequest(name="pyuser"), metadata=as_admin, timeout=10)
        assert r.error_code == common.RESOURCE_NOT_FOUND, r

    check("anonymous calls are UNAUTHENTICATED", anonymous_is_unauthenticated)
    check("a wrong password or a garbage header is UNAUTHENTICATED", wrong_password_is_unauthenticated)
    check("bad credentials, names and ACLs are refused", bad_credentials_are_refused)
    check("a user made with hashlib logs in; ACLs apply; deletion takes effect", a_user_made_with_hashlib_can_log_in_and_acls_apply)

    failed = [n for n, e in results if e is not None]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
