//! Sizes every node and client agree on.

/// The largest gRPC message a data-plane peer (client or follower) accepts:
/// a fetch answer of `fetch.max.bytes` plus framing fits well inside.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// The largest gRPC message the metadata quorum exchanges (Raft entries,
/// snapshots, controller calls).
pub const MAX_METADATA_MESSAGE_BYTES: usize = 64 << 20;
