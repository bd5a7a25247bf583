//! Multi-party duplicate detection (design.md computation 2), driven in memory: every
//! output against a plaintext HashMap recomputation, the wire encoding against annotated
//! hex, and each refusal.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::scalar::Scalar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use xmcredit_crypto::keys::{KeyPurpose, MasterSecret};
use xmcredit_crypto::oprf::OprfKey;
use xmcredit_crypto::set::{evaluate_own_batch, Tag, TagContext};
use xmcredit_crypto::{ContractId, CryptoError, Epoch, NodeId, SessionId};
use xmcredit_protocol::overthreshold::{
    Announce, BlindedChunk, CommitteeMember, ContributorConfig, ContributorOutput, CoordinatorCollecting,
    CoordinatorConfig, CoordinatorOutput, EvaluatedChunk, Hello, MemberConfig, MemberPolicy, MessageKind,
    OutgoingMessage, OverthresholdContributor, OverthresholdMessage, Parameters, ResultChunk, ResultEntry,
    TagChunk,
};
use xmcredit_protocol::{ProtocolError, SessionBinding};

// ---- Fixtures ------------------------------------------------------------------------

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

fn coordinator_id() -> NodeId {
    node("credit-center")
}

fn bank(i: usize) -> NodeId {
    node(&format!("bank-{i}"))
}

fn member(i: usize) -> NodeId {
    node(&format!("committee-{i}"))
}

fn binding(rng: &mut ChaCha20Rng) -> SessionBinding {
    SessionBinding {
        contract: ContractId::new("xel-2026-dup").expect("valid contract id"),
        epoch: Epoch(11),
        session: SessionId::random(rng),
    }
}

/// Invoice-key-like byte strings (`INV-<12 digits>`), distinct.
fn pool(rng: &mut ChaCha20Rng, count: usize) -> Vec<Vec<u8>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let item = format!("INV-{:012}", rng.gen_range(0..1_000_000_000_000u64)).into_bytes();
        if seen.insert(item.clone()) {
            out.push(item);
        }
    }
    out
}

/// `banks` sets drawn from a shared pool, each item in a set with probability 1/2.
fn random_sets(rng: &mut ChaCha20Rng, banks: usize, pool_size: usize) -> Vec<Vec<Vec<u8>>> {
    let pool = pool(rng, pool_size);
    (0..banks).map(|_| pool.iter().filter(|_| rng.gen_bool(0.5)).cloned().collect()).collect()
}

struct Setup {
    binding: SessionBinding,
    params: Parameters,
    keys: Vec<OprfKey>,
}

fn setup(rng: &mut ChaCha20Rng, banks: usize, committee: usize, threshold: u32, max_set_size: u64) -> Setup {
    let binding = binding(rng);
    let keys = (0..committee)
        .map(|_| {
            MasterSecret::generate(rng)
                .derive_oprf_key(&binding.contract, binding.epoch, KeyPurpose::OverthresholdCommittee)
                .expect("key derivation")
        })
        .collect();
    let params = Parameters::new(
        coordinator_id(),
        (1..=committee).map(member).collect(),
        (1..=banks).map(bank).collect(),
        threshold,
        threshold,
        max_set_size,
    )
    .expect("valid parameters");
    Setup { binding, params, keys }
}

/// `k = Σ k_i`, which no party holds: for the plaintext side of the checks only.
fn sum_key(keys: &[OprfKey]) -> OprfKey {
    let sum: Scalar =
        keys.iter().map(|k| Scalar::from_canonical_bytes(k.to_bytes()).expect("canonical key")).sum();
    OprfKey::from_bytes(&sum.to_bytes()).expect("non-zero sum")
}

fn tags_under(key: &OprfKey, setup: &Setup, items: &[Vec<u8>]) -> Vec<Tag> {
    let context = TagContext::new(&setup.binding.contract, setup.binding.epoch, setup.params.tag_bits())
        .expect("tag bits");
    context.tag_batch(&evaluate_own_batch(key, items).expect("evaluation"))
}

// ---- An in-memory network --------------------------------------------------------------

/// What a test may do to a message on its way.
enum Fate {
    Deliver,
    Drop,
}

struct Net {
    coordinator: Option<CoordinatorCollecting>,
    coordinator_output: Option<CoordinatorOutput>,
    banks: BTreeMap<NodeId, OverthresholdContributor>,
    members: HashMap<(NodeId, NodeId), CommitteeMember>,
    queue: VecDeque<(NodeId, OutgoingMessage)>,
    /// Close the coordinator as soon as every set is in.
    auto_close: bool,
}

impl Net {
    fn new(
        setup: &Setup,
        sets: &[Vec<Vec<u8>>],
        policy: &dyn Fn(usize) -> MemberPolicy,
        rng: &mut ChaCha20Rng,
    ) -> Self {
        let (coordinator, announces) = CoordinatorCollecting::new(CoordinatorConfig {
            binding: setup.binding.clone(),
            parameters: setup.params.clone(),
            chunk_size: 5,
        })
        .expect("coordinator");
        let mut banks = BTreeMap::new();
        let mut members = HashMap::new();
        for (i, set) in sets.iter().enumerate() {
            let me = bank(i + 1);
            let config = ContributorConfig {
                binding: setup.binding.clone(),
                me: me.clone(),
                parameters: setup.params.clone(),
                chunk_size: 7,
            };
            banks.insert(
                me.clone(),
                OverthresholdContributor::new(config, set.clone(), rng).expect("contributor"),
            );
            for (m, key) in setup.keys.iter().enumerate() {
                let config = MemberConfig {
                    binding: setup.binding.clone(),
                    contributor: me.clone(),
                    policy: policy(i),
                };
                members.insert((member(m + 1), me.clone()), CommitteeMember::new(config, key.clone()));
            }
        }
        let queue = announces.into_iter().map(|m| (coordinator_id(), m)).collect();
        Self {
            coordinator: Some(coordinator),
            coordinator_output: None,
            banks,
            members,
            queue,
            auto_close: true,
        }
    }

    fn deliver(&mut self, from: &NodeId, to: &NodeId, bytes: &[u8]) -> Result<(), ProtocolError> {
        let out = if *to == coordinator_id() {
            let coordinator = self.coordinator.as_mut().expect("coordinator still collecting");
            coordinator.receive(from, bytes)?;
            if self.auto_close && coordinator.is_complete() {
                return self.close();
            }
            Vec::new()
        } else if let Some(state) = self.banks.remove(to) {
            let (next, out) = state.handle(from, bytes)?;
            self.banks.insert(to.clone(), next);
            out
        } else {
            let key = (to.clone(), from.clone());
            let state = self.members.remove(&key).expect("a member session for this contributor");
            let (next, out) = state.handle(from, bytes)?;
            self.members.insert(key, next);
            out
        };
        self.queue.extend(out.into_iter().map(|m| (to.clone(), m)));
        Ok(())
    }

    fn close(&mut self) -> Result<(), ProtocolError> {
        let coordinator = self.coordinator.take().expect("not closed yet");
        let (output, out) = coordinator.close()?;
        self.coordinator_output = Some(output);
        self.queue.extend(out.into_iter().map(|m| (coordinator_id(), m)));
        Ok(())
    }

    fn run(&mut self, fate: &mut dyn FnMut(&NodeId, &OutgoingMessage) -> Fate) -> Result<(), ProtocolError> {
        while let Some((from, message)) = self.queue.pop_front() {
            if let Fate::Deliver = fate(&from, &message) {
                self.deliver(&from, &message.to, &message.bytes)?;
            }
        }
        Ok(())
    }

    fn outputs(self) -> (Vec<ContributorOutput>, CoordinatorOutput) {
        let banks =
            self.banks.into_values().map(|b| b.into_output().expect("contributor finished")).collect();
        (banks, self.coordinator_output.expect("coordinator closed"))
    }
}

fn open_policy(_: usize) -> MemberPolicy {
    MemberPolicy { min_set_size: 0, max_set_size: 1 << 20, remaining_quota: 1 << 20 }
}

fn run(
    seed: u64,
    sets: &[Vec<Vec<u8>>],
    committee: usize,
    threshold: u32,
) -> (Setup, Vec<ContributorOutput>, CoordinatorOutput) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let setup = setup(&mut rng, sets.len(), committee, threshold, 1 << 20);
    let mut net = Net::new(&setup, sets, &open_policy, &mut rng);
    net.run(&mut |_, _| Fate::Deliver).expect("honest run succeeds");
    let (banks, coordinator) = net.outputs();
    (setup, banks, coordinator)
}

/// The plaintext answer, recomputed with a HashMap, against every output.
fn check_against_plaintext(
    sets: &[Vec<Vec<u8>>],
    threshold: u32,
    banks: &[ContributorOutput],
    coordinator: &CoordinatorOutput,
) {
    let mut holders: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (b, set) in sets.iter().enumerate() {
        for item in set {
            holders.entry(item.as_slice()).or_default().push(b);
        }
    }
    for (b, (set, output)) in sets.iter().zip(banks).enumerate() {
        let expected: Vec<(usize, u16)> = set
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let m = holders[item.as_slice()].len();
                (m >= threshold as usize).then_some((i, m as u16))
            })
            .collect();
        let got: Vec<(usize, u16)> = output.matches.iter().map(|m| (m.index, m.multiplicity)).collect();
        assert_eq!(got, expected, "bank-{} matches", b + 1);
        assert_eq!(output.set_size, set.len() as u64);
        assert_eq!(usize::from(output.contributors_counted), sets.len());
    }
    let mut histogram: BTreeMap<u16, u64> = BTreeMap::new();
    for banks in holders.values() {
        *histogram.entry(banks.len() as u16).or_default() += 1;
    }
    assert_eq!(coordinator.histogram, histogram, "histogram");
    let mut pairs = Vec::new();
    for a in 0..sets.len() {
        for b in a + 1..sets.len() {
            let shared = holders.values().filter(|h| h.contains(&a) && h.contains(&b)).count() as u64;
            pairs.push((bank(a + 1), bank(b + 1), shared));
        }
    }
    let got: Vec<(NodeId, NodeId, u64)> =
        coordinator.pairs.iter().map(|p| (p.a.clone(), p.b.clone(), p.shared)).collect();
    assert_eq!(got, pairs, "pairwise overlaps");
    assert!(coordinator.missing.is_empty());
    let sizes: Vec<(NodeId, u64)> =
        sets.iter().enumerate().map(|(b, s)| (bank(b + 1), s.len() as u64)).collect();
    assert_eq!(coordinator.set_sizes, sizes);
}

// ---- Correctness -----------------------------------------------------------------------

#[test]
fn multiplicities_match_plaintext_for_2_to_6_banks_thresholds_2_to_4_committees_1_to_3() {
    let mut seed = 0x0700;
    for banks in 2..=6usize {
        for threshold in 2..=(banks as u32).min(4) {
            for committee in 1..=3 {
                seed += 1;
                let mut rng = ChaCha20Rng::seed_from_u64(seed);
                // An 80-item pool, each bank holding about half (6 blinded chunks of 7, more
                // than the window of 4): every multiplicity occurs.
                let sets = random_sets(&mut rng, banks, 80);
                let (_, outputs, coordinator) = run(seed, &sets, committee, threshold);
                check_against_plaintext(&sets, threshold, &outputs, &coordinator);
            }
        }
    }
}

#[test]
fn the_tags_are_those_of_the_sum_key_and_one_members_key_matches_nothing() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x0701);
    let sets = random_sets(&mut rng, 3, 30);
    let setup = setup(&mut rng, 3, 3, 2, 1 << 20);
    let mut net = Net::new(&setup, &sets, &open_policy, &mut rng);
    let mut sent: HashMap<NodeId, Vec<Tag>> = HashMap::new();
    net.run(&mut |from, message| {
        if message.kind == MessageKind::TagChunk {
            let Ok(OverthresholdMessage::TagChunk(chunk)) = OverthresholdMessage::from_bytes(&message.bytes)
            else {
                panic!("a tag chunk decodes");
            };
            sent.entry(from.clone()).or_default().extend(chunk.tags);
        }
        Fate::Deliver
    })
    .expect("honest run");

    let full = sum_key(&setup.keys);
    for (b, set) in sets.iter().enumerate() {
        // What the bank sent is exactly the sum key's tags of its items, sorted.
        let mut expected = tags_under(&full, &setup, set);
        expected.sort_unstable();
        assert_eq!(sent[&bank(b + 1)], expected, "bank-{}", b + 1);
        // One member's key alone (or two of three) gives tags that match none of them.
        let all_full: HashSet<Tag> = sets.iter().flat_map(|s| tags_under(&full, &setup, s)).collect();
        let partial_keys = [setup.keys[0].clone(), sum_key(&setup.keys[..2])];
        for key in &partial_keys {
            let partial = tags_under(key, &setup, set);
            assert!(partial.iter().all(|t| !all_full.contains(t)), "a partial key's tag matched");
        }
    }
}

#[test]
fn empty_sets_take_part_and_match_nothing() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x0702);
    let mut sets = random_sets(&mut rng, 4, 30);
    sets[1].clear();
    let (_, outputs, coordinator) = run(0x0702, &sets, 2, 2);
    check_against_plaintext(&sets, 2, &outputs, &coordinator);
    assert!(outputs[1].matches.is_empty());

    let empty = vec![Vec::new(); 3];
    let (_, outputs, coordinator) = run(0x0703, &empty, 2, 2);
    check_against_plaintext(&empty, 2, &outputs, &coordinator);
    assert!(coordinator.histogram.is_empty());
}

#[test]
fn every_item_at_every_bank() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x0704);
    let items = pool(&mut rng, 23);
    let sets: Vec<Vec<Vec<u8>>> = (0..5)
        .map(|b| {
            // Each bank in its own order: the result still maps back to its own indices.
            let mut set = items.clone();
            set.rotate_left(b * 3);
            set
        })
        .collect();
    let (_, outputs, coordinator) = run(0x0704, &sets, 3, 4);
    check_against_plaintext(&sets, 4, &outputs, &coordinator);
    assert_eq!(coordinator.histogram, BTreeMap::from([(5u16, 23u64)]));
    assert!(coordinator.pairs.iter().all(|p| p.shared == 23));
    assert!(outputs.iter().all(|o| o.matches.len() == 23 && o.matches.iter().all(|m| m.multiplicity == 5)));
}

#[test]
fn a_repeated_item_is_refused_before_anything_is_sent() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x0705);
    let setup = setup(&mut rng, 2, 1, 2, 100);
    let items = vec![b"INV-1".to_vec(), b"INV-2".to_vec(), b"INV-1".to_vec()];
    let config = ContributorConfig {
        binding: setup.binding.clone(),
        me: bank(1),
        parameters: setup.params.clone(),
        chunk_size: 4,
    };
    let error = OverthresholdContributor::new(config, items, &mut rng).expect_err("refused");
    assert!(matches!(error, ProtocolError::DuplicateElement { first: 0, second: 2, .. }), "{error}");
}

// ---- Failures and refusals -------------------------------------------------------------

#[test]
fn a_missing_committee_member_aborts_with_its_name() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x0706);
    let sets = random_sets(&mut rng, 3, 40);
    let setup = setup(&mut rng, 3, 3, 2, 1 << 20);
    let mut net = Net::new(&setup, &sets, &open_policy, &mut rng);
    // committee-2 answers bank-1's first chunk, then goes silent.
    let mut answered = 0;
    net.run(&mut |from, message| {
        if *from == member(2) && message.to == bank(1) {
            answered += 1;
            if answered > 1 {
                return Fate::Drop;
            }
        }
        Fate::Deliver
    })
    .expect("nothing refused, one member silent");
    let bank1 = net.banks.remove(&bank(1)).expect("bank-1");
    assert_eq!(bank1.missing_members(), vec![member(2)]);
    let error = bank1.member_failed(&member(2));
    assert!(
        matches!(&error, ProtocolError::CommitteeMemberFailed { member: m, replied: 1, expected: 3 } if *m == member(2)),
        "{error}"
    );
    assert!(error.to_string().contains("committee-2"), "{error}");
    // The bank sent no tags: the coordinator is still missing it.
    let coordinator = net.coordinator.as_ref().expect("still collecting");
    assert_eq!(coordinator.missing(), vec![bank(1)]);
}

fn member_session(setup: &Setup, policy: MemberPolicy) -> CommitteeMember {
    let config = MemberConfig { binding: setup.binding.clone(), contributor: bank(1), policy };
    CommitteeMember::new(config, setup.keys[0].clone())
}

fn hello(binding: &SessionBinding, n: u64, chunk_size: u32) -> Vec<u8> {
    OverthresholdMessage::Hello(Hello { binding: binding.clone(), set_size: n, chunk_size }).to_bytes()
}

#[test]
fn members_refuse_sets_over_the_quota_or_under_the_minimum_with_the_numbers() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x0707);
    let setup = setup(&mut rng, 2, 1, 2, 1000);
    let policy = MemberPolicy { min_set_size: 10, max_set_size: 1000, remaining_quota: 50 };

    let error = member_session(&setup, policy.clone())
        .handle(&bank(1), &hello(&setup.binding, 51, 8))
        .expect_err("refused");
    assert!(matches!(error, ProtocolError::QuotaExceeded { requested: 51, remaining: 50 }), "{error}");
    assert!(error.to_string().contains("51") && error.to_string().contains("50"), "{error}");

    let error = member_session(&setup, policy.clone())
        .handle(&bank(1), &hello(&setup.binding, 9, 8))
        .expect_err("refused");
    assert!(matches!(error, ProtocolError::SetTooSmall { got: 9, min: 10, .. }), "{error}");

    let big = MemberPolicy { remaining_quota: 1 << 20, ..policy.clone() };
    let error =
        member_session(&setup, big).handle(&bank(1), &hello(&setup.binding, 1001, 8)).expect_err("refused");
    assert!(matches!(error, ProtocolError::SetTooLarge { got: 1001, max: 1000, .. }), "{error}");

    // Exactly the quota is accepted, and charged.
    let (state, out) =
        member_session(&setup, policy).handle(&bank(1), &hello(&setup.binding, 50, 8)).expect("accepted");
    assert!(out.is_empty());
    assert_eq!(state.charged(), Some(50));
}

#[test]
fn a_contract_minimum_refuses_an_empty_set_in_a_whole_run() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x0708);
    let mut sets = random_sets(&mut rng, 3, 20);
    sets[2].clear();
    let setup = setup(&mut rng, 3, 2, 2, 1 << 20);
    let policy = |_| MemberPolicy { min_set_size: 1, max_set_size: 1 << 20, remaining_quota: 1 << 20 };
    let mut net = Net::new(&setup, &sets, &policy, &mut rng);
    let error = net.run(&mut |_, _| Fate::Deliver).expect_err("refused");
    assert!(matches!(error, ProtocolError::SetTooSmall { got: 0, min: 1, .. }), "{error}");
}

#[test]
fn members_refuse_malformed_misbound_replayed_and_reordered_messages_and_invalid_points() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x0709);
    let setup = setup(&mut rng, 2, 1, 2, 1000);
    let accepted = || {
        let (state, _) = member_session(&setup, open_policy(0))
            .handle(&bank(1), &hello(&setup.binding, 10, 4))
            .expect("accepted");
        state
    };
    let generator = RISTRETTO_BASEPOINT_POINT.compress().0;
    let chunk = |binding: &SessionBinding, seq: u32, elements: Vec<[u8; 32]>| {
        OverthresholdMessage::BlindedChunk(BlindedChunk { binding: binding.clone(), seq, elements })
            .to_bytes()
    };

    // Malformed: truncated, and a PSI frame (kind 0x81).
    let mut truncated = hello(&setup.binding, 10, 4);
    truncated.pop();
    let error = member_session(&setup, open_policy(0)).handle(&bank(1), &truncated).expect_err("refused");
    assert!(matches!(error, ProtocolError::Malformed { what: "overthreshold Hello", .. }), "{error}");
    let mut psi = hello(&setup.binding, 10, 4);
    psi[1] = 0x81;
    let error = member_session(&setup, open_policy(0)).handle(&bank(1), &psi).expect_err("refused");
    assert!(
        matches!(&error, ProtocolError::Malformed { reason, .. } if reason.contains("unknown message kind 0x81")),
        "{error}"
    );

    // Another session's Hello, and a Hello from another bank.
    let other = binding(&mut rng);
    let error =
        member_session(&setup, open_policy(0)).handle(&bank(1), &hello(&other, 10, 4)).expect_err("refused");
    assert!(matches!(error, ProtocolError::WrongBinding { field: "session", .. }), "{error}");
    let error = member_session(&setup, open_policy(0))
        .handle(&bank(2), &hello(&setup.binding, 10, 4))
        .expect_err("refused");
    assert!(matches!(error, ProtocolError::UnexpectedSender { .. }), "{error}");

    // Replayed chunk 0, then a skipped one.
    let first = chunk(&setup.binding, 0, vec![generator; 4]);
    let (state, out) = accepted().handle(&bank(1), &first).expect("chunk 0");
    assert_eq!(out.len(), 1);
    let error = state.handle(&bank(1), &first).expect_err("replay refused");
    assert!(matches!(error, ProtocolError::ChunkOutOfOrder { expected: 1, got: 0, .. }), "{error}");
    let error =
        accepted().handle(&bank(1), &chunk(&setup.binding, 1, vec![generator; 4])).expect_err("refused");
    assert!(matches!(error, ProtocolError::ChunkOutOfOrder { expected: 0, got: 1, .. }), "{error}");
    // Wrong length.
    let error =
        accepted().handle(&bank(1), &chunk(&setup.binding, 0, vec![generator; 3])).expect_err("refused");
    assert!(matches!(error, ProtocolError::ChunkLength { expected: 4, got: 3, .. }), "{error}");
    // Invalid points: non-canonical at index 2, the identity at index 1.
    let mut elements = vec![generator; 4];
    elements[2] = [0xff; 32];
    let error = accepted().handle(&bank(1), &chunk(&setup.binding, 0, elements)).expect_err("refused");
    assert!(
        matches!(&error, ProtocolError::InvalidElement(e) if e.index == 2 && e.source == CryptoError::NonCanonicalElement),
        "{error}"
    );
    let mut elements = vec![generator; 4];
    elements[1] = [0; 32];
    let error = accepted().handle(&bank(1), &chunk(&setup.binding, 0, elements)).expect_err("refused");
    assert!(
        matches!(&error, ProtocolError::InvalidElement(e) if e.index == 1 && e.source == CryptoError::IdentityElement),
        "{error}"
    );
}

/// Runs until bank-1 is waiting for evaluations, holding back every EvaluatedChunk to
/// bank-1, and returns them with the net.
fn held_evaluations(seed: u64) -> (Net, Vec<(NodeId, Vec<u8>)>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let sets = random_sets(&mut rng, 2, 40);
    let setup = setup(&mut rng, 2, 2, 2, 1 << 20);
    let mut net = Net::new(&setup, &sets, &open_policy, &mut rng);
    let mut held = Vec::new();
    net.run(&mut |from, message| {
        if message.to == bank(1) && message.kind == MessageKind::EvaluatedChunk {
            held.push((from.clone(), message.bytes.clone()));
            return Fate::Drop;
        }
        Fate::Deliver
    })
    .expect("no refusals");
    (net, held)
}

#[test]
fn contributors_refuse_invalid_points_naming_member_and_index_and_replays() {
    let (mut net, held) = held_evaluations(0x070a);
    let (from, bytes) = held.iter().find(|(from, _)| *from == member(2)).expect("member 2 answered").clone();
    let Ok(OverthresholdMessage::EvaluatedChunk(mut chunk)) = OverthresholdMessage::from_bytes(&bytes) else {
        panic!("decodes");
    };
    assert_eq!(chunk.seq, 0);
    chunk.elements[3] = [0xff; 32];
    let bad = OverthresholdMessage::EvaluatedChunk(chunk.clone()).to_bytes();
    let error = net.deliver(&from, &bank(1), &bad).expect_err("refused");
    assert!(
        matches!(&error, ProtocolError::InvalidEvaluation { member: m, index: 3, source: CryptoError::NonCanonicalElement } if *m == member(2)),
        "{error}"
    );

    // Each refusal ends the contributor's run, so each case starts from a fresh one.
    // A genuine chunk, then its replay.
    let (mut net, held) = held_evaluations(0x070b);
    let (from, bytes) = held[0].clone();
    net.deliver(&from, &bank(1), &bytes).expect("genuine chunk");
    let error = net.deliver(&from, &bank(1), &bytes).expect_err("replay refused");
    assert!(matches!(error, ProtocolError::ChunkOutOfOrder { expected: 1, got: 0, .. }), "{error}");
    // A genuine chunk from a node outside the committee.
    let (mut net, held) = held_evaluations(0x070b);
    let error = net.deliver(&bank(2), &bank(1), &held[0].1).expect_err("refused");
    assert!(matches!(error, ProtocolError::NotAParticipant { role: "committee member", .. }), "{error}");
    // A chunk not requested yet: every chunk in flight answered, then one more.
    let (mut net, held) = held_evaluations(0x070b);
    let Ok(OverthresholdMessage::EvaluatedChunk(chunk)) = OverthresholdMessage::from_bytes(&held[0].1) else {
        panic!("decodes");
    };
    let sender = held[0].0.clone();
    let mut delivered = 0;
    for (_, genuine) in held.iter().filter(|(f, _)| *f == sender) {
        net.deliver(&sender, &bank(1), genuine).expect("genuine chunks, all sent ones");
        delivered += 1;
    }
    let early = OverthresholdMessage::EvaluatedChunk(EvaluatedChunk { seq: delivered, ..chunk }).to_bytes();
    let error = net.deliver(&sender, &bank(1), &early).expect_err("refused");
    assert!(matches!(error, ProtocolError::UnrequestedChunk { seq } if seq == delivered), "{error}");
}

#[test]
fn coordinator_refuses_a_second_tag_set_repeated_tags_and_strangers() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x070c);
    let sets = random_sets(&mut rng, 3, 20);
    let setup = setup(&mut rng, 3, 1, 2, 1 << 20);
    let mut net = Net::new(&setup, &sets, &open_policy, &mut rng);
    net.auto_close = false;
    let mut tag_chunks: Vec<(NodeId, Vec<u8>)> = Vec::new();
    net.run(&mut |from, message| {
        if message.kind == MessageKind::TagChunk {
            tag_chunks.push((from.clone(), message.bytes.clone()));
        }
        Fate::Deliver
    })
    .expect("no refusals");
    let coordinator = net.coordinator.as_mut().expect("collecting");
    assert!(coordinator.is_complete());

    // bank-1's chunk 0 again: a second tag set.
    let (from, first) = tag_chunks.iter().find(|(f, _)| *f == bank(1)).expect("bank-1 sent tags").clone();
    let error = coordinator.receive(&from, &first).expect_err("refused");
    assert!(matches!(&error, ProtocolError::DuplicateTagSet { from } if *from == bank(1)), "{error}");
    // A node that is not a contributor.
    let error = coordinator.receive(&member(1), &first).expect_err("refused");
    assert!(matches!(error, ProtocolError::NotAParticipant { role: "contributor", .. }), "{error}");
    // Another protocol's frame from a contributor.
    let mut psi = first.clone();
    psi[1] = 0x85;
    let error = coordinator.receive(&from, &psi).expect_err("refused");
    assert!(matches!(error, ProtocolError::Malformed { .. }), "{error}");
    assert!(coordinator.is_complete(), "refused messages leave the state unchanged");

    // A fresh coordinator: a set with a repeated tag is refused and its bank missing.
    let (mut fresh, _) = CoordinatorCollecting::new(CoordinatorConfig {
        binding: setup.binding.clone(),
        parameters: setup.params.clone(),
        chunk_size: 5,
    })
    .expect("coordinator");
    let tag_len = (setup.params.tag_bits() / 8) as u8;
    let tag = |b: u8| {
        let mut t = [0u8; 16];
        t[..usize::from(tag_len)].fill(b);
        Tag(t)
    };
    let repeated = OverthresholdMessage::TagChunk(TagChunk {
        binding: setup.binding.clone(),
        seq: 0,
        total_tags: 3,
        tag_len,
        tags: vec![tag(1), tag(2), tag(2)],
    })
    .to_bytes();
    let error = fresh.receive(&bank(2), &repeated).expect_err("refused");
    assert!(
        matches!(&error, ProtocolError::BadTagSet { from, position: 2, reason: "a tag is repeated" } if *from == bank(2)),
        "{error}"
    );
    let unsorted = OverthresholdMessage::TagChunk(TagChunk {
        binding: setup.binding.clone(),
        seq: 0,
        total_tags: 2,
        tag_len,
        tags: vec![tag(2), tag(1)],
    })
    .to_bytes();
    let error = fresh.receive(&bank(3), &unsorted).expect_err("refused");
    assert!(matches!(error, ProtocolError::BadTagSet { position: 1, .. }), "{error}");
    assert_eq!(fresh.missing(), vec![bank(1), bank(2), bank(3)]);
    let error = fresh.receive(&bank(2), &repeated).expect_err("a refused bank stays refused");
    assert!(matches!(error, ProtocolError::UnexpectedMessage { .. }), "{error}");
}

#[test]
fn coordinator_closes_without_a_late_bank_and_aborts_below_the_minimum() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x070d);
    let sets = random_sets(&mut rng, 4, 30);
    // Threshold 2, min_contributors 2: three banks suffice.
    let setup = setup(&mut rng, 4, 2, 2, 1 << 20);
    let mut net = Net::new(&setup, &sets, &open_policy, &mut rng);
    net.auto_close = false;
    net.run(&mut |from, message| {
        if *from == bank(4) && message.kind == MessageKind::TagChunk {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    })
    .expect("no refusals");
    assert_eq!(net.coordinator.as_ref().expect("collecting").missing(), vec![bank(4)]);
    net.close().expect("three of four banks are enough");
    net.run(&mut |_, _| Fate::Deliver).expect("results delivered");
    let output = net.coordinator_output.clone().expect("closed");
    assert_eq!(output.missing, vec![bank(4)]);
    let counted = &sets[..3];
    let banks: Vec<ContributorOutput> = (1..=3)
        .map(|b| net.banks.remove(&bank(b)).and_then(|s| s.into_output()).expect("finished"))
        .collect();
    let mut without_missing = output.clone();
    without_missing.missing.clear();
    check_against_plaintext(counted, 2, &banks, &without_missing);

    // Threshold 3 (min_contributors 3): two banks in → abort, naming the missing.
    let setup = self::setup(&mut rng, 4, 1, 3, 1 << 20);
    let mut net = Net::new(&setup, &sets, &open_policy, &mut rng);
    net.auto_close = false;
    net.run(&mut |from, message| {
        if (*from == bank(2) || *from == bank(4)) && message.kind == MessageKind::TagChunk {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    })
    .expect("no refusals");
    let error = net.close().expect_err("below the minimum");
    assert!(
        matches!(&error, ProtocolError::TooFewContributors { got: 2, min: 3, missing } if missing == "bank-2, bank-4"),
        "{error}"
    );
}

fn announce(setup: &Setup, tag_bits: u16) -> Vec<u8> {
    OverthresholdMessage::Announce(Announce { binding: setup.binding.clone(), tag_bits, chunk_size: 2 })
        .to_bytes()
}

/// bank-1 of 3 (6 items, a one-member committee answering honestly), waiting for its result.
fn bank_awaiting_result(seed: u64) -> (Setup, OverthresholdContributor) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let setup = setup(&mut rng, 3, 1, 2, 1000);
    let config = ContributorConfig {
        binding: setup.binding.clone(),
        me: bank(1),
        parameters: setup.params.clone(),
        chunk_size: 4,
    };
    let items = pool(&mut rng, 6);
    let mut bank1 = OverthresholdContributor::new(config, items, &mut rng).expect("contributor");
    let mut member1 = member_session(&setup, open_policy(0));
    let (next, queue) = bank1.handle(&coordinator_id(), &announce(&setup, 64)).expect("announce");
    bank1 = next;
    let mut queue: VecDeque<OutgoingMessage> = queue.into();
    while let Some(message) = queue.pop_front() {
        if message.to == member(1) {
            let (next, out) = member1.handle(&bank(1), &message.bytes).expect("member");
            member1 = next;
            for reply in out {
                let (next, more) = bank1.handle(&member(1), &reply.bytes).expect("bank");
                bank1 = next;
                queue.extend(more);
            }
        }
    }
    assert!(matches!(bank1, OverthresholdContributor::AwaitingResult(_)), "{bank1:?}");
    (setup, bank1)
}

#[test]
fn contributors_check_the_announce_and_the_result() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x070e);
    let setup = setup(&mut rng, 3, 1, 2, 1000);
    // 3 banks × 1000 → T = 3000, 40 + 2 × ceil(log2 3000) = 40 + 24 = 64 bits.
    assert_eq!(setup.params.tag_bits(), 64);
    let config = ContributorConfig {
        binding: setup.binding.clone(),
        me: bank(1),
        parameters: setup.params.clone(),
        chunk_size: 4,
    };
    let items = pool(&mut rng, 6);
    let bank1 = OverthresholdContributor::new(config.clone(), items.clone(), &mut rng).expect("contributor");
    let error = bank1.handle(&coordinator_id(), &announce(&setup, 56)).expect_err("refused");
    assert!(matches!(error, ProtocolError::TagLengthMismatch { expected_bits: 64, got_bits: 56 }), "{error}");
    let bank1 = OverthresholdContributor::new(config, items, &mut rng).expect("contributor");
    let error = bank1.handle(&bank(2), &announce(&setup, 64)).expect_err("refused");
    assert!(matches!(error, ProtocolError::UnexpectedSender { .. }), "{error}");

    let result = |setup: &Setup, contributors: u16, total: u64, entries: Vec<ResultEntry>| {
        OverthresholdMessage::ResultChunk(ResultChunk {
            binding: setup.binding.clone(),
            seq: 0,
            contributors,
            total_matches: total,
            entries,
        })
        .to_bytes()
    };
    let entry = |position, multiplicity| ResultEntry { position, multiplicity };
    let cases: Vec<(u16, u64, Vec<ResultEntry>, &str)> = vec![
        (1, 0, vec![], "1 contributors counted"),
        (3, 1, vec![entry(0, 1)], "multiplicity 1"),
        (3, 1, vec![entry(0, 4)], "multiplicity 4"),
        (3, 1, vec![entry(6, 2)], "position 6"),
        (3, 7, vec![], "7 matches"),
        (3, 2, vec![entry(1, 2), entry(0, 2)], "position 0"),
    ];
    for (contributors, total, entries, needle) in cases {
        let (setup, bank1) = bank_awaiting_result(0x070f);
        let error = bank1
            .handle(&coordinator_id(), &result(&setup, contributors, total, entries))
            .expect_err("refused");
        assert!(matches!(error, ProtocolError::BadResult { .. }), "{error}");
        assert!(error.to_string().contains(needle), "{error} lacks {needle}");
    }
    let (setup, bank1) = bank_awaiting_result(0x070f);
    let (done, _) = bank1
        .handle(&coordinator_id(), &result(&setup, 3, 2, vec![entry(0, 2), entry(5, 3)]))
        .expect("an honest result");
    let output = done.into_output().expect("done");
    assert_eq!(output.matches.len(), 2);
    assert_eq!(output.contributors_counted, 3);
    assert!(output.matches.iter().any(|m| m.multiplicity == 3));
}

/// Wire encoding: annotated hex and round trips, one test per message.
mod overthreshold_wire {
    use super::*;

    fn hex_binding() -> (SessionBinding, &'static str) {
        let binding = SessionBinding {
            contract: ContractId::new("xel-dup").expect("valid"),
            epoch: Epoch(3),
            session: SessionId([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
        };
        let hex = concat!(
            "0007",                             // len(contract)
            "78656c2d647570",                   // "xel-dup"
            "0000000000000003",                 // epoch 3
            "000102030405060708090a0b0c0d0e0f", // session id
        );
        (binding, hex)
    }

    fn round_trip(message: OverthresholdMessage, expected: &str) {
        assert_eq!(hex::encode(message.to_bytes()), expected);
        let decoded =
            OverthresholdMessage::from_bytes(&hex::decode(expected).expect("hex")).expect("decodes");
        assert_eq!(decoded, message);
    }

    #[test]
    fn announce_hex_round_trip() {
        let (binding, binding_hex) = hex_binding();
        let message = OverthresholdMessage::Announce(Announce { binding, tag_bits: 88, chunk_size: 4096 });
        let expected = [
            "01", // wire version
            "91", // kind: Announce
            binding_hex,
            "0058",     // tag bits 88
            "00001000", // chunk size 4096
        ]
        .concat();
        round_trip(message, &expected);
    }

    #[test]
    fn hello_hex_round_trip() {
        let (binding, binding_hex) = hex_binding();
        let message = OverthresholdMessage::Hello(Hello { binding, set_size: 1000, chunk_size: 4096 });
        let expected = [
            "01", // wire version
            "92", // kind: Hello
            binding_hex,
            "00000000000003e8", // n = 1000
            "00001000",         // chunk size 4096
        ]
        .concat();
        round_trip(message, &expected);
    }

    #[test]
    fn blinded_and_evaluated_chunk_hex_round_trip() {
        let (binding, binding_hex) = hex_binding();
        let generator = RISTRETTO_BASEPOINT_POINT;
        let elements = vec![generator.compress().0, (generator + generator).compress().0];
        let body = [
            "00000001", // seq 1
            "00000002", // 2 elements
            // the ristretto255 generator B (RFC 9496 Appendix A.1)
            "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76",
            // 2·B
            "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919",
        ]
        .concat();
        let blinded = OverthresholdMessage::BlindedChunk(BlindedChunk {
            binding: binding.clone(),
            seq: 1,
            elements: elements.clone(),
        });
        let expected = ["01", /* wire version */ "93", /* kind: BlindedChunk */ binding_hex, &body].concat();
        round_trip(blinded, &expected);
        let evaluated = OverthresholdMessage::EvaluatedChunk(EvaluatedChunk { binding, seq: 1, elements });
        let expected =
            ["01", /* wire version */ "94", /* kind: EvaluatedChunk */ binding_hex, &body].concat();
        round_trip(evaluated, &expected);
    }

    #[test]
    fn tag_chunk_hex_round_trip() {
        let (binding, binding_hex) = hex_binding();
        let tag = |fill: u8| {
            let mut t = [0u8; 16];
            t[..5].fill(fill);
            Tag(t)
        };
        let message = OverthresholdMessage::TagChunk(TagChunk {
            binding,
            seq: 0,
            total_tags: 2,
            tag_len: 5,
            tags: vec![tag(0x0a), tag(0xb0)],
        });
        let expected = [
            "01", // wire version
            "95", // kind: TagChunk
            binding_hex,
            "00000000",         // seq 0
            "0000000000000002", // 2 tags in the whole set
            "05",               // tag length 5 bytes (40 bits)
            "00000002",         // 2 tags in this chunk
            "0a0a0a0a0a",       // tag 0 (ascending)
            "b0b0b0b0b0",       // tag 1
        ]
        .concat();
        round_trip(message, &expected);
    }

    #[test]
    fn result_chunk_hex_round_trip() {
        let (binding, binding_hex) = hex_binding();
        let message = OverthresholdMessage::ResultChunk(ResultChunk {
            binding,
            seq: 0,
            contributors: 5,
            total_matches: 2,
            entries: vec![
                ResultEntry { position: 3, multiplicity: 2 },
                ResultEntry { position: 258, multiplicity: 5 },
            ],
        });
        let expected = [
            "01", // wire version
            "96", // kind: ResultChunk
            binding_hex,
            "00000000",         // seq 0
            "0005",             // 5 contributors counted
            "0000000000000002", // 2 matches in the whole result
            "00000002",         // 2 entries in this chunk
            "0000000000000003", // position 3
            "0002",             // multiplicity 2
            "0000000000000102", // position 258
            "0005",             // multiplicity 5
        ]
        .concat();
        round_trip(message, &expected);
    }

    #[test]
    fn decoder_refuses_bad_shapes() {
        let (binding, _) = hex_binding();
        let hello =
            OverthresholdMessage::Hello(Hello { binding: binding.clone(), set_size: 1, chunk_size: 1 })
                .to_bytes();
        let refuse = |bytes: &[u8], needle: &str| {
            let error = OverthresholdMessage::from_bytes(bytes).expect_err("refused");
            assert!(
                matches!(&error, ProtocolError::Malformed { reason, .. } if reason.contains(needle)),
                "{error} lacks {needle}"
            );
        };
        let mut bytes = hello.clone();
        bytes[0] = 2;
        refuse(&bytes, "wire version 2");
        for kind in [0x00u8, 0x41, 0x81, 0x87, 0x90, 0x97] {
            let mut bytes = hello.clone();
            bytes[1] = kind;
            refuse(&bytes, "unknown message kind");
        }
        refuse(&[hello.as_slice(), &[0]].concat(), "trailing");
        refuse(&hello[..hello.len() - 1], "truncated");
        let zero_chunks =
            OverthresholdMessage::Hello(Hello { binding: binding.clone(), set_size: 1, chunk_size: 0 })
                .to_bytes();
        refuse(&zero_chunks, "chunk size 0");
        let mut long_tags = OverthresholdMessage::TagChunk(TagChunk {
            binding: binding.clone(),
            seq: 0,
            total_tags: 0,
            tag_len: 5,
            tags: vec![],
        })
        .to_bytes();
        let at = long_tags.len() - 5;
        long_tags[at] = 17;
        refuse(&long_tags, "tag length 17");
        // A count larger than the bytes present.
        let mut counted =
            OverthresholdMessage::EvaluatedChunk(EvaluatedChunk { binding, seq: 0, elements: vec![] })
                .to_bytes();
        let at = counted.len() - 4;
        counted[at..].copy_from_slice(&3u32.to_be_bytes());
        refuse(&counted, "cannot fit");
    }
}
