//! ChaCha20-Poly1305 (RFC 8439) with associated data: encrypts SecAgg shares under the
//! pairwise key, bound by the associated data to contract, epoch, session, sender and
//! receiver.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::CryptoError;

/// Length of the Poly1305 tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

/// A 256-bit AEAD key. Zeroized on drop, redacted in `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AeadKey(pub [u8; 32]);

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

impl AeadKey {
    /// Encrypts `plaintext`; `nonce` must never repeat under one key.
    pub fn seal(&self, nonce: &[u8; 12], associated_data: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let cipher = ChaCha20Poly1305::new(&self.0.into());
        match cipher.encrypt(nonce.into(), Payload { msg: plaintext, aad: associated_data }) {
            Ok(ciphertext) => ciphertext,
            // Only fails for plaintexts beyond 2^38 bytes, which no caller builds.
            Err(_) => unreachable!("ChaCha20-Poly1305 plaintext within its length bound"),
        }
    }

    /// Decrypts and authenticates; any change to key, nonce, data or ciphertext fails.
    pub fn open(
        &self,
        nonce: &[u8; 12],
        associated_data: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let cipher = ChaCha20Poly1305::new(&self.0.into());
        cipher
            .decrypt(nonce.into(), Payload { msg: ciphertext, aad: associated_data })
            .map_err(|_| CryptoError::Decryption)
    }
}
