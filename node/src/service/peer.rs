//! The node service other nodes call.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};
use xmcredit_crypto::NodeId;

use super::{contracts, ResponseStream};
use crate::context::NodeContext;
use crate::proto::{self, node_server::Node};
use crate::transport::peer_of;
use crate::NodeError;

/// Answers the alliance's other nodes.
#[derive(Debug, Clone)]
pub struct PeerService {
    ctx: Arc<NodeContext>,
}

impl PeerService {
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self { ctx }
    }

    /// The caller's node id, which must be a configured peer.
    fn caller<T>(&self, request: &Request<T>) -> Result<NodeId, Status> {
        let peer = peer_of(request)?;
        if self.ctx.config.peer(&peer).is_none() {
            return Err(self.ctx.refuse(None, Some(&peer), NodeError::UnknownPeer(peer.clone())).into());
        }
        Ok(peer)
    }

    fn refused(&self, peer: &NodeId, error: NodeError) -> Status {
        self.ctx.refuse(None, Some(peer), error).into()
    }
}

#[tonic::async_trait]
impl Node for PeerService {
    async fn health(
        &self,
        request: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::HealthReply>, Status> {
        // Health answers any certificate of the alliance, peer or not (monitoring).
        let _ = peer_of(&request)?;
        let contracts = self.ctx.store.contracts().map(|c| c.len() as u64).unwrap_or(0);
        Ok(Response::new(proto::HealthReply {
            node_id: self.ctx.node_id().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            contracts,
        }))
    }

    async fn propose_contract(
        &self,
        request: Request<proto::SignedContractMsg>,
    ) -> Result<Response<proto::ContractAck>, Status> {
        let peer = self.caller(&request)?;
        contracts::receive_proposal(&self.ctx, &peer, request.into_inner())
            .map(Response::new)
            .map_err(|e| self.refused(&peer, e))
    }

    async fn submit_signature(
        &self,
        request: Request<proto::ContractSignatureMsg>,
    ) -> Result<Response<proto::ContractAck>, Status> {
        let peer = self.caller(&request)?;
        contracts::receive_signature(&self.ctx, &peer, request.into_inner())
            .map(Response::new)
            .map_err(|e| self.refused(&peer, e))
    }

    async fn fetch_contract(
        &self,
        request: Request<proto::ContractQuery>,
    ) -> Result<Response<proto::SignedContractMsg>, Status> {
        let peer = self.caller(&request)?;
        contracts::fetch(&self.ctx, &peer, &request.get_ref().contract_id)
            .map(Response::new)
            .map_err(|e| self.refused(&peer, e))
    }

    async fn revoke_contract(
        &self,
        request: Request<proto::RevocationMsg>,
    ) -> Result<Response<proto::ContractAck>, Status> {
        let peer = self.caller(&request)?;
        contracts::receive_revocation(&self.ctx, &peer, request.into_inner())
            .map(Response::new)
            .map_err(|e| self.refused(&peer, e))
    }

    type PsiStream = ResponseStream<proto::Frame>;

    async fn psi(
        &self,
        request: Request<Streaming<proto::Frame>>,
    ) -> Result<Response<Self::PsiStream>, Status> {
        let peer = self.caller(&request)?;
        crate::run::psi::serve_session(self.ctx.clone(), peer, request.into_inner()).await
    }

    type SecAggStream = ResponseStream<proto::Frame>;

    async fn sec_agg(
        &self,
        request: Request<Streaming<proto::Frame>>,
    ) -> Result<Response<Self::SecAggStream>, Status> {
        let peer = self.caller(&request)?;
        crate::run::secagg::serve_session(self.ctx.clone(), peer, request.into_inner()).await
    }
}
