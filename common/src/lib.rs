//! What every Rivulet crate shares, so none repeats it:
//!
//! - [`batch`]: the Kafka v2 record batch codec — header, CRC, stamping,
//!   building (with compression) and decoding. The broker adds its append
//!   rules and the leader's record validator on top.
//! - [`ids`]: [`BrokerId`] and [`TopicPartition`], and their wire forms.
//! - [`time`]: the wall clock in Kafka's unit (ms since the Unix epoch).
//! - [`limits`]: sizes every node and client agree on.
//! - [`config`]: the error every config type's `validate()` returns.

pub mod batch;
pub mod config;
pub mod ids;
pub mod limits;
pub mod time;

pub use ids::{BrokerId, TopicPartition};
