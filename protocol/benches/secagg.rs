//! Secure aggregation cost per round, in process, against its cryptographic floor.
//!
//! `cargo bench -p xmcredit-protocol --bench secagg [-- n=10 len=20]`
//!
//! For each (n contributors, vector length L) it runs one session without dropouts,
//! every message through its byte encoding, and reports per round (the paper's 0, 1,
//! 2, 4): wall seconds summed over all participants (contributors and coordinator,
//! encode and decode included), and bytes each contributor sends in the round and
//! receives at its close (key list, share relay, unmask request). The
//! floor is the work no implementation can skip, timed raw in the same run:
//! n × n × L mask elements (n - 1 pairwise masks and one self-mask per contributor)
//! plus n × (n - 1) × 2 key agreements (one share key and one mask seed per pair and
//! end). Single-threaded: nothing here uses rayon.

use std::time::{Duration, Instant};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use xmcredit_crypto::dh::DhSecret;
use xmcredit_crypto::prg::{apply_masks, MaskSign, Seed};
use xmcredit_crypto::sign::IdentityKey;
use xmcredit_crypto::{ContractId, Epoch, NodeId, SessionId};
use xmcredit_protocol::secagg::{
    AdvertiseKeys, AwaitingKeyList, CollectingKeys, EncryptedShares, KeyList, MaskedInput, Roster, Setup,
    ShareRelay, UnmaskRequest, UnmaskResponse, VectorSpec,
};
use xmcredit_protocol::SessionBinding;

const ROUNDS: [&str; 4] = ["0 AdvertiseKeys", "1 ShareKeys", "2 MaskedInput", "4 Unmasking"];

#[derive(Default, Clone, Copy)]
struct RoundCost {
    wall: Duration,
    up: usize,
    down: usize,
}

fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    *acc += start.elapsed();
    out
}

fn session(n: usize, len: usize, rng: &mut ChaCha20Rng) -> [RoundCost; 4] {
    let bits = 32;
    let binding = SessionBinding {
        contract: ContractId::new("bench-secagg").expect("valid"),
        epoch: Epoch(1),
        session: SessionId::random(rng),
    };
    let ids: Vec<NodeId> = (1..=n).map(|i| NodeId::new(format!("bank-{i}")).expect("valid")).collect();
    let identities: Vec<IdentityKey> = (0..n).map(|_| IdentityKey::generate(rng)).collect();
    let coordinator_id = NodeId::new("credit-center").expect("valid");
    let parties = ids.iter().cloned().zip(identities.iter().map(IdentityKey::public_key)).collect();
    let roster = Roster::new(parties, (2 * n).div_ceil(3).max(2), coordinator_id.clone()).expect("roster");
    let setup = Setup::new(binding, roster, VectorSpec { len, bits }).expect("setup");
    let inputs: Vec<Vec<u64>> =
        (0..n).map(|i| (0..len as u64).map(|j| (j * 31 + i as u64) & 0xffff_ffff).collect()).collect();
    let mut cost = [RoundCost::default(); 4];

    // Round 0.
    let mut coordinator = CollectingKeys::new(setup.clone());
    let mut states = Vec::with_capacity(n);
    for (i, input) in inputs.iter().enumerate() {
        let c = &mut cost[0];
        // The copy is the bench's, not the protocol's: made outside the timer.
        let (setup, input) = (setup.clone(), input.clone());
        let (state, bytes) = timed(&mut c.wall, || {
            let (state, message) =
                AwaitingKeyList::start(setup, ids[i].clone(), &identities[i], input, rng).expect("start");
            (state, message.to_bytes())
        });
        c.up += bytes.len();
        timed(&mut c.wall, || {
            coordinator.receive(&ids[i], AdvertiseKeys::from_bytes(&bytes).expect("decode"))
        })
        .expect("receive");
        states.push(state);
    }
    let (mut coordinator, key_list) = timed(&mut cost[0].wall, || {
        let (next, broadcast) = coordinator.close_round().expect("close 0");
        (next, broadcast.message.to_bytes())
    });
    cost[0].down += key_list.len() * n;

    // Round 1.
    let mut next_states = Vec::with_capacity(n);
    for (i, state) in states.into_iter().enumerate() {
        let c = &mut cost[1];
        let (state, bytes) = timed(&mut c.wall, || {
            let list = KeyList::from_bytes(&key_list).expect("decode");
            let (state, message) = state.handle(&coordinator_id, list, rng).expect("round 1");
            (state, message.to_bytes())
        });
        c.up += bytes.len();
        timed(&mut c.wall, || {
            coordinator.receive(&ids[i], EncryptedShares::from_bytes(&bytes).expect("decode"))
        })
        .expect("receive");
        next_states.push(state);
    }
    let (mut coordinator, relays) = timed(&mut cost[1].wall, || {
        let (next, relays) = coordinator.close_round().expect("close 1");
        (next, relays.into_iter().map(|r| r.message.to_bytes()).collect::<Vec<_>>())
    });
    cost[1].down += relays.iter().map(Vec::len).sum::<usize>();

    // Round 2.
    let mut last_states = Vec::with_capacity(n);
    for (i, state) in next_states.into_iter().enumerate() {
        let c = &mut cost[2];
        let (state, bytes) = timed(&mut c.wall, || {
            let relay = ShareRelay::from_bytes(&relays[i]).expect("decode");
            let (state, message) = state.handle(&coordinator_id, relay).expect("round 2");
            (state, message.to_bytes())
        });
        c.up += bytes.len();
        timed(&mut c.wall, || coordinator.receive(&ids[i], MaskedInput::from_bytes(&bytes).expect("decode")))
            .expect("receive");
        last_states.push(state);
    }
    let (mut coordinator, request) = timed(&mut cost[2].wall, || {
        let (next, broadcast) = coordinator.close_round().expect("close 2");
        (next, broadcast.message.to_bytes())
    });
    // Figure 4 puts the request in round 2's server step, like the key list in round 0's.
    cost[2].down += request.len() * n;

    // Round 4.
    for (i, state) in last_states.into_iter().enumerate() {
        let c = &mut cost[3];
        let bytes = timed(&mut c.wall, || {
            let request = UnmaskRequest::from_bytes(&request).expect("decode");
            state.handle(&coordinator_id, request).expect("round 4").to_bytes()
        });
        c.up += bytes.len();
        timed(&mut c.wall, || {
            coordinator.receive(&ids[i], UnmaskResponse::from_bytes(&bytes).expect("decode"))
        })
        .expect("receive");
    }
    let aggregate = timed(&mut cost[3].wall, || coordinator.close_round().expect("close 4"));

    // The run is only a measurement if it is right.
    for (j, value) in aggregate.sum.iter().enumerate() {
        let expected: u64 = inputs.iter().map(|x| x[j]).sum();
        assert_eq!(*value, expected, "element {j}");
    }
    for c in &mut cost {
        c.up /= n;
        c.down /= n;
    }
    cost
}

/// The floor: n·n·L mask elements and n·(n-1)·2 key agreements, timed raw.
fn floor(n: usize, len: usize, rng: &mut ChaCha20Rng) -> (Duration, Duration) {
    let mut values = vec![0u64; len];
    let seed = Seed([7; 32]);
    let start = Instant::now();
    for _ in 0..n * n {
        apply_masks(&seed, 0, &mut values, MaskSign::Add);
    }
    let prg = start.elapsed();
    std::hint::black_box(&values);

    let secret = DhSecret::generate(rng);
    let peer = DhSecret::generate(rng).public();
    let start = Instant::now();
    for i in 0..n * (n - 1) * 2 {
        std::hint::black_box(secret.agree(&peer, &(i as u64).to_be_bytes()));
    }
    (prg, start.elapsed())
}

fn human(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.2} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn main() {
    // Optional filters: `n=10`, `len=20` (log2 of L). Cargo passes `--bench`; ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter =
        |key: &str| args.iter().find_map(|a| a.strip_prefix(key).and_then(|v| v.parse::<usize>().ok()));
    let (only_n, only_log) = (filter("n="), filter("len="));
    let mut rng = ChaCha20Rng::seed_from_u64(2017);

    println!("secure aggregation, one session per row, no dropouts, t = ceil(2n/3), 32-bit elements");
    println!("wall = seconds summed over all participants (in process); up/down = bytes per contributor\n");
    println!("{:>3} {:>7} {:<16} {:>10} {:>11} {:>11}", "n", "L", "round", "wall s", "up/node", "down/node");
    let mut summary = Vec::new();
    for log_len in [10u32, 20] {
        for n in [3usize, 10, 20] {
            if only_n.is_some_and(|m| m != n) || only_log.is_some_and(|l| l != log_len as usize) {
                continue;
            }
            let len = 1usize << log_len;
            // Small vectors run in milliseconds: average several sessions.
            let reps = if log_len <= 12 { 5 } else { 1 };
            let mut total = [RoundCost::default(); 4];
            for _ in 0..reps {
                for (acc, c) in total.iter_mut().zip(session(n, len, &mut rng)) {
                    acc.wall += c.wall / reps;
                    acc.up = c.up;
                    acc.down = c.down;
                }
            }
            for (name, c) in ROUNDS.iter().zip(&total) {
                println!(
                    "{n:>3} {:>7} {name:<16} {:>10.4} {:>11} {:>11}",
                    format!("2^{log_len}"),
                    c.wall.as_secs_f64(),
                    human(c.up),
                    human(c.down)
                );
            }
            let wall: Duration = total.iter().map(|c| c.wall).sum();
            let (prg, agree) = floor(n, len, &mut rng);
            summary.push((n, log_len, wall, prg, agree));
        }
    }
    println!(
        "\n{:>3} {:>7} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "n", "L", "total s", "PRG s", "DH s", "floor s", "ratio"
    );
    for (n, log_len, wall, prg, agree) in summary {
        let floor = prg + agree;
        println!(
            "{n:>3} {:>7} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>7.2}",
            format!("2^{log_len}"),
            wall.as_secs_f64(),
            prg.as_secs_f64(),
            agree.as_secs_f64(),
            floor.as_secs_f64(),
            wall.as_secs_f64() / floor.as_secs_f64()
        );
    }
}
