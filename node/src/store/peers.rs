//! Identity keys pinned for peers that the configuration lists without one
//! (`peer_keys` tree): the first key a peer proves is kept, and a later connection
//! proving another key under the same name is refused. Keys the configuration names
//! take precedence and are never written here.

use xmcredit_crypto::sign::IdentityPublicKey;
use xmcredit_crypto::NodeId;

use super::Store;
use crate::NodeError;

/// What [`Store::pin_peer_key`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// First sight: the key is now pinned.
    New,
    /// The key matches the pinned one.
    Same,
    /// Another key is pinned for this peer.
    Other(IdentityPublicKey),
}

impl Store {
    /// Pins `key` for `peer` unless another key is pinned already.
    pub fn pin_peer_key(&self, peer: &NodeId, key: &IdentityPublicKey) -> Result<Pin, NodeError> {
        let swapped = self
            .peer_keys
            .compare_and_swap(peer.as_str(), None as Option<&[u8]>, Some(key.to_bytes().as_slice()))
            .map_err(|e| NodeError::store("pin peer key", e))?;
        match swapped {
            Ok(()) => {
                self.flush()?;
                Ok(Pin::New)
            }
            Err(existing) => {
                let current = existing.current.unwrap_or_default();
                let pinned = IdentityPublicKey::from_bytes(&current)
                    .map_err(|e| NodeError::Corrupt { what: "pinned peer key", reason: e.to_string() })?;
                Ok(if &pinned == key { Pin::Same } else { Pin::Other(pinned) })
            }
        }
    }

    /// The key pinned on first sight for `peer`, if any.
    pub fn pinned_peer_key(&self, peer: &NodeId) -> Result<Option<IdentityPublicKey>, NodeError> {
        let Some(bytes) =
            self.peer_keys.get(peer.as_str()).map_err(|e| NodeError::store("read peer key", e))?
        else {
            return Ok(None);
        };
        IdentityPublicKey::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| NodeError::Corrupt { what: "pinned peer key", reason: e.to_string() })
    }
}
