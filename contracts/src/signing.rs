//! Signing a contract, and the one way to a [`VerifiedContract`].
//!
//! Each party signs `CONTRACT_DOMAIN || canonical bytes` with its Ed25519 identity key
//! (RFC 8032; verification is strict). A [`SignedContract`] keeps the canonical bytes
//! exactly as they were received and verifies signatures over those bytes; the decoded
//! [`Contract`] beside them is for reading only and is never encoded again to verify.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xmcredit_crypto::sign::{IdentityKey, Signature};
use xmcredit_crypto::NodeId;

use crate::document::Contract;
use crate::revocation::Revocation;
use crate::verified::{check_window, VerifiedContract};
use crate::{serde_hex, ContractError};

/// The domain-separation prefix of the message every party signs.
pub const CONTRACT_DOMAIN: &[u8] = b"xmcredit contract v1\n";

/// Proof that every party's signature verified over the stored bytes. Only this module
/// can make one (its field is private here), and [`VerifiedContract`] cannot be built
/// without one: "verified" is a type, not a boolean.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SignaturesVerified(());

/// Canonical contract bytes as received, with the signatures collected so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SignedContractRepr", into = "SignedContractRepr")]
pub struct SignedContract {
    bytes: Vec<u8>,
    contract: Contract,
    signatures: Vec<(NodeId, Signature)>,
}

impl SignedContract {
    /// Starts signing a contract: checks it and fixes its canonical bytes.
    pub fn new(contract: &Contract) -> Result<SignedContract, ContractError> {
        contract.validate()?;
        let bytes = contract.canonical_bytes()?;
        Self::from_parts(bytes, Vec::new())
    }

    /// Rebuilds a signed contract from stored or received parts. The bytes must be the
    /// canonical encoding of a well-formed contract; signatures are checked by
    /// [`SignedContract::verify`], not here.
    pub fn from_parts(
        canonical_bytes: Vec<u8>,
        signatures: Vec<(NodeId, Signature)>,
    ) -> Result<SignedContract, ContractError> {
        let contract = Contract::from_canonical_bytes(&canonical_bytes)?;
        Ok(SignedContract { bytes: canonical_bytes, contract, signatures })
    }

    /// The canonical bytes, exactly as received.
    pub fn canonical_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The document, decoded from the bytes. Not yet verified: show it, don't act on it.
    pub fn contract(&self) -> &Contract {
        &self.contract
    }

    pub fn signatures(&self) -> &[(NodeId, Signature)] {
        &self.signatures
    }

    /// SHA-256 of the canonical bytes: names this exact document (revocations bind to it).
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }

    /// `CONTRACT_DOMAIN || canonical bytes`: what each party signs.
    pub fn signed_message(&self) -> Vec<u8> {
        [CONTRACT_DOMAIN, &self.bytes].concat()
    }

    /// The parties that have not signed yet, in canonical order.
    pub fn missing_signatures(&self) -> Vec<NodeId> {
        self.contract
            .parties
            .iter()
            .filter(|p| !self.signatures.iter().any(|(n, _)| *n == p.node))
            .map(|p| p.node.clone())
            .collect()
    }

    /// Signs as `node`, refusing if `key` is not the key the contract lists for it.
    /// Replaces an earlier signature by the same node.
    pub fn sign(&mut self, node: &NodeId, key: &IdentityKey) -> Result<Signature, ContractError> {
        let party = self.contract.party(node).ok_or_else(|| ContractError::NotAParty {
            contract: self.contract.id.clone(),
            node: node.clone(),
        })?;
        if party.public_key != key.public_key() {
            return Err(ContractError::WrongSigningKey {
                node: node.clone(),
                offered: key.public_key().to_string(),
                listed: party.public_key.to_string(),
            });
        }
        let signature = key.sign(&self.signed_message());
        self.put(node.clone(), signature);
        Ok(signature)
    }

    /// Adds a signature a party sent, checking it at once so a bad one is refused at the
    /// door. Replaces an earlier signature by the same node.
    pub fn add_signature(&mut self, node: NodeId, signature: Signature) -> Result<(), ContractError> {
        let contract = self.contract.id.clone();
        let party = self.contract.party(&node).ok_or_else(|| ContractError::SignerNotAParty {
            contract: contract.clone(),
            node: node.clone(),
        })?;
        party
            .public_key
            .verify(&self.signed_message(), &signature)
            .map_err(|_| ContractError::BadSignature { contract, node: node.clone() })?;
        self.put(node, signature);
        Ok(())
    }

    fn put(&mut self, node: NodeId, signature: Signature) {
        match self.signatures.iter_mut().find(|(n, _)| *n == node) {
            Some(entry) => entry.1 = signature,
            None => self.signatures.push((node, signature)),
        }
    }

    /// The only way to a [`VerifiedContract`]. In order: the document is well formed;
    /// every signature is by a party, at most one per party, and verifies over the
    /// stored bytes; every party has signed; no valid revocation of this document is
    /// among `revocations`; `now_unix` is inside `[not_before, not_after]`.
    ///
    /// Revocations of other contracts (another id or another document digest) are
    /// ignored; one of this document that does not verify is an error, since the node
    /// should have checked it with [`Revocation::verify`] before storing it.
    pub fn verify(
        &self,
        now_unix: u64,
        revocations: &[Revocation],
    ) -> Result<VerifiedContract, ContractError> {
        self.contract.validate()?;
        let proof = self.check_signatures()?;
        if let Some(revocation) = revocations.iter().find(|r| r.applies_to(self)) {
            revocation.verify(self)?;
            return Err(ContractError::Revoked {
                contract: self.contract.id.clone(),
                by: revocation.by.clone(),
                time: revocation.time,
                reason: revocation.reason.clone(),
            });
        }
        check_window(&self.contract, now_unix)?;
        Ok(VerifiedContract::new(self, proof))
    }

    fn check_signatures(&self) -> Result<SignaturesVerified, ContractError> {
        let contract = &self.contract.id;
        let message = self.signed_message();
        let mut signed = BTreeSet::new();
        for (node, signature) in &self.signatures {
            let party = self.contract.party(node).ok_or_else(|| ContractError::SignerNotAParty {
                contract: contract.clone(),
                node: node.clone(),
            })?;
            if !signed.insert(node) {
                return Err(ContractError::DuplicateSignature {
                    contract: contract.clone(),
                    node: node.clone(),
                });
            }
            party.public_key.verify(&message, signature).map_err(|_| ContractError::BadSignature {
                contract: contract.clone(),
                node: node.clone(),
            })?;
        }
        let missing = self.missing_signatures();
        if !missing.is_empty() {
            return Err(ContractError::MissingSignatures { contract: contract.clone(), missing });
        }
        Ok(SignaturesVerified(()))
    }
}

/// How a signed contract is stored and shipped:
/// `{"contract": "<canonical JSON text>", "signatures": [{"node": ..., "signature": "<hex>"}]}`.
/// The canonical text is a JSON string, so any JSON writer carries the bytes unchanged.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedContractRepr {
    contract: String,
    signatures: Vec<SignatureRepr>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureRepr {
    node: NodeId,
    #[serde(with = "serde_hex::signature")]
    signature: Signature,
}

impl TryFrom<SignedContractRepr> for SignedContract {
    type Error = ContractError;
    fn try_from(repr: SignedContractRepr) -> Result<Self, Self::Error> {
        let signatures = repr.signatures.into_iter().map(|s| (s.node, s.signature)).collect();
        SignedContract::from_parts(repr.contract.into_bytes(), signatures)
    }
}

impl From<SignedContract> for SignedContractRepr {
    fn from(signed: SignedContract) -> Self {
        SignedContractRepr {
            // The bytes were decoded as canonical JSON, which is UTF-8.
            contract: String::from_utf8_lossy(&signed.bytes).into_owned(),
            signatures: signed
                .signatures
                .into_iter()
                .map(|(node, signature)| SignatureRepr { node, signature })
                .collect(),
        }
    }
}
