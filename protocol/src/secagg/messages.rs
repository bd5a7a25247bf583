//! Wire messages of secure aggregation and their byte encodings (the node carries them
//! over gRPC as opaque bytes).
//!
//! Every message is `header || binding || body`. Integers are big-endian (I2OSP).
//!
//! ```text
//! header      = version (1) = 0x01 || kind (1)
//!               kind: high nibble the paper's round, low nibble the direction
//!               (0 = to the coordinator, 1 = from it)
//! binding     = I2OSP(len(contract), 2) || contract || I2OSP(epoch, 8) || session (16)
//!               (the same bytes as SessionBinding::to_bytes)
//! id          = I2OSP(len, 1) || node id (1..=63 bytes of a-z 0-9 -)
//! keys        = id || c_pk (32) || s_pk (32) || Ed25519 signature (64)
//!
//! 0x00 AdvertiseKeys   binding || keys
//! 0x01 KeyList         binding || I2OSP(count, 2) || count × keys
//! 0x10 EncryptedShares binding || id(sender) || I2OSP(count, 2) || count × (id(to) || sealed (80))
//! 0x11 ShareRelay      binding || id(recipient) || I2OSP(count, 2) || count × (id(from) || sealed (80))
//! 0x20 MaskedInput     binding || id(sender) || I2OSP(len, 4) || len × I2OSP(y_i, 8)
//! 0x41 UnmaskRequest   binding || I2OSP(count, 2) || count × id (survivors, U3)
//!                              || I2OSP(count, 2) || count × id (dropped, U2 \ U3)
//! 0x40 UnmaskResponse  binding || id(sender)
//!                              || I2OSP(count, 2) || count × (id(owner) || b share (32))
//!                              || I2OSP(count, 2) || count × (id(owner) || s_sk share (32))
//! ```
//!
//! Decoders refuse a wrong version or kind, a short or long message, a field of the
//! wrong length, an invalid node id or contract id, a non-canonical DH key or scalar,
//! all with [`ProtocolError::Malformed`]. They check only shape: the states check
//! membership, binding and sender.

use std::fmt;

use curve25519_dalek::scalar::Scalar;
use xmcredit_crypto::aead::TAG_LEN;
use xmcredit_crypto::dh::DhPublic;
use xmcredit_crypto::group::{decode_scalar, ELEMENT_LEN, SCALAR_LEN};
use xmcredit_crypto::sign::{Signature, SIGNATURE_LEN};
use xmcredit_crypto::{CryptoError, NodeId};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::wire;
use crate::{ProtocolError, SessionBinding};

/// Version byte that starts every secure-aggregation message.
pub const WIRE_VERSION: u8 = 1;

/// Length of a sealed share pair: two scalars and the Poly1305 tag.
pub const SEALED_SHARES_LEN: usize = 2 * SCALAR_LEN + TAG_LEN;

/// The kind byte of each message (high nibble: paper round; low nibble: 0 towards the
/// coordinator, 1 from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    AdvertiseKeys,
    KeyList,
    EncryptedShares,
    ShareRelay,
    MaskedInput,
    UnmaskResponse,
    UnmaskRequest,
}

impl MessageKind {
    pub fn code(self) -> u8 {
        match self {
            MessageKind::AdvertiseKeys => 0x00,
            MessageKind::KeyList => 0x01,
            MessageKind::EncryptedShares => 0x10,
            MessageKind::ShareRelay => 0x11,
            MessageKind::MaskedInput => 0x20,
            MessageKind::UnmaskResponse => 0x40,
            MessageKind::UnmaskRequest => 0x41,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x00 => MessageKind::AdvertiseKeys,
            0x01 => MessageKind::KeyList,
            0x10 => MessageKind::EncryptedShares,
            0x11 => MessageKind::ShareRelay,
            0x20 => MessageKind::MaskedInput,
            0x40 => MessageKind::UnmaskResponse,
            0x41 => MessageKind::UnmaskRequest,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            MessageKind::AdvertiseKeys => "AdvertiseKeys",
            MessageKind::KeyList => "KeyList",
            MessageKind::EncryptedShares => "EncryptedShares",
            MessageKind::ShareRelay => "ShareRelay",
            MessageKind::MaskedInput => "MaskedInput",
            MessageKind::UnmaskResponse => "UnmaskResponse",
            MessageKind::UnmaskRequest => "UnmaskRequest",
        }
    }
}

// ---- Field types ---------------------------------------------------------------------

/// A contributor's two round-0 public keys, signed with its identity key over
/// `derive::advertisement_payload` (Bonawitz et al. 2017, round 0: `(c_u^PK, s_u^PK)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedKeys {
    pub node: NodeId,
    /// `c_u^PK`: agrees the keys that seal share pairs.
    pub encryption_key: DhPublic,
    /// `s_u^PK`: agrees the seeds of pairwise masks.
    pub mask_key: DhPublic,
    pub signature: Signature,
}

/// One share pair sealed for one peer (ChaCha20-Poly1305 ciphertext and tag).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedShares(pub [u8; SEALED_SHARES_LEN]);

impl SealedShares {
    /// Refuses anything but exactly [`SEALED_SHARES_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtocolError> {
        bytes.try_into().map(Self).map_err(|_| ProtocolError::Malformed {
            what: "sealed share pair",
            reason: format!("{} bytes, want {SEALED_SHARES_LEN}", bytes.len()),
        })
    }
}

impl fmt::Debug for SealedShares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedShares({}…)", hex::encode(&self.0[..8]))
    }
}

/// The value `f(i)` of one Shamir share, `i` being the revealing party's index.
/// Zeroized on drop, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ShareValue(Scalar);

impl ShareValue {
    pub(crate) fn new(value: Scalar) -> Self {
        Self(value)
    }

    /// Decodes a canonical scalar.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        decode_scalar(bytes).map(Self)
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; SCALAR_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub(crate) fn scalar(&self) -> &Scalar {
        &self.0
    }
}

impl fmt::Debug for ShareValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShareValue(<redacted>)")
    }
}

/// A share revealed in round 4, naming whose secret it is a share of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevealedShare {
    pub owner: NodeId,
    pub value: ShareValue,
}

// ---- Messages ------------------------------------------------------------------------

/// Round 0, contributor → coordinator: `(c_u^PK, s_u^PK)` and the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertiseKeys {
    pub binding: SessionBinding,
    pub keys: SignedKeys,
}

/// Round 0 → 1, coordinator → every member of U1: all advertisements received, in
/// roster order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyList {
    pub binding: SessionBinding,
    pub entries: Vec<SignedKeys>,
}

/// One sealed share pair and its recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharesFor {
    pub to: NodeId,
    pub sealed: SealedShares,
}

/// Round 1, contributor → coordinator: a sealed share pair for every other member of U1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedShares {
    pub binding: SessionBinding,
    pub sender: NodeId,
    pub shares: Vec<SharesFor>,
}

/// One sealed share pair and its sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharesFrom {
    pub from: NodeId,
    pub sealed: SealedShares,
}

/// Round 1 → 2, coordinator → one member of U2: the pairs every other member of U2
/// sealed for it. Its senders plus the recipient are U2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRelay {
    pub binding: SessionBinding,
    pub recipient: NodeId,
    pub shares: Vec<SharesFrom>,
}

/// Round 2, contributor → coordinator: `y_u`.
#[derive(Clone, PartialEq, Eq)]
pub struct MaskedInput {
    pub binding: SessionBinding,
    pub sender: NodeId,
    pub masked: Vec<u64>,
}

impl fmt::Debug for MaskedInput {
    // Up to 2^24 elements: logs get the length, not the vector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaskedInput")
            .field("binding", &self.binding)
            .field("sender", &self.sender)
            .field("len", &self.masked.len())
            .finish()
    }
}

/// Round 2 → 4, coordinator → every member of U3: reveal the self-mask share of each
/// survivor and the mask-key share of each dropped node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskRequest {
    pub binding: SessionBinding,
    /// U3: the contributors whose masked input the coordinator holds.
    pub survivors: Vec<NodeId>,
    /// U2 \ U3: the contributors that shared keys but sent no masked input.
    pub dropped: Vec<NodeId>,
}

/// Round 4, contributor → coordinator: the shares asked for, in the request's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskResponse {
    pub binding: SessionBinding,
    pub sender: NodeId,
    /// Shares of `b_v` for each survivor `v` (including the sender itself).
    pub self_mask_shares: Vec<RevealedShare>,
    /// Shares of `s_v^SK` for each dropped `v`.
    pub mask_key_shares: Vec<RevealedShare>,
}

/// Any secure-aggregation message, for a driver that receives bytes on one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecAggMessage {
    /// Boxed: two decoded points and a signature make it several times the others' size.
    AdvertiseKeys(Box<AdvertiseKeys>),
    KeyList(KeyList),
    EncryptedShares(EncryptedShares),
    ShareRelay(ShareRelay),
    MaskedInput(MaskedInput),
    UnmaskRequest(UnmaskRequest),
    UnmaskResponse(UnmaskResponse),
}

impl SecAggMessage {
    /// Decodes any message by its kind byte.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let code = *bytes.get(1).ok_or_else(|| ProtocolError::Malformed {
            what: "secagg message",
            reason: format!("{} bytes, shorter than the header", bytes.len()),
        })?;
        let kind = MessageKind::from_code(code).ok_or_else(|| ProtocolError::Malformed {
            what: "secagg message",
            reason: format!("unknown kind 0x{code:02x}"),
        })?;
        Ok(match kind {
            MessageKind::AdvertiseKeys => Self::AdvertiseKeys(Box::new(AdvertiseKeys::from_bytes(bytes)?)),
            MessageKind::KeyList => Self::KeyList(KeyList::from_bytes(bytes)?),
            MessageKind::EncryptedShares => Self::EncryptedShares(EncryptedShares::from_bytes(bytes)?),
            MessageKind::ShareRelay => Self::ShareRelay(ShareRelay::from_bytes(bytes)?),
            MessageKind::MaskedInput => Self::MaskedInput(MaskedInput::from_bytes(bytes)?),
            MessageKind::UnmaskRequest => Self::UnmaskRequest(UnmaskRequest::from_bytes(bytes)?),
            MessageKind::UnmaskResponse => Self::UnmaskResponse(UnmaskResponse::from_bytes(bytes)?),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::AdvertiseKeys(m) => m.to_bytes(),
            Self::KeyList(m) => m.to_bytes(),
            Self::EncryptedShares(m) => m.to_bytes(),
            Self::ShareRelay(m) => m.to_bytes(),
            Self::MaskedInput(m) => m.to_bytes(),
            Self::UnmaskRequest(m) => m.to_bytes(),
            Self::UnmaskResponse(m) => m.to_bytes(),
        }
    }
}

// ---- Encoding ------------------------------------------------------------------------

/// The shared length-checked writer (`crate::wire`) with SecAgg's own fields: one-byte
/// node ids, two-byte list counts, signed keys and revealed shares.
struct Writer(wire::Writer);

impl Writer {
    fn new(kind: MessageKind, binding: &SessionBinding, capacity: usize) -> Self {
        Self(wire::Writer::new(WIRE_VERSION, kind.code(), binding, capacity))
    }

    fn id(&mut self, id: &NodeId) {
        // At most 63 bytes by NodeId's syntax.
        self.0.u8(id.as_str().len() as u8);
        self.0.bytes(id.as_str().as_bytes());
    }

    fn count(&mut self, count: usize) {
        // Lists are bounded by the roster (MAX_PARTIES < 2^16); a larger list is a
        // local bug that the receiver would refuse as a count mismatch.
        self.0.u16(count.min(u16::MAX as usize) as u16);
    }

    fn keys(&mut self, keys: &SignedKeys) {
        self.id(&keys.node);
        self.0.bytes(&keys.encryption_key.to_bytes());
        self.0.bytes(&keys.mask_key.to_bytes());
        self.0.bytes(&keys.signature.0);
    }

    fn revealed(&mut self, shares: &[RevealedShare]) {
        self.count(shares.len());
        for share in shares {
            self.id(&share.owner);
            self.0.bytes(share.value.to_bytes().as_ref());
        }
    }
}

/// The shared length-checked reader (`crate::wire`) with SecAgg's own fields.
struct Reader<'a>(wire::Reader<'a>);

impl<'a> std::ops::Deref for Reader<'a> {
    type Target = wire::Reader<'a>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a> Reader<'a> {
    /// Checks the header and reads the binding.
    fn open(bytes: &'a [u8], kind: MessageKind) -> Result<(Self, SessionBinding), ProtocolError> {
        let mut reader = wire::Reader::new(bytes, kind.name());
        reader.version(WIRE_VERSION)?;
        let code = reader.u8()?;
        if code != kind.code() {
            return Err(reader.malformed(format!("kind 0x{code:02x}, expected 0x{:02x}", kind.code())));
        }
        let binding = reader.binding()?;
        Ok((Self(reader), binding))
    }

    fn id(&mut self) -> Result<NodeId, ProtocolError> {
        let len = self.u8()? as usize;
        let raw = self.take(len)?;
        let text = std::str::from_utf8(raw).map_err(|_| self.malformed("node id is not UTF-8"))?;
        NodeId::new(text).map_err(|e| self.malformed(e.to_string()))
    }

    /// A two-byte list count, refused if the bytes left cannot hold that many entries of
    /// at least `min_entry` bytes (so a forged count cannot make us allocate).
    fn count(&mut self, min_entry: usize) -> Result<usize, ProtocolError> {
        let count = self.u16()? as usize;
        if count * min_entry > self.remaining() {
            return Err(self.malformed(format!("{count} entries cannot fit in {} bytes", self.remaining())));
        }
        Ok(count)
    }

    fn dh_public(&mut self, field: &str) -> Result<DhPublic, ProtocolError> {
        let raw = self.take(ELEMENT_LEN)?;
        DhPublic::from_bytes(raw).map_err(|e| self.malformed(format!("{field}: {e}")))
    }

    fn keys(&mut self) -> Result<SignedKeys, ProtocolError> {
        let node = self.id()?;
        let encryption_key = self.dh_public("encryption key")?;
        let mask_key = self.dh_public("mask key")?;
        let signature = Signature(self.array::<SIGNATURE_LEN>()?);
        Ok(SignedKeys { node, encryption_key, mask_key, signature })
    }

    fn sealed(&mut self) -> Result<SealedShares, ProtocolError> {
        Ok(SealedShares(self.array()?))
    }

    fn revealed(&mut self) -> Result<Vec<RevealedShare>, ProtocolError> {
        let count = self.count(2 + SCALAR_LEN)?;
        let mut shares = Vec::with_capacity(count);
        for _ in 0..count {
            let owner = self.id()?;
            let raw = self.take(SCALAR_LEN)?;
            let value =
                ShareValue::from_bytes(raw).map_err(|e| self.malformed(format!("share of {owner}: {e}")))?;
            shares.push(RevealedShare { owner, value });
        }
        Ok(shares)
    }

    fn finish(self) -> Result<(), ProtocolError> {
        self.0.finish()
    }
}

/// Smallest encoded `keys`: a one-byte id.
const MIN_KEYS_LEN: usize = 2 + 2 * ELEMENT_LEN + SIGNATURE_LEN;
/// Smallest encoded `(id || sealed)` entry.
const MIN_SEALED_ENTRY_LEN: usize = 2 + SEALED_SHARES_LEN;

impl AdvertiseKeys {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(MessageKind::AdvertiseKeys, &self.binding, MIN_KEYS_LEN + 63);
        w.keys(&self.keys);
        w.0.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let (mut r, binding) = Reader::open(bytes, MessageKind::AdvertiseKeys)?;
        let keys = r.keys()?;
        r.finish()?;
        Ok(Self { binding, keys })
    }
}

impl KeyList {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w =
            Writer::new(MessageKind::KeyList, &self.binding, 2 + self.entries.len() * (MIN_KEYS_LEN + 63));
        w.count(self.entries.len());
        for entry in &self.entries {
            w.keys(entry);
        }
        w.0.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let (mut r, binding) = Reader::open(bytes, MessageKind::KeyList)?;
        let count = r.count(MIN_KEYS_LEN)?;
        let entries = (0..count).map(|_| r.keys()).collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(Self { binding, entries })
    }
}

impl EncryptedShares {
    pub fn to_bytes(&self) -> Vec<u8> {
        let capacity = 64 + 2 + self.shares.len() * (MIN_SEALED_ENTRY_LEN + 63);
        let mut w = Writer::new(MessageKind::EncryptedShares, &self.binding, capacity);
        w.id(&self.sender);
        w.count(self.shares.len());
        for entry in &self.shares {
            w.id(&entry.to);
            w.0.bytes(&entry.sealed.0);
        }
        w.0.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let (mut r, binding) = Reader::open(bytes, MessageKind::EncryptedShares)?;
        let sender = r.id()?;
        let count = r.count(MIN_SEALED_ENTRY_LEN)?;
        let mut shares = Vec::with_capacity(count);
        for _ in 0..count {
            let to = r.id()?;
            let sealed = r.sealed()?;
            shares.push(SharesFor { to, sealed });
        }
        r.finish()?;
        Ok(Self { binding, sender, shares })
    }
}

impl ShareRelay {
    pub fn to_bytes(&self) -> Vec<u8> {
        let capacity = 64 + 2 + self.shares.len() * (MIN_SEALED_ENTRY_LEN + 63);
        let mut w = Writer::new(MessageKind::ShareRelay, &self.binding, capacity);
        w.id(&self.recipient);
        w.count(self.shares.len());
        for entry in &self.shares {
            w.id(&entry.from);
            w.0.bytes(&entry.sealed.0);
        }
        w.0.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let (mut r, binding) = Reader::open(bytes, MessageKind::ShareRelay)?;
        let recipient = r.id()?;
        let count = r.count(MIN_SEALED_ENTRY_LEN)?;
        let mut shares = Vec::with_capacity(count);
        for _ in 0..count {
            let from = r.id()?;
            let sealed = r.sealed()?;
            shares.push(SharesFrom { from, sealed });
        }
        r.finish()?;
        Ok(Self { binding, recipient, shares })
    }
}

impl MaskedInput {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(MessageKind::MaskedInput, &self.binding, 64 + 4 + 8 * self.masked.len());
        w.id(&self.sender);
        // Setup caps vectors at MAX_VECTOR_LEN < 2^32; a longer one is a local bug the
        // receiver refuses as a length mismatch.
        w.0.u32(self.masked.len().min(u32::MAX as usize) as u32);
        for value in &self.masked {
            w.0.u64(*value);
        }
        w.0.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let (mut r, binding) = Reader::open(bytes, MessageKind::MaskedInput)?;
        let sender = r.id()?;
        let len = r.u32()? as usize;
        // Exact length check before allocating: the count must match the bytes sent.
        if len.checked_mul(8) != Some(r.remaining()) {
            return Err(r.malformed(format!("{len} elements declared, {} bytes follow", r.remaining())));
        }
        let body = r.take(len * 8)?;
        let masked = body
            .chunks_exact(8)
            .map(|chunk| {
                let mut be = [0u8; 8];
                be.copy_from_slice(chunk);
                u64::from_be_bytes(be)
            })
            .collect();
        r.finish()?;
        Ok(Self { binding, sender, masked })
    }
}

impl UnmaskRequest {
    pub fn to_bytes(&self) -> Vec<u8> {
        let capacity = 4 + (self.survivors.len() + self.dropped.len()) * 64;
        let mut w = Writer::new(MessageKind::UnmaskRequest, &self.binding, capacity);
        for list in [&self.survivors, &self.dropped] {
            w.count(list.len());
            for id in list {
                w.id(id);
            }
        }
        w.0.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let (mut r, binding) = Reader::open(bytes, MessageKind::UnmaskRequest)?;
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let count = r.count(2)?;
            *list = (0..count).map(|_| r.id()).collect::<Result<_, _>>()?;
        }
        r.finish()?;
        let [survivors, dropped] = lists;
        Ok(Self { binding, survivors, dropped })
    }
}

impl UnmaskResponse {
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries = self.self_mask_shares.len() + self.mask_key_shares.len();
        let mut w =
            Writer::new(MessageKind::UnmaskResponse, &self.binding, 64 + 4 + entries * (64 + SCALAR_LEN));
        w.id(&self.sender);
        w.revealed(&self.self_mask_shares);
        w.revealed(&self.mask_key_shares);
        w.0.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let (mut r, binding) = Reader::open(bytes, MessageKind::UnmaskResponse)?;
        let sender = r.id()?;
        let self_mask_shares = r.revealed()?;
        let mask_key_shares = r.revealed()?;
        r.finish()?;
        Ok(Self { binding, sender, self_mask_shares, mask_key_shares })
    }
}
