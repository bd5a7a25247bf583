//! PSI cardinality with noise added by the server (issue 10), driven in memory: the
//! count stays within its clamp, the noise has the declared distribution (fixed seed),
//! the count is exact without noise, and every mismatch between the two sides' noise is
//! refused.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use xmcredit_crypto::count_noise::{count_noise_half, CountNoise, NoiseAnchor};
use xmcredit_crypto::keys::{KeyPurpose, MasterSecret};
use xmcredit_crypto::oprf::OprfKey;
use xmcredit_crypto::{ContractId, Epoch, NodeId, SessionId};
use xmcredit_protocol::psi::{
    ClientConfig, ClientOutput, ClientPolicy, DatasetVersion, OutgoingMessage, PsiClient, PsiMessage,
    PsiMessageKind, PsiOutputForm, PsiServer, ServerConfig, ServerOutput, ServerPolicy, ServerSet,
    ServerSetId, NOISY_CARDINALITY_CODE,
};
use xmcredit_protocol::{ProtocolError, SessionBinding};

fn client_id() -> NodeId {
    NodeId::new("bank-xiamen-1").expect("valid node id")
}

fn server_id() -> NodeId {
    NodeId::new("credit-center").expect("valid node id")
}

/// One contract and epoch: the key and Y's evaluated set, shared by many sessions.
struct Fixture {
    contract: ContractId,
    key: OprfKey,
    set: Arc<ServerSet>,
}

fn fixture(rng: &mut ChaCha20Rng, y: &[Vec<u8>]) -> Fixture {
    let contract = ContractId::new("xel-2026-psi-noisy").expect("valid contract id");
    let key =
        MasterSecret::generate(rng).derive_oprf_key(&contract, Epoch(3), KeyPurpose::PsiServer).expect("key");
    let id = ServerSetId { contract: contract.clone(), epoch: Epoch(3), dataset: DatasetVersion(1) };
    let set = Arc::new(ServerSet::build(&key, id, y).expect("server set"));
    Fixture { contract, key, set }
}

/// X of `n`, Y of `m`, `common` in both.
fn sets(rng: &mut ChaCha20Rng, n: usize, m: usize, common: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut seen = HashSet::new();
    let mut pool = Vec::new();
    while pool.len() < n + m - common {
        let code = format!("9135020{:011}", rng.gen_range(0..100_000_000_000u64)).into_bytes();
        if seen.insert(code.clone()) {
            pool.push(code);
        }
    }
    (pool[..n].to_vec(), pool[n - common..].to_vec())
}

/// A server and a client session under `fixture`, each with its own idea of the noise.
fn start(
    rng: &mut ChaCha20Rng,
    f: &Fixture,
    x: &[Vec<u8>],
    server_noise: Option<u32>,
    client_noise: Option<u32>,
    chunk_size: u32,
) -> Result<(PsiServer, PsiClient, Vec<OutgoingMessage>), ProtocolError> {
    let binding =
        SessionBinding { contract: f.contract.clone(), epoch: Epoch(3), session: SessionId::random(rng) };
    let server = PsiServer::new(
        ServerConfig {
            binding: binding.clone(),
            client: client_id(),
            policy: ServerPolicy {
                form: PsiOutputForm::Cardinality,
                min_client_set_size: 1,
                max_client_set_size: 1 << 20,
                count_noise_epsilon_milli: server_noise,
            },
        },
        f.set.clone(),
        f.key.clone(),
        rng,
    )?;
    let config = ClientConfig {
        binding,
        server: server_id(),
        form: PsiOutputForm::Cardinality,
        chunk_size,
        policy: ClientPolicy { min_server_set_size: 1, count_noise_epsilon_milli: client_noise },
    };
    let (client, first) = PsiClient::start(config, x.to_vec(), rng)?;
    Ok((server, client, first))
}

/// Delivers every message in order; `edit` may rewrite one on its way (by kind).
fn drive(
    mut server: PsiServer,
    mut client: PsiClient,
    first: Vec<OutgoingMessage>,
    edit: &mut dyn FnMut(PsiMessageKind, Vec<u8>) -> Vec<u8>,
    tap: &mut dyn FnMut(&OutgoingMessage),
) -> Result<(ClientOutput, ServerOutput), ProtocolError> {
    let mut to_server: VecDeque<OutgoingMessage> = first.into();
    let mut to_client: VecDeque<OutgoingMessage> = VecDeque::new();
    loop {
        if let Some(message) = to_server.pop_front() {
            tap(&message);
            let bytes = edit(message.kind, message.bytes);
            let (next, out) = server.handle(&client_id(), &bytes)?;
            server = next;
            to_client.extend(out);
        } else if let Some(message) = to_client.pop_front() {
            tap(&message);
            let bytes = edit(message.kind, message.bytes);
            let (next, out) = client.handle(&server_id(), &bytes)?;
            client = next;
            to_server.extend(out);
        } else {
            break;
        }
    }
    Ok((client.into_output().expect("client finished"), server.into_output().expect("server finished")))
}

fn honest(
    rng: &mut ChaCha20Rng,
    f: &Fixture,
    x: &[Vec<u8>],
    noise: Option<u32>,
    chunk_size: u32,
) -> (ClientOutput, ServerOutput) {
    let (server, client, first) = start(rng, f, x, noise, noise, chunk_size).expect("sessions start");
    drive(server, client, first, &mut |_, bytes| bytes, &mut |_| {}).expect("honest run")
}

#[test]
fn the_half_width_is_ceil_30_over_epsilon_in_integers() {
    assert_eq!(count_noise_half(1000).expect("ε 1"), 30);
    assert_eq!(count_noise_half(100).expect("ε 0.1"), 300);
    assert_eq!(count_noise_half(700).expect("ε 0.7"), 43); // 30000 / 700 = 42.86
    assert_eq!(count_noise_half(10).expect("ε 0.01"), 3000);
    assert_eq!(count_noise_half(10_000).expect("ε 10"), 3);
    for outside in [0, 9, 10_001, u32::MAX] {
        assert!(count_noise_half(outside).is_err(), "ε {outside}/1000 accepted");
    }
    // The clamp costs δ ≤ 2·e^{-ε·half}/(1 + e^{-ε}) ≤ 2·e^{-30} < 2^-42 at every ε.
    for milli in (10..=10_000).step_by(7).chain([10_000]) {
        let noise = CountNoise::new(milli).expect("valid ε");
        assert!(noise.delta() <= 2.0 * (-30f64).exp() * (1.0 + 1e-12), "ε {milli}: δ {}", noise.delta());
        assert!(noise.delta() < 2f64.powi(-42), "ε {milli}: δ {}", noise.delta());
    }
}

#[test]
fn without_noise_the_count_is_exact_and_nothing_is_added() {
    let mut rng = ChaCha20Rng::seed_from_u64(101);
    let (x, y) = sets(&mut rng, 40, 50, 17);
    let f = fixture(&mut rng, &y);
    let mut replies = 0;
    let mut tags = 0;
    let (server, client, first) = start(&mut rng, &f, &x, None, None, 16).expect("start");
    let (client, _) =
        drive(server, client, first, &mut |_, b| b, &mut |m| match PsiMessage::from_bytes(&m.bytes)
            .expect("decodes")
        {
            PsiMessage::EvaluatedChunk(c) => replies += c.elements.len(),
            PsiMessage::TagChunk(c) => tags += c.tags.len(),
            _ => {}
        })
        .expect("run");
    assert_eq!(client.cardinality, 17);
    assert_eq!(client.noise, None);
    assert_eq!((replies, tags), (40, 50), "no dummies without noise");
}

#[test]
fn a_noisy_count_stays_within_its_clamp_and_carries_the_dummies() {
    let mut rng = ChaCha20Rng::seed_from_u64(102);
    // 100 in common, 200 on each side: the clamp (±60 at ε 0.5) is narrower than the
    // range a count can take, so the bound below can fail.
    let (x, y) = sets(&mut rng, 200, 200, 100);
    let f = fixture(&mut rng, &y);
    let noise = CountNoise::new(500).expect("ε 0.5");
    let dummies = noise.dummies() as usize;
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let (mut replies, mut tags, mut anchors) = (0, 0, 0);
        // Chunks of 16: the dummies spill into reply chunks past the blinded ones.
        let (server, client, first) = start(&mut rng, &f, &x, Some(500), Some(500), 16).expect("start");
        let (client, server) =
            drive(server, client, first, &mut |_, b| b, &mut |m| match PsiMessage::from_bytes(&m.bytes)
                .expect("decodes")
            {
                PsiMessage::Hello(h) => anchors += usize::from(h.noise_anchor.is_some()),
                PsiMessage::EvaluatedChunk(c) => replies += c.elements.len(),
                PsiMessage::TagChunk(c) => tags += c.tags.len(),
                _ => {}
            })
            .expect("honest noisy run");
        assert_eq!((anchors, replies, tags), (1, 200 + dummies, 200 + dummies));
        let error = client.cardinality as i64 - 100;
        assert!(error.abs() <= i64::from(noise.half()), "error {error} beyond the clamp");
        assert_eq!(client.noise.map(|n| (n.epsilon_milli, n.dummies as usize)), Some((500, dummies)));
        assert_eq!(client.transcript_digest, server.transcript_digest);
        assert_eq!(server.client_set_size, 200);
        seen.insert(client.cardinality);
    }
    // Fresh noise per session: twenty runs do not all give one number (P(η = 0) ≈ 0.24 at ε 0.5).
    assert!(seen.len() > 1, "twenty noisy runs all gave {seen:?}");
}

#[test]
fn the_noise_has_the_declared_distribution() {
    const RUNS: usize = 600;
    let mut rng = ChaCha20Rng::seed_from_u64(103);
    // 30 in common and 45 on each side: the clamp to 0..=45 never bites at ε 1.
    let (x, y) = sets(&mut rng, 45, 45, 30);
    let f = fixture(&mut rng, &y);
    let noise = CountNoise::new(1000).expect("ε 1");
    let errors: Vec<f64> =
        (0..RUNS).map(|_| honest(&mut rng, &f, &x, Some(1000), 64).0.cardinality as f64 - 30.0).collect();
    let mean = errors.iter().sum::<f64>() / RUNS as f64;
    let variance = errors.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / (RUNS - 1) as f64;
    let declared = noise.variance();
    assert!(mean.abs() < 5.0 * (declared / RUNS as f64).sqrt(), "mean {mean}");
    assert!((variance / declared - 1.0).abs() < 0.3, "variance {variance}, declared {declared}");
    // P(η = 0) = (1 − q) / (1 + q), q = e^-1: 0.462.
    let q = (-1.0f64).exp();
    let zeros = errors.iter().filter(|e| **e == 0.0).count() as f64 / RUNS as f64;
    assert!((zeros - (1.0 - q) / (1.0 + q)).abs() < 0.07, "P(0) = {zeros}");
}

/// A wire edit that passes every message but rewrites each one of `kind` with `change`.
fn rewrite(
    kind: PsiMessageKind,
    change: impl Fn(&mut PsiMessage),
) -> impl FnMut(PsiMessageKind, Vec<u8>) -> Vec<u8> {
    move |got, bytes| match PsiMessage::from_bytes(&bytes) {
        Ok(mut message) if got == kind => {
            change(&mut message);
            message.to_bytes()
        }
        _ => bytes,
    }
}

/// A session (X of 10, Y of 10, 3 in common) whose server and client have these noise
/// settings, with `edit` on the wire: the error that ends it.
fn refusal(
    seed: u64,
    server_noise: Option<u32>,
    client_noise: Option<u32>,
    edit: &mut dyn FnMut(PsiMessageKind, Vec<u8>) -> Vec<u8>,
) -> ProtocolError {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (x, y) = sets(&mut rng, 10, 10, 3);
    let f = fixture(&mut rng, &y);
    let (server, client, first) = start(&mut rng, &f, &x, server_noise, client_noise, 8).expect("start");
    drive(server, client, first, edit, &mut |_| {}).expect_err("refused")
}

#[test]
fn a_server_refuses_a_hello_whose_anchor_does_not_match_its_contract() {
    let no_anchor = refusal(104, Some(1000), None, &mut |_, b| b);
    assert!(
        matches!(&no_anchor, ProtocolError::NoiseMismatch { reason } if reason.contains("no noise anchor")),
        "{no_anchor}"
    );
    let anchor = refusal(105, None, Some(1000), &mut |_, b| b);
    assert!(
        matches!(&anchor, ProtocolError::NoiseMismatch { reason } if reason.contains("declares no noise")),
        "{anchor}"
    );
}

#[test]
fn an_anchor_that_is_not_a_valid_element_is_refused() {
    // The identity, and a non-canonical encoding.
    for bad in [[0u8; 32], [0xff; 32]] {
        let mut swap = rewrite(PsiMessageKind::Hello, |m| {
            if let PsiMessage::Hello(hello) = m {
                hello.noise_anchor = Some(NoiseAnchor(bad));
            }
        });
        let error = refusal(106, Some(1000), Some(1000), &mut swap);
        assert!(
            matches!(&error, ProtocolError::Malformed { reason, .. } if reason.contains("noise anchor")),
            "{error}"
        );
    }
}

/// Rewrites the HelloAck's dummy count.
fn announce(dummies: Option<u32>) -> impl FnMut(PsiMessageKind, Vec<u8>) -> Vec<u8> {
    rewrite(PsiMessageKind::HelloAck, move |m| {
        if let PsiMessage::HelloAck(ack) = m {
            ack.dummies = dummies;
        }
    })
}

#[test]
fn a_client_refuses_a_hello_ack_with_other_dummies_than_its_contract_gives() {
    // None: a server that would add nothing; fewer: a server that would add less noise.
    for dummies in [None, Some(2), Some(0)] {
        let error = refusal(107, Some(1000), Some(1000), &mut announce(dummies));
        assert!(matches!(&error, ProtocolError::NoiseMismatch { .. }), "{dummies:?}: {error}");
    }
    // A client without noise refuses dummies it did not ask for.
    let error = refusal(107, None, None, &mut announce(Some(60)));
    assert!(
        matches!(&error, ProtocolError::NoiseMismatch { reason } if reason.contains("declares no noise")),
        "{error}"
    );
}

#[test]
fn a_server_done_that_leaves_out_the_extra_tags_is_refused() {
    // ServerDone claiming m tags only: the client expects m + 60.
    let mut short = rewrite(PsiMessageKind::ServerDone, |m| {
        if let PsiMessage::ServerDone(done) = m {
            done.total_tags = 10;
        }
    });
    let error = refusal(108, Some(1000), Some(1000), &mut short);
    assert!(matches!(&error, ProtocolError::TagCountMismatch { declared: 70, .. }), "{error}");
}

#[test]
fn noise_is_refused_outside_the_cardinality_form_and_outside_its_range() {
    let mut rng = ChaCha20Rng::seed_from_u64(109);
    let (x, y) = sets(&mut rng, 10, 10, 3);
    let f = fixture(&mut rng, &y);
    let binding = SessionBinding {
        contract: f.contract.clone(),
        epoch: Epoch(3),
        session: SessionId::random(&mut rng),
    };
    let policy = |form, noise| ServerPolicy {
        form,
        min_client_set_size: 1,
        max_client_set_size: 1 << 20,
        count_noise_epsilon_milli: noise,
    };
    let config = |policy| ServerConfig { binding: binding.clone(), client: client_id(), policy };
    let refused = PsiServer::new(
        config(policy(PsiOutputForm::Intersection, Some(1000))),
        f.set.clone(),
        f.key.clone(),
        &mut rng,
    );
    assert!(matches!(refused, Err(ProtocolError::NoiseMismatch { .. })), "{refused:?}");
    let refused = PsiServer::new(
        config(policy(PsiOutputForm::Cardinality, Some(5))),
        f.set.clone(),
        f.key.clone(),
        &mut rng,
    );
    assert!(matches!(refused, Err(ProtocolError::Crypto(_))), "{refused:?}");
    let client = ClientConfig {
        binding: binding.clone(),
        server: server_id(),
        form: PsiOutputForm::Intersection,
        chunk_size: 8,
        policy: ClientPolicy { min_server_set_size: 1, count_noise_epsilon_milli: Some(1000) },
    };
    let refused = PsiClient::start(client, x, &mut rng);
    assert!(matches!(refused, Err(ProtocolError::NoiseMismatch { .. })), "{:?}", refused.err());
}

#[test]
fn wire_a_noisy_hello_and_its_answer_round_trip_and_truncations_are_malformed() {
    let mut rng = ChaCha20Rng::seed_from_u64(110);
    let (x, y) = sets(&mut rng, 10, 10, 3);
    let f = fixture(&mut rng, &y);
    let (server, _, first) = start(&mut rng, &f, &x, Some(1000), Some(1000), 16).expect("start");
    let hello = first[0].bytes.clone();
    let decoded = PsiMessage::from_bytes(&hello).expect("decodes");
    let PsiMessage::Hello(h) = &decoded else { panic!("a Hello") };
    assert!(h.noise_anchor.is_some());
    assert_eq!(h.form, PsiOutputForm::Cardinality);
    assert_eq!(decoded.to_bytes(), hello, "round trip");
    // The form byte sits after version, kind and the binding; the anchor ends the message.
    let form_at = hello.len() - 32 - 4 - 8 - 1;
    assert_eq!(hello[form_at], NOISY_CARDINALITY_CODE);
    // Without its anchor the Hello is truncated.
    let error = PsiMessage::from_bytes(&hello[..hello.len() - 32]).expect_err("truncated");
    assert!(matches!(error, ProtocolError::Malformed { .. }), "{error}");
    let (_, ack) = server.handle(&client_id(), &hello).expect("accepted");
    let ack_bytes = ack[0].bytes.clone();
    let PsiMessage::HelloAck(a) = PsiMessage::from_bytes(&ack_bytes).expect("decodes") else {
        panic!("a HelloAck")
    };
    assert_eq!(a.dummies, Some(60));
    // Two bytes of a dummy count, or six: malformed either way.
    for bad in [&ack_bytes[..ack_bytes.len() - 2], &[ack_bytes.as_slice(), &[0, 0]].concat()[..]] {
        let error = PsiMessage::from_bytes(bad).expect_err("malformed");
        assert!(matches!(error, ProtocolError::Malformed { .. }), "{error}");
    }
}

#[test]
fn two_sessions_in_one_epoch_would_tell_the_dummies_apart_so_the_node_allows_one() {
    // Why a node answers one noisy session per client and epoch: within an epoch the
    // OPRF key is fixed, so Y's tags (and the client's own values) repeat from session to
    // session while the dummies' tags are fresh. Two transcripts separate them.
    let mut rng = ChaCha20Rng::seed_from_u64(111);
    let (x, y) = sets(&mut rng, 30, 40, 10);
    let f = fixture(&mut rng, &y);
    let mut sessions: Vec<HashSet<[u8; 16]>> = Vec::new();
    for _ in 0..2 {
        let mut tags = HashSet::new();
        let (server, client, first) = start(&mut rng, &f, &x, Some(1000), Some(1000), 16).expect("start");
        drive(server, client, first, &mut |_, b| b, &mut |m| {
            if let Ok(PsiMessage::TagChunk(chunk)) = PsiMessage::from_bytes(&m.bytes) {
                tags.extend(chunk.tags.iter().map(|t| t.0));
            }
        })
        .expect("run");
        assert_eq!(tags.len(), 40 + 60);
        sessions.push(tags);
    }
    let stable = sessions[0].intersection(&sessions[1]).count();
    assert_eq!(stable, 40, "exactly Y's tags repeat: the other 60 of each session are the noise");
}
