//! Rivulet's gRPC API, generated from the `.proto` files under `proto/`.
//!
//! This crate holds only the wire contract and the generated tonic/prost code;
//! conversions to domain types live with the domain (the broker, the metadata
//! crate, the client).

/// Version 1 of the API, package `rivulet.v1`.
pub mod v1 {
    tonic::include_proto!("rivulet.v1");
}

pub mod node_auth;
pub mod tls;
pub mod user_auth;

/// gRPC metadata key set (to `1`) on the retriable `UNAVAILABLE` a node
/// answers while it is catching up with the metadata log after a restart
/// (KIP-631): the client should try another node.
pub const NOT_READY_KEY: &str = "x-rivulet-not-ready";

/// gRPC metadata key, with a not-ready answer: other nodes' `host:port`
/// addresses, comma-separated, for the client to try instead.
pub const TRY_NODES_KEY: &str = "x-rivulet-try-nodes";

/// How long one node waits for a TCP connection to another: peers are on
/// the same network, so a longer wait means the peer is down.
pub const NODE_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// A lazily connecting gRPC channel to `host:port` with a connect timeout
/// and TCP_NODELAY, over TLS when `tls` is given: the one way every Rivulet
/// crate dials a node.
pub fn channel(
    addr: &str,
    connect_timeout: std::time::Duration,
    tls: Option<&tls::ClientTls>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Ok(tls::endpoint(addr, connect_timeout, tls)?.connect_lazy())
}

/// What a [`StampedChannel`] adds to every call before it leaves: a node's
/// proof, a user's credentials.
pub trait Stamp: Clone {
    /// Adds this stamp's headers to `req`.
    fn stamp(&self, req: &mut tonic::codegen::http::Request<tonic::body::Body>);
}

/// A channel that stamps every call made through it: the one wrapper
/// behind [`node_auth::NodeChannel`] and [`user_auth::UserChannel`].
#[derive(Debug, Clone)]
pub struct StampedChannel<S> {
    inner: tonic::transport::Channel,
    stamp: S,
}

type ChannelService = tonic::transport::Channel;
type Req = tonic::codegen::http::Request<tonic::body::Body>;

impl<S: Stamp> tower_service::Service<Req> for StampedChannel<S> {
    type Response = <ChannelService as tower_service::Service<Req>>::Response;
    type Error = <ChannelService as tower_service::Service<Req>>::Error;
    type Future = <ChannelService as tower_service::Service<Req>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        self.stamp.stamp(&mut req);
        self.inner.call(req)
    }
}

/// The encoded `FileDescriptorSet` of every Rivulet service, for gRPC server
/// reflection (`grpcurl -plaintext host:port list` works without .proto files).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rivulet_descriptor");
