//! Overthreshold (duplicate detection) in process, against its cryptographic floor.
//!
//! `cargo bench -p xmcredit-protocol --bench overthreshold [-- banks=5 log=12 committee=3]`
//!
//! One session of `banks` contributors with `2^log` items each (half of each bank's items
//! shared with the next bank), a committee of `committee`, every message through its
//! byte encoding. Reports wall seconds summed over all participants by role, bytes on
//! the wire, and the ratio to the floor: per item, hash-to-group, blind (mul + batched
//! compress), one evaluation per member (decompress + mul + batched compress), the
//! contributor's decoding of each reply, the unblind (mul + batched compress) and the
//! tag, each timed raw with `crypto::floor` in the same run on one thread. Batches above
//! 256 elements run on rayon, so the ratio is also given against the floor divided by
//! the available cores.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use xmcredit_crypto::floor::{FloorCosts, FloorOp, FloorWorkload};
use xmcredit_crypto::keys::{KeyPurpose, MasterSecret};
use xmcredit_crypto::{ContractId, Epoch, NodeId, SessionId};
use xmcredit_protocol::overthreshold::{
    CommitteeMember, ContributorConfig, CoordinatorCollecting, CoordinatorConfig, MemberConfig, MemberPolicy,
    OutgoingMessage, OverthresholdContributor, Parameters,
};
use xmcredit_protocol::SessionBinding;

#[derive(Default)]
struct Cost {
    contributors: Duration,
    members: Duration,
    coordinator: Duration,
    bytes: usize,
}

fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    *acc += start.elapsed();
    out
}

fn node(name: String) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

fn session(banks: usize, per_bank: usize, committee: usize, rng: &mut ChaCha20Rng) -> Cost {
    let binding = SessionBinding {
        contract: ContractId::new("bench-overthreshold").expect("valid"),
        epoch: Epoch(1),
        session: SessionId::random(rng),
    };
    let bank_ids: Vec<NodeId> = (1..=banks).map(|i| node(format!("bank-{i}"))).collect();
    let member_ids: Vec<NodeId> = (1..=committee).map(|i| node(format!("committee-{i}"))).collect();
    let coordinator_id = node("credit-center".into());
    let params =
        Parameters::new(coordinator_id.clone(), member_ids.clone(), bank_ids.clone(), 2, 2, per_bank as u64)
            .expect("parameters");
    // Bank b holds items b·n/2 .. b·n/2 + n: half shared with each neighbour.
    let sets: Vec<Vec<Vec<u8>>> = (0..banks)
        .map(|b| {
            (b * per_bank / 2..b * per_bank / 2 + per_bank)
                .map(|i| format!("INV-{i:012}").into_bytes())
                .collect()
        })
        .collect();
    let mut cost = Cost::default();

    let (mut coordinator, announces) = timed(&mut cost.coordinator, || {
        CoordinatorCollecting::new(CoordinatorConfig {
            binding: binding.clone(),
            parameters: params.clone(),
            chunk_size: 4096,
        })
        .expect("coordinator")
    });
    let mut contributors: BTreeMap<NodeId, OverthresholdContributor> = BTreeMap::new();
    let mut members: HashMap<(NodeId, NodeId), CommitteeMember> = HashMap::new();
    let keys: Vec<_> = member_ids
        .iter()
        .map(|_| {
            MasterSecret::generate(rng)
                .derive_oprf_key(&binding.contract, binding.epoch, KeyPurpose::OverthresholdCommittee)
                .expect("key")
        })
        .collect();
    for (b, me) in bank_ids.iter().enumerate() {
        let config = ContributorConfig {
            binding: binding.clone(),
            me: me.clone(),
            parameters: params.clone(),
            chunk_size: 1024,
        };
        let items = sets[b].clone();
        let state = timed(&mut cost.contributors, || {
            OverthresholdContributor::new(config, items, rng).expect("contributor")
        });
        contributors.insert(me.clone(), state);
        for (m, key) in member_ids.iter().zip(&keys) {
            let policy = MemberPolicy {
                min_set_size: 1,
                max_set_size: per_bank as u64,
                remaining_quota: per_bank as u64,
            };
            let config = MemberConfig { binding: binding.clone(), contributor: me.clone(), policy };
            members.insert((m.clone(), me.clone()), CommitteeMember::new(config, key.clone()));
        }
    }
    let mut queue: VecDeque<(NodeId, OutgoingMessage)> =
        announces.into_iter().map(|m| (coordinator_id.clone(), m)).collect();
    let mut closed = false;
    while let Some((from, message)) = queue.pop_front() {
        cost.bytes += message.bytes.len();
        let to = message.to.clone();
        let out = if to == coordinator_id {
            timed(&mut cost.coordinator, || coordinator.receive(&from, &message.bytes)).expect("receive");
            if coordinator.is_complete() && !closed {
                closed = true;
                let (fresh, _) = CoordinatorCollecting::new(CoordinatorConfig {
                    binding: binding.clone(),
                    parameters: params.clone(),
                    chunk_size: 4096,
                })
                .expect("placeholder");
                let done = std::mem::replace(&mut coordinator, fresh);
                let (output, out) = timed(&mut cost.coordinator, || done.close()).expect("close");
                // Neighbours share half their sets: banks - 1 overlaps of n/2 items.
                assert_eq!(output.histogram.get(&2).copied(), Some(((banks - 1) * per_bank / 2) as u64));
                out
            } else {
                Vec::new()
            }
        } else if let Some(state) = contributors.remove(&to) {
            let (next, out) =
                timed(&mut cost.contributors, || state.handle(&from, &message.bytes)).expect("contributor");
            contributors.insert(to.clone(), next);
            out
        } else {
            let key = (to.clone(), from.clone());
            let state = members.remove(&key).expect("member");
            let (next, out) =
                timed(&mut cost.members, || state.handle(&from, &message.bytes)).expect("member");
            members.insert(key, next);
            out
        };
        queue.extend(out.into_iter().map(|m| (to.clone(), m)));
    }
    // The run is only a measurement if it is right: the middle banks match n items
    // (half with each neighbour), the end banks n/2.
    for (b, state) in contributors.into_values().enumerate() {
        let output = state.into_output().expect("finished");
        let expected = if b == 0 || b == banks - 1 { per_bank / 2 } else { per_bank };
        assert_eq!(output.matches.len(), expected, "bank {b}");
    }
    cost
}

fn floor_costs(rng: &mut ChaCha20Rng) -> FloorCosts {
    let workload = FloorWorkload::new(4096, rng);
    let mut costs = FloorCosts::default();
    for op in FloorOp::ALL {
        let start = Instant::now();
        std::hint::black_box(workload.run(op));
        costs.set(op, start.elapsed().as_secs_f64() / workload.len() as f64);
    }
    costs
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |key: &str, default: usize| {
        args.iter().find_map(|a| a.strip_prefix(key).and_then(|v| v.parse::<usize>().ok())).unwrap_or(default)
    };
    let (banks, log, committee) = (arg("banks=", 5), arg("log=", 12), arg("committee=", 3));
    let per_bank = 1usize << log;
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    // One warm-up session (rayon's pool, allocator), then the measured one.
    session(banks, per_bank.min(512), committee, &mut rng);
    let cost = session(banks, per_bank, committee, &mut rng);
    let floor = floor_costs(&mut rng);
    let items = (banks * per_bank) as u64;
    let floor_cpu = floor.overthreshold_cpu_seconds(items, committee as u64);
    let total = (cost.contributors + cost.members + cost.coordinator).as_secs_f64();

    println!(
        "overthreshold: {banks} banks × 2^{log} items, committee of {committee}, one session, in process"
    );
    println!("wall seconds summed over participants (rayon on {cores} cores inside batches)\n");
    println!("{:<14} {:>10}", "role", "wall s");
    println!("{:<14} {:>10.4}", "contributors", cost.contributors.as_secs_f64());
    println!("{:<14} {:>10.4}", "committee", cost.members.as_secs_f64());
    println!("{:<14} {:>10.4}", "coordinator", cost.coordinator.as_secs_f64());
    println!("{:<14} {:>10.4}", "total", total);
    println!(
        "\nbytes on the wire: {:.2} MiB ({:.0} B per item)",
        cost.bytes as f64 / (1 << 20) as f64,
        cost.bytes as f64 / items as f64
    );
    println!(
        "floor (1 thread): {:.4} s = {items} items × (H + blind + {committee} × evaluate + {committee} × decode + unblind + tag)",
        floor_cpu
    );
    println!(
        "ratio total / floor: {:.2}   (against the floor on {cores} cores: {:.2})",
        total / floor_cpu,
        total / (floor_cpu / cores as f64)
    );
}
