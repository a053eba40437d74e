//! The controller's part of a node: the quorum member, its gRPC services
//! (Raft, Controller, reflection), the active controller's duties and a
//! watchdog that stops a node whose Raft core died. The node's composition
//! root (`cli/src/node/`) puts it together with the broker, the listener and
//! the shutdown tree.

use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tracing::Instrument;

use super::{
    run_controller_duties, ControllerRpc, Quorum, QuorumConfig, QuorumError, RaftRpc, Readiness,
};

/// A running controller quorum member.
#[derive(Debug)]
pub struct ControllerNode {
    /// The quorum member.
    quorum: Arc<Quorum>,
    /// Why the node stopped itself, if it did.
    fatal: Arc<Mutex<Option<String>>>,
}

impl ControllerNode {
    /// Starts the quorum member and spawns its duties and watchdog on
    /// `tasks`; they stop with `cancel`, and the watchdog cancels it when the
    /// Raft core fails.
    pub async fn start(
        config: QuorumConfig,
        tasks: &mut JoinSet<()>,
        cancel: &CancellationToken,
    ) -> Result<Self, QuorumError> {
        let span = tracing::info_span!("node", id = config.node_id);
        let quorum = Quorum::start(config).instrument(span.clone()).await?;
        tasks.spawn(
            run_controller_duties(Arc::clone(&quorum), cancel.child_token())
                .instrument(span.clone()),
        );
        // A node whose Raft core died must not keep serving a frozen view
        // (accepting heartbeats as a leader it no longer is): stop it.
        let fatal = Arc::new(Mutex::new(None));
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
        Ok(Self { quorum, fatal })
    }

    /// The quorum member.
    pub fn quorum(&self) -> &Arc<Quorum> {
        &self.quorum
    }

    /// The controller's gRPC services: Raft, Controller (whose reads wait
    /// for `ready`) and server reflection.
    pub fn services(&self, ready: Arc<dyn Readiness>) -> Result<Routes, QuorumError> {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(rivulet_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| QuorumError::Startup(format!("reflection service: {e}")))?;
        Ok(Routes::new(RaftRpc::server(self.quorum.raft().clone()))
            .add_service(ControllerRpc::server(Arc::clone(&self.quorum), ready))
            .add_service(reflection))
    }

    /// Why the node stopped itself, if it did.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops Raft (after everything that uses it has stopped).
    pub async fn shutdown(&self) {
        self.quorum.shutdown().await;
    }
}
