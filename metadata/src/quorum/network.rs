//! openraft's network over tonic: [`RaftNetworkFactory`] for the client side
//! and [`RaftRpc`], the `rivulet.v1.Raft` gRPC service, for the server side.
//!
//! Each RPC carries one openraft request or response as JSON (see
//! `proto/rivulet/v1/raft.proto`). A peer that cannot be reached (connect
//! refused, `Unavailable`, a timeout) is reported as `RPCError::Unreachable`,
//! the one error openraft backs off on; anything else is a `NetworkError`.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use rivulet_proto::node_auth::{node_channel, CallerNode, NodeChannel, NodeCredentials};
use rivulet_proto::v1::raft_client::RaftClient;
use rivulet_proto::v1::raft_server::{Raft as RaftService, RaftServer};
use rivulet_proto::v1::RaftMessage;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::raft::{NodeId, Raft, TypeConfig};

/// Largest Raft message accepted (snapshot chunks are far smaller).
use rivulet_common::limits::MAX_METADATA_MESSAGE_BYTES as MAX_MESSAGE_BYTES;

pub use rivulet_proto::channel;

/// Makes one [`RaftPeer`] per target node; its calls are signed.
#[derive(Debug, Clone)]
pub struct RaftNetworkClients {
    credentials: NodeCredentials,
}

impl RaftNetworkClients {
    /// Clients calling with `credentials`.
    pub fn new(credentials: NodeCredentials) -> Self {
        Self { credentials }
    }
}

impl RaftNetworkFactory<TypeConfig> for RaftNetworkClients {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        RaftPeer {
            target,
            client: node_channel(
                &node.addr,
                rivulet_proto::NODE_CONNECT_TIMEOUT,
                &self.credentials,
            )
            .map(|c| RaftClient::new(c).max_decoding_message_size(MAX_MESSAGE_BYTES))
            .map_err(|e| e.to_string()),
        }
    }
}

/// The client side of the Raft RPCs to one peer.
#[derive(Debug)]
pub struct RaftPeer {
    /// The peer's node id.
    target: NodeId,
    /// The client, or why the peer's address is unusable.
    client: Result<RaftClient<NodeChannel>, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

fn to_json<T: Serialize>(v: &T) -> Result<RaftMessage, TransportError> {
    serde_json::to_vec(v)
        .map(|json| RaftMessage { json: json.into() })
        .map_err(|e| TransportError(format!("cannot encode raft message: {e}")))
}

fn from_json<T: DeserializeOwned>(m: &RaftMessage) -> Result<T, TransportError> {
    serde_json::from_slice(&m.json)
        .map_err(|e| TransportError(format!("cannot decode raft message: {e}")))
}

impl RaftPeer {
    /// Sends `req` with `call` and decodes `Result<Resp, RaftError<E>>`.
    async fn call<Req, Resp, E, F, Fut>(
        &mut self,
        req: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftClient<NodeChannel>, Request<RaftMessage>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<RaftMessage>, Status>>,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(
                    e.clone(),
                ))))
            }
        };
        let msg = to_json(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = Request::new(msg);
        request.set_timeout(option.hard_ttl());
        // Bounded here too: a peer that accepts connections and never
        // answers (paused, or stuck in a TLS handshake) must not hold Raft.
        let answered = tokio::time::timeout(option.hard_ttl(), call(client, request))
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer from the peer")));
        let reply = match answered {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let e = TransportError(format!("{}: {}", status.code(), status.message()));
                // tonic reports a peer that died mid-call as Unknown ("transport
                // error") or Internal ("h2 protocol error"): unreachable too.
                let peer_gone = match status.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown => true,
                    tonic::Code::Internal => status.message().contains("h2 protocol error"),
                    _ => false,
                };
                return Err(if peer_gone {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                });
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            from_json(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(&rpc, &option, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(&rpc, &option, |mut c, r| async move {
            c.install_snapshot(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }
}

/// The server side: hands incoming Raft RPCs to the local [`Raft`].
#[derive(Clone)]
pub struct RaftRpc {
    /// The local Raft node.
    raft: Raft,
}

impl std::fmt::Debug for RaftRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaftRpc")
    }
}

impl RaftRpc {
    /// The tonic service for `raft`.
    pub fn server(raft: Raft) -> RaftServer<Self> {
        RaftServer::new(Self { raft }).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn bad_request(e: TransportError) -> Status {
    Status::invalid_argument(e.0)
}

/// A verified caller may speak only for itself: the candidate of a vote,
/// the leader of an append or a snapshot.
fn check_caller<T>(request: &Request<T>, vote: &openraft::Vote<NodeId>) -> Result<(), Status> {
    match request.extensions().get::<CallerNode>() {
        Some(CallerNode(caller)) if *caller != vote.leader_id().voted_for().unwrap_or(*caller) => {
            Err(Status::permission_denied(format!(
                "node {caller} may not send Raft messages for node {}",
                vote.leader_id().voted_for().unwrap_or(0)
            )))
        }
        _ => Ok(()),
    }
}

fn reply<T: Serialize>(v: &T) -> Result<Response<RaftMessage>, Status> {
    to_json(v)
        .map(Response::new)
        .map_err(|e| Status::internal(e.0))
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req: AppendEntriesRequest<TypeConfig> =
            from_json(request.get_ref()).map_err(bad_request)?;
        check_caller(&request, &req.vote)?;
        reply(&self.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: VoteRequest<NodeId> = from_json(request.get_ref()).map_err(bad_request)?;
        check_caller(&request, &req.vote)?;
        reply(&self.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> =
            from_json(request.get_ref()).map_err(bad_request)?;
        check_caller(&request, &req.vote)?;
        reply(&self.raft.install_snapshot(req).await)
    }
}
