//! Private aggregate lookup (design.md computation 4), driven in memory: every result
//! against the plaintext recomputation, the pads' uniformity, the wire encoding against
//! annotated hex, and each refusal.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256, Sha512};
use xmcredit_crypto::group::ElementBytes;
use xmcredit_crypto::keys::{KeyPurpose, MasterSecret};
use xmcredit_crypto::oprf::OprfKey;
use xmcredit_crypto::set::{evaluate_batch, evaluate_own_batch};
use xmcredit_crypto::{ContractId, CryptoError, Epoch, NodeId, SessionId};
use xmcredit_protocol::lookup::{
    bit_offsets, combine, prepare_contribution, BitLayout, BlindedChunk, DownloadNext, EvaluatedChunk, Hello,
    LookupMessage, LookupProvider, LookupQuery, LookupValue, LookupVector, OutgoingMessage, ProviderConfig,
    ProviderPolicy, ProviderReply, QuerierConfig, QuerierSession, Universe, VectorChunk, VectorDownload,
    VectorHeader, Width,
};
use xmcredit_protocol::psi::{PsiMessage, PsiOutputForm};
use xmcredit_protocol::{ProtocolError, SessionBinding};

// ---- Fixtures ------------------------------------------------------------------------

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

fn querier_id() -> NodeId {
    node("bank-xiamen-1")
}

fn contract() -> ContractId {
    ContractId::new("xel-2026-lookup").expect("valid contract id")
}

const EPOCH: Epoch = Epoch(4);

fn width(bits: u32) -> Width {
    Width::new(bits).expect("valid width")
}

fn binding(rng: &mut ChaCha20Rng) -> SessionBinding {
    SessionBinding { contract: contract(), epoch: EPOCH, session: SessionId::random(rng) }
}

/// `count` distinct code-like byte strings, sorted: the universe's entries.
fn codes(rng: &mut ChaCha20Rng, count: usize) -> Vec<Vec<u8>> {
    let mut seen = HashSet::new();
    while seen.len() < count {
        seen.insert(format!("9135020{:011}", rng.gen_range(0..100_000_000_000u64)).into_bytes());
    }
    let mut out: Vec<Vec<u8>> = seen.into_iter().collect();
    out.sort();
    out
}

fn provider_key(rng: &mut ChaCha20Rng) -> OprfKey {
    MasterSecret::generate(rng).derive_oprf_key(&contract(), EPOCH, KeyPurpose::LookupProvider).expect("key")
}

struct Alliance {
    universe: Arc<Universe>,
    header: VectorHeader,
    providers: Vec<(NodeId, OprfKey)>,
}

fn alliance(rng: &mut ChaCha20Rng, entries: usize, providers: &[&str], bits: u32) -> Alliance {
    let universe = Arc::new(Universe::new(codes(rng, entries)).expect("sorted universe"));
    let header = VectorHeader::new(contract(), EPOCH, &universe, width(bits));
    let providers = providers.iter().map(|name| (node(name), provider_key(rng))).collect();
    Alliance { universe, header, providers }
}

fn generous() -> ProviderPolicy {
    ProviderPolicy { remaining_quota: 1 << 20, max_lookups: 1 << 20 }
}

impl Alliance {
    /// Each provider's padded contribution for its values, summed.
    fn aggregate(&self, values: &[Vec<u64>]) -> LookupVector {
        let vectors: Vec<LookupVector> = self
            .providers
            .iter()
            .zip(values)
            .map(|((_, key), g)| {
                prepare_contribution(key, &self.header, &self.universe, g).expect("contribution")
            })
            .collect();
        combine(&vectors).expect("same header")
    }

    /// Downloads `vector` through its chunks, as the querier does.
    fn download(&self, vector: &LookupVector, rng: &mut ChaCha20Rng, chunk: usize) -> LookupVector {
        let binding = binding(rng);
        let coordinator = node("credit-center");
        let mut download = VectorDownload::new(
            binding.clone(),
            coordinator.clone(),
            self.header.clone(),
            self.universe.len(),
        )
        .expect("download");
        for bytes in vector.to_chunks(&binding, chunk).expect("chunks") {
            match download.handle(&coordinator, &bytes).expect("honest chunk") {
                DownloadNext::More(next) => download = next,
                DownloadNext::Done(done) => return done,
            }
        }
        panic!("download did not finish");
    }

    /// One honest session with each provider; the replies.
    fn query(&self, query: &LookupQuery, chunk_size: u32, rng: &mut ChaCha20Rng) -> Vec<ProviderReply> {
        self.providers
            .iter()
            .map(|(id, key)| {
                let config = QuerierConfig { binding: binding(rng), provider: id.clone(), chunk_size };
                let (session, first) = query.start_session(config.clone(), rng).expect("start");
                let provider = LookupProvider::new(
                    ProviderConfig {
                        binding: config.binding,
                        querier: querier_id(),
                        universe_digest: self.universe.digest(),
                        policy: generous(),
                    },
                    key.clone(),
                );
                let (session, provider) = drive(session, provider, first);
                assert_eq!(
                    provider.into_output().expect("provider done").lookups,
                    query.lookups().len() as u64
                );
                session.into_reply().expect("querier session done")
            })
            .collect()
    }
}

/// Passes messages between one querier session and one provider until both are done.
fn drive(
    mut session: QuerierSession,
    mut provider: LookupProvider,
    first: Vec<OutgoingMessage>,
) -> (QuerierSession, LookupProvider) {
    let provider_id = first[0].to.clone();
    let mut to_provider: VecDeque<Vec<u8>> = first.into_iter().map(|m| m.bytes).collect();
    let mut to_querier: VecDeque<Vec<u8>> = VecDeque::new();
    loop {
        if let Some(bytes) = to_provider.pop_front() {
            let (next, out) = provider.handle(&querier_id(), &bytes).expect("honest provider step");
            provider = next;
            to_querier.extend(out.into_iter().map(|m| m.bytes));
        } else if let Some(bytes) = to_querier.pop_front() {
            let (next, out) = session.handle(&provider_id, &bytes).expect("honest querier step");
            session = next;
            to_provider.extend(out.into_iter().map(|m| m.bytes));
        } else {
            return (session, provider);
        }
    }
}

/// A whole run: contributions, aggregate, download, sessions, results.
fn run(
    alliance: &Alliance,
    values: &[Vec<u64>],
    applicants: &[Vec<u8>],
    chunk_size: u32,
    rng: &mut ChaCha20Rng,
) -> Vec<LookupValue> {
    let vector = alliance.aggregate(values);
    let downloaded = alliance.download(&vector, rng, 37);
    assert_eq!(downloaded, vector);
    let providers = alliance.providers.iter().map(|(id, _)| id.clone()).collect();
    let query = LookupQuery::new(alliance.header.clone(), alliance.universe.clone(), providers, applicants)
        .expect("query");
    let replies = alliance.query(&query, chunk_size, rng);
    let output = query.finish(&downloaded, replies).expect("finish");
    assert_eq!(output.transcripts.len(), alliance.providers.len());
    output.results
}

/// Applicants: `registered` codes drawn from the universe plus `unregistered` others,
/// shuffled.
fn applicants(
    rng: &mut ChaCha20Rng,
    universe: &Universe,
    registered: usize,
    unregistered: usize,
) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> =
        (0..registered).map(|_| universe.entries()[rng.gen_range(0..universe.len())].clone()).collect();
    while out.len() < registered + unregistered {
        let code = format!("9235020{:011}", rng.gen_range(0..100_000_000_000u64)).into_bytes();
        if universe.index_of(&code).is_none() {
            out.push(code);
        }
    }
    for i in (1..out.len()).rev() {
        out.swap(i, rng.gen_range(0..=i));
    }
    out
}

/// The plaintext answer: Σ_j g_j(x) mod 2^w, or NotRegistered.
fn plaintext(universe: &Universe, values: &[Vec<u64>], w: Width, applicants: &[Vec<u8>]) -> Vec<LookupValue> {
    applicants
        .iter()
        .map(|x| match universe.index_of(x) {
            Some(i) => LookupValue::Value(values.iter().fold(0, |acc, g| w.add(acc, g[i]))),
            None => LookupValue::NotRegistered,
        })
        .collect()
}

// ---- Results against the plaintext ---------------------------------------------------

#[test]
fn one_provider_points_are_exact() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let a = alliance(&mut rng, 300, &["credit-center"], 10);
    let g: Vec<u64> = (0..300).map(|_| rng.gen_range(0..1024)).collect();
    let x = applicants(&mut rng, &a.universe, 40, 0);
    let results = run(&a, std::slice::from_ref(&g), &x, 7, &mut rng);
    assert_eq!(results, plaintext(&a.universe, &[g], width(10), &x));
}

#[test]
fn three_provider_sums_are_exact() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    for bits in [16, 64] {
        let a = alliance(&mut rng, 500, &["credit-center", "bank-a", "bank-b"], bits);
        let w = width(bits);
        // Values up to a third of the range, so the plain sum fits (as the contract
        // requires).
        let values: Vec<Vec<u64>> =
            (0..3).map(|_| (0..500).map(|_| rng.gen::<u64>() & (w.mask() / 3)).collect()).collect();
        let x = applicants(&mut rng, &a.universe, 60, 5);
        let results = run(&a, &values, &x, 16, &mut rng);
        assert_eq!(results, plaintext(&a.universe, &values, w, &x), "{bits} bits");
        for (result, applicant) in results.iter().zip(&x) {
            if let (LookupValue::Value(v), Some(i)) = (result, a.universe.index_of(applicant)) {
                let plain: u128 = values.iter().map(|g| u128::from(g[i])).sum();
                assert_eq!(u128::from(*v), plain, "the sum did not wrap");
            }
        }
    }
}

#[test]
fn negative_points_sum_as_twos_complement() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let bits = 12;
    let w = width(bits);
    let a = alliance(&mut rng, 200, &["credit-center", "bank-a", "bank-b"], bits);
    // Scorecard totals in [-500, 500] per provider: the sum fits 12-bit two's complement.
    let scores: Vec<Vec<i64>> =
        (0..3).map(|_| (0..200).map(|_| rng.gen_range(-500..=500)).collect()).collect();
    let values: Vec<Vec<u64>> =
        scores.iter().map(|s| s.iter().map(|v| w.encode_signed(*v).expect("fits")).collect()).collect();
    let x = applicants(&mut rng, &a.universe, 50, 3);
    let results = run(&a, &values, &x, 9, &mut rng);
    let mut negatives = 0;
    for (result, applicant) in results.iter().zip(&x) {
        match a.universe.index_of(applicant) {
            Some(i) => {
                let plain: i64 = scores.iter().map(|s| s[i]).sum();
                negatives += usize::from(plain < 0);
                assert_eq!(result.signed(w), Some(plain));
            }
            None => assert_eq!(*result, LookupValue::NotRegistered),
        }
    }
    assert!(negatives > 5, "the test covers negative sums ({negatives})");
    assert!(w.encode_signed(2048).is_err());
    assert!(matches!(
        w.encode_signed(-2049),
        Err(CryptoError::ValueOutOfRange { bits: 12, signed: true, .. })
    ));
}

#[test]
fn bit_masks_of_several_providers_concatenate_at_their_offsets() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let names = ["credit-center", "bank-b", "bank-a"];
    let a = alliance(&mut rng, 150, &names, 12);
    let rules = [(node("credit-center"), 3u32), (node("bank-b"), 5), (node("bank-a"), 4)];
    // Providers by node id: bank-a (4 rules) at 0, bank-b (5) at 4, credit-center (3) at 9.
    assert_eq!(
        bit_offsets(&rules).expect("offsets"),
        vec![(node("bank-a"), 0), (node("bank-b"), 4), (node("credit-center"), 9)]
    );
    let layout = BitLayout::new(&rules, width(12)).expect("12 rules fit 12 bits");
    assert!(BitLayout::new(&rules, width(11)).is_err());
    let masks: Vec<Vec<u64>> =
        rules.iter().map(|(_, count)| (0..150).map(|_| rng.gen_range(0..1u64 << count)).collect()).collect();
    let values: Vec<Vec<u64>> = a
        .providers
        .iter()
        .zip(&masks)
        .map(|((id, _), m)| m.iter().map(|mask| layout.place(id, *mask).expect("fits")).collect())
        .collect();
    assert!(layout.place(&node("bank-a"), 1 << 4).is_err(), "a mask wider than its rules");
    let x = applicants(&mut rng, &a.universe, 30, 2);
    let results = run(&a, &values, &x, 8, &mut rng);
    for (result, applicant) in results.iter().zip(&x) {
        let Some(i) = a.universe.index_of(applicant) else {
            assert_eq!(*result, LookupValue::NotRegistered);
            continue;
        };
        let LookupValue::Value(v) = result else { panic!("registered applicant") };
        let expected = rules
            .iter()
            .zip(&masks)
            .fold(0u64, |acc, ((id, _), m)| acc | (m[i] << layout.offset(id).expect("in layout")));
        assert_eq!(*v, expected);
        for ((id, _), m) in rules.iter().zip(&masks) {
            assert_eq!(layout.extract(id, *v), Some(m[i]), "{id}'s mask");
        }
    }
}

#[test]
fn unregistered_and_repeated_applicants() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let a = alliance(&mut rng, 100, &["credit-center"], 8);
    let g: Vec<u64> = (0..100).map(|i| i % 256).collect();
    let registered = a.universe.entries()[17].clone();
    let x =
        vec![b"not-a-code".to_vec(), registered.clone(), registered.clone(), b"91350200ZZZZZZZZZZ".to_vec()];
    let providers = vec![node("credit-center")];
    let query = LookupQuery::new(a.header.clone(), a.universe.clone(), providers, &x).expect("query");
    assert_eq!(query.lookups(), &[registered][..], "one lookup for the distinct registered applicant");
    let results = run(&a, &[g], &x, 4, &mut rng);
    assert_eq!(
        results,
        vec![
            LookupValue::NotRegistered,
            LookupValue::Value(17),
            LookupValue::Value(17),
            LookupValue::NotRegistered
        ]
    );

    // No registered applicant: no session, no reply, every result NotRegistered.
    let none = vec![b"nobody".to_vec()];
    let query = LookupQuery::new(a.header.clone(), a.universe.clone(), vec![node("credit-center")], &none)
        .expect("query");
    assert!(query.lookups().is_empty());
    let vector = a.aggregate(&[vec![0; 100]]);
    let output = query.finish(&vector, Vec::new()).expect("nothing to ask");
    assert_eq!(output.results, vec![LookupValue::NotRegistered]);
    assert_eq!(output.lookups, 0);
}

// ---- Uniformity of the pads ----------------------------------------------------------

/// For a fixed entry and a fixed g, v = g + pad is uniform over the provider's keys:
/// a chi-square test on the low 8 bits and a balance test on each of 64 bits. With a
/// fixed seed the test is deterministic; a constant, biased or key-independent pad
/// fails it.
#[test]
fn a_value_not_looked_up_is_uniform_across_keys() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let universe = Universe::new(vec![b"913502001234567890".to_vec()]).expect("one entry");
    let samples = 4096usize;
    let header64 = VectorHeader::new(contract(), EPOCH, &universe, width(64));
    let header8 = VectorHeader::new(contract(), EPOCH, &universe, width(8));
    let mut bins = [0usize; 256];
    let mut ones = [0usize; 64];
    for _ in 0..samples {
        let key = OprfKey::random(&mut rng);
        let v8 = prepare_contribution(&key, &header8, &universe, &[200]).expect("contribution").values()[0];
        bins[v8 as usize] += 1;
        let v64 =
            prepare_contribution(&key, &header64, &universe, &[12345]).expect("contribution").values()[0];
        for (bit, count) in ones.iter_mut().enumerate() {
            *count += ((v64 >> bit) & 1) as usize;
        }
    }
    let expected = samples as f64 / 256.0;
    let chi2: f64 = bins.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
    // 255 degrees of freedom: P(chi2 > 330) ≈ 0.001.
    assert!(chi2 < 330.0, "chi-square {chi2:.1} over 255 degrees of freedom");
    // Each bit: mean 2048, sd 32; 5 sd either way.
    for (bit, count) in ones.iter().enumerate() {
        assert!((2048 - 160..=2048 + 160).contains(count), "bit {bit} set {count} times of {samples}");
    }
}

// ---- Exact bytes of pads and digests -------------------------------------------------

#[test]
fn pads_and_vector_digest_follow_the_documented_bytes() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let a = alliance(&mut rng, 5, &["credit-center"], 12);
    let (_, key) = &a.providers[0];
    let g = vec![1u64, 2, 3, 4, 4095];
    let vector = prepare_contribution(key, &a.header, &a.universe, &g).expect("contribution");
    let n = evaluate_own_batch(key, a.universe.entries()).expect("N");
    for i in 0..5 {
        let mut hasher = Sha512::new();
        hasher.update(b"xmcredit lookup pad");
        hasher.update(15u16.to_be_bytes());
        hasher.update(b"xel-2026-lookup");
        hasher.update(4u64.to_be_bytes());
        hasher.update(a.universe.digest());
        hasher.update([12u8]);
        hasher.update(n[i].0);
        let digest = hasher.finalize();
        let pad = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) & 0xfff;
        assert_eq!(vector.values()[i], (g[i] + pad) & 0xfff, "entry {i}");
    }
    let mut hasher = Sha256::new();
    hasher.update(b"xmcredit lookup vector v1");
    hasher.update(15u16.to_be_bytes());
    hasher.update(b"xel-2026-lookup");
    hasher.update(4u64.to_be_bytes());
    hasher.update(a.universe.digest());
    hasher.update([12u8]);
    hasher.update(5u64.to_be_bytes());
    for v in vector.values() {
        hasher.update((*v as u16).to_be_bytes());
    }
    assert_eq!(vector.digest(), <[u8; 32]>::from(hasher.finalize()));
    assert_eq!(vector.packed().len(), 10, "12 bits pack into 2 bytes per entry");
}

// ---- Refusals ------------------------------------------------------------------------

/// A provider and the querier's first messages (Hello, then blinded chunks), with the
/// session not yet driven.
struct Pending {
    config: QuerierConfig,
    session: QuerierSession,
    first: Vec<Vec<u8>>,
    key: OprfKey,
    universe_digest: [u8; 32],
}

fn pending(rng: &mut ChaCha20Rng, lookups: usize, chunk_size: u32) -> Pending {
    let a = alliance(rng, 200, &["credit-center"], 16);
    let x: Vec<Vec<u8>> = a.universe.entries()[..lookups].to_vec();
    let query = LookupQuery::new(a.header.clone(), a.universe.clone(), vec![node("credit-center")], &x)
        .expect("query");
    let config = QuerierConfig { binding: binding(rng), provider: node("credit-center"), chunk_size };
    let (session, first) = query.start_session(config.clone(), rng).expect("start");
    let (_, key) = a.providers.into_iter().next().expect("one provider");
    Pending {
        config,
        session,
        first: first.into_iter().map(|m| m.bytes).collect(),
        key,
        universe_digest: a.universe.digest(),
    }
}

impl Pending {
    fn provider(&self, policy: ProviderPolicy) -> LookupProvider {
        LookupProvider::new(
            ProviderConfig {
                binding: self.config.binding.clone(),
                querier: querier_id(),
                universe_digest: self.universe_digest,
                policy,
            },
            self.key.clone(),
        )
    }
}

#[test]
fn quota_is_enforced_at_hello() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let p = pending(&mut rng, 6, 4);
    let error = p
        .provider(ProviderPolicy { remaining_quota: 5, max_lookups: 100 })
        .handle(&querier_id(), &p.first[0])
        .expect_err("6 lookups, 5 left");
    assert!(matches!(error, ProtocolError::QuotaExceeded { requested: 6, remaining: 5 }), "{error}");
    assert!(
        error.to_string().contains("6 evaluations requested") && error.to_string().contains("5 left"),
        "{error}"
    );
    // Exactly the remaining quota is accepted and charged.
    let (provider, out) = p
        .provider(ProviderPolicy { remaining_quota: 6, max_lookups: 100 })
        .handle(&querier_id(), &p.first[0])
        .expect("6 of 6");
    assert!(out.is_empty());
    assert_eq!(provider.lookups(), 6);
}

#[test]
fn more_lookups_than_the_session_maximum_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let p = pending(&mut rng, 9, 4);
    let error = p
        .provider(ProviderPolicy { remaining_quota: 1000, max_lookups: 8 })
        .handle(&querier_id(), &p.first[0])
        .expect_err("9 above 8");
    assert!(matches!(error, ProtocolError::SetTooLarge { got: 9, max: 8, .. }), "{error}");
}

#[test]
fn hello_of_another_universe_is_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let mut p = pending(&mut rng, 3, 4);
    p.universe_digest[0] ^= 1;
    let error = p.provider(generous()).handle(&querier_id(), &p.first[0]).expect_err("other universe");
    assert!(matches!(error, ProtocolError::UniverseMismatch { .. }), "{error}");
}

#[test]
fn wrong_binding_and_wrong_sender_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let p = pending(&mut rng, 3, 4);
    let mut other = p.config.binding.clone();
    other.session = SessionId([9; 16]);
    let hello = LookupMessage::Hello(Hello {
        binding: other,
        universe_digest: p.universe_digest,
        lookups: 3,
        chunk_size: 4,
    })
    .to_bytes();
    let error = p.provider(generous()).handle(&querier_id(), &hello).expect_err("other session");
    assert!(matches!(error, ProtocolError::WrongBinding { field: "session", .. }), "{error}");

    let mut other = p.config.binding.clone();
    other.epoch = Epoch(5);
    let hello = LookupMessage::Hello(Hello {
        binding: other,
        universe_digest: p.universe_digest,
        lookups: 3,
        chunk_size: 4,
    })
    .to_bytes();
    let error = p.provider(generous()).handle(&querier_id(), &hello).expect_err("other epoch");
    assert!(matches!(error, ProtocolError::WrongBinding { field: "epoch", .. }), "{error}");

    let error = p.provider(generous()).handle(&node("bank-b"), &p.first[0]).expect_err("other sender");
    assert!(matches!(error, ProtocolError::UnexpectedSender { .. }), "{error}");
}

#[test]
fn replayed_and_out_of_order_chunks_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    // 10 lookups in chunks of 4: Hello and chunks 0, 1, 2.
    let p = pending(&mut rng, 10, 4);
    assert_eq!(p.first.len(), 4);
    let (provider, _) = p.provider(generous()).handle(&querier_id(), &p.first[0]).expect("hello");
    let error = provider.handle(&querier_id(), &p.first[2]).expect_err("chunk 1 first");
    assert!(matches!(error, ProtocolError::ChunkOutOfOrder { expected: 0, got: 1, .. }), "{error}");

    let (provider, _) = p.provider(generous()).handle(&querier_id(), &p.first[0]).expect("hello");
    let (provider, replies) = provider.handle(&querier_id(), &p.first[1]).expect("chunk 0");
    let error = provider.handle(&querier_id(), &p.first[1]).expect_err("chunk 0 again");
    assert!(matches!(error, ProtocolError::ChunkOutOfOrder { expected: 1, got: 0, .. }), "{error}");

    // A second Hello, or a chunk before Hello, does not fit the state.
    let (provider, _) = p.provider(generous()).handle(&querier_id(), &p.first[0]).expect("hello");
    let error = provider.handle(&querier_id(), &p.first[0]).expect_err("hello twice");
    assert!(matches!(error, ProtocolError::UnexpectedMessage { got: "lookup Hello", .. }), "{error}");
    let error = p.provider(generous()).handle(&querier_id(), &p.first[1]).expect_err("chunk before hello");
    assert!(matches!(error, ProtocolError::UnexpectedMessage { .. }), "{error}");

    // The querier refuses a replayed reply too.
    let (session, _) = p.session.handle(&node("credit-center"), &replies[0].bytes).expect("reply 0");
    let error = session.handle(&node("credit-center"), &replies[0].bytes).expect_err("reply 0 again");
    assert!(matches!(error, ProtocolError::ChunkOutOfOrder { expected: 1, got: 0, .. }), "{error}");
}

/// Evaluated chunks made by a test provider, so they can be altered before the querier
/// sees them.
fn evaluated(p: &Pending, seq: u32) -> EvaluatedChunk {
    let chunk = match LookupMessage::from_bytes(&p.first[1 + seq as usize]).expect("decodes") {
        LookupMessage::BlindedChunk(chunk) => chunk,
        other => panic!("not a blinded chunk: {other:?}"),
    };
    EvaluatedChunk {
        binding: chunk.binding,
        seq,
        elements: evaluate_batch(&p.key, &chunk.elements).expect("valid points"),
    }
}

#[test]
fn invalid_points_and_wrong_counts_from_the_provider_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(15);
    let p = pending(&mut rng, 10, 4);
    let provider = node("credit-center");
    let chunk0 = LookupMessage::EvaluatedChunk(evaluated(&p, 0)).to_bytes();
    // The identity at element 2 of chunk 1 is element 6 of the session.
    let mut bad = evaluated(&p, 1);
    bad.elements[2] = [0u8; 32];
    let mut non_canonical = evaluated(&p, 1);
    non_canonical.elements[0] = [0xff; 32];
    let (session, _) = p.session.handle(&provider, &chunk0).expect("chunk 0");
    // The same session again (same seed), for the second alteration.
    let (copy, _) = {
        let p2 = pending(&mut ChaCha20Rng::seed_from_u64(15), 10, 4);
        let chunk0 = LookupMessage::EvaluatedChunk(evaluated(&p2, 0)).to_bytes();
        p2.session.handle(&provider, &chunk0).expect("chunk 0")
    };
    let error =
        session.handle(&provider, &LookupMessage::EvaluatedChunk(bad).to_bytes()).expect_err("identity");
    assert!(
        matches!(&error, ProtocolError::InvalidElement(e) if e.index == 6 && e.source == CryptoError::IdentityElement),
        "{error}"
    );

    // A non-canonical encoding (all 0xff) at element 0 of chunk 1: element 4.
    let error = copy
        .handle(&provider, &LookupMessage::EvaluatedChunk(non_canonical).to_bytes())
        .expect_err("non-canonical");
    assert!(matches!(&error, ProtocolError::InvalidElement(e) if e.index == 4), "{error}");

    // Too few elements in a chunk.
    let p = pending(&mut rng, 10, 4);
    let mut short = evaluated(&p, 0);
    short.elements.pop();
    let error =
        p.session.handle(&provider, &LookupMessage::EvaluatedChunk(short).to_bytes()).expect_err("3 of 4");
    assert!(matches!(error, ProtocolError::ChunkLength { seq: 0, expected: 4, got: 3, .. }), "{error}");

    // The provider refuses an invalid blinded point, naming its index.
    let p = pending(&mut rng, 10, 4);
    let (state, _) = p.provider(generous()).handle(&querier_id(), &p.first[0]).expect("hello");
    let mut chunk = match LookupMessage::from_bytes(&p.first[1]).expect("decodes") {
        LookupMessage::BlindedChunk(chunk) => chunk,
        other => panic!("{other:?}"),
    };
    chunk.elements[3] = [0u8; 32];
    let error =
        state.handle(&querier_id(), &LookupMessage::BlindedChunk(chunk).to_bytes()).expect_err("identity");
    assert!(matches!(&error, ProtocolError::InvalidElement(e) if e.index == 3), "{error}");
}

#[test]
fn truncated_and_foreign_messages_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let p = pending(&mut rng, 5, 4);
    for message in &p.first {
        for cut in [0, 1, 2, message.len() / 2, message.len() - 1] {
            let error = p.provider(generous()).handle(&querier_id(), &message[..cut]).expect_err("truncated");
            assert!(matches!(error, ProtocolError::Malformed { .. }), "{error}");
        }
    }
    // A PSI Hello on a lookup stream: an unknown kind here.
    let psi = PsiMessage::Hello(xmcredit_protocol::psi::Hello {
        binding: p.config.binding.clone(),
        form: PsiOutputForm::Intersection,
        client_set_size: 5,
        chunk_size: 4,
        noise_anchor: None,
    })
    .to_bytes();
    let error = p.provider(generous()).handle(&querier_id(), &psi).expect_err("PSI frame");
    assert!(
        matches!(&error, ProtocolError::Malformed { reason, .. } if reason.contains("unknown message kind 0x81")),
        "{error}"
    );
    // And a lookup Hello on a PSI stream.
    assert!(PsiMessage::from_bytes(&p.first[0]).is_err());
}

#[test]
fn vectors_of_another_universe_width_or_run_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let a = alliance(&mut rng, 50, &["credit-center"], 16);
    let g = vec![7u64; 50];
    let vector = a.aggregate(std::slice::from_ref(&g));
    let x = a.universe.entries()[..3].to_vec();
    let providers = vec![node("credit-center")];

    // Another universe (one entry more).
    let mut other_entries = a.universe.entries().to_vec();
    other_entries.push(b"999".to_vec());
    let other_universe = Universe::new(other_entries).expect("sorted");
    let other_header = VectorHeader::new(contract(), EPOCH, &other_universe, width(16));
    let (_, key) = &a.providers[0];
    let other_vector =
        prepare_contribution(key, &other_header, &other_universe, &[g.clone(), vec![0]].concat()).expect("v");
    let query = LookupQuery::new(a.header.clone(), a.universe.clone(), providers.clone(), &x).expect("query");
    let replies = a.query(&query, 4, &mut rng);
    let error = query.finish(&other_vector, replies.clone()).expect_err("other universe");
    assert!(matches!(error, ProtocolError::UniverseMismatch { .. }), "{error}");

    // Another width.
    let narrow = VectorHeader::new(contract(), EPOCH, &a.universe, width(8));
    let narrow_vector = prepare_contribution(key, &narrow, &a.universe, &g).expect("v");
    let query = LookupQuery::new(a.header.clone(), a.universe.clone(), providers.clone(), &x).expect("query");
    let error = query.finish(&narrow_vector, replies.clone()).expect_err("other width");
    assert!(matches!(error, ProtocolError::WidthMismatch { expected: 16, got: 8 }), "{error}");

    // Another epoch.
    let mut later = a.header.clone();
    later.epoch = Epoch(5);
    let later_vector = LookupVector::new(later, vector.values().to_vec()).expect("v");
    let query = LookupQuery::new(a.header.clone(), a.universe.clone(), providers.clone(), &x).expect("query");
    let error = query.finish(&later_vector, replies.clone()).expect_err("other epoch");
    assert!(matches!(error, ProtocolError::VectorMismatch { .. }), "{error}");

    // Missing and duplicated replies.
    let query = LookupQuery::new(a.header.clone(), a.universe.clone(), providers.clone(), &x).expect("query");
    let error = query.finish(&vector, Vec::new()).expect_err("no reply");
    assert!(matches!(error, ProtocolError::ProviderReplies { .. }), "{error}");
    let query = LookupQuery::new(a.header.clone(), a.universe.clone(), providers.clone(), &x).expect("query");
    let error = query.finish(&vector, [replies.clone(), replies.clone()].concat()).expect_err("two replies");
    assert!(matches!(error, ProtocolError::ProviderReplies { .. }), "{error}");
    let query = LookupQuery::new(a.header.clone(), a.universe.clone(), providers, &x).expect("query");
    assert_eq!(query.finish(&vector, replies).expect("right vector").results, vec![LookupValue::Value(7); 3]);
}

#[test]
fn downloads_of_another_vector_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    let a = alliance(&mut rng, 40, &["credit-center"], 12);
    let vector = a.aggregate(&[vec![3; 40]]);
    let coordinator = node("credit-center");
    let b = binding(&mut rng);
    let chunks = vector.to_chunks(&b, 16).expect("chunks");
    assert_eq!(chunks.len(), 3);
    let start =
        |header: VectorHeader| VectorDownload::new(b.clone(), coordinator.clone(), header, 40).expect("new");

    // Expected another universe.
    let mut other = a.header.clone();
    other.universe_digest[5] ^= 1;
    let error = start(other).handle(&coordinator, &chunks[0]).expect_err("other universe");
    assert!(matches!(error, ProtocolError::UniverseMismatch { .. }), "{error}");

    // Expected another width.
    let mut other = a.header.clone();
    other.width = width(16);
    let error = start(other).handle(&coordinator, &chunks[0]).expect_err("other width");
    assert!(matches!(error, ProtocolError::WidthMismatch { expected: 16, got: 12 }), "{error}");

    // A skipped chunk, a replayed chunk.
    let error = start(a.header.clone()).handle(&coordinator, &chunks[1]).expect_err("chunk 1 first");
    assert!(matches!(error, ProtocolError::VectorMismatch { .. }), "{error}");
    let DownloadNext::More(d) = start(a.header.clone()).handle(&coordinator, &chunks[0]).expect("chunk 0")
    else {
        panic!("more to come")
    };
    let error = d.handle(&coordinator, &chunks[0]).expect_err("chunk 0 again");
    assert!(matches!(error, ProtocolError::VectorMismatch { .. }), "{error}");

    // An altered entry: the digest no longer matches.
    let mut last = match LookupMessage::from_bytes(&chunks[2]).expect("decodes") {
        LookupMessage::VectorChunk(chunk) => chunk,
        other => panic!("{other:?}"),
    };
    last.entries[0] ^= 1;
    let mut d = start(a.header.clone());
    for bytes in &chunks[..2] {
        d = match d.handle(&coordinator, bytes).expect("honest") {
            DownloadNext::More(d) => d,
            DownloadNext::Done(_) => panic!("not yet"),
        };
    }
    let error = d.handle(&coordinator, &LookupMessage::VectorChunk(last).to_bytes()).expect_err("altered");
    assert!(
        matches!(&error, ProtocolError::VectorMismatch { reason } if reason.contains("digest")),
        "{error}"
    );

    // Another session's chunks.
    let other_binding = binding(&mut rng);
    let foreign = vector.to_chunks(&other_binding, 16).expect("chunks");
    let error = start(a.header.clone()).handle(&coordinator, &foreign[0]).expect_err("other session");
    assert!(matches!(error, ProtocolError::WrongBinding { field: "session", .. }), "{error}");
}

#[test]
fn contributions_are_checked_before_padding() {
    let mut rng = ChaCha20Rng::seed_from_u64(19);
    let a = alliance(&mut rng, 10, &["credit-center"], 8);
    let (_, key) = &a.providers[0];
    let error = prepare_contribution(key, &a.header, &a.universe, &[0; 9]).expect_err("9 of 10");
    assert!(matches!(error, ProtocolError::ContributionLength { expected: 10, got: 9 }), "{error}");
    let mut wide = vec![0u64; 10];
    wide[3] = 256;
    let error = prepare_contribution(key, &a.header, &a.universe, &wide).expect_err("9 bits");
    assert!(
        matches!(error, ProtocolError::Crypto(CryptoError::ValueOutOfRange { value: 256, bits: 8, .. })),
        "{error}"
    );
}

// ---- Wire encoding: annotated hex ----------------------------------------------------

mod lookup_wire {
    use super::*;
    use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;

    fn hex_binding() -> (SessionBinding, &'static str) {
        let binding = SessionBinding {
            contract: ContractId::new("xel-lk").expect("valid"),
            epoch: Epoch(3),
            session: SessionId([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
        };
        let hex = concat!(
            "0006",                             // len(contract)
            "78656c2d6c6b",                     // "xel-lk"
            "0000000000000003",                 // epoch 3
            "000102030405060708090a0b0c0d0e0f", // session id
        );
        (binding, hex)
    }

    fn round_trip(message: LookupMessage, expected: &str) {
        assert_eq!(hex::encode(message.to_bytes()), expected);
        let decoded = LookupMessage::from_bytes(&hex::decode(expected).expect("hex")).expect("decodes");
        assert_eq!(decoded, message);
    }

    #[test]
    fn hello() {
        let (binding, binding_hex) = hex_binding();
        let message = LookupMessage::Hello(Hello {
            binding,
            universe_digest: [0xab; 32],
            lookups: 1000,
            chunk_size: 4096,
        });
        let expected = [
            "01", // wire version
            "c1", // kind: Hello
            binding_hex,
            "abababababababababababababababababababababababababababababababab", // universe digest
            "00000000000003e8",                                                 // n = 1000
            "00001000",                                                         // chunk size 4096
        ]
        .concat();
        round_trip(message, &expected);
    }

    #[test]
    fn blinded_and_evaluated_chunks() {
        let generator = RISTRETTO_BASEPOINT_POINT;
        let elements: Vec<ElementBytes> = vec![generator.compress().0, (generator + generator).compress().0];
        for (kind, message) in [
            (
                "c2",
                LookupMessage::BlindedChunk(BlindedChunk {
                    binding: hex_binding().0,
                    seq: 1,
                    elements: elements.clone(),
                }),
            ),
            (
                "c3",
                LookupMessage::EvaluatedChunk(EvaluatedChunk {
                    binding: hex_binding().0,
                    seq: 1,
                    elements: elements.clone(),
                }),
            ),
        ] {
            let expected = [
                "01", // wire version
                kind, // kind: BlindedChunk / EvaluatedChunk
                hex_binding().1,
                "00000001", // seq 1
                "00000002", // 2 elements
                // the ristretto255 generator B (RFC 9496 Appendix A.1)
                "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76",
                // 2·B
                "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919",
            ]
            .concat();
            round_trip(message, &expected);
        }
    }

    #[test]
    fn vector_chunk() {
        let (binding, binding_hex) = hex_binding();
        let message = LookupMessage::VectorChunk(VectorChunk {
            binding,
            universe_digest: [0x11; 32],
            width: width(12),
            total_entries: 5,
            vector_digest: [0x22; 32],
            first_index: 2,
            entries: vec![0x0fff, 0x0001, 0x0abc],
        });
        let expected = [
            "01", // wire version
            "c4", // kind: VectorChunk
            binding_hex,
            "1111111111111111111111111111111111111111111111111111111111111111", // universe digest
            "0c",               // w = 12 bits: 2 bytes per entry
            "0000000000000005", // 5 entries in the vector
            "2222222222222222222222222222222222222222222222222222222222222222", // vector digest
            "0000000000000002", // first index 2
            "00000003",         // 3 entries
            "0fff",             // entry 2
            "0001",             // entry 3
            "0abc",             // entry 4
        ]
        .concat();
        round_trip(message, &expected);

        // Bits above the width, a chunk past the end, an empty chunk: refused.
        let too_wide = expected.replacen("0fff0001", "1fff0001", 1);
        assert!(LookupMessage::from_bytes(&hex::decode(too_wide).expect("hex")).is_err());
        let past_end = expected.replacen("0c0000000000000005", "0c0000000000000004", 1);
        assert_ne!(past_end, expected);
        assert!(LookupMessage::from_bytes(&hex::decode(past_end).expect("hex")).is_err());
    }
}
