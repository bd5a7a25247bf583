//! The exact bytes secure aggregation signs, derives keys from and authenticates, so
//! another implementation can reproduce them. `binding` is
//! [`SessionBinding::to_bytes`]; `id(x)` is `I2OSP(len(x), 1) || x` (a node id is at
//! most 63 ASCII bytes); `lo`/`hi` are the two node ids of a pair in byte order, so both
//! ends derive the same context.
//!
//! ```text
//! advertisement signed (round 0) = "xmcredit secagg v1 advertise-keys"
//!                                  || binding || id(sender) || c_pk (32) || s_pk (32)
//! share key c_uv (round 1)       = c_sk_u.agree(c_pk_v, "xmcredit secagg v1 share-key"
//!                                  || binding || id(lo) || id(hi))
//! share nonce u -> v             = I2OSP(index(u), 4) || I2OSP(index(v), 4) || 0x00000000
//! share associated data u -> v   = "xmcredit secagg v1 share-ad" || binding || id(u) || id(v)
//! share plaintext                = s_sk share value (32) || b share value (32)
//! pair mask seed s_uv (round 2)  = s_sk_u.agree(s_pk_v, "xmcredit secagg v1 mask-seed"
//!                                  || binding || id(lo) || id(hi))
//! self-mask seed                 = the 32-byte little-endian encoding of the scalar b_u
//! y_u = x_u + PRG(b_u) + Σ_{v ∈ U2, v ≠ u} γ_uv · PRG(s_uv)  mod 2^64,
//!       γ_uv = +1 if id(u) > id(v) in byte order, -1 otherwise (the paper's sign rule)
//! ```
//!
//! `c_uv` is the same key in both directions; the nonce names the ordered pair of Shamir
//! indices, and each ordered pair seals exactly one message per session (the DH keys
//! are fresh per session), so no nonce repeats under one key.

use curve25519_dalek::scalar::Scalar;
use xmcredit_crypto::aead::AeadKey;
use xmcredit_crypto::dh::{DhPublic, DhSecret};
use xmcredit_crypto::prg::{MaskSign, Seed};
use xmcredit_crypto::NodeId;

use super::setup::PartyIndex;
use crate::SessionBinding;

const ADVERTISE_LABEL: &[u8] = b"xmcredit secagg v1 advertise-keys";
const SHARE_KEY_LABEL: &[u8] = b"xmcredit secagg v1 share-key";
const SHARE_AD_LABEL: &[u8] = b"xmcredit secagg v1 share-ad";
const MASK_SEED_LABEL: &[u8] = b"xmcredit secagg v1 mask-seed";

fn push_id(out: &mut Vec<u8>, id: &NodeId) {
    // NodeId is at most 63 ASCII bytes by construction, so one length byte suffices.
    out.push(id.as_str().len() as u8);
    out.extend_from_slice(id.as_str().as_bytes());
}

/// The message a contributor signs in round 0.
pub(crate) fn advertisement_payload(
    binding: &SessionBinding,
    sender: &NodeId,
    encryption_key: &DhPublic,
    mask_key: &DhPublic,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(ADVERTISE_LABEL.len() + 128 + 64);
    out.extend_from_slice(ADVERTISE_LABEL);
    out.extend_from_slice(&binding.to_bytes());
    push_id(&mut out, sender);
    out.extend_from_slice(&encryption_key.to_bytes());
    out.extend_from_slice(&mask_key.to_bytes());
    out
}

/// HKDF info for a pairwise key: symmetric in (a, b) so both ends agree.
fn pair_context(label: &[u8], binding: &SessionBinding, a: &NodeId, b: &NodeId) -> Vec<u8> {
    let (lo, hi) = if a.as_str().as_bytes() <= b.as_str().as_bytes() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(label.len() + 96 + 128);
    out.extend_from_slice(label);
    out.extend_from_slice(&binding.to_bytes());
    push_id(&mut out, lo);
    push_id(&mut out, hi);
    out
}

/// The AEAD key `c_uv` that seals the share pair between `me` and `peer`.
pub(crate) fn share_key(
    encryption_secret: &DhSecret,
    peer_encryption_key: &DhPublic,
    binding: &SessionBinding,
    me: &NodeId,
    peer: &NodeId,
) -> AeadKey {
    let shared =
        encryption_secret.agree(peer_encryption_key, &pair_context(SHARE_KEY_LABEL, binding, me, peer));
    AeadKey(*shared)
}

/// The nonce of the one message `sender` seals for `receiver`.
pub(crate) fn share_nonce(sender: PartyIndex, receiver: PartyIndex) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&sender.get().to_be_bytes());
    nonce[4..8].copy_from_slice(&receiver.get().to_be_bytes());
    nonce
}

/// Associated data of the share pair `sender` seals for `receiver` (the paper's `u ‖ v`).
pub(crate) fn share_associated_data(binding: &SessionBinding, sender: &NodeId, receiver: &NodeId) -> Vec<u8> {
    let mut out = Vec::with_capacity(SHARE_AD_LABEL.len() + 96 + 128);
    out.extend_from_slice(SHARE_AD_LABEL);
    out.extend_from_slice(&binding.to_bytes());
    push_id(&mut out, sender);
    push_id(&mut out, receiver);
    out
}

/// The PRG seed `s_uv` of the pairwise mask between `me` and `peer`.
pub(crate) fn pair_mask_seed(
    mask_secret: &DhSecret,
    peer_mask_key: &DhPublic,
    binding: &SessionBinding,
    me: &NodeId,
    peer: &NodeId,
) -> Seed {
    let shared = mask_secret.agree(peer_mask_key, &pair_context(MASK_SEED_LABEL, binding, me, peer));
    Seed(*shared)
}

/// The sign `γ_uv` with which `u` adds the pairwise mask shared with `v`: `+` when
/// `u > v` in byte order (Bonawitz et al. 2017, §4: γ = 1 if u > v, −1 if u < v), so
/// the two ends' masks cancel in the sum.
pub(crate) fn pair_sign(u: &NodeId, v: &NodeId) -> MaskSign {
    if u.as_str().as_bytes() > v.as_str().as_bytes() {
        MaskSign::Add
    } else {
        MaskSign::Subtract
    }
}

/// The opposite sign, with which the coordinator removes a mask.
pub(crate) fn reverse(sign: MaskSign) -> MaskSign {
    match sign {
        MaskSign::Add => MaskSign::Subtract,
        MaskSign::Subtract => MaskSign::Add,
    }
}

/// The PRG seed of the self-mask: the scalar's canonical 32-byte encoding.
pub(crate) fn self_mask_seed(b: &Scalar) -> Seed {
    Seed(b.to_bytes())
}
