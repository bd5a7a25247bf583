//! Identifiers that every message is bound to. Each is its own type so that a node id
//! can never be passed where a contract id is expected, and each is validated once, at
//! the edge, so everything downstream can rely on its syntax.

use std::fmt;

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::CryptoError;

/// A node of the alliance, e.g. `credit-center` or `bank-xiamen-1`.
///
/// Syntax: 1 to 63 characters of `a-z`, `0-9` and `-`, neither first nor last a `-`.
/// That is exactly a DNS label, so the id can be the DNS name in the node's TLS
/// certificate and rustls's own name check binds the connection to it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    pub fn new(value: impl Into<String>) -> Result<Self, CryptoError> {
        let value = value.into();
        let invalid = |reason| CryptoError::InvalidId { kind: "node id", value: value.clone(), reason };
        if value.is_empty() || value.len() > 63 {
            return Err(invalid("must be 1 to 63 characters"));
        }
        if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(invalid("only a-z, 0-9 and '-' are allowed"));
        }
        if value.starts_with('-') || value.ends_with('-') {
            return Err(invalid("must not start or end with '-'"));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A contract, e.g. `xel-2026-a-grade`. Syntax: 1 to 64 characters of ASCII letters,
/// digits, `.`, `_` and `-`. Its UTF-8 bytes enter key derivation, tags and pads.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContractId(String);

impl ContractId {
    pub fn new(value: impl Into<String>) -> Result<Self, CryptoError> {
        let value = value.into();
        let invalid = |reason| CryptoError::InvalidId { kind: "contract id", value: value.clone(), reason };
        if value.is_empty() || value.len() > 64 {
            return Err(invalid("must be 1 to 64 characters"));
        }
        if !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(invalid("only ASCII letters, digits, '.', '_' and '-' are allowed"));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

macro_rules! string_id_impls {
    ($ty:ident) => {
        impl TryFrom<String> for $ty {
            type Error = CryptoError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }
        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.0
            }
        }
        impl std::str::FromStr for $ty {
            type Err = CryptoError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::new(value)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($ty), self.0)
            }
        }
    };
}
string_id_impls!(NodeId);
string_id_impls!(ContractId);

/// The epoch of a contract: the index of its key period (validity start + epoch × epoch
/// length). Keys, tags and pads of different epochs are unlinkable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch(pub u64);

impl Epoch {
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One run of one protocol under one contract and epoch; fresh random per run so that
/// messages of one run cannot be replayed into another.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; 16] = bytes.try_into().map_err(|_| CryptoError::InvalidId {
            kind: "session id",
            value: hex::encode(bytes),
            reason: "must be 16 bytes",
        })?;
        Ok(Self(array))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_a_dns_label() {
        assert!(NodeId::new("credit-center").is_ok());
        assert!(NodeId::new("bank1").is_ok());
        for bad in ["", "Bank", "bank_1", "-bank", "bank-", "银行", &"a".repeat(64)] {
            assert!(NodeId::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn contract_id_syntax() {
        assert!(ContractId::new("xel-2026.a_grade").is_ok());
        for bad in ["", "a b", "合同", &"x".repeat(65)] {
            assert!(ContractId::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_deserialize_through_validation() {
        let ok: NodeId = serde_json_like("bank-a").expect("valid");
        assert_eq!(ok.as_str(), "bank-a");
        assert!(serde_json_like::<NodeId>("BANK").is_err());
    }

    fn serde_json_like<T: TryFrom<String, Error = CryptoError>>(s: &str) -> Result<T, CryptoError> {
        T::try_from(s.to_string())
    }
}
