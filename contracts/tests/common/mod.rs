//! Shared fixtures: the sample contracts and the fixed test keys that sign them.
#![allow(dead_code)]

use std::path::PathBuf;

use xmcredit_contracts::time::parse_rfc3339;
use xmcredit_contracts::{Contract, SignedContract, VerifiedContract};
use xmcredit_crypto::sign::IdentityKey;
use xmcredit_crypto::NodeId;

/// The samples under `contracts/samples/`, one per computation kind.
pub const SAMPLES: [&str; 4] = [
    "psi-a-grade-taxpayers",
    "overthreshold-duplicate-invoices",
    "secagg-loans-by-district",
    "lookup-credit-easy-loan",
];
pub const PSI: &str = SAMPLES[0];
pub const OVERTHRESHOLD: &str = SAMPLES[1];
pub const SECAGG: &str = SAMPLES[2];
pub const LOOKUP: &str = SAMPLES[3];

/// Fixed test keys: seed [1; 32] for credit-center, [2; 32] bank-a, [3; 32] bank-b,
/// [4; 32] bank-c, and [9; 32] for an outsider who is in no contract.
pub fn key(node: &str) -> IdentityKey {
    let seed = match node {
        "credit-center" => 1,
        "bank-a" => 2,
        "bank-b" => 3,
        "bank-c" => 4,
        _ => 9,
    };
    IdentityKey::from_seed(&[seed; 32]).expect("32-byte seed")
}

pub fn node(id: &str) -> NodeId {
    NodeId::new(id).expect("valid node id")
}

pub fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples")
}

pub fn sample_text(name: &str) -> String {
    let path = samples_dir().join(format!("{name}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn sample(name: &str) -> Contract {
    Contract::from_toml_str(&sample_text(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Unix seconds of an RFC 3339 time.
pub fn at(time: &str) -> u64 {
    parse_rfc3339(time).expect("valid time")
}

/// A time inside every sample's window.
pub fn now() -> u64 {
    at("2026-03-01T12:00:00+08:00")
}

/// `contract` signed by every party, in canonical party order.
pub fn signed_by_all(contract: &Contract) -> SignedContract {
    let mut signed = SignedContract::new(contract).expect("valid contract");
    for party in &contract.parties {
        signed.sign(&party.node, &key(party.node.as_str())).expect("party's own key");
    }
    signed
}

pub fn verified(name: &str) -> VerifiedContract {
    signed_by_all(&sample(name)).verify(now(), &[]).unwrap_or_else(|e| panic!("{name}: {e}"))
}
