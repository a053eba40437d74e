//! Rivulet's Kafka wire-protocol listener: unmodified Kafka clients (kcat,
//! librdkafka and its bindings, kafka-python, the Java client) produce,
//! fetch and commit offsets against the same broker API as gRPC.
//!
//! - [`conn`]: the listener, framing, in-order pipelining, limits.
//! - [`handler`]: one function per Kafka API onto [`rivulet_broker::api`]
//!   and the group coordinator.
//! - [`versions`]: what ApiVersions advertises.
//! - [`codes`]: Rivulet's error codes as Kafka's.
//!
//! Record batches pass through as the bytes the client sent and the log
//! holds; nothing is decompressed or re-encoded here.

mod access;
mod admin;
pub mod classic;
pub mod codes;
pub mod conn;
pub mod handler;
pub mod sasl;
pub mod versions;

pub use conn::KafkaTls;
pub use conn::{serve, KafkaLimits};
pub use handler::Handler;
