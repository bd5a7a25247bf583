//! The node's hash-chained audit log in the `audit` tree. Appends are serialized, each
//! record links to the previous record's hash, and `verify` re-checks the whole chain.

use xmcredit_contracts::audit::{verify_chain, AuditChain, AuditEntry, AuditRecord};

use super::{from_json, to_json, Store};
use crate::NodeError;

/// Access to the audit log.
pub trait AuditLog {
    /// Appends one record; returns it with its sequence number and hash.
    fn audit(&self, entry: AuditEntry) -> Result<AuditRecord, NodeError>;
    /// Every record, in order.
    fn audit_records(&self) -> Result<Vec<AuditRecord>, NodeError>;
    /// Verifies the chain; the error names the first bad record.
    fn audit_verify(&self) -> Result<u64, NodeError>;
    /// The last record, if any.
    fn audit_last(&self) -> Result<Option<AuditRecord>, NodeError>;
}

impl AuditLog for Store {
    fn audit(&self, entry: AuditEntry) -> Result<AuditRecord, NodeError> {
        let _guard = self.audit_lock.lock().map_err(|_| NodeError::Internal("audit lock poisoned".into()))?;
        let last = match self.audit.last().map_err(|e| NodeError::store("read audit", e))? {
            Some((_, value)) => Some(from_json::<AuditRecord>(&value, "audit record")?),
            None => None,
        };
        let record =
            AuditChain::append(last.as_ref(), entry).map_err(|e| NodeError::Internal(e.to_string()))?;
        self.audit
            .insert(record.seq.to_be_bytes(), to_json(&record)?)
            .map_err(|e| NodeError::store("append audit", e))?;
        self.flush()?;
        Ok(record)
    }

    fn audit_records(&self) -> Result<Vec<AuditRecord>, NodeError> {
        self.audit
            .iter()
            .values()
            .map(|v| from_json(&v.map_err(|e| NodeError::store("scan audit", e))?, "audit record"))
            .collect()
    }

    fn audit_last(&self) -> Result<Option<AuditRecord>, NodeError> {
        match self.audit.last().map_err(|e| NodeError::store("read audit", e))? {
            Some((_, value)) => Ok(Some(from_json(&value, "audit record")?)),
            None => Ok(None),
        }
    }

    fn audit_verify(&self) -> Result<u64, NodeError> {
        let records = self.audit_records()?;
        verify_chain(&records)
            .map_err(|e| NodeError::Corrupt { what: "audit log", reason: e.to_string() })?;
        Ok(records.len() as u64)
    }
}
