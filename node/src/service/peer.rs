//! The node service other nodes call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::StreamExt;

use tonic::{Request, Response, Status, Streaming};
use xmcredit_crypto::NodeId;

use super::{contracts, ResponseStream};
use crate::config::{MAX_CONTRACT_BYTES, MAX_ID_BYTES, MAX_REVOCATION_BYTES};
use crate::context::NodeContext;
use crate::proto::{self, node_server::Node};
use crate::transport::{peer_of, PeerIdentity};
use crate::NodeError;

/// Answers the alliance's other nodes.
#[derive(Debug, Clone)]
pub struct PeerService {
    ctx: Arc<NodeContext>,
    /// Protocol sessions each peer holds open (`limits.max_sessions_per_peer`).
    sessions: Arc<Mutex<HashMap<NodeId, Arc<Semaphore>>>>,
}

impl PeerService {
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self { ctx, sessions: Arc::default() }
    }

    /// One of `peer`'s session slots, or `ResourceExhausted` with the reason. Taken
    /// before the session's first message is awaited, so streams that open and stall
    /// cost at most this many slots per peer.
    fn session_slot(&self, peer: &NodeId) -> Result<OwnedSemaphorePermit, Status> {
        let limit = self.ctx.config.limits.max_sessions_per_peer;
        let semaphore = match self.sessions.lock() {
            Ok(mut sessions) => {
                sessions.entry(peer.clone()).or_insert_with(|| Arc::new(Semaphore::new(limit))).clone()
            }
            Err(_) => return Err(Status::internal("session table poisoned")),
        };
        semaphore.try_acquire_owned().map_err(|_| {
            let reason = format!("{peer} already holds {limit} protocol sessions open on this node (limits.max_sessions_per_peer)");
            let _ = self.ctx.refuse(None, Some(peer), NodeError::Refused(reason.clone()));
            Status::resource_exhausted(reason)
        })
    }

    /// Refuses a peer-controlled field over its cap before it is logged or stored.
    fn cap(&self, peer: &NodeId, field: &str, len: usize, max: usize) -> Result<(), Status> {
        if len > max {
            let reason = format!("{field} of {len} bytes from {peer}: at most {max}");
            let _ = self.ctx.refuse(None, Some(peer), NodeError::Refused(reason.clone()));
            return Err(Status::resource_exhausted(reason));
        }
        Ok(())
    }

    /// The caller: a configured peer that proved the identity key pinned for it.
    /// Calls under a contract check the contract's key on top.
    fn caller<T>(&self, request: &Request<T>) -> Result<PeerIdentity, Status> {
        let peer = peer_of(request)?;
        if let Err(e) = self.ctx.check_caller(&peer) {
            return Err(self.ctx.refuse(None, Some(&peer.node_id), e).into());
        }
        Ok(peer)
    }

    fn refused(&self, peer: &NodeId, error: NodeError) -> Status {
        self.ctx.refuse(None, Some(peer), error).into()
    }
}

/// Keeps a session slot until the session's response stream ends (or the peer goes).
fn hold_until_done(
    response: Response<ResponseStream<proto::Frame>>,
    slot: OwnedSemaphorePermit,
) -> Response<ResponseStream<proto::Frame>> {
    let stream = response.into_inner().map(move |frame| {
        let _held = &slot;
        frame
    });
    Response::new(Box::pin(stream))
}

#[tonic::async_trait]
impl Node for PeerService {
    async fn health(
        &self,
        request: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::HealthReply>, Status> {
        // Only configured peers that proved their key get an answer (issue 9: no probing).
        let _ = self.caller(&request)?;
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
        let message = request.get_ref();
        self.cap(&peer.node_id, "contract document", message.canonical.len(), MAX_CONTRACT_BYTES)?;
        self.cap(&peer.node_id, "signatures", message.signatures.len(), 64)?;
        self.cap(&peer.node_id, "revocations", message.revocations_json.len(), 64)?;
        for revocation in &message.revocations_json {
            self.cap(&peer.node_id, "revocation", revocation.len(), MAX_REVOCATION_BYTES)?;
        }
        contracts::receive_proposal(&self.ctx, &peer, request.into_inner())
            .map(Response::new)
            .map_err(|e| self.refused(&peer.node_id, e))
    }

    async fn submit_signature(
        &self,
        request: Request<proto::ContractSignatureMsg>,
    ) -> Result<Response<proto::ContractAck>, Status> {
        let peer = self.caller(&request)?;
        self.cap(&peer.node_id, "contract id", request.get_ref().contract_id.len(), MAX_ID_BYTES)?;
        contracts::receive_signature(&self.ctx, &peer, request.into_inner())
            .map(Response::new)
            .map_err(|e| self.refused(&peer.node_id, e))
    }

    async fn fetch_contract(
        &self,
        request: Request<proto::ContractQuery>,
    ) -> Result<Response<proto::SignedContractMsg>, Status> {
        let peer = self.caller(&request)?;
        self.cap(&peer.node_id, "contract id", request.get_ref().contract_id.len(), MAX_ID_BYTES)?;
        contracts::fetch(&self.ctx, &peer, &request.get_ref().contract_id)
            .map(Response::new)
            .map_err(|e| self.refused(&peer.node_id, e))
    }

    async fn revoke_contract(
        &self,
        request: Request<proto::RevocationMsg>,
    ) -> Result<Response<proto::ContractAck>, Status> {
        let peer = self.caller(&request)?;
        self.cap(&peer.node_id, "revocation", request.get_ref().revocation_json.len(), MAX_REVOCATION_BYTES)?;
        contracts::receive_revocation(&self.ctx, &peer, request.into_inner())
            .map(Response::new)
            .map_err(|e| self.refused(&peer.node_id, e))
    }

    type PsiStream = ResponseStream<proto::Frame>;

    async fn psi(
        &self,
        request: Request<Streaming<proto::Frame>>,
    ) -> Result<Response<Self::PsiStream>, Status> {
        let peer = self.caller(&request)?;
        let slot = self.session_slot(&peer.node_id)?;
        let response = crate::run::psi::serve_session(self.ctx.clone(), peer, request.into_inner()).await?;
        Ok(hold_until_done(response, slot))
    }

    type SecAggStream = ResponseStream<proto::Frame>;

    async fn sec_agg(
        &self,
        request: Request<Streaming<proto::Frame>>,
    ) -> Result<Response<Self::SecAggStream>, Status> {
        let peer = self.caller(&request)?;
        let slot = self.session_slot(&peer.node_id)?;
        let response =
            crate::run::secagg::serve_session(self.ctx.clone(), peer, request.into_inner()).await?;
        Ok(hold_until_done(response, slot))
    }

    type LookupVectorStream = ResponseStream<proto::LookupVectorPart>;

    async fn lookup_vector(
        &self,
        request: Request<proto::LookupVectorRequest>,
    ) -> Result<Response<Self::LookupVectorStream>, Status> {
        let peer = self.caller(&request)?;
        crate::run::lookup::serve_vector(self.ctx.clone(), peer, request.into_inner()).await
    }

    type LookupStream = ResponseStream<proto::Frame>;

    async fn lookup(
        &self,
        request: Request<Streaming<proto::Frame>>,
    ) -> Result<Response<Self::LookupStream>, Status> {
        let peer = self.caller(&request)?;
        crate::run::lookup::serve_session(self.ctx.clone(), peer, request.into_inner()).await
    }

    type OverthresholdStream = ResponseStream<proto::Frame>;

    async fn overthreshold(
        &self,
        request: Request<Streaming<proto::Frame>>,
    ) -> Result<Response<Self::OverthresholdStream>, Status> {
        let peer = self.caller(&request)?;
        let slot = self.session_slot(&peer.node_id)?;
        let response =
            crate::run::overthreshold::serve_session(self.ctx.clone(), peer, request.into_inner()).await?;
        Ok(hold_until_done(response, slot))
    }

    type OverthresholdEvalStream = ResponseStream<proto::Frame>;

    async fn overthreshold_eval(
        &self,
        request: Request<Streaming<proto::Frame>>,
    ) -> Result<Response<Self::OverthresholdEvalStream>, Status> {
        let peer = self.caller(&request)?;
        let slot = self.session_slot(&peer.node_id)?;
        let response =
            crate::run::overthreshold::serve_evaluations(self.ctx.clone(), peer, request.into_inner())
                .await?;
        Ok(hold_until_done(response, slot))
    }

    async fn fetch_crl(
        &self,
        request: Request<proto::CrlRequest>,
    ) -> Result<Response<proto::CrlReply>, Status> {
        let peer = self.caller(&request)?;
        crate::revocation::served_crl(&self.ctx)
            .map(|crl_der| Response::new(proto::CrlReply { crl_der }))
            .map_err(|e| self.refused(&peer.node_id, e))
    }

    async fn witness_head(
        &self,
        request: Request<proto::AuditHead>,
    ) -> Result<Response<proto::WitnessAck>, Status> {
        let peer = self.caller(&request)?;
        self.cap(&peer.node_id, "audit head", request.get_ref().head_json.len(), 4096)?;
        crate::witness::receive_head(&self.ctx, &peer, &request.get_ref().head_json)
            .map(|outcome| Response::new(proto::WitnessAck { outcome: outcome.to_string() }))
            .map_err(|e| self.refused(&peer.node_id, e))
    }

    async fn fetch_witnessed_heads(
        &self,
        request: Request<proto::WitnessedHeadsRequest>,
    ) -> Result<Response<proto::AuditHeads>, Status> {
        let peer = self.caller(&request)?;
        let heads =
            self.ctx.store.witnessed_heads(&peer.node_id).map_err(|e| self.refused(&peer.node_id, e))?;
        let heads_json = heads.iter().filter_map(|h| serde_json::to_string(h).ok()).collect();
        Ok(Response::new(proto::AuditHeads { heads_json }))
    }
}
