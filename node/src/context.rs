//! What every handler and job shares: configuration, store, secrets, TLS client
//! configuration and caches. Built once by `serve`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::transport::Channel;
use xmcredit_contracts::audit::{AuditEntry, Outcome};
use xmcredit_contracts::ComputationKind;
use xmcredit_crypto::{ContractId, NodeId};

use crate::config::NodeConfig;
use crate::identity::NodeSecrets;
use crate::store::{AuditLog, Store};
use crate::NodeError;

/// Shared state of a running node.
pub struct NodeContext {
    pub config: NodeConfig,
    pub store: Store,
    pub secrets: NodeSecrets,
    /// The client TLS configuration, replaced when `serve` reloads certificates and CRLs
    /// (SIGHUP); read it through [`NodeContext::client_tls`].
    pub tls_client: std::sync::RwLock<Arc<rustls::ClientConfig>>,
    /// The PSI server's evaluated sets with the rows they were built from, per
    /// (contract, epoch, dataset version); one entry per contract.
    pub psi_sets: Mutex<HashMap<crate::run::psi::ServerSetKey, crate::run::psi::CachedServerSet>>,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext").field("node_id", &self.config.node_id).finish_non_exhaustive()
    }
}

impl NodeContext {
    pub fn node_id(&self) -> &NodeId {
        &self.config.node_id
    }

    /// Wall-clock unix seconds; `XMCREDIT_TIME_OFFSET_SECS` shifts it (tests of expiry).
    pub fn now_unix(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let offset: i64 =
            std::env::var("XMCREDIT_TIME_OFFSET_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        now.saturating_add_signed(offset)
    }

    /// The current client TLS configuration.
    pub fn client_tls(&self) -> Arc<rustls::ClientConfig> {
        match self.tls_client.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A gRPC channel to a configured peer over mutual TLS, checking that the peer's
    /// certificate names `peer`.
    pub async fn channel(&self, peer: &NodeId) -> Result<Channel, NodeError> {
        let config = self.config.peer(peer).ok_or_else(|| NodeError::UnknownPeer(peer.clone()))?;
        let channel = crate::transport::connect(
            &config.address,
            peer,
            self.client_tls(),
            self.config.timeouts.connect(),
        )
        .await?;
        Ok(channel)
    }

    /// Appends an audit record, logging (not failing) if the store refuses.
    pub fn audit(
        &self,
        contract: Option<&ContractId>,
        computation: Option<ComputationKind>,
        parties: Vec<NodeId>,
        set_sizes: std::collections::BTreeMap<NodeId, u64>,
        outcome: Outcome,
        transcript_digest: Option<[u8; 32]>,
    ) {
        let entry = AuditEntry {
            time: self.now_unix(),
            node: self.node_id().clone(),
            contract: contract.cloned(),
            computation,
            parties,
            set_sizes,
            outcome,
            transcript_digest,
        };
        if let Err(e) = self.store.audit(entry) {
            tracing::error!(error = %e, "audit append failed");
        }
    }

    /// Audits a refusal and returns the error to send back.
    pub fn refuse(
        &self,
        contract: Option<&ContractId>,
        peer: Option<&NodeId>,
        error: NodeError,
    ) -> NodeError {
        tracing::warn!(contract = ?contract.map(ContractId::as_str), peer = ?peer.map(NodeId::as_str), reason = %error, "refused");
        self.audit(
            contract,
            None,
            peer.into_iter().cloned().collect(),
            Default::default(),
            Outcome::Refused { reason: error.to_string() },
            None,
        );
        error
    }
}
