//! Proof of the contract identity key over one TLS session (issue 9, design.md "Trust
//! model"): a certificate names a node for transport only; what a contract trusts is the
//! node's Ed25519 identity key. Right after the TLS handshake, before any HTTP/2 byte,
//! each side sends
//!
//! ```text
//! proof     = "XMCID1" (6 bytes) || public key (32) || signature (64)      = 102 bytes
//! signature = Ed25519(identity key,
//!               "xmcredit peer identity v1\n" (26 bytes)
//!               || role (1: 0x01 the TLS client, 0x02 the TLS server)
//!               || I2OSP(len(node id), 1) || node id (the DNS name of the signer's certificate)
//!               || exporter (32 bytes))
//! exporter  = TLS-Exporter("EXPORTER-xmcredit-peer-identity-v1", context = none, 32)
//!             (RFC 8446 §7.5; RFC 5705 with no context)
//! ```
//!
//! The client sends first; the server answers with its own proof only after it has
//! checked the client's. The exporter value is unique to the TLS session, so a proof
//! cannot be replayed on another connection, and the role byte keeps a server's proof
//! from being reflected back as a client's. A peer that holds a certificate for a name
//! but not the identity key of that name can complete TLS and nothing else: every call
//! compares the proven key with the key a contract (or the configuration) pins.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use xmcredit_crypto::sign::{IdentityKey, IdentityPublicKey, Signature, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use xmcredit_crypto::NodeId;

/// First bytes of a proof: refuses a peer speaking HTTP/2 (or anything else) straight
/// away with a clear reason.
pub const PROOF_MAGIC: &[u8; 6] = b"XMCID1";
/// Bytes of one proof on the wire.
pub const PROOF_LEN: usize = PROOF_MAGIC.len() + PUBLIC_KEY_LEN + SIGNATURE_LEN;
/// The keying-material exporter label (RFC 8446 §7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-xmcredit-peer-identity-v1";
/// The exporter output length.
pub const EXPORTER_LEN: usize = 32;
const SIGNED_PREFIX: &[u8] = b"xmcredit peer identity v1\n";

/// Which end of the TLS connection signed a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    TlsClient,
    TlsServer,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::TlsClient => 0x01,
            Role::TlsServer => 0x02,
        }
    }
}

/// The message an identity proof signs.
pub fn signed_message(role: Role, node_id: &NodeId, exporter: &[u8; EXPORTER_LEN]) -> Vec<u8> {
    let id = node_id.as_str().as_bytes();
    let mut message = Vec::with_capacity(SIGNED_PREFIX.len() + 2 + id.len() + EXPORTER_LEN);
    message.extend_from_slice(SIGNED_PREFIX);
    message.push(role.byte());
    // A NodeId is a DNS label: at most 63 bytes, so its length fits one byte.
    message.push(id.len() as u8);
    message.extend_from_slice(id);
    message.extend_from_slice(exporter);
    message
}

/// This side's proof for the session whose exporter value is `exporter`.
pub fn make_proof(
    key: &IdentityKey,
    role: Role,
    node_id: &NodeId,
    exporter: &[u8; EXPORTER_LEN],
) -> [u8; PROOF_LEN] {
    let signature = key.sign(&signed_message(role, node_id, exporter));
    let mut proof = [0u8; PROOF_LEN];
    proof[..6].copy_from_slice(PROOF_MAGIC);
    proof[6..6 + PUBLIC_KEY_LEN].copy_from_slice(&key.public_key().to_bytes());
    proof[6 + PUBLIC_KEY_LEN..].copy_from_slice(&signature.0);
    proof
}

/// Checks the peer's proof: it must be signed by the key it carries, over this session's
/// exporter value, the peer's role and the node id its certificate names. Returns the
/// proven key; whether that key is the one a contract pins is the caller's check.
pub fn verify_proof(
    proof: &[u8; PROOF_LEN],
    role: Role,
    node_id: &NodeId,
    exporter: &[u8; EXPORTER_LEN],
) -> Result<IdentityPublicKey, String> {
    if &proof[..6] != PROOF_MAGIC {
        return Err("the peer did not open with an xmcredit identity proof (XMCID1)".into());
    }
    let key = IdentityPublicKey::from_bytes(&proof[6..6 + PUBLIC_KEY_LEN])
        .map_err(|e| format!("identity proof: {e}"))?;
    let signature = Signature::from_bytes(&proof[6 + PUBLIC_KEY_LEN..]).map_err(|e| e.to_string())?;
    key.verify(&signed_message(role, node_id, exporter), &signature).map_err(|_| {
        format!(
            "identity proof of {node_id} does not verify under the key it names ({key}) for this TLS session"
        )
    })?;
    Ok(key)
}

/// Reads one proof from the stream.
pub async fn read_proof(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<[u8; PROOF_LEN]> {
    let mut proof = [0u8; PROOF_LEN];
    stream.read_exact(&mut proof).await?;
    Ok(proof)
}

/// Writes one proof and flushes it.
pub async fn write_proof(
    stream: &mut (impl AsyncWrite + Unpin),
    proof: &[u8; PROOF_LEN],
) -> std::io::Result<()> {
    stream.write_all(proof).await?;
    stream.flush().await
}

/// The exporter value of a TLS connection.
pub fn exporter_of<D>(connection: &rustls::ConnectionCommon<D>) -> Result<[u8; EXPORTER_LEN], String> {
    let mut out = [0u8; EXPORTER_LEN];
    connection
        .export_keying_material(&mut out, EXPORTER_LABEL, None)
        .map_err(|e| format!("TLS exporter: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn key(seed: u8) -> IdentityKey {
        IdentityKey::from_seed(&[seed; 32]).expect("seed")
    }

    #[test]
    fn a_proof_verifies_for_its_session_role_and_name_only() {
        let bank_a = NodeId::new("bank-a").expect("id");
        let exporter = [7u8; 32];
        let proof = make_proof(&key(2), Role::TlsClient, &bank_a, &exporter);
        let proven = verify_proof(&proof, Role::TlsClient, &bank_a, &exporter).expect("valid");
        assert_eq!(proven, key(2).public_key());

        // Another TLS session (replay on a new connection).
        let other = verify_proof(&proof, Role::TlsClient, &bank_a, &[8u8; 32]);
        assert!(other.expect_err("replayed").contains("does not verify"));
        // Reflected as the other role.
        assert!(verify_proof(&proof, Role::TlsServer, &bank_a, &exporter).is_err());
        // Under another certificate name.
        let bank_b = NodeId::new("bank-b").expect("id");
        assert!(verify_proof(&proof, Role::TlsClient, &bank_b, &exporter).is_err());
        // A key swapped in: the signature is not by that key.
        let mut swapped = proof;
        swapped[6..38].copy_from_slice(&key(3).public_key().to_bytes());
        assert!(verify_proof(&swapped, Role::TlsClient, &bank_a, &exporter).is_err());
        // Not a proof at all (an HTTP/2 preface).
        let mut http2 = [0u8; PROOF_LEN];
        http2[..6].copy_from_slice(b"PRI * ");
        assert!(verify_proof(&http2, Role::TlsClient, &bank_a, &exporter)
            .expect_err("no magic")
            .contains("XMCID1"));
    }

    #[test]
    fn the_signed_bytes_are_as_documented() {
        let id = NodeId::new("cc").expect("id");
        let message = signed_message(Role::TlsServer, &id, &[0xAB; 32]);
        let expected = [
            b"xmcredit peer identity v1\n".as_slice(), // prefix, 26 bytes
            &[0x02],                                   // role: TLS server
            &[0x02],                                   // len(node id)
            b"cc",                                     // node id
            &[0xAB; 32],                               // exporter
        ]
        .concat();
        assert_eq!(message, expected);
        // And a random key's proof parses back to that key.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let random = IdentityKey::generate(&mut rng);
        let proof = make_proof(&random, Role::TlsServer, &id, &[0xAB; 32]);
        assert_eq!(&proof[6..38], &random.public_key().to_bytes());
    }
}
