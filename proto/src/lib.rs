//! Rivulet's gRPC API, generated from the `.proto` files under `proto/`.
//!
//! This crate holds only the wire contract and the generated tonic/prost code;
//! conversions to domain types live with the domain (the broker, the metadata
//! crate, the client).

/// Version 1 of the API, package `rivulet.v1`.
pub mod v1 {
    tonic::include_proto!("rivulet.v1");
}

/// The encoded `FileDescriptorSet` of every Rivulet service, for gRPC server
/// reflection (`grpcurl -plaintext host:port list` works without .proto files).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rivulet_descriptor");
