//! The broker's [`ControlPlane`] over this node's metadata quorum member:
//! the one place the data plane meets the openraft runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rivulet_broker::control::ControlPlane;
use rivulet_metadata::image::MetadataImage;
use rivulet_metadata::quorum::Quorum;
use tokio::sync::watch;

/// [`ControlPlane`] backed by a [`Quorum`].
#[derive(Debug)]
pub struct QuorumControl {
    quorum: Arc<Quorum>,
    /// Which voter to try next while no leader is known.
    next_voter: AtomicUsize,
}

impl QuorumControl {
    /// The control plane of `quorum`.
    pub fn new(quorum: Arc<Quorum>) -> Self {
        Self {
            quorum,
            next_voter: AtomicUsize::new(0),
        }
    }
}

impl ControlPlane for QuorumControl {
    fn image(&self) -> Arc<MetadataImage> {
        self.quorum.image()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.quorum.subscribe()
    }

    fn controller(&self) -> Option<(Option<u64>, String)> {
        if let Some((id, addr)) = self.quorum.leader() {
            return Some((Some(id), addr));
        }
        let attempt = self.next_voter.fetch_add(1, Ordering::Relaxed);
        self.quorum.any_voter(attempt).map(|a| (None, a))
    }

    fn peers(&self) -> Vec<String> {
        self.quorum.peers()
    }

    fn catch_up(&self, timeout: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(self.quorum.catch_up_with_controller(timeout))
    }
}
