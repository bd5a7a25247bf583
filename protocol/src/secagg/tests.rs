//! In-memory runs of secure aggregation: every message goes through its byte encoding,
//! as it would over gRPC. Results are checked against the plaintext sum.

use curve25519_dalek::scalar::Scalar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use xmcredit_crypto::dh::DhSecret;
use xmcredit_crypto::sign::{IdentityKey, Signature};
use xmcredit_crypto::{ContractId, Epoch, NodeId, SessionId};

use super::*;
use crate::{ProtocolError, SessionBinding};

// ---- Harness -------------------------------------------------------------------------

fn binding(session: u8) -> SessionBinding {
    SessionBinding {
        contract: ContractId::new("xel-2026-secagg").expect("valid contract id"),
        epoch: Epoch(3),
        session: SessionId([session; 16]),
    }
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

struct Fixture {
    setup: Setup,
    ids: Vec<NodeId>,
    identities: Vec<IdentityKey>,
    coordinator: NodeId,
    rng: ChaCha20Rng,
}

fn fixture(n: usize, t: usize, len: usize, bits: u32, seed: u64) -> Fixture {
    fixture_with(n, t, len, bits, seed, binding(1), None)
}

fn fixture_with(
    n: usize,
    t: usize,
    len: usize,
    bits: u32,
    seed: u64,
    binding: SessionBinding,
    coordinator: Option<NodeId>,
) -> Fixture {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let ids: Vec<NodeId> = (1..=n).map(|i| node(&format!("bank-{i}"))).collect();
    let identities: Vec<IdentityKey> = (0..n).map(|_| IdentityKey::generate(&mut rng)).collect();
    let coordinator = coordinator.unwrap_or_else(|| node("credit-center"));
    let parties = ids.iter().cloned().zip(identities.iter().map(IdentityKey::public_key)).collect();
    let roster = Roster::new(parties, t, coordinator.clone()).expect("valid roster");
    let setup = Setup::new(binding, roster, VectorSpec { len, bits }).expect("valid setup");
    Fixture { setup, ids, identities, coordinator, rng }
}

fn random_inputs(fx: &mut Fixture) -> Vec<Vec<u64>> {
    let spec = fx.setup.vector();
    let max = spec.max_element();
    (0..fx.ids.len()).map(|_| (0..spec.len).map(|_| fx.rng.gen_range(0..=max)).collect()).collect()
}

fn plain_sum(inputs: &[Vec<u64>], who: impl Fn(usize) -> bool) -> Vec<u64> {
    let mut sum = vec![0u64; inputs[0].len()];
    for (_, input) in inputs.iter().enumerate().filter(|(i, _)| who(*i)) {
        for (s, x) in sum.iter_mut().zip(input) {
            *s = s.checked_add(*x).expect("the plaintext sum does not wrap");
        }
    }
    sum
}

/// The last thing a contributor does before it goes silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stop {
    /// Never advertises keys.
    BeforeRound0,
    /// Advertises keys, sends no shares.
    AfterRound0,
    /// Sends shares, no masked input.
    AfterRound1,
    /// Sends its masked input, does not answer the unmask request.
    AfterRound2,
    /// Takes part to the end.
    Never,
}

fn stops(n: usize, dropouts: &[(usize, Stop)]) -> Vec<Stop> {
    let mut out = vec![Stop::Never; n];
    for (i, stop) in dropouts {
        out[*i] = *stop;
    }
    out
}

/// Encodes and decodes, as the node does.
fn wire<M>(
    message: &M,
    encode: impl Fn(&M) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> Result<M, ProtocolError>,
) -> M {
    decode(&encode(message)).expect("own encoding decodes")
}

struct AtUnmasking {
    coordinator: CollectingUnmaskResponses,
    contributors: Vec<(usize, AwaitingUnmaskRequest)>,
    request: Broadcast<UnmaskRequest>,
}

/// Runs rounds 0, 1 and 2 with the given dropouts; stops with the unmask request sent.
fn run_to_unmasking(
    fx: &mut Fixture,
    inputs: &[Vec<u64>],
    stops: &[Stop],
) -> Result<AtUnmasking, ProtocolError> {
    let coordinator_id = fx.coordinator.clone();

    // Round 0.
    let mut coordinator = CollectingKeys::new(fx.setup.clone());
    let mut awaiting_keys = Vec::new();
    for (i, id) in fx.ids.iter().enumerate() {
        if stops[i] == Stop::BeforeRound0 {
            continue;
        }
        let (state, message) = AwaitingKeyList::start(
            fx.setup.clone(),
            id.clone(),
            &fx.identities[i],
            inputs[i].clone(),
            &mut fx.rng,
        )?;
        coordinator.receive(id, wire(&message, AdvertiseKeys::to_bytes, AdvertiseKeys::from_bytes))?;
        awaiting_keys.push((i, state));
    }
    let (mut coordinator, key_list) = coordinator.close_round()?;
    let key_list_bytes = key_list.message.to_bytes();

    // Round 1.
    let mut awaiting_shares = Vec::new();
    for (i, state) in awaiting_keys {
        assert!(key_list.to.contains(&fx.ids[i]));
        let (state, message) =
            state.handle(&coordinator_id, KeyList::from_bytes(&key_list_bytes)?, &mut fx.rng)?;
        if stops[i] == Stop::AfterRound0 {
            continue;
        }
        coordinator
            .receive(&fx.ids[i], wire(&message, EncryptedShares::to_bytes, EncryptedShares::from_bytes))?;
        awaiting_shares.push((i, state));
    }
    let (mut coordinator, relays) = coordinator.close_round()?;

    // Round 2.
    let mut awaiting_unmask = Vec::new();
    for (i, state) in awaiting_shares {
        let relay = relays.iter().find(|r| r.to == fx.ids[i]).expect("a relay for every member of U2");
        let (state, message) = state
            .handle(&coordinator_id, wire(&relay.message, ShareRelay::to_bytes, ShareRelay::from_bytes))?;
        if stops[i] == Stop::AfterRound1 {
            continue;
        }
        coordinator.receive(&fx.ids[i], wire(&message, MaskedInput::to_bytes, MaskedInput::from_bytes))?;
        awaiting_unmask.push((i, state));
    }
    let (coordinator, request) = coordinator.close_round()?;
    Ok(AtUnmasking { coordinator, contributors: awaiting_unmask, request })
}

/// Round 4 with the given dropouts.
fn finish(fx: &Fixture, at: AtUnmasking, stops: &[Stop]) -> Result<Aggregate, ProtocolError> {
    let AtUnmasking { mut coordinator, contributors, request } = at;
    let bytes = request.message.to_bytes();
    for (i, state) in contributors {
        let response = state.handle(&fx.coordinator, UnmaskRequest::from_bytes(&bytes)?)?;
        if stops[i] == Stop::AfterRound2 {
            continue;
        }
        coordinator
            .receive(&fx.ids[i], wire(&response, UnmaskResponse::to_bytes, UnmaskResponse::from_bytes))?;
    }
    coordinator.close_round()
}

fn run(fx: &mut Fixture, inputs: &[Vec<u64>], stops: &[Stop]) -> Result<Aggregate, ProtocolError> {
    let at = run_to_unmasking(fx, inputs, stops)?;
    finish(fx, at, stops)
}

/// Runs with the dropouts and checks the exact sum of U3 (who sent a masked input).
fn check_exact(n: usize, t: usize, len: usize, bits: u32, dropouts: &[(usize, Stop)], seed: u64) {
    let mut fx = fixture(n, t, len, bits, seed);
    let inputs = random_inputs(&mut fx);
    let stops = stops(n, dropouts);
    let aggregate = run(&mut fx, &inputs, &stops).expect("session completes");
    let in_u3 = |i: usize| stops[i] >= Stop::AfterRound2;
    assert_eq!(aggregate.sum, plain_sum(&inputs, in_u3));
    let expected: Vec<NodeId> = (0..n).filter(|i| in_u3(*i)).map(|i| fx.ids[i].clone()).collect();
    assert_eq!(aggregate.contributors, expected);
    let dropped: Vec<NodeId> =
        (0..n).filter(|i| stops[*i] == Stop::AfterRound1).map(|i| fx.ids[i].clone()).collect();
    assert_eq!(aggregate.dropped, dropped);
}

fn expect_err<T: std::fmt::Debug>(result: Result<T, ProtocolError>) -> ProtocolError {
    result.expect_err("must be refused")
}

// ---- Exact sums ----------------------------------------------------------------------

#[test]
fn no_dropout_sums_exactly() {
    for (n, t, seed) in [(2, 2, 1), (3, 2, 2), (5, 3, 3), (10, 6, 4), (10, 10, 5)] {
        check_exact(n, t, 100, 32, &[], seed);
    }
}

#[test]
fn widest_inputs_sum_exactly() {
    // 4 × (2^62 - 1) < 2^64: the largest width setup allows for 4 contributors.
    let mut fx = fixture(4, 3, 16, 62, 7);
    let max = fx.setup.vector().max_element();
    let inputs = vec![vec![max; 16]; 4];
    let aggregate = run(&mut fx, &inputs, &stops(4, &[])).expect("session completes");
    assert_eq!(aggregate.sum, vec![4 * max; 16]);
}

#[test]
fn coordinator_may_also_contribute() {
    let mut fx = fixture_with(4, 3, 50, 20, 8, binding(1), Some(node("bank-1")));
    let inputs = random_inputs(&mut fx);
    let aggregate = run(&mut fx, &inputs, &stops(4, &[])).expect("session completes");
    assert_eq!(aggregate.sum, plain_sum(&inputs, |_| true));
}

#[test]
fn vector_of_2_16_elements() {
    check_exact(4, 3, 1 << 16, 40, &[(2, Stop::AfterRound1)], 9);
}

#[test]
fn masked_inputs_hide_the_inputs() {
    // Equal all-zero inputs: what the coordinator receives is neither zero nor equal
    // across contributors, and each masked element uses the whole 64 bits.
    let mut fx = fixture(3, 2, 256, 8, 16);
    let advertised = advertise_with(&mut fx, |_| vec![0; 256]);
    let mut coordinator = CollectingKeys::new(fx.setup.clone());
    for (i, (_, message)) in advertised.iter().enumerate() {
        coordinator.receive(&fx.ids[i], message.clone()).expect("genuine");
    }
    let (mut coordinator, key_list) = coordinator.close_round().expect("U1");
    let mut states = Vec::new();
    for (i, (state, _)) in advertised.into_iter().enumerate() {
        let (state, message) =
            state.handle(&fx.coordinator, key_list.message.clone(), &mut fx.rng).expect("round 1");
        coordinator.receive(&fx.ids[i], message).expect("genuine");
        states.push(state);
    }
    let (_, relays) = coordinator.close_round().expect("U2");
    let masked: Vec<Vec<u64>> = states
        .into_iter()
        .zip(&relays)
        .map(|(state, relay)| state.handle(&fx.coordinator, relay.message.clone()).expect("round 2").1.masked)
        .collect();
    for vector in &masked {
        assert!(vector.iter().all(|&y| y != 0));
        assert!(vector.iter().any(|&y| y > u64::MAX / 2), "masks cover the high bits");
    }
    assert_ne!(masked[0], masked[1]);
}

// ---- Dropouts ------------------------------------------------------------------------

#[test]
fn dropouts_before_and_after_round_0() {
    check_exact(5, 3, 64, 24, &[(0, Stop::BeforeRound0), (3, Stop::AfterRound0)], 10);
    check_exact(5, 3, 64, 24, &[(1, Stop::AfterRound0), (4, Stop::AfterRound0)], 11);
}

#[test]
fn dropouts_after_round_1_are_unmasked_with_their_mask_key() {
    check_exact(5, 3, 64, 24, &[(0, Stop::AfterRound1), (2, Stop::AfterRound1)], 12);
}

#[test]
fn dropouts_after_round_2_still_count() {
    check_exact(5, 3, 64, 24, &[(1, Stop::AfterRound2), (4, Stop::AfterRound2)], 13);
}

#[test]
fn dropouts_at_every_round_up_to_n_minus_t() {
    // n - t = 4 dropouts, one at each point: U1 = 6, U2 = 5, U3 = 4, responders = 3.
    let dropouts =
        [(0, Stop::BeforeRound0), (2, Stop::AfterRound0), (4, Stop::AfterRound1), (6, Stop::AfterRound2)];
    check_exact(7, 3, 128, 30, &dropouts, 14);
    // The same with other positions and a larger group.
    let dropouts =
        [(9, Stop::AfterRound0), (1, Stop::AfterRound1), (5, Stop::AfterRound1), (3, Stop::AfterRound2)];
    check_exact(10, 6, 128, 30, &dropouts, 15);
}

// ---- Aborts below the threshold ------------------------------------------------------

#[test]
fn aborts_below_threshold_at_each_round() {
    let cases = [
        (Stop::BeforeRound0, Round::AdvertiseKeys),
        (Stop::AfterRound0, Round::ShareKeys),
        (Stop::AfterRound1, Round::MaskedInputCollection),
        (Stop::AfterRound2, Round::Unmasking),
    ];
    for (seed, (stop, round)) in cases.into_iter().enumerate() {
        // n - t + 1 = 3 dropouts at the same point leave t - 1 = 2.
        let mut fx = fixture(5, 3, 32, 16, 20 + seed as u64);
        let inputs = random_inputs(&mut fx);
        let stops = stops(5, &[(0, stop), (2, stop), (3, stop)]);
        // `close_round` returns only the error: no key list, relay, request or sum.
        match run(&mut fx, &inputs, &stops) {
            Err(ProtocolError::BelowThreshold { round: r, got: 2, threshold: 3 }) => assert_eq!(r, round),
            other => panic!("{stop:?}: expected BelowThreshold at {round}, got {other:?}"),
        }
    }
}

#[test]
fn contributor_refuses_to_unmask_below_threshold() {
    // A coordinator that goes on with t - 1 survivors: no contributor reveals a share.
    let mut fx = fixture(5, 3, 8, 16, 30);
    let inputs = random_inputs(&mut fx);
    let stops = stops(5, &[(3, Stop::AfterRound1), (4, Stop::AfterRound1)]);
    let at = run_to_unmasking(&mut fx, &inputs, &stops).expect("rounds 0-2");
    let mut request = at.request.message.clone();
    let moved = request.survivors.pop().expect("three survivors");
    request.dropped.push(moved.clone());
    for (i, state) in at.contributors {
        let err = expect_err(state.handle(&fx.coordinator, request.clone()));
        if fx.ids[i] == moved {
            // Listed as dropped after it sent its masked input.
            assert!(matches!(err, ProtocolError::InconsistentUnmaskRequest { .. }), "{err}");
        } else {
            assert!(
                matches!(
                    err,
                    ProtocolError::BelowThreshold { round: Round::Unmasking, got: 2, threshold: 3 }
                ),
                "{err}"
            );
        }
    }
}

// ---- A coordinator asking for too much -----------------------------------------------

#[test]
fn both_shares_of_one_peer_are_refused() {
    let mut fx = fixture(5, 3, 8, 16, 31);
    let inputs = random_inputs(&mut fx);
    let stops = stops(5, &[(1, Stop::AfterRound1)]);
    let at = run_to_unmasking(&mut fx, &inputs, &stops).expect("rounds 0-2");
    let mut request = at.request.message.clone();
    let victim = fx.ids[0].clone();
    assert!(request.survivors.contains(&victim));
    request.dropped.push(victim.clone());
    for (_, state) in at.contributors {
        match state.handle(&fx.coordinator, request.clone()) {
            Err(ProtocolError::BothSharesRequested { peer }) => assert_eq!(peer, victim),
            other => panic!("expected BothSharesRequested, got {other:?}"),
        }
    }
}

#[test]
fn unmask_request_must_split_u2_exactly() {
    let mut fx = fixture(5, 3, 8, 16, 32);
    let inputs = random_inputs(&mut fx);
    let stops = stops(5, &[(1, Stop::AfterRound0), (2, Stop::AfterRound1)]);
    let at = run_to_unmasking(&mut fx, &inputs, &stops).expect("rounds 0-2");
    let honest = at.request.message.clone();
    let mut states = at.contributors.into_iter();

    // A node that never shared keys (not in U2) cannot be asked about.
    let mut request = honest.clone();
    request.dropped.push(fx.ids[1].clone());
    let (_, state) = states.next().expect("contributor");
    assert!(matches!(
        state.handle(&fx.coordinator, request),
        Err(ProtocolError::InconsistentUnmaskRequest { .. })
    ));

    // Leaving a dropped node out of both lists.
    let mut request = honest.clone();
    request.dropped.clear();
    let (_, state) = states.next().expect("contributor");
    assert!(matches!(
        state.handle(&fx.coordinator, request),
        Err(ProtocolError::InconsistentUnmaskRequest { .. })
    ));

    // Naming a survivor twice.
    let mut request = honest;
    request.survivors.push(request.survivors[0].clone());
    let (_, state) = states.next().expect("contributor");
    assert!(matches!(
        state.handle(&fx.coordinator, request),
        Err(ProtocolError::InconsistentUnmaskRequest { .. })
    ));
}

// ---- Key advertisements --------------------------------------------------------------

/// Advertisements of `fx`'s contributors, and their round-0 states.
fn advertise(fx: &mut Fixture) -> Vec<(AwaitingKeyList, AdvertiseKeys)> {
    let inputs = random_inputs(fx);
    advertise_with(fx, |i| inputs[i].clone())
}

fn advertise_with(
    fx: &mut Fixture,
    input: impl Fn(usize) -> Vec<u64>,
) -> Vec<(AwaitingKeyList, AdvertiseKeys)> {
    (0..fx.ids.len())
        .map(|i| {
            AwaitingKeyList::start(
                fx.setup.clone(),
                fx.ids[i].clone(),
                &fx.identities[i],
                input(i),
                &mut fx.rng,
            )
            .expect("round 0")
        })
        .collect()
}

#[test]
fn forged_key_advertisement_is_refused() {
    let mut fx = fixture(4, 3, 8, 16, 40);
    let mut advertised = advertise(&mut fx);

    // At the coordinator: a flipped signature bit is refused, the genuine one then accepted.
    let mut coordinator = CollectingKeys::new(fx.setup.clone());
    let mut forged = advertised[1].1.clone();
    forged.keys.signature.0[0] ^= 1;
    assert!(matches!(
        coordinator.receive(&fx.ids[1], forged),
        Err(ProtocolError::BadKeySignature { from }) if from == fx.ids[1]
    ));
    for (i, (_, message)) in advertised.iter().enumerate() {
        coordinator.receive(&fx.ids[i], message.clone()).expect("genuine advertisement");
    }

    // At a contributor: a key list whose entry for bank-2 carries keys the coordinator
    // swapped in, signed by someone else (bank-3).
    let (_, mut key_list) = coordinator.close_round().expect("U1 complete");
    let substitute = DhSecret::generate(&mut fx.rng).public();
    let entry = &mut key_list.message.entries[1];
    entry.mask_key = substitute;
    let payload = derive::advertisement_payload(
        fx.setup.binding(),
        &entry.node,
        &entry.encryption_key,
        &entry.mask_key,
    );
    entry.signature = fx.identities[2].sign(&payload);
    let (state, _) = advertised.remove(0);
    match state.handle(&fx.coordinator, key_list.message, &mut fx.rng) {
        Err(ProtocolError::BadKeySignature { from }) => assert_eq!(from, fx.ids[1]),
        other => panic!("expected BadKeySignature, got {other:?}"),
    }
}

#[test]
fn replayed_advertisement_from_another_session_is_refused() {
    // The same parties and identities, two sessions.
    let mut old = fixture_with(3, 2, 8, 16, 41, binding(1), None);
    let mut new = fixture_with(3, 2, 8, 16, 41, binding(2), None);
    let old_ads = advertise(&mut old);
    let new_ads = advertise(&mut new);

    // As sent: bound to the old session.
    let mut coordinator = CollectingKeys::new(new.setup.clone());
    let replay = old_ads[0].1.clone();
    assert!(matches!(
        coordinator.receive(&new.ids[0], replay.clone()),
        Err(ProtocolError::WrongBinding { field: "session", .. })
    ));
    // Relabelled with the new binding: the signature covers the old one.
    let mut relabelled = replay.clone();
    relabelled.binding = new.setup.binding().clone();
    assert!(matches!(
        coordinator.receive(&new.ids[0], relabelled),
        Err(ProtocolError::BadKeySignature { .. })
    ));

    // Slipped into the new session's key list by the coordinator.
    let mut entries: Vec<SignedKeys> = new_ads.iter().map(|(_, m)| m.keys.clone()).collect();
    entries[0] = replay.keys;
    let key_list = KeyList { binding: new.setup.binding().clone(), entries };
    let mut states = new_ads.into_iter().map(|(s, _)| s);
    let _ = states.next();
    let state = states.next().expect("bank-2");
    match state.handle(&new.coordinator, key_list, &mut new.rng) {
        Err(ProtocolError::BadKeySignature { from }) => assert_eq!(from, new.ids[0]),
        other => panic!("expected BadKeySignature, got {other:?}"),
    }
}

#[test]
fn duplicated_dh_keys_are_refused() {
    let mut fx = fixture(3, 2, 8, 16, 42);
    let advertised = advertise(&mut fx);
    // bank-3 advertises bank-1's mask key under its own, valid, signature.
    let mut copy = advertised[2].1.clone();
    copy.keys.mask_key = advertised[0].1.keys.mask_key;
    let payload = derive::advertisement_payload(
        fx.setup.binding(),
        &copy.keys.node,
        &copy.keys.encryption_key,
        &copy.keys.mask_key,
    );
    copy.keys.signature = fx.identities[2].sign(&payload);

    let mut coordinator = CollectingKeys::new(fx.setup.clone());
    coordinator.receive(&fx.ids[0], advertised[0].1.clone()).expect("genuine");
    assert!(matches!(
        coordinator.receive(&fx.ids[2], copy.clone()),
        Err(ProtocolError::DuplicateKey { from }) if from == fx.ids[2]
    ));

    let entries = vec![advertised[0].1.keys.clone(), advertised[1].1.keys.clone(), copy.keys];
    let key_list = KeyList { binding: fx.setup.binding().clone(), entries };
    let (state, _) = advertised.into_iter().nth(1).expect("bank-2");
    assert!(matches!(
        state.handle(&fx.coordinator, key_list, &mut fx.rng),
        Err(ProtocolError::DuplicateKey { .. })
    ));
}

#[test]
fn key_list_without_own_keys_or_below_threshold_is_refused() {
    let mut fx = fixture(4, 3, 8, 16, 43);
    let advertised = advertise(&mut fx);
    let entries: Vec<SignedKeys> = advertised.iter().map(|(_, m)| m.keys.clone()).collect();
    let mut states = advertised.into_iter().map(|(s, _)| s);

    let without_me = KeyList { binding: fx.setup.binding().clone(), entries: entries[1..].to_vec() };
    let state = states.next().expect("bank-1");
    assert!(matches!(
        state.handle(&fx.coordinator, without_me, &mut fx.rng),
        Err(ProtocolError::OwnKeysAltered)
    ));

    let too_few = KeyList { binding: fx.setup.binding().clone(), entries: entries[..2].to_vec() };
    let state = states.next().expect("bank-2");
    assert!(matches!(
        state.handle(&fx.coordinator, too_few, &mut fx.rng),
        Err(ProtocolError::BelowThreshold { round: Round::AdvertiseKeys, got: 2, threshold: 3 })
    ));
}

// ---- Inputs and setup ----------------------------------------------------------------

#[test]
fn input_over_declared_width_is_refused() {
    let mut fx = fixture(3, 2, 8, 8, 50);
    let mut input = vec![255u64; 8];
    input[3] = 256;
    match AwaitingKeyList::start(fx.setup.clone(), fx.ids[0].clone(), &fx.identities[0], input, &mut fx.rng) {
        Err(ProtocolError::InputTooWide { index: 3, value: 256, bits: 8 }) => {}
        other => panic!("expected InputTooWide, got {other:?}"),
    }
    let short = vec![1u64; 7];
    assert!(matches!(
        AwaitingKeyList::start(fx.setup.clone(), fx.ids[0].clone(), &fx.identities[0], short, &mut fx.rng),
        Err(ProtocolError::VectorLength { expected: 8, got: 7 })
    ));
    // Someone else's identity key.
    assert!(matches!(
        AwaitingKeyList::start(
            fx.setup.clone(),
            fx.ids[0].clone(),
            &fx.identities[1],
            vec![0; 8],
            &mut fx.rng
        ),
        Err(ProtocolError::InvalidSetup { .. })
    ));
}

#[test]
fn setup_refuses_a_sum_that_could_wrap() {
    let fx = fixture(4, 3, 8, 62, 51);
    let roster = fx.setup.roster().clone();
    assert!(Setup::new(binding(1), roster.clone(), VectorSpec { len: 8, bits: 62 }).is_ok());
    assert!(matches!(
        Setup::new(binding(1), roster.clone(), VectorSpec { len: 8, bits: 63 }),
        Err(ProtocolError::SumCouldWrap { n: 4, bits: 63 })
    ));
    assert!(matches!(
        Setup::new(binding(1), roster.clone(), VectorSpec { len: 8, bits: 64 }),
        Err(ProtocolError::SumCouldWrap { n: 4, bits: 64 })
    ));
    for spec in [
        VectorSpec { len: 0, bits: 8 },
        VectorSpec { len: 8, bits: 0 },
        VectorSpec { len: MAX_VECTOR_LEN + 1, bits: 8 },
    ] {
        assert!(matches!(
            Setup::new(binding(1), roster.clone(), spec),
            Err(ProtocolError::InvalidSetup { .. })
        ));
    }
}

#[test]
fn roster_refuses_bad_thresholds_and_repeats() {
    let mut rng = ChaCha20Rng::seed_from_u64(52);
    let keys: Vec<_> = (0..3).map(|_| IdentityKey::generate(&mut rng).public_key()).collect();
    let parties =
        |names: [&str; 3]| names.iter().map(|n| node(n)).zip(keys.iter().copied()).collect::<Vec<_>>();
    let cc = node("credit-center");
    assert!(Roster::new(parties(["a", "b", "c"]), 2, cc.clone()).is_ok());
    for t in [0, 1, 4] {
        assert!(matches!(
            Roster::new(parties(["a", "b", "c"]), t, cc.clone()),
            Err(ProtocolError::InvalidSetup { .. })
        ));
    }
    assert!(matches!(
        Roster::new(parties(["a", "b", "a"]), 2, cc.clone()),
        Err(ProtocolError::InvalidSetup { .. })
    ));
    let same_key = vec![(node("a"), keys[0]), (node("b"), keys[0])];
    assert!(matches!(Roster::new(same_key, 2, cc.clone()), Err(ProtocolError::InvalidSetup { .. })));
    assert!(matches!(
        Roster::new(vec![(node("a"), keys[0])], 1, cc),
        Err(ProtocolError::InvalidSetup { .. })
    ));
}

// ---- Senders, bindings, tampering ----------------------------------------------------

#[test]
fn coordinator_refuses_strangers_repeats_and_wrong_shapes() {
    let mut fx = fixture(4, 3, 8, 16, 60);
    let advertised = advertise(&mut fx);
    let mut coordinator = CollectingKeys::new(fx.setup.clone());

    // Transport says bank-2, message says bank-1.
    assert!(matches!(
        coordinator.receive(&fx.ids[1], advertised[0].1.clone()),
        Err(ProtocolError::UnexpectedSender { .. })
    ));
    // A node outside the roster.
    let mut stranger = advertised[0].1.clone();
    stranger.keys.node = node("bank-99");
    assert!(matches!(
        coordinator.receive(&node("bank-99"), stranger),
        Err(ProtocolError::UnknownParticipant { .. })
    ));
    // Refusals leave the state as it was.
    assert_eq!(coordinator.pending().len(), 4);
    for (i, (_, message)) in advertised.iter().enumerate().take(3) {
        coordinator.receive(&fx.ids[i], message.clone()).expect("genuine");
    }
    assert!(matches!(
        coordinator.receive(&fx.ids[0], advertised[0].1.clone()),
        Err(ProtocolError::DuplicateMessage { round: Round::AdvertiseKeys, .. })
    ));
    assert_eq!(coordinator.pending(), vec![fx.ids[3].clone()]);

    // bank-4 is not in U1: its later messages are refused.
    let (mut coordinator, key_list) = coordinator.close_round().expect("U1 = 3");
    let mut round1 = Vec::new();
    for (i, (state, _)) in advertised.into_iter().enumerate().take(3) {
        let (state, message) =
            state.handle(&fx.coordinator, key_list.message.clone(), &mut fx.rng).expect("round 1");
        round1.push((i, state, message));
    }
    let mut not_in_u1 = round1[0].2.clone();
    not_in_u1.sender = fx.ids[3].clone();
    assert!(matches!(
        coordinator.receive(&fx.ids[3], not_in_u1),
        Err(ProtocolError::NotInRound { round: Round::ShareKeys, .. })
    ));
    let mut missing_pair = round1[0].2.clone();
    missing_pair.shares.pop();
    assert!(matches!(coordinator.receive(&fx.ids[0], missing_pair), Err(ProtocolError::Malformed { .. })));
    for (i, _, message) in &round1 {
        coordinator.receive(&fx.ids[*i], message.clone()).expect("genuine");
    }
    let (mut coordinator, relays) = coordinator.close_round().expect("U2 = 3");

    let mut masked = Vec::new();
    for (i, state, _) in round1 {
        let relay = relays.iter().find(|r| r.to == fx.ids[i]).expect("relay");
        let (_, message) = state.handle(&fx.coordinator, relay.message.clone()).expect("round 2");
        masked.push((i, message));
    }
    let mut wrong_len = masked[0].1.clone();
    wrong_len.masked.push(0);
    assert!(matches!(
        coordinator.receive(&fx.ids[0], wrong_len),
        Err(ProtocolError::VectorLength { expected: 8, got: 9 })
    ));
    let mut other_session = masked[0].1.clone();
    other_session.binding = binding(9);
    assert!(matches!(
        coordinator.receive(&fx.ids[0], other_session),
        Err(ProtocolError::WrongBinding { .. })
    ));
    assert_eq!(coordinator.pending().len(), 3);
}

#[test]
fn contributor_refuses_messages_not_from_the_coordinator_or_session() {
    let mut fx = fixture(3, 2, 8, 16, 61);
    let advertised = advertise(&mut fx);
    let entries: Vec<SignedKeys> = advertised.iter().map(|(_, m)| m.keys.clone()).collect();
    let key_list = KeyList { binding: fx.setup.binding().clone(), entries };
    let mut states = advertised.into_iter().map(|(s, _)| s);

    let state = states.next().expect("bank-1");
    assert!(matches!(
        state.handle(&fx.ids[1], key_list.clone(), &mut fx.rng),
        Err(ProtocolError::UnexpectedSender { .. })
    ));
    let mut other = key_list;
    other.binding.epoch = Epoch(4);
    let state = states.next().expect("bank-2");
    assert!(matches!(
        state.handle(&fx.coordinator, other, &mut fx.rng),
        Err(ProtocolError::WrongBinding { field: "epoch", .. })
    ));
}

#[test]
fn tampered_share_pair_is_refused() {
    let mut fx = fixture(3, 2, 8, 16, 62);
    let advertised = advertise(&mut fx);
    let mut coordinator = CollectingKeys::new(fx.setup.clone());
    for (i, (_, message)) in advertised.iter().enumerate() {
        coordinator.receive(&fx.ids[i], message.clone()).expect("genuine");
    }
    let (mut coordinator, key_list) = coordinator.close_round().expect("U1");
    let mut states = Vec::new();
    for (i, (state, _)) in advertised.into_iter().enumerate() {
        let (state, message) =
            state.handle(&fx.coordinator, key_list.message.clone(), &mut fx.rng).expect("round 1");
        coordinator.receive(&fx.ids[i], message).expect("genuine");
        states.push(state);
    }
    let (_, mut relays) = coordinator.close_round().expect("U2");
    let relay = &mut relays[0].message;
    relay.shares[1].sealed.0[5] ^= 0x80;
    let from = relay.shares[1].from.clone();
    match states.remove(0).handle(&fx.coordinator, relay.clone()) {
        Err(ProtocolError::ShareDecryption { from: f }) => assert_eq!(f, from),
        other => panic!("expected ShareDecryption, got {other:?}"),
    }
    // A pair moved to another sender's name fails too: the associated data names both ends.
    let mut relay = relays[1].message.clone();
    let first = relay.shares[0].sealed.clone();
    relay.shares[0].sealed = relay.shares[1].sealed.clone();
    relay.shares[1].sealed = first;
    assert!(matches!(
        states.remove(0).handle(&fx.coordinator, relay),
        Err(ProtocolError::ShareDecryption { .. })
    ));
}

#[test]
fn wrong_revealed_shares_are_detected() {
    for tamper_mask_key in [false, true] {
        let mut fx = fixture(5, 3, 64, 16, 63);
        let inputs = random_inputs(&mut fx);
        let stops = stops(5, &[(4, Stop::AfterRound1)]);
        let AtUnmasking { mut coordinator, contributors, request } =
            run_to_unmasking(&mut fx, &inputs, &stops).expect("rounds 0-2");
        for (k, (i, state)) in contributors.into_iter().enumerate() {
            let mut response = state.handle(&fx.coordinator, request.message.clone()).expect("round 4");
            // The first responder's shares are among the t that reconstruction uses.
            if k == 0 {
                let list = if tamper_mask_key {
                    &mut response.mask_key_shares
                } else {
                    &mut response.self_mask_shares
                };
                let bumped = list[0].value.scalar() + Scalar::ONE;
                list[0].value = ShareValue::new(bumped);
            }
            coordinator.receive(&fx.ids[i], response).expect("well-formed");
        }
        assert!(matches!(coordinator.close_round(), Err(ProtocolError::Reconstruction { .. })));
    }
}

// ---- Encodings -----------------------------------------------------------------------

fn annotated(parts: &[&str]) -> Vec<u8> {
    hex::decode(parts.concat()).expect("hex")
}

/// `k·G` for small k: its ristretto255 encoding is in RFC 9496, Appendix A.1.
fn small_multiple(k: u64) -> xmcredit_crypto::dh::DhPublic {
    DhSecret::from_scalar(Scalar::from(k)).expect("non-zero").public()
}

#[test]
fn advertise_keys_annotated_hex() {
    let message = AdvertiseKeys {
        binding: SessionBinding {
            contract: ContractId::new("xel-1").expect("valid"),
            epoch: Epoch(7),
            session: SessionId(*b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"),
        },
        keys: SignedKeys {
            node: node("bank-a"),
            encryption_key: small_multiple(1),
            mask_key: small_multiple(2),
            signature: Signature([0x11; 64]),
        },
    };
    let expected = annotated(&[
        "01",                                                               // version
        "00",                               // kind: AdvertiseKeys (round 0, up)
        "0005",                             // contract id length
        "78656c2d31",                       // "xel-1"
        "0000000000000007",                 // epoch 7
        "000102030405060708090a0b0c0d0e0f", // session id
        "06",                               // node id length
        "62616e6b2d61",                     // "bank-a"
        "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76", // c_pk = G (RFC 9496 A.1)
        "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919", // s_pk = 2G (RFC 9496 A.1)
        &"11".repeat(64),                   // signature
    ]);
    assert_eq!(hex::encode(message.to_bytes()), hex::encode(&expected));
    assert_eq!(AdvertiseKeys::from_bytes(&expected).expect("decodes"), message);
}

#[test]
fn unmask_request_annotated_hex() {
    let message = UnmaskRequest {
        binding: SessionBinding {
            contract: ContractId::new("c").expect("valid"),
            epoch: Epoch(0x0102),
            session: SessionId([0xaa; 16]),
        },
        survivors: vec![node("bank-a"), node("cc")],
        dropped: vec![node("bank-b")],
    };
    let expected = annotated(&[
        "01",                               // version
        "41",                               // kind: UnmaskRequest (round 4, down)
        "0001",                             // contract id length
        "63",                               // "c"
        "0000000000000102",                 // epoch 258
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", // session id
        "0002",                             // survivors: 2
        "06",                               // length
        "62616e6b2d61",                     // "bank-a"
        "02",                               // length
        "6363",                             // "cc"
        "0001",                             // dropped: 1
        "06",                               // length
        "62616e6b2d62",                     // "bank-b"
    ]);
    assert_eq!(hex::encode(message.to_bytes()), hex::encode(&expected));
    assert_eq!(UnmaskRequest::from_bytes(&expected).expect("decodes"), message);
}

#[test]
fn masked_input_annotated_hex() {
    let message = MaskedInput {
        binding: SessionBinding {
            contract: ContractId::new("c").expect("valid"),
            epoch: Epoch(1),
            session: SessionId([0; 16]),
        },
        sender: node("b"),
        masked: vec![1, u64::MAX],
    };
    let expected = annotated(&[
        "01",                               // version
        "20",                               // kind: MaskedInput (round 2, up)
        "0001",                             // contract id length
        "63",                               // "c"
        "0000000000000001",                 // epoch 1
        "00000000000000000000000000000000", // session id
        "01",                               // sender length
        "62",                               // "b"
        "00000002",                         // 2 elements
        "0000000000000001",                 // y_0
        "ffffffffffffffff",                 // y_1
    ]);
    assert_eq!(hex::encode(message.to_bytes()), hex::encode(&expected));
    assert_eq!(MaskedInput::from_bytes(&expected).expect("decodes"), message);
}

/// Every message of a real session, as bytes.
fn session_messages() -> Vec<Vec<u8>> {
    let mut fx = fixture(3, 2, 4, 16, 70);
    let advertised = advertise(&mut fx);
    let mut out = Vec::new();
    let mut coordinator = CollectingKeys::new(fx.setup.clone());
    for (i, (_, message)) in advertised.iter().enumerate() {
        out.push(message.to_bytes());
        coordinator.receive(&fx.ids[i], message.clone()).expect("genuine");
    }
    let (mut coordinator, key_list) = coordinator.close_round().expect("U1");
    out.push(key_list.message.to_bytes());
    let mut states = Vec::new();
    for (i, (state, _)) in advertised.into_iter().enumerate() {
        let (state, message) =
            state.handle(&fx.coordinator, key_list.message.clone(), &mut fx.rng).expect("round 1");
        out.push(message.to_bytes());
        coordinator.receive(&fx.ids[i], message).expect("genuine");
        states.push(state);
    }
    let (mut coordinator, relays) = coordinator.close_round().expect("U2");
    let mut next = Vec::new();
    for (i, state) in states.into_iter().enumerate() {
        out.push(relays[i].message.to_bytes());
        let (state, message) = state.handle(&fx.coordinator, relays[i].message.clone()).expect("round 2");
        out.push(message.to_bytes());
        coordinator.receive(&fx.ids[i], message).expect("genuine");
        next.push(state);
    }
    let (_, request) = coordinator.close_round().expect("U3");
    out.push(request.message.to_bytes());
    for state in next {
        out.push(state.handle(&fx.coordinator, request.message.clone()).expect("round 4").to_bytes());
    }
    out
}

#[test]
fn every_message_round_trips() {
    let messages = session_messages();
    assert_eq!(messages.len(), 3 + 1 + 3 + 3 + 3 + 1 + 3);
    for bytes in &messages {
        let decoded = SecAggMessage::from_bytes(bytes).expect("decodes");
        assert_eq!(&decoded.to_bytes(), bytes);
    }
}

#[test]
fn decoders_refuse_wrong_lengths_versions_and_kinds() {
    for bytes in session_messages() {
        // Every strict prefix is refused, and so is one extra byte.
        for cut in 0..bytes.len() {
            assert!(
                matches!(SecAggMessage::from_bytes(&bytes[..cut]), Err(ProtocolError::Malformed { .. })),
                "prefix of {cut} bytes accepted"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(SecAggMessage::from_bytes(&longer), Err(ProtocolError::Malformed { .. })));
        let mut version = bytes.clone();
        version[0] = 2;
        assert!(matches!(SecAggMessage::from_bytes(&version), Err(ProtocolError::Malformed { .. })));
    }
    // A kind byte that is not the type asked for.
    let request = UnmaskRequest { binding: binding(1), survivors: vec![node("a")], dropped: vec![] };
    assert!(matches!(KeyList::from_bytes(&request.to_bytes()), Err(ProtocolError::Malformed { .. })));
    let mut unknown = request.to_bytes();
    unknown[1] = 0x30;
    assert!(matches!(SecAggMessage::from_bytes(&unknown), Err(ProtocolError::Malformed { .. })));
    // A masked input that declares 2^32 - 1 elements and carries one: refused before
    // anything is allocated.
    let mut huge = MaskedInput { binding: binding(1), sender: node("b"), masked: vec![5] }.to_bytes();
    let at = huge.len() - 12;
    huge[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(MaskedInput::from_bytes(&huge), Err(ProtocolError::Malformed { .. })));
    // A DH key that is not a canonical ristretto255 encoding.
    let mut advertise = AdvertiseKeys {
        binding: binding(1),
        keys: SignedKeys {
            node: node("a"),
            encryption_key: small_multiple(1),
            mask_key: small_multiple(2),
            signature: Signature([0; 64]),
        },
    }
    .to_bytes();
    let key_at = advertise.len() - 64 - 64;
    advertise[key_at..key_at + 32].fill(0xff);
    assert!(matches!(AdvertiseKeys::from_bytes(&advertise), Err(ProtocolError::Malformed { .. })));
    // An invalid node id.
    let mut bad_id =
        UnmaskRequest { binding: binding(1), survivors: vec![node("ab")], dropped: vec![] }.to_bytes();
    let id_at = bad_id.len() - 2 - 2;
    bad_id[id_at] = b'A';
    assert!(matches!(UnmaskRequest::from_bytes(&bad_id), Err(ProtocolError::Malformed { .. })));
}

#[test]
fn secrets_are_redacted_in_debug() {
    let value = ShareValue::new(Scalar::from(12345u64));
    assert_eq!(format!("{value:?}"), "ShareValue(<redacted>)");
    let mut fx = fixture(3, 2, 4, 16, 71);
    let state = AwaitingKeyList::start(
        fx.setup.clone(),
        fx.ids[0].clone(),
        &fx.identities[0],
        vec![4242; 4],
        &mut fx.rng,
    )
    .expect("round 0")
    .0;
    let shown = format!("{state:?}");
    assert!(!shown.contains("4242"), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
}

// ---- Distributed noise (issue 10) ------------------------------------------------------

/// A fixture whose setup carries Skellam noise of total `variance` over `fewest` inputs.
fn noisy_fixture(n: usize, t: usize, len: usize, bits: u32, variance: u64, fewest: usize) -> Fixture {
    let mut fx = fixture(n, t, len, bits, 77);
    let noise = SessionNoise::skellam(variance, fewest, n).expect("valid noise");
    fx.setup = fx.setup.clone().with_noise(noise).expect("noise fits the signed range");
    fx
}

/// Runs a noisy session and returns the noise: the decoded sum minus the plain sum of
/// the inputs that count.
fn noise_of_run(fx: &mut Fixture, inputs: &[Vec<u64>], stops: &[Stop]) -> Vec<i128> {
    let aggregate = run(fx, inputs, stops).expect("session completes");
    assert!(aggregate.noisy);
    let plain = plain_sum(inputs, |i| stops[i] >= Stop::AfterRound2);
    aggregate.decoded().iter().zip(&plain).map(|(got, exact)| got - i128::from(*exact)).collect()
}

fn sample_variance(noise: &[i128]) -> f64 {
    let n = noise.len() as f64;
    let mean = noise.iter().map(|&e| e as f64).sum::<f64>() / n;
    noise.iter().map(|&e| (e as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0)
}

#[test]
fn noisy_sum_carries_the_declared_variance() {
    // 3 contributors, all must count: each adds V/3, the sum carries V. 4096 entries make
    // the sample variance's relative error about 2%; 10% is five of those.
    let declared = 40_000u64;
    let mut fx = noisy_fixture(3, 3, 4096, 16, declared, 3);
    let inputs = random_inputs(&mut fx);
    let noise = noise_of_run(&mut fx, &inputs, &stops(3, &[]));
    let variance = sample_variance(&noise);
    assert!(
        (variance / declared as f64 - 1.0).abs() < 0.10,
        "noise variance {variance}, declared {declared}"
    );
    assert!(
        noise.iter().filter(|&&e| e != 0).count() > 4000,
        "the sum is (nearly) exact: no noise was added"
    );
}

#[test]
fn noise_is_sized_for_the_fewest_survivors() {
    // t = 2 of 3: each contributor adds V/2, so a sum without one bank still carries V
    // (and the sum of all three 1.5·V).
    let declared = 40_000u64;
    let mut fx = noisy_fixture(3, 2, 4096, 16, declared, 2);
    let inputs = random_inputs(&mut fx);
    let noise = noise_of_run(&mut fx, &inputs, &stops(3, &[(0, Stop::AfterRound1)]));
    let variance = sample_variance(&noise);
    assert!((variance / declared as f64 - 1.0).abs() < 0.10, "two survivors: variance {variance}");

    let mut fx = noisy_fixture(3, 2, 4096, 16, declared, 2);
    let inputs = random_inputs(&mut fx);
    let noise = noise_of_run(&mut fx, &inputs, &stops(3, &[]));
    let variance = sample_variance(&noise);
    assert!((variance / (1.5 * declared as f64) - 1.0).abs() < 0.10, "three survivors: variance {variance}");
}

#[test]
fn noise_below_zero_wraps_and_decodes_as_negative() {
    // Zero inputs: half the entries of the noisy sum are negative, which mod 2^64 are
    // numbers near 2^64; the coordinator must accept and decode them, not call them
    // a failed reconstruction.
    let mut fx = noisy_fixture(2, 2, 512, 8, 100, 2);
    let inputs = vec![vec![0u64; 512]; 2];
    let aggregate = run(&mut fx, &inputs, &stops(2, &[])).expect("negative noise is a valid sum");
    let decoded = aggregate.decoded();
    assert!(decoded.iter().any(|&v| v < 0), "no negative entry in 512");
    assert!(aggregate.sum.iter().any(|&v| v > u64::MAX / 2));
    assert!(decoded.iter().all(|v| v.unsigned_abs() < 64 * 15 + 64));
}

#[test]
fn exact_sum_without_noise_is_not_decoded_as_signed() {
    // Without noise, 2 × (2^63 − 1) is a valid sum above 2^63: unsigned.
    let mut fx = fixture(2, 2, 1, 63, 5);
    let inputs = vec![vec![(1u64 << 63) - 1]; 2];
    let aggregate = run(&mut fx, &inputs, &stops(2, &[])).expect("exact");
    assert!(!aggregate.noisy);
    assert_eq!(aggregate.decoded(), vec![2 * ((1i128 << 63) - 1)]);
}

#[test]
fn noise_that_could_wrap_the_signed_range_is_refused() {
    let fx = fixture(3, 2, 4, 62, 1);
    let noise = SessionNoise::skellam(100, 2, 3).expect("test value");
    assert!(matches!(
        fx.setup.clone().with_noise(noise),
        Err(ProtocolError::SumCouldWrap { n: 3, bits: 62 })
    ));
    assert!(SessionNoise::skellam(100, 4, 3).is_err(), "fewest above n");
    assert!(SessionNoise::skellam(0, 2, 3).is_err(), "no variance");
}
