//! Cryptographic building blocks of xmcredit.
//!
//! This crate owns every primitive the alliance's protocols are made of: hash-to-group
//! (RFC 9380 / RFC 9496), the ristretto255-SHA512 OPRF (RFC 9497), set sessions with
//! their tags and pads, per-(contract, epoch, purpose) key derivation, Shamir sharing,
//! the ChaCha20 PRG, the ChaCha20-Poly1305 AEAD, Ed25519 identities and ristretto
//! Diffie-Hellman.
//!
//! It must never do I/O, read a clock, spawn async tasks or pick its own randomness:
//! callers pass an RNG in. Secrets zeroize on drop and are redacted in `Debug`; a peer's
//! bytes become a group element only through [`group::decode_element`].
#![forbid(unsafe_code)]

pub mod aead;
pub mod count_noise;
pub mod dh;
mod error;
pub mod floor;
pub mod group;
pub mod h2c;
pub mod ids;
pub mod keys;
pub mod lookup;
pub mod noise;
pub mod oprf;
pub mod prg;
pub mod set;
pub mod shamir;
pub mod sign;

pub use error::CryptoError;
pub use ids::{ContractId, Epoch, NodeId, SessionId};
