//! What a node needs from a CRL beyond rustls's own revocation check: is a CRL that
//! arrived over the network really the alliance CA's, is it newer than the one in force,
//! and which serial numbers does it revoke (so open connections of those certificates
//! can be closed).

use std::collections::BTreeSet;

use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::PkiError;

/// A CRL that parsed and verified under the CA certificate.
#[derive(Debug, Clone)]
pub struct CheckedCrl {
    /// `thisUpdate`, unix seconds.
    pub this_update: i64,
    /// Raw serial numbers (DER INTEGER contents) of the revoked certificates.
    pub revoked: BTreeSet<Vec<u8>>,
    /// The CRL number extension (RFC 5280 §5.2.3), big-endian without leading zeros.
    pub number: Option<Vec<u8>>,
}

impl CheckedCrl {
    /// Whether `self` supersedes `current`: a strictly greater CRL number when both
    /// carry one (the alliance CA numbers every CRL), else a strictly newer `thisUpdate`.
    pub fn supersedes(&self, current: &CheckedCrl) -> bool {
        match (&self.number, &current.number) {
            (Some(new), Some(old)) => (new.len(), new) > (old.len(), old),
            _ => self.this_update > current.this_update,
        }
    }
}

fn malformed(what: &'static str, reason: impl ToString) -> PkiError {
    PkiError::Malformed { what, reason: reason.to_string() }
}

/// The DER of the first certificate in a PEM file.
pub fn first_certificate_der(pem: &[u8]) -> Result<Vec<u8>, PkiError> {
    let mut reader = pem;
    let first = rustls_pemfile::certs(&mut reader).next();
    match first {
        Some(Ok(der)) => Ok(der.to_vec()),
        Some(Err(e)) => Err(malformed("the CA certificate", e)),
        None => Err(malformed("the CA certificate", "no certificate in the PEM file")),
    }
}

/// Parses `crl_der` and verifies its signature with the CA certificate's key; DER or PEM.
pub fn check_crl(crl: &[u8], ca_cert_der: &[u8]) -> Result<CheckedCrl, PkiError> {
    let der = if crl.starts_with(b"-----BEGIN") {
        let mut reader = crl;
        let first = rustls_pemfile::crls(&mut reader).next();
        match first {
            Some(Ok(der)) => der.to_vec(),
            _ => return Err(malformed("the CRL", "no CRL in the PEM text")),
        }
    } else {
        crl.to_vec()
    };
    let (_, ca) = X509Certificate::from_der(ca_cert_der).map_err(|e| malformed("the CA certificate", e))?;
    let (rest, list) = CertificateRevocationList::from_der(&der).map_err(|e| malformed("the CRL", e))?;
    if !rest.is_empty() {
        return Err(malformed("the CRL", format!("{} bytes follow it", rest.len())));
    }
    if list.issuer() != ca.subject() {
        return Err(malformed(
            "the CRL",
            format!("issued by {}, not by the alliance CA {}", list.issuer(), ca.subject()),
        ));
    }
    list.verify_signature(ca.public_key()).map_err(|e| {
        malformed("the CRL", format!("its signature does not verify under the alliance CA: {e}"))
    })?;
    let revoked = list.iter_revoked_certificates().map(|entry| entry.raw_serial().to_vec()).collect();
    let number = list.crl_number().map(|n| {
        let bytes = n.to_bytes_be();
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        bytes[start..].to_vec()
    });
    Ok(CheckedCrl { this_update: list.last_update().timestamp(), revoked, number })
}

/// The raw serial number of a DER certificate (the same form CRL entries carry).
pub fn certificate_serial(der: &[u8]) -> Result<Vec<u8>, PkiError> {
    let (_, certificate) = X509Certificate::from_der(der).map_err(|e| malformed("the certificate", e))?;
    Ok(certificate.raw_serial().to_vec())
}
