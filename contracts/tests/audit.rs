//! The hash-chained audit log: the verifier names the first altered, removed or
//! re-ordered record.

mod common;

use std::collections::BTreeMap;

use common::*;
use xmcredit_contracts::{
    verify_chain, verify_chain_with_head, AuditChain, AuditEntry, AuditError, AuditEvent, AuditRecord,
    ComputationKind, Outcome,
};
use xmcredit_crypto::ContractId;

fn entry(i: u64) -> AuditEntry {
    let outcome = match i % 4 {
        0 => Outcome::Ok,
        1 => Outcome::Refused { reason: "bank-a's set has 3 elements; contract requires at least 20".into() },
        2 => Outcome::Failed { reason: "peer sent a non-canonical element".into() },
        _ => Outcome::Interrupted { reason: "bank-b disconnected".into() },
    };
    AuditEntry {
        time: now() + i * 60,
        node: node("credit-center"),
        contract: (i != 1).then(|| ContractId::new("xel-2026-psi-a-grade").expect("valid")),
        computation: Some(ComputationKind::Psi),
        parties: vec![node("credit-center"), node("bank-a")],
        set_sizes: BTreeMap::from([(node("credit-center"), 1000 + i), (node("bank-a"), 20)]),
        outcome,
        transcript_digest: (i % 2 == 0).then_some([i as u8; 32]),
        event: None,
    }
}

fn chain(n: u64) -> Vec<AuditRecord> {
    let mut records: Vec<AuditRecord> = Vec::new();
    for i in 0..n {
        let record = AuditChain::append(records.last(), entry(i)).expect("appends");
        records.push(record);
    }
    records
}

#[test]
fn an_untouched_chain_verifies() {
    let records = chain(6);
    assert_eq!(verify_chain(&records), Ok(()));
    assert_eq!(verify_chain(&[]), Ok(()));
    assert_eq!(records[0].prev_hash, [0; 32]);
    assert_eq!(records[3].prev_hash, records[2].hash);
    let last = records.last().expect("six records");
    assert_eq!(verify_chain_with_head(&records, last.seq, &last.hash), Ok(()));
}

#[test]
fn an_edited_record_is_caught() {
    let mut records = chain(6);
    records[2].set_sizes.insert(node("bank-a"), 2000);
    assert_eq!(verify_chain(&records), Err(AuditError::Altered { seq: 2 }));

    let mut records = chain(6);
    records[4].outcome = Outcome::Failed { reason: "edited".into() };
    assert_eq!(verify_chain(&records), Err(AuditError::Altered { seq: 4 }));
}

#[test]
fn an_edited_and_rehashed_record_breaks_the_next_link() {
    let mut records = chain(6);
    records[2].outcome = Outcome::Ok;
    records[2].hash = records[2].compute_hash().expect("hashes");
    assert_eq!(verify_chain(&records), Err(AuditError::BrokenLink { seq: 3 }));
}

#[test]
fn a_deleted_record_is_caught() {
    let mut records = chain(6);
    records.remove(2);
    assert_eq!(verify_chain(&records), Err(AuditError::Removed { seq: 2, next: Some(3) }));

    // Deleted and everything after renumbered and re-hashed: the links no longer match.
    let mut records = chain(6);
    records.remove(2);
    for record in records.iter_mut().skip(2) {
        record.seq -= 1;
        record.hash = record.compute_hash().expect("hashes");
    }
    assert_eq!(verify_chain(&records), Err(AuditError::BrokenLink { seq: 2 }));

    // The first record deleted.
    let records = chain(3);
    assert_eq!(verify_chain(&records[1..]), Err(AuditError::Removed { seq: 0, next: Some(1) }));
}

#[test]
fn swapped_records_are_caught() {
    let mut records = chain(6);
    records.swap(1, 2);
    assert_eq!(verify_chain(&records), Err(AuditError::Reordered { position: 1, expected: 1, found: 2 }));

    let mut records = chain(6);
    records.swap(3, 5);
    assert_eq!(verify_chain(&records), Err(AuditError::Reordered { position: 3, expected: 3, found: 5 }));
}

#[test]
fn a_cut_or_rewritten_tail_needs_the_head_to_be_seen() {
    let records = chain(6);
    let head = records[5].clone();
    assert_eq!(verify_chain(&records[..4]), Ok(()), "a prefix is a valid chain on its own");
    assert_eq!(
        verify_chain_with_head(&records[..4], head.seq, &head.hash),
        Err(AuditError::Removed { seq: 4, next: None })
    );
    let mut rewritten = records.clone();
    rewritten[5].outcome = Outcome::Ok;
    rewritten[5].hash = rewritten[5].compute_hash().expect("hashes");
    assert_eq!(verify_chain(&rewritten), Ok(()));
    assert_eq!(verify_chain_with_head(&rewritten, head.seq, &head.hash), Err(AuditError::Altered { seq: 5 }));
}

#[test]
fn append_refuses_to_extend_an_altered_record() {
    let mut records = chain(2);
    records[1].time += 1;
    assert_eq!(
        AuditChain::append(records.last(), entry(2)).map(|r| r.seq),
        Err(AuditError::Altered { seq: 1 })
    );
}

#[test]
fn the_stored_form_is_canonical_and_round_trips() {
    for record in chain(4) {
        let bytes = record.to_canonical_bytes().expect("encodes");
        assert_eq!(AuditRecord::from_canonical_bytes(&bytes), Ok(record.clone()));
        let json = serde_json::to_string_pretty(&record).expect("serializes");
        assert!(AuditRecord::from_canonical_bytes(json.as_bytes()).is_err(), "pretty JSON is not canonical");
        assert_eq!(serde_json::from_str::<AuditRecord>(&json).expect("parses"), record);
    }
}

/// A known answer, so another implementation can check its record encoding and hash.
#[test]
fn record_zero_known_answer() {
    let record = AuditChain::append(
        None,
        AuditEntry {
            time: 1_772_337_600,
            node: node("bank-a"),
            contract: Some(ContractId::new("xel-2026-psi-a-grade").expect("valid")),
            computation: Some(ComputationKind::Psi),
            parties: vec![node("credit-center"), node("bank-a")],
            set_sizes: BTreeMap::from([(node("bank-a"), 20)]),
            outcome: Outcome::Refused { reason: "set too small".into() },
            transcript_digest: None,
            event: None,
        },
    )
    .expect("appends");
    let bytes = record.to_canonical_bytes().expect("encodes");
    let text = String::from_utf8(bytes).expect("utf8");
    let expected_prefix = r#"{"computation":"psi","contract":"xel-2026-psi-a-grade","hash":""#;
    assert!(text.starts_with(expected_prefix), "{text}");
    let expected_suffix = concat!(
        r#"","node":"bank-a","outcome":{"reason":"set too small","status":"refused"},"#,
        r#""parties":["credit-center","bank-a"],"#,
        r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
        r#""seq":0,"set_sizes":{"bank-a":20},"time":1772337600}"#,
    );
    assert!(text.ends_with(expected_suffix), "{text}");
    // hash = SHA-256("xmcredit audit v1\n" || the record's canonical JSON without "hash").
    use sha2::{Digest, Sha256};
    let body = text.replacen(&format!("\"hash\":\"{}\",", hex::encode(record.hash)), "", 1);
    let expected: [u8; 32] =
        Sha256::new().chain_update(b"xmcredit audit v1\n").chain_update(body.as_bytes()).finalize().into();
    assert_eq!(record.hash, expected);
}

/// A record as a node wrote it before events existed: its stored bytes, which have no
/// `event` key. The hash was computed then over the same fields.
const OLD_RECORD_ZERO: &str = concat!(
    r#"{"computation":"psi","contract":"xel-2026-psi-a-grade","hash":""#,
    "HASH",
    r#"","node":"bank-a","outcome":{"reason":"set too small","status":"refused"},"#,
    r#""parties":["credit-center","bank-a"],"#,
    r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
    r#""seq":0,"set_sizes":{"bank-a":20},"time":1772337600}"#,
);

/// A chain written before events were recorded still verifies, and a new record with
/// an event links after it (issue 15).
#[test]
fn records_without_event_still_verify_and_chain_on() {
    use sha2::{Digest, Sha256};
    // The old hash, computed here as the old code did: over the fields without `event`.
    let body = concat!(
        r#"{"computation":"psi","contract":"xel-2026-psi-a-grade","#,
        r#""node":"bank-a","outcome":{"reason":"set too small","status":"refused"},"#,
        r#""parties":["credit-center","bank-a"],"#,
        r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
        r#""seq":0,"set_sizes":{"bank-a":20},"time":1772337600}"#,
    );
    let old_hash =
        hex::encode(Sha256::new().chain_update(b"xmcredit audit v1\n").chain_update(body).finalize());
    let stored = OLD_RECORD_ZERO.replace("HASH", &old_hash);
    let old = AuditRecord::from_canonical_bytes(stored.as_bytes()).expect("an old record still parses");
    assert_eq!(old.event, None);
    assert_eq!(
        old.to_canonical_bytes().expect("encodes"),
        stored.as_bytes(),
        "re-encodes without an event key"
    );
    verify_chain(std::slice::from_ref(&old)).expect("an old record still verifies");

    let mut next = entry(1);
    next.event = Some(AuditEvent::Import { dataset: "loans".into(), version: 2, rows: 20 });
    let new = AuditChain::append(Some(&old), next).expect("appends after an old record");
    let text = String::from_utf8(new.to_canonical_bytes().expect("encodes")).expect("utf8");
    assert!(text.contains(r#""event":{"dataset":"loans","kind":"import","rows":20,"version":2}"#), "{text}");
    assert_eq!(AuditRecord::from_canonical_bytes(text.as_bytes()).expect("reads back"), new);
    verify_chain(&[old, new]).expect("a mixed chain verifies");
}

/// The event is hashed: changing it, adding one to an old record, or removing one,
/// each breaks the chain at that record.
#[test]
fn tampering_with_the_event_breaks_the_chain() {
    let mut records: Vec<AuditRecord> = Vec::new();
    let events = [
        AuditEvent::Propose,
        AuditEvent::Sign { automatic: false },
        AuditEvent::Run { computation: ComputationKind::Psi, role: "client".into(), job: 7 },
        AuditEvent::Revoke { reason: "ended".into() },
    ];
    for (i, event) in events.iter().enumerate() {
        let mut e = entry(i as u64);
        e.event = Some(event.clone());
        let record = AuditChain::append(records.last(), e).expect("appends");
        records.push(record);
    }
    verify_chain(&records).expect("intact");

    // A signature passed off as a proposal.
    let mut changed = records.clone();
    changed[1].event = Some(AuditEvent::Propose);
    assert_eq!(verify_chain(&changed), Err(AuditError::Altered { seq: 1 }));

    // A run's role or job changed.
    let mut changed = records.clone();
    changed[2].event =
        Some(AuditEvent::Run { computation: ComputationKind::Psi, role: "server".into(), job: 7 });
    assert_eq!(verify_chain(&changed), Err(AuditError::Altered { seq: 2 }));

    // The event dropped, so the record looks like one written before events existed.
    let mut changed = records.clone();
    changed[3].event = None;
    assert_eq!(verify_chain(&changed), Err(AuditError::Altered { seq: 3 }));

    // The stored bytes edited in place are caught the same way once read back.
    let bytes = String::from_utf8(records[0].to_canonical_bytes().expect("encodes")).expect("utf8");
    let edited = bytes.replace(r#""kind":"propose""#, r#""kind":"sign""#);
    assert_ne!(edited, bytes);
    // `sign` needs its `automatic` field: a bare edit does not even parse.
    assert!(AuditRecord::from_canonical_bytes(edited.as_bytes()).is_err());
    let edited = bytes.replace(r#"{"kind":"propose"}"#, r#"{"automatic":false,"kind":"sign"}"#);
    let mut forged = records.clone();
    forged[0] = AuditRecord::from_canonical_bytes(edited.as_bytes()).expect("a well-formed edit parses");
    assert_eq!(verify_chain(&forged), Err(AuditError::Altered { seq: 0 }));
}
