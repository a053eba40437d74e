//! Users and ACLs with real processes (issue 15, items 3 and 4): a cluster
//! started with `--require-auth` over TLS, a super user from
//! `--initial-users-file`, and a user who can do exactly what its ACLs say.
//! Raw gRPC without credentials (or with a forged "forwarded" mark, or a bad
//! node proof) is refused with UNAUTHENTICATED.

use std::future::Future;
use std::process::Output;
use std::time::Duration;

use cluster_tests::cli::{self, rivulet_as, rivulet_as_with_stdin};
use cluster_tests::Cluster;
use rivulet_proto::user_auth::UserCredentials;
use rivulet_proto::v1::broker_client::BrokerClient;
use rivulet_proto::v1::controller_client::ControllerClient;
use rivulet_proto::v1::groups_client::GroupsClient;
use rivulet_proto::v1::{CreateTopicRequest, ErrorCode, FindCoordinatorRequest, MetadataRequest};

const TEST_LIMIT: Duration = Duration::from_secs(240);
const SETTLE: Duration = Duration::from_secs(20);
const ALICE: (&str, &str) = ("alice", "alice-password");

async fn bounded(body: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("the test exceeded its {TEST_LIMIT:?} limit");
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the CLI as `user`; asserts it succeeded; its stdout.
fn ok_as(c: &Cluster, user: (&str, &str), args: &[&str]) -> String {
    let out = rivulet_as(c, Some(user), args);
    assert!(
        out.status.success(),
        "rivulet {args:?} as {}: {}",
        user.0,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the CLI as `user`; asserts it failed saying `needle`.
fn refused_as(c: &Cluster, user: Option<(&str, &str)>, args: &[&str], needle: &str) {
    let out = rivulet_as(c, user, args);
    assert!(
        !out.status.success(),
        "rivulet {args:?} should fail: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(needle),
        "rivulet {args:?}: expected {needle:?} in: {}",
        text(&out)
    );
}

/// `rivulet acl create --principal User:alice <rest>` as the super user.
fn alice_acl(c: &Cluster, rest: &[&str]) {
    let mut args = vec!["acl", "create", "--principal", "User:alice"];
    args.extend_from_slice(rest);
    ok_as(c, cluster_tests::ADMIN, &args);
}

fn produce_as(c: &Cluster, user: (&str, &str), topic: &str, lines: &str) -> Output {
    rivulet_as_with_stdin(c, Some(user), &["produce", topic], lines)
}

fn consume_args(topic: &str) -> Vec<&str> {
    vec!["consume", topic, "--from-beginning", "--timeout-ms", "3000"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_need_the_right_password_and_acls_grant_exactly_their_operation() {
    bounded(async {
        let c = Cluster::start_secured(3).await;
        c.wait_unfenced(&c.ids(), SETTLE).await;
        let admin = cluster_tests::ADMIN;

        // The super user from --initial-users-file may do everything.
        ok_as(
            &c,
            admin,
            &["topic", "create", "orders", "--partitions", "2"],
        );
        let out = produce_as(&c, admin, "orders", "a\nb\nc\n");
        assert!(out.status.success(), "{}", text(&out));

        // No user, or a wrong password: refused, with a one-line reason.
        refused_as(&c, None, &["topic", "list"], "this cluster requires a user");
        refused_as(
            &c,
            Some((admin.0, "wrong")),
            &["topic", "list"],
            "wrong user name or password",
        );
        refused_as(
            &c,
            Some(("nobody", "x")),
            &["topic", "list"],
            "wrong user name or password",
        );
        // The client never sends a password without TLS unless told to.
        let out = std::process::Command::new(cluster_tests::rivulet_binary())
            .env_remove("RIVULET_TLS_CA")
            .env("RIVULET_USER", admin.0)
            .env("RIVULET_PASSWORD", admin.1)
            .args(["--bootstrap", &cli::bootstrap(&c), "topic", "list"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            text(&out).contains("refusing to send a password over a plaintext connection"),
            "{}",
            text(&out)
        );

        // A user with no ACLs can do nothing, and sees no topic.
        let out = rivulet_as_with_stdin(
            &c,
            Some(admin),
            &["user", "create", ALICE.0, "--password-stdin"],
            &format!("{}\n", ALICE.1),
        );
        assert!(out.status.success(), "{}", text(&out));
        let users = ok_as(&c, admin, &["user", "list", "--json"]);
        let users: serde_json::Value = serde_json::from_str(&users).unwrap();
        assert!(
            users
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u["name"] == ALICE.0 && u["mechanisms"][1] == "SCRAM-SHA-512"),
            "{users}"
        );
        assert!(!ok_as(&c, ALICE, &["topic", "list"]).contains("orders"));
        // The idempotent producer's InitProducerId already refuses a user
        // who may write no topic (KIP-679), saying why.
        let out = produce_as(&c, ALICE, "orders", "x\n");
        assert!(!out.status.success());
        assert!(
            text(&out).contains("no ACL allows it WRITE on any topic")
                && text(&out).contains("CLUSTER_AUTHORIZATION_FAILED"),
            "{}",
            text(&out)
        );
        // Without idempotence the produce itself is refused, per topic.
        let out = rivulet_as_with_stdin(
            &c,
            Some(ALICE),
            &["produce", "orders", "--no-idempotence"],
            "x\n",
        );
        assert!(!out.status.success());
        assert!(
            text(&out).contains("TOPIC_AUTHORIZATION_FAILED"),
            "{}",
            text(&out)
        );
        refused_as(
            &c,
            Some(ALICE),
            &consume_args("orders"),
            "TOPIC_AUTHORIZATION_FAILED",
        );
        refused_as(
            &c,
            Some(ALICE),
            &["topic", "delete", "orders"],
            "permission denied",
        );
        refused_as(&c, Some(ALICE), &["user", "list"], "permission denied");
        refused_as(
            &c,
            Some(ALICE),
            &[
                "acl",
                "create",
                "--principal",
                "User:alice",
                "--allow",
                "--operation",
                "all",
                "--cluster",
            ],
            "permission denied",
        );

        // WRITE allows producing (and describing), not reading or deleting.
        alice_acl(
            &c,
            &["--allow", "--operation", "write", "--topic", "orders"],
        );
        let out = produce_as(&c, ALICE, "orders", "d\ne\n");
        assert!(out.status.success(), "{}", text(&out));
        assert!(ok_as(&c, ALICE, &["topic", "list"]).contains("orders"));
        refused_as(
            &c,
            Some(ALICE),
            &consume_args("orders"),
            "TOPIC_AUTHORIZATION_FAILED",
        );
        refused_as(
            &c,
            Some(ALICE),
            &["topic", "delete", "orders"],
            "permission denied",
        );

        // A prefixed READ: every topic starting with "ord".
        alice_acl(
            &c,
            &[
                "--allow",
                "--operation",
                "read",
                "--topic",
                "ord",
                "--prefixed",
            ],
        );
        let read = ok_as(&c, ALICE, &consume_args("orders"));
        let mut lines: Vec<&str> = read.lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, ["a", "b", "c", "d", "e"]);

        // Deny beats allow.
        alice_acl(&c, &["--deny", "--operation", "read", "--topic", "orders"]);
        refused_as(
            &c,
            Some(ALICE),
            &consume_args("orders"),
            "TOPIC_AUTHORIZATION_FAILED",
        );
        let acls = ok_as(
            &c,
            admin,
            &["acl", "list", "--principal", "User:alice", "--json"],
        );
        let acls: serde_json::Value = serde_json::from_str(&acls).unwrap();
        assert_eq!(acls.as_array().unwrap().len(), 3, "{acls}");
        let deleted = ok_as(
            &c,
            admin,
            &[
                "acl",
                "delete",
                "--principal",
                "User:alice",
                "--deny",
                "--topic",
                "orders",
            ],
        );
        assert!(deleted.contains("deleted DENY"), "{deleted}");
        assert_eq!(ok_as(&c, ALICE, &consume_args("orders")).lines().count(), 5);

        // An ACL for another host does not apply; one for the client's does
        // (the harness's clients connect from 127.0.0.1, over TLS).
        ok_as(&c, admin, &["topic", "create", "hosted"]);
        alice_acl(
            &c,
            &[
                "--allow",
                "--operation",
                "describe",
                "--topic",
                "hosted",
                "--host",
                "10.9.9.9",
            ],
        );
        assert!(!ok_as(&c, ALICE, &["topic", "list"]).contains("hosted"));
        alice_acl(
            &c,
            &[
                "--allow",
                "--operation",
                "describe",
                "--topic",
                "hosted",
                "--host",
                "127.0.0.1",
            ],
        );
        assert!(ok_as(&c, ALICE, &["topic", "list"]).contains("hosted"));

        // Groups: DESCRIBE on the group is needed to find its coordinator.
        let alice = UserCredentials::new(ALICE.0, ALICE.1);
        let mut groups = GroupsClient::new(c.channel_as(1, Duration::from_secs(5), Some(&alice)));
        let find = |g: &str| FindCoordinatorRequest { group_id: g.into() };
        let r = groups
            .find_coordinator(find("g1"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.error_code,
            ErrorCode::GroupAuthorizationFailed as i32,
            "{}",
            r.error_message
        );
        alice_acl(&c, &["--allow", "--operation", "read", "--group", "g1"]);
        // The offsets topic is made on first use: retry while it is.
        let found = cluster_tests::wait_until("a coordinator for g1", SETTLE, || {
            let mut groups = groups.clone();
            async move {
                let r = groups.find_coordinator(find("g1")).await.ok()?.into_inner();
                (r.error_code != ErrorCode::CoordinatorNotAvailable as i32).then_some(r)
            }
        })
        .await;
        assert_eq!(
            found.error_code,
            ErrorCode::None as i32,
            "{}",
            found.error_message
        );
        let r = groups
            .find_coordinator(find("g2"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.error_code, ErrorCode::GroupAuthorizationFailed as i32);

        // A deleted user's password stops working as soon as the node has
        // applied the deletion (milliseconds after the controller did).
        ok_as(&c, admin, &["user", "delete", ALICE.0]);
        cluster_tests::wait_until("the deleted user to be refused", SETTLE, || async {
            let out = rivulet_as(&c, Some(ALICE), &["topic", "list"]);
            (!out.status.success()).then_some(())
        })
        .await;
        refused_as(
            &c,
            Some(ALICE),
            &["topic", "list"],
            "wrong user name or password",
        );
        refused_as(
            &c,
            Some(admin),
            &["user", "delete", ALICE.0],
            "RESOURCE_NOT_FOUND",
        );
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_grpc_without_credentials_or_with_forged_marks_is_unauthenticated() {
    bounded(async {
        let c = Cluster::start_secured(3).await;
        c.wait_unfenced(&c.ids(), SETTLE).await;
        let t = Duration::from_secs(5);
        let mut broker = BrokerClient::new(c.channel_as(1, t, None));
        let s = broker
            .metadata(MetadataRequest { topics: vec![] })
            .await
            .expect_err("anonymous Metadata is refused");
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");

        // "Forwarded by a node" is taken from nodes only: a client's mark
        // does not skip the check.
        let mut create = tonic::Request::new(CreateTopicRequest {
            name: "forged".into(),
            partitions: 1,
            replication_factor: 1,
            configs: vec![],
        });
        create
            .metadata_mut()
            .insert("x-rivulet-forwarded", "1".parse().unwrap());
        let mut controller = ControllerClient::new(c.channel_as(2, t, None));
        let s = controller.create_topic(create).await.expect_err("refused");
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");

        // A node proof that does not verify is refused on any call.
        let mut bad = tonic::Request::new(MetadataRequest { topics: vec![] });
        bad.metadata_mut()
            .insert("x-rivulet-node-proof", "v1.1.1000.00.00".parse().unwrap());
        let s = broker.metadata(bad).await.expect_err("refused");
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");

        // A real node's proof is a node: allowed.
        let mut as_node = ControllerClient::new(c.node_channel(2, 1));
        let r = as_node
            .describe_topics(rivulet_proto::v1::DescribeTopicsRequest { names: vec![] })
            .await
            .expect("a node may describe");
        assert_eq!(r.get_ref().error_code, 0);
        // Nothing was created by the forged call.
        let topics = cli::ok_stdout(&c, &["topic", "list"]);
        assert!(!topics.contains("forged"), "{topics}");
        c.assert_no_unexpected_errors(&[]);
    })
    .await;
}
