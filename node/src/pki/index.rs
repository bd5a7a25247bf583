//! The CA's issuance registry, `ca/index.json`: every certificate the CA signed and
//! whether it was revoked. The CA reads serial numbers and CRL numbers from it, and the
//! CRL is generated from it, so "who holds a valid certificate" has one written answer.
//!
//! Times are Unix seconds (UTC) so the file is unambiguous across hosts and time zones.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use xmcredit_crypto::NodeId;

use super::ca::unix_seconds;
use super::{IssuedCert, PkiError};

/// The registry of issued certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Every certificate issued, in issuance order.
    pub issued: Vec<IssuedEntry>,
    /// The number of the last CRL signed (0: none yet). CRL numbers must increase.
    #[serde(default)]
    pub last_crl_number: u64,
}

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedEntry {
    pub serial: u64,
    pub node_id: NodeId,
    /// End of validity, Unix seconds.
    pub not_after_unix: u64,
    /// When the CA revoked it, Unix seconds; absent while it is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_unix: Option<u64>,
}

impl Index {
    /// The serial number for the next certificate: one more than any issued (from 1).
    pub fn next_serial(&self) -> u64 {
        self.issued.iter().map(|entry| entry.serial).max().map_or(1, |max| max.saturating_add(1))
    }

    /// Records a certificate the CA just issued; refuses a serial number already used.
    pub fn record(&mut self, cert: &IssuedCert) -> Result<(), PkiError> {
        if self.issued.iter().any(|entry| entry.serial == cert.serial) {
            return Err(PkiError::Serial {
                serial: cert.serial,
                reason: "already used by another certificate",
            });
        }
        self.issued.push(IssuedEntry {
            serial: cert.serial,
            node_id: cert.node_id.clone(),
            not_after_unix: unix_seconds(cert.not_after),
            revoked_at_unix: None,
        });
        Ok(())
    }

    /// Marks one certificate revoked at `at`. Returns false if it was already revoked (the
    /// first revocation time is kept); refuses a serial the CA never issued.
    pub fn mark_revoked(&mut self, serial: u64, at: SystemTime) -> Result<bool, PkiError> {
        let entry = self
            .issued
            .iter_mut()
            .find(|entry| entry.serial == serial)
            .ok_or(PkiError::Serial { serial, reason: "not issued by this CA (not in the index)" })?;
        if entry.revoked_at_unix.is_some() {
            return Ok(false);
        }
        entry.revoked_at_unix = Some(unix_seconds(at));
        Ok(true)
    }

    /// Revokes every certificate of `node` not yet revoked (a node leaving the alliance,
    /// or a compromised key); returns their serial numbers.
    pub fn revoke_node(&mut self, node: &NodeId, at: SystemTime) -> Vec<u64> {
        let at = unix_seconds(at);
        self.issued
            .iter_mut()
            .filter(|entry| entry.node_id == *node && entry.revoked_at_unix.is_none())
            .map(|entry| {
                entry.revoked_at_unix = Some(at);
                entry.serial
            })
            .collect()
    }

    /// The revoked certificates as (serial, revocation time): the input of
    /// [`AllianceCa::crl`](super::AllianceCa::crl).
    pub fn revoked_serials(&self) -> Vec<(u64, SystemTime)> {
        self.issued
            .iter()
            .filter_map(|entry| {
                entry.revoked_at_unix.map(|at| (entry.serial, UNIX_EPOCH + Duration::from_secs(at)))
            })
            .collect()
    }

    /// Takes the next CRL number (increments `last_crl_number`).
    pub fn next_crl_number(&mut self) -> u64 {
        self.last_crl_number = self.last_crl_number.saturating_add(1);
        self.last_crl_number
    }

    pub fn from_json(json: &str) -> Result<Self, PkiError> {
        serde_json::from_str(json).map_err(|error| PkiError::Index { error })
    }

    pub fn to_json(&self) -> Result<String, PkiError> {
        serde_json::to_string_pretty(self).map_err(|error| PkiError::Index { error })
    }

    /// Reads the index; a missing file is an error (a CA directory always has one).
    pub fn read(path: &Path) -> Result<Self, PkiError> {
        let json = std::fs::read_to_string(path).map_err(|error| PkiError::Io {
            action: "read",
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_json(&json).map_err(|e| e.in_file(path))
    }

    /// Writes the index atomically (mode 0644: it holds no secret).
    pub fn write(&self, path: &Path) -> Result<(), PkiError> {
        super::write_file_atomic(path, self.to_json()?.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: u64, node: &str) -> IssuedCert {
        IssuedCert {
            node_id: NodeId::new(node).expect("id"),
            serial,
            not_after: UNIX_EPOCH + Duration::from_secs(2_000_000_000),
            pem: String::new(),
            der: Vec::new().into(),
        }
    }

    #[test]
    fn serials_revocation_and_json_round_trip() {
        let mut index = Index::default();
        assert_eq!(index.next_serial(), 1);
        index.record(&cert(1, "bank-a")).expect("record");
        index.record(&cert(2, "bank-b")).expect("record");
        assert!(matches!(index.record(&cert(2, "bank-c")), Err(PkiError::Serial { serial: 2, .. })));
        assert_eq!(index.next_serial(), 3);

        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(index.mark_revoked(2, at).expect("known"));
        assert!(!index.mark_revoked(2, at + Duration::from_secs(60)).expect("idempotent"));
        assert!(matches!(index.mark_revoked(9, at), Err(PkiError::Serial { serial: 9, .. })));
        assert_eq!(index.revoked_serials(), vec![(2, at)]);
        assert_eq!(index.revoke_node(&NodeId::new("bank-a").expect("id"), at), vec![1]);
        assert_eq!(index.next_crl_number(), 1);

        let json = index.to_json().expect("json");
        assert!(json.contains("\"revoked_at_unix\": 1800000000"), "{json}");
        assert_eq!(Index::from_json(&json).expect("parse"), index);
    }

    #[test]
    fn index_refuses_bad_node_ids_and_unknown_fields() {
        let bad_id = r#"{"issued":[{"serial":1,"node_id":"Bank A","not_after_unix":1}]}"#;
        assert!(matches!(Index::from_json(bad_id), Err(PkiError::Index { .. })));
        let unknown = r#"{"issued":[],"extra":1}"#;
        assert!(matches!(Index::from_json(unknown), Err(PkiError::Index { .. })));
    }
}
