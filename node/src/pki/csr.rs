//! A node's TLS key and its certificate request to the alliance CA.
//!
//! The key never leaves the node: `init` generates it, stores it with
//! [`write_secret_file`](super::write_secret_file), and sends only the request (public key
//! plus the node id, signed by the key) to the credit center.

use std::fmt;
use std::path::Path;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use xmcredit_crypto::NodeId;
use zeroize::Zeroizing;

use super::PkiError;

/// A node's TLS private key: ECDSA P-256, the curve rustls's ring provider and webpki
/// support everywhere. `Debug` shows the algorithm only.
pub struct NodeKey(KeyPair);

impl NodeKey {
    /// Generates a fresh P-256 key from the operating system's RNG.
    pub fn generate() -> Result<Self, PkiError> {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(Self)
            .map_err(|error| PkiError::Rcgen { action: "generate a P-256 key", error })
    }

    /// Parses a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        KeyPair::from_pem(pem).map(Self).map_err(|error| PkiError::Malformed {
            what: "the node's private key",
            reason: error.to_string(),
        })
    }

    /// The key as PKCS#8 PEM, zeroized when dropped.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.serialize_pem())
    }

    /// Reads the key from a file that only its owner may access.
    pub fn read(path: &Path) -> Result<Self, PkiError> {
        let bytes = super::read_secret_file(path)?;
        let pem = std::str::from_utf8(&bytes)
            .map_err(|_| PkiError::Malformed {
                what: "the node's private key",
                reason: "not UTF-8 PEM".into(),
            })
            .map_err(|e| e.in_file(path))?;
        Self::from_pem(pem).map_err(|e| e.in_file(path))
    }

    /// Writes the key to `path` with mode 0600, atomically.
    pub fn write(&self, path: &Path) -> Result<(), PkiError> {
        super::write_secret_file(path, self.to_pem().as_bytes())
    }

    /// The key in the form rustls takes it.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.0.serialize_der()))
    }

    pub(crate) fn key_pair(&self) -> &KeyPair {
        &self.0
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({:?}, <redacted>)", self.0.algorithm())
    }
}

/// A PEM certificate signing request for `node`, signed by `key`: the node id is both the
/// common name and the only subject alternative name (a DNS name), which is what the CA
/// checks and what peers' TLS name checks match.
pub fn certificate_request(key: &NodeKey, node: &NodeId) -> Result<String, PkiError> {
    let rcgen = |action| move |error| PkiError::Rcgen { action, error };
    let mut params = CertificateParams::default();
    params.subject_alt_names =
        vec![SanType::DnsName(node.as_str().try_into().map_err(rcgen("put the node id into the request"))?)];
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, node.as_str());
    params.distinguished_name = name;
    params
        .serialize_request(key.key_pair())
        .and_then(|request| request.pem())
        .map_err(rcgen("sign the certificate request"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_pem_and_debug_hides_it() {
        let key = NodeKey::generate().expect("generate");
        let again = NodeKey::from_pem(&key.to_pem()).expect("parse");
        assert_eq!(key.key_pair().public_key_der(), again.key_pair().public_key_der());
        let debug = format!("{key:?}");
        assert!(debug.contains("redacted") && !debug.contains("PRIVATE"), "{debug}");
    }

    #[test]
    fn request_names_the_node() {
        let key = NodeKey::generate().expect("generate");
        let node = NodeId::new("bank-a").expect("id");
        let pem = certificate_request(&key, &node).expect("request");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&pem).expect("parse");
        assert!(matches!(parsed.params.subject_alt_names.as_slice(),
            [SanType::DnsName(name)] if name.as_str() == "bank-a"));
    }

    #[test]
    fn garbage_key_is_malformed() {
        assert!(matches!(NodeKey::from_pem("not a key"), Err(PkiError::Malformed { .. })));
    }
}
