//! Properties of the non-RFC building blocks, each checked against an independent
//! recomputation or a published value, with the negative cases.

use curve25519_dalek::scalar::Scalar;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha512};
use xmcredit_crypto::aead::AeadKey;
use xmcredit_crypto::dh::{DhPublic, DhSecret};
use xmcredit_crypto::keys::{KeyPurpose, MasterSecret};
use xmcredit_crypto::oprf::{blind_evaluate, Blind, OprfKey, Suite};
use xmcredit_crypto::prg::{apply_masks, fill_masks, MaskSign, Seed};
use xmcredit_crypto::set::{
    evaluate_batch, evaluate_own_batch, tag_bits_for, ClientSetSession, EvaluationSum, TagContext,
    UnblindedElement,
};
use xmcredit_crypto::shamir::{reconstruct, split, Share};
use xmcredit_crypto::sign::IdentityKey;
use xmcredit_crypto::{ContractId, CryptoError, Epoch};

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn contract() -> ContractId {
    ContractId::new("xel-2026-a-grade").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn set_session_batch_matches_one_at_a_time_and_finds_the_intersection() {
    let mut rng = rng(1);
    let master = MasterSecret::generate(&mut rng);
    let key = master
        .derive_oprf_key(&contract(), Epoch(3), KeyPurpose::PsiServer)
        .unwrap_or_else(|e| panic!("{e}"));
    let client_inputs: Vec<String> = (0..1000).map(|i| format!("client-{i}")).collect();
    let mut server_inputs: Vec<String> = (0..1000).map(|i| format!("server-{i}")).collect();
    server_inputs.extend(client_inputs.iter().step_by(7).cloned());

    let session = ClientSetSession::new(&mut rng);
    let blinded = session.blind_batch(&client_inputs).unwrap_or_else(|e| panic!("{e}"));
    let mut evaluated = evaluate_batch(&key, &blinded).unwrap_or_else(|e| panic!("{e}"));
    // One-at-a-time forms agree with the batch.
    let blind_bytes: [u8; 32] = {
        // Recompute element 5 with the RFC path and an independent blind: N must match.
        let blind = Blind::random(&mut rng);
        let one =
            Suite::base().blind_with(client_inputs[5].as_bytes(), &blind).unwrap_or_else(|e| panic!("{e}"));
        let eval = blind_evaluate(&key, &one);
        let out = Suite::base()
            .finalize(client_inputs[5].as_bytes(), &blind, &eval)
            .unwrap_or_else(|e| panic!("{e}"));
        let unblinded = session.unblind_one(&evaluated[5]).unwrap_or_else(|e| panic!("{e}"));
        let batch_out = xmcredit_crypto::set::finalize_unblinded(client_inputs[5].as_bytes(), &unblinded)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out, batch_out);
        unblinded.0
    };
    // Shuffling the replies does not matter to a single-blind session except for order.
    evaluated.reverse();
    let unblinded = session.unblind_batch(&evaluated).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(unblinded[unblinded.len() - 1 - 5].0, blind_bytes);

    let tags = TagContext::new(&contract(), Epoch(3), 64).unwrap_or_else(|e| panic!("{e}"));
    let server_values = evaluate_own_batch(&key, &server_inputs).unwrap_or_else(|e| panic!("{e}"));
    let server_tags: std::collections::HashSet<_> = tags.tag_batch(&server_values).into_iter().collect();
    let matched = tags.tag_batch(&unblinded).iter().filter(|t| server_tags.contains(t)).count();
    assert_eq!(matched, client_inputs.iter().step_by(7).count());
}

#[test]
fn tags_and_pads_follow_the_documented_bytes() {
    let element = UnblindedElement([7u8; 32]);
    let context = TagContext::new(&contract(), Epoch(9), 72).unwrap_or_else(|e| panic!("{e}"));
    let digest = |label: &[u8], suffix: &[u8]| {
        let mut h = Sha512::new();
        h.update(label);
        h.update((contract().as_bytes().len() as u16).to_be_bytes());
        h.update(contract().as_bytes());
        h.update(9u64.to_be_bytes());
        h.update([7u8; 32]);
        h.update(suffix);
        h.finalize()
    };
    let tag = context.tag(&element);
    assert_eq!(&tag.0[..9], &digest(b"xmcredit tag", b"")[..9]);
    assert_eq!(&tag.0[9..], &[0u8; 7]);
    let mut pad = vec![0u8; 100];
    context.pad_into(&element, &mut pad);
    assert_eq!(&pad[..64], &digest(b"xmcredit pad", &0u32.to_be_bytes())[..]);
    assert_eq!(&pad[64..], &digest(b"xmcredit pad", &1u32.to_be_bytes())[..36]);
    assert_eq!(context.pad_u64(&element), u64::from_le_bytes(pad[..8].try_into().unwrap_or_default()));
    // Another epoch or contract gives unrelated tags.
    let other_epoch = TagContext::new(&contract(), Epoch(10), 72).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(other_epoch.tag(&element), tag);
    // Label encryption round-trips.
    let mut label = b"tax grade A".to_vec();
    context.xor_pad(&element, &mut label);
    assert_ne!(label, b"tax grade A");
    context.xor_pad(&element, &mut label);
    assert_eq!(label, b"tax grade A");
}

#[test]
fn tag_length_grows_with_set_sizes() {
    assert_eq!(tag_bits_for(1, 1, 40), Ok(40));
    assert_eq!(tag_bits_for(1 << 16, 1 << 16, 40), Ok(72));
    assert_eq!(tag_bits_for(1 << 20, 1 << 20, 40), Ok(80));
    assert!(matches!(tag_bits_for(1 << 50, 1 << 50, 40), Err(CryptoError::TagLength { .. })));
    assert!(matches!(TagContext::new(&contract(), Epoch(0), 32), Err(CryptoError::TagLength { .. })));
    assert!(matches!(TagContext::new(&contract(), Epoch(0), 41), Err(CryptoError::TagLength { .. })));
}

#[test]
fn keys_are_per_contract_epoch_and_purpose() {
    let master = MasterSecret::generate(&mut rng(2));
    let other_contract = ContractId::new("scf-2026").unwrap_or_else(|e| panic!("{e}"));
    let derive = |c: &ContractId, e: u64, p: KeyPurpose| {
        master.derive_oprf_key(c, Epoch(e), p).unwrap_or_else(|e| panic!("{e}")).to_bytes()
    };
    let base = derive(&contract(), 1, KeyPurpose::PsiServer);
    assert_eq!(base, derive(&contract(), 1, KeyPurpose::PsiServer), "deterministic");
    assert_ne!(base, derive(&contract(), 2, KeyPurpose::PsiServer));
    assert_ne!(base, derive(&other_contract, 1, KeyPurpose::PsiServer));
    assert_ne!(base, derive(&contract(), 1, KeyPurpose::LookupProvider));
    // Independent recomputation of the documented derivation.
    let mut info = b"xmcredit key".to_vec();
    info.extend_from_slice(&(contract().as_bytes().len() as u16).to_be_bytes());
    info.extend_from_slice(contract().as_bytes());
    info.extend_from_slice(&1u64.to_be_bytes());
    info.extend_from_slice(&(b"psi server".len() as u16).to_be_bytes());
    info.extend_from_slice(b"psi server");
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"xmcredit master v1"), master.expose_bytes().as_ref());
    let mut seed = [0u8; 32];
    hk.expand(&info, &mut seed).unwrap_or_else(|e| panic!("{e}"));
    let expected = Suite::base().derive_key_pair(&seed, &info).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(base, expected.to_bytes());
    assert_eq!(format!("{master:?}"), "MasterSecret(<redacted>)");
    // A context (the PSI server's dataset version) gives an independent key, derived
    // with `I2OSP(len(context), 2) || context` appended to the info.
    let with_context = |v: u64| {
        master
            .derive_oprf_key_with_context(&contract(), Epoch(1), KeyPurpose::PsiServer, &v.to_be_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes()
    };
    assert_ne!(with_context(1), with_context(2));
    assert_ne!(with_context(1), base);
    let mut info_v1 = info.clone();
    info_v1.extend_from_slice(&8u16.to_be_bytes());
    info_v1.extend_from_slice(&1u64.to_be_bytes());
    let mut seed_v1 = [0u8; 32];
    hk.expand(&info_v1, &mut seed_v1).unwrap_or_else(|e| panic!("{e}"));
    let expected_v1 = Suite::base().derive_key_pair(&seed_v1, &info_v1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(with_context(1), expected_v1.to_bytes());
    assert!(!format!("{expected:?}").contains(&hex::encode(base)));
}

#[test]
fn shamir_any_threshold_subset_reconstructs() {
    let mut rng = rng(3);
    let secret = Scalar::random(&mut rng);
    let shares = split(&secret, 3, 5, &mut rng).unwrap_or_else(|e| panic!("{e}"));
    for a in 0..5 {
        for b in a + 1..5 {
            for c in b + 1..5 {
                let subset = vec![shares[a].clone(), shares[b].clone(), shares[c].clone()];
                assert_eq!(reconstruct(&subset, 3), Ok(secret));
            }
        }
    }
    assert_eq!(reconstruct(&shares[..2], 3), Err(CryptoError::TooFewShares { threshold: 3, got: 2 }));
    let duplicate = vec![shares[0].clone(), shares[0].clone(), shares[1].clone()];
    assert!(matches!(reconstruct(&duplicate, 3), Err(CryptoError::Sharing(_))));
    assert!(matches!(split(&secret, 4, 3, &mut rng), Err(CryptoError::Sharing(_))));
    assert!(matches!(split(&secret, 0, 3, &mut rng), Err(CryptoError::Sharing(_))));
}

/// Fewer than t shares are independent of the secret: for every other secret s' there is
/// exactly one set of coefficients that yields the same t - 1 shares, namely
/// f'(x) = f(x) + (s' - s) · Π_{i in S} (1 - x / x_i). Since split draws coefficients
/// uniformly, the shares an adversary holds are equally likely under s and s'. The test
/// builds f' from the observed shares and checks it, and checks that the t - 1 shares
/// with a guessed share cannot pin the secret.
#[test]
fn shamir_fewer_than_threshold_shares_are_independent_of_the_secret() {
    let mut rng = rng(4);
    let secret = Scalar::random(&mut rng);
    let shares = split(&secret, 3, 5, &mut rng).unwrap_or_else(|e| panic!("{e}"));
    let seen = &shares[1..3];
    for _ in 0..20 {
        let other_secret = Scalar::random(&mut rng);
        // Evaluate f' at each seen index through the seen shares and the new constant.
        let vanishing = |x: Scalar| {
            seen.iter().fold(Scalar::ONE, |acc, s| acc * (Scalar::ONE - x * Scalar::from(s.index).invert()))
        };
        for share in seen {
            let x = Scalar::from(share.index);
            let shifted = share.value + (other_secret - secret) * vanishing(x);
            assert_eq!(shifted, share.value, "f' agrees with f on the seen shares");
        }
        // And f'(0) is the other secret: reconstructing from the seen shares plus f' at a
        // third point gives s'.
        let third_index = 5u32;
        let x = Scalar::from(third_index);
        let f_at_x = reconstruct_at(&shares, x);
        let third = Share { index: third_index, value: f_at_x + (other_secret - secret) * vanishing(x) };
        let with_third = vec![seen[0].clone(), seen[1].clone(), third];
        assert_eq!(reconstruct(&with_third, 3), Ok(other_secret));
    }
}

/// Lagrange interpolation of the first three shares at an arbitrary point.
fn reconstruct_at(shares: &[Share], x: Scalar) -> Scalar {
    let used = &shares[..3];
    let mut value = Scalar::ZERO;
    for (i, si) in used.iter().enumerate() {
        let xi = Scalar::from(si.index);
        let mut basis = Scalar::ONE;
        for (j, sj) in used.iter().enumerate() {
            if i != j {
                let xj = Scalar::from(sj.index);
                basis *= (x - xj) * (xi - xj).invert();
            }
        }
        value += si.value * basis;
    }
    value
}

#[test]
fn prg_matches_rfc8439_keystream_and_is_seekable() {
    // RFC 8439 Appendix A.1 test vector #1: all-zero key and nonce, counter 0.
    let mut first = [0u64; 2];
    fill_masks(&Seed([0u8; 32]), 0, &mut first);
    assert_eq!(first[0], u64::from_le_bytes([0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90]));
    assert_eq!(first[1], u64::from_le_bytes([0x40, 0x5d, 0x6a, 0xe5, 0x53, 0x86, 0xbd, 0x28]));

    let seed = Seed([9u8; 32]);
    let mut whole = vec![0u64; 20_000];
    fill_masks(&seed, 0, &mut whole);
    let mut part = vec![0u64; 5_001];
    fill_masks(&seed, 12_345, &mut part);
    assert_eq!(&whole[12_345..17_346], &part[..]);

    let mut values: Vec<u64> = (0..20_000u64).map(|i| i * 3).collect();
    apply_masks(&seed, 0, &mut values, MaskSign::Add);
    assert_eq!(values[7], 21u64.wrapping_add(whole[7]));
    apply_masks(&seed, 0, &mut values[..10_000], MaskSign::Subtract);
    apply_masks(&seed, 10_000, &mut values[10_000..], MaskSign::Subtract);
    assert_eq!(values, (0..20_000u64).map(|i| i * 3).collect::<Vec<_>>());
}

#[test]
fn aead_binds_key_nonce_and_associated_data() {
    let key = AeadKey([5u8; 32]);
    let sealed = key.seal(&[1u8; 12], b"binding", b"share");
    assert_eq!(key.open(&[1u8; 12], b"binding", &sealed), Ok(b"share".to_vec()));
    assert_eq!(key.open(&[2u8; 12], b"binding", &sealed), Err(CryptoError::Decryption));
    assert_eq!(key.open(&[1u8; 12], b"other", &sealed), Err(CryptoError::Decryption));
    assert_eq!(AeadKey([6u8; 32]).open(&[1u8; 12], b"binding", &sealed), Err(CryptoError::Decryption));
    let mut tampered = sealed.clone();
    tampered[0] ^= 1;
    assert_eq!(key.open(&[1u8; 12], b"binding", &tampered), Err(CryptoError::Decryption));
}

#[test]
fn signatures_verify_only_for_the_signed_message_and_key() {
    let mut rng = rng(5);
    let alice = IdentityKey::generate(&mut rng);
    let bob = IdentityKey::generate(&mut rng);
    let signature = alice.sign(b"contract bytes");
    assert_eq!(alice.public_key().verify(b"contract bytes", &signature), Ok(()));
    assert_eq!(alice.public_key().verify(b"contract bytez", &signature), Err(CryptoError::BadSignature));
    assert_eq!(bob.public_key().verify(b"contract bytes", &signature), Err(CryptoError::BadSignature));
    let restored = IdentityKey::from_seed(alice.expose_seed().as_ref()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(restored.public_key(), alice.public_key());
    assert!(!format!("{alice:?}").contains(&hex::encode(alice.expose_seed().as_ref())));
}

#[test]
fn dh_agreement_is_symmetric_and_refuses_the_identity() {
    let mut rng = rng(6);
    let a = DhSecret::generate(&mut rng);
    let b = DhSecret::generate(&mut rng);
    assert_eq!(*a.agree(&b.public(), b"ctx"), *b.agree(&a.public(), b"ctx"));
    assert_ne!(*a.agree(&b.public(), b"ctx"), *a.agree(&b.public(), b"other"));
    assert_eq!(DhPublic::from_bytes(&[0u8; 32]), Err(CryptoError::IdentityElement));
    let round_trip = DhPublic::from_bytes(&a.public().to_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(round_trip, a.public());
}

/// Distributed OPRF (overthreshold): the sum of the committee's evaluations, unblinded,
/// is the evaluation under the sum key; one member's alone is not; bad elements are named.
#[test]
fn evaluation_sum_is_the_evaluation_under_the_sum_key() {
    let mut rng = rng(0x07);
    let keys: Vec<OprfKey> = (0..3).map(|_| OprfKey::random(&mut rng)).collect();
    let sum_scalar: Scalar =
        keys.iter().map(|k| Scalar::from_canonical_bytes(k.to_bytes()).expect("canonical")).sum();
    let sum_key = OprfKey::from_bytes(&sum_scalar.to_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let inputs: Vec<Vec<u8>> = (0..300).map(|i| format!("INV-{i:08}").into_bytes()).collect();

    let session = ClientSetSession::new(&mut rng);
    let blinded = session.blind_batch(&inputs).unwrap_or_else(|e| panic!("{e}"));
    let mut sum = EvaluationSum::new(blinded.len());
    for key in &keys {
        sum.add(&evaluate_batch(key, &blinded).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(sum.added(), 3);
    let unblinded = session.unblind_sum(&sum).unwrap_or_else(|e| panic!("{e}"));
    let direct = evaluate_own_batch(&sum_key, &inputs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(unblinded, direct);

    let one = session
        .unblind_batch(&evaluate_batch(&keys[0], &blinded).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(one.iter().zip(&direct).all(|(a, b)| a != b));

    // A wrong length and a non-canonical element are refused, naming the index; nothing is added.
    let mut partial = EvaluationSum::new(blinded.len());
    let error = partial.add(&blinded[..10]).expect_err("refused");
    assert_eq!(error.index, 10);
    let mut bad = blinded.clone();
    bad[17] = [0xff; 32];
    let error = partial.add(&bad).expect_err("refused");
    assert_eq!((error.index, error.source), (17, CryptoError::NonCanonicalElement));
    assert_eq!(partial.added(), 0);
    // An empty sum (no evaluation added) is all identities: refused at index 0.
    let error = session.unblind_sum(&partial).expect_err("refused");
    assert_eq!((error.index, error.source), (0, CryptoError::IdentityElement));
}
