//! The composition root of a node: builds the controller quorum member, the
//! broker (its registration, replica manager and group coordinator), the
//! one gRPC listener they share, and the shutdown tree.
//!
//! ```text
//!   Node ── cancel ─┬─ controller duties, Raft watchdog   (ControllerNode)
//!                   ├─ learner join, then registration + heartbeats
//!                   ├─ replica manager: reconcile, fetchers, timers
//!                   ├─ group coordinator: shard loading
//!                   └─ gRPC server: Raft, Controller, Broker, Replication, Groups
//! ```
//!
//! Shutdown order: cancel everything (the server stops accepting), give open
//! RPCs a grace period to drain (peers' long-lived streams would otherwise
//! hold the server forever), abort what is left, stop Raft last.

use std::sync::Arc;
use std::time::Duration;

use rivulet_broker::control::ControlPlane;
use rivulet_broker::{
    BrokerConfig, BrokerIdentity, BrokerRegistration, BrokerRpc, CoordinatorConfig,
    GroupCoordinator, GroupsRpc, ReplicaManager,
};
use rivulet_metadata::authn::ClientAuth;
use rivulet_metadata::quorum::{ControllerNode, Quorum, QuorumConfig, QuorumError};
use rivulet_proto::node_auth::NodeVerifier;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tracing::{info, Instrument};

use super::control::QuorumControl;

/// Logs a task that panicked.
fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(error = %e, "a node task panicked");
        }
    }
}

/// How long open RPCs may drain after the listener stops.
const DRAIN: Duration = Duration::from_secs(1);

/// What a node runs: the controller always, the data plane unless the node
/// is started as controller + registration only (in-process quorum tests).
#[derive(Debug)]
pub struct NodeSpec {
    /// The quorum member's settings.
    pub quorum: QuorumConfig,
    /// How the broker presents itself.
    pub identity: BrokerIdentity,
    /// The data plane; `None` runs only the controller and the broker's
    /// registration and heartbeats.
    pub data_plane: Option<(BrokerConfig, CoordinatorConfig)>,
    /// The Kafka listener (bound already) and its limits, if the node has
    /// one; needs the data plane.
    pub kafka: Option<(
        TcpListener,
        rivulet_kafka::KafkaLimits,
        Option<rivulet_kafka::KafkaTls>,
    )>,
}

/// Creates the `--initial-users-file` users the cluster does not have yet:
/// through the node's own Controller service (forwarded to the active
/// controller, as the node), retried until each exists or the node stops.
async fn create_initial_users(
    quorum: Arc<Quorum>,
    users: Vec<rivulet_proto::user_auth::UserCredentials>,
    stop: CancellationToken,
) {
    use rivulet_proto::v1::controller_client::ControllerClient;
    let mut pending = users;
    let mut backoff = Duration::from_millis(200);
    while !pending.is_empty() && !stop.is_cancelled() {
        let image = quorum.image();
        pending.retain(|u| !image.users().contains_key(&u.user));
        let Ok(channel) = rivulet_proto::node_auth::node_channel(
            &quorum.config().advertise,
            rivulet_proto::NODE_CONNECT_TIMEOUT,
            quorum.credentials(),
        ) else {
            tracing::error!("cannot reach this node's own address to create the initial users");
            break;
        };
        let mut client = ControllerClient::new(channel);
        for u in std::mem::take(&mut pending) {
            let credentials = match rivulet_metadata::security::ScramCredential::generate_all(
                &u.password,
            ) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(user = %u.user, error = %e, "cannot make the initial user's credentials");
                    continue;
                }
            };
            let mut req = tonic::Request::new(rivulet_proto::v1::UpsertUserRequest {
                name: u.user.clone(),
                credentials: credentials
                    .iter()
                    .map(rivulet_metadata::convert::credential_to_proto)
                    .collect(),
                create_only: true,
            });
            req.set_timeout(Duration::from_secs(5));
            match client.upsert_user(req).await {
                Ok(r) if r.get_ref().error_code == 0 => {
                    if r.get_ref().created {
                        tracing::info!(user = %u.user, "created an initial user");
                    }
                }
                Ok(r) => {
                    tracing::error!(user = %u.user, error = %r.get_ref().error_message, "cannot create an initial user");
                }
                Err(s) => {
                    tracing::debug!(user = %u.user, error = %s.message(), "initial user not created yet; retrying");
                    pending.push(u);
                }
            }
        }
        if !pending.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
    // A node task that ends stops the node: this one's work is done.
    stop.cancelled().await;
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// The controller quorum member.
    controller: ControllerNode,
    /// The broker's standing with the controller.
    registration: Arc<BrokerRegistration>,
    /// Cancels every task of the node.
    cancel: CancellationToken,
    /// Every task of the node.
    tasks: JoinSet<()>,
}

impl Node {
    /// Starts the node on `listener` (already bound, so tests can use port 0).
    pub async fn start(listener: TcpListener, spec: NodeSpec) -> Result<Self, QuorumError> {
        let NodeSpec {
            quorum: config,
            identity,
            data_plane,
            kafka,
        } = spec;
        let span = tracing::info_span!("node", id = config.node_id);
        let id = config.node_id;
        let edge = config.edge;
        let tls = config.tls.as_ref().map(|t| t.server.clone());
        let nodes = Arc::new(match &config.cluster_secret {
            // Over TLS a node certificate is an accepted proof too.
            Some(secret) if tls.is_some() => {
                NodeVerifier::new(secret.clone()).accepting_node_certificates()
            }
            Some(secret) => NodeVerifier::new(secret.clone()),
            None if tls.is_some() => {
                span.in_scope(|| {
                    info!(
                        "no cluster secret: node-to-node calls are proven by node certificates \
                         over mutual TLS"
                    )
                });
                NodeVerifier::node_certificates()
            }
            None => {
                span.in_scope(|| {
                    tracing::warn!(
                        "node-to-node calls are unauthenticated: anyone who can reach this \
                         port can send Raft, registration and replication calls; start every \
                         node with --cluster-secret-file"
                    )
                });
                NodeVerifier::open()
            }
        });
        let security = config.security.clone();
        let heartbeat = Duration::from_millis(config.timing.broker_heartbeat_ms);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let controller = ControllerNode::start(config, &mut tasks, &cancel).await?;
        let quorum = Arc::clone(controller.quorum());

        // The broker sees the quorum only through its seam.
        let control: Arc<dyn ControlPlane> = Arc::new(QuorumControl::new(Arc::clone(&quorum)));
        let registration = BrokerRegistration::new(id, control, quorum.credentials().clone());
        let mut routes: Routes = controller.services(registration.clone())?;
        let images = Arc::clone(&quorum);
        let users = Arc::new(ClientAuth::new(
            security.authorizer.clone(),
            Arc::new(move || images.image()),
            tls.is_some(),
            security.allow_plaintext_passwords,
        ));
        if let Some((broker_config, group_config)) = data_plane {
            let mgr = ReplicaManager::new(broker_config, Arc::clone(&registration));
            tasks.spawn(Arc::clone(&mgr).run(cancel.child_token()));
            let groups = GroupCoordinator::new(Arc::clone(&mgr), group_config);
            tasks.spawn(Arc::clone(&groups).run(cancel.child_token()));
            if let Some((listener, limits, kafka_tls)) = kafka {
                let handler = Arc::new(rivulet_kafka::Handler::new(
                    Arc::clone(&mgr),
                    Arc::clone(&groups),
                    Arc::clone(&users),
                ));
                tasks.spawn(
                    rivulet_kafka::serve(
                        listener,
                        handler,
                        Arc::clone(mgr.client_budget()),
                        limits,
                        kafka_tls,
                        cancel.child_token(),
                    )
                    .instrument(span.clone()),
                );
            }
            routes = routes
                .add_service(BrokerRpc::broker_server(Arc::clone(&mgr)))
                .add_service(BrokerRpc::replication_server(mgr))
                .add_service(GroupsRpc::server(groups));
        }
        if !security.initial_users.is_empty() {
            tasks.spawn(
                create_initial_users(
                    Arc::clone(&quorum),
                    security.initial_users,
                    cancel.child_token(),
                )
                .instrument(span.clone()),
            );
        }
        let stop = cancel.clone();
        tasks.spawn(
            async move {
                if let Err(e) =
                    rivulet_metadata::edge::serve(listener, routes, edge, nodes, users, tls, stop)
                        .await
                {
                    tracing::error!(error = %e, "gRPC server failed");
                }
            }
            .instrument(span.clone()),
        );
        // A learner must be a member of the quorum before the metadata log
        // (and so its own registration) reaches it.
        let (joining, lifecycle, stop) = (quorum, Arc::clone(&registration), cancel.child_token());
        tasks.spawn(
            async move {
                joining.join_as_learner(&stop).await;
                lifecycle.run(identity, heartbeat, stop).await;
            }
            .instrument(span),
        );
        Ok(Self {
            controller,
            registration,
            cancel,
            tasks,
        })
    }

    /// The controller quorum member.
    pub fn quorum(&self) -> &Arc<Quorum> {
        self.controller.quorum()
    }

    /// The broker's standing with the controller.
    pub fn registration(&self) -> &Arc<BrokerRegistration> {
        &self.registration
    }

    /// A token that stops the node when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops everything in order (see the module doc). A task that
    /// panicked on the way out is logged, not dropped.
    pub async fn shutdown(mut self) {
        info!(node = self.quorum().node_id(), "shutting down");
        self.cancel.cancel();
        let tasks = &mut self.tasks;
        let drained = tokio::time::timeout(DRAIN, async {
            while let Some(done) = tasks.join_next().await {
                log_panic(done);
            }
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
            while let Some(done) = self.tasks.join_next().await {
                log_panic(done);
            }
        }
        self.controller.shutdown().await;
    }

    /// Runs until cancelled (e.g. by a signal handler), then shuts down.
    /// Every task of a node runs until the node stops: one that ends before
    /// (a panic in the replica manager, a server that failed) stops the
    /// node too, rather than leaving it up without that part. Returns the
    /// reason if the node stopped itself.
    pub async fn run_until_cancelled(mut self) -> Result<(), String> {
        // Biased, and checked again: once the node is being stopped, its
        // tasks end because of that, not on their own.
        let early = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            Some(done) = self.tasks.join_next() => match done {
                Err(e) if e.is_panic() => Some(format!("a node task panicked: {e}")),
                _ if self.cancel.is_cancelled() => None,
                Err(e) => Some(format!("a node task was cancelled: {e}")),
                Ok(()) => Some("a node task stopped on its own".to_owned()),
            },
        };
        // The Raft watchdog's reason, if it fired, says more.
        let fatal = self.controller.fatal().or(early);
        if let Some(reason) = &fatal {
            tracing::error!(%reason, "stopping the node");
        }
        self.shutdown().await;
        fatal.map_or(Ok(()), Err)
    }
}
