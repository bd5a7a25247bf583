//! Supply-chain finance data (信用+供应链, design.md use 2): a chain leader's payables
//! ledger, the receivables its suppliers present to a bank for financing, the frauds
//! seeded among them, the bank's check of the leader's confirmations, and the plaintext
//! answer that check must reproduce.
//!
//! Receivables are keyed by (supplier's unified social credit code, 20-digit fully
//! digitalized e-invoice number), a composite key ([`RECEIVABLE_KEY_KIND`]); the bank's
//! export writes invoice numbers as clerks type them (grouped with spaces or hyphens,
//! full-width digits) and codes in lower case, which the key's normalization undoes.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use xmcredit_contracts::entity_code::EntityCode;

/// The composite key both the leader's ledger and the bank's presented receivables
/// declare (schema and contract alike).
pub const RECEIVABLE_KEY_KIND: &str = r#"{ kind = "composite", parts = [
  { column = "supplier_code", kind = "entity_code" },
  { column = "invoice_no", kind = "identifier", normalize = ["fullwidth", "strip_spaces", "strip_hyphens"], pattern = "[0-9]{20}" },
] }"#;

/// Ledger statuses. Only `confirmed` receivables may be financed.
pub const CONFIRMED: &str = "confirmed";
pub const SETTLED: &str = "settled";
pub const DISPUTED: &str = "disputed";

/// A frauds seeded among the presented receivables, each exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SeededFraud {
    /// A receivable the leader never confirmed: no such payable in its ledger.
    NeverConfirmed,
    /// A confirmed receivable presented with a higher amount than the leader owes.
    ChangedAmount,
    /// A receivable the leader already paid (ledger status `settled`), presented again.
    AlreadySettled,
}

impl SeededFraud {
    pub const ALL: [SeededFraud; 3] = [Self::NeverConfirmed, Self::ChangedAmount, Self::AlreadySettled];

    pub fn name(self) -> &'static str {
        match self {
            Self::NeverConfirmed => "never-confirmed",
            Self::ChangedAmount => "changed-amount",
            Self::AlreadySettled => "already-settled",
        }
    }
}

/// One payable in the chain leader's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payable {
    pub supplier: EntityCode,
    pub invoice: String,
    pub amount_cents: u64,
    /// `YYYY-MM-DD`.
    pub due: String,
    pub status: &'static str,
}

/// One receivable a supplier presented to the bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub supplier: EntityCode,
    pub invoice: String,
    pub amount_cents: u64,
    pub due: String,
    /// Which fraud this row is, if it is one (the simulator's ground truth).
    pub fraud: Option<SeededFraud>,
}

impl Presented {
    /// The key's element text: the composite encoding of (supplier, invoice).
    pub fn key(&self) -> String {
        receivable_key(&self.supplier, &self.invoice)
    }
}

/// The element text of a receivable key, as the node stores and hashes it.
pub fn receivable_key(supplier: &EntityCode, invoice: &str) -> String {
    format!("18:{supplier},{}:{invoice},", invoice.len())
}

/// The chain, its ledger and what one bank was presented.
#[derive(Debug, Clone)]
pub struct SupplyChain {
    pub ledger: Vec<Payable>,
    pub presented: Vec<Presented>,
}

fn date(rng: &mut ChaCha20Rng) -> String {
    format!("2026-{:02}-{:02}", rng.gen_range(1..=12), rng.gen_range(1..=28))
}

impl SupplyChain {
    /// `invoices` payables for each supplier (at least 3 suppliers, 4 invoices each); the
    /// bank is presented about a third of the confirmed ones of the first three
    /// suppliers, plus one row for each [`SeededFraud`].
    pub fn generate(seed: u64, suppliers: &[EntityCode], invoices: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(suppliers.len() >= 3 && invoices >= 4, "need 3 suppliers with 4 invoices each");
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5cf1_2026);
        let mut ledger = Vec::with_capacity(suppliers.len() * invoices);
        let mut serial = rng.gen_range(1_000_000u64..9_000_000);
        for supplier in suppliers {
            for i in 0..invoices {
                serial += rng.gen_range(1..50);
                // Most payables are confirmed; some settled or disputed.
                let status = match (i % 10, rng.gen_range(0..10)) {
                    (0, _) => SETTLED,
                    (_, 0) => DISPUTED,
                    _ => CONFIRMED,
                };
                ledger.push(Payable {
                    supplier: *supplier,
                    invoice: format!("2535{serial:016}"),
                    amount_cents: rng.gen_range(1_000_000..500_000_000),
                    due: date(&mut rng),
                    status,
                });
            }
        }
        let presenters: BTreeSet<EntityCode> = suppliers[..3].iter().copied().collect();
        let mut presented: Vec<Presented> = ledger
            .iter()
            .filter(|p| presenters.contains(&p.supplier) && p.status == CONFIRMED && rng.gen_ratio(1, 3))
            .map(|p| Presented {
                supplier: p.supplier,
                invoice: p.invoice.clone(),
                amount_cents: p.amount_cents,
                due: p.due.clone(),
                fraud: None,
            })
            .collect();
        anyhow::ensure!(presented.len() >= 2, "too few presented receivables; raise invoices");
        // Changed amount: an honest row, its amount raised by 12%.
        let changed = rng.gen_range(0..presented.len());
        presented[changed].amount_cents += presented[changed].amount_cents * 12 / 100;
        presented[changed].fraud = Some(SeededFraud::ChangedAmount);
        // Never confirmed: an invoice number the leader's ledger does not hold.
        serial += 100_000;
        presented.push(Presented {
            supplier: suppliers[0],
            invoice: format!("2535{serial:016}"),
            amount_cents: rng.gen_range(1_000_000..500_000_000),
            due: date(&mut rng),
            fraud: Some(SeededFraud::NeverConfirmed),
        });
        // Already settled: a payable the leader paid, presented as it stands in the ledger.
        let settled = ledger
            .iter()
            .find(|p| presenters.contains(&p.supplier) && p.status == SETTLED)
            .ok_or_else(|| anyhow::anyhow!("no settled payable to present"))?;
        presented.push(Presented {
            supplier: settled.supplier,
            invoice: settled.invoice.clone(),
            amount_cents: settled.amount_cents,
            due: settled.due.clone(),
            fraud: Some(SeededFraud::AlreadySettled),
        });
        presented.shuffle(&mut rng);
        Ok(Self { ledger, presented })
    }

    /// The ledger as the leader's operator exports it.
    pub fn ledger_csv(&self) -> String {
        let mut csv = String::from("supplier_code,invoice_no,amount,due_date,status\n");
        for p in &self.ledger {
            csv.push_str(&format!(
                "{},{},{},{},{}\n",
                p.supplier,
                p.invoice,
                yuan(p.amount_cents),
                p.due,
                p.status
            ));
        }
        csv
    }

    /// The presented receivables as the bank's clerks typed them: invoice numbers
    /// grouped by spaces or hyphens or in full-width digits, some codes in lower case.
    pub fn presented_csv(&self) -> String {
        let mut csv = String::from("invoice_no,supplier_code,amount,due_date\n");
        for (i, r) in self.presented.iter().enumerate() {
            let invoice = match i % 4 {
                0 => group(&r.invoice, ' '),
                1 => group(&r.invoice, '-'),
                2 => r.invoice.chars().map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap_or(c)).collect(),
                _ => r.invoice.clone(),
            };
            let supplier =
                if i % 3 == 0 { r.supplier.as_str().to_lowercase() } else { r.supplier.to_string() };
            csv.push_str(&format!("{invoice},{supplier},{},{}\n", yuan(r.amount_cents), r.due));
        }
        csv
    }

    /// The plaintext answer: what the leader's confirmations say about each presented
    /// receivable, computed in the clear from both sides' data.
    pub fn expected_findings(&self) -> Findings {
        let ledger: BTreeMap<String, &Payable> =
            self.ledger.iter().map(|p| (receivable_key(&p.supplier, &p.invoice), p)).collect();
        let confirmations = self
            .presented
            .iter()
            .filter_map(|r| {
                let p = ledger.get(&r.key())?;
                Some((
                    r.key(),
                    Confirmation {
                        amount_cents: p.amount_cents,
                        due: p.due.clone(),
                        status: p.status.to_string(),
                    },
                ))
            })
            .collect();
        check_receivables(&self.presented, &confirmations)
    }

    /// The seeded frauds by presented key.
    pub fn seeded(&self) -> BTreeMap<String, SeededFraud> {
        self.presented.iter().filter_map(|r| r.fraud.map(|f| (r.key(), f))).collect()
    }
}

fn yuan(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn group(text: &str, separator: char) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push(separator);
        }
        out.push(c);
    }
    out
}

/// What the leader confirmed about one receivable (the labels the bank decrypts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub amount_cents: u64,
    pub due: String,
    pub status: String,
}

impl Confirmation {
    /// Reads a decrypted label `{"amount":"1234.50","due_date":"2026-03-01","status":"confirmed"}`.
    pub fn from_label(label: &serde_json::Value) -> Option<Self> {
        let amount = label["amount"].as_str()?;
        let (whole, fraction) = amount.split_once('.').unwrap_or((amount, "0"));
        let cents =
            whole.parse::<u64>().ok()? * 100 + format!("{fraction:0<2}").get(..2)?.parse::<u64>().ok()?;
        Some(Self {
            amount_cents: cents,
            due: label["due_date"].as_str()?.to_string(),
            status: label["status"].as_str()?.to_string(),
        })
    }
}

/// The bank's findings over the receivables it was presented.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Keys the leader holds no payable for.
    pub unconfirmed: BTreeSet<String>,
    /// Keys the leader holds with a status other than `confirmed` (key → status).
    pub not_payable: BTreeMap<String, String>,
    /// Keys whose presented amount differs from the confirmed one (key → (presented, confirmed) cents).
    pub amount_differs: BTreeMap<String, (u64, u64)>,
    /// Keys whose presented due date differs from the confirmed one.
    pub due_differs: BTreeMap<String, (String, String)>,
    /// Keys confirmed as presented.
    pub clean: BTreeSet<String>,
}

impl Findings {
    /// Every flagged key.
    pub fn flagged(&self) -> BTreeSet<String> {
        let mut all = self.unconfirmed.clone();
        all.extend(self.not_payable.keys().cloned());
        all.extend(self.amount_differs.keys().cloned());
        all.extend(self.due_differs.keys().cloned());
        all
    }
}

/// The bank's check: each presented receivable against the leader's confirmation of it
/// (none: the leader never confirmed it).
pub fn check_receivables(
    presented: &[Presented],
    confirmations: &BTreeMap<String, Confirmation>,
) -> Findings {
    let mut findings = Findings::default();
    for r in presented {
        let key = r.key();
        let Some(c) = confirmations.get(&key) else {
            findings.unconfirmed.insert(key);
            continue;
        };
        let mut flagged = false;
        if c.status != CONFIRMED {
            findings.not_payable.insert(key.clone(), c.status.clone());
            flagged = true;
        }
        if c.amount_cents != r.amount_cents {
            findings.amount_differs.insert(key.clone(), (r.amount_cents, c.amount_cents));
            flagged = true;
        }
        if c.due != r.due {
            findings.due_differs.insert(key.clone(), (r.due.clone(), c.due.clone()));
            flagged = true;
        }
        if !flagged {
            findings.clean.insert(key);
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmcredit_contracts::entity_code::EntityKind;
    use xmcredit_contracts::KeyKind;

    fn suppliers() -> Vec<EntityCode> {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        (0..4)
            .map(|_| EntityCode::random(&mut rng, EntityKind::Enterprise, "350206").expect("valid"))
            .collect()
    }

    #[test]
    fn each_seeded_fraud_is_the_only_finding_of_its_kind() {
        let chain = SupplyChain::generate(1, &suppliers(), 30).expect("generates");
        let findings = chain.expected_findings();
        let seeded = chain.seeded();
        assert_eq!(seeded.len(), 3);
        assert_eq!(findings.flagged(), seeded.keys().cloned().collect());
        for (key, fraud) in &seeded {
            let found = match fraud {
                SeededFraud::NeverConfirmed => findings.unconfirmed.contains(key),
                SeededFraud::ChangedAmount => findings.amount_differs.contains_key(key),
                SeededFraud::AlreadySettled => {
                    findings.not_payable.get(key).map(String::as_str) == Some(SETTLED)
                }
            };
            assert!(found, "{}", fraud.name());
        }
        assert_eq!(findings.clean.len(), chain.presented.len() - 3);
    }

    /// The keys the simulator computes are the node's: the bank's messy CSV cells read
    /// under the declared key kind give the same element text.
    #[test]
    fn messy_cells_read_to_the_same_keys_as_the_ledger() {
        let chain = SupplyChain::generate(2, &suppliers(), 30).expect("generates");
        let kind: KeyKind = toml::from_str::<toml::Value>(&format!("k = {RECEIVABLE_KEY_KIND}"))
            .ok()
            .and_then(|v| v.get("k").cloned())
            .and_then(|v| v.try_into().ok())
            .expect("the key kind parses");
        let csv = chain.presented_csv();
        for (line, r) in csv.lines().skip(1).zip(&chain.presented) {
            let cells: Vec<&str> = line.split(',').collect();
            let read = kind.read(&[cells[1], cells[0]]).expect("valid key");
            assert_eq!(read.element, r.key(), "{line}");
        }
        let label = serde_json::json!({"amount": "1234.50", "due_date": "2026-03-01", "status": "confirmed"});
        assert_eq!(
            Confirmation::from_label(&label),
            Some(Confirmation { amount_cents: 123_450, due: "2026-03-01".into(), status: CONFIRMED.into() })
        );
    }
}
