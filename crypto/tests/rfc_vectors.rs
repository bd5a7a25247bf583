//! The published test vectors of RFC 9380 (expand_message_xmd), RFC 9496 (ristretto255)
//! and RFC 9497 (OPRF, ristretto255-SHA512), run against this crate, plus the negative
//! cases the RFCs call out.

#[path = "vectors/rfc9380_xmd_sha512.rs"]
mod rfc9380;
#[path = "vectors/rfc9496_ristretto255.rs"]
mod rfc9496;
#[path = "vectors/rfc9497_ristretto255_sha512.rs"]
mod rfc9497;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::RistrettoPoint;
use xmcredit_crypto::group::decode_element;
use xmcredit_crypto::h2c::expand_message_xmd;
use xmcredit_crypto::oprf::{blind_evaluate, Blind, BlindedElement, EvaluatedElement, Mode, OprfKey, Suite};
use xmcredit_crypto::set::{evaluate_batch, finalize_unblinded, ClientSetSession};
use xmcredit_crypto::CryptoError;

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap_or_else(|e| panic!("bad hex in vector {text}: {e}"))
}

fn unhex32(text: &str) -> [u8; 32] {
    unhex(text).try_into().unwrap_or_else(|_| panic!("not 32 bytes: {text}"))
}

#[test]
fn rfc9380_expand_message_xmd_sha512() {
    assert_eq!(rfc9380::XMD_SHA512_CASES.len(), 10);
    for case in rfc9380::XMD_SHA512_CASES {
        let mut msg = case.msg_prefix.to_string();
        msg.extend(std::iter::repeat_n(case.repeat_char, case.repeat_count));
        let out = expand_message_xmd(msg.as_bytes(), rfc9380::DST.as_bytes(), case.len_in_bytes)
            .unwrap_or_else(|e| panic!("{msg:?}: {e}"));
        assert_eq!(hex::encode(out), case.uniform_bytes, "msg {:?} len {}", msg, case.len_in_bytes);
    }
}

#[test]
fn rfc9380_expand_message_refuses_out_of_range_lengths() {
    assert!(matches!(expand_message_xmd(b"", b"dst", 0), Err(CryptoError::ExpandMessage(_))));
    assert!(matches!(expand_message_xmd(b"", b"dst", 255 * 64 + 1), Err(CryptoError::ExpandMessage(_))));
    assert!(expand_message_xmd(b"", b"dst", 255 * 64).is_ok());
}

#[test]
fn rfc9496_generator_multiples_encode_and_decode() {
    let mut point = RistrettoPoint::default();
    for (k, expected) in rfc9496::GENERATOR_MULTIPLES.iter().enumerate() {
        assert_eq!(hex::encode(point.compress().as_bytes()), *expected, "{k}·B");
        let decoded = decode_element(&unhex(expected));
        if k == 0 {
            // The identity encodes fine but is refused wherever a peer supplies it.
            assert_eq!(decoded, Err(CryptoError::IdentityElement));
        } else {
            assert_eq!(decoded, Ok(point), "{k}·B");
        }
        point += RISTRETTO_BASEPOINT_POINT;
    }
}

#[test]
fn rfc9496_invalid_encodings_are_refused() {
    assert_eq!(rfc9496::INVALID_ENCODINGS.len(), 29);
    for case in rfc9496::INVALID_ENCODINGS {
        assert_eq!(
            decode_element(&unhex(case.encoding)),
            Err(CryptoError::NonCanonicalElement),
            "{}: {}",
            case.category,
            case.encoding
        );
    }
}

#[test]
fn rfc9496_one_way_map() {
    for case in rfc9496::FROM_UNIFORM_BYTES {
        let input: [u8; 64] = unhex(case.input).try_into().unwrap_or_else(|_| panic!("64 bytes"));
        let point = RistrettoPoint::from_uniform_bytes(&input);
        assert_eq!(hex::encode(point.compress().as_bytes()), case.output);
    }
}

#[test]
fn wrong_lengths_are_refused() {
    for len in [0usize, 31, 33, 64] {
        assert_eq!(decode_element(&vec![1u8; len]), Err(CryptoError::ElementLength { got: len }));
        assert_eq!(BlindedElement::from_bytes(&vec![1u8; len]), Err(CryptoError::ElementLength { got: len }));
        assert!(
            matches!(OprfKey::from_bytes(&vec![1u8; len]), Err(CryptoError::ScalarLength { got }) if got == len)
        );
    }
}

#[test]
fn zero_and_non_canonical_scalars_are_refused() {
    assert!(matches!(OprfKey::from_bytes(&[0u8; 32]), Err(CryptoError::ZeroScalar)));
    assert!(matches!(Blind::from_bytes(&[0u8; 32]), Err(CryptoError::ZeroScalar)));
    assert!(matches!(OprfKey::from_bytes(&[0xffu8; 32]), Err(CryptoError::NonCanonicalScalar)));
}

/// Runs one RFC 9497 vector (possibly a batch) one element at a time.
fn check_vector_one_at_a_time(suite: &Suite, key: &OprfKey, vector: &rfc9497::Vector) {
    for i in 0..vector.input.len() {
        let input = unhex(vector.input[i]);
        let blind = Blind::from_bytes(&unhex(vector.blind[i])).unwrap_or_else(|e| panic!("blind: {e}"));
        let blinded = suite.blind_with(&input, &blind).unwrap_or_else(|e| panic!("blind: {e}"));
        assert_eq!(hex::encode(blinded.to_bytes()), vector.blinded_element[i]);
        // The server side receives bytes, decoded through the checked path.
        let received =
            BlindedElement::from_bytes(&unhex(vector.blinded_element[i])).unwrap_or_else(|e| panic!("{e}"));
        let evaluated = blind_evaluate(key, &received);
        assert_eq!(hex::encode(evaluated.to_bytes()), vector.evaluation_element[i]);
        let evaluated = EvaluatedElement::from_bytes(&unhex(vector.evaluation_element[i]))
            .unwrap_or_else(|e| panic!("{e}"));
        let output = suite.finalize(&input, &blind, &evaluated).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hex::encode(output.0), vector.output[i]);
    }
}

#[test]
fn rfc9497_oprf_mode_derive_key_pair() {
    let seed = unhex32(rfc9497::SEED);
    let key =
        Suite::base().derive_key_pair(&seed, &unhex(rfc9497::KEY_INFO)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hex::encode(key.to_bytes()), rfc9497::OPRF_SK);
}

#[test]
fn rfc9497_oprf_mode_vectors() {
    let key = OprfKey::from_bytes(&unhex(rfc9497::OPRF_SK)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rfc9497::OPRF_VECTORS.len(), 2);
    for vector in rfc9497::OPRF_VECTORS {
        check_vector_one_at_a_time(Suite::base(), &key, vector);
    }
}

/// RFC 9497 gives batched vectors only for the verifiable modes; their Blind,
/// BlindEvaluate and Finalize are the base mode's under another context string, so the
/// batches check the same code paths (the proofs are not produced here).
#[test]
fn rfc9497_voprf_context_vectors_including_batch() {
    let suite = Suite::new(Mode::Voprf);
    let seed = unhex32(rfc9497::SEED);
    let key = suite.derive_key_pair(&seed, &unhex(rfc9497::KEY_INFO)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hex::encode(key.to_bytes()), rfc9497::VOPRF_SK);
    assert_eq!(hex::encode(key.public_key()), rfc9497::VOPRF_PK);
    assert!(rfc9497::VOPRF_VECTORS.iter().any(|v| v.input.len() == 2), "batch vector present");
    for vector in rfc9497::VOPRF_VECTORS {
        check_vector_one_at_a_time(&suite, &key, vector);
    }
}

#[test]
fn rfc9497_poprf_context_derive_key_pair() {
    let suite = Suite::new(Mode::Poprf);
    let key = suite
        .derive_key_pair(&unhex32(rfc9497::SEED), &unhex(rfc9497::KEY_INFO))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hex::encode(key.to_bytes()), rfc9497::POPRF_SK);
    assert_eq!(hex::encode(key.public_key()), rfc9497::POPRF_PK);
}

/// The batched, parallel set-session code reproduces the RFC's values: every element of
/// a session shares the blind, so vectors with equal blinds form one session.
#[test]
fn rfc9497_vectors_through_the_batch_code() {
    let key = OprfKey::from_bytes(&unhex(rfc9497::OPRF_SK)).unwrap_or_else(|e| panic!("{e}"));
    for vector in rfc9497::OPRF_VECTORS {
        let blind = Blind::from_bytes(&unhex(vector.blind[0])).unwrap_or_else(|e| panic!("{e}"));
        let session = ClientSetSession::from_blind(&blind);
        let inputs: Vec<Vec<u8>> = vector.input.iter().map(|i| unhex(i)).collect();
        let blinded = session.blind_batch(&inputs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(blinded.iter().map(hex::encode).collect::<Vec<_>>(), vector.blinded_element);
        let evaluated = evaluate_batch(&key, &blinded).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(evaluated.iter().map(hex::encode).collect::<Vec<_>>(), vector.evaluation_element);
        let unblinded = session.unblind_batch(&evaluated).unwrap_or_else(|e| panic!("{e}"));
        for (i, element) in unblinded.iter().enumerate() {
            let output = finalize_unblinded(&inputs[i], element).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(hex::encode(output.0), vector.output[i]);
        }
    }
}

#[test]
fn batch_decoding_names_the_bad_element() {
    let key = OprfKey::from_bytes(&unhex(rfc9497::OPRF_SK)).unwrap_or_else(|e| panic!("{e}"));
    let good = unhex32(rfc9497::OPRF_VECTORS[0].blinded_element[0]);
    let identity = [0u8; 32];
    let non_canonical = unhex32(rfc9496::INVALID_ENCODINGS[0].encoding);
    for (bad, reason) in
        [(identity, CryptoError::IdentityElement), (non_canonical, CryptoError::NonCanonicalElement)]
    {
        let mut batch = vec![good; 300];
        batch[277] = bad;
        let error = evaluate_batch(&key, &batch).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(error.index, 277);
        assert_eq!(error.source, reason);
    }
}

#[test]
fn hash_to_group_is_the_rfc_map_of_expand_message() {
    // Independent recomputation: HashToGroup = one-way map of 64 bytes of
    // expand_message_xmd with DST "HashToGroup-" || contextString.
    let dst = [b"HashToGroup-".as_slice(), Suite::base().context_string()].concat();
    assert_eq!(dst, b"HashToGroup-OPRFV1-\x00-ristretto255-SHA512");
    for input in [b"".as_slice(), b"91350203MA31XEK07G", &[0x5a; 17]] {
        let uniform: [u8; 64] = expand_message_xmd(input, &dst, 64)
            .unwrap_or_else(|e| panic!("{e}"))
            .try_into()
            .unwrap_or_else(|_| panic!("64 bytes"));
        assert_eq!(Suite::base().hash_to_group(input), RistrettoPoint::from_uniform_bytes(&uniform));
    }
}
