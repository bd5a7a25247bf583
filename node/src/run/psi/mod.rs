//! PSI between two nodes (design.md computation 1): the client's job (`run psi`,
//! [`client`]) and the server's session handler ([`server`]), both driving
//! `xmcredit_protocol::psi` over one bidirectional gRPC stream of frames.
//!
//! The server decides everything that could leak from its side before answering: the
//! contract (verified now, this epoch), the caller's role, the output form, the session
//! id never seen before (replay), the client's minimum set size, its own size limit and
//! the client's daily quota.

mod client;
mod server;

pub use client::run_client;
pub use server::{codes_digest, serve_session, SESSION_FRAMES_BUFFERED};

use std::collections::HashMap;
use std::sync::Arc;

use xmcredit_contracts::{Computation, CountNoise, OutputForm, PsiOutput, VerifiedContract};
use xmcredit_crypto::{ContractId, Epoch, NodeId};
use xmcredit_protocol::psi::{OutgoingMessage, PsiOutputForm, ServerSet};

use crate::proto;
use crate::NodeError;

/// A session's deadline, in round timeouts.
pub(super) const SESSION_DEADLINE_ROUNDS: u32 = 30;

/// Elements per chunk on the wire: 8192 × 32 bytes = 256 KiB frames.
pub(super) const CHUNK_SIZE: u32 = 8192;

/// The cache key of an evaluated server set: (contract, epoch, dataset name, version).
pub type ServerSetKey = (ContractId, Epoch, String, u64);
/// An evaluated server set in the node's cache (`NodeContext::psi_sets`): the set
/// only; rows are read from the store when a session needs them.
#[derive(Debug, Clone)]
pub struct CachedServerSet {
    pub set: Arc<ServerSet>,
    /// Last use, for eviction under the cache's byte budget (least recently used first).
    pub used: std::time::Instant,
}

/// Puts `set` in `cache` within `budget` bytes: one entry per contract (a new epoch or
/// dataset version replaces the old), least recently used entries evicted to make
/// room, and a set larger than the whole budget not kept at all (each session then
/// evaluates it again). Returns whether it was kept.
pub fn admit_server_set(
    cache: &mut HashMap<ServerSetKey, CachedServerSet>,
    key: ServerSetKey,
    set: Arc<ServerSet>,
    budget: usize,
) -> bool {
    cache.retain(|(contract, ..), _| contract != &key.0);
    let bytes = set.heap_bytes();
    if bytes > budget {
        tracing::info!(
            bytes,
            budget,
            "psi server set larger than the cache budget (store.psi_cache_mb): not cached"
        );
        return false;
    }
    let mut used: usize = cache.values().map(|c| c.set.heap_bytes()).sum();
    while used + bytes > budget {
        let Some(oldest) = cache.iter().min_by_key(|(_, c)| c.used).map(|(k, _)| k.clone()) else { break };
        if let Some(evicted) = cache.remove(&oldest) {
            used -= evicted.set.heap_bytes();
            tracing::info!(contract = %oldest.0, bytes = evicted.set.heap_bytes(), "evicted a cached PSI set (budget)");
        }
    }
    cache.insert(key, CachedServerSet { set, used: std::time::Instant::now() });
    true
}

pub(super) fn form_of(output: PsiOutput) -> PsiOutputForm {
    match output {
        PsiOutput::Intersection => PsiOutputForm::Intersection,
        PsiOutput::Cardinality => PsiOutputForm::Cardinality,
        PsiOutput::Both => PsiOutputForm::Both,
        PsiOutput::Labels => PsiOutputForm::Labels,
    }
}

/// The output form the contract grants `node` as a receiver.
pub(super) fn receiver_form(output: PsiOutput) -> OutputForm {
    match output {
        PsiOutput::Cardinality => OutputForm::Cardinality,
        PsiOutput::Labels => OutputForm::Labels,
        PsiOutput::Intersection | PsiOutput::Both => OutputForm::Intersection,
    }
}

/// What a PSI contract fixes: the output, the label columns, and the count noise.
pub(super) struct PsiParameters {
    pub output: PsiOutput,
    pub label_columns: Vec<String>,
    pub noise: Option<CountNoise>,
}

pub(super) fn psi_parameters(verified: &VerifiedContract) -> Result<PsiParameters, NodeError> {
    match &verified.contract().computation {
        Computation::Psi { output, label_columns, noise } => {
            Ok(PsiParameters { output: *output, label_columns: label_columns.clone(), noise: *noise })
        }
        other => {
            Err(NodeError::Refused(format!("contract {} is for {}, not psi", verified.id(), other.kind())))
        }
    }
}

pub(super) fn min_set_size(verified: &VerifiedContract, node: &NodeId) -> u64 {
    verified.contract().limits.min_set_size.get(node).copied().unwrap_or(1).max(1)
}

pub(super) fn frame(message: &OutgoingMessage) -> proto::Frame {
    proto::Frame { payload: message.bytes.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmcredit_crypto::oprf::OprfKey;
    use xmcredit_protocol::psi::{DatasetVersion, ServerSetId};

    fn set(contract: &str, elements: usize) -> (ServerSetKey, Arc<ServerSet>) {
        let contract = ContractId::new(contract).unwrap_or_else(|e| panic!("{e}"));
        let id = ServerSetId { contract: contract.clone(), epoch: Epoch(1), dataset: DatasetVersion(1) };
        let items: Vec<Vec<u8>> = (0..elements).map(|i| format!("{i:08}").into_bytes()).collect();
        let key = OprfKey::random(&mut rand::rngs::OsRng);
        let set = ServerSet::build(&key, id, &items).unwrap_or_else(|e| panic!("{e}"));
        ((contract, Epoch(1), "d".into(), 1), Arc::new(set))
    }

    #[test]
    fn the_cache_keeps_to_its_byte_budget_evicting_the_least_recently_used() {
        let mut cache = HashMap::new();
        // 100 elements = 3,200 bytes each; room for two.
        let budget = 7_000;
        let (a, set_a) = set("c.a", 100);
        let (b, set_b) = set("c.b", 100);
        let (c, set_c) = set("c.c", 100);
        assert!(admit_server_set(&mut cache, a.clone(), set_a, budget));
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(admit_server_set(&mut cache, b.clone(), set_b, budget));
        // a is used again: b is now the least recently used.
        if let Some(entry) = cache.get_mut(&a) {
            entry.used = std::time::Instant::now();
        }
        assert!(admit_server_set(&mut cache, c.clone(), set_c, budget));
        assert!(cache.contains_key(&a) && cache.contains_key(&c) && !cache.contains_key(&b));
        assert!(cache.values().map(|e| e.set.heap_bytes()).sum::<usize>() <= budget);
        // A set over the whole budget is not kept, and evicts nothing.
        let (big, set_big) = set("c.big", 300);
        assert!(!admit_server_set(&mut cache, big.clone(), set_big, budget));
        assert_eq!(cache.len(), 2);
        // A new version for a contract replaces its old entry: never two per contract.
        let (mut a2, set_a2) = set("c.a", 10);
        a2.3 = 2;
        assert!(admit_server_set(&mut cache, a2.clone(), set_a2, budget));
        assert!(cache.contains_key(&a2) && !cache.contains_key(&a));
    }
}
