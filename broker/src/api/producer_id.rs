//! InitProducerId (KIP-98): producer ids for idempotent producers, from
//! blocks the controller hands this broker (KIP-730), and epoch bumps
//! (KIP-360).

use rivulet_metadata::security::{Access, Operation, ResourceType};
use rivulet_metadata::MetadataImage;
use tokio::sync::Mutex;

use super::BrokerApi;

/// Why no producer id was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitProducerIdError {
    /// A transactional id: transactions do not exist yet.
    #[error("transactions are not supported yet: give no transactional id")]
    TransactionsNotSupported,
    /// The caller may write no topic (KIP-679: an idempotent producer needs
    /// WRITE on some topic, or IDEMPOTENT_WRITE on the cluster).
    #[error(
        "{principal} may not produce: no ACL allows it WRITE on any topic (an idempotent \
         producer needs one, KIP-679)"
    )]
    NotAuthorized {
        /// Who asked.
        principal: String,
    },
    /// The epoch to bump is not a valid one.
    #[error("invalid producer id {producer_id} or epoch {epoch}")]
    InvalidRequest {
        /// The id given.
        producer_id: i64,
        /// The epoch given.
        epoch: i32,
    },
    /// No block of ids could be had from the controller (retriable).
    #[error("no producer id available: {0}; retry")]
    Unavailable(String),
}

/// An id and epoch for a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdAndEpoch {
    /// The producer id.
    pub producer_id: i64,
    /// Its epoch.
    pub epoch: i16,
}

/// This broker's current block of producer ids: `[next, end)`.
#[derive(Debug, Default)]
pub struct ProducerIdBlock {
    range: Mutex<(u64, u64)>,
}

impl ProducerIdBlock {
    /// The next id, asking the controller for a new block when this one is
    /// used up (one request at a time: callers queue on the lock).
    async fn next_id(&self, api: &BrokerApi) -> Result<i64, InitProducerIdError> {
        let mut range = self.range.lock().await;
        if range.0 >= range.1 {
            let unavailable = |m: String| InitProducerIdError::Unavailable(m);
            let epoch = *api.mgr.registration.registered_epoch().borrow();
            let epoch =
                epoch.ok_or_else(|| unavailable("this broker is not registered yet".into()))?;
            let call = api
                .mgr
                .control
                .allocate_producer_ids(api.mgr.config.node_id, epoch);
            let (first, count) =
                match tokio::time::timeout(std::time::Duration::from_secs(10), call).await {
                    Ok(Ok(block)) => block,
                    Ok(Err(e)) => return Err(unavailable(e.to_string())),
                    Err(_) => {
                        return Err(unavailable("the controller did not answer in 10 s".into()))
                    }
                };
            *range = (first, first.saturating_add(count));
        }
        let id = range.0;
        range.0 += 1;
        i64::try_from(id).map_err(|_| InitProducerIdError::Unavailable("ids exhausted".into()))
    }
}

/// KIP-679: WRITE on some topic, or on the cluster.
fn may_produce(access: &Access, image: &MetadataImage) -> bool {
    access.allows_cluster(image, Operation::Write)
        || image.topics().keys().any(|t| {
            access.authorizer.allows(
                image.acls(),
                &access.principal,
                access.host,
                Operation::Write,
                ResourceType::Topic,
                t,
            )
        })
}

impl BrokerApi {
    /// A new producer id at epoch 0, or, given the producer's current id
    /// and epoch, the same id at the next epoch (KIP-360; a new id once the
    /// epoch would pass `i16::MAX`).
    pub async fn init_producer_id(
        &self,
        access: &Access,
        transactional_id: &str,
        current: Option<(i64, i32)>,
    ) -> Result<ProducerIdAndEpoch, InitProducerIdError> {
        if !transactional_id.is_empty() {
            return Err(InitProducerIdError::TransactionsNotSupported);
        }
        let image = self.mgr.image();
        if !may_produce(access, &image) {
            return Err(InitProducerIdError::NotAuthorized {
                principal: access.principal.to_string(),
            });
        }
        if let Some((producer_id, epoch)) = current {
            if producer_id < 0 || !(0..=i32::from(i16::MAX)).contains(&epoch) {
                return Err(InitProducerIdError::InvalidRequest { producer_id, epoch });
            }
            if epoch < i32::from(i16::MAX) {
                return Ok(ProducerIdAndEpoch {
                    producer_id,
                    epoch: epoch as i16 + 1,
                });
            }
        }
        let producer_id = self.mgr.producer_ids.next_id(self).await?;
        Ok(ProducerIdAndEpoch {
            producer_id,
            epoch: 0,
        })
    }
}
