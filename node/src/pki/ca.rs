//! The alliance certificate authority, run by the credit center's node.
//!
//! It does three things: signs node certificates from certificate requests, signs CRLs,
//! and round-trips its own certificate and key through PEM. The CA decides everything in
//! a node certificate except the public key: the subject is rebuilt from the checked node
//! id, and key usages, extended key usages and basic constraints are fixed here, so a
//! request cannot ask for a CA bit or an extra name.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use xmcredit_crypto::NodeId;
use zeroize::Zeroizing;

use super::names::{from_san_type, single_node_id};
use super::PkiError;

/// How long the CA certificate is valid. Rotating the alliance CA means re-issuing every
/// node certificate, so it is long; node certificates are short (chosen per issuance).
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Certificates start this long before "now", so a peer whose clock is a few minutes
/// behind the CA's still accepts a fresh certificate.
const BACKDATE: Duration = Duration::from_secs(10 * 60);
/// Upper bound on a node certificate's validity, in days.
const MAX_NODE_VALIDITY_DAYS: u32 = 3 * 365;

/// The alliance CA: its certificate (as first written, which peers use as trust anchor)
/// and its signing key. `Debug` does not show the key.
pub struct AllianceCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// rcgen's view of the CA, used as the issuer when signing (name, key identifier).
    issuer: Certificate,
    key: KeyPair,
}

/// A node certificate as issued: what the CA records in its [`Index`](super::Index) and
/// what it sends back to the node.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub node_id: NodeId,
    pub serial: u64,
    pub not_after: SystemTime,
    /// The certificate, PEM encoded (what the node stores as its certificate file).
    pub pem: String,
    /// The same certificate, DER encoded.
    pub der: CertificateDer<'static>,
}

impl AllianceCa {
    /// Creates a new CA: a fresh P-256 key and a self-signed certificate with basic
    /// constraints CA (path length 0: it signs node certificates only) and key usages
    /// certificate signing and CRL signing.
    pub fn create(common_name: &str) -> Result<Self, PkiError> {
        let rcgen = |action| move |error| PkiError::Rcgen { action, error };
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rcgen("generate the CA key"))?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = x509_time("the CA's start of validity", now.checked_sub(BACKDATE))?.into();
        params.not_after = x509_time("the CA's end of validity", now.checked_add(CA_VALIDITY))?.into();
        let issuer = params.self_signed(&key).map_err(rcgen("self-sign the CA certificate"))?;
        Ok(Self { cert_pem: issuer.pem(), cert_der: issuer.der().clone(), issuer, key })
    }

    /// Loads a CA from its PEM certificate and PKCS#8 PEM key, checking that the
    /// certificate is a CA certificate and that the key is its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let cert_der = super::tls::parse_single_certificate("the CA certificate", cert_pem.as_bytes())?;
        let params = CertificateParams::from_ca_cert_der(&cert_der)
            .map_err(|e| PkiError::Malformed { what: "the CA certificate", reason: e.to_string() })?;
        if !matches!(params.is_ca, IsCa::Ca(_)) {
            return Err(PkiError::Malformed {
                what: "the CA certificate",
                reason: "it is not a CA certificate (basic constraints)".into(),
            });
        }
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| PkiError::Malformed { what: "the CA private key", reason: e.to_string() })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| PkiError::Malformed { what: "the CA certificate", reason: e.to_string() })?;
        if parsed.public_key().raw != key.public_key_der().as_slice() {
            return Err(PkiError::KeyMismatch { what: "alliance CA" });
        }
        // Re-signing yields rcgen's issuer object with the original name and key
        // identifier; peers keep trusting the original certificate (`cert_der`).
        let issuer = params
            .self_signed(&key)
            .map_err(|error| PkiError::Rcgen { action: "load the CA certificate", error })?;
        Ok(Self { cert_pem: cert_pem.to_string(), cert_der, issuer, key })
    }

    /// Reads the CA from its certificate file and its key file (which must be mode 0600).
    pub fn read(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let cert_pem = std::fs::read_to_string(cert_path).map_err(|error| PkiError::Io {
            action: "read",
            path: cert_path.to_path_buf(),
            error,
        })?;
        let key_bytes = super::read_secret_file(key_path)?;
        let key_pem = std::str::from_utf8(&key_bytes).map_err(|_| {
            PkiError::Malformed { what: "the CA private key", reason: "not UTF-8 PEM".into() }
                .in_file(key_path)
        })?;
        Self::from_pem(&cert_pem, key_pem).map_err(|e| match e {
            PkiError::Malformed { what: "the CA certificate", .. } => e.in_file(cert_path),
            other => other.in_file(key_path),
        })
    }

    /// Writes the certificate (mode 0644) and the key (mode 0600), each atomically.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<(), PkiError> {
        super::write_secret_file(key_path, self.key_pem().as_bytes())?;
        super::write_file_atomic(cert_path, self.cert_pem.as_bytes())
    }

    /// The CA certificate, PEM: what every node installs as its trust anchor.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA key as PKCS#8 PEM, zeroized when dropped.
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }

    /// Signs a node certificate for a PEM certificate request.
    ///
    /// The request must carry exactly one subject alternative name, a DNS name that is a
    /// valid node id (and equals `expected` when given), and a P-256 or Ed25519 key; its
    /// signature is checked by the parser. The certificate names the node as common name
    /// and only DNS name, is an end entity, may be used for digital signatures, for TLS
    /// server and client authentication, and is valid from now (less a few minutes for
    /// clock skew) for `validity_days`. `serial` must be non-zero and unused: take it from
    /// [`Index::next_serial`](super::Index::next_serial).
    pub fn issue(
        &self,
        csr_pem: &str,
        expected: Option<&NodeId>,
        validity_days: u32,
        serial: u64,
    ) -> Result<IssuedCert, PkiError> {
        const WHAT: &str = "the certificate request";
        if serial == 0 {
            return Err(PkiError::Serial {
                serial,
                reason: "serial numbers must be positive (RFC 5280 4.1.2.2)",
            });
        }
        if validity_days == 0 || validity_days > MAX_NODE_VALIDITY_DAYS {
            return Err(PkiError::Time {
                what: "node certificate validity",
                reason: format!("{validity_days} days is outside 1..={MAX_NODE_VALIDITY_DAYS}"),
            });
        }
        let request = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Malformed { what: WHAT, reason: e.to_string() })?;
        let names: Vec<_> = request.params.subject_alt_names.iter().map(from_san_type).collect();
        let node_id = single_node_id(WHAT, &names)?;
        if let Some(expected) = expected {
            if *expected != node_id {
                return Err(PkiError::UnexpectedNode { expected: expected.clone(), found: node_id });
            }
        }
        check_key_type(&request.public_key)?;

        let now = SystemTime::now();
        let not_after = x509_time(
            "the node certificate's end of validity",
            now.checked_add(Duration::from_secs(u64::from(validity_days) * 86_400)),
        )?;
        let ca_not_after: SystemTime = self.issuer.params().not_after.into();
        if not_after > ca_not_after {
            return Err(PkiError::Time {
                what: "node certificate validity",
                reason: format!(
                    "{validity_days} days would outlast the CA certificate, which expires at unix time {}",
                    unix_seconds(ca_not_after)
                ),
            });
        }

        let rcgen = |action| move |error| PkiError::Rcgen { action, error };
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node_id.as_str());
        params.distinguished_name = name;
        params.subject_alt_names =
            vec![SanType::DnsName(node_id.as_str().try_into().map_err(rcgen("encode the node id"))?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before =
            x509_time("the node certificate's start of validity", now.checked_sub(BACKDATE))?.into();
        params.not_after = not_after.into();
        params.use_authority_key_identifier_extension = true;

        let certificate = CertificateSigningRequestParams { params, public_key: request.public_key }
            .signed_by(&self.issuer, &self.key)
            .map_err(rcgen("sign the node certificate"))?;
        Ok(IssuedCert { node_id, serial, not_after, pem: certificate.pem(), der: certificate.der().clone() })
    }

    /// Signs a CRL (RFC 5280 section 5) listing `revoked` as (serial, revocation time).
    /// `crl_number` must increase with each CRL; peers load the CRL into their TLS
    /// verifiers and refuse the listed certificates.
    pub fn crl(
        &self,
        revoked: &[(u64, SystemTime)],
        crl_number: u64,
        this_update: SystemTime,
        next_update: SystemTime,
    ) -> Result<Vec<u8>, PkiError> {
        if next_update <= this_update {
            return Err(PkiError::Time {
                what: "CRL validity",
                reason: "the next update must come after this update".into(),
            });
        }
        let revoked_certs = revoked
            .iter()
            .map(|&(serial, at)| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: x509_time("a revocation time", Some(at))?.into(),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = CertificateRevocationListParams {
            this_update: x509_time("the CRL's this-update time", Some(this_update))?.into(),
            next_update: x509_time("the CRL's next-update time", Some(next_update))?.into(),
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: self.issuer.params().key_identifier_method.clone(),
        };
        let crl = params
            .signed_by(&self.issuer, &self.key)
            .map_err(|error| PkiError::Rcgen { action: "sign the CRL", error })?;
        Ok(crl.der().to_vec())
    }
}

impl fmt::Debug for AllianceCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllianceCa")
            .field("subject", &self.issuer.params().distinguished_name)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The alliance's key types: P-256 (what [`NodeKey`](super::NodeKey) generates) and
/// Ed25519. The raw key length is checked too, so a request cannot pair one curve's
/// signature algorithm with another curve's key.
fn check_key_type(key: &rcgen::PublicKey) -> Result<(), PkiError> {
    let algorithm = key.algorithm();
    let raw = key.der_bytes();
    let p256 = algorithm == &rcgen::PKCS_ECDSA_P256_SHA256 && raw.len() == 65 && raw.first() == Some(&0x04);
    let ed25519 = algorithm == &rcgen::PKCS_ED25519 && raw.len() == 32;
    if p256 || ed25519 {
        Ok(())
    } else {
        Err(PkiError::UnsupportedKey { found: format!("{algorithm:?} ({} byte)", raw.len()) })
    }
}

/// The latest time X.509 can express (GeneralizedTime, 9999-12-31T23:59:59Z).
const MAX_X509_UNIX: u64 = 253_402_300_799;

/// Checks that a time exists and that X.509 can express it (RFC 5280 4.1.2.5).
fn x509_time(what: &'static str, time: Option<SystemTime>) -> Result<SystemTime, PkiError> {
    let out_of_range = || PkiError::Time { what, reason: "outside the years 1970 to 9999".into() };
    let time = time.ok_or_else(out_of_range)?;
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() <= MAX_X509_UNIX => Ok(time),
        _ => Err(out_of_range()),
    }
}

/// Seconds since the Unix epoch (0 for earlier times), for messages and the index.
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
