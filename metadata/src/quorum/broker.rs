//! The broker's side of the controller protocol: join the quorum as a learner
//! (nodes that are not voters), register for a broker epoch, then keep one
//! heartbeat stream open to the active controller, following it when it moves.
//!
//! ```text
//!  [learner? AddLearner] -> RegisterBroker -> epoch ─┐
//!        ▲                                            ▼
//!        │ STALE_BROKER_EPOCH / not registered   Heartbeat stream to the leader,
//!        └────────────────────────────────────── one message per interval;
//!                                                 NOT_CONTROLLER or a broken stream:
//!                                                 reconnect to the current leader
//! ```

use std::sync::Arc;
use std::time::Duration;

use rivulet_proto::v1::controller_client::ControllerClient;
use rivulet_proto::v1::{
    AddLearnerRequest, ErrorCode, HeartbeatRequest, RegisterBrokerRequest, TopicPartitionRef,
};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{network, Quorum};

/// How this node presents itself as a broker.
#[derive(Debug, Clone)]
pub struct BrokerIdentity {
    /// The `host:port` clients and replicas use.
    pub address: String,
    /// Optional rack, for rack-aware placement.
    pub rack: Option<String>,
    /// The id of the node's log directory (KIP-858).
    pub directory_id: String,
    /// The log directory was created by this start (empty storage).
    pub new_directory: bool,
    /// Every acknowledged append is fsynced first (`--flush always`).
    pub log_fsynced: bool,
    /// When the process started, for the readiness log line.
    pub process_started: std::time::Instant,
}

/// A controller client for `addr`.
fn client(addr: &str) -> Option<ControllerClient<tonic::transport::Channel>> {
    network::channel(addr, rivulet_proto::NODE_CONNECT_TIMEOUT)
        .ok()
        .map(ControllerClient::new)
}

/// The address of some node to send a forwarded write to: the leader if
/// known, else any voter.
fn any_controller(quorum: &Quorum, attempt: usize) -> String {
    if let Some((_, addr)) = quorum.leader() {
        return addr;
    }
    let voters: Vec<&String> = quorum.config.voters.values().collect();
    voters[attempt % voters.len().max(1)].clone()
}

/// Logs when this node's image holds its registration `epoch` (it has caught
/// up with the metadata log as of its registration and serves clients), and
/// what a new, empty log directory will re-fetch.
fn announce_ready(
    quorum: &Arc<Quorum>,
    identity: &BrokerIdentity,
    epoch: u64,
    cancel: &CancellationToken,
) {
    let quorum = Arc::clone(quorum);
    let new_directory = identity.new_directory;
    let process_started = identity.process_started;
    let cancel = cancel.clone();
    let me = crate::BrokerId(quorum.node_id());
    tokio::spawn(async move {
        let wait = quorum.wait_for_image(Duration::from_secs(3600), |img| {
            img.broker(me).is_some_and(|b| b.broker_epoch == epoch)
        });
        let image = tokio::select! {
            _ = cancel.cancelled() => return,
            image = wait => image,
        };
        let Some(image) = image else { return };
        info!(
            broker_epoch = epoch,
            metadata_offset = image.metadata_offset(),
            since_start_ms = process_started.elapsed().as_millis() as u64,
            "ready: caught up with the metadata log; serving clients"
        );
        let hosted = image.partitions_replicated_on(me);
        if new_directory && !hosted.is_empty() {
            let names: Vec<String> = hosted.iter().take(20).map(ToString::to_string).collect();
            warn!(
                partitions = hosted.len(),
                first = %names.join(", "),
                "this node started with an empty data directory while the cluster holds \
                 replicas assigned to it: it will re-fetch them from their leaders and \
                 stays out of their ISRs (not eligible to lead) until caught up"
            );
        }
    });
}

/// Runs until `cancel`: learner join, registration, heartbeats.
pub async fn run_broker_lifecycle(
    quorum: Arc<Quorum>,
    identity: BrokerIdentity,
    cancel: CancellationToken,
) {
    let id = quorum.node_id();
    let retry = Duration::from_millis(200);
    let mut attempt = 0usize;

    // Learners must be added by the leader before they receive the log.
    if !quorum.config.voters.contains_key(&id) {
        loop {
            let member = quorum
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&id)
                .is_some();
            if member {
                break;
            }
            attempt += 1;
            if let Some(mut c) = client(&any_controller(&quorum, attempt)) {
                let req = AddLearnerRequest {
                    node_id: id,
                    address: quorum.config.advertise.clone(),
                };
                match c.add_learner(req).await {
                    Ok(_) => info!("joined the metadata quorum as a learner"),
                    Err(e) => debug!(error = %e, "add learner failed; retrying"),
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(retry) => {}
            }
        }
    }

    'register: loop {
        // Registration, forwarded to the active controller by whichever node gets it.
        let epoch = loop {
            if cancel.is_cancelled() {
                return;
            }
            attempt += 1;
            let target = any_controller(&quorum, attempt);
            if let Some(mut c) = client(&target) {
                let req = RegisterBrokerRequest {
                    broker_id: id,
                    address: identity.address.clone(),
                    rack: identity.rack.clone(),
                    directory_id: identity.directory_id.clone(),
                    log_fsynced: identity.log_fsynced,
                };
                match c.register_broker(req).await {
                    Ok(r) if r.get_ref().error_code == i32::from(ErrorCode::None) => {
                        break r.into_inner().broker_epoch;
                    }
                    Ok(r) => warn!(error = %r.get_ref().error_message, "registration refused"),
                    Err(e) => debug!(error = %e.message(), "registration failed; retrying"),
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(retry) => {}
            }
        };
        info!(
            broker_epoch = epoch,
            "registered with the controller; catching up with the metadata log"
        );
        quorum.registered.send_replace(Some(epoch));
        announce_ready(&quorum, &identity, epoch, &cancel);

        // Heartbeats, on one stream to the active controller at a time.
        let every = Duration::from_millis(quorum.config.timing.broker_heartbeat_ms);
        loop {
            let Some((_, leader)) = quorum.leader() else {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            };
            let Some(mut c) = client(&leader) else {
                tokio::time::sleep(retry).await;
                continue;
            };
            let q = Arc::clone(&quorum);
            let outbound = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
                every,
            ))
            .map(move |_| HeartbeatRequest {
                broker_id: id,
                broker_epoch: epoch,
                metadata_offset: q.image().metadata_offset(),
                storage_failed: q
                    .storage_failed()
                    .into_iter()
                    .map(|(topic, partition)| TopicPartitionRef { topic, partition })
                    .collect(),
                shutting_down: q.shutting_down(),
            });
            let mut inbound = match c.heartbeat(outbound).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    debug!(controller = %leader, error = %e.message(), "cannot open heartbeat stream");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(retry) => continue,
                    }
                }
            };
            loop {
                // A reply is due every `every`; on a connection the network
                // black-holed none comes and no error either, so a silent
                // stream is abandoned (and the controller looked up again)
                // well within the broker lease.
                let msg = tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = tokio::time::timeout(every * 3, inbound.next()) => m,
                };
                // Follow the leader as this node sees it, even if the old one
                // still answers (e.g. it lost leadership without noticing).
                if quorum.leader().is_some_and(|(_, addr)| addr != leader) {
                    debug!(old = %leader, "the active controller moved; reconnecting heartbeats");
                    break;
                }
                let Ok(msg) = msg else {
                    debug!(controller = %leader, "no heartbeat reply in time; reconnecting");
                    break;
                };
                match msg {
                    Some(Ok(r)) => match ErrorCode::try_from(r.error_code) {
                        Ok(ErrorCode::None) => {}
                        Ok(ErrorCode::NotController) => break,
                        Ok(ErrorCode::StaleBrokerEpoch | ErrorCode::BrokerNotAvailable) => {
                            warn!(reason = %r.error_message, "registering again");
                            continue 'register;
                        }
                        _ => {
                            warn!(code = r.error_code, reason = %r.error_message, "heartbeat refused");
                            break;
                        }
                    },
                    Some(Err(e)) => {
                        debug!(error = %e.message(), "heartbeat stream failed");
                        break;
                    }
                    None => break,
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}
