//! What every handler and job shares: configuration, store, secrets, TLS client
//! configuration and caches. Built once by `serve`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::transport::Channel;
use xmcredit_contracts::audit::{AuditEntry, AuditEvent, Outcome};
use xmcredit_contracts::ComputationKind;
use xmcredit_crypto::{ContractId, NodeId};

use xmcredit_crypto::sign::IdentityPublicKey;

use crate::config::NodeConfig;
use crate::identity::NodeSecrets;
use crate::store::Pin;
use crate::store::{AuditLog, Store};
use crate::transport::{ClientAuth, LiveConnections, LocalIdentity, PeerIdentity};
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
    /// The lookup provider's padded vectors with their universe, per (contract, epoch,
    /// dataset version, universe digest); one entry per contract.
    /// The last lookup universe this node downloaded as a querier (public codes), so a
    /// repeat download in the epoch moves w/8 bytes per entry only.
    pub lookup_universe: Mutex<Option<Arc<xmcredit_protocol::lookup::Universe>>>,
    /// The local registry's universe, with the dataset version it was read from (the
    /// coordinator serves it with every download).
    pub lookup_registry: Mutex<Option<(u64, Arc<xmcredit_protocol::lookup::Universe>)>>,
    pub lookup_vectors: Mutex<HashMap<crate::run::lookup::VectorKey, crate::run::lookup::CachedVector>>,
    /// Every authenticated connection, served or dialled, so a new CRL can close those
    /// of a revoked peer.
    pub live: Arc<LiveConnections>,
    /// Refusals already audited this minute, by (peer, kind): the rest are counted into
    /// the next record instead of one record each.
    pub refusal_window: Mutex<RefusalWindow>,
    /// SHA-256 of the CRL file the TLS configurations were last built with.
    pub crl_digest: Mutex<Option<[u8; 32]>>,
    /// Signalled when a job ends, so the audit head reaches the witnesses right away.
    pub head_due: tokio::sync::Notify,
    /// What each running job of this process reported last, by job id (the console's
    /// Running table); an entry is added when a driver attaches its progress sender and
    /// removed when the job finishes. Shared with the senders, which hold no context.
    pub job_progress: ProgressMap,
}

/// What a running job reported last: its phase and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProgress {
    pub phase: String,
    pub done: u64,
    pub total: u64,
}

/// Running jobs' last progress, by job id.
pub type ProgressMap = Arc<Mutex<HashMap<u64, JobProgress>>>;

/// Coalesces audit records of repeated refusals (issue 9: a flood of bad calls must not
/// flood the audit log). Keyed by (peer, kind of refusal), one record per minute; the
/// next record says how many were folded into it.
#[derive(Debug, Default)]
pub struct RefusalWindow {
    seen: HashMap<(String, String), (u64, u64)>,
}

impl RefusalWindow {
    /// Counts of repeats suppressed in minutes before `minute`, taken out of the window
    /// so a summary record can be written for them.
    pub fn take_finished(&mut self, minute: u64) -> Vec<(String, String, u64)> {
        let mut finished = Vec::new();
        for ((peer, kind), (last, suppressed)) in self.seen.iter_mut() {
            if *last < minute && *suppressed > 0 {
                finished.push((peer.clone(), kind.clone(), *suppressed));
                *suppressed = 0;
            }
        }
        finished
    }

    /// Whether a refusal at `minute` should be audited, and how many earlier ones of the
    /// same kind were suppressed since the last record.
    fn admit(&mut self, peer: &str, kind: &str, minute: u64) -> Option<u64> {
        if self.seen.len() > 10_000 {
            self.seen.retain(|_, (last, _)| *last + 1 >= minute);
            if self.seen.len() > 10_000 {
                // Still full within one minute (many names at once): start over rather
                // than scan on every refusal; the cost is a few more records.
                self.seen.clear();
            }
        }
        let entry = self.seen.entry((peer.to_string(), kind.to_string())).or_insert((u64::MAX, 0));
        if entry.0 == minute {
            entry.1 += 1;
            None
        } else {
            let suppressed = if entry.0 == u64::MAX { 0 } else { entry.1 };
            *entry = (minute, 0);
            Some(suppressed)
        }
    }
}

/// Longest refusal reason written to the audit log or the text log: a peer controls
/// much of a reason (ids, names), and it must not grow the store (issue 9).
pub const MAX_REASON_CHARS: usize = 512;

/// `text` cut to [`MAX_REASON_CHARS`] characters, saying how much was cut.
pub fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_REASON_CHARS {
        return text.to_string();
    }
    let head: String = text.chars().take(MAX_REASON_CHARS).collect();
    format!("{head}… ({} bytes in all)", text.len())
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext").field("node_id", &self.config.node_id).finish_non_exhaustive()
    }
}

impl NodeContext {
    /// A copy of the running jobs' last progress (a poisoned lock shows none: the page
    /// must render whatever a panicked job left behind).
    pub fn job_progress(&self) -> HashMap<u64, JobProgress> {
        self.job_progress.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Drops a finished job's progress.
    pub fn forget_progress(&self, job_id: u64) {
        if let Ok(mut map) = self.job_progress.lock() {
            map.remove(&job_id);
        }
    }

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

    /// This node's transport identity: its node id and identity key.
    pub fn local_identity(&self) -> LocalIdentity {
        LocalIdentity { node_id: self.node_id().clone(), key: self.secrets.identity.clone() }
    }

    /// The key pinned for `peer` outside any one contract: the configuration's
    /// `identity_key`, else the key a held contract names for it, else the key pinned on
    /// first sight.
    pub fn pinned_key(&self, peer: &NodeId) -> Result<Option<(IdentityPublicKey, &'static str)>, NodeError> {
        if let Some(key) = self.config.peer(peer).and_then(|p| p.identity_key()) {
            return Ok(Some((key, "this node's configuration")));
        }
        if let Some(key) = self.contract_key_of(peer)? {
            return Ok(Some((key, "a contract this node holds")));
        }
        Ok(self.store.pinned_peer_key(peer)?.map(|key| (key, "the key first seen for it")))
    }

    /// Checks a caller outside any contract: a configured peer whose proven key is the
    /// pinned one (pinning it on first sight when the configuration names none).
    pub fn check_caller(&self, caller: &PeerIdentity) -> Result<(), NodeError> {
        let peer = &caller.node_id;
        let Some(config) = self.config.peer(peer) else {
            return Err(NodeError::UnknownPeer(peer.clone()));
        };
        let mismatch = |pinned: IdentityPublicKey, pinned_by: &str| NodeError::IdentityMismatch {
            peer: peer.clone(),
            proven: caller.identity_key.to_string(),
            pinned: pinned.to_string(),
            pinned_by: pinned_by.to_string(),
        };
        if let Some(pinned) = config.identity_key() {
            return if pinned == caller.identity_key {
                Ok(())
            } else {
                Err(mismatch(pinned, "this node's configuration"))
            };
        }
        // A key a contract this node holds pins for the peer beats first sight: a
        // certificate minted for the name cannot win the race to be pinned.
        if let Some(pinned) = self.contract_key_of(peer)? {
            return if pinned == caller.identity_key {
                Ok(())
            } else {
                Err(mismatch(pinned, "a contract this node holds"))
            };
        }
        match self.store.pin_peer_key(peer, &caller.identity_key)? {
            Pin::New => {
                tracing::warn!(%peer, key = %caller.identity_key, "pinned a peer's identity key on first sight; name it in [[peers]] identity_key to pin it explicitly");
                Ok(())
            }
            Pin::Same => Ok(()),
            Pin::Other(pinned) => Err(mismatch(pinned, "the key first seen for it")),
        }
    }

    /// The identity key the contracts this node signed (and that are not revoked) pin for
    /// `peer`. A contract someone proposed but this node never signed pins nothing: a
    /// party cannot re-key a third one by proposing.
    fn contract_key_of(&self, peer: &NodeId) -> Result<Option<IdentityPublicKey>, NodeError> {
        let me = self.node_id();
        Ok(self.store.contracts()?.iter().find_map(|stored| {
            let signed = stored.signed.signatures().iter().any(|(n, _)| n == me);
            (signed && stored.revocations.is_empty())
                .then(|| stored.signed.contract().party(peer).map(|p| p.public_key))
                .flatten()
        }))
    }

    /// Checks that a caller proved the key a contract pins for it.
    pub fn check_contract_key(
        &self,
        caller: &PeerIdentity,
        contract: &xmcredit_contracts::Contract,
    ) -> Result<(), NodeError> {
        let pinned = contract
            .parties
            .iter()
            .find(|p| p.node == caller.node_id)
            .map(|p| p.public_key)
            .ok_or_else(|| NodeError::NotFound { what: "contract", id: contract.id.to_string() })?;
        if pinned != caller.identity_key {
            return Err(NodeError::IdentityMismatch {
                peer: caller.node_id.clone(),
                proven: caller.identity_key.to_string(),
                pinned: pinned.to_string(),
                pinned_by: format!("contract {}", contract.id),
            });
        }
        Ok(())
    }

    /// [`Self::check_contract_key`] for the stored contract `id`; an unknown contract and
    /// one the caller is not a party to get the same answer.
    pub fn check_contract_key_for(&self, caller: &PeerIdentity, id: &str) -> Result<(), NodeError> {
        let stored = self
            .store
            .contract(id)?
            .filter(|stored| stored.signed.contract().party(&caller.node_id).is_some())
            .ok_or_else(|| NodeError::NotFound { what: "contract", id: bounded(id) })?;
        self.check_contract_key(caller, stored.signed.contract())
    }

    /// A gRPC channel to a configured peer over mutual TLS, checking that the peer's
    /// certificate names `peer` and that it proves the key pinned for it
    /// ([`Self::pinned_key`]; with no pin at all, any key it proves).
    pub async fn channel(&self, peer: &NodeId) -> Result<Channel, NodeError> {
        let pinned = self.pinned_key(peer)?.map(|(key, _)| key);
        let channel = self.channel_expecting(peer, pinned).await?;
        Ok(channel)
    }

    /// A gRPC channel to `peer` that must prove the key contract `id` pins for it.
    pub async fn channel_for_contract(&self, peer: &NodeId, id: &str) -> Result<Channel, NodeError> {
        let stored = self.store.require_contract(id)?;
        let key = stored
            .signed
            .contract()
            .party(peer)
            .map(|p| p.public_key)
            .ok_or_else(|| NodeError::Refused(format!("{peer} is not a party to contract {id}")))?;
        self.channel_expecting(peer, Some(key)).await
    }

    /// A gRPC channel to `peer` whose server must prove `expected` (a contract's key).
    pub async fn channel_expecting(
        &self,
        peer: &NodeId,
        expected: Option<IdentityPublicKey>,
    ) -> Result<Channel, NodeError> {
        let config = self.config.peer(peer).ok_or_else(|| NodeError::UnknownPeer(peer.clone()))?;
        let auth = ClientAuth {
            tls: self.client_tls(),
            local: self.local_identity(),
            expected_key: expected,
            live: Some(self.live.clone()),
        };
        let channel =
            crate::transport::connect(&config.address, peer, auth, self.config.timeouts.connect()).await?;
        Ok(channel)
    }

    /// Drops cached PSI server sets (evaluated points and rows) of contracts that are no
    /// longer active here: revoked, expired, or gone (issue 12: the cache must not keep
    /// what no contract may use).
    pub fn evict_inactive_psi_sets(&self) {
        let now = self.now_unix();
        let Ok(mut cache) = self.psi_sets.lock() else { return };
        let before = cache.len();
        cache.retain(|(contract, ..), _| {
            self.store
                .contract(contract.as_str())
                .ok()
                .flatten()
                .is_some_and(|stored| matches!(stored.state(now), crate::store::ContractState::Active))
        });
        if cache.len() < before {
            tracing::info!(evicted = before - cache.len(), "evicted cached PSI sets of inactive contracts");
        }
    }

    /// Caches an evaluated PSI server set within the byte budget (`store.psi_cache_mb`):
    /// one entry per contract (a new epoch or dataset version replaces the old), least
    /// recently used entries evicted to make room, and a set larger than the whole
    /// budget not cached at all (each session then evaluates it again).
    pub fn cache_psi_set(
        &self,
        key: crate::run::psi::ServerSetKey,
        set: Arc<xmcredit_protocol::psi::ServerSet>,
    ) {
        let budget =
            usize::try_from(self.config.store.psi_cache_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        let Ok(mut cache) = self.psi_sets.lock() else { return };
        crate::run::psi::admit_server_set(&mut cache, key, set, budget);
    }

    /// Bytes held by the PSI server set cache.
    pub fn psi_cache_bytes(&self) -> u64 {
        self.psi_sets.lock().map(|c| c.values().map(|c| c.set.heap_bytes() as u64).sum()).unwrap_or(0)
    }

    /// Appends an audit record saying what happened (`event`), logging (not failing)
    /// if the store refuses.
    #[allow(clippy::too_many_arguments)] // one per record field; a struct would only rename them
    pub fn audit(
        &self,
        event: AuditEvent,
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
            event: Some(event),
        };
        if let Err(e) = self.store.audit(entry) {
            tracing::error!(error = %e, "audit append failed");
        }
    }

    /// Writes one summary record per (peer, kind) whose repeated refusals were
    /// suppressed in a minute that has ended (called every minute by `serve`), or in any
    /// minute when `all` (at shutdown).
    pub fn audit_suppressed_refusals(&self, all: bool) {
        let minute = self.now_unix() / 60 + u64::from(all);
        let finished = match self.refusal_window.lock() {
            Ok(mut window) => window.take_finished(minute),
            Err(_) => return,
        };
        for (peer, kind, count) in finished {
            let peers = NodeId::new(peer.clone()).ok().into_iter().collect();
            self.audit(
                AuditEvent::RefusalsCoalesced { peer: peer.clone(), error_kind: kind.clone(), count },
                None,
                None,
                peers,
                Default::default(),
                Outcome::Refused {
                    reason: format!(
                        "{count} more refusals of kind {kind} from {peer} (counted, not recorded one by one)"
                    ),
                },
                None,
            );
        }
    }

    /// Audits a refusal and returns the error to send back.
    pub fn refuse(
        &self,
        contract: Option<&ContractId>,
        peer: Option<&NodeId>,
        error: NodeError,
    ) -> NodeError {
        let reason = bounded(&error.to_string());
        let kind = refusal_kind(&error);
        let kind = kind.as_str();
        crate::console::metrics::METRICS.refused(kind);
        let minute = self.now_unix() / 60;
        let peer_name = peer.map(NodeId::as_str).unwrap_or("-");
        let admitted = match self.refusal_window.lock() {
            Ok(mut window) => window.admit(peer_name, kind, minute),
            Err(_) => Some(0),
        };
        let Some(suppressed) = admitted else {
            tracing::debug!(
                peer = peer_name,
                kind,
                "refused again (counted into this minute's audit record)"
            );
            return error;
        };
        tracing::warn!(contract = contract.map(ContractId::as_str).unwrap_or("-"), peer = peer_name, %reason, "refused");
        let reason = if suppressed > 0 {
            format!("{reason} (and {suppressed} more refusals of this kind from {peer_name} in the previous minute)")
        } else {
            reason
        };
        self.audit(
            AuditEvent::Refusal { error_kind: kind.to_string() },
            contract,
            None,
            peer.into_iter().cloned().collect(),
            Default::default(),
            Outcome::Refused { reason },
            None,
        );
        error
    }
}

/// The kind of a refusal, for coalescing: the error variant (and the contract or
/// protocol error's own variant), not its details.
fn refusal_kind(error: &NodeError) -> String {
    let debug = format!("{error:?}");
    debug.split([' ', '{']).next().unwrap_or_default().chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_refusals_are_coalesced_per_minute_and_summarized() {
        let mut window = RefusalWindow::default();
        assert_eq!(window.admit("bank-c", "UnknownPeer", 10), Some(0));
        for _ in 0..5 {
            assert_eq!(window.admit("bank-c", "UnknownPeer", 10), None, "folded into the minute's record");
        }
        // Another kind or another peer gets its own record.
        assert_eq!(window.admit("bank-c", "Replay", 10), Some(0));
        assert_eq!(window.admit("bank-d", "UnknownPeer", 10), Some(0));
        // Nothing is summarized while the minute lasts; after it, the 5 are.
        assert!(window.take_finished(10).is_empty());
        assert_eq!(window.take_finished(11), vec![("bank-c".to_string(), "UnknownPeer".to_string(), 5)]);
        assert!(window.take_finished(11).is_empty(), "summarized once");
        // The next minute starts a fresh record.
        assert_eq!(window.admit("bank-c", "UnknownPeer", 11), Some(0));
    }

    #[test]
    fn reasons_are_bounded() {
        let long = "x".repeat(100_000);
        let cut = bounded(&long);
        assert!(cut.chars().count() < MAX_REASON_CHARS + 40, "{}", cut.len());
        assert!(cut.ends_with("(100000 bytes in all)"));
        assert_eq!(bounded("short"), "short");
    }
}
