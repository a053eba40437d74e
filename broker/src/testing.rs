//! Test support: metadata images built from the controller's own pure
//! decisions, and a [`FakeControl`] control plane that serves them to
//! in-process brokers (no Raft, no controller process).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rivulet_metadata::controller::{
    alter_partition, create_topic, delete_topic, fence_broker, register_broker, unfence_broker,
};
use rivulet_metadata::{
    AlterPartitionRequest, ApplyOutcome, BrokerId, BrokerRegistrationRequest, ControllerError,
    ControllerResult, MetadataImage,
};
use rivulet_proto::v1::ErrorCode;
use tokio::sync::watch;

use crate::control::{BoxFuture, CommittedIsr, ControlError, ControlPlane, NewTopic};

/// Builds images the way the active controller would: each step is a
/// controller decision whose records are applied.
#[derive(Debug, Clone)]
pub(crate) struct ImageBuilder {
    image: MetadataImage,
}

impl ImageBuilder {
    /// Brokers `1..=n`, registered and unfenced, at unusable addresses.
    pub fn new(n: u64) -> Self {
        let addresses: Vec<String> = (1..=n).map(|id| format!("broker-{id}:9092")).collect();
        Self::with_addresses(&addresses)
    }

    /// Brokers `1..=addresses.len()`, registered and unfenced.
    pub fn with_addresses(addresses: &[String]) -> Self {
        let mut b = Self {
            image: MetadataImage::new("test-cluster"),
        };
        for (i, address) in addresses.iter().enumerate() {
            b.join(i as u64 + 1, address);
        }
        b
    }

    /// Applies a decision's records; its response.
    #[track_caller]
    pub fn decide<R>(
        &mut self,
        decision: impl FnOnce(&MetadataImage) -> Result<ControllerResult<R>, ControllerError>,
    ) -> Result<R, ControllerError> {
        let result = decision(&self.image)?;
        for record in &result.records {
            assert_eq!(
                self.image.apply(record),
                ApplyOutcome::Applied,
                "{record:?}"
            );
        }
        Ok(result.response)
    }

    /// Registers and unfences broker `id`; its broker epoch.
    #[track_caller]
    pub fn join(&mut self, id: u64, address: &str) -> u64 {
        let request = BrokerRegistrationRequest {
            id: BrokerId(id),
            address: address.to_owned(),
            rack: None,
            directory_id: Some(format!("dir-{id}")),
            log_fsynced: true,
            kafka_address: None,
        };
        let epoch = self
            .decide(|img| Ok(register_broker(img, request)))
            .expect("register")
            .broker_epoch;
        self.decide(|img| unfence_broker(img, BrokerId(id), epoch))
            .expect("unfence");
        epoch
    }

    #[track_caller]
    pub fn create_topic(&mut self, name: &str, partitions: u32, rf: u32) {
        self.decide(|img| create_topic(img, name, partitions, rf, &[]))
            .expect("create topic");
    }

    #[track_caller]
    pub fn delete_topic(&mut self, name: &str) {
        self.decide(|img| delete_topic(img, name))
            .expect("delete topic");
    }

    /// Fences broker `id` (its lease ran out): it leaves every ISR and
    /// leadership moves.
    #[track_caller]
    pub fn fence(&mut self, id: u64) {
        self.decide(|img| fence_broker(img, BrokerId(id)))
            .expect("fence");
    }

    /// The image so far.
    pub fn image(&self) -> MetadataImage {
        self.image.clone()
    }
}

/// A controller refusal as the Controller service would answer it.
fn refusal(e: ControllerError) -> ControlError {
    ControlError::Refused {
        code: rivulet_metadata::convert::error_code(e.kind()) as i32,
        message: e.to_string(),
    }
}

/// A control plane over an [`ImageBuilder`]: every decision publishes the
/// new image at once, as a single-node quorum would.
#[derive(Debug)]
pub(crate) struct FakeControl {
    builder: Mutex<ImageBuilder>,
    images: watch::Sender<Arc<MetadataImage>>,
    /// While set, CreateTopic never answers (a controller that black-holes
    /// the call).
    pub hang_create_topic: std::sync::atomic::AtomicBool,
}

impl FakeControl {
    pub fn new(builder: ImageBuilder) -> Arc<Self> {
        let images = watch::Sender::new(Arc::new(builder.image()));
        Arc::new(Self {
            builder: Mutex::new(builder),
            images,
            hang_create_topic: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Runs `change` on the image and publishes the result.
    pub fn update<R>(&self, change: impl FnOnce(&mut ImageBuilder) -> R) -> R {
        let mut b = self.builder.lock().unwrap_or_else(|e| e.into_inner());
        let r = change(&mut b);
        self.images.send_replace(Arc::new(b.image()));
        r
    }
}

impl ControlPlane for FakeControl {
    fn image(&self) -> Arc<MetadataImage> {
        self.images.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.images.subscribe()
    }

    fn controller(&self) -> Option<(Option<u64>, String)> {
        None
    }

    fn peers(&self) -> Vec<String> {
        Vec::new()
    }

    fn catch_up(&self, _timeout: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }

    fn alter_partition(
        &self,
        broker_epoch: u64,
        request: AlterPartitionRequest,
    ) -> BoxFuture<'_, Result<CommittedIsr, ControlError>> {
        let result = self.update(|b| {
            let broker = request.broker_id;
            match b.image.broker(broker) {
                Some(reg) if reg.broker_epoch == broker_epoch => {}
                _ => {
                    return Err(ControlError::Refused {
                        code: ErrorCode::StaleBrokerEpoch as i32,
                        message: format!("broker {} is not at epoch {broker_epoch}", broker.0),
                    })
                }
            }
            b.decide(|img| alter_partition(img, request))
                .map(|p| CommittedIsr {
                    isr: p.isr.iter().map(|b| b.0).collect(),
                    partition_epoch: p.partition_epoch,
                })
                .map_err(refusal)
        });
        Box::pin(async move { result })
    }

    fn create_topic(&self, t: NewTopic) -> BoxFuture<'_, Result<(), ControlError>> {
        if self
            .hang_create_topic
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Box::pin(std::future::pending());
        }
        let result = self.update(|b| {
            b.decide(|img| {
                create_topic(img, &t.name, t.partitions, t.replication_factor, &t.configs)
            })
            .map(|_| ())
            .map_err(refusal)
        });
        Box::pin(async move { result })
    }

    fn allocate_producer_ids(
        &self,
        broker_id: u64,
        broker_epoch: u64,
    ) -> BoxFuture<'_, Result<(u64, u64), ControlError>> {
        let result = self.update(|b| {
            b.decide(|img| {
                rivulet_metadata::allocate_producer_ids(
                    img,
                    rivulet_metadata::BrokerId(broker_id),
                    broker_epoch,
                )
            })
            .map(|block| (block.first_id, block.count))
            .map_err(refusal)
        });
        Box::pin(async move { result })
    }
}
