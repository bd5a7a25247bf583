//! The contributor (the paper's user `u`): three states, each consuming one message
//! from the coordinator. Any error ends the run: a contributor that refuses a message
//! sends nothing more, so it never reveals more than the round it refused allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use curve25519_dalek::scalar::Scalar;
use rand_core::CryptoRngCore;
use xmcredit_crypto::aead::AeadKey;
use xmcredit_crypto::dh::{DhPublic, DhSecret};
use xmcredit_crypto::prg::{apply_masks, MaskSign, Seed};
use xmcredit_crypto::shamir::{split, Share};
use xmcredit_crypto::sign::IdentityKey;
use xmcredit_crypto::{CryptoError, NodeId};
use zeroize::Zeroizing;

use super::derive;
use super::messages::{
    AdvertiseKeys, EncryptedShares, KeyList, MaskedInput, RevealedShare, SealedShares, ShareRelay,
    ShareValue, SharesFor, SignedKeys, UnmaskRequest, UnmaskResponse,
};
use super::setup::{PartyIndex, Setup};
use super::Round;
use crate::ProtocolError;

/// The contributor's private vector `x_u`: zeroized on drop, only its length in `Debug`.
struct PrivateInput(Zeroizing<Vec<u64>>);

impl fmt::Debug for PrivateInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateInput(<{} elements redacted>)", self.0.len())
    }
}

/// Who this contributor is in the session.
#[derive(Debug)]
struct Me {
    setup: Setup,
    id: NodeId,
    index: PartyIndex,
}

impl Me {
    /// Every message a contributor takes comes from the coordinator, over the session's
    /// binding.
    fn check_envelope(&self, sender: &NodeId, binding: &crate::SessionBinding) -> Result<(), ProtocolError> {
        let coordinator = self.setup.roster().coordinator();
        if sender != coordinator {
            return Err(ProtocolError::UnexpectedSender {
                expected: coordinator.to_string(),
                got: sender.clone(),
            });
        }
        self.setup.binding().check(binding)
    }

    fn require_threshold(&self, round: Round, got: usize) -> Result<(), ProtocolError> {
        let threshold = self.setup.threshold();
        if got < threshold {
            return Err(ProtocolError::BelowThreshold { round, got, threshold });
        }
        Ok(())
    }
}

/// Round 0 done: the contributor advertised its keys and waits for the key list
/// (Bonawitz et al. 2017, Figure 4, round 1 "ShareKeys", user side).
pub struct AwaitingKeyList {
    me: Me,
    input: PrivateInput,
    encryption_secret: DhSecret,
    mask_secret: DhSecret,
    encryption_key: DhPublic,
    mask_key: DhPublic,
}

impl fmt::Debug for AwaitingKeyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwaitingKeyList")
            .field("me", &self.me.id)
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

impl AwaitingKeyList {
    /// Round 0 (AdvertiseKeys): checks the input against the declared width, makes the
    /// two DH key pairs and signs them with the node's identity.
    ///
    /// Refuses, before any key exists, an input of the wrong length
    /// ([`ProtocolError::VectorLength`]), an element above `2^bits - 1`
    /// ([`ProtocolError::InputTooWide`]), a node outside the roster, and an identity key
    /// that is not the roster's (every peer would refuse the signature anyway).
    pub fn start(
        setup: Setup,
        me: NodeId,
        identity: &IdentityKey,
        input: Vec<u64>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Self, AdvertiseKeys), ProtocolError> {
        // Wrap first so the input is zeroized on every path, refusals included.
        let input = PrivateInput(Zeroizing::new(input));
        let index = setup.roster().require(&me)?;
        if setup.roster().party(index).identity != identity.public_key() {
            return Err(ProtocolError::InvalidSetup {
                reason: format!("the identity key given is not the roster's key for {me}"),
            });
        }
        let spec = setup.vector();
        if input.0.len() != spec.len {
            return Err(ProtocolError::VectorLength { expected: spec.len, got: input.0.len() });
        }
        let max = spec.max_element();
        if let Some((index, &value)) = input.0.iter().enumerate().find(|(_, &v)| v > max) {
            return Err(ProtocolError::InputTooWide { index, value, bits: spec.bits });
        }

        // Distributed noise goes on before any mask (and after the width check, which is
        // about the data): the masked input then carries it, and the unmasked sum the
        // total. The input stays in its zeroizing wrapper, noise included.
        let mut input = input;
        if let Some(noise) = setup.noise() {
            noise.share().add_to(&mut input.0, rng);
        }

        let encryption_secret = DhSecret::generate(rng);
        let mask_secret = DhSecret::generate(rng);
        let encryption_key = encryption_secret.public();
        let mask_key = mask_secret.public();
        let payload = derive::advertisement_payload(setup.binding(), &me, &encryption_key, &mask_key);
        let message = AdvertiseKeys {
            binding: setup.binding().clone(),
            keys: SignedKeys {
                node: me.clone(),
                encryption_key,
                mask_key,
                signature: identity.sign(&payload),
            },
        };
        let state = Self {
            me: Me { setup, id: me, index },
            input,
            encryption_secret,
            mask_secret,
            encryption_key,
            mask_key,
        };
        Ok((state, message))
    }

    pub fn me(&self) -> &NodeId {
        &self.me.id
    }

    /// Round 1 (ShareKeys): checks the coordinator's key list, then shares the mask key
    /// `s_u^SK` and a fresh self-mask seed `b_u` t-of-n and seals each peer's pair under
    /// the pairwise key.
    ///
    /// Refuses a list with a node outside the roster, a node listed twice, a signature
    /// that does not verify under the roster's key for this binding
    /// ([`ProtocolError::BadKeySignature`]: forged, altered, or replayed from another
    /// session), a DH key used twice ([`ProtocolError::DuplicateKey`]), a list that
    /// leaves out or alters this contributor's own keys, and fewer than `t` entries.
    pub fn handle(
        self,
        sender: &NodeId,
        message: KeyList,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(AwaitingShares, EncryptedShares), ProtocolError> {
        let me = &self.me;
        me.check_envelope(sender, &message.binding)?;
        let roster = me.setup.roster();
        let binding = me.setup.binding();

        let mut u1: BTreeMap<PartyIndex, SignedKeys> = BTreeMap::new();
        let mut seen_keys = BTreeSet::new();
        for entry in message.entries {
            let index = roster.require(&entry.node)?;
            if u1.contains_key(&index) {
                return Err(ProtocolError::Malformed {
                    what: "KeyList",
                    reason: format!("{} is listed twice", entry.node),
                });
            }
            let payload =
                derive::advertisement_payload(binding, &entry.node, &entry.encryption_key, &entry.mask_key);
            roster
                .party(index)
                .identity
                .verify(&payload, &entry.signature)
                .map_err(|_| ProtocolError::BadKeySignature { from: entry.node.clone() })?;
            // Round 0: "assert that all the public key pairs are different"; a copied
            // key would let its copier share a mask or an encryption key with a victim.
            for key in [&entry.encryption_key, &entry.mask_key] {
                if !seen_keys.insert(key.to_bytes()) {
                    return Err(ProtocolError::DuplicateKey { from: entry.node.clone() });
                }
            }
            u1.insert(index, entry);
        }
        match u1.get(&me.index) {
            Some(own) if own.encryption_key == self.encryption_key && own.mask_key == self.mask_key => {}
            _ => return Err(ProtocolError::OwnKeysAltered),
        }
        me.require_threshold(Round::AdvertiseKeys, u1.len())?;

        let (t, n) = (me.setup.threshold(), roster.len());
        let mask_key_shares = split(&self.mask_secret.to_scalar(), t, n, rng)?;
        let self_mask = Zeroizing::new(Scalar::random(rng));
        let self_mask_shares = split(&self_mask, t, n, rng)?;

        let mut peers = BTreeMap::new();
        let mut shares = Vec::with_capacity(u1.len() - 1);
        for (peer_index, entry) in &u1 {
            if *peer_index == me.index {
                continue;
            }
            let share_key = derive::share_key(
                &self.encryption_secret,
                &entry.encryption_key,
                binding,
                &me.id,
                &entry.node,
            );
            let mut plaintext = Zeroizing::new([0u8; 64]);
            plaintext[..32].copy_from_slice(&share_at(&mask_key_shares, *peer_index)?.value.to_bytes());
            plaintext[32..].copy_from_slice(&share_at(&self_mask_shares, *peer_index)?.value.to_bytes());
            let sealed = share_key.seal(
                &derive::share_nonce(me.index, *peer_index),
                &derive::share_associated_data(binding, &me.id, &entry.node),
                plaintext.as_ref(),
            );
            shares.push(SharesFor { to: entry.node.clone(), sealed: SealedShares::from_slice(&sealed)? });
            peers.insert(*peer_index, Peer { id: entry.node.clone(), mask_key: entry.mask_key, share_key });
        }
        let own_self_mask_share = ShareValue::new(share_at(&self_mask_shares, me.index)?.value);
        let message = EncryptedShares { binding: binding.clone(), sender: me.id.clone(), shares };
        let next = AwaitingShares {
            me: self.me,
            input: self.input,
            mask_secret: self.mask_secret,
            self_mask: derive::self_mask_seed(&self_mask),
            own_self_mask_share,
            peers,
        };
        Ok((next, message))
    }
}

/// Share `index` of a fresh `split` (which returns indices `1..=n` in order).
fn share_at(shares: &[Share], index: PartyIndex) -> Result<&Share, ProtocolError> {
    shares
        .get(index.get() as usize - 1)
        .filter(|share| share.index == index.get())
        .ok_or(ProtocolError::Crypto(CryptoError::Sharing("split returned fewer shares than parties")))
}

/// What a contributor keeps about one other member of U1.
struct Peer {
    id: NodeId,
    mask_key: DhPublic,
    /// `c_uv`, agreed once in round 1 and reused to open the peer's pair in round 2.
    share_key: AeadKey,
}

/// Round 1 done: shares sent; waits for the pairs the others sealed for it
/// (Bonawitz et al. 2017, Figure 4, round 2 "MaskedInputCollection", user side).
pub struct AwaitingShares {
    me: Me,
    input: PrivateInput,
    mask_secret: DhSecret,
    self_mask: Seed,
    /// This contributor's own share of `b_u`: in round 4 it reveals it with the others'
    /// so that `|U5|` shares exist for every survivor, itself included.
    own_self_mask_share: ShareValue,
    /// U1 without this contributor, by Shamir index.
    peers: BTreeMap<PartyIndex, Peer>,
}

impl fmt::Debug for AwaitingShares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwaitingShares")
            .field("me", &self.me.id)
            .field("peers", &self.peers.values().map(|p| &p.id).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AwaitingShares {
    pub fn me(&self) -> &NodeId {
        &self.me.id
    }

    /// Round 2 (MaskedInputCollection): opens every pair sealed for this contributor
    /// (their senders and it form U2), then sends
    /// `y_u = x_u + PRG(b_u) + Σ_{v ∈ U2 \ {u}} γ_uv · PRG(s_uv) mod 2^64`.
    ///
    /// Refuses a relay addressed to someone else, a sender outside U1 or listed twice,
    /// a pair that does not open ([`ProtocolError::ShareDecryption`]), and `|U2| < t`.
    pub fn handle(
        self,
        sender: &NodeId,
        message: ShareRelay,
    ) -> Result<(AwaitingUnmaskRequest, MaskedInput), ProtocolError> {
        let me = &self.me;
        me.check_envelope(sender, &message.binding)?;
        if message.recipient != me.id {
            return Err(ProtocolError::Malformed {
                what: "ShareRelay",
                reason: format!("addressed to {}, this is {}", message.recipient, me.id),
            });
        }
        let roster = me.setup.roster();
        let binding = me.setup.binding();

        let mut held = BTreeMap::new();
        // The peers whose pairwise masks go on y_u: exactly those whose pair opened.
        let mut mask_peers = Vec::with_capacity(message.shares.len());
        for entry in &message.shares {
            let index = roster.require(&entry.from)?;
            let peer = self.peers.get(&index).ok_or_else(|| ProtocolError::NotInRound {
                who: entry.from.clone(),
                round: Round::AdvertiseKeys,
            })?;
            if held.contains_key(&index) {
                return Err(ProtocolError::Malformed {
                    what: "ShareRelay",
                    reason: format!("two pairs from {}", entry.from),
                });
            }
            let plaintext = Zeroizing::new(
                peer.share_key
                    .open(
                        &derive::share_nonce(index, me.index),
                        &derive::share_associated_data(binding, &entry.from, &me.id),
                        &entry.sealed.0,
                    )
                    .map_err(|_| ProtocolError::ShareDecryption { from: entry.from.clone() })?,
            );
            let bad = || ProtocolError::ShareDecryption { from: entry.from.clone() };
            if plaintext.len() != 64 {
                return Err(bad());
            }
            let mask_key = ShareValue::from_bytes(&plaintext[..32]).map_err(|_| bad())?;
            let self_mask = ShareValue::from_bytes(&plaintext[32..]).map_err(|_| bad())?;
            held.insert(index, HeldShares { mask_key, self_mask });
            mask_peers.push((&peer.id, &peer.mask_key));
        }
        let mut u2: BTreeSet<PartyIndex> = held.keys().copied().collect();
        u2.insert(me.index);
        me.require_threshold(Round::ShareKeys, u2.len())?;

        // The masked vector is public once every mask is on; it starts as a copy of
        // the private input, which stays zeroizing in `self.input` until dropped here.
        let mut masked = self.input.0.to_vec();
        apply_masks(&self.self_mask, 0, &mut masked, MaskSign::Add);
        for (peer, peer_mask_key) in mask_peers {
            let seed = derive::pair_mask_seed(&self.mask_secret, peer_mask_key, binding, &me.id, peer);
            apply_masks(&seed, 0, &mut masked, derive::pair_sign(&me.id, peer));
        }
        let message = MaskedInput { binding: binding.clone(), sender: me.id.clone(), masked };
        let next =
            AwaitingUnmaskRequest { me: self.me, u2, held, own_self_mask_share: self.own_self_mask_share };
        Ok((next, message))
    }
}

/// The two shares a contributor holds of one peer's secrets.
struct HeldShares {
    /// Share of the peer's `s_v^SK`, revealed only if the peer dropped (U2 \ U3).
    mask_key: ShareValue,
    /// Share of the peer's `b_v`, revealed only if the peer survived (U3).
    self_mask: ShareValue,
}

/// Round 2 done: masked input sent; waits for the coordinator's unmask request
/// (Bonawitz et al. 2017, Figure 4, round 4 "Unmasking", user side).
pub struct AwaitingUnmaskRequest {
    me: Me,
    /// U2 as this contributor saw it in round 2, itself included.
    u2: BTreeSet<PartyIndex>,
    /// Shares held from U2 \ {u}.
    held: BTreeMap<PartyIndex, HeldShares>,
    own_self_mask_share: ShareValue,
}

impl fmt::Debug for AwaitingUnmaskRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roster = self.me.setup.roster();
        f.debug_struct("AwaitingUnmaskRequest")
            .field("me", &self.me.id)
            .field("u2", &self.u2.iter().map(|i| roster.id(*i)).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AwaitingUnmaskRequest {
    pub fn me(&self) -> &NodeId {
        &self.me.id
    }

    /// The shares held of a peer in U2 (every member but this contributor; the checks
    /// of `handle` ensure only such peers are looked up).
    fn held(&self, index: PartyIndex) -> Result<&HeldShares, ProtocolError> {
        self.held.get(&index).ok_or_else(|| ProtocolError::InconsistentUnmaskRequest {
            reason: format!("no shares held from {}", self.me.setup.roster().id(index)),
        })
    }

    /// Round 4 (Unmasking): reveals the share of `b_v` for each survivor and of
    /// `s_v^SK` for each dropped node, once: the state is consumed.
    ///
    /// Checks first, revealing nothing if any fails: every node named is in the roster
    /// and named once; no peer is in both lists ([`ProtocolError::BothSharesRequested`]:
    /// both shares would unmask that peer's input alone); the survivors and dropped
    /// nodes are exactly this contributor's U2, split in two; this contributor is a
    /// survivor; and there are at least `t` survivors.
    pub fn handle(self, sender: &NodeId, message: UnmaskRequest) -> Result<UnmaskResponse, ProtocolError> {
        let me = &self.me;
        me.check_envelope(sender, &message.binding)?;
        let roster = me.setup.roster();
        let survivors = distinct_indices(&me.setup, &message.survivors, "survivors")?;
        let dropped = distinct_indices(&me.setup, &message.dropped, "dropped")?;
        for index in &dropped {
            if survivors.contains(index) {
                return Err(ProtocolError::BothSharesRequested { peer: roster.id(*index).clone() });
            }
        }
        for index in survivors.iter().chain(&dropped) {
            if !self.u2.contains(index) {
                return Err(ProtocolError::InconsistentUnmaskRequest {
                    reason: format!("{} did not share keys in round 1", roster.id(*index)),
                });
            }
        }
        if let Some(missing) = self.u2.iter().find(|i| !survivors.contains(i) && !dropped.contains(i)) {
            return Err(ProtocolError::InconsistentUnmaskRequest {
                reason: format!("{} shared keys in round 1 but is in neither list", roster.id(*missing)),
            });
        }
        if !survivors.contains(&me.index) {
            return Err(ProtocolError::InconsistentUnmaskRequest {
                reason: "this contributor sent its masked input but is listed as dropped".into(),
            });
        }
        me.require_threshold(Round::Unmasking, survivors.len())?;

        let mut self_mask_shares = Vec::with_capacity(message.survivors.len());
        for owner in &message.survivors {
            let index = roster.require(owner)?;
            let value =
                if index == me.index { &self.own_self_mask_share } else { &self.held(index)?.self_mask };
            self_mask_shares.push(RevealedShare { owner: owner.clone(), value: value.clone() });
        }
        let mut mask_key_shares = Vec::with_capacity(message.dropped.len());
        for owner in &message.dropped {
            let value = &self.held(roster.require(owner)?)?.mask_key;
            mask_key_shares.push(RevealedShare { owner: owner.clone(), value: value.clone() });
        }
        Ok(UnmaskResponse {
            binding: me.setup.binding().clone(),
            sender: me.id.clone(),
            self_mask_shares,
            mask_key_shares,
        })
    }
}

/// The roster indices of `ids`, refusing strangers and repeats.
fn distinct_indices(
    setup: &Setup,
    ids: &[NodeId],
    list: &str,
) -> Result<BTreeSet<PartyIndex>, ProtocolError> {
    let mut out = BTreeSet::new();
    for id in ids {
        if !out.insert(setup.roster().require(id)?) {
            return Err(ProtocolError::InconsistentUnmaskRequest {
                reason: format!("{id} appears twice in {list}"),
            });
        }
    }
    Ok(out)
}
