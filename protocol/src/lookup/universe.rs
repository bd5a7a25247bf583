//! The public universe of a lookup epoch: the sorted list of registered entity codes
//! the credit center publishes, and its digest.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::wire::Reader;
use crate::ProtocolError;

/// Domain-separation label of the universe digest.
pub const UNIVERSE_LABEL: &[u8] = b"xmcredit universe v1";

/// Most entries a universe may hold (16.7 million; Xiamen registers about a million
/// market entities).
pub const MAX_UNIVERSE_ENTRIES: usize = 1 << 24;

/// Longest entry, in bytes (its length travels as I2OSP(len, 2)).
pub const MAX_ENTRY_LEN: usize = u16::MAX as usize;

/// A sorted list of distinct, non-empty byte strings (registry codes) and its digest:
///
/// ```text
/// encoding = I2OSP(count, 8) || for each entry, ascending: I2OSP(len, 2) || entry
/// digest   = SHA-256("xmcredit universe v1" || encoding)
/// ```
///
/// Entries are compared as byte strings (lexicographically, a proper prefix first).
/// Entry `i` of every lookup vector is the value for entry `i` of its universe.
#[derive(Clone, PartialEq, Eq)]
pub struct Universe {
    entries: Vec<Vec<u8>>,
    digest: [u8; 32],
}

impl Universe {
    /// A universe of `entries`, which must already be strictly increasing (sorted and
    /// distinct), non-empty each and at most [`MAX_ENTRY_LEN`] bytes, and at least one
    /// and at most [`MAX_UNIVERSE_ENTRIES`] in number. Refused with
    /// [`ProtocolError::InvalidUniverse`] naming the first bad entry.
    pub fn new(entries: Vec<Vec<u8>>) -> Result<Self, ProtocolError> {
        if entries.is_empty() {
            return Err(ProtocolError::InvalidUniverse { index: 0, reason: "the universe is empty".into() });
        }
        if entries.len() > MAX_UNIVERSE_ENTRIES {
            return Err(ProtocolError::InvalidUniverse {
                index: entries.len() as u64,
                reason: format!("more than {MAX_UNIVERSE_ENTRIES} entries"),
            });
        }
        for (i, entry) in entries.iter().enumerate() {
            if entry.is_empty() || entry.len() > MAX_ENTRY_LEN {
                return Err(ProtocolError::InvalidUniverse {
                    index: i as u64,
                    reason: format!("{} bytes, entries are 1 to {MAX_ENTRY_LEN} bytes", entry.len()),
                });
            }
            if i > 0 && entries[i - 1] >= *entry {
                let reason = if entries[i - 1] == *entry {
                    "repeats the entry before it"
                } else {
                    "sorts before the entry before it"
                };
                return Err(ProtocolError::InvalidUniverse { index: i as u64, reason: reason.into() });
            }
        }
        let digest = digest_of(&entries);
        Ok(Self { entries, digest })
    }

    /// Sorts `entries` first, then [`Universe::new`] (a repeated entry is still
    /// refused, not merged: the registry must not list a code twice).
    pub fn from_unsorted(mut entries: Vec<Vec<u8>>) -> Result<Self, ProtocolError> {
        entries.sort_unstable();
        Self::new(entries)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Vec<u8>] {
        &self.entries
    }

    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.entries.get(index).map(Vec::as_slice)
    }

    /// The position of `code`, by binary search.
    pub fn index_of(&self, code: &[u8]) -> Option<usize> {
        self.entries.binary_search_by(|entry| entry.as_slice().cmp(code)).ok()
    }

    /// `SHA-256("xmcredit universe v1" || encoding)`.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The canonical encoding (see the type's docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let total: usize = self.entries.iter().map(|e| 2 + e.len()).sum();
        let mut out = Vec::with_capacity(8 + total);
        out.extend_from_slice(&(self.entries.len() as u64).to_be_bytes());
        for entry in &self.entries {
            // At most MAX_ENTRY_LEN (checked in `new`).
            out.extend_from_slice(&(entry.len() as u16).to_be_bytes());
            out.extend_from_slice(entry);
        }
        out
    }

    /// Decodes the canonical encoding, refusing a truncated or trailing field
    /// ([`ProtocolError::Malformed`]) and anything [`Universe::new`] refuses.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(bytes, "lookup universe");
        let count = r.u64()?;
        // Each entry takes at least 3 bytes (length and one byte).
        if count > MAX_UNIVERSE_ENTRIES as u64 || count.saturating_mul(3) > r.remaining() as u64 {
            return Err(r.malformed(format!("{count} entries cannot fit in {} bytes", r.remaining())));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = usize::from(r.u16()?);
            entries.push(r.take(len)?.to_vec());
        }
        r.finish()?;
        Self::new(entries)
    }
}

fn digest_of(entries: &[Vec<u8>]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(UNIVERSE_LABEL);
    hasher.update((entries.len() as u64).to_be_bytes());
    for entry in entries {
        hasher.update((entry.len() as u16).to_be_bytes());
        hasher.update(entry);
    }
    hasher.finalize().into()
}

impl fmt::Debug for Universe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Universe({} entries, digest {})", self.entries.len(), hex::encode(self.digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn universe(entries: &[&str]) -> Result<Universe, ProtocolError> {
        Universe::new(entries.iter().map(|e| e.as_bytes().to_vec()).collect())
    }

    #[test]
    fn sorted_distinct_entries_only() {
        let u = universe(&["A", "AB", "B"]).expect("sorted");
        assert_eq!(u.index_of(b"AB"), Some(1));
        assert_eq!(u.index_of(b"AA"), None);
        assert!(matches!(universe(&["B", "A"]), Err(ProtocolError::InvalidUniverse { index: 1, .. })));
        assert!(matches!(universe(&["A", "A"]), Err(ProtocolError::InvalidUniverse { index: 1, .. })));
        assert!(matches!(universe(&["A", ""]), Err(ProtocolError::InvalidUniverse { .. })));
        assert!(matches!(universe(&[]), Err(ProtocolError::InvalidUniverse { index: 0, .. })));
        assert_eq!(
            Universe::from_unsorted(vec![b"B".to_vec(), b"A".to_vec()]).expect("sorts").get(0),
            Some(&b"A"[..])
        );
    }

    #[test]
    fn encoding_and_digest_are_pinned() {
        let u = universe(&["A", "BC"]).expect("sorted");
        let expected = concat!(
            "0000000000000002", // count 2
            "0001",             // len 1
            "41",               // "A"
            "0002",             // len 2
            "4243",             // "BC"
        );
        assert_eq!(hex::encode(u.to_bytes()), expected);
        let mut hasher = Sha256::new();
        hasher.update(b"xmcredit universe v1");
        hasher.update(hex::decode(expected).expect("hex"));
        assert_eq!(u.digest(), <[u8; 32]>::from(hasher.finalize()));
        assert_eq!(Universe::from_bytes(&u.to_bytes()).expect("decodes"), u);
        let bytes = u.to_bytes();
        for cut in 0..bytes.len() {
            assert!(Universe::from_bytes(&bytes[..cut]).is_err());
        }
        assert!(Universe::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
    }
}
