//! The node's one error type, and its mapping to gRPC status codes (in exactly one
//! place, [`From<NodeError> for tonic::Status`]).

use std::path::PathBuf;

use thiserror::Error;
use xmcredit_contracts::ContractError;
use xmcredit_crypto::{CryptoError, NodeId};
use xmcredit_protocol::ProtocolError;

use crate::pki::PkiError;
use crate::transport::TransportError;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration file could not be read or has a bad key.
    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// A file the node needs could not be read or written.
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// sled refused an operation.
    #[error("store ({operation}): {reason}")]
    Store { operation: &'static str, reason: String },
    /// A store written in a layout this node does not read (with what to do).
    #[error("store {path}: {reason}")]
    StoreLayout { path: PathBuf, reason: String },
    /// A store record that does not decode: the data directory was edited or damaged.
    #[error("store record {what} is corrupt: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A contract refused, not found, or a check it imposes failed.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// A protocol message refused, or a protocol that could not go on.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// An import that could not start or was refused as a whole.
    #[error("import: {0}")]
    Import(String),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// A caller whose certificate names a node that is not a configured peer.
    #[error("node {0} is not a configured peer")]
    UnknownPeer(NodeId),
    /// A peer whose certificate names it but whose proven identity key is not the key
    /// pinned for that name (by a contract or the configuration): a certificate without
    /// the node's identity key opens no door.
    #[error("{peer} proved identity key {proven} on this connection, but {pinned_by} pins {pinned} for {peer}: refused")]
    IdentityMismatch { peer: NodeId, proven: String, pinned: String, pinned_by: String },
    /// A session id seen before: a replayed session.
    #[error("session {session} was already used: replay refused")]
    Replay { session: String },
    /// A request the node refuses by policy (with the rule).
    #[error("refused: {0}")]
    Refused(String),
    /// A peer that did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A frame from a peer that could not be read (over the size limit, a reset stream).
    #[error("frame from {peer} refused: {reason}")]
    BadFrame { peer: String, reason: String },
    /// A peer ended a session with an error status.
    #[error("peer {peer} answered: {message}")]
    Peer { peer: String, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl NodeError {
    pub(crate) fn store(operation: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Store { operation, reason: error.to_string() }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, error: impl std::fmt::Display) -> Self {
        Self::File { path: path.into(), reason: error.to_string() }
    }
}

impl From<NodeError> for tonic::Status {
    fn from(error: NodeError) -> Self {
        use tonic::Status;
        let message = error.to_string();
        match error {
            // A contract file that does not parse is the operator's input, not a refusal.
            NodeError::Contract(ContractError::Toml { .. }) => Status::invalid_argument(message),
            NodeError::Contract(_) | NodeError::Refused(_) => Status::permission_denied(message),
            // A quota is a policy refusal, whichever layer noticed it.
            NodeError::Protocol(ProtocolError::QuotaExceeded { .. }) => Status::permission_denied(message),
            NodeError::Protocol(_)
            | NodeError::Crypto(_)
            | NodeError::Import(_)
            | NodeError::BadFrame { .. } => Status::invalid_argument(message),
            NodeError::NotFound { .. } => Status::not_found(message),
            NodeError::UnknownPeer(_) | NodeError::IdentityMismatch { .. } => {
                Status::permission_denied(message)
            }
            NodeError::Replay { .. } => Status::already_exists(message),
            NodeError::Timeout(_) => Status::deadline_exceeded(message),
            NodeError::Transport(_) | NodeError::Peer { .. } => Status::unavailable(message),
            NodeError::Config { .. }
            | NodeError::File { .. }
            | NodeError::Store { .. }
            | NodeError::StoreLayout { .. }
            | NodeError::Corrupt { .. }
            | NodeError::Pki(_)
            | NodeError::Internal(_) => Status::internal(message),
        }
    }
}
