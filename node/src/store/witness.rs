//! Audit chain heads this node holds as a witness for other nodes (`witnessed_heads`
//! tree): `node ‖ 0x00 ‖ seq u64` → JSON [`SignedHead`]. A head is kept as first
//! received; a second, different head for the same (node, seq) is refused and
//! reported, since only a rewritten chain produces one. At most
//! [`HEADS_KEPT_PER_NODE`] heads are kept per node (the oldest go first).

use serde::{Deserialize, Serialize};
use xmcredit_crypto::sign::{IdentityKey, IdentityPublicKey, Signature};
use xmcredit_crypto::NodeId;

use super::{from_json, join, to_json, Store};
use crate::NodeError;

/// Heads kept per witnessed node.
pub const HEADS_KEPT_PER_NODE: usize = 512;

/// A node's statement "my audit chain has `seq + 1` records and the last one hashes to
/// `hash`, at `time`", signed with its identity key. Signed bytes:
/// `"xmcredit audit head v1\n" ‖ I2OSP(len(node), 1) ‖ node ‖ I2OSP(seq, 8) ‖ hash (32)
/// ‖ I2OSP(time, 8)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    pub node: NodeId,
    pub seq: u64,
    /// Hex of the record hash.
    pub hash: String,
    pub time: u64,
    /// Hex of the Ed25519 signature.
    pub signature: String,
}

fn head_message(node: &NodeId, seq: u64, hash: &[u8; 32], time: u64) -> Vec<u8> {
    let mut message = b"xmcredit audit head v1\n".to_vec();
    message.push(node.as_str().len() as u8);
    message.extend_from_slice(node.as_str().as_bytes());
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(hash);
    message.extend_from_slice(&time.to_be_bytes());
    message
}

impl SignedHead {
    pub fn sign(key: &IdentityKey, node: &NodeId, seq: u64, hash: &[u8; 32], time: u64) -> Self {
        let signature = key.sign(&head_message(node, seq, hash, time));
        Self { node: node.clone(), seq, hash: hex::encode(hash), time, signature: signature.to_string() }
    }

    pub fn hash_bytes(&self) -> Result<[u8; 32], String> {
        let bytes = hex::decode(&self.hash).map_err(|e| format!("head hash: {e}"))?;
        bytes.try_into().map_err(|_| "head hash: not 32 bytes".to_string())
    }

    /// Checks the signature under `key`.
    pub fn verify(&self, key: &IdentityPublicKey) -> Result<(), String> {
        let hash = self.hash_bytes()?;
        let signature = Signature::from_hex(&self.signature).map_err(|e| e.to_string())?;
        key.verify(&head_message(&self.node, self.seq, &hash, self.time), &signature)
            .map_err(|_| format!("head {} of {} is not signed by {key}", self.seq, self.node))
    }
}

/// What happened to a head a peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Witnessed {
    Stored,
    AlreadyHeld,
    /// A different head for the same sequence number is held: the chain was rewritten.
    Conflict(SignedHead),
}

impl Store {
    /// Stores a verified head from `head.node`.
    pub fn witness_head(&self, head: &SignedHead) -> Result<Witnessed, NodeError> {
        let key = join(&[head.node.as_str().as_bytes(), &head.seq.to_be_bytes()]);
        let value = to_json(head)?;
        let swapped = self
            .witnessed_heads
            .compare_and_swap(&key, None as Option<&[u8]>, Some(value))
            .map_err(|e| NodeError::store("witness head", e))?;
        let outcome = match swapped {
            Ok(()) => Witnessed::Stored,
            Err(existing) => {
                let held: SignedHead = from_json(&existing.current.unwrap_or_default(), "witnessed head")?;
                // An idle node re-sends the same head with a new time: not a conflict.
                if held.hash == head.hash {
                    Witnessed::AlreadyHeld
                } else {
                    Witnessed::Conflict(held)
                }
            }
        };
        if outcome == Witnessed::Stored {
            self.prune_heads(&head.node)?;
            self.flush()?;
        }
        Ok(outcome)
    }

    fn prune_heads(&self, node: &NodeId) -> Result<(), NodeError> {
        let prefix = join(&[node.as_str().as_bytes(), b""]);
        let keys: Vec<sled::IVec> = self
            .witnessed_heads
            .scan_prefix(&prefix)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| NodeError::store("scan witnessed heads", e))?;
        for key in keys.iter().take(keys.len().saturating_sub(HEADS_KEPT_PER_NODE)) {
            self.witnessed_heads.remove(key).map_err(|e| NodeError::store("prune witnessed heads", e))?;
        }
        Ok(())
    }

    /// Every head held for `node`, oldest first.
    pub fn witnessed_heads(&self, node: &NodeId) -> Result<Vec<SignedHead>, NodeError> {
        let prefix = join(&[node.as_str().as_bytes(), b""]);
        self.witnessed_heads
            .scan_prefix(&prefix)
            .values()
            .map(|v| {
                from_json(&v.map_err(|e| NodeError::store("scan witnessed heads", e))?, "witnessed head")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(key: &IdentityKey, node: &NodeId, seq: u64, hash: u8, time: u64) -> SignedHead {
        SignedHead::sign(key, node, seq, &[hash; 32], time)
    }

    #[test]
    fn a_witness_keeps_the_first_head_refuses_a_rewrite_and_bounds_its_window() -> Result<(), NodeError> {
        let dir = tempfile::tempdir().map_err(|e| NodeError::Internal(e.to_string()))?;
        let store = Store::open(dir.path())?;
        let key = IdentityKey::from_seed(&[5; 32])?;
        let node = NodeId::new("bank-a")?;
        let first = head(&key, &node, 7, 0xAA, 100);
        first.verify(&key.public_key()).map_err(NodeError::Internal)?;
        assert_eq!(store.witness_head(&first)?, Witnessed::Stored);
        // An idle node re-sends the same head later: not a conflict.
        assert_eq!(store.witness_head(&head(&key, &node, 7, 0xAA, 400))?, Witnessed::AlreadyHeld);
        // A rewritten chain gives another hash for the same record: refused, first kept.
        assert_eq!(store.witness_head(&head(&key, &node, 7, 0xBB, 500))?, Witnessed::Conflict(first.clone()));
        assert_eq!(store.witnessed_heads(&node)?, vec![first]);
        // A head signed by another key does not verify under the node's.
        let other = IdentityKey::from_seed(&[6; 32])?;
        assert!(head(&other, &node, 8, 0xCC, 600).verify(&key.public_key()).is_err());
        // The window: the oldest go once more than HEADS_KEPT_PER_NODE are held.
        for seq in 8..(8 + HEADS_KEPT_PER_NODE as u64) {
            store.witness_head(&head(&key, &node, seq, 0x11, 700))?;
        }
        let held = store.witnessed_heads(&node)?;
        assert_eq!(held.len(), HEADS_KEPT_PER_NODE);
        assert_eq!(held.first().map(|h| h.seq), Some(8), "record 7's head was the oldest");
        Ok(())
    }
}
