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
    fn catch_up(&self, timeout: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
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
