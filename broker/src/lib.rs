//! The Rivulet broker.
//!
//! - [`log`]: the partition log — segments of Kafka v2 record batches on disk,
//!   sparse indexes, crash recovery, the leader-epoch cache, retention and
//!   group-committed fsyncs.
//! - [`replica`]: replication — hosted replicas and their roles, the high
//!   watermark, ISR changes, follower fetchers, epoch fencing.
//! - [`groups`]: consumer groups — the coordinator, assignment, committed
//!   offsets in `__consumer_offsets`, and the gRPC `Groups` service.
//! - [`api`]: the broker's calls, protocol-neutral (one file per API).
//! - [`service`]: the gRPC `Broker` and `Replication` services, translations onto [`api`].
//! - [`budget`]: the node-wide budget of client bytes in flight.
//! - [`control`]: the seam to the metadata quorum ([`control::ControlPlane`]).

pub mod api;
pub mod budget;
pub mod control;
#[cfg(test)]
mod dataplane_tests;
pub mod groups;
pub mod lifecycle;
pub mod log;
pub mod replica;
pub mod service;
#[cfg(test)]
pub(crate) mod testing;

pub use groups::service::GroupsRpc;
pub use groups::{CoordinatorConfig, GroupCoordinator};
pub use lifecycle::{BrokerIdentity, BrokerRegistration};
pub use replica::{BrokerConfig, ReplicaManager};
pub use service::BrokerRpc;
