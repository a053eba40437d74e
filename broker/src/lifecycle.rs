//! The broker's standing with the controller (KIP-631): register for a
//! broker epoch, then keep one heartbeat stream open to the active
//! controller, following it when it moves; report replicas whose storage
//! failed; ask for a controlled shutdown; answer "may this node serve
//! clients yet".
//!
//! ```text
//!  RegisterBroker -> epoch ──────────────────────────┐
//!        ▲                                            ▼
//!        │ STALE_BROKER_EPOCH / not registered   Heartbeat stream to the leader,
//!        └────────────────────────────────────── one message per interval;
//!                                                 NOT_CONTROLLER or a broken stream:
//!                                                 reconnect to the current leader
//! ```
//!
//! The state lives in [`BrokerRegistration`]; the loop is
//! [`BrokerRegistration::run`]. Everything it needs from the quorum comes
//! through the [`ControlPlane`] seam.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet_metadata::image::MetadataImage;
use rivulet_metadata::BrokerId;
use rivulet_proto::node_auth::{node_channel, NodeChannel, NodeCredentials};
use rivulet_proto::v1::controller_client::ControllerClient;
use rivulet_proto::v1::{ErrorCode, HeartbeatRequest, RegisterBrokerRequest, TopicPartitionRef};
use rivulet_proto::{NOT_READY_KEY, TRY_NODES_KEY};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::control::ControlPlane;

/// Longest a registration or the opening of the heartbeat stream may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Registrations refused for want of the cluster secret: one WARN a minute.
static REFUSED: rivulet_metadata::edge::RateLimit =
    rivulet_metadata::edge::RateLimit::new(Duration::from_secs(60));

/// How long the lifecycle waits before retrying a refused or failed call.
const RETRY: Duration = Duration::from_millis(200);
/// How long it waits for the quorum to know its leader, or between two
/// heartbeat streams.
const LEADER_POLL: Duration = Duration::from_millis(50);
/// Heartbeat replies missed in a row before the stream is abandoned (the
/// network may black-hole a connection without an error).
const MISSED_REPLIES: u32 = 3;
/// How long the "ready" log line waits for the registration to show up.
const READY_LOG_WAIT: Duration = Duration::from_secs(3600);

/// How this node presents itself as a broker.
#[derive(Debug, Clone)]
pub struct BrokerIdentity {
    /// The `host:port` clients and replicas use.
    pub address: String,
    /// Optional rack, for rack-aware placement.
    pub rack: Option<String>,
    /// The id of the node's log directory (KIP-858).
    pub directory_id: String,
    /// The `host:port` Kafka clients use; `None`: no Kafka listener.
    pub kafka_address: Option<String>,
    /// The log directory was created by this start (empty storage).
    pub new_directory: bool,
    /// Every acknowledged append is fsynced first (`--flush always`).
    pub log_fsynced: bool,
    /// When the process started, for the readiness log line.
    pub process_started: Instant,
}

/// This broker's registration with the controller and what its heartbeats
/// carry.
#[derive(Debug)]
pub struct BrokerRegistration {
    /// This broker's id.
    id: u64,
    /// The control plane.
    control: Arc<dyn ControlPlane>,
    /// The broker epoch this process registered with, once it has.
    registered: watch::Sender<Option<u64>>,
    /// Replicas whose logs cannot be written (sent with every heartbeat).
    storage_failed: Mutex<Vec<(String, u32)>>,
    /// A controlled shutdown was asked for (sent with every heartbeat).
    shutting_down: AtomicBool,
    /// How this broker proves itself to other nodes.
    credentials: NodeCredentials,
}

impl BrokerRegistration {
    /// The registration of broker `id`, not yet registered; call
    /// [`Self::run`] to register. `credentials` prove its calls to other nodes
    /// (registration, heartbeats, replica fetches).
    pub fn new(id: u64, control: Arc<dyn ControlPlane>, credentials: NodeCredentials) -> Arc<Self> {
        Arc::new(Self {
            id,
            control,
            credentials,
            registered: watch::Sender::new(None),
            storage_failed: Mutex::default(),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// How this broker proves itself to other nodes.
    pub fn credentials(&self) -> &NodeCredentials {
        &self.credentials
    }

    /// The control plane this registration talks to.
    pub fn control(&self) -> &Arc<dyn ControlPlane> {
        &self.control
    }

    /// The broker epoch this process registered with (`None` until it has):
    /// the data plane trusts only an image that holds this registration,
    /// never one replayed from an earlier incarnation.
    pub fn registered_epoch(&self) -> watch::Receiver<Option<u64>> {
        self.registered.subscribe()
    }

    /// Records that the controller gave this process `epoch` (the lifecycle
    /// does; in-process tests without a controller may too).
    pub fn set_registered(&self, epoch: u64) {
        self.registered.send_replace(Some(epoch));
    }

    /// Whether this node serves clients: it registered, and its image holds
    /// that very registration, so it has applied the metadata log at least
    /// up to it (KIP-631). Until then its image may be the one it had before
    /// a crash, missing topics and leaders that changed while it was down.
    pub fn is_ready(&self) -> bool {
        let Some(epoch) = *self.registered.borrow() else {
            return false;
        };
        self.holds_registration(&self.control.image(), epoch)
    }

    fn holds_registration(&self, image: &MetadataImage, epoch: u64) -> bool {
        image
            .broker(BrokerId(self.id))
            .is_some_and(|b| b.broker_epoch == epoch)
    }

    /// `Ok` when the node is ready, else the retriable `UNAVAILABLE` status a
    /// client request gets: marked with [`NOT_READY_KEY`] and naming other
    /// nodes to try in [`TRY_NODES_KEY`].
    #[allow(clippy::result_large_err)]
    pub fn check_ready(&self) -> Result<(), Status> {
        if self.is_ready() {
            return Ok(());
        }
        let mut status = Status::unavailable(format!(
            "node {} is not ready: it is catching up with the metadata log \
             (applied offset {}); try another node",
            self.id,
            self.control.image().metadata_offset()
        ));
        let metadata = status.metadata_mut();
        metadata.insert(
            NOT_READY_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        if let Ok(v) = self.control.peers().join(",").parse() {
            metadata.insert(TRY_NODES_KEY, v);
        }
        Err(status)
    }

    /// Sets the replicas this broker cannot write (the replica manager calls
    /// this; the next heartbeats report them to the controller).
    pub fn report_storage_failed(&self, replicas: Vec<(String, u32)>) {
        *self
            .storage_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = replicas;
    }

    fn storage_failed(&self) -> Vec<(String, u32)> {
        self.storage_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts a controlled shutdown: the next heartbeats ask the controller
    /// to move this broker's leaderships and ISR memberships away. Returns
    /// once nothing is left to move (every partition this broker leads has
    /// no other live in-sync replica), or after `timeout`.
    pub async fn controlled_shutdown(&self, timeout: Duration) -> bool {
        self.shutting_down.store(true, Ordering::Release);
        let me = BrokerId(self.id);
        let mut images = self.control.subscribe();
        let handed_over = images.wait_for(|img| {
            img.partitions().all(|(_, p)| {
                p.leader != Some(me) || !p.isr.iter().any(|b| *b != me && img.is_live(*b))
            })
        });
        let done = matches!(tokio::time::timeout(timeout, handed_over).await, Ok(Ok(_)));
        done
    }

    /// A controller client for `addr`, signing its calls.
    fn client(&self, addr: &str) -> Option<ControllerClient<NodeChannel>> {
        node_channel(addr, rivulet_proto::NODE_CONNECT_TIMEOUT, &self.credentials)
            .ok()
            .map(ControllerClient::new)
    }

    /// Registers (forwarded to the active controller by whichever node gets
    /// it) until the controller gives this process a broker epoch; `None`
    /// once cancelled.
    async fn register(&self, identity: &BrokerIdentity, cancel: &CancellationToken) -> Option<u64> {
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            if let Some(mut c) = self.control.controller().and_then(|(_, a)| self.client(&a)) {
                let req = RegisterBrokerRequest {
                    broker_id: self.id,
                    address: identity.address.clone(),
                    rack: identity.rack.clone(),
                    directory_id: identity.directory_id.clone(),
                    log_fsynced: identity.log_fsynced,
                    kafka_address: identity.kafka_address.clone().unwrap_or_default(),
                };
                // A controller that accepts connections and never answers
                // (paused, or stuck in a TLS handshake) must not hold this.
                match tokio::time::timeout(CALL_TIMEOUT, c.register_broker(req)).await {
                    Ok(Ok(r)) if r.get_ref().error_code == i32::from(ErrorCode::None) => {
                        return Some(r.into_inner().broker_epoch);
                    }
                    Ok(Ok(r)) => warn!(error = %r.get_ref().error_message, "registration refused"),
                    Ok(Err(e))
                        if matches!(
                            e.code(),
                            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                        ) =>
                    {
                        if let Some(suppressed) = REFUSED.allow() {
                            warn!(error = %e.message(), suppressed,
                                "the controller refuses this node's calls: is --cluster-secret-file the same on every node?");
                        }
                    }
                    Ok(Err(e)) => debug!(error = %e.message(), "registration failed; retrying"),
                    Err(_) => debug!("registration timed out; retrying"),
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// Runs until `cancel`: registration, then heartbeats every `every`.
    pub async fn run(
        self: Arc<Self>,
        identity: BrokerIdentity,
        every: Duration,
        cancel: CancellationToken,
    ) {
        loop {
            let Some(epoch) = self.register(&identity, &cancel).await else {
                return;
            };
            info!(
                broker_epoch = epoch,
                "registered with the controller; catching up with the metadata log"
            );
            self.set_registered(epoch);
            self.announce_ready(&identity, epoch, &cancel);
            match self.heartbeat(epoch, every, &cancel).await {
                Heartbeats::Cancelled => return,
                Heartbeats::RegisterAgain => continue,
            }
        }
    }

    /// Heartbeats on one stream to the active controller at a time, until
    /// cancelled or the controller wants a new registration.
    async fn heartbeat(
        self: &Arc<Self>,
        epoch: u64,
        every: Duration,
        cancel: &CancellationToken,
    ) -> Heartbeats {
        loop {
            // Only the active controller answers heartbeats: wait until the
            // quorum knows it.
            let leader = match self.control.controller() {
                Some((Some(_), addr)) => addr,
                _ => {
                    tokio::select! {
                        _ = cancel.cancelled() => return Heartbeats::Cancelled,
                        _ = tokio::time::sleep(LEADER_POLL) => continue,
                    }
                }
            };
            let Some(mut c) = self.client(&leader) else {
                tokio::time::sleep(RETRY).await;
                continue;
            };
            let me = Arc::clone(self);
            let outbound =
                tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(every))
                    .map(move |_| me.heartbeat_request(epoch));
            let opened = tokio::time::timeout(CALL_TIMEOUT, c.heartbeat(outbound))
                .await
                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer")));
            let mut inbound = match opened {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    debug!(controller = %leader, error = %e.message(), "cannot open heartbeat stream");
                    tokio::select! {
                        _ = cancel.cancelled() => return Heartbeats::Cancelled,
                        _ = tokio::time::sleep(RETRY) => continue,
                    }
                }
            };
            loop {
                // A reply is due every `every`; on a connection the network
                // black-holed none comes and no error either, so a silent
                // stream is abandoned (and the controller looked up again)
                // well within the broker lease.
                let msg = tokio::select! {
                    _ = cancel.cancelled() => return Heartbeats::Cancelled,
                    m = tokio::time::timeout(every * MISSED_REPLIES, inbound.next()) => m,
                };
                // Follow the leader as this node sees it, even if the old one
                // still answers (e.g. it lost leadership without noticing).
                if self
                    .control
                    .controller()
                    .is_some_and(|(id, addr)| id.is_some() && addr != leader)
                {
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
                            return Heartbeats::RegisterAgain;
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
                _ = cancel.cancelled() => return Heartbeats::Cancelled,
                _ = tokio::time::sleep(LEADER_POLL) => {}
            }
        }
    }

    /// The next heartbeat: where this broker's image is, what it cannot
    /// write, whether it is shutting down.
    fn heartbeat_request(&self, epoch: u64) -> HeartbeatRequest {
        HeartbeatRequest {
            broker_id: self.id,
            broker_epoch: epoch,
            metadata_offset: self.control.image().metadata_offset(),
            storage_failed: self
                .storage_failed()
                .into_iter()
                .map(|(topic, partition)| TopicPartitionRef { topic, partition })
                .collect(),
            shutting_down: self.shutting_down.load(Ordering::Acquire),
        }
    }

    /// Logs when this node's image holds its registration `epoch` (it has
    /// caught up with the metadata log as of its registration and serves
    /// clients), and what a new, empty log directory will re-fetch.
    fn announce_ready(
        self: &Arc<Self>,
        identity: &BrokerIdentity,
        epoch: u64,
        cancel: &CancellationToken,
    ) {
        let me = Arc::clone(self);
        let new_directory = identity.new_directory;
        let process_started = identity.process_started;
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut images = me.control.subscribe();
            let wait = tokio::time::timeout(
                READY_LOG_WAIT,
                images.wait_for(|img| me.holds_registration(img, epoch)),
            );
            let image = tokio::select! {
                _ = cancel.cancelled() => return,
                image = wait => match image {
                    Ok(Ok(image)) => Arc::clone(&image),
                    _ => return,
                },
            };
            info!(
                broker_epoch = epoch,
                metadata_offset = image.metadata_offset(),
                since_start_ms = process_started.elapsed().as_millis() as u64,
                "ready: caught up with the metadata log; serving clients"
            );
            let hosted = image.partitions_replicated_on(BrokerId(me.id));
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
}

/// How a heartbeat session ended.
enum Heartbeats {
    /// The node is stopping.
    Cancelled,
    /// The controller no longer knows this epoch.
    RegisterAgain,
}

/// The Controller service's reads wait for the same readiness as the
/// broker's (KIP-631).
impl rivulet_metadata::quorum::Readiness for BrokerRegistration {
    fn check_ready(&self) -> Result<(), Status> {
        BrokerRegistration::check_ready(self)
    }
}
