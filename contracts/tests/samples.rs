//! The golden samples: one contract per computation kind, parsed, signed with the fixed
//! test keys and verified; their canonical bytes as annotated hex and their stored signed
//! form are committed beside them and compared byte for byte.
//!
//! To regenerate after a deliberate change of the format: `XMCREDIT_BLESS=1 cargo test
//! -p xmcredit-contracts --test samples`, then review the diff.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use xmcredit_contracts::canonical::{annotate_hex, parse_annotated_hex};
use xmcredit_contracts::{Contract, ContractError, SignedContract, CONTRACT_DOMAIN};

fn annotated(name: &str, bytes: &[u8]) -> String {
    let mut text = String::new();
    text.push_str(&format!("# Canonical bytes of samples/{name}.toml (ARCHITECTURE.md, \"Contracts\").\n"));
    text.push_str("# Each party signs \"xmcredit contract v1\\n\" followed by these bytes.\n");
    text.push_str(&format!("# length: {} bytes\n", bytes.len()));
    text.push_str(&format!("# sha256: {}\n", hex::encode(Sha256::digest(bytes))));
    text.push_str(&annotate_hex(bytes));
    text
}

fn check_golden(file: &str, actual: &str) {
    let path = samples_dir().join(file);
    if std::env::var_os("XMCREDIT_BLESS").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with XMCREDIT_BLESS=1 to create it)", path.display()));
    assert_eq!(actual, expected, "{file} differs from what the code produces");
}

#[test]
fn every_sample_parses_signs_and_verifies() {
    for name in SAMPLES {
        let contract = sample(name);
        let verified = signed_by_all(&contract).verify(now(), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(verified.contract(), &contract);
        assert_eq!(verified.signatures().len(), contract.parties.len());
    }
}

#[test]
fn canonical_bytes_match_the_annotated_hex_golden_files() {
    for name in SAMPLES {
        let bytes = sample(name).canonical_bytes().expect("encodes");
        let file = format!("{name}.canonical.hex");
        check_golden(&file, &annotated(name, &bytes));
        let golden = std::fs::read_to_string(samples_dir().join(&file)).expect("golden file");
        assert_eq!(parse_annotated_hex(&golden).expect("hex"), bytes, "{file}");
    }
}

#[test]
fn stored_signed_form_matches_the_golden_files_and_verifies() {
    for name in SAMPLES {
        let signed = signed_by_all(&sample(name));
        let json = serde_json::to_string_pretty(&signed).expect("serializes") + "\n";
        let file = format!("{name}.signed.json");
        check_golden(&file, &json);
        let golden = std::fs::read_to_string(samples_dir().join(&file)).expect("golden file");
        let stored: SignedContract = serde_json::from_str(&golden).expect("parses");
        assert_eq!(stored, signed);
        stored.verify(now(), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn the_signed_message_is_the_domain_prefix_then_the_canonical_bytes() {
    let signed = signed_by_all(&sample(PSI));
    let message = signed.signed_message();
    assert_eq!(&message[..CONTRACT_DOMAIN.len()], b"xmcredit contract v1\n");
    assert_eq!(&message[CONTRACT_DOMAIN.len()..], signed.canonical_bytes());
    assert_eq!(signed.digest(), <[u8; 32]>::from(Sha256::digest(signed.canonical_bytes())));
    // The canonical bytes start with the first key in UTF-16 order, with no whitespace.
    assert!(signed
        .canonical_bytes()
        .starts_with(b"{\"computation\":{\"kind\":\"psi\",\"output\":\"intersection\"},"));
}

#[test]
fn canonical_bytes_round_trip() {
    for name in SAMPLES {
        let contract = sample(name);
        let bytes = contract.canonical_bytes().expect("encodes");
        let decoded = Contract::from_canonical_bytes(&bytes).expect("decodes");
        assert_eq!(decoded, contract);
        assert_eq!(decoded.canonical_bytes().expect("encodes"), bytes);
    }
}

#[test]
fn json_and_toml_of_the_same_contract_give_the_same_bytes() {
    for name in SAMPLES {
        let contract = sample(name);
        let pretty = serde_json::to_string_pretty(&contract).expect("serializes");
        let from_json = Contract::from_json_str(&pretty).expect("pretty JSON parses");
        assert_eq!(from_json.canonical_bytes(), contract.canonical_bytes(), "{name}");
    }
}

/// The PSI sample rewritten: keys and tables in another order, parties and datasets
/// swapped, inline tables for sections, the times as unix seconds and with another
/// offset, other comments and spacing. None of it changes what is signed.
const PSI_REORDERED: &str = r#"
limits.min_set_size."bank-a" = 20
limits.lookups_per_day."bank-a" = 5_000
limits.min_set_size.credit-center = 1_000
computation = { output = "intersection", kind = "psi" }
receivers = [ { form = "intersection", node = "bank-a" } ]

epoch_seconds   =   604_800
not_after = 2026-12-31T15:59:59Z
not_before = 1767196800
purpose = '''信易贷：贷款申请企业与纳税信用A级纳税人名单匹配（match bank-a's loan applicants against the A-grade taxpayer list）'''
version = 1
id = 'credit-center.xel-2026-psi-a-grade'

[[datasets]]
columns = []
key = "credit_code"
name = "loan_applicants"
party = "bank-a"

[[datasets]]
columns = [ ]
party = "credit-center"
key = "credit_code"
name = "a_grade_taxpayers"

[[parties]]
roles = ["client"]
public_key = "8139770EA87D175F56A35466C34C7ECCCB8D8A91B4EE37A25DF60F5B8FC9B394"
name = "Bank A Xiamen Branch"
node = "bank-a"

[[parties]]
public_key = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
roles = [ "server", ]
node = "credit-center"
name = "厦门市公共信用信息中心"
"#;

#[test]
fn a_reordered_and_reformatted_toml_signs_the_same_bytes() {
    let original = sample(PSI).canonical_bytes().expect("encodes");
    let reordered =
        Contract::from_toml_str(PSI_REORDERED).expect("parses").canonical_bytes().expect("encodes");
    assert_eq!(String::from_utf8_lossy(&reordered), String::from_utf8_lossy(&original));
}

#[test]
fn reordered_roles_rules_constants_and_columns_sign_the_same_bytes() {
    let text = sample_text(LOOKUP);
    let shuffled = text
        .replace(r#"roles = ["coordinator", "provider"]"#, r#"roles = ["provider", "coordinator"]"#)
        .replace(r#"constant = ["存续", "在业"]"#, r#"constant = ["在业", "存续"]"#)
        .replace("constant = 10,", "constant = \"10\",")
        .replace("  \"tax_grade\",            # enum A, B, M, C, D\n", "")
        .replace("  \"registration_status\",", "  \"tax_grade\", \"registration_status\",");
    assert_ne!(shuffled, text);
    let a = Contract::from_toml_str(&text).expect("parses").canonical_bytes().expect("encodes");
    let b = Contract::from_toml_str(&shuffled).expect("parses").canonical_bytes().expect("encodes");
    assert_eq!(a, b);
}

#[test]
fn the_order_of_rules_and_groups_is_signed() {
    let text = sample_text(SECAGG);
    let swapped = text.replace(r#"["350203", "350205","#, r#"["350205", "350203","#);
    let a = Contract::from_toml_str(&text).expect("parses").canonical_bytes().expect("encodes");
    let b = Contract::from_toml_str(&swapped).expect("parses").canonical_bytes().expect("encodes");
    assert_ne!(a, b, "groups are vector positions");
}

#[test]
fn non_canonical_contract_bytes_are_refused() {
    let contract = sample(PSI);
    let canonical = contract.canonical_bytes().expect("encodes");

    // serde_json writes struct fields in declaration order: valid JSON, not canonical.
    let serde_order = serde_json::to_vec(&contract).expect("serializes");
    assert!(matches!(Contract::from_canonical_bytes(&serde_order), Err(ContractError::NotCanonical(_))));

    // Pretty-printed.
    let pretty = serde_json::to_vec_pretty(&contract).expect("serializes");
    assert!(matches!(Contract::from_canonical_bytes(&pretty), Err(ContractError::NotCanonical(_))));

    // Canonical JSON, but the parties (a set) out of canonical order.
    let text = String::from_utf8(canonical.clone()).expect("utf8");
    let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
    if let Some(parties) = value.get_mut("parties").and_then(|p| p.as_array_mut()) {
        parties.reverse();
    }
    let reversed = xmcredit_contracts::canonical::to_canonical_bytes(&value).expect("encodes");
    assert_ne!(reversed, canonical);
    let err = Contract::from_canonical_bytes(&reversed).expect_err("unsorted set");
    assert!(matches!(err, ContractError::NotCanonical(_)), "{err}");

    // A time written as text instead of unix seconds.
    let as_text = text.replace("\"not_before\":1767196800", "\"not_before\":\"2026-01-01T00:00:00+08:00\"");
    assert_ne!(as_text, text);
    assert!(matches!(
        Contract::from_canonical_bytes(as_text.as_bytes()),
        Err(ContractError::NotCanonical(_))
    ));

    // An unknown field, even in canonical position.
    let extra = text.replacen("{\"computation\"", "{\"colour\":\"red\",\"computation\"", 1);
    let err = Contract::from_canonical_bytes(extra.as_bytes()).expect_err("unknown field");
    assert!(
        matches!(&err, ContractError::Json { message } if message.contains("unknown field `colour`")),
        "{err}"
    );
}

/// A cheap stand-in for a fuzz target: random byte edits of real canonical contracts
/// and audit records never panic a decoder, and whatever still decodes re-encodes to
/// exactly the bytes it came from.
#[test]
fn decoders_survive_mutated_input() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for name in SAMPLES {
        let bytes = sample(name).canonical_bytes().expect("encodes");
        for _ in 0..300 {
            let mut mutated = bytes.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % mutated.len();
                match next() % 3 {
                    0 => mutated[at] = next() as u8,
                    1 => {
                        mutated.remove(at);
                    }
                    _ => mutated.insert(at, b"{}[],:\"0a\\"[(next() % 10) as usize]),
                }
            }
            if let Ok(contract) = Contract::from_canonical_bytes(&mutated) {
                assert_eq!(contract.canonical_bytes().expect("encodes"), mutated);
            }
            let _ = SignedContract::from_parts(mutated.clone(), Vec::new());
            let _ = xmcredit_contracts::AuditRecord::from_canonical_bytes(&mutated);
        }
    }
}

#[test]
fn a_contract_id_is_scoped_by_a_party_that_proposes_it() {
    let text = sample_text(PSI);
    assert_eq!(sample(PSI).proposer().map(|n| n.as_str()), Some("credit-center"));
    // Another party's scope is fine too (bank-a proposes its own contract)...
    let by_bank = Contract::from_toml_str(&text.replace("credit-center.xel-2026", "bank-a.xel-2026"))
        .expect("a bank scopes its own ids");
    assert_eq!(by_bank.proposer().map(|n| n.as_str()), Some("bank-a"));
    // ...but an unscoped id, a scope that is not a party, or an empty name is refused.
    for id in ["xel-2026-psi-a-grade", "bank-z.xel-2026", "credit-center."] {
        let error = Contract::from_toml_str(&text.replace("credit-center.xel-2026-psi-a-grade", id))
            .expect_err("refused");
        let message = error.to_string();
        assert!(message.contains("id") && message.contains("not scoped by its proposer"), "{id}: {message}");
    }
}
