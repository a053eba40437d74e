//! The broker's [`ControlPlane`] over this node's metadata quorum member:
//! the one place the data plane meets the openraft runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rivulet_broker::control::ControlPlane;
use rivulet_metadata::image::MetadataImage;
use rivulet_metadata::quorum::Quorum;
use tokio::sync::watch;

/// [`ControlPlane`] backed by a [`Quorum`].
#[derive(Debug, Clone)]
pub struct QuorumControl(pub Arc<Quorum>);

impl ControlPlane for QuorumControl {
    fn image(&self) -> Arc<MetadataImage> {
        self.0.image()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.0.subscribe()
    }

    fn registered_epoch(&self) -> watch::Receiver<Option<u64>> {
        self.0.registered_epoch()
    }

    fn controller(&self) -> Option<(Option<u64>, String)> {
        match self.0.leader() {
            Some((id, addr)) => Some((Some(id), addr)),
            None => self
                .0
                .config()
                .voters
                .values()
                .next()
                .map(|a| (None, a.clone())),
        }
    }

    fn report_storage_failed(&self, replicas: Vec<(String, u32)>) {
        self.0.report_storage_failed(replicas);
    }

    fn check_ready(&self) -> Result<(), tonic::Status> {
        self.0.check_ready()
    }

    fn catch_up(&self, timeout: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(self.0.catch_up_with_controller(timeout))
    }
}
