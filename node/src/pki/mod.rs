//! The alliance's public-key infrastructure: who may talk to whom.
//!
//! The credit center's node runs the alliance CA ([`AllianceCa`]). Every node holds a P-256
//! TLS key ([`NodeKey`]), sends the CA a certificate request naming its node id
//! ([`certificate_request`]), and receives a certificate whose single DNS name *is* that
//! node id. Because a [`NodeId`] is exactly a DNS label, rustls's own name check binds a
//! TLS connection to a node id with no extra code: a client that expects `bank-a` refuses
//! a server whose certificate names `bank-b`, and a server reads the client's id from its
//! verified certificate ([`node_id_from_certificate`]), never from a field the client sends.
//! Revocation is by CRL, issued by the CA from its issuance [`Index`] and loaded into the
//! TLS verifiers ([`tls`]).
//!
//! Files: the CA and node keys are secrets written with [`write_secret_file`] (mode 0600,
//! atomically) and read with [`read_secret_file`], which refuses a key that group or
//! others could read.

mod ca;
mod crl;
mod csr;
mod index;
mod names;
mod secret_file;
pub mod tls;

use std::path::PathBuf;

use xmcredit_crypto::{CryptoError, NodeId};

pub use ca::{AllianceCa, IssuedCert};
pub use crl::{certificate_serial, check_crl, first_certificate_der, CheckedCrl};
pub use csr::{certificate_request, NodeKey};
pub use index::{Index, IssuedEntry};
pub use names::node_id_from_certificate;
pub use secret_file::{read_secret_file, write_file_atomic, write_secret_file};

/// Everything that can go wrong in the PKI: reading and writing key material, issuing,
/// revoking, and building TLS configurations. Each variant carries what an operator needs
/// to act: the file, the field, the value found and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file could not be read, written or renamed.
    #[error("cannot {action} {}: {error}", .path.display())]
    Io { action: &'static str, path: PathBuf, error: std::io::Error },
    /// A secret file (a private key) that group or others may read or write. Refused
    /// rather than used: the key must be considered exposed to whoever else has access.
    #[error(
        "{} has mode {mode:04o}, which lets group or others access a private key; \
         run `chmod 600 {}` (and consider the key exposed if others could read it)",
        .path.display(), .path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    /// Any other error, attributed to the file it came from.
    #[error("{}: {error}", .path.display())]
    InFile { path: PathBuf, error: Box<PkiError> },
    /// Bytes that do not parse as the expected PEM or DER object.
    #[error("{what} is not valid: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// Certificate generation or signing failed in rcgen.
    #[error("cannot {action}: {error}")]
    Rcgen { action: &'static str, error: rcgen::Error },
    /// A certificate or request whose subject alternative names are not exactly one DNS
    /// name. The alliance identifies a node by that one name and nothing else.
    #[error(
        "{what} must carry exactly one subject alternative name, a DNS name equal to the node id; \
         found {}", names::describe(.found)
    )]
    SubjectAltNames { what: &'static str, found: Vec<String> },
    /// The one DNS name is not a valid node id (see `xmcredit_crypto::NodeId`).
    #[error("{what} names {value:?}, which is not a valid node id: {error}")]
    InvalidNodeId { what: &'static str, value: String, error: CryptoError },
    /// The request names a different node than the one the operator issues for.
    #[error("the certificate request is for node {found}, but the CA was told to issue for {expected}")]
    UnexpectedNode { expected: NodeId, found: NodeId },
    /// A key type outside what the alliance uses (P-256, or Ed25519 for compatibility).
    #[error("the certificate request has a {found} key; the alliance accepts ECDSA P-256 or Ed25519")]
    UnsupportedKey { found: String },
    /// A serial number that is zero, already used, or unknown to the index.
    #[error("serial number {serial}: {reason}")]
    Serial { serial: u64, reason: &'static str },
    /// A private key that does not belong to the certificate it was paired with.
    #[error("the private key of the {what} does not match its certificate")]
    KeyMismatch { what: &'static str },
    /// A time that X.509 cannot express, or a window that ends before it starts.
    #[error("{what}: {reason}")]
    Time { what: &'static str, reason: String },
    /// The CA's index file could not be parsed or written.
    #[error("CA index: {error}")]
    Index { error: serde_json::Error },
    /// rustls refused the configuration (a key it cannot use, a key not matching the
    /// certificate, no usable protocol version).
    #[error("cannot build the TLS {side} configuration: {error}")]
    Tls { side: &'static str, error: rustls::Error },
    /// This node's own certificate would be refused by its peers: not from the alliance
    /// CA, expired, revoked, or not for the name it carries.
    #[error("this node's certificate (for {node}) does not pass its own checks: {error}")]
    OwnCertificate { node: NodeId, error: rustls::Error },
    /// rustls refused the trust anchor or a CRL for the peer verifier.
    #[error("cannot build the verifier of {side} certificates: {error}")]
    Verifier { side: &'static str, error: rustls::server::VerifierBuilderError },
}

impl PkiError {
    /// Attributes this error to a file, unless it already names one.
    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            PkiError::Io { .. } | PkiError::InsecurePermissions { .. } | PkiError::InFile { .. } => self,
            other => PkiError::InFile { path: path.into(), error: Box::new(other) },
        }
    }
}
