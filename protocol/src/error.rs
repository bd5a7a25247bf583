use thiserror::Error;
use xmcredit_crypto::group::BatchElementError;
use xmcredit_crypto::{CryptoError, NodeId};

/// Why a protocol role refused a message or could not go on. Variants that describe what
/// a peer did wrong are kept apart from local faults so the node can log and answer
/// with the right status.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    // ---- Common to every protocol -------------------------------------------------
    /// A message bound to another contract, epoch or session (a replay or a mix-up).
    #[error("message bound to {field} {got}, this run is {expected}")]
    WrongBinding { field: &'static str, expected: String, got: String },
    /// A message from a node that is not the peer this state expects.
    #[error("message from {got}, expected {expected}")]
    UnexpectedSender { expected: String, got: NodeId },
    /// A message that does not fit the state the role is in (out of order or repeated).
    #[error("unexpected message {got} while {state}")]
    UnexpectedMessage { state: &'static str, got: &'static str },
    /// A peer's group element failed the checked decoder.
    #[error("invalid element from peer: {0}")]
    InvalidElement(#[from] BatchElementError),
    /// A cryptographic operation failed on a peer's data.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A message field with the wrong length or shape.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// A set smaller than the contract allows, refused by the party that would leak.
    #[error("{whose} set has {got} elements, the contract requires at least {min}")]
    SetTooSmall { whose: &'static str, got: u64, min: u64 },
    /// A set larger than the contract or the node allows.
    #[error("{whose} set has {got} elements, the limit is {max}")]
    SetTooLarge { whose: &'static str, got: u64, max: u64 },

    // ---- PSI ------------------------------------------------------------------------

    // ---- Secure aggregation -----------------------------------------------------------
}
