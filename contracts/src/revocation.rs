//! Revocation: any one party can end a contract for everyone.
//!
//! A revocation names the contract by id *and* by the SHA-256 of its canonical bytes, so
//! it ends exactly the document its signer saw (not a later version reusing the id). It
//! is signed as `REVOCATION_DOMAIN || canonical JSON of {by, contract_digest (hex),
//! contract_id, reason, time}`. It takes effect as soon as a node holds it: `time`
//! records when it was made, it does not schedule it.

use serde::{Deserialize, Serialize};
use xmcredit_crypto::sign::{IdentityKey, Signature};
use xmcredit_crypto::{ContractId, NodeId};

use crate::canonical::{self, MAX_SAFE_INTEGER};
use crate::signing::SignedContract;
use crate::{serde_hex, ContractError};

/// The domain-separation prefix of the message a revoking party signs.
pub const REVOCATION_DOMAIN: &[u8] = b"xmcredit revocation v1\n";

/// A signed revocation, as stored and shipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub contract_id: ContractId,
    /// SHA-256 of the revoked contract's canonical bytes.
    #[serde(with = "serde_hex::digest")]
    pub contract_digest: [u8; 32],
    pub by: NodeId,
    pub reason: String,
    /// Unix seconds when it was signed.
    pub time: u64,
    #[serde(with = "serde_hex::signature")]
    pub signature: Signature,
}

/// The signed part of a revocation; field names are its canonical keys.
#[derive(Serialize)]
struct RevocationBody<'a> {
    by: &'a NodeId,
    contract_digest: String,
    contract_id: &'a ContractId,
    reason: &'a str,
    time: u64,
}

impl Revocation {
    /// Revokes `contract` as party `by`, refusing a key that is not the party's.
    pub fn sign(
        contract: &SignedContract,
        by: &NodeId,
        key: &IdentityKey,
        reason: impl Into<String>,
        time_unix: u64,
    ) -> Result<Revocation, ContractError> {
        let document = contract.contract();
        let party = document
            .party(by)
            .ok_or_else(|| ContractError::NotAParty { contract: document.id.clone(), node: by.clone() })?;
        if party.public_key != key.public_key() {
            return Err(ContractError::WrongSigningKey {
                node: by.clone(),
                offered: key.public_key().to_string(),
                listed: party.public_key.to_string(),
            });
        }
        let reason = reason.into();
        if reason.trim().is_empty() {
            return Err(ContractError::Malformed { field: "reason".into(), reason: "say why".into() });
        }
        if time_unix > MAX_SAFE_INTEGER as u64 {
            return Err(ContractError::Malformed { field: "time".into(), reason: "beyond 2^53-1".into() });
        }
        let mut revocation = Revocation {
            contract_id: document.id.clone(),
            contract_digest: contract.digest(),
            by: by.clone(),
            reason,
            time: time_unix,
            signature: Signature([0; 64]),
        };
        revocation.signature = key.sign(&revocation.signed_message()?);
        Ok(revocation)
    }

    /// The canonical JSON of the signed fields.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, ContractError> {
        let body = RevocationBody {
            by: &self.by,
            contract_digest: hex::encode(self.contract_digest),
            contract_id: &self.contract_id,
            reason: &self.reason,
            time: self.time,
        };
        Ok(canonical::to_canonical_bytes(&body)?)
    }

    /// `REVOCATION_DOMAIN || canonical bytes`: what the revoking party signs.
    pub fn signed_message(&self) -> Result<Vec<u8>, ContractError> {
        Ok([REVOCATION_DOMAIN, &self.canonical_bytes()?].concat())
    }

    /// Whether this revocation names `contract` (its id and its exact bytes).
    pub fn applies_to(&self, contract: &SignedContract) -> bool {
        self.contract_id == contract.contract().id && self.contract_digest == contract.digest()
    }

    /// Checks that it names `contract`, is by one of its parties and verifies under that
    /// party's key. A node calls this before it stores or forwards a revocation.
    pub fn verify(&self, contract: &SignedContract) -> Result<(), ContractError> {
        let document = contract.contract();
        let bad = |reason: &str| ContractError::BadRevocation {
            contract: document.id.clone(),
            by: self.by.clone(),
            reason: reason.to_string(),
        };
        if !self.applies_to(contract) {
            return Err(bad("it names another contract or another version of this one"));
        }
        let party = document.party(&self.by).ok_or_else(|| bad("its signer is not a party"))?;
        let message = self.signed_message().map_err(|e| bad(&e.to_string()))?;
        party.public_key.verify(&message, &self.signature).map_err(|_| bad("the signature does not verify"))
    }
}
