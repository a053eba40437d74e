//! The seam between the broker and the metadata quorum: everything the data
//! plane needs from the control plane, and nothing else.
//!
//! The broker reads the metadata image (and waits for new ones), finds the
//! active controller to register with and to send `AlterPartition` and
//! `CreateTopic` to, and waits to catch up with it. The node's composition
//! root (`cli/src/node/`) implements this over the openraft quorum; tests
//! can implement it over a plain watch channel. The broker's own state
//! towards the controller (its epoch, its failed replicas, a controlled
//! shutdown) lives in [`crate::lifecycle::BrokerRegistration`].

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rivulet_metadata::image::MetadataImage;
use rivulet_metadata::security::Acl;
use rivulet_metadata::AlterPartitionRequest;
use tokio::sync::watch;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::lifecycle::BrokerRegistration;

/// How long a read naming an unknown topic waits to catch up with the active
/// controller before answering "unknown" (KIP-631's "fresh after a write").
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);

/// What the broker needs from the controller quorum.
pub trait ControlPlane: Send + Sync + Debug + 'static {
    /// The newest applied metadata image.
    fn image(&self) -> Arc<MetadataImage>;

    /// Every new image, as it is applied.
    fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>>;

    /// Where to send controller requests: the active controller's id and
    /// address when known, else some voter's address (it forwards); a
    /// different voter on each call, so one dead voter cannot hold the
    /// caller up.
    fn controller(&self) -> Option<(Option<u64>, String)>;

    /// The other nodes' `host:port` addresses, for a not-ready answer to
    /// name.
    fn peers(&self) -> Vec<String>;

    /// Waits (up to `timeout`) until this node's image has caught up with the
    /// active controller's; whether it did.
    fn catch_up(&self, timeout: Duration) -> BoxFuture<'_, bool>;

    /// Asks the active controller to change a partition's ISR (Kafka's
    /// AlterPartition, KIP-497) on behalf of this broker at `broker_epoch`;
    /// the ISR it committed.
    fn alter_partition(
        &self,
        broker_epoch: u64,
        request: AlterPartitionRequest,
    ) -> BoxFuture<'_, Result<CommittedIsr, ControlError>>;

    /// Asks the active controller to create a topic.
    fn create_topic(&self, request: NewTopic) -> BoxFuture<'_, Result<(), ControlError>>;

    /// Asks the active controller to delete a topic (the Kafka listener's
    /// DeleteTopics; the caller checked the client's ACLs).
    fn delete_topic(&self, name: String) -> BoxFuture<'_, Result<(), ControlError>> {
        let _ = name;
        Box::pin(async { Err(ControlError::NoController) })
    }

    /// Asks the active controller to set these configs of a topic
    /// (IncrementalAlterConfigs; the caller checked the client's ACLs).
    fn alter_topic_config(
        &self,
        name: String,
        configs: Vec<(String, String)>,
    ) -> BoxFuture<'_, Result<(), ControlError>> {
        let _ = (name, configs);
        Box::pin(async { Err(ControlError::NoController) })
    }

    /// Asks the active controller to grow a topic to `total` partitions, or
    /// (`validate_only`) whether it would (the Kafka listener's
    /// CreatePartitions; the caller checked the client's ACLs).
    fn create_partitions(
        &self,
        name: String,
        total: u32,
        validate_only: bool,
    ) -> BoxFuture<'_, Result<(), ControlError>> {
        let _ = (name, total, validate_only);
        Box::pin(async { Err(ControlError::NoController) })
    }

    /// Asks the active controller to add these ACLs (the Kafka listener's
    /// CreateAcls; the caller checked the client may alter the cluster).
    fn create_acls(&self, acls: Vec<Acl>) -> BoxFuture<'_, Result<(), ControlError>> {
        let _ = acls;
        Box::pin(async { Err(ControlError::NoController) })
    }

    /// Asks the active controller to remove this exact ACL (DeleteAcls);
    /// what it removed.
    fn delete_acl(&self, acl: Acl) -> BoxFuture<'_, Result<Vec<Acl>, ControlError>> {
        let _ = acl;
        Box::pin(async { Err(ControlError::NoController) })
    }

    /// Asks the active controller for a block of producer ids for this
    /// broker at `broker_epoch` (KIP-730): `(first_id, count)`.
    fn allocate_producer_ids(
        &self,
        broker_id: u64,
        broker_epoch: u64,
    ) -> BoxFuture<'_, Result<(u64, u64), ControlError>>;
}

/// A boxed future borrowing the control plane.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The ISR the controller committed for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedIsr {
    /// The in-sync replicas.
    pub isr: Vec<u64>,
    /// The partition epoch of the new state.
    pub partition_epoch: u32,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Its name.
    pub name: String,
    /// How many partitions.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Topic configs, `key = value`.
    pub configs: Vec<(String, String)>,
}

/// Why a control-plane call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No controller is known to send the call to.
    #[error("no active controller known")]
    NoController,
    /// The controller refused, with a stable error code.
    #[error("refused (code {code}): {message}")]
    Refused {
        /// The `ErrorCode` number.
        code: i32,
        /// Why.
        message: String,
    },
    /// The call did not reach the controller or got no answer.
    #[error("controller call failed: {0}")]
    Unreachable(String),
}

/// Refuses every call with the retriable not-ready `UNAVAILABLE` until the
/// node has caught up with the metadata log (KIP-631).
#[derive(Debug, Clone)]
pub struct ReadyGate(pub Arc<BrokerRegistration>);

impl Interceptor for ReadyGate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.check_ready()?;
        Ok(request)
    }
}
