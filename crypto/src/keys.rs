//! Per-(contract, epoch, purpose) keys derived from the node's master secret.
//!
//! Nothing but the 32-byte master secret is stored; every OPRF key and seed is
//! re-derived when needed, so keys rotate by epoch and two contracts never share one.
//!
//! ```text
//! PRK  = HKDF-Extract(salt = "xmcredit master v1", IKM = master secret)
//! info = "xmcredit key" || I2OSP(len(contract_id), 2) || contract_id
//!        || I2OSP(epoch, 8) || I2OSP(len(purpose), 2) || purpose
//! seed = HKDF-Expand(PRK, info, 32)                       (HKDF-SHA256)
//! OPRF key = RFC 9497 DeriveKeyPair(seed, info)            (base mode)
//! ```
//!
//! A key bound to more than (contract, epoch, purpose), e.g. a PSI server key bound to
//! its dataset version, appends `I2OSP(len(context), 2) || context` to `info`.

use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::oprf::{OprfKey, Suite};
use crate::{ContractId, CryptoError, Epoch};

const MASTER_SALT: &[u8] = b"xmcredit master v1";

/// What a derived key is for. Each purpose has its own label, so a key of one purpose is
/// independent of every other even under the same contract and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// The server's key in two-party PSI.
    PsiServer,
    /// A committee member's share of the distributed OPRF key (duplicate detection).
    OverthresholdCommittee,
    /// A provider's key in private aggregate lookups.
    LookupProvider,
}

impl KeyPurpose {
    pub fn label(self) -> &'static [u8] {
        match self {
            KeyPurpose::PsiServer => b"psi server",
            KeyPurpose::OverthresholdCommittee => b"overthreshold committee",
            KeyPurpose::LookupProvider => b"lookup provider",
        }
    }
}

/// The node's master secret. Zeroized on drop, redacted in `Debug`, compared in
/// constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterSecret([u8; 32]);

impl MasterSecret {
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::Malformed {
            what: "master secret",
            reason: format!("{} bytes, want 32", bytes.len()),
        })?;
        Ok(Self(array))
    }

    /// The raw bytes, for writing the secret file; the caller zeroizes its copy.
    pub fn expose_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0)
    }

    /// The 32-byte seed for (contract, epoch, purpose).
    pub fn derive_seed(
        &self,
        contract: &ContractId,
        epoch: Epoch,
        purpose: KeyPurpose,
    ) -> Zeroizing<[u8; 32]> {
        let info = key_info(contract, epoch, purpose);
        let hkdf = Hkdf::<Sha256>::new(Some(MASTER_SALT), &self.0);
        let mut seed = Zeroizing::new([0u8; 32]);
        if hkdf.expand(&info, seed.as_mut()).is_err() {
            unreachable!("32 bytes is within HKDF-SHA256's output bound");
        }
        seed
    }

    /// The OPRF key for (contract, epoch, purpose).
    pub fn derive_oprf_key(
        &self,
        contract: &ContractId,
        epoch: Epoch,
        purpose: KeyPurpose,
    ) -> Result<OprfKey, CryptoError> {
        self.derive_from_info(&key_info(contract, epoch, purpose))
    }

    /// The OPRF key for (contract, epoch, purpose, context). The PSI server binds its
    /// key to the dataset version: pads and tags of two versions of a dataset must not
    /// line up, or a client comparing labels of two versions learns their XOR.
    pub fn derive_oprf_key_with_context(
        &self,
        contract: &ContractId,
        epoch: Epoch,
        purpose: KeyPurpose,
        context: &[u8],
    ) -> Result<OprfKey, CryptoError> {
        let mut info = key_info(contract, epoch, purpose);
        let len = u16::try_from(context.len()).map_err(|_| CryptoError::Malformed {
            what: "key context",
            reason: "longer than 65535 bytes".into(),
        })?;
        info.extend_from_slice(&len.to_be_bytes());
        info.extend_from_slice(context);
        self.derive_from_info(&info)
    }

    fn derive_from_info(&self, info: &[u8]) -> Result<OprfKey, CryptoError> {
        let hkdf = Hkdf::<Sha256>::new(Some(MASTER_SALT), &self.0);
        let mut seed = Zeroizing::new([0u8; 32]);
        if hkdf.expand(info, seed.as_mut()).is_err() {
            unreachable!("32 bytes is within HKDF-SHA256's output bound");
        }
        Suite::base().derive_key_pair(&seed, info)
    }
}

impl PartialEq for MasterSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for MasterSecret {}

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(<redacted>)")
    }
}

fn key_info(contract: &ContractId, epoch: Epoch, purpose: KeyPurpose) -> Vec<u8> {
    let mut info = b"xmcredit key".to_vec();
    info.extend_from_slice(&(contract.as_bytes().len() as u16).to_be_bytes());
    info.extend_from_slice(contract.as_bytes());
    info.extend_from_slice(&epoch.to_be_bytes());
    info.extend_from_slice(&(purpose.label().len() as u16).to_be_bytes());
    info.extend_from_slice(purpose.label());
    info
}
