//! Signing, verification, the validity window and revocation: each refusal with its own
//! assertion on the error.

mod common;

use common::*;
use xmcredit_contracts::{ContractError, Revocation, SignedContract};
use xmcredit_crypto::Epoch;

#[test]
fn a_missing_signature_is_refused_naming_the_party() {
    let contract = sample(OVERTHRESHOLD);
    let mut signed = SignedContract::new(&contract).expect("valid");
    for id in ["credit-center", "bank-a", "bank-b"] {
        signed.sign(&node(id), &key(id)).expect("own key");
    }
    assert_eq!(signed.missing_signatures(), vec![node("bank-c")]);
    let err = signed.verify(now(), &[]).expect_err("bank-c has not signed");
    assert_eq!(
        err,
        ContractError::MissingSignatures { contract: contract.id.clone(), missing: vec![node("bank-c")] }
    );
}

#[test]
fn an_unsigned_contract_lacks_every_signature() {
    let contract = sample(PSI);
    let err = SignedContract::new(&contract).expect("valid").verify(now(), &[]).expect_err("unsigned");
    assert_eq!(
        err,
        ContractError::MissingSignatures {
            contract: contract.id,
            missing: vec![node("bank-a"), node("credit-center")]
        }
    );
}

#[test]
fn a_signature_by_a_key_not_in_the_contract_is_refused() {
    let contract = sample(PSI);
    let signed = signed_by_all(&contract);
    let outsider = key("outsider");
    let forged = outsider.sign(&signed.signed_message());

    // Attributed to a party: it does not verify under that party's key.
    let signatures = vec![(node("credit-center"), signed.signatures()[1].1), (node("bank-a"), forged)];
    let tampered =
        SignedContract::from_parts(signed.canonical_bytes().to_vec(), signatures).expect("well formed");
    let err = tampered.verify(now(), &[]).expect_err("forged");
    assert_eq!(err, ContractError::BadSignature { contract: contract.id.clone(), node: node("bank-a") });

    // Attributed to its own node, which is not a party.
    let mut signatures = signed.signatures().to_vec();
    signatures.push((node("bank-z"), forged));
    let extra =
        SignedContract::from_parts(signed.canonical_bytes().to_vec(), signatures).expect("well formed");
    let err = extra.verify(now(), &[]).expect_err("not a party");
    assert_eq!(err, ContractError::SignerNotAParty { contract: contract.id.clone(), node: node("bank-z") });
}

#[test]
fn signing_or_adding_with_the_wrong_key_is_refused_at_once() {
    let contract = sample(PSI);
    let mut signed = SignedContract::new(&contract).expect("valid");
    let err = signed.sign(&node("bank-a"), &key("bank-b")).expect_err("bank-b's key");
    assert!(
        matches!(err, ContractError::WrongSigningKey { ref node, .. } if node.as_str() == "bank-a"),
        "{err}"
    );
    let forged = key("outsider").sign(&signed.signed_message());
    let err = signed.add_signature(node("bank-a"), forged).expect_err("forged");
    assert_eq!(err, ContractError::BadSignature { contract: contract.id.clone(), node: node("bank-a") });
    let err = signed.add_signature(node("bank-z"), forged).expect_err("not a party");
    assert_eq!(err, ContractError::SignerNotAParty { contract: contract.id.clone(), node: node("bank-z") });
    let good = key("bank-a").sign(&signed.signed_message());
    signed.add_signature(node("bank-a"), good).expect("good signature");
    assert_eq!(signed.missing_signatures(), vec![node("credit-center")]);
}

#[test]
fn two_signatures_attributed_to_one_party_are_refused() {
    let signed = signed_by_all(&sample(PSI));
    let mut signatures = signed.signatures().to_vec();
    signatures.push(signatures[0].clone());
    let doubled =
        SignedContract::from_parts(signed.canonical_bytes().to_vec(), signatures).expect("well formed");
    let err = doubled.verify(now(), &[]).expect_err("duplicate");
    assert!(matches!(err, ContractError::DuplicateSignature { .. }), "{err}");
}

#[test]
fn a_field_tampered_with_after_signing_breaks_the_signatures() {
    let contract = sample(PSI);
    let signed = signed_by_all(&contract);
    let text = String::from_utf8(signed.canonical_bytes().to_vec()).expect("utf8");

    // Still canonical and well formed, so it decodes; but no signature covers it.
    let tampered = text.replace("\"bank-a\":20", "\"bank-a\":1");
    assert_ne!(tampered, text);
    let forged =
        SignedContract::from_parts(tampered.into_bytes(), signed.signatures().to_vec()).expect("decodes");
    assert_eq!(forged.contract().limits.min_set_size.get(&node("bank-a")), Some(&1));
    let err = forged.verify(now(), &[]).expect_err("tampered");
    let first_signer = signed.signatures()[0].0.clone();
    assert_eq!(err, ContractError::BadSignature { contract: contract.id.clone(), node: first_signer });

    // Tampering that also breaks the encoding is refused before signatures are looked at.
    let spaced = text.replacen(":", ": ", 1);
    let err =
        SignedContract::from_parts(spaced.into_bytes(), signed.signatures().to_vec()).expect_err("spaces");
    assert!(matches!(err, ContractError::NotCanonical(_)), "{err}");
}

#[test]
fn a_contract_past_its_window_is_expired() {
    let contract = sample(PSI);
    let signed = signed_by_all(&contract);
    assert!(signed.verify(contract.not_after, &[]).is_ok(), "not_after is the last valid second");
    let err = signed.verify(contract.not_after + 1, &[]).expect_err("expired");
    assert_eq!(
        err,
        ContractError::Expired {
            contract: contract.id.clone(),
            not_after: contract.not_after,
            now: contract.not_after + 1
        }
    );
}

#[test]
fn a_contract_before_its_window_is_not_yet_valid() {
    let contract = sample(PSI);
    let signed = signed_by_all(&contract);
    assert!(signed.verify(contract.not_before, &[]).is_ok(), "not_before is the first valid second");
    let err = signed.verify(contract.not_before - 1, &[]).expect_err("too early");
    assert_eq!(
        err,
        ContractError::NotYetValid {
            contract: contract.id.clone(),
            not_before: contract.not_before,
            now: contract.not_before - 1
        }
    );
}

#[test]
fn a_revocation_by_any_party_ends_the_contract_for_everyone() {
    let contract = sample(SECAGG);
    let signed = signed_by_all(&contract);
    let revocation = Revocation::sign(
        &signed,
        &node("bank-c"),
        &key("bank-c"),
        "数据授权已撤回 (data authorization withdrawn)",
        now(),
    )
    .expect("bank-c is a party");
    revocation.verify(&signed).expect("valid revocation");
    let err = signed.verify(now() + 60, std::slice::from_ref(&revocation)).expect_err("revoked");
    assert_eq!(
        err,
        ContractError::Revoked {
            contract: contract.id.clone(),
            by: node("bank-c"),
            time: now(),
            reason: "数据授权已撤回 (data authorization withdrawn)".into(),
        }
    );

    // The stored form round-trips and still verifies.
    let json = serde_json::to_string(&revocation).expect("serializes");
    let back: Revocation = serde_json::from_str(&json).expect("parses");
    assert_eq!(back, revocation);
    back.verify(&signed).expect("still valid");
}

#[test]
fn revocations_of_other_contracts_are_ignored_and_forged_ones_refused() {
    let psi = signed_by_all(&sample(PSI));
    let secagg = signed_by_all(&sample(SECAGG));
    let other = Revocation::sign(&psi, &node("bank-a"), &key("bank-a"), "ended", now()).expect("party");
    assert!(!other.applies_to(&secagg));
    secagg.verify(now(), std::slice::from_ref(&other)).expect("another contract's revocation does not apply");

    // Not a party: cannot even be made with the library.
    let err = Revocation::sign(&psi, &node("bank-c"), &key("bank-c"), "x", now()).expect_err("not a party");
    assert!(matches!(err, ContractError::NotAParty { .. }), "{err}");

    // Forged by an outsider under bank-a's name.
    let mut forged = other.clone();
    forged.signature = key("outsider").sign(&forged.signed_message().expect("encodes"));
    let err = psi.verify(now(), std::slice::from_ref(&forged)).expect_err("forged revocation");
    assert!(matches!(err, ContractError::BadRevocation { ref by, .. } if by.as_str() == "bank-a"), "{err}");

    // A changed reason no longer matches the signature.
    let mut edited = other.clone();
    edited.reason = "something else".into();
    assert!(matches!(edited.verify(&psi), Err(ContractError::BadRevocation { .. })));
}

#[test]
fn the_stored_signed_form_round_trips_and_refuses_unknown_fields() {
    let signed = signed_by_all(&sample(LOOKUP));
    let json = serde_json::to_string(&signed).expect("serializes");
    let back: SignedContract = serde_json::from_str(&json).expect("parses");
    assert_eq!(back.canonical_bytes(), signed.canonical_bytes());
    back.verify(now(), &[]).expect("verifies");
    let extra = json.replacen("{\"contract\"", "{\"note\":\"x\",\"contract\"", 1);
    assert!(serde_json::from_str::<SignedContract>(&extra).is_err());
}

#[test]
fn epochs_count_from_not_before() {
    let verified = verified(PSI);
    let start = verified.contract().not_before;
    let week = verified.contract().epoch_seconds;
    assert_eq!(verified.epoch_at(start), Ok(Epoch(0)));
    assert_eq!(verified.epoch_at(start + week - 1), Ok(Epoch(0)));
    assert_eq!(verified.epoch_at(start + week), Ok(Epoch(1)));
    assert_eq!(verified.epoch_bounds(Epoch(1)), (start + week, start + 2 * week - 1));
    assert!(matches!(verified.epoch_at(start - 1), Err(ContractError::NotYetValid { .. })));
    assert!(matches!(
        verified.epoch_at(verified.contract().not_after + 1),
        Err(ContractError::Expired { .. })
    ));
}
