//! rustls configurations for mutual TLS between alliance nodes.
//!
//! Both sides trust exactly one root, the alliance CA, and check revocation against the
//! CA's CRLs. Built with the ring provider explicitly (never a process-wide default, so
//! no other crate's choice of provider changes ours), TLS 1.3 only (every node runs this
//! code; there is no old peer to talk to), ALPN `h2` (gRPC). Session resumption is off on
//! both sides: connections between nodes are few and long-lived, and a full handshake
//! every time means a certificate revoked since the last connection is never let back in
//! on a resumed session.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use xmcredit_crypto::NodeId;

use super::{node_id_from_certificate, PkiError};

/// The ALPN protocol id of HTTP/2, which gRPC runs over.
const ALPN_H2: &[u8] = b"h2";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_cert: CertificateDer<'static>) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert).map_err(|error| PkiError::Tls { side: "trust anchor", error })?;
    Ok(Arc::new(roots))
}

fn server_cert_verifier(
    ca_cert: CertificateDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<WebPkiServerVerifier>, PkiError> {
    WebPkiServerVerifier::builder_with_provider(roots(ca_cert)?, provider())
        .with_crls(crls)
        .build()
        .map_err(|error| PkiError::Verifier { side: "server", error })
}

/// The server side: a client must present a certificate that chains to the alliance CA,
/// is valid now, is for client authentication, and is not on any of `crls`.
pub fn server_config(
    ca_cert: CertificateDer<'static>,
    own_chain: Vec<CertificateDer<'static>>,
    own_key: PrivateKeyDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = provider();
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_cert)?, provider.clone())
        .with_crls(crls)
        .build()
        .map_err(|error| PkiError::Verifier { side: "client", error })?;
    let tls = |error| PkiError::Tls { side: "server", error };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(own_chain, own_key)
        .map_err(tls)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client side: the server must present a certificate that chains to the alliance CA,
/// is valid now, is not on any of `crls`, and names the node the client dialled (the
/// `ServerName` given per connection, see [`crate::transport::connect`]). The client
/// authenticates with its own certificate.
pub fn client_config(
    ca_cert: CertificateDer<'static>,
    own_chain: Vec<CertificateDer<'static>>,
    own_key: PrivateKeyDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<ClientConfig>, PkiError> {
    let verifier = server_cert_verifier(ca_cert, crls)?;
    let tls = |error| PkiError::Tls { side: "client", error };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(own_chain, own_key)
        .map_err(tls)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Where a node's TLS material lives: the paths its configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The alliance CA certificate (PEM), the only trust anchor.
    pub ca_cert: PathBuf,
    /// This node's certificate (PEM), optionally followed by intermediates.
    pub cert: PathBuf,
    /// This node's private key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
    /// CRLs from the CA (DER or PEM); may be empty.
    pub crls: Vec<PathBuf>,
}

/// A node's TLS material, loaded and checked: its own certificate chains to the CA, is
/// valid now, is not revoked by the loaded CRLs, and names a valid node id.
pub struct TlsIdentity {
    node_id: NodeId,
    ca_cert: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl TlsIdentity {
    /// Reads and checks the files. A key file readable by group or others is refused.
    pub fn load(files: &TlsFiles) -> Result<Self, PkiError> {
        let ca_cert = parse_single_certificate("the CA certificate", &read_public(&files.ca_cert)?)
            .map_err(|e| e.in_file(&files.ca_cert))?;
        let chain = parse_certificates("this node's certificate", &read_public(&files.cert)?)
            .map_err(|e| e.in_file(&files.cert))?;
        let key =
            parse_private_key(&super::read_secret_file(&files.key)?).map_err(|e| e.in_file(&files.key))?;
        let crls = files
            .crls
            .iter()
            .map(|path| parse_crls(&read_public(path)?).map_err(|e| e.in_file(path)))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        Self::new(ca_cert, chain, key, crls).map_err(|e| match e {
            // The CA certificate and CRLs were checked on their own above; what is left
            // about the verifier is their combination.
            PkiError::Verifier { .. } => e,
            other => other.in_file(&files.cert),
        })
    }

    /// Checks material already in memory (e.g. the simulator's throwaway CA).
    pub fn new(
        ca_cert: CertificateDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<Self, PkiError> {
        let (end_entity, intermediates) = chain.split_first().ok_or_else(|| PkiError::Malformed {
            what: "this node's certificate",
            reason: "no certificate found".into(),
        })?;
        let node_id = node_id_from_certificate(end_entity)?;
        let server_name = ServerName::try_from(node_id.as_str().to_string())
            .map_err(|e| PkiError::Malformed { what: "this node's certificate", reason: e.to_string() })?;
        server_cert_verifier(ca_cert.clone(), crls.clone())?
            .verify_server_cert(end_entity, intermediates, &server_name, &[], UnixTime::now())
            .map_err(|error| PkiError::OwnCertificate { node: node_id.clone(), error })?;
        Ok(Self { node_id, ca_cert, chain, key, crls })
    }

    /// The node id this node's certificate names: who this node is to its peers.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    pub fn server_config(&self) -> Result<Arc<ServerConfig>, PkiError> {
        server_config(self.ca_cert.clone(), self.chain.clone(), self.key.clone_key(), self.crls.clone())
    }

    pub fn client_config(&self) -> Result<Arc<ClientConfig>, PkiError> {
        client_config(self.ca_cert.clone(), self.chain.clone(), self.key.clone_key(), self.crls.clone())
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("node_id", &self.node_id)
            .field("chain_len", &self.chain.len())
            .field("crls", &self.crls.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

fn read_public(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|error| PkiError::Io { action: "read", path: path.to_path_buf(), error })
}

/// All certificates in a PEM document, in order; at least one.
pub(crate) fn parse_certificates(
    what: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certificates = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Malformed { what, reason: e.to_string() })?;
    if certificates.is_empty() {
        return Err(PkiError::Malformed { what, reason: "no PEM CERTIFICATE block found".into() });
    }
    Ok(certificates)
}

/// Exactly one certificate in a PEM document.
pub(crate) fn parse_single_certificate(
    what: &'static str,
    pem: &[u8],
) -> Result<CertificateDer<'static>, PkiError> {
    let mut certificates = parse_certificates(what, pem)?;
    match certificates.len() {
        1 => Ok(certificates.remove(0)),
        n => Err(PkiError::Malformed { what, reason: format!("expected one certificate, found {n}") }),
    }
}

fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PkiError> {
    const WHAT: &str = "the private key";
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| PkiError::Malformed { what: WHAT, reason: e.to_string() })?
        .ok_or_else(|| PkiError::Malformed { what: WHAT, reason: "no PEM PRIVATE KEY block found".into() })
}

/// CRLs from a file holding either one DER CRL or any number of PEM `X509 CRL` blocks.
fn parse_crls(bytes: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    const WHAT: &str = "the CRL file";
    let crls = if bytes.starts_with(b"-----BEGIN") {
        rustls_pemfile::crls(&mut &bytes[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PkiError::Malformed { what: WHAT, reason: e.to_string() })?
    } else {
        vec![CertificateRevocationListDer::from(bytes.to_vec())]
    };
    if crls.is_empty() {
        return Err(PkiError::Malformed { what: WHAT, reason: "no PEM X509 CRL block found".into() });
    }
    // Parsed here so that a bad CRL is reported against its file, not later by the verifier.
    for crl in &crls {
        x509_parser::parse_x509_crl(crl)
            .map_err(|e| PkiError::Malformed { what: WHAT, reason: format!("not an X.509 CRL: {e}") })?;
    }
    Ok(crls)
}
