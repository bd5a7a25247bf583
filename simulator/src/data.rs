//! Synthetic but realistic alliance data: the credit center's government data about
//! every registered entity, and each bank's loan applicants, with the plaintext answers
//! every scenario must reproduce.
//!
//! Mixes follow the shape of Xiamen's data: six districts weighted toward Siming and
//! Huli, about a third sole proprietors, tax credit grades A/B/M/C/D with A about 15%,
//! social-insurance headcounts skewed small, a few percent with utility arrears and
//! about 1% on the serious-dishonesty list. Applicants overlap the registry heavily
//! (banks lend to registered entities) and include a few codes the center doesn't
//! know (newly registered, or registered elsewhere).

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use xmcredit_contracts::entity_code::{EntityCode, EntityKind, XIAMEN_DISTRICTS};

/// District weights in the order of [`XIAMEN_DISTRICTS`].
const DISTRICT_WEIGHTS: [u32; 6] = [28, 12, 26, 14, 11, 9];
/// Tax grades and their weights.
const TAX_GRADES: [(&str, u32); 5] = [("A", 15), ("B", 45), ("M", 25), ("C", 10), ("D", 5)];
/// Public credit evaluation grades and their weights.
const CREDIT_GRADES: [(&str, u32); 4] = [("A", 30), ("B", 50), ("C", 15), ("D", 5)];

/// One registered entity as the credit center knows it.
#[derive(Debug, Clone)]
pub struct Entity {
    pub code: EntityCode,
    pub district: &'static str,
    pub kind: EntityKind,
    pub tax_grade: &'static str,
    pub si_headcount: u32,
    pub utility_arrears_months: u32,
    pub dishonest: bool,
    pub credit_grade: &'static str,
}

/// One loan applicant of a bank.
#[derive(Debug, Clone)]
pub struct Applicant {
    pub code: EntityCode,
    /// Requested amount in yuan, two decimals as cents.
    pub amount_cents: u64,
}

/// Everything the simulation's parties hold.
#[derive(Debug)]
pub struct World {
    pub entities: Vec<Entity>,
    /// Applicants per bank, in bank order.
    pub applicants: Vec<Vec<Applicant>>,
}

fn weighted<T: Copy>(rng: &mut ChaCha20Rng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut pick = rng.gen_range(0..total);
    for (item, weight) in items {
        if pick < *weight {
            return *item;
        }
        pick -= weight;
    }
    items[items.len() - 1].0
}

impl World {
    /// Generates `entities` registered entities and `applicants` applicants for each of
    /// `banks` banks, deterministically from `seed`.
    pub fn generate(seed: u64, entities: usize, banks: usize, applicants: usize) -> anyhow::Result<Self> {
        let mut rng: ChaCha20Rng = rand::SeedableRng::seed_from_u64(seed);
        let districts: Vec<(&'static str, u32)> =
            XIAMEN_DISTRICTS.iter().zip(DISTRICT_WEIGHTS).map(|((code, _), w)| (*code, w)).collect();
        let kinds = [
            (EntityKind::Enterprise, 62u32),
            (EntityKind::SoleProprietor, 35),
            (EntityKind::FarmersCooperative, 3),
        ];
        let mut seen = BTreeSet::new();
        let mut registry = Vec::with_capacity(entities);
        while registry.len() < entities {
            let district = weighted(&mut rng, &districts);
            let kind = weighted(&mut rng, &kinds);
            let code = EntityCode::random(&mut rng, kind, district)?;
            if !seen.insert(code) {
                continue;
            }
            let si_headcount = match kind {
                EntityKind::SoleProprietor => rng.gen_range(0..4),
                _ => (rng.gen::<f64>().powi(3) * 400.0) as u32 + 1,
            };
            registry.push(Entity {
                code,
                district,
                kind,
                tax_grade: weighted(&mut rng, &TAX_GRADES),
                si_headcount,
                utility_arrears_months: if rng.gen_bool(0.05) { rng.gen_range(1..13) } else { 0 },
                dishonest: rng.gen_bool(0.01),
                credit_grade: weighted(&mut rng, &CREDIT_GRADES),
            });
        }
        let mut all_applicants = Vec::with_capacity(banks);
        for _ in 0..banks {
            let mut chosen = BTreeSet::new();
            let mut list = Vec::with_capacity(applicants);
            while list.len() < applicants {
                // 90% registered entities, 10% codes the center does not hold.
                let code = if rng.gen_bool(0.9) {
                    registry
                        .choose(&mut rng)
                        .map(|e| e.code)
                        .ok_or_else(|| anyhow::anyhow!("empty registry"))?
                } else {
                    let district = weighted(&mut rng, &districts);
                    EntityCode::random(&mut rng, EntityKind::Enterprise, district)?
                };
                if chosen.insert(code) {
                    list.push(Applicant { code, amount_cents: rng.gen_range(10_000..5_000_000) * 100 });
                }
            }
            all_applicants.push(list);
        }
        Ok(Self { entities: registry, applicants: all_applicants })
    }

    /// Codes of the entities for which `pick` holds.
    pub fn entity_codes(&self, pick: impl Fn(&Entity) -> bool) -> BTreeSet<EntityCode> {
        self.entities.iter().filter(|e| pick(e)).map(|e| e.code).collect()
    }

    pub fn applicant_codes(&self, bank: usize) -> BTreeSet<EntityCode> {
        self.applicants[bank].iter().map(|a| a.code).collect()
    }

    pub fn entity(&self) -> BTreeMap<EntityCode, &Entity> {
        self.entities.iter().map(|e| (e.code, e)).collect()
    }
}
