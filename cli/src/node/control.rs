//! The broker's [`ControlPlane`] over this node's metadata quorum member:
//! the one place the data plane meets the openraft runtime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rivulet_broker::control::{BoxFuture, CommittedIsr, ControlError, ControlPlane, NewTopic};
use rivulet_metadata::image::MetadataImage;
use rivulet_metadata::quorum::Quorum;
use rivulet_metadata::security::Acl;
use rivulet_metadata::AlterPartitionRequest;
use rivulet_proto::node_auth::NodeChannel;
use rivulet_proto::v1::controller_client::ControllerClient;
use rivulet_proto::v1::{self as pb, ErrorCode};
use tokio::sync::watch;

/// [`ControlPlane`] backed by a [`Quorum`].
#[derive(Debug)]
pub struct QuorumControl {
    quorum: Arc<Quorum>,
    /// Which voter to try next while no leader is known.
    next_voter: AtomicUsize,
    /// Controller clients by address (each a lazily connecting channel).
    clients: Mutex<HashMap<String, ControllerClient<NodeChannel>>>,
}

impl QuorumControl {
    /// The control plane of `quorum`.
    pub fn new(quorum: Arc<Quorum>) -> Self {
        Self {
            quorum,
            next_voter: AtomicUsize::new(0),
            clients: Mutex::default(),
        }
    }

    /// A client to the active controller (or to a voter, which forwards).
    fn client(&self) -> Result<ControllerClient<NodeChannel>, ControlError> {
        let (_, addr) = self.controller().ok_or(ControlError::NoController)?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&addr) {
            return Ok(c.clone());
        }
        let channel = rivulet_proto::node_auth::node_channel(
            &addr,
            rivulet_proto::NODE_CONNECT_TIMEOUT,
            self.quorum.credentials(),
        )
        .map_err(|e| ControlError::Unreachable(format!("{addr}: {e}")))?;
        let c = ControllerClient::new(channel);
        clients.insert(addr, c.clone());
        Ok(c)
    }
}

/// `Ok` for `ErrorCode::None`, else the refusal.
fn refused(code: i32, message: String) -> Result<(), ControlError> {
    if code == ErrorCode::None as i32 {
        Ok(())
    } else {
        Err(ControlError::Refused { code, message })
    }
}

fn unreachable(status: &tonic::Status) -> ControlError {
    ControlError::Unreachable(status.message().to_owned())
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

    fn catch_up(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        Box::pin(self.quorum.catch_up_with_controller(timeout))
    }

    fn alter_partition(
        &self,
        broker_epoch: u64,
        r: AlterPartitionRequest,
    ) -> BoxFuture<'_, Result<CommittedIsr, ControlError>> {
        Box::pin(async move {
            let req = pb::AlterPartitionRequest {
                broker_id: r.broker_id.0,
                broker_epoch,
                topic: r.topic,
                topic_id: r.topic_id.to_string(),
                partition: r.partition,
                leader_epoch: r.leader_epoch,
                partition_epoch: r.partition_epoch,
                new_isr: r.new_isr.iter().map(|b| b.0).collect(),
            };
            let answer = self
                .client()?
                .alter_partition(req)
                .await
                .map_err(|s| unreachable(&s))?
                .into_inner();
            refused(answer.error_code, answer.error_message)?;
            let p = answer.partition.ok_or_else(|| ControlError::Refused {
                code: ErrorCode::None as i32,
                message: "the controller's answer names no partition".into(),
            })?;
            Ok(CommittedIsr {
                isr: p.isr,
                partition_epoch: p.partition_epoch,
            })
        })
    }

    fn delete_topic(&self, name: String) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            let answer = self
                .client()?
                .delete_topic(pb::DeleteTopicRequest { name })
                .await
                .map_err(|s| unreachable(&s))?
                .into_inner();
            refused(answer.error_code, answer.error_message)
        })
    }

    fn alter_topic_config(
        &self,
        name: String,
        configs: Vec<(String, String)>,
    ) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            let req = pb::AlterTopicConfigRequest {
                name,
                configs: configs
                    .into_iter()
                    .map(|(key, value)| pb::ConfigEntry { key, value })
                    .collect(),
            };
            let answer = self
                .client()?
                .alter_topic_config(req)
                .await
                .map_err(|s| unreachable(&s))?
                .into_inner();
            refused(answer.error_code, answer.error_message)
        })
    }

    fn create_topic(&self, t: NewTopic) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            let req = pb::CreateTopicRequest {
                name: t.name,
                partitions: t.partitions,
                replication_factor: t.replication_factor,
                configs: t
                    .configs
                    .into_iter()
                    .map(|(key, value)| pb::ConfigEntry { key, value })
                    .collect(),
            };
            let answer = self
                .client()?
                .create_topic(req)
                .await
                .map_err(|s| unreachable(&s))?
                .into_inner();
            refused(answer.error_code, answer.error_message)
        })
    }

    fn create_partitions(
        &self,
        name: String,
        total: u32,
        validate_only: bool,
    ) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            let req = pb::CreatePartitionsRequest {
                name,
                total,
                validate_only,
            };
            let answer = self
                .client()?
                .create_partitions(req)
                .await
                .map_err(|s| unreachable(&s))?
                .into_inner();
            refused(answer.error_code, answer.error_message)
        })
    }

    fn create_acls(&self, acls: Vec<Acl>) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            let req = pb::CreateAclsRequest {
                acls: acls
                    .iter()
                    .map(rivulet_metadata::convert::acl_to_proto)
                    .collect(),
            };
            let answer = self
                .client()?
                .create_acls(req)
                .await
                .map_err(|s| unreachable(&s))?
                .into_inner();
            refused(answer.error_code, answer.error_message)
        })
    }

    fn delete_acl(&self, acl: Acl) -> BoxFuture<'_, Result<Vec<Acl>, ControlError>> {
        Box::pin(async move {
            let req = pb::DeleteAclsRequest {
                filter: Some(rivulet_metadata::convert::acl_to_proto(&acl)),
            };
            let answer = self
                .client()?
                .delete_acls(req)
                .await
                .map_err(|s| unreachable(&s))?
                .into_inner();
            refused(answer.error_code, answer.error_message)?;
            answer
                .deleted
                .iter()
                .map(rivulet_metadata::convert::acl_from_proto)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|message| ControlError::Refused {
                    code: ErrorCode::UnknownServerError.into(),
                    message,
                })
        })
    }

    fn allocate_producer_ids(
        &self,
        broker_id: u64,
        broker_epoch: u64,
    ) -> BoxFuture<'_, Result<(u64, u64), ControlError>> {
        Box::pin(async move {
            let req = pb::AllocateProducerIdsRequest {
                broker_id,
                broker_epoch,
            };
            let answer = self
                .client()?
                .allocate_producer_ids(req)
                .await
                .map_err(|s| unreachable(&s))?
                .into_inner();
            refused(answer.error_code, answer.error_message)?;
            Ok((answer.first_id, answer.count))
        })
    }
}
