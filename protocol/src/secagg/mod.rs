//! Secure aggregation of u64 vectors, tolerant of dropouts.
//!
//! This is the semi-honest-server protocol of Bonawitz, Ivanov, Kreuter, Marcedone,
//! McMahan, Patel, Ramage, Segal and Seth, "Practical Secure Aggregation for
//! Privacy-Preserving Machine Learning", ACM CCS 2017 (§4 and Figure 4): rounds 0
//! AdvertiseKeys, 1 ShareKeys, 2 MaskedInputCollection and 4 Unmasking. Round 3
//! (ConsistencyCheck) belongs to the actively-secure variant and is left out.
//!
//! # Roles and flow
//!
//! Every contributor `u` holds a private vector `x_u`; the coordinator learns
//! `Σ_{u ∈ U3} x_u` and nothing else, even when up to `n - t` contributors drop out at
//! any point. Each role is a chain of states; a transition consumes its state:
//!
//! ```text
//! contributor                                   coordinator
//! AwaitingKeyList::start ── AdvertiseKeys ──▶   CollectingKeys::receive … close_round
//! AwaitingKeyList::handle ◀───── KeyList ────   (broadcast to U1)
//!                         ── EncryptedShares ─▶ CollectingShares::receive … close_round
//! AwaitingShares::handle  ◀─── ShareRelay ────  (one per member of U2)
//!                         ─── MaskedInput ───▶  CollectingMaskedInputs::receive … close_round
//! AwaitingUnmaskRequest   ◀── UnmaskRequest ──  (broadcast to U3)
//!   ::handle              ── UnmaskResponse ─▶  CollectingUnmaskResponses::receive … close_round
//!                                               ──▶ Aggregate (the sum over U3)
//! ```
//!
//! The coordinator's states collect messages with `receive(&mut self, ..)`: a refused
//! message (wrong binding, unknown sender, repeat) leaves the state unchanged, because
//! one misbehaving or late peer must not end everyone's session. A round ends only when
//! the driver calls `close_round` (all expected peers answered, or its timer fired); it
//! goes on with whoever answered if that is at least `t`, and otherwise fails with
//! [`crate::ProtocolError::BelowThreshold`], sending nothing. A contributor's transitions take
//! one message from the coordinator and any error ends its run, before it reveals more.
//!
//! # Choices beyond the paper
//!
//! - Key agreement is ristretto255 Diffie-Hellman through HKDF
//!   ([`xmcredit_crypto::dh`]), the context binding it to the session and the pair.
//!   Shamir sharing is over the ristretto255 scalar field, so the self-mask seed `b` is a
//!   random scalar and the PRG is keyed by its 32-byte encoding.
//! - Round 0 advertisements are signed with the node's Ed25519 identity (the paper
//!   signs only in the active variant); every contributor checks every signature.
//! - Share pairs are sealed with ChaCha20-Poly1305; the paper's `u ‖ v` inside the
//!   plaintext moves to the associated data. Contributors open them when they arrive
//!   (round 2) rather than in round 4, so a bad ciphertext stops a contributor before it
//!   sends its masked input.
//! - The round 4 request names both lists, survivors `U3` and dropped `U2 \ U3`, so a
//!   contributor can check what it is asked for instead of trusting a complement.
//! - Inputs have a declared bit width `w`; setup refuses when `n × (2^w - 1)` could
//!   pass `2^64 - 1`, so the mod 2^64 sum is the exact sum. The coordinator checks the
//!   unmasked result against that bound, which catches a wrong reconstruction.
//!
//! The exact bytes signed, derived and authenticated are in `derive.rs`; wire
//! encodings in [`messages`].

mod contributor;
mod coordinator;
mod derive;
pub mod messages;
mod setup;
#[cfg(test)]
mod tests;

use std::fmt;

pub use contributor::{AwaitingKeyList, AwaitingShares, AwaitingUnmaskRequest};
pub use coordinator::{
    Addressed, Aggregate, Broadcast, CollectingKeys, CollectingMaskedInputs, CollectingShares,
    CollectingUnmaskResponses,
};
pub use messages::{
    AdvertiseKeys, EncryptedShares, KeyList, MaskedInput, MessageKind, RevealedShare, SealedShares,
    SecAggMessage, ShareRelay, ShareValue, SharesFor, SharesFrom, SignedKeys, UnmaskRequest, UnmaskResponse,
};
pub use setup::{Party, PartyIndex, Roster, SessionNoise, Setup, VectorSpec, MAX_PARTIES, MAX_VECTOR_LEN};

/// The rounds of Bonawitz et al. 2017, Figure 4, numbered as in the paper (round 3,
/// ConsistencyCheck, belongs to the active variant and does not exist here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Round {
    /// Round 0: each contributor advertises two DH public keys.
    AdvertiseKeys,
    /// Round 1: each contributor shares its mask key and self-mask seed.
    ShareKeys,
    /// Round 2: each contributor sends its masked input.
    MaskedInputCollection,
    /// Round 4: survivors reveal the shares that remove the masks.
    Unmasking,
}

impl Round {
    /// The round's number in the paper.
    pub fn number(self) -> u8 {
        match self {
            Round::AdvertiseKeys => 0,
            Round::ShareKeys => 1,
            Round::MaskedInputCollection => 2,
            Round::Unmasking => 4,
        }
    }
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "round {} ({:?})", self.number(), self)
    }
}
