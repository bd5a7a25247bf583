//! The decoders that read a peer's bytes, `PsiMessage::from_bytes`,
//! `SecAggMessage::from_bytes`, `LookupMessage::from_bytes` and
//! `OverthresholdMessage::from_bytes`, on stable Rust: random byte strings and mutations of
//! every message of real sessions. A panic fails the test; every input that decodes must
//! re-encode to exactly the same bytes (the encoding is canonical, so a message has one
//! byte string and a decoder accepts nothing else). The cargo-fuzz targets in `fuzz/`
//! run the same decoders without bounds on nightly.

use std::collections::VecDeque;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use xmcredit_crypto::keys::{KeyPurpose, MasterSecret};
use xmcredit_crypto::sign::IdentityKey;
use xmcredit_crypto::{ContractId, Epoch, NodeId, SessionId};
use xmcredit_protocol::lookup::{
    combine, prepare_contribution, LookupMessage, LookupProvider, LookupQuery, ProviderConfig,
    ProviderPolicy, QuerierConfig, Universe, VectorHeader, Width,
};
use xmcredit_protocol::overthreshold::{
    CommitteeMember, ContributorConfig, CoordinatorCollecting, CoordinatorConfig, MemberConfig, MemberPolicy,
    OverthresholdContributor, OverthresholdMessage, Parameters,
};
use xmcredit_protocol::psi::{
    ClientConfig, ClientPolicy, DatasetVersion, OutgoingMessage, PsiClient, PsiMessage, PsiOutputForm,
    PsiServer, ServerConfig, ServerPolicy, ServerSet, ServerSetId,
};
use xmcredit_protocol::secagg::{AwaitingKeyList, CollectingKeys, Roster, SecAggMessage, Setup, VectorSpec};
use xmcredit_protocol::SessionBinding;

const RANDOM_INPUTS: usize = 20_000;
const MAX_RANDOM_LEN: usize = 512;

// ---- The property ----------------------------------------------------------------------

/// A decoder under test: never panics, and what it accepts re-encodes to the input.
trait Decoder {
    const NAME: &'static str;
    /// `Some(re-encoding)` when `bytes` decode, `None` when they are refused.
    fn round_trip(bytes: &[u8]) -> Option<Vec<u8>>;
}

struct Psi;

impl Decoder for Psi {
    const NAME: &'static str = "PsiMessage";
    fn round_trip(bytes: &[u8]) -> Option<Vec<u8>> {
        PsiMessage::from_bytes(bytes).ok().map(|m| m.to_bytes())
    }
}

struct SecAgg;

impl Decoder for SecAgg {
    const NAME: &'static str = "SecAggMessage";
    fn round_trip(bytes: &[u8]) -> Option<Vec<u8>> {
        SecAggMessage::from_bytes(bytes).ok().map(|m| m.to_bytes())
    }
}

struct Lookup;

impl Decoder for Lookup {
    const NAME: &'static str = "LookupMessage";
    fn round_trip(bytes: &[u8]) -> Option<Vec<u8>> {
        LookupMessage::from_bytes(bytes).ok().map(|m| m.to_bytes())
    }
}

struct Overthreshold;

impl Decoder for Overthreshold {
    const NAME: &'static str = "OverthresholdMessage";
    fn round_trip(bytes: &[u8]) -> Option<Vec<u8>> {
        OverthresholdMessage::from_bytes(bytes).ok().map(|m| m.to_bytes())
    }
}

/// Decodes `bytes`; returns whether they were accepted, after checking that an accepted
/// input re-encodes to itself.
fn check<D: Decoder>(bytes: &[u8], what: &dyn Fn() -> String) -> bool {
    match D::round_trip(bytes) {
        Some(again) => {
            assert_eq!(
                hex(&again),
                hex(bytes),
                "{}: {} decodes but does not re-encode to its own bytes",
                D::NAME,
                what()
            );
            true
        }
        None => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts of what a run accepted, so a test can tell that mutations reached past the
/// header instead of all dying at the version byte.
#[derive(Debug, Default)]
struct Tally {
    tried: usize,
    accepted: usize,
}

impl Tally {
    fn feed<D: Decoder>(&mut self, bytes: &[u8], what: &dyn Fn() -> String) {
        self.tried += 1;
        if check::<D>(bytes, what) {
            self.accepted += 1;
        }
    }
}

// ---- Inputs ----------------------------------------------------------------------------

/// Random byte strings of random lengths `0..MAX_RANDOM_LEN`; every fourth one starts
/// with a valid version and one of the decoder's kinds, so the body parsers see random
/// bytes too.
fn feed_random<D: Decoder>(seed: u64, kinds: &[u8]) -> Tally {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut tally = Tally::default();
    for i in 0..RANDOM_INPUTS {
        let len = rng.gen_range(0..MAX_RANDOM_LEN);
        let mut bytes = vec![0u8; len];
        rng.fill(bytes.as_mut_slice());
        if i % 4 == 0 && len >= 2 {
            bytes[0] = 1;
            bytes[1] = kinds[rng.gen_range(0..kinds.len())];
        }
        tally.feed::<D>(&bytes, &|| format!("random input {i} ({})", hex(&bytes)));
    }
    tally
}

/// Large values written over a field: all ones, the top bit, and just past common limits.
const LARGE_U16: [u16; 3] = [u16::MAX, 0x8000, 0x0100];
const LARGE_U32: [u32; 4] = [u32::MAX, 0x8000_0000, 0x0001_0001, 0x0100_0000];
const LARGE_U64: [u64; 2] = [u64::MAX, 0x8000_0000_0000_0000];

/// Every mutation of one valid message: each bit flipped, each truncation, extensions,
/// and large values written over every 1-, 2-, 4- and 8-byte window (so every length and
/// count field, wherever it sits).
fn feed_mutations<D: Decoder>(valid: &[u8], rng: &mut ChaCha20Rng, tally: &mut Tally) {
    assert!(check::<D>(valid, &|| "a genuine message".into()), "{}: genuine message refused", D::NAME);
    let len = valid.len();
    let mut scratch = valid.to_vec();

    for bit in 0..len * 8 {
        scratch[bit / 8] ^= 1 << (bit % 8);
        tally.feed::<D>(&scratch, &|| format!("{} with bit {bit} flipped", hex(valid)));
        scratch[bit / 8] ^= 1 << (bit % 8);
    }

    for cut in 0..len {
        tally.feed::<D>(&valid[..cut], &|| format!("{} truncated to {cut} bytes", hex(valid)));
    }

    for extra in [1usize, 2, 31, 32, 33, 64, 1000] {
        for fill in [0x00u8, 0xff, 0x5a] {
            let mut longer = valid.to_vec();
            longer.resize(len + extra, fill);
            tally.feed::<D>(&longer, &|| format!("{} extended by {extra} × {fill:02x}", hex(valid)));
        }
        let mut longer = valid.to_vec();
        longer.extend((0..extra).map(|_| rng.gen::<u8>()));
        tally.feed::<D>(&longer, &|| format!("{} extended by {extra} random bytes", hex(&longer)));
    }
    // The message twice: a decoder must not stop at the end of the first one.
    let twice = [valid, valid].concat();
    tally.feed::<D>(&twice, &|| format!("{} twice", hex(valid)));

    let mut overwrite = |at: usize, value: &[u8], tally: &mut Tally| {
        if at + value.len() > len {
            return;
        }
        scratch[at..at + value.len()].copy_from_slice(value);
        tally.feed::<D>(&scratch, &|| format!("{} with {} written at {at}", hex(valid), hex(value)));
        scratch[at..at + value.len()].copy_from_slice(&valid[at..at + value.len()]);
    };
    for at in 0..len {
        overwrite(at, &[0xff], tally);
        overwrite(at, &[0x00], tally);
        for v in LARGE_U16 {
            overwrite(at, &v.to_be_bytes(), tally);
        }
        for v in LARGE_U32 {
            overwrite(at, &v.to_be_bytes(), tally);
        }
        for v in LARGE_U64 {
            overwrite(at, &v.to_be_bytes(), tally);
        }
    }

    // A few random multi-byte scribbles on top.
    for _ in 0..64 {
        let mut bytes = valid.to_vec();
        for _ in 0..rng.gen_range(1..=4) {
            let at = rng.gen_range(0..len);
            bytes[at] = rng.gen();
        }
        tally.feed::<D>(&bytes, &|| format!("{} scribbled to {}", hex(valid), hex(&bytes)));
    }
}

// ---- Genuine messages ------------------------------------------------------------------

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

fn psi_binding(rng: &mut ChaCha20Rng) -> SessionBinding {
    SessionBinding {
        contract: ContractId::new("xel-2026-psi").expect("valid contract id"),
        epoch: Epoch(7),
        session: SessionId::random(rng),
    }
}

/// Every message of a small honest PSI session in each output form (and a noisy
/// cardinality): Hello, HelloAck, BlindedChunk, EvaluatedChunk, TagChunk (with and
/// without labels), ServerDone and MatchReport.
fn psi_session_messages() -> Vec<Vec<u8>> {
    let (client_id, server_id) = (node("bank-xiamen-1"), node("credit-center"));
    let mut rng = ChaCha20Rng::seed_from_u64(0x5051);
    let codes: Vec<Vec<u8>> = (0..5).map(|i| format!("91350200MA2Y{i:06}").into_bytes()).collect();
    // X = codes 0..3, Y = codes 1..5: two in common.
    let (x, y) = (codes[..3].to_vec(), codes[1..].to_vec());
    let labels: Vec<Vec<u8>> = y.iter().map(|c| [b"grade-".as_slice(), &c[c.len() - 1..]].concat()).collect();

    let mut out = Vec::new();
    // The last: a noisy cardinality (Hello form 4 with its anchor, HelloAck with dummies).
    for (form, noise) in [
        (PsiOutputForm::Intersection, None),
        (PsiOutputForm::Cardinality, None),
        (PsiOutputForm::Both, None),
        (PsiOutputForm::Labels, None),
        (PsiOutputForm::Cardinality, Some(10_000)),
    ] {
        let binding = psi_binding(&mut rng);
        let key = MasterSecret::generate(&mut rng)
            .derive_oprf_key(&binding.contract, binding.epoch, KeyPurpose::PsiServer)
            .expect("key derivation");
        let id = ServerSetId {
            contract: binding.contract.clone(),
            epoch: binding.epoch,
            dataset: DatasetVersion(1),
        };
        let set = if form == PsiOutputForm::Labels {
            ServerSet::build_with_labels(&key, id, &y, &labels)
        } else {
            ServerSet::build(&key, id, &y)
        }
        .expect("server set");
        let mut server = PsiServer::new(
            ServerConfig {
                binding: binding.clone(),
                client: client_id.clone(),
                policy: ServerPolicy {
                    form,
                    min_client_set_size: 1,
                    max_client_set_size: 1 << 20,
                    count_noise_epsilon_milli: noise,
                },
            },
            Arc::new(set),
            key,
            &mut rng,
        )
        .expect("server session");
        let (mut client, first) = PsiClient::start(
            ClientConfig {
                binding,
                server: server_id.clone(),
                form,
                chunk_size: 2,
                policy: ClientPolicy { min_server_set_size: 0, count_noise_epsilon_milli: noise },
            },
            x.clone(),
            &mut rng,
        )
        .expect("client start");

        let route = |messages: Vec<OutgoingMessage>,
                     out: &mut Vec<Vec<u8>>,
                     to_server: &mut VecDeque<Vec<u8>>,
                     to_client: &mut VecDeque<Vec<u8>>| {
            for OutgoingMessage { to, bytes, .. } in messages {
                out.push(bytes.clone());
                if to == server_id {
                    to_server.push_back(bytes);
                } else {
                    to_client.push_back(bytes);
                }
            }
        };
        let mut to_server: VecDeque<Vec<u8>> = VecDeque::new();
        let mut to_client: VecDeque<Vec<u8>> = VecDeque::new();
        route(first, &mut out, &mut to_server, &mut to_client);
        loop {
            let next = if let Some(bytes) = to_server.pop_front() {
                let (next, messages) = server.handle(&client_id, &bytes).expect("honest server step");
                server = next;
                messages
            } else if let Some(bytes) = to_client.pop_front() {
                let (next, messages) = client.handle(&server_id, &bytes).expect("honest client step");
                client = next;
                messages
            } else {
                break;
            };
            route(next, &mut out, &mut to_server, &mut to_client);
        }
        client.into_output().expect("client finished");
        server.into_output().expect("server finished");
    }
    out
}

/// Every message of a small honest secure-aggregation session (3 contributors,
/// threshold 2): AdvertiseKeys, KeyList, EncryptedShares, ShareRelay, MaskedInput,
/// UnmaskRequest and UnmaskResponse.
fn secagg_session_messages() -> Vec<Vec<u8>> {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5ec);
    let binding = SessionBinding {
        contract: ContractId::new("xel-2026-secagg").expect("valid contract id"),
        epoch: Epoch(3),
        session: SessionId([1; 16]),
    };
    let ids: Vec<NodeId> = (1..=3).map(|i| node(&format!("bank-{i}"))).collect();
    let identities: Vec<IdentityKey> = (0..3).map(|_| IdentityKey::generate(&mut rng)).collect();
    let coordinator_id = node("credit-center");
    let parties = ids.iter().cloned().zip(identities.iter().map(IdentityKey::public_key)).collect();
    let roster = Roster::new(parties, 2, coordinator_id.clone()).expect("valid roster");
    let setup = Setup::new(binding, roster, VectorSpec { len: 4, bits: 16 }).expect("valid setup");

    let mut out = Vec::new();
    let mut coordinator = CollectingKeys::new(setup.clone());
    let mut states = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let input = vec![i as u64 + 1, 2, 3, 0xffff];
        let (state, message) =
            AwaitingKeyList::start(setup.clone(), id.clone(), &identities[i], input, &mut rng)
                .expect("round 0");
        out.push(message.to_bytes());
        coordinator.receive(id, message).expect("genuine");
        states.push(state);
    }
    let (mut coordinator, key_list) = coordinator.close_round().expect("U1");
    out.push(key_list.message.to_bytes());
    let mut next_states = Vec::new();
    for (i, state) in states.into_iter().enumerate() {
        let (state, message) =
            state.handle(&coordinator_id, key_list.message.clone(), &mut rng).expect("round 1");
        out.push(message.to_bytes());
        coordinator.receive(&ids[i], message).expect("genuine");
        next_states.push(state);
    }
    let (mut coordinator, relays) = coordinator.close_round().expect("U2");
    let mut unmask_states = Vec::new();
    for (i, state) in next_states.into_iter().enumerate() {
        let relay = relays.iter().find(|r| r.to == ids[i]).expect("a relay for every member of U2");
        out.push(relay.message.to_bytes());
        let (state, message) = state.handle(&coordinator_id, relay.message.clone()).expect("round 2");
        out.push(message.to_bytes());
        coordinator.receive(&ids[i], message).expect("genuine");
        unmask_states.push(state);
    }
    let (_, request) = coordinator.close_round().expect("U3");
    out.push(request.message.to_bytes());
    for state in unmask_states {
        out.push(state.handle(&coordinator_id, request.message.clone()).expect("round 4").to_bytes());
    }
    out
}

/// Every message of a small honest lookup run (one provider, 5 lookups in chunks of 2,
/// a 12-bit vector of 7 entries in chunks of 3): Hello, BlindedChunk, EvaluatedChunk and
/// VectorChunk.
fn lookup_session_messages() -> Vec<Vec<u8>> {
    let mut rng = ChaCha20Rng::seed_from_u64(0x100c);
    let (querier_id, provider_id) = (node("bank-xiamen-1"), node("credit-center"));
    let binding = SessionBinding {
        contract: ContractId::new("xel-2026-lookup").expect("valid contract id"),
        epoch: Epoch(2),
        session: SessionId::random(&mut rng),
    };
    let codes: Vec<Vec<u8>> = (0..7).map(|i| format!("91350200MA2Y{i:06}").into_bytes()).collect();
    let universe = Arc::new(Universe::new(codes.clone()).expect("sorted"));
    let header =
        VectorHeader::new(binding.contract.clone(), binding.epoch, &universe, Width::new(12).expect("width"));
    let key = MasterSecret::generate(&mut rng)
        .derive_oprf_key(&binding.contract, binding.epoch, KeyPurpose::LookupProvider)
        .expect("key derivation");
    let vector = combine(&[
        prepare_contribution(&key, &header, &universe, &[1, 2, 3, 4, 5, 6, 4095]).expect("contribution")
    ])
    .expect("one vector");
    let mut out = vector.to_chunks(&binding, 3).expect("chunks");

    let query =
        LookupQuery::new(header, universe.clone(), vec![provider_id.clone()], &codes[1..6]).expect("query");
    let config = QuerierConfig { binding: binding.clone(), provider: provider_id.clone(), chunk_size: 2 };
    let (mut session, first) = query.start_session(config, &mut rng).expect("start");
    let mut provider = LookupProvider::new(
        ProviderConfig {
            binding,
            querier: querier_id.clone(),
            universe_digest: universe.digest(),
            policy: ProviderPolicy { remaining_quota: 100, max_lookups: 100 },
        },
        key,
    );
    let mut to_provider: VecDeque<Vec<u8>> = first.into_iter().map(|m| m.bytes).collect();
    let mut to_querier: VecDeque<Vec<u8>> = VecDeque::new();
    loop {
        if let Some(bytes) = to_provider.pop_front() {
            out.push(bytes.clone());
            let (next, messages) = provider.handle(&querier_id, &bytes).expect("honest provider step");
            provider = next;
            to_querier.extend(messages.into_iter().map(|m| m.bytes));
        } else if let Some(bytes) = to_querier.pop_front() {
            out.push(bytes.clone());
            let (next, messages) = session.handle(&provider_id, &bytes).expect("honest querier step");
            session = next;
            to_provider.extend(messages.into_iter().map(|m| m.bytes));
        } else {
            break;
        }
    }
    assert!(session.is_done() && provider.is_done());
    out
}

/// Every message of a small honest overthreshold session (3 banks, a committee of 2,
/// chunks of 2): Announce, Hello, BlindedChunk, EvaluatedChunk, TagChunk, ResultChunk.
fn overthreshold_session_messages() -> Vec<Vec<u8>> {
    let mut rng = ChaCha20Rng::seed_from_u64(0x0f7);
    let binding = SessionBinding {
        contract: ContractId::new("xel-2026-dup").expect("valid contract id"),
        epoch: Epoch(5),
        session: SessionId([2; 16]),
    };
    let banks: Vec<NodeId> = (1..=3).map(|i| node(&format!("bank-{i}"))).collect();
    let committee: Vec<NodeId> = (1..=2).map(|i| node(&format!("committee-{i}"))).collect();
    let coordinator_id = node("credit-center");
    let params = Parameters::new(coordinator_id.clone(), committee.clone(), banks.clone(), 2, 2, 100)
        .expect("valid parameters");
    let (mut coordinator, announces) = CoordinatorCollecting::new(CoordinatorConfig {
        binding: binding.clone(),
        parameters: params.clone(),
        chunk_size: 2,
    })
    .expect("coordinator");
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut queue: VecDeque<(NodeId, xmcredit_protocol::overthreshold::OutgoingMessage)> =
        announces.into_iter().map(|m| (coordinator_id.clone(), m)).collect();
    let mut contributors = std::collections::HashMap::new();
    let mut members = std::collections::HashMap::new();
    let keys: Vec<_> = committee
        .iter()
        .map(|_| {
            MasterSecret::generate(&mut rng)
                .derive_oprf_key(&binding.contract, binding.epoch, KeyPurpose::OverthresholdCommittee)
                .expect("key derivation")
        })
        .collect();
    for (i, me) in banks.iter().enumerate() {
        let items: Vec<Vec<u8>> = (i..i + 3).map(|j| format!("INV-{j:06}").into_bytes()).collect();
        let config = ContributorConfig {
            binding: binding.clone(),
            me: me.clone(),
            parameters: params.clone(),
            chunk_size: 2,
        };
        contributors
            .insert(me.clone(), OverthresholdContributor::new(config, items, &mut rng).expect("contributor"));
        for (m, key) in committee.iter().zip(&keys) {
            let policy = MemberPolicy { min_set_size: 1, max_set_size: 100, remaining_quota: 100 };
            let config = MemberConfig { binding: binding.clone(), contributor: me.clone(), policy };
            members.insert((m.clone(), me.clone()), CommitteeMember::new(config, key.clone()));
        }
    }
    let mut closed = false;
    while let Some((from, message)) = queue.pop_front() {
        out.push(message.bytes.clone());
        let to = message.to.clone();
        let next = if to == coordinator_id {
            coordinator.receive(&from, &message.bytes).expect("genuine");
            if coordinator.is_complete() && !closed {
                closed = true;
                let fresh = CoordinatorCollecting::new(CoordinatorConfig {
                    binding: binding.clone(),
                    parameters: params.clone(),
                    chunk_size: 2,
                })
                .expect("coordinator")
                .0;
                let (_, results) = std::mem::replace(&mut coordinator, fresh).close().expect("close");
                results
            } else {
                Vec::new()
            }
        } else if let Some(state) = contributors.remove(&to) {
            let (next, messages) = state.handle(&from, &message.bytes).expect("honest contributor step");
            contributors.insert(to.clone(), next);
            messages
        } else {
            let key = (to.clone(), from.clone());
            let state = members.remove(&key).expect("member session");
            let (next, messages) = state.handle(&from, &message.bytes).expect("honest member step");
            members.insert(key, next);
            messages
        };
        queue.extend(next.into_iter().map(|m| (to.clone(), m)));
    }
    assert!(contributors.values().all(OverthresholdContributor::is_done), "every bank finished");
    out
}

fn kinds(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut kinds: Vec<u8> = messages.iter().map(|m| m[1]).collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

// ---- Tests -----------------------------------------------------------------------------

#[test]
fn psi_decoder_never_panics_on_random_bytes() {
    let kinds = kinds(&psi_session_messages());
    assert_eq!(kinds.len(), 7, "the session produced every PSI message kind");
    // The property (no panic; whatever decodes re-encodes to the same bytes) is checked
    // on every input inside `feed_random`.
    feed_random::<Psi>(0xf022_0001, &kinds);
}

#[test]
fn secagg_decoder_never_panics_on_random_bytes() {
    let kinds = kinds(&secagg_session_messages());
    assert_eq!(kinds.len(), 7, "the session produced every SecAgg message kind");
    feed_random::<SecAgg>(0xf022_0002, &kinds);
}

#[test]
fn overthreshold_decoder_never_panics_on_random_bytes() {
    let kinds = kinds(&overthreshold_session_messages());
    assert_eq!(kinds.len(), 6, "the session produced every overthreshold message kind");
    feed_random::<Overthreshold>(0xf022_0006, &kinds);
}

#[test]
fn overthreshold_decoder_never_panics_on_mutated_messages() {
    let mut rng = ChaCha20Rng::seed_from_u64(0xf022_0007);
    let mut tally = Tally::default();
    // One message of each kind (the chunks of one kind share a layout).
    let mut messages = overthreshold_session_messages();
    messages.sort_by_key(|m| m[1]);
    messages.dedup_by_key(|m| m[1]);
    assert_eq!(messages.len(), 6, "one message of each kind");
    for message in messages {
        feed_mutations::<Overthreshold>(&message, &mut rng, &mut tally);
    }
    assert!(tally.accepted > tally.tried / 20, "{tally:?}");
}

#[test]
fn psi_decoder_never_panics_on_mutated_messages() {
    let mut rng = ChaCha20Rng::seed_from_u64(0xf022_0003);
    let mut tally = Tally::default();
    for message in psi_session_messages() {
        feed_mutations::<Psi>(&message, &mut rng, &mut tally);
    }
    // Flips in the session id, sequence numbers and elements keep a message well formed:
    // mutations must have reached the bodies, not all stopped at the header.
    assert!(tally.accepted > tally.tried / 20, "{tally:?}");
}

#[test]
fn secagg_decoder_never_panics_on_mutated_messages() {
    let mut rng = ChaCha20Rng::seed_from_u64(0xf022_0004);
    let mut tally = Tally::default();
    // One message of each kind: the contributors' messages of one round share a layout,
    // and decoding points makes a full pass over each of them too slow for CI.
    let mut messages = secagg_session_messages();
    messages.sort_by_key(|m| m[1]);
    messages.dedup_by_key(|m| m[1]);
    assert_eq!(messages.len(), 7, "one message of each kind");
    for message in messages {
        feed_mutations::<SecAgg>(&message, &mut rng, &mut tally);
    }
    assert!(tally.accepted > tally.tried / 20, "{tally:?}");
}

#[test]
fn lookup_decoder_never_panics_on_random_bytes() {
    let kinds = kinds(&lookup_session_messages());
    assert_eq!(kinds.len(), 4, "the run produced every lookup message kind");
    feed_random::<Lookup>(0xf022_0009, &kinds);
}

#[test]
fn lookup_decoder_never_panics_on_mutated_messages() {
    let mut rng = ChaCha20Rng::seed_from_u64(0xf022_000a);
    let mut tally = Tally::default();
    let mut messages = lookup_session_messages();
    messages.sort_by_key(|m| m[1]);
    messages.dedup_by_key(|m| m[1]);
    assert_eq!(messages.len(), 4, "one message of each kind");
    for message in messages {
        feed_mutations::<Lookup>(&message, &mut rng, &mut tally);
    }
    assert!(tally.accepted > tally.tried / 20, "{tally:?}");
}

/// The lookup decoder refuses (or round-trips) the other protocols' messages, and they
/// its messages, never panicking; with the kind byte swapped, bodies meet the wrong
/// parser.
#[test]
fn lookup_decoder_survives_the_other_protocols_messages() {
    let mut rng = ChaCha20Rng::seed_from_u64(0xf022_0008);
    let mut tally = Tally::default();
    let lookup = lookup_session_messages();
    let lookup_kinds = kinds(&lookup);
    let foreign = psi_session_messages()
        .into_iter()
        .chain(secagg_session_messages())
        .chain(overthreshold_session_messages());
    for message in foreign {
        assert!(!check::<Lookup>(&message, &|| format!("foreign message {}", hex(&message))));
        let mut as_lookup = message.clone();
        as_lookup[1] = lookup_kinds[rng.gen_range(0..lookup_kinds.len())];
        tally.feed::<Lookup>(&as_lookup, &|| format!("foreign body with a lookup kind {}", hex(&as_lookup)));
    }
    for message in lookup {
        assert!(!check::<Psi>(&message, &|| format!("lookup message {}", hex(&message))));
        assert!(!check::<SecAgg>(&message, &|| format!("lookup message {}", hex(&message))));
        assert!(!check::<Overthreshold>(&message, &|| format!("lookup message {}", hex(&message))));
    }
}

/// The message kind bytes of the four protocols are disjoint and in their ranges (PSI
/// 0x81-0x87, SecAgg 0x00-0x41, overthreshold 0x91-0x96, lookup 0xC1-0xC4), so no
/// decoder takes another protocol's message for one of its own.
#[test]
fn message_kinds_do_not_collide() {
    let psi = kinds(&psi_session_messages());
    let secagg = kinds(&secagg_session_messages());
    let overthreshold = kinds(&overthreshold_session_messages());
    let lookup = kinds(&lookup_session_messages());
    assert!(psi.iter().all(|k| (0x81..=0x87).contains(k)), "PSI kinds {psi:02x?}");
    assert!(secagg.iter().all(|k| (0x00..=0x41).contains(k)), "SecAgg kinds {secagg:02x?}");
    assert!(
        overthreshold.iter().all(|k| (0x91..=0x96).contains(k)),
        "overthreshold kinds {overthreshold:02x?}"
    );
    assert!(lookup.iter().all(|k| (0xc1..=0xc4).contains(k)), "lookup kinds {lookup:02x?}");
    let mut all: Vec<u8> = [&psi, &secagg, &overthreshold, &lookup].into_iter().flatten().copied().collect();
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "a kind byte is shared by two protocols");
}

/// The PSI decoder also sees the other protocol's bytes on a shared stream by mistake,
/// and the other way round: each must refuse (or round-trip) them, never panic.
#[test]
fn each_decoder_survives_the_other_protocols_messages() {
    let mut rng = ChaCha20Rng::seed_from_u64(0xf022_0005);
    let mut tally = Tally::default();
    let secagg = secagg_session_messages();
    let secagg_kinds = kinds(&secagg);
    for message in secagg {
        tally.feed::<Psi>(&message, &|| format!("SecAgg message {}", hex(&message)));
        let mut as_psi = message.clone();
        as_psi[1] = 0x81 + rng.gen_range(0..7);
        tally.feed::<Psi>(&as_psi, &|| format!("SecAgg body with a PSI kind {}", hex(&as_psi)));
    }
    for message in overthreshold_session_messages() {
        tally.feed::<Psi>(&message, &|| format!("overthreshold message {}", hex(&message)));
        tally.feed::<SecAgg>(&message, &|| format!("overthreshold message {}", hex(&message)));
    }
    for message in psi_session_messages() {
        tally.feed::<Overthreshold>(&message, &|| format!("PSI message {}", hex(&message)));
        let mut as_ot = message.clone();
        as_ot[1] = 0x91 + rng.gen_range(0..6);
        tally.feed::<Overthreshold>(&as_ot, &|| {
            format!("PSI body with an overthreshold kind {}", hex(&as_ot))
        });
    }
    for message in secagg_session_messages() {
        tally.feed::<Overthreshold>(&message, &|| format!("SecAgg message {}", hex(&message)));
    }
    for message in psi_session_messages() {
        tally.feed::<SecAgg>(&message, &|| format!("PSI message {}", hex(&message)));
        let mut as_secagg = message.clone();
        as_secagg[1] = secagg_kinds[rng.gen_range(0..secagg_kinds.len())];
        tally.feed::<SecAgg>(&as_secagg, &|| format!("PSI body with a SecAgg kind {}", hex(&as_secagg)));
    }
}
