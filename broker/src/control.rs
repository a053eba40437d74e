//! The seam between the broker and the metadata quorum: everything the data
//! plane needs from the control plane, and nothing else.
//!
//! The broker reads the metadata image (and waits for new ones), learns when
//! its own registration is in it, finds the active controller to send
//! `AlterPartition` and `CreateTopic` to, reports replicas whose storage
//! failed, and asks whether the node may serve clients yet (KIP-631). The
//! node's composition root (`cli/src/node.rs`) implements this over the
//! openraft quorum; tests can implement it over a plain watch channel.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rivulet_metadata::image::MetadataImage;
use tokio::sync::watch;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// How long a read naming an unknown topic waits to catch up with the active
/// controller before answering "unknown" (KIP-631's "fresh after a write").
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);

/// What the broker needs from the controller quorum.
pub trait ControlPlane: Send + Sync + Debug + 'static {
    /// The newest applied metadata image.
    fn image(&self) -> Arc<MetadataImage>;

    /// Every new image, as it is applied.
    fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>>;

    /// This process's broker epoch once it has registered (`None` before).
    fn registered_epoch(&self) -> watch::Receiver<Option<u64>>;

    /// Where to send controller requests: the active controller's id and
    /// address when known, else any voter's address (it forwards).
    fn controller(&self) -> Option<(Option<u64>, String)>;

    /// The replicas whose logs cannot be written now (sent with the next
    /// heartbeat so the controller moves their leadership away).
    fn report_storage_failed(&self, replicas: Vec<(String, u32)>);

    /// `Ok` once the node may answer clients (its image holds its own
    /// registration); else the not-ready `UNAVAILABLE` to answer with.
    fn check_ready(&self) -> Result<(), Status>;

    /// Waits (up to `timeout`) until this node's image has caught up with the
    /// active controller's; whether it did.
    fn catch_up(&self, timeout: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// Refuses every call with the retriable not-ready `UNAVAILABLE` until the
/// node has caught up with the metadata log (KIP-631).
#[derive(Debug, Clone)]
pub struct ReadyGate(pub Arc<dyn ControlPlane>);

impl Interceptor for ReadyGate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.check_ready()?;
        Ok(request)
    }
}
