//! What the node adds around the protocol's messages on a `SecAgg` stream: fragments,
//! so that a message larger than one gRPC message (a masked input of 2^20 elements is
//! 8 MiB) crosses in pieces, and the opening message, which lets a contributor check
//! the contract and the session before it does anything.
//!
//! # Fragments
//!
//! Every frame's payload is `flag (1) || bytes`: flag `0x01` means more fragments of the
//! same message follow, `0x00` that this one ends it. A message is the concatenation of
//! its fragments' bytes; the receiver refuses one that grows past a cap it sets from
//! what the session can legitimately carry, before it is buffered. Senders cut at
//! [`FRAGMENT_BYTES`].
//!
//! # The opening message
//!
//! ```text
//! version (1) = 0x01 || kind (1) = 0xF0
//! I2OSP(len(contract), 2) || contract || I2OSP(epoch, 8)
//! nonce (16) || contract digest (32)
//! universe = I2OSP(count, 4) || count × (I2OSP(len, 1) || key)
//!            count = 0 unless the contract is in universe mode (`groups = []`)
//! ```
//!
//! The session id is not sent; both sides derive it:
//!
//! ```text
//! universe digest = SHA-256("xmcredit secagg universe v1" || universe)
//! session = SHA-256("xmcredit secagg session v1" || contract digest || I2OSP(epoch, 8)
//!                   || nonce || universe digest)[0..16]
//! ```
//!
//! Every round-0 advertisement is signed over the session binding and every contributor
//! checks every other's signature, so contributors that go on together hold the same
//! session id, hence (SHA-256 being collision resistant) the same contract bytes and
//! the same universe: a coordinator cannot give each contributor a different vector
//! layout (say, a universe of codes nobody holds to all but one bank) to single out one
//! bank's input. The contract digest also refuses a contributor that holds another
//! version of the contract under the same id.

use sha2::{Digest, Sha256};
use xmcredit_crypto::{ContractId, Epoch, SessionId};
use xmcredit_protocol::SessionBinding;

use crate::proto;
use crate::NodeError;

/// Bytes of one fragment (1 MiB), well under the transport's 8 MiB message cap.
pub(crate) const FRAGMENT_BYTES: usize = 1 << 20;

const MORE: u8 = 0x01;
const LAST: u8 = 0x00;

const OPEN_VERSION: u8 = 0x01;
/// The opening message's kind byte; the protocol's own kinds are `0x00..=0x41`.
const OPEN_KIND: u8 = 0xF0;
const UNIVERSE_DOMAIN: &[u8] = b"xmcredit secagg universe v1";
const SESSION_DOMAIN: &[u8] = b"xmcredit secagg session v1";

/// The longest key a universe entry may have (its length travels in one byte).
pub(crate) const MAX_KEY_BYTES: usize = 255;

fn malformed(reason: impl Into<String>) -> NodeError {
    NodeError::Protocol(xmcredit_protocol::ProtocolError::Malformed {
        what: "secagg frame",
        reason: reason.into(),
    })
}

/// Cuts one message into frames (at least one, even for an empty message).
pub(crate) fn fragments(message: &[u8]) -> Vec<proto::Frame> {
    let mut chunks: Vec<&[u8]> = message.chunks(FRAGMENT_BYTES).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut payload = Vec::with_capacity(1 + chunk.len());
            payload.push(if i == last { LAST } else { MORE });
            payload.extend_from_slice(chunk);
            proto::Frame { payload }
        })
        .collect()
}

/// Puts fragments back together, refusing a message longer than `cap` bytes.
#[derive(Debug)]
pub(crate) struct Reassembler {
    buffer: Vec<u8>,
    cap: usize,
}

impl Reassembler {
    pub(crate) fn new(cap: usize) -> Self {
        Self { buffer: Vec::new(), cap }
    }

    /// A later message of the session may have another cap (the opening message's is
    /// set before the session's parameters are known).
    pub(crate) fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    /// Takes one frame; returns the message it completes, if it does.
    pub(crate) fn push(&mut self, frame: proto::Frame) -> Result<Option<Vec<u8>>, NodeError> {
        let Some((&flag, bytes)) = frame.payload.split_first() else {
            return Err(malformed("an empty frame"));
        };
        if flag != MORE && flag != LAST {
            return Err(malformed(format!("unknown fragment flag 0x{flag:02x}")));
        }
        if self.buffer.len() + bytes.len() > self.cap {
            return Err(malformed(format!(
                "a message of more than {} bytes, the most this session carries",
                self.cap
            )));
        }
        self.buffer.extend_from_slice(bytes);
        if flag == MORE {
            return Ok(None);
        }
        Ok(Some(std::mem::take(&mut self.buffer)))
    }
}

/// The coordinator's first message on each stream.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Open {
    pub contract: ContractId,
    pub epoch: Epoch,
    pub nonce: [u8; 16],
    pub contract_digest: [u8; 32],
    /// Universe mode: the public codes, strictly ascending; empty otherwise.
    pub universe: Vec<String>,
}

impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open")
            .field("contract", &self.contract)
            .field("epoch", &self.epoch)
            .field("universe", &self.universe.len())
            .finish_non_exhaustive()
    }
}

impl Open {
    fn universe_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.universe.iter().map(|k| 1 + k.len()).sum::<usize>());
        out.extend_from_slice(&(self.universe.len() as u32).to_be_bytes());
        for key in &self.universe {
            // Keys are checked against MAX_KEY_BYTES where the universe is loaded.
            out.push(key.len().min(MAX_KEY_BYTES) as u8);
            out.extend_from_slice(&key.as_bytes()[..key.len().min(MAX_KEY_BYTES)]);
        }
        out
    }

    /// SHA-256("xmcredit secagg universe v1" || universe section).
    pub(crate) fn universe_digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(UNIVERSE_DOMAIN);
        hasher.update(self.universe_bytes());
        hasher.finalize().into()
    }

    /// The session this opening message starts (see the module docs).
    pub(crate) fn binding(&self) -> SessionBinding {
        let mut hasher = Sha256::new();
        hasher.update(SESSION_DOMAIN);
        hasher.update(self.contract_digest);
        hasher.update(self.epoch.to_be_bytes());
        hasher.update(self.nonce);
        hasher.update(self.universe_digest());
        let digest = hasher.finalize();
        let mut session = [0u8; 16];
        session.copy_from_slice(&digest[..16]);
        SessionBinding { contract: self.contract.clone(), epoch: self.epoch, session: SessionId(session) }
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let contract = self.contract.as_bytes();
        let universe = self.universe_bytes();
        let mut out = Vec::with_capacity(2 + 2 + contract.len() + 8 + 16 + 32 + universe.len());
        out.push(OPEN_VERSION);
        out.push(OPEN_KIND);
        out.extend_from_slice(&(contract.len() as u16).to_be_bytes());
        out.extend_from_slice(contract);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.contract_digest);
        out.extend_from_slice(&universe);
        out
    }

    /// Decodes an opening message, refusing a universe of more than `max_universe`
    /// codes, codes that are not strictly ascending (so each appears once and the order
    /// is the one every contributor computes), and any trailing byte.
    pub(crate) fn from_bytes(bytes: &[u8], max_universe: usize) -> Result<Self, NodeError> {
        let mut reader = Reader(bytes);
        if reader.take(1)? != [OPEN_VERSION] {
            return Err(malformed("not a version 1 opening message"));
        }
        if reader.take(1)? != [OPEN_KIND] {
            return Err(malformed("the first message of a session must open it"));
        }
        let len = usize::from(reader.u16()?);
        let contract = std::str::from_utf8(reader.take(len)?)
            .ok()
            .and_then(|text| ContractId::new(text).ok())
            .ok_or_else(|| malformed("invalid contract id"))?;
        let epoch = Epoch(reader.u64()?);
        let nonce = reader.array::<16>()?;
        let contract_digest = reader.array::<32>()?;
        let count = reader.u32()? as usize;
        if count > max_universe {
            return Err(malformed(format!(
                "a universe of {count} codes; this node takes at most {max_universe}"
            )));
        }
        // Every entry is at least 2 bytes: refuse a count the bytes cannot hold before
        // reserving for it.
        if count.saturating_mul(2) > reader.0.len() {
            return Err(malformed(format!("{count} universe codes cannot fit in {} bytes", reader.0.len())));
        }
        let mut universe: Vec<String> = Vec::with_capacity(count);
        for i in 0..count {
            let len = usize::from(reader.take(1)?[0]);
            let key = std::str::from_utf8(reader.take(len)?)
                .map_err(|_| malformed(format!("universe code {i} is not UTF-8")))?;
            if key.is_empty() {
                return Err(malformed(format!("universe code {i} is empty")));
            }
            if universe.last().is_some_and(|previous| previous.as_str() >= key) {
                return Err(malformed(format!("universe code {i} is not above the one before it")));
            }
            universe.push(key.to_string());
        }
        if !reader.0.is_empty() {
            return Err(malformed(format!("{} trailing bytes after the opening message", reader.0.len())));
        }
        Ok(Self { contract, epoch, nonce, contract_digest, universe })
    }
}

/// The contract an opening message names, read from its first bytes (the first
/// fragment suffices): lets a contributor refuse a stranger before buffering the rest.
pub(crate) fn peek_contract(prefix: &[u8]) -> Option<ContractId> {
    let mut reader = Reader(prefix);
    if reader.take(2).ok()? != [OPEN_VERSION, OPEN_KIND] {
        return None;
    }
    let len = usize::from(reader.u16().ok()?);
    ContractId::new(std::str::from_utf8(reader.take(len).ok()?).ok()?).ok()
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NodeError> {
        if self.0.len() < n {
            return Err(malformed("the opening message is truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], NodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, NodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, NodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, NodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

/// SHA-256 over the sum vector as I2OSP(v, 8) per entry, in order: lets a checker
/// compare a long result without shipping it.
pub fn sum_digest(values: &[u64]) -> String {
    let mut hasher = Sha256::new();
    for value in values {
        hasher.update(value.to_be_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn open(universe: &[&str]) -> Open {
        Open {
            contract: ContractId::new("c-1").unwrap(),
            epoch: Epoch(2),
            nonce: [0x11; 16],
            contract_digest: [0x22; 32],
            universe: universe.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn opening_message_bytes() {
        let expected = [
            "01f0",                                                             // version 1, kind open
            "0003",                                                             // I2OSP(len(contract), 2)
            "632d31",                                                           // "c-1"
            "0000000000000002",                                                 // epoch 2
            "11111111111111111111111111111111",                                 // nonce
            "2222222222222222222222222222222222222222222222222222222222222222", // digest
            "00000002",                                                         // two universe codes
            "01",
            "41", // "A"
            "02",
            "4243", // "BC"
        ]
        .concat();
        let message = open(&["A", "BC"]);
        assert_eq!(hex::encode(message.to_bytes()), expected);
        assert_eq!(Open::from_bytes(&message.to_bytes(), 10).unwrap(), message);
    }

    #[test]
    fn the_contract_is_read_from_the_first_fragment() {
        let bytes = open(&["A"]).to_bytes();
        assert_eq!(peek_contract(&bytes[..7]), Some(ContractId::new("c-1").unwrap()));
        assert_eq!(peek_contract(&bytes[..6]), None, "truncated id");
        assert_eq!(peek_contract(&[0x01, 0x00, 0x00, 0x01, b'c']), None, "not an opening message");
    }

    #[test]
    fn the_session_commits_to_the_universe_and_the_contract() {
        let a = open(&["A", "B"]).binding();
        assert_eq!(a, open(&["A", "B"]).binding());
        assert_ne!(a.session, open(&["A", "C"]).binding().session);
        assert_ne!(a.session, open(&["A"]).binding().session);
        let mut other = open(&["A", "B"]);
        other.contract_digest[0] ^= 1;
        assert_ne!(a.session, other.binding().session);
        let mut other = open(&["A", "B"]);
        other.nonce[15] ^= 1;
        assert_ne!(a.session, other.binding().session);
    }

    #[test]
    fn bad_opening_messages_are_refused() {
        let good = open(&["A", "B"]).to_bytes();
        assert!(Open::from_bytes(&good, 1).is_err(), "universe over the node's limit");
        assert!(Open::from_bytes(&good[..good.len() - 1], 10).is_err(), "truncated");
        let mut long = good.clone();
        long.push(0);
        assert!(Open::from_bytes(&long, 10).is_err(), "trailing byte");
        let unsorted = open(&["B", "A"]).to_bytes();
        assert!(Open::from_bytes(&unsorted, 10).is_err(), "not ascending");
        let repeated = open(&["A", "A"]).to_bytes();
        assert!(Open::from_bytes(&repeated, 10).is_err(), "repeated code");
        let mut kind = good.clone();
        kind[1] = 0x00;
        assert!(Open::from_bytes(&kind, 10).is_err(), "a protocol message first");
        let mut count = good;
        count[2 + 2 + 3 + 8 + 16 + 32..][..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Open::from_bytes(&count, usize::MAX).is_err(), "a count the bytes cannot hold");
    }

    #[test]
    fn fragments_reassemble_under_the_cap() {
        let message: Vec<u8> = (0..(2 * FRAGMENT_BYTES + 5)).map(|i| i as u8).collect();
        let frames = fragments(&message);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].payload[0], MORE);
        assert_eq!(frames[2].payload[0], LAST);
        let mut reassembler = Reassembler::new(message.len());
        let mut out = None;
        for frame in frames.clone() {
            assert!(out.is_none());
            out = reassembler.push(frame).unwrap();
        }
        assert_eq!(out.unwrap(), message);

        let mut small = Reassembler::new(message.len() - 1);
        let refused = frames.into_iter().try_for_each(|f| small.push(f).map(|_| ()));
        assert!(refused.is_err(), "a message over the cap");

        let mut r = Reassembler::new(10);
        assert!(r.push(proto::Frame { payload: vec![] }).is_err(), "empty frame");
        assert!(r.push(proto::Frame { payload: vec![7, 1] }).is_err(), "unknown flag");
        assert_eq!(fragments(&[]).len(), 1);
        assert_eq!(r.push(fragments(&[]).remove(0)).unwrap(), Some(vec![]));
    }

    #[test]
    fn sum_digest_is_over_big_endian_entries() {
        let expected = hex::encode(Sha256::digest([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0]));
        assert_eq!(sum_digest(&[1, 256]), expected);
    }
}
