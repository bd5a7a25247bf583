//! Lower-case hex for keys, signatures and digests in every serialized form.

use serde::{de, Deserialize, Deserializer, Serializer};
use xmcredit_crypto::sign::{IdentityPublicKey, Signature};

pub(crate) mod public_key {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(key: &IdentityPublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(key.to_bytes()))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IdentityPublicKey, D::Error> {
        let text = String::deserialize(d)?;
        IdentityPublicKey::from_hex(&text).map_err(de::Error::custom)
    }
}

pub(crate) mod signature {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(signature: &Signature, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(signature.0))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        let text = String::deserialize(d)?;
        Signature::from_hex(&text).map_err(de::Error::custom)
    }
}

pub(crate) mod digest {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(digest: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(digest))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(de::Error::custom)?;
        bytes
            .try_into()
            .map_err(|b: Vec<u8>| de::Error::custom(format!("digest has {} bytes, want 32", b.len())))
    }
}

pub(crate) mod optional_digest {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(digest: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match digest {
            Some(d) => s.serialize_str(&hex::encode(d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        super::digest::deserialize(d).map(Some)
    }
}
