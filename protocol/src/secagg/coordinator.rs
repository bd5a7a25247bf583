//! The coordinator (the paper's server): four collecting states. `receive` takes one
//! contributor's message and either records it or refuses it leaving the state as it
//! was; `close_round` consumes the state when the driver decides the round is over
//! (everyone answered, or its timer fired) and goes on with whoever answered, or
//! aborts below the threshold without sending anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use xmcredit_crypto::dh::{DhPublic, DhSecret};
use xmcredit_crypto::prg::{apply_masks, MaskSign};
use xmcredit_crypto::shamir::{reconstruct, Share};
use xmcredit_crypto::NodeId;
use zeroize::Zeroizing;

use super::derive;
use super::messages::{
    AdvertiseKeys, EncryptedShares, KeyList, MaskedInput, RevealedShare, SealedShares, ShareRelay,
    SharesFrom, SignedKeys, UnmaskRequest, UnmaskResponse,
};
use super::setup::{PartyIndex, Setup};
use super::Round;
use crate::{ProtocolError, SessionBinding};

/// One message for several recipients (the same bytes to each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broadcast<M> {
    pub to: Vec<NodeId>,
    pub message: M,
}

/// One message for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addressed<M> {
    pub to: NodeId,
    pub message: M,
}

/// The result of a session: the exact sum of the survivors' inputs.
#[derive(Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// `Σ_{u ∈ U3} x_u`, element by element.
    pub sum: Vec<u64>,
    /// U3: whose inputs the sum contains, in roster order.
    pub contributors: Vec<NodeId>,
    /// U2 \ U3: who shared keys but whose input is not in the sum.
    pub dropped: Vec<NodeId>,
    /// The contributors added distributed noise: `sum` is then two's complement (see
    /// [`Aggregate::decoded`]).
    pub noisy: bool,
}

impl Aggregate {
    /// The sum as numbers: with noise, two's complement (noise can take an entry below
    /// zero, which modulo 2^64 reads as a number near 2^64); without, unsigned.
    pub fn decoded(&self) -> Vec<i128> {
        self.sum.iter().map(|&v| if self.noisy { i128::from(v as i64) } else { i128::from(v) }).collect()
    }
}

impl fmt::Debug for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aggregate")
            .field("len", &self.sum.len())
            .field("contributors", &self.contributors)
            .field("dropped", &self.dropped)
            .field("noisy", &self.noisy)
            .finish()
    }
}

/// Checks that a contributor's message is bound to this session, that the sender the
/// message names is the one the transport authenticated, that the sender took part in
/// the previous round, and that it has not already spoken in this one.
fn admit<T>(
    setup: &Setup,
    sender: &NodeId,
    claimed: &NodeId,
    binding: &SessionBinding,
    round: Round,
    previous: Option<&BTreeSet<PartyIndex>>,
    already: &BTreeMap<PartyIndex, T>,
) -> Result<PartyIndex, ProtocolError> {
    setup.binding().check(binding)?;
    if claimed != sender {
        return Err(ProtocolError::UnexpectedSender { expected: claimed.to_string(), got: sender.clone() });
    }
    let index = setup.roster().require(sender)?;
    if let Some(previous) = previous {
        if !previous.contains(&index) {
            return Err(ProtocolError::NotInRound { who: sender.clone(), round });
        }
    }
    if already.contains_key(&index) {
        return Err(ProtocolError::DuplicateMessage { from: sender.clone(), round });
    }
    Ok(index)
}

fn enough(setup: &Setup, round: Round, got: usize) -> Result<(), ProtocolError> {
    let threshold = setup.threshold();
    if got < threshold {
        return Err(ProtocolError::BelowThreshold { round, got, threshold });
    }
    Ok(())
}

fn ids<'a>(setup: &'a Setup, indices: impl IntoIterator<Item = &'a PartyIndex>) -> Vec<NodeId> {
    indices.into_iter().map(|i| setup.roster().id(*i).clone()).collect()
}

/// Contributors of `universe` not in `heard`: whom the driver may still wait for.
fn missing<T>(
    setup: &Setup,
    universe: impl Iterator<Item = PartyIndex>,
    heard: &BTreeMap<PartyIndex, T>,
) -> Vec<NodeId> {
    universe.filter(|i| !heard.contains_key(i)).map(|i| setup.roster().id(i).clone()).collect()
}

// ---- Round 0 -------------------------------------------------------------------------

/// Round 0 (AdvertiseKeys), server side: collects each contributor's signed keys.
#[derive(Debug)]
pub struct CollectingKeys {
    setup: Setup,
    keys: BTreeMap<PartyIndex, SignedKeys>,
}

impl CollectingKeys {
    pub fn new(setup: Setup) -> Self {
        Self { setup, keys: BTreeMap::new() }
    }

    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// Records one advertisement. Refuses (state unchanged) a wrong binding, a sender
    /// other than the node it advertises for, a node outside the roster, a second
    /// advertisement, a signature that does not verify, and a key someone already
    /// advertised. Contributors check all of this again; checking here keeps one bad
    /// advertisement from making every contributor abort.
    pub fn receive(&mut self, sender: &NodeId, message: AdvertiseKeys) -> Result<(), ProtocolError> {
        let keys = message.keys;
        let index =
            admit(&self.setup, sender, &keys.node, &message.binding, Round::AdvertiseKeys, None, &self.keys)?;
        let payload = derive::advertisement_payload(
            self.setup.binding(),
            &keys.node,
            &keys.encryption_key,
            &keys.mask_key,
        );
        self.setup
            .roster()
            .party(index)
            .identity
            .verify(&payload, &keys.signature)
            .map_err(|_| ProtocolError::BadKeySignature { from: keys.node.clone() })?;
        let new = [keys.encryption_key.to_bytes(), keys.mask_key.to_bytes()];
        let clash = new[0] == new[1]
            || self.keys.values().any(|k| {
                let old = [k.encryption_key.to_bytes(), k.mask_key.to_bytes()];
                old.iter().any(|o| new.contains(o))
            });
        if clash {
            return Err(ProtocolError::DuplicateKey { from: keys.node });
        }
        self.keys.insert(index, keys);
        Ok(())
    }

    /// Roster members not heard from yet.
    pub fn pending(&self) -> Vec<NodeId> {
        missing(&self.setup, self.setup.roster().all_indices(), &self.keys)
    }

    /// Ends round 0: U1 is whoever advertised. Sends the key list to U1, or aborts with
    /// [`ProtocolError::BelowThreshold`] if `|U1| < t`.
    pub fn close_round(self) -> Result<(CollectingShares, Broadcast<KeyList>), ProtocolError> {
        enough(&self.setup, Round::AdvertiseKeys, self.keys.len())?;
        let u1: BTreeSet<PartyIndex> = self.keys.keys().copied().collect();
        let message =
            KeyList { binding: self.setup.binding().clone(), entries: self.keys.values().cloned().collect() };
        let broadcast = Broadcast { to: ids(&self.setup, &u1), message };
        let mask_keys = self.keys.iter().map(|(i, k)| (*i, k.mask_key)).collect();
        Ok((CollectingShares { setup: self.setup, u1, mask_keys, shares: BTreeMap::new() }, broadcast))
    }
}

// ---- Round 1 -------------------------------------------------------------------------

/// Round 1 (ShareKeys), server side: collects each U1 member's sealed share pairs.
#[derive(Debug)]
pub struct CollectingShares {
    setup: Setup,
    u1: BTreeSet<PartyIndex>,
    mask_keys: BTreeMap<PartyIndex, DhPublic>,
    /// Sender → (recipient → sealed pair).
    shares: BTreeMap<PartyIndex, BTreeMap<PartyIndex, SealedShares>>,
}

impl CollectingShares {
    /// Records one contributor's pairs. Refuses (state unchanged) a wrong binding or
    /// sender, a sender outside U1, a repeat, and a message that does not hold exactly
    /// one pair for every other member of U1.
    pub fn receive(&mut self, sender: &NodeId, message: EncryptedShares) -> Result<(), ProtocolError> {
        let index = admit(
            &self.setup,
            sender,
            &message.sender,
            &message.binding,
            Round::ShareKeys,
            Some(&self.u1),
            &self.shares,
        )?;
        let roster = self.setup.roster();
        let mut by_recipient = BTreeMap::new();
        for entry in message.shares {
            let to = roster.require(&entry.to)?;
            if to == index || !self.u1.contains(&to) {
                return Err(ProtocolError::Malformed {
                    what: "EncryptedShares",
                    reason: format!("a pair for {}, who is not another member of U1", entry.to),
                });
            }
            if by_recipient.insert(to, entry.sealed).is_some() {
                return Err(ProtocolError::Malformed {
                    what: "EncryptedShares",
                    reason: format!("two pairs for {}", entry.to),
                });
            }
        }
        if by_recipient.len() != self.u1.len() - 1 {
            return Err(ProtocolError::Malformed {
                what: "EncryptedShares",
                reason: format!("{} pairs for {} other members of U1", by_recipient.len(), self.u1.len() - 1),
            });
        }
        self.shares.insert(index, by_recipient);
        Ok(())
    }

    /// Members of U1 not heard from yet.
    pub fn pending(&self) -> Vec<NodeId> {
        missing(&self.setup, self.u1.iter().copied(), &self.shares)
    }

    /// Ends round 1: U2 is whoever sent pairs. Relays to each member of U2 the pairs
    /// the other members sealed for it, or aborts if `|U2| < t`.
    pub fn close_round(self) -> Result<(CollectingMaskedInputs, Vec<Addressed<ShareRelay>>), ProtocolError> {
        enough(&self.setup, Round::ShareKeys, self.shares.len())?;
        let u2: BTreeSet<PartyIndex> = self.shares.keys().copied().collect();
        let roster = self.setup.roster();
        let mut relays = Vec::with_capacity(u2.len());
        for recipient in &u2 {
            let shares = self
                .shares
                .iter()
                .filter_map(|(from, pairs)| {
                    // Every sender sealed a pair for every other member of U1 ⊇ U2
                    // (checked in `receive`), so only the recipient's own entry is absent.
                    pairs
                        .get(recipient)
                        .map(|sealed| SharesFrom { from: roster.id(*from).clone(), sealed: sealed.clone() })
                })
                .collect();
            let to = roster.id(*recipient).clone();
            let message = ShareRelay { binding: self.setup.binding().clone(), recipient: to.clone(), shares };
            relays.push(Addressed { to, message });
        }
        let len = self.setup.vector().len;
        let next = CollectingMaskedInputs {
            setup: self.setup,
            mask_keys: self.mask_keys,
            u2,
            received: BTreeMap::new(),
            masked_sum: vec![0u64; len],
        };
        Ok((next, relays))
    }
}

// ---- Round 2 -------------------------------------------------------------------------

/// Round 2 (MaskedInputCollection), server side: adds up the masked inputs of U2's
/// members as they arrive (only the running sum is kept, not n vectors).
pub struct CollectingMaskedInputs {
    setup: Setup,
    mask_keys: BTreeMap<PartyIndex, DhPublic>,
    u2: BTreeSet<PartyIndex>,
    received: BTreeMap<PartyIndex, ()>,
    masked_sum: Vec<u64>,
}

impl fmt::Debug for CollectingMaskedInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectingMaskedInputs")
            .field("u2", &ids(&self.setup, &self.u2))
            .field("received", &ids(&self.setup, self.received.keys()))
            .finish_non_exhaustive()
    }
}

impl CollectingMaskedInputs {
    /// Adds one masked input. Refuses (state unchanged) a wrong binding or sender, a
    /// sender outside U2, a repeat, and a vector of the wrong length.
    pub fn receive(&mut self, sender: &NodeId, message: MaskedInput) -> Result<(), ProtocolError> {
        let index = admit(
            &self.setup,
            sender,
            &message.sender,
            &message.binding,
            Round::MaskedInputCollection,
            Some(&self.u2),
            &self.received,
        )?;
        if message.masked.len() != self.masked_sum.len() {
            return Err(ProtocolError::VectorLength {
                expected: self.masked_sum.len(),
                got: message.masked.len(),
            });
        }
        for (total, value) in self.masked_sum.iter_mut().zip(&message.masked) {
            *total = total.wrapping_add(*value);
        }
        self.received.insert(index, ());
        Ok(())
    }

    /// Members of U2 not heard from yet.
    pub fn pending(&self) -> Vec<NodeId> {
        missing(&self.setup, self.u2.iter().copied(), &self.received)
    }

    /// Ends round 2: U3 is whoever sent a masked input. Asks U3 for the self-mask
    /// shares of U3 and the mask-key shares of U2 \ U3, or aborts if `|U3| < t` (then
    /// no share is ever asked for, and the masked sum is dropped).
    pub fn close_round(self) -> Result<(CollectingUnmaskResponses, Broadcast<UnmaskRequest>), ProtocolError> {
        enough(&self.setup, Round::MaskedInputCollection, self.received.len())?;
        let survivors: Vec<PartyIndex> = self.received.keys().copied().collect();
        let dropped: Vec<PartyIndex> =
            self.u2.iter().filter(|i| !self.received.contains_key(i)).copied().collect();
        let message = UnmaskRequest {
            binding: self.setup.binding().clone(),
            survivors: ids(&self.setup, &survivors),
            dropped: ids(&self.setup, &dropped),
        };
        let broadcast = Broadcast { to: message.survivors.clone(), message };
        let next = CollectingUnmaskResponses {
            u3: survivors.iter().copied().collect(),
            request: broadcast.message.clone(),
            survivors,
            dropped,
            setup: self.setup,
            mask_keys: self.mask_keys,
            masked_sum: self.masked_sum,
            responses: BTreeMap::new(),
        };
        Ok((next, broadcast))
    }
}

// ---- Round 4 -------------------------------------------------------------------------

/// The shares one responder revealed, in the request's order.
struct Revealed {
    self_mask: Vec<RevealedShare>,
    mask_key: Vec<RevealedShare>,
}

/// Round 4 (Unmasking), server side: collects the survivors' shares, then removes the
/// masks.
pub struct CollectingUnmaskResponses {
    setup: Setup,
    mask_keys: BTreeMap<PartyIndex, DhPublic>,
    survivors: Vec<PartyIndex>,
    u3: BTreeSet<PartyIndex>,
    dropped: Vec<PartyIndex>,
    request: UnmaskRequest,
    masked_sum: Vec<u64>,
    responses: BTreeMap<PartyIndex, Revealed>,
}

impl fmt::Debug for CollectingUnmaskResponses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectingUnmaskResponses")
            .field("survivors", &self.request.survivors)
            .field("dropped", &self.request.dropped)
            .field("responded", &ids(&self.setup, self.responses.keys()))
            .finish_non_exhaustive()
    }
}

impl CollectingUnmaskResponses {
    /// Records one survivor's shares. Refuses (state unchanged) a wrong binding or
    /// sender, a sender outside U3, a repeat, and shares that do not follow the
    /// request's lists exactly.
    pub fn receive(&mut self, sender: &NodeId, message: UnmaskResponse) -> Result<(), ProtocolError> {
        let index = admit(
            &self.setup,
            sender,
            &message.sender,
            &message.binding,
            Round::Unmasking,
            Some(&self.u3),
            &self.responses,
        )?;
        for (what, shares, owners) in [
            ("self-mask shares", &message.self_mask_shares, &self.request.survivors),
            ("mask-key shares", &message.mask_key_shares, &self.request.dropped),
        ] {
            if shares.len() != owners.len() || shares.iter().zip(owners).any(|(s, o)| &s.owner != o) {
                return Err(ProtocolError::Malformed {
                    what: "UnmaskResponse",
                    reason: format!("{what} do not follow the request's list"),
                });
            }
        }
        let revealed = Revealed { self_mask: message.self_mask_shares, mask_key: message.mask_key_shares };
        self.responses.insert(index, revealed);
        Ok(())
    }

    /// Members of U3 not heard from yet.
    pub fn pending(&self) -> Vec<NodeId> {
        missing(&self.setup, self.survivors.iter().copied(), &self.responses)
    }

    /// Ends round 4: with at least `t` responses, reconstructs `b_u` for each survivor
    /// and `s_v^SK` for each dropped node, removes `PRG(b_u)` and the dropped nodes'
    /// pairwise masks from the masked sum and returns the exact sum over U3.
    ///
    /// Refuses fewer than `t` responses ([`ProtocolError::BelowThreshold`]), a
    /// reconstructed mask key whose public key is not the one advertised, and a result
    /// above `|U3| × (2^bits - 1)`, which only a wrong self-mask share can produce
    /// ([`ProtocolError::Reconstruction`]).
    pub fn close_round(self) -> Result<Aggregate, ProtocolError> {
        let setup = &self.setup;
        let threshold = setup.threshold();
        enough(setup, Round::Unmasking, self.responses.len())?;
        let roster = setup.roster();
        let binding = setup.binding();
        let mut sum = self.masked_sum;

        let shares_of = |position: usize, pick: fn(&Revealed) -> &Vec<RevealedShare>| -> Vec<Share> {
            self.responses
                .iter()
                .filter_map(|(responder, revealed)| {
                    pick(revealed)
                        .get(position)
                        .map(|s| Share { index: responder.get(), value: *s.value.scalar() })
                })
                .collect()
        };

        for position in 0..self.survivors.len() {
            let b = Zeroizing::new(reconstruct(&shares_of(position, |r| &r.self_mask), threshold)?);
            apply_masks(&derive::self_mask_seed(&b), 0, &mut sum, MaskSign::Subtract);
        }

        for (position, gone) in self.dropped.iter().enumerate() {
            let secret = Zeroizing::new(reconstruct(&shares_of(position, |r| &r.mask_key), threshold)?);
            let mask_secret = DhSecret::from_scalar(*secret)?;
            let gone_id = roster.id(*gone);
            if self.mask_keys.get(gone) != Some(&mask_secret.public()) {
                return Err(ProtocolError::Reconstruction {
                    reason: format!("the mask key rebuilt for {gone_id} is not the one it advertised"),
                });
            }
            for survivor in &self.survivors {
                let survivor_id = roster.id(*survivor);
                let Some(survivor_key) = self.mask_keys.get(survivor) else {
                    return Err(ProtocolError::Reconstruction {
                        reason: format!("no mask key for {survivor_id}"),
                    });
                };
                // `survivor` added γ(survivor, gone)·PRG(s); take it off.
                let seed = derive::pair_mask_seed(&mask_secret, survivor_key, binding, gone_id, survivor_id);
                apply_masks(&seed, 0, &mut sum, derive::reverse(derive::pair_sign(survivor_id, gone_id)));
            }
        }

        // The setup guarantees n·(2^bits − 1) ≤ 2^64 − 1, so a correct unmasking lands
        // at or below this bound; a wrong share gives a uniformly random vector instead.
        // With noise the sum is signed: within ±(the noise's bound) of that range.
        let bound = self.survivors.len() as u128 * setup.vector().max_element() as u128;
        let noise_bound = setup.noise().map(|n| i128::from(n.bound()));
        let (low, high) = match noise_bound {
            None => (0i128, bound as i128),
            Some(b) => (-b, bound as i128 + b),
        };
        let decode = |v: u64| if noise_bound.is_some() { i128::from(v as i64) } else { i128::from(v) };
        if let Some((index, value)) =
            sum.iter().enumerate().map(|(i, &v)| (i, decode(v))).find(|(_, v)| !(low..=high).contains(v))
        {
            return Err(ProtocolError::Reconstruction {
                reason: format!(
                    "element {index} unmasks to {value}, outside [{low}, {high}]: a share was wrong"
                ),
            });
        }
        Ok(Aggregate {
            sum,
            contributors: self.request.survivors,
            dropped: self.request.dropped,
            noisy: noise_bound.is_some(),
        })
    }
}
