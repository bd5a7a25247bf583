//! The one rule that ties a certificate to a node: its subject alternative names are
//! exactly one DNS name, and that name is a valid [`NodeId`].
//!
//! The CA applies the rule to a request before signing it, and each node applies it to a
//! peer's verified certificate before trusting the name. Refusing any second name (even
//! an IP address or e-mail) keeps "which node is this?" a question with one answer.

use x509_parser::extensions::GeneralName;
use xmcredit_crypto::NodeId;

use super::PkiError;

/// One subject alternative name, reduced to what the rule needs.
#[derive(Debug)]
pub(crate) enum SubjectName {
    Dns(String),
    /// Any other kind, described for the error message (`IP:10.0.0.1`, `email:...`).
    Other(String),
}

impl SubjectName {
    fn describe(&self) -> String {
        match self {
            SubjectName::Dns(name) => format!("DNS:{name}"),
            SubjectName::Other(description) => description.clone(),
        }
    }
}

/// Applies the rule to a list of names; `what` names the object for the error
/// ("the certificate request", "the peer certificate").
pub(crate) fn single_node_id(what: &'static str, names: &[SubjectName]) -> Result<NodeId, PkiError> {
    match names {
        [SubjectName::Dns(name)] => NodeId::new(name.as_str()).map_err(|error| PkiError::InvalidNodeId {
            what,
            value: name.clone(),
            error,
        }),
        _ => {
            Err(PkiError::SubjectAltNames { what, found: names.iter().map(SubjectName::describe).collect() })
        }
    }
}

/// Formats the names found, for [`PkiError::SubjectAltNames`].
pub(crate) fn describe(found: &[String]) -> String {
    if found.is_empty() {
        "none".to_string()
    } else {
        found.join(", ")
    }
}

/// The node id a DER certificate is issued to: its single DNS subject alternative name.
///
/// This reads names only; it does not verify the certificate. On a TLS connection rustls
/// has already verified the chain to the alliance CA, its validity and revocation, and
/// (for a server) that the name is the one the client asked for.
pub fn node_id_from_certificate(der: &[u8]) -> Result<NodeId, PkiError> {
    const WHAT: &str = "the certificate";
    let malformed = |reason: String| PkiError::Malformed { what: WHAT, reason };
    let (rest, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| malformed(format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(malformed(format!("{} bytes follow the certificate", rest.len())));
    }
    let names = match certificate
        .subject_alternative_name()
        .map_err(|e| malformed(format!("bad subject alternative name extension: {e}")))?
    {
        Some(extension) => extension.value.general_names.iter().map(from_general_name).collect(),
        None => Vec::new(),
    };
    single_node_id(WHAT, &names)
}

fn from_general_name(name: &GeneralName<'_>) -> SubjectName {
    match name {
        GeneralName::DNSName(dns) => SubjectName::Dns((*dns).to_string()),
        GeneralName::IPAddress(bytes) => SubjectName::Other(format!("IP:{}", hex::encode(bytes))),
        GeneralName::RFC822Name(email) => SubjectName::Other(format!("email:{email}")),
        GeneralName::URI(uri) => SubjectName::Other(format!("URI:{uri}")),
        other => SubjectName::Other(format!("{other:?}")),
    }
}

/// The same reduction for a parsed certificate request (rcgen's view of it).
pub(crate) fn from_san_type(name: &rcgen::SanType) -> SubjectName {
    match name {
        rcgen::SanType::DnsName(dns) => SubjectName::Dns(dns.as_str().to_string()),
        rcgen::SanType::IpAddress(ip) => SubjectName::Other(format!("IP:{ip}")),
        rcgen::SanType::Rfc822Name(email) => SubjectName::Other(format!("email:{}", email.as_str())),
        rcgen::SanType::URI(uri) => SubjectName::Other(format!("URI:{}", uri.as_str())),
        other => SubjectName::Other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(name: &str) -> SubjectName {
        SubjectName::Dns(name.to_string())
    }

    #[test]
    fn exactly_one_valid_dns_name() {
        assert_eq!(single_node_id("x", &[dns("bank-a")]).expect("valid").as_str(), "bank-a");
        assert!(matches!(single_node_id("x", &[]), Err(PkiError::SubjectAltNames { .. })));
        assert!(matches!(
            single_node_id("x", &[dns("bank-a"), dns("bank-b")]),
            Err(PkiError::SubjectAltNames { .. })
        ));
        assert!(matches!(
            single_node_id("x", &[dns("bank-a"), SubjectName::Other("IP:127.0.0.1".into())]),
            Err(PkiError::SubjectAltNames { .. })
        ));
        for bad in ["Bank-A", "bank.example.com", "*.bank", "-a"] {
            assert!(matches!(single_node_id("x", &[dns(bad)]), Err(PkiError::InvalidNodeId { .. })), "{bad}");
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(matches!(node_id_from_certificate(b"not a certificate"), Err(PkiError::Malformed { .. })));
        assert!(matches!(node_id_from_certificate(&[]), Err(PkiError::Malformed { .. })));
    }
}
