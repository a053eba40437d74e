//! A controller node at run time: the gRPC server with the Raft and
//! Controller services, the active controller's duties and this node's broker
//! lifecycle, under one cancellation token.
//!
//! Shutdown order: stop the timers and the broker lifecycle, stop accepting
//! RPCs (the server drains), then stop Raft.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tracing::{info, Instrument};

use super::{
    run_broker_lifecycle, run_controller_duties, BrokerIdentity, ControllerRpc, Quorum,
    QuorumConfig, QuorumError, RaftRpc,
};

/// A running controller node.
#[derive(Debug)]
pub struct ControllerNode {
    /// The quorum member.
    quorum: Arc<Quorum>,
    /// Cancels every task of the node.
    cancel: CancellationToken,
    /// The server, the duties, the broker lifecycle and the Raft watchdog.
    tasks: JoinSet<()>,
    /// Why the node stopped itself, if it did.
    fatal: Arc<std::sync::Mutex<Option<String>>>,
}

impl ControllerNode {
    /// Starts the node on `listener` (already bound, so tests can use port 0).
    pub async fn start(
        listener: TcpListener,
        config: QuorumConfig,
        identity: BrokerIdentity,
    ) -> Result<Self, QuorumError> {
        Self::start_with(listener, config, identity, |_, _, _| Routes::default()).await
    }

    /// Like [`Self::start`], with more services on the same port: `extra` gets
    /// the quorum, the node's task set (for background tasks that must stop
    /// with the node) and its cancellation token, and returns the services.
    pub async fn start_with<F>(
        listener: TcpListener,
        config: QuorumConfig,
        identity: BrokerIdentity,
        extra: F,
    ) -> Result<Self, QuorumError>
    where
        F: FnOnce(&Arc<Quorum>, &mut JoinSet<()>, &CancellationToken) -> Routes,
    {
        let span = tracing::info_span!("node", id = config.node_id);
        let quorum = Quorum::start(config).instrument(span.clone()).await?;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();

        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(rivulet_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| QuorumError::Startup(format!("reflection service: {e}")))?;
        let routes = extra(&quorum, &mut tasks, &cancel)
            .add_service(RaftRpc::server(quorum.raft().clone()))
            .add_service(ControllerRpc::server(Arc::clone(&quorum)))
            .add_service(reflection);
        // HTTP/2 keep-alive pings find dead peers (and keep live ones from
        // the edge's idle timeout); the edge bounds connections.
        let server = tonic::transport::Server::builder()
            .layer(crate::edge::StatusFixLayer)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_routes(routes);
        let edge = quorum.config().edge;
        let stop = cancel.clone();
        tasks.spawn(
            async move {
                let incoming = crate::edge::GuardedIncoming::new(listener, edge);
                if let Err(e) = server
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await
                {
                    tracing::error!(error = %e, "gRPC server failed");
                }
            }
            .instrument(span.clone()),
        );
        tasks.spawn(
            run_controller_duties(Arc::clone(&quorum), cancel.child_token())
                .instrument(span.clone()),
        );
        tasks.spawn(
            run_broker_lifecycle(Arc::clone(&quorum), identity, cancel.child_token())
                .instrument(span.clone()),
        );
        // A node whose Raft core died must not keep serving a frozen view
        // (accepting heartbeats as a leader it no longer is): stop it.
        let fatal = Arc::new(std::sync::Mutex::new(None));
        let (watch_fatal, stop, mut metrics) =
            (Arc::clone(&fatal), cancel.clone(), quorum.raft().metrics());
        tasks.spawn(
            async move {
                let reason = loop {
                    if let Err(e) = &metrics.borrow_and_update().running_state {
                        break format!("raft core failed: {e}");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        changed = metrics.changed() => if changed.is_err() {
                            break "raft core stopped unexpectedly".to_owned();
                        }
                    }
                };
                tracing::error!(%reason, "stopping the node");
                *watch_fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                stop.cancel();
            }
            .instrument(span),
        );
        Ok(Self {
            quorum,
            cancel,
            tasks,
            fatal,
        })
    }

    /// The quorum member.
    pub fn quorum(&self) -> &Arc<Quorum> {
        &self.quorum
    }

    /// A token that stops the node when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops everything in order: cancel the timers, the broker lifecycle and
    /// the server's accept loop; give open RPCs a grace period to drain (peers'
    /// long-lived streams would otherwise hold the server forever); abort what
    /// is left; stop Raft.
    pub async fn shutdown(mut self) {
        const DRAIN: Duration = Duration::from_secs(1);
        info!(node = self.quorum.node_id(), "shutting down");
        self.cancel.cancel();
        let drained = tokio::time::timeout(DRAIN, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        self.quorum.shutdown().await;
    }

    /// Runs until cancelled (e.g. by a signal handler), then shuts down.
    /// Returns the reason if the node stopped itself after a fatal error.
    pub async fn run_until_cancelled(self) -> Result<(), String> {
        self.cancel.cancelled().await;
        let fatal = Arc::clone(&self.fatal);
        self.shutdown().await;
        let reason = fatal.lock().unwrap_or_else(|e| e.into_inner()).take();
        reason.map_or(Ok(()), Err)
    }
}
