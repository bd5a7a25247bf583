//! Two-party PSI (design.md computation 1), driven in memory: every output form against
//! the plaintext answer, the wire encoding against annotated hex, and each refusal.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use xmcredit_crypto::group::{BatchElementError, ElementBytes};
use xmcredit_crypto::keys::{KeyPurpose, MasterSecret};
use xmcredit_crypto::oprf::OprfKey;
use xmcredit_crypto::set::evaluate_batch;
use xmcredit_crypto::{ContractId, CryptoError, Epoch, NodeId, SessionId};
use xmcredit_protocol::psi::{
    BlindedChunk, ClientConfig, ClientOutput, ClientPolicy, DatasetVersion, Hello, OutgoingMessage,
    PsiClient, PsiMessage, PsiOutputForm, PsiServer, ServerConfig, ServerOutput, ServerPolicy, ServerSet,
    ServerSetId, MAX_CHUNK_ELEMENTS,
};
use xmcredit_protocol::{ProtocolError, SessionBinding};

const ALL_FORMS: [PsiOutputForm; 4] =
    [PsiOutputForm::Intersection, PsiOutputForm::Cardinality, PsiOutputForm::Both, PsiOutputForm::Labels];

// ---- Fixtures ------------------------------------------------------------------------

fn client_id() -> NodeId {
    NodeId::new("bank-xiamen-1").expect("valid node id")
}

fn server_id() -> NodeId {
    NodeId::new("credit-center").expect("valid node id")
}

fn binding(rng: &mut ChaCha20Rng) -> SessionBinding {
    SessionBinding {
        contract: ContractId::new("xel-2026-psi").expect("valid contract id"),
        epoch: Epoch(7),
        session: SessionId::random(rng),
    }
}

/// The key the node would derive for the binding's contract and epoch.
fn server_key(rng: &mut ChaCha20Rng, binding: &SessionBinding) -> OprfKey {
    MasterSecret::generate(rng)
        .derive_oprf_key(&binding.contract, binding.epoch, KeyPurpose::PsiServer)
        .expect("key derivation")
}

/// `count` distinct unified-social-credit-code-like byte strings.
fn codes(rng: &mut ChaCha20Rng, count: usize) -> Vec<Vec<u8>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let code = format!("9135020{:011}", rng.gen_range(0..100_000_000_000u64)).into_bytes();
        if seen.insert(code.clone()) {
            out.push(code);
        }
    }
    out
}

/// X of `n` and Y of `m` sharing exactly `common` elements, each shuffled.
fn sets(rng: &mut ChaCha20Rng, n: usize, m: usize, common: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let pool = codes(rng, n + m - common);
    let mut x: Vec<Vec<u8>> = pool[..n].to_vec();
    let mut y: Vec<Vec<u8>> = pool[n - common..].to_vec();
    shuffle(rng, &mut x);
    shuffle(rng, &mut y);
    (x, y)
}

fn shuffle<T>(rng: &mut ChaCha20Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.gen_range(0..=i));
    }
}

/// A fixed-width label per element (the ServerSet requires one length).
fn labels_for(y: &[Vec<u8>]) -> Vec<Vec<u8>> {
    y.iter().map(|code| format!("grade-{}", code[code.len() - 1] as char).into_bytes()).collect()
}

struct Session {
    binding: SessionBinding,
    key: OprfKey,
    set: Arc<ServerSet>,
}

fn session(rng: &mut ChaCha20Rng, y: &[Vec<u8>], with_labels: bool) -> Session {
    let binding = binding(rng);
    let key = server_key(rng, &binding);
    let id =
        ServerSetId { contract: binding.contract.clone(), epoch: binding.epoch, dataset: DatasetVersion(1) };
    let set = if with_labels {
        ServerSet::build_with_labels(&key, id, y, &labels_for(y))
    } else {
        ServerSet::build(&key, id, y)
    }
    .expect("server set");
    Session { binding, key, set: Arc::new(set) }
}

fn client_config(binding: &SessionBinding, form: PsiOutputForm, chunk_size: u32) -> ClientConfig {
    ClientConfig {
        binding: binding.clone(),
        server: server_id(),
        form,
        chunk_size,
        policy: ClientPolicy { min_server_set_size: 0, count_noise_epsilon_milli: None },
    }
}

fn server_config(binding: &SessionBinding, form: PsiOutputForm) -> ServerConfig {
    ServerConfig {
        binding: binding.clone(),
        client: client_id(),
        policy: ServerPolicy {
            form,
            min_client_set_size: 1,
            max_client_set_size: 1 << 20,
            count_noise_epsilon_milli: None,
        },
    }
}

/// Delivers messages in both directions, in order, until neither side has anything to
/// send; `tap` sees every message on the way.
fn drive(
    mut client: PsiClient,
    first: Vec<OutgoingMessage>,
    mut server: PsiServer,
    tap: &mut dyn FnMut(&OutgoingMessage),
) -> Result<(ClientOutput, ServerOutput), ProtocolError> {
    let mut to_server = VecDeque::new();
    let mut to_client = VecDeque::new();
    let mut route =
        |out: Vec<OutgoingMessage>, to_server: &mut VecDeque<Vec<u8>>, to_client: &mut VecDeque<Vec<u8>>| {
            for message in out {
                tap(&message);
                if message.to == server_id() {
                    to_server.push_back(message.bytes);
                } else {
                    assert_eq!(message.to, client_id());
                    to_client.push_back(message.bytes);
                }
            }
        };
    route(first, &mut to_server, &mut to_client);
    loop {
        if let Some(bytes) = to_server.pop_front() {
            let (next, out) = server.handle(&client_id(), &bytes)?;
            server = next;
            route(out, &mut to_server, &mut to_client);
        } else if let Some(bytes) = to_client.pop_front() {
            let (next, out) = client.handle(&server_id(), &bytes)?;
            client = next;
            route(out, &mut to_server, &mut to_client);
        } else {
            break;
        }
    }
    let client = client.into_output().expect("client finished");
    let server = server.into_output().expect("server finished");
    Ok((client, server))
}

fn run_with_tap(
    seed: u64,
    form: PsiOutputForm,
    x: &[Vec<u8>],
    y: &[Vec<u8>],
    chunk_size: u32,
    tap: &mut dyn FnMut(&OutgoingMessage),
) -> (ClientOutput, ServerOutput) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let s = session(&mut rng, y, form == PsiOutputForm::Labels);
    let server = PsiServer::new(server_config(&s.binding, form), s.set.clone(), s.key.clone(), &mut rng)
        .expect("server session");
    let (client, first) = PsiClient::start(client_config(&s.binding, form, chunk_size), x.to_vec(), &mut rng)
        .expect("client start");
    drive(client, first, server, tap).expect("honest run succeeds")
}

fn run(
    seed: u64,
    form: PsiOutputForm,
    x: &[Vec<u8>],
    y: &[Vec<u8>],
    chunk_size: u32,
) -> (ClientOutput, ServerOutput) {
    run_with_tap(seed, form, x, y, chunk_size, &mut |_| {})
}

/// The plaintext answer, computed independently with hash sets.
fn check_against_plaintext(
    form: PsiOutputForm,
    x: &[Vec<u8>],
    y: &[Vec<u8>],
    client: &ClientOutput,
    server: &ServerOutput,
) {
    let y_set: HashSet<&[u8]> = y.iter().map(Vec::as_slice).collect();
    let x_set: HashSet<&[u8]> = x.iter().map(Vec::as_slice).collect();
    let in_y: Vec<usize> = (0..x.len()).filter(|&i| y_set.contains(x[i].as_slice())).collect();
    let in_x: Vec<usize> = (0..y.len()).filter(|&j| x_set.contains(y[j].as_slice())).collect();

    assert_eq!(client.form, form);
    assert_eq!(client.cardinality, in_y.len() as u64, "{form}: cardinality");
    assert_eq!(client.server_set_size, y.len() as u64);
    assert_eq!(server.client_set_size, x.len() as u64);
    match form {
        PsiOutputForm::Cardinality => assert_eq!(client.intersection, None),
        _ => assert_eq!(client.intersection.as_ref(), Some(&in_y), "{form}: client's intersection"),
    }
    match form {
        PsiOutputForm::Both => assert_eq!(server.intersection.as_ref(), Some(&in_x), "server's intersection"),
        _ => assert_eq!(server.intersection, None, "{form}: the server learns nothing but n"),
    }
    if form == PsiOutputForm::Labels {
        let y_labels: HashMap<&[u8], Vec<u8>> = y.iter().map(Vec::as_slice).zip(labels_for(y)).collect();
        let expected: Vec<(usize, Vec<u8>)> =
            in_y.iter().map(|&i| (i, y_labels[x[i].as_slice()].clone())).collect();
        assert_eq!(client.labels.as_ref(), Some(&expected), "labels of exactly the matches");
    } else {
        assert_eq!(client.labels, None);
    }
    // Both ends hashed the same bytes in the same order.
    assert_eq!(client.transcript_digest, server.transcript_digest, "{form}: transcript digests");
    assert_eq!(client.bytes_sent, server.bytes_received);
    assert_eq!(client.bytes_received, server.bytes_sent);
}

/// Wire encoding: annotated hex and round trips.
mod psi_wire {
    use super::*;

    fn hex_binding() -> (SessionBinding, &'static str) {
        let binding = SessionBinding {
            contract: ContractId::new("xel-psi").expect("valid"),
            epoch: Epoch(3),
            session: SessionId([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
        };
        let hex = concat!(
            "0007",                             // len(contract)
            "78656c2d707369",                   // "xel-psi"
            "0000000000000003",                 // epoch 3
            "000102030405060708090a0b0c0d0e0f", // session id
        );
        (binding, hex)
    }

    #[test]
    fn hello_hex_round_trip() {
        let (binding, binding_hex) = hex_binding();
        let hello = PsiMessage::Hello(Hello {
            binding,
            form: PsiOutputForm::Intersection,
            client_set_size: 1000,
            chunk_size: 4096,
            noise_anchor: None,
        });
        let expected = [
            "01", // wire version
            "81", // kind: Hello
            binding_hex,
            "00",               // form: Intersection
            "00000000000003e8", // n = 1000
            "00001000",         // chunk size 4096
        ]
        .concat();
        assert_eq!(hex::encode(hello.to_bytes()), expected);
        let decoded = PsiMessage::from_bytes(&hex::decode(&expected).expect("hex")).expect("decodes");
        assert_eq!(decoded, hello);
    }

    #[test]
    fn blinded_chunk_hex_round_trip() {
        let (binding, binding_hex) = hex_binding();
        let generator = RISTRETTO_BASEPOINT_POINT;
        let chunk = PsiMessage::BlindedChunk(BlindedChunk {
            binding,
            seq: 1,
            elements: vec![generator.compress().0, (generator + generator).compress().0],
        });
        let expected = [
            "01", // wire version
            "83", // kind: BlindedChunk
            binding_hex,
            "00000001", // seq 1
            "00000002", // 2 elements
            // the ristretto255 generator B (RFC 9496 Appendix A.1)
            "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76",
            // 2·B
            "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919",
        ]
        .concat();
        assert_eq!(hex::encode(chunk.to_bytes()), expected);
        let decoded = PsiMessage::from_bytes(&hex::decode(&expected).expect("hex")).expect("decodes");
        assert_eq!(decoded, chunk);
    }

    /// Every message of a real Labels and a real Both run decodes back to itself.
    #[test]
    fn every_message_of_a_run_round_trips() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (x, y) = sets(&mut rng, 40, 30, 12);
        for form in [PsiOutputForm::Labels, PsiOutputForm::Both] {
            let mut kinds = HashSet::new();
            run_with_tap(2, form, &x, &y, 8, &mut |message| {
                let decoded = PsiMessage::from_bytes(&message.bytes).expect("own message decodes");
                assert_eq!(decoded.kind(), message.kind);
                assert_eq!(decoded.to_bytes(), message.bytes);
                kinds.insert(message.kind);
            });
            assert_eq!(kinds.len(), if form == PsiOutputForm::Both { 7 } else { 6 });
        }
    }
}

/// Every output form against the plaintext answer.
mod psi_forms {
    use super::*;

    #[test]
    fn every_form_gives_the_plaintext_answer() {
        let mut rng = ChaCha20Rng::seed_from_u64(10);
        // (n, m, common, chunk size): partial overlap in many chunks, one chunk, empty and
        // full intersections, a chunk size that divides n exactly, n = 1.
        let cases = [
            (50, 60, 17, 7),
            (50, 60, 17, 4096),
            (40, 40, 0, 6),
            (40, 40, 40, 6),
            (30, 90, 30, 10),
            (64, 20, 20, 16),
            (1, 5, 1, 3),
        ];
        for (case, &(n, m, common, chunk)) in cases.iter().enumerate() {
            let (x, y) = sets(&mut rng, n, m, common);
            for form in ALL_FORMS {
                let (client, server) = run(100 + case as u64, form, &x, &y, chunk);
                check_against_plaintext(form, &x, &y, &client, &server);
            }
        }
    }

    #[test]
    fn empty_server_set_gives_empty_results() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let x = codes(&mut rng, 9);
        for form in ALL_FORMS {
            let (client, server) = run(12, form, &x, &[], 4);
            check_against_plaintext(form, &x, &[], &client, &server);
        }
    }

    #[test]
    fn cardinality_replies_are_shuffled_but_counted_right() {
        let mut rng = ChaCha20Rng::seed_from_u64(20);
        let (x, y) = sets(&mut rng, 64, 64, 23);
        let mut blinded: Vec<ElementBytes> = Vec::new();
        let mut evaluated: Vec<ElementBytes> = Vec::new();
        let mut tap =
            |message: &OutgoingMessage| match PsiMessage::from_bytes(&message.bytes).expect("decodes") {
                PsiMessage::BlindedChunk(chunk) => blinded.extend(chunk.elements),
                PsiMessage::EvaluatedChunk(chunk) => evaluated.extend(chunk.elements),
                _ => {}
            };
        // The same seed as `run_with_tap` uses internally, to rebuild the server's key.
        let (client, server) = run_with_tap(21, PsiOutputForm::Cardinality, &x, &y, 16, &mut tap);
        check_against_plaintext(PsiOutputForm::Cardinality, &x, &y, &client, &server);

        let mut key_rng = ChaCha20Rng::seed_from_u64(21);
        let binding = binding(&mut key_rng);
        let key = server_key(&mut key_rng, &binding);
        let in_order = evaluate_batch(&key, &blinded).expect("evaluates");
        assert_eq!(evaluated.len(), in_order.len());
        assert_ne!(evaluated, in_order, "replies came back in request order");
        let (mut sorted_got, mut sorted_want) = (evaluated.clone(), in_order.clone());
        sorted_got.sort_unstable();
        sorted_want.sort_unstable();
        assert_eq!(sorted_got, sorted_want, "the replies are a permutation of the evaluations");
        let fixed_points = evaluated.iter().zip(&in_order).filter(|(a, b)| a == b).count();
        assert!(fixed_points < 8, "{fixed_points} of 64 replies kept their place");
    }

    #[test]
    fn intersection_replies_keep_request_order() {
        let mut rng = ChaCha20Rng::seed_from_u64(22);
        let (x, y) = sets(&mut rng, 30, 30, 10);
        let mut blinded: Vec<ElementBytes> = Vec::new();
        let mut evaluated: Vec<ElementBytes> = Vec::new();
        let mut tap =
            |message: &OutgoingMessage| match PsiMessage::from_bytes(&message.bytes).expect("decodes") {
                PsiMessage::BlindedChunk(chunk) => blinded.extend(chunk.elements),
                PsiMessage::EvaluatedChunk(chunk) => evaluated.extend(chunk.elements),
                _ => {}
            };
        run_with_tap(23, PsiOutputForm::Intersection, &x, &y, 4, &mut tap);
        let mut key_rng = ChaCha20Rng::seed_from_u64(23);
        let binding = binding(&mut key_rng);
        let key = server_key(&mut key_rng, &binding);
        assert_eq!(evaluated, evaluate_batch(&key, &blinded).expect("evaluates"));
    }

    #[test]
    fn labels_are_encrypted_and_open_only_for_matches() {
        let mut rng = ChaCha20Rng::seed_from_u64(30);
        let (x, y) = sets(&mut rng, 25, 40, 9);
        let plaintexts: HashSet<Vec<u8>> = labels_for(&y).into_iter().collect();
        let mut ciphertexts = 0;
        let mut tap = |message: &OutgoingMessage| {
            if let PsiMessage::TagChunk(chunk) = PsiMessage::from_bytes(&message.bytes).expect("decodes") {
                for ciphertext in chunk.labels.iter() {
                    assert!(!plaintexts.contains(ciphertext), "a label travelled in the clear");
                    ciphertexts += 1;
                }
            }
        };
        let (client, server) = run_with_tap(31, PsiOutputForm::Labels, &x, &y, 8, &mut tap);
        assert_eq!(ciphertexts, y.len(), "one ciphertext per element of Y");
        check_against_plaintext(PsiOutputForm::Labels, &x, &y, &client, &server);
        let labels = client.labels.expect("labels form");
        assert_eq!(labels.len(), 9, "exactly the matches' labels are opened");
    }
}

/// Wide labels make smaller tag chunks: no frame outgrows the limit (issue 12).
#[test]
fn four_kib_labels_fit_in_frames_and_open_for_matches() {
    let mut rng = ChaCha20Rng::seed_from_u64(77);
    let (x, y) = sets(&mut rng, 200, 3000, 50);
    // 4 KiB per label, one width, distinct per element.
    let labels: Vec<Vec<u8>> = y
        .iter()
        .map(|code| {
            let mut label = code.clone();
            label.resize(4096, b'#');
            label
        })
        .collect();
    let binding = binding(&mut rng);
    let key = server_key(&mut rng, &binding);
    let id =
        ServerSetId { contract: binding.contract.clone(), epoch: binding.epoch, dataset: DatasetVersion(1) };
    let set = Arc::new(ServerSet::build_with_labels(&key, id, &y, &labels).expect("server set"));
    let form = PsiOutputForm::Labels;
    let server = PsiServer::new(server_config(&binding, form), set, key, &mut rng).expect("server");
    let (client, first) =
        PsiClient::start(client_config(&binding, form, 8192), x.clone(), &mut rng).expect("client");
    let mut tag_chunks = 0;
    let mut largest = 0;
    let mut tap = |message: &OutgoingMessage| {
        largest = largest.max(message.bytes.len());
        if matches!(PsiMessage::from_bytes(&message.bytes), Ok(PsiMessage::TagChunk(_))) {
            tag_chunks += 1;
        }
    };
    let (client, _) = drive(client, first, server, &mut tap).expect("a 4 KiB-label run succeeds");
    let per_chunk = xmcredit_protocol::psi::tag_chunk_size(8192, 6, 4096) as usize;
    assert!(per_chunk < 3000, "wide labels shrink the tag chunk ({per_chunk})");
    assert_eq!(tag_chunks, 3000usize.div_ceil(per_chunk), "tags of Y in chunks of {per_chunk}");
    assert!(
        largest <= xmcredit_protocol::psi::TAG_CHUNK_BUDGET_BYTES + 4096,
        "largest message {largest} bytes"
    );
    // The matches' labels open to exactly their plaintext.
    let y_index: HashMap<&Vec<u8>, usize> = y.iter().enumerate().map(|(i, c)| (c, i)).collect();
    let opened = client.labels.expect("labels");
    assert_eq!(opened.len(), 50);
    for (index, label) in opened {
        assert_eq!(label, labels[y_index[&x[index]]], "label of element {index}");
    }
}

/// Each refusal, with its own assertion.
mod psi_refusals {
    use super::*;

    /// A client and a server past the handshake, with the client's first blinded chunks
    /// (not yet delivered).
    struct Handshaken {
        client: PsiClient,
        server: PsiServer,
        blinded: Vec<Vec<u8>>,
        binding: SessionBinding,
    }

    fn handshake(seed: u64, form: PsiOutputForm, n: usize, m: usize, chunk_size: u32) -> Handshaken {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (x, y) = sets(&mut rng, n, m, n.min(m) / 2);
        let s = session(&mut rng, &y, form == PsiOutputForm::Labels);
        let server = PsiServer::new(server_config(&s.binding, form), s.set, s.key, &mut rng).expect("server");
        let (client, hello) =
            PsiClient::start(client_config(&s.binding, form, chunk_size), x, &mut rng).expect("start");
        let (server, ack) = server.handle(&client_id(), &hello[0].bytes).expect("hello accepted");
        let (client, blinded) = client.handle(&server_id(), &ack[0].bytes).expect("ack accepted");
        Handshaken {
            client,
            server,
            blinded: blinded.into_iter().map(|m| m.bytes).collect(),
            binding: s.binding,
        }
    }

    fn reencode(bytes: &[u8], edit: impl FnOnce(&mut BlindedChunk)) -> Vec<u8> {
        match PsiMessage::from_bytes(bytes).expect("decodes") {
            PsiMessage::BlindedChunk(mut chunk) => {
                edit(&mut chunk);
                PsiMessage::BlindedChunk(chunk).to_bytes()
            }
            other => panic!("expected a BlindedChunk, got {:?}", other.kind()),
        }
    }

    fn server_refuses(server: PsiServer, bytes: &[u8]) -> ProtocolError {
        server.handle(&client_id(), bytes).expect_err("the server must refuse")
    }

    #[test]
    fn server_refuses_a_client_set_below_the_minimum() {
        let mut rng = ChaCha20Rng::seed_from_u64(40);
        let (x, y) = sets(&mut rng, 5, 50, 2);
        let s = session(&mut rng, &y, false);
        let mut config = server_config(&s.binding, PsiOutputForm::Intersection);
        config.policy.min_client_set_size = 10;
        let server = PsiServer::new(config, s.set, s.key, &mut rng).expect("server");
        let (_, hello) =
            PsiClient::start(client_config(&s.binding, PsiOutputForm::Intersection, 4), x, &mut rng)
                .expect("start");
        let error = server_refuses(server, &hello[0].bytes);
        assert!(matches!(error, ProtocolError::SetTooSmall { whose: "client", got: 5, min: 10 }), "{error}");
    }

    #[test]
    fn server_refuses_a_client_set_above_the_maximum() {
        let mut rng = ChaCha20Rng::seed_from_u64(41);
        let (x, y) = sets(&mut rng, 20, 50, 2);
        let s = session(&mut rng, &y, false);
        let mut config = server_config(&s.binding, PsiOutputForm::Intersection);
        config.policy.max_client_set_size = 19;
        let server = PsiServer::new(config, s.set, s.key, &mut rng).expect("server");
        let (_, hello) =
            PsiClient::start(client_config(&s.binding, PsiOutputForm::Intersection, 4), x, &mut rng)
                .expect("start");
        let error = server_refuses(server, &hello[0].bytes);
        assert!(matches!(error, ProtocolError::SetTooLarge { whose: "client", got: 20, max: 19 }), "{error}");
    }

    #[test]
    fn client_refuses_a_server_set_below_its_minimum() {
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        let (x, y) = sets(&mut rng, 20, 3, 2);
        let s = session(&mut rng, &y, false);
        let server = PsiServer::new(server_config(&s.binding, PsiOutputForm::Both), s.set, s.key, &mut rng)
            .expect("server");
        let mut config = client_config(&s.binding, PsiOutputForm::Both, 4);
        config.policy.min_server_set_size = 100;
        let (client, hello) = PsiClient::start(config, x, &mut rng).expect("start");
        let (_, ack) = server.handle(&client_id(), &hello[0].bytes).expect("hello accepted");
        let error = client.handle(&server_id(), &ack[0].bytes).expect_err("must refuse");
        assert!(matches!(error, ProtocolError::SetTooSmall { whose: "server", got: 3, min: 100 }), "{error}");
    }

    #[test]
    fn server_refuses_a_form_the_contract_does_not_grant() {
        let mut rng = ChaCha20Rng::seed_from_u64(43);
        let (x, y) = sets(&mut rng, 20, 30, 5);
        let s = session(&mut rng, &y, false);
        let server =
            PsiServer::new(server_config(&s.binding, PsiOutputForm::Cardinality), s.set, s.key, &mut rng)
                .expect("server");
        let (_, hello) =
            PsiClient::start(client_config(&s.binding, PsiOutputForm::Intersection, 4), x, &mut rng)
                .expect("start");
        let error = server_refuses(server, &hello[0].bytes);
        assert!(
            matches!(
                error,
                ProtocolError::FormNotAllowed {
                    requested: PsiOutputForm::Intersection,
                    allowed: PsiOutputForm::Cardinality
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_message_of_another_session_is_refused() {
        let mut a = handshake(50, PsiOutputForm::Intersection, 20, 20, 4);
        let b = handshake(51, PsiOutputForm::Intersection, 20, 20, 4);
        assert_ne!(a.binding.session, b.binding.session);
        // Session b's chunk 0 replayed into session a, whose server expects chunk 0.
        let error = server_refuses(a.server, &b.blinded[0]);
        assert!(matches!(error, ProtocolError::WrongBinding { field: "session", .. }), "{error}");
        // The same bytes with a's session but another epoch.
        let other_epoch = reencode(&a.blinded.remove(0), |chunk| chunk.binding.epoch = Epoch(8));
        let error =
            server_refuses(handshake(50, PsiOutputForm::Intersection, 20, 20, 4).server, &other_epoch);
        assert!(matches!(error, ProtocolError::WrongBinding { field: "epoch", .. }), "{error}");
    }

    #[test]
    fn a_replayed_chunk_is_refused() {
        let h = handshake(52, PsiOutputForm::Intersection, 20, 20, 4);
        let (server, _) = h.server.handle(&client_id(), &h.blinded[0]).expect("chunk 0 accepted");
        let error = server_refuses(server, &h.blinded[0]);
        assert!(matches!(error, ProtocolError::ChunkOutOfOrder { expected: 1, got: 0, .. }), "{error}");
    }

    #[test]
    fn an_out_of_order_chunk_is_refused() {
        let h = handshake(53, PsiOutputForm::Intersection, 20, 20, 4);
        let error = server_refuses(h.server, &h.blinded[1]);
        assert!(matches!(error, ProtocolError::ChunkOutOfOrder { expected: 0, got: 1, .. }), "{error}");
    }

    #[test]
    fn more_elements_than_declared_are_refused() {
        // n = 10 in chunks of 4: the last chunk (seq 2) must hold 2.
        let h = handshake(54, PsiOutputForm::Cardinality, 10, 20, 4);
        assert_eq!(h.blinded.len(), 3, "the cardinality form sends every chunk at once");
        let (server, _) = h.server.handle(&client_id(), &h.blinded[0]).expect("chunk 0");
        let (server, _) = server.handle(&client_id(), &h.blinded[1]).expect("chunk 1");
        let padded = reencode(&h.blinded[2], |chunk| {
            let extra = chunk.elements[0];
            chunk.elements.push(extra);
            chunk.elements.push(extra);
            chunk.elements.push(extra);
        });
        let error = server_refuses(server, &padded);
        assert!(matches!(error, ProtocolError::TooManyElements { declared: 10, got: 13, .. }), "{error}");
    }

    #[test]
    fn a_short_chunk_is_refused() {
        let h = handshake(55, PsiOutputForm::Intersection, 10, 20, 4);
        let short = reencode(&h.blinded[0], |chunk| {
            chunk.elements.pop();
        });
        let error = server_refuses(h.server, &short);
        assert!(matches!(error, ProtocolError::ChunkLength { seq: 0, expected: 4, got: 3, .. }), "{error}");
    }

    #[test]
    fn the_identity_point_is_refused_with_its_index() {
        let h = handshake(56, PsiOutputForm::Intersection, 20, 20, 4);
        let (server, _) = h.server.handle(&client_id(), &h.blinded[0]).expect("chunk 0");
        let with_identity = reencode(&h.blinded[1], |chunk| chunk.elements[2] = [0u8; 32]);
        let error = server_refuses(server, &with_identity);
        assert!(
            matches!(
                error,
                ProtocolError::InvalidElement(BatchElementError {
                    index: 6,
                    source: CryptoError::IdentityElement
                })
            ),
            "{error}"
        );
    }

    #[test]
    fn a_non_canonical_point_is_refused_with_its_index() {
        let h = handshake(57, PsiOutputForm::Intersection, 20, 20, 4);
        // 2^255 - 1 is not a reduced field element (RFC 9496 §4.3.1).
        let mut non_canonical = [0xffu8; 32];
        non_canonical[31] = 0x7f;
        let bad = reencode(&h.blinded[0], |chunk| chunk.elements[3] = non_canonical);
        let error = server_refuses(h.server, &bad);
        assert!(
            matches!(
                error,
                ProtocolError::InvalidElement(BatchElementError {
                    index: 3,
                    source: CryptoError::NonCanonicalElement
                })
            ),
            "{error}"
        );
    }

    #[test]
    fn the_client_refuses_an_identity_point_in_a_reply() {
        let h = handshake(58, PsiOutputForm::Intersection, 8, 8, 4);
        let (_, out) = h.server.handle(&client_id(), &h.blinded[0]).expect("chunk 0");
        let reply = match PsiMessage::from_bytes(&out[0].bytes).expect("decodes") {
            PsiMessage::EvaluatedChunk(mut chunk) => {
                chunk.elements[1] = [0u8; 32];
                PsiMessage::EvaluatedChunk(chunk).to_bytes()
            }
            other => panic!("expected an EvaluatedChunk, got {:?}", other.kind()),
        };
        let error = h.client.handle(&server_id(), &reply).expect_err("must refuse");
        assert!(
            matches!(
                error,
                ProtocolError::InvalidElement(BatchElementError {
                    index: 1,
                    source: CryptoError::IdentityElement
                })
            ),
            "{error}"
        );
    }

    #[test]
    fn truncated_messages_are_malformed() {
        let h = handshake(59, PsiOutputForm::Intersection, 8, 8, 4);
        let mut rng = ChaCha20Rng::seed_from_u64(59);
        let hello = PsiMessage::Hello(Hello {
            binding: binding(&mut rng),
            form: PsiOutputForm::Both,
            client_set_size: 8,
            chunk_size: 4,
            noise_anchor: None,
        })
        .to_bytes();
        for message in [&hello, &h.blinded[0]] {
            for len in 0..message.len() {
                let error = PsiMessage::from_bytes(&message[..len]).expect_err("a truncated message decodes");
                assert!(matches!(error, ProtocolError::Malformed { .. }), "length {len}: {error}");
            }
        }
        // Through the state machine too.
        let error = server_refuses(h.server, &h.blinded[0][..h.blinded[0].len() - 1]);
        assert!(matches!(error, ProtocolError::Malformed { what: "PSI BlindedChunk", .. }), "{error}");
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let h = handshake(60, PsiOutputForm::Intersection, 8, 8, 4);
        let mut long = h.blinded[0].clone();
        long.push(0);
        let error = server_refuses(h.server, &long);
        assert!(
            matches!(&error, ProtocolError::Malformed { what: "PSI BlindedChunk", reason } if reason.contains("trailing")),
            "{error}"
        );
    }

    #[test]
    fn counts_over_the_chunk_limit_are_malformed() {
        let h = handshake(61, PsiOutputForm::Intersection, 8, 8, 4);
        let mut bytes = h.blinded[0].clone();
        // The count field sits 4 bytes (seq) after the binding; find it from the end.
        let count_at = bytes.len() - 4 * 32 - 4;
        bytes[count_at..count_at + 4].copy_from_slice(&(MAX_CHUNK_ELEMENTS as u32 + 1).to_be_bytes());
        let error = PsiMessage::from_bytes(&bytes).expect_err("over the limit");
        assert!(
            matches!(&error, ProtocolError::Malformed { reason, .. } if reason.contains("exceeds")),
            "{error}"
        );
        // A count within the limit but larger than the bytes present.
        bytes[count_at..count_at + 4].copy_from_slice(&5u32.to_be_bytes());
        let error = PsiMessage::from_bytes(&bytes).expect_err("count past the end");
        assert!(
            matches!(&error, ProtocolError::Malformed { reason, .. } if reason.contains("truncated")),
            "{error}"
        );
    }

    #[test]
    fn unknown_versions_and_kinds_are_malformed() {
        let h = handshake(62, PsiOutputForm::Intersection, 8, 8, 4);
        let mut bytes = h.blinded[0].clone();
        bytes[0] = 2;
        assert!(matches!(PsiMessage::from_bytes(&bytes), Err(ProtocolError::Malformed { .. })));
        bytes[0] = 1;
        bytes[1] = 0x01; // a secure-aggregation kind
        assert!(matches!(PsiMessage::from_bytes(&bytes), Err(ProtocolError::Malformed { .. })));
    }

    #[test]
    fn a_message_from_an_unexpected_sender_is_refused() {
        let h = handshake(63, PsiOutputForm::Intersection, 8, 8, 4);
        let intruder = NodeId::new("bank-xiamen-2").expect("valid");
        let error = h.server.handle(&intruder, &h.blinded[0]).expect_err("must refuse");
        assert!(matches!(&error, ProtocolError::UnexpectedSender { got, .. } if *got == intruder), "{error}");
        let error = h.client.handle(&intruder, &h.blinded[0]).expect_err("must refuse");
        assert!(matches!(&error, ProtocolError::UnexpectedSender { got, .. } if *got == intruder), "{error}");
    }

    #[test]
    fn a_message_that_does_not_fit_the_state_is_refused() {
        let h = handshake(64, PsiOutputForm::Intersection, 8, 8, 4);
        // The client receives its own kind of message (a BlindedChunk) instead of a reply.
        let error = h.client.handle(&server_id(), &h.blinded[0]).expect_err("must refuse");
        assert!(matches!(error, ProtocolError::UnexpectedMessage { got: "PSI BlindedChunk", .. }), "{error}");
    }

    #[test]
    fn the_client_refuses_tags_shorter_than_the_set_sizes_require() {
        let mut rng = ChaCha20Rng::seed_from_u64(65);
        let (x, y) = sets(&mut rng, 20, 30, 5);
        let s = session(&mut rng, &y, false);
        let server =
            PsiServer::new(server_config(&s.binding, PsiOutputForm::Intersection), s.set, s.key, &mut rng)
                .expect("server");
        let (client, hello) =
            PsiClient::start(client_config(&s.binding, PsiOutputForm::Intersection, 4), x, &mut rng)
                .expect("start");
        let (_, ack) = server.handle(&client_id(), &hello[0].bytes).expect("hello accepted");
        let short = match PsiMessage::from_bytes(&ack[0].bytes).expect("decodes") {
            PsiMessage::HelloAck(mut ack) => {
                ack.tag_bits = 40;
                PsiMessage::HelloAck(ack).to_bytes()
            }
            other => panic!("expected a HelloAck, got {:?}", other.kind()),
        };
        let error = client.handle(&server_id(), &short).expect_err("must refuse");
        assert!(matches!(error, ProtocolError::TagLengthMismatch { got_bits: 40, .. }), "{error}");
    }

    #[test]
    fn duplicate_elements_are_refused_before_anything_is_sent() {
        let mut rng = ChaCha20Rng::seed_from_u64(66);
        let y = codes(&mut rng, 5);
        let s = session(&mut rng, &y, false);
        let mut x = codes(&mut rng, 6);
        x.push(x[2].clone());
        let error = PsiClient::start(client_config(&s.binding, PsiOutputForm::Intersection, 4), x, &mut rng)
            .expect_err("duplicate in X");
        assert!(
            matches!(error, ProtocolError::DuplicateElement { whose: "client", first: 2, second: 6 }),
            "{error}"
        );

        let mut y = codes(&mut rng, 4);
        y.insert(0, y[3].clone());
        let id = ServerSetId {
            contract: s.binding.contract.clone(),
            epoch: s.binding.epoch,
            dataset: DatasetVersion(2),
        };
        let error = ServerSet::build(&s.key, id, &y).expect_err("duplicate in Y");
        assert!(
            matches!(error, ProtocolError::DuplicateElement { whose: "server", first: 0, second: 4 }),
            "{error}"
        );
    }

    #[test]
    fn a_server_set_of_another_epoch_or_key_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(67);
        let y = codes(&mut rng, 10);
        let s = session(&mut rng, &y, false);
        let mut next_epoch = s.binding.clone();
        next_epoch.epoch = Epoch(s.binding.epoch.0 + 1);
        let error = PsiServer::new(
            server_config(&next_epoch, PsiOutputForm::Intersection),
            s.set.clone(),
            s.key.clone(),
            &mut rng,
        )
        .expect_err("set of another epoch");
        assert!(matches!(error, ProtocolError::ServerSetMismatch { .. }), "{error}");
        let other_key = server_key(&mut rng, &s.binding);
        let error = PsiServer::new(
            server_config(&s.binding, PsiOutputForm::Intersection),
            s.set.clone(),
            other_key,
            &mut rng,
        )
        .expect_err("set of another key");
        assert!(matches!(error, ProtocolError::ServerSetMismatch { .. }), "{error}");
        let error = PsiServer::new(server_config(&s.binding, PsiOutputForm::Labels), s.set, s.key, &mut rng)
            .expect_err("labels form without labels");
        assert!(matches!(error, ProtocolError::ServerSetMismatch { .. }), "{error}");
    }

    #[test]
    fn labels_of_different_lengths_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(68);
        let y = codes(&mut rng, 3);
        let s = session(&mut rng, &y, false);
        let id = ServerSetId {
            contract: s.binding.contract.clone(),
            epoch: s.binding.epoch,
            dataset: DatasetVersion(3),
        };
        let labels = vec![b"A".to_vec(), b"B".to_vec(), b"CC".to_vec()];
        let error = ServerSet::build_with_labels(&s.key, id, &y, &labels).expect_err("ragged labels");
        assert!(matches!(error, ProtocolError::InvalidLabels { .. }), "{error}");
    }

    #[test]
    fn a_finished_session_refuses_further_messages() {
        let mut rng = ChaCha20Rng::seed_from_u64(69);
        let (x, y) = sets(&mut rng, 6, 6, 3);
        let s = session(&mut rng, &y, false);
        let form = PsiOutputForm::Intersection;
        let server = PsiServer::new(server_config(&s.binding, form), s.set, s.key, &mut rng).expect("server");
        let (client, hello) =
            PsiClient::start(client_config(&s.binding, form, 8), x, &mut rng).expect("start");
        let (server, ack) = server.handle(&client_id(), &hello[0].bytes).expect("hello");
        let (_client, blinded) = client.handle(&server_id(), &ack[0].bytes).expect("ack");
        let (server, _) = server.handle(&client_id(), &blinded[0].bytes).expect("last chunk");
        assert!(server.is_done());
        let error = server_refuses(server, &blinded[0].bytes);
        assert!(matches!(error, ProtocolError::UnexpectedMessage { state: "server done", .. }), "{error}");
    }
}

/// A run of 2^14 elements per side.
mod psi_scale {
    use super::*;

    #[test]
    fn sixteen_thousand_elements() {
        let n = 1 << 14;
        let mut rng = ChaCha20Rng::seed_from_u64(70);
        let (x, y) = sets(&mut rng, n, n, n / 3);
        for form in [PsiOutputForm::Intersection, PsiOutputForm::Cardinality] {
            let started = Instant::now();
            let mut bytes = 0usize;
            let (client, server) = run_with_tap(71, form, &x, &y, 4096, &mut |m| bytes += m.bytes.len());
            check_against_plaintext(form, &x, &y, &client, &server);
            eprintln!(
                "PSI {form}, n = m = {n}: {:?} (server set build included), {bytes} bytes on the wire",
                started.elapsed()
            );
        }
    }
}
