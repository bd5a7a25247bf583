//! Lookup provider preparation against its cryptographic floor, in process.
//!
//! `cargo bench -p xmcredit-protocol --bench lookup [-- log=16]`
//!
//! Times `prepare_contribution` over a universe of 2^log entries (default 2^16: the
//! padded vector a provider publishes each epoch) on all rayon threads, and the floor
//! from the raw per-entry operations timed on one thread in the same run
//! (`crypto::floor`): one HashToGroup, one scalar multiplication, one batched
//! compression and one SHA-512 per entry, divided by the thread count. Then one query
//! session of 1000 lookups and the unpadding. Runs in a few seconds.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use xmcredit_crypto::floor::{FloorCosts, FloorOp, FloorWorkload};
use xmcredit_crypto::oprf::OprfKey;
use xmcredit_crypto::{ContractId, Epoch, NodeId, SessionId};
use xmcredit_protocol::lookup::{
    prepare_contribution, LookupProvider, LookupQuery, ProviderConfig, ProviderPolicy, QuerierConfig,
    Universe, VectorHeader, Width,
};
use xmcredit_protocol::SessionBinding;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let log =
        args.iter().find_map(|a| a.strip_prefix("log=").and_then(|v| v.parse::<u32>().ok())).unwrap_or(16);
    let m = 1usize << log;
    let threads = rayon::current_num_threads();
    let mut rng = ChaCha20Rng::seed_from_u64(9497);

    let entries: Vec<Vec<u8>> = (0..m).map(|i| format!("91350200{i:010}").into_bytes()).collect();
    let universe = Arc::new(Universe::new(entries).expect("sorted universe"));
    let contract = ContractId::new("bench-lookup").expect("valid");
    let header = VectorHeader::new(contract.clone(), Epoch(1), &universe, Width::new(32).expect("width"));
    let key = OprfKey::random(&mut rng);
    let values: Vec<u64> = (0..m as u64).map(|i| i % 1000).collect();

    let start = Instant::now();
    let vector = prepare_contribution(&key, &header, &universe, &values).expect("contribution");
    let prepare = start.elapsed().as_secs_f64();
    assert_eq!(vector.len(), m);

    // The floor, from one-thread per-entry costs on a smaller workload.
    let floor_n = m.min(1 << 13);
    let workload = FloorWorkload::new(floor_n, &mut rng);
    let mut costs = FloorCosts::default();
    for op in [FloorOp::HashToGroup, FloorOp::ScalarMul, FloorOp::CompressBatched, FloorOp::Tag] {
        let start = Instant::now();
        std::hint::black_box(workload.run(op));
        costs.set(op, start.elapsed().as_secs_f64() / floor_n as f64);
    }
    let floor = costs.lookup_provider_cpu_seconds(m as u64) / threads as f64;

    println!("lookup provider preparation, 2^{log} = {m} entries, {threads} threads");
    println!("{:<34} {:>10} {:>12}", "", "seconds", "µs/entry");
    println!("{:<34} {:>10.4} {:>12.3}", "prepare_contribution", prepare, prepare * 1e6 / m as f64);
    println!(
        "{:<34} {:>10.4} {:>12.3}",
        "floor (H + mul + compress + SHA-512)",
        floor,
        floor * 1e6 / m as f64
    );
    println!("{:<34} {:>10.2}", "ratio", prepare / floor);

    // One query session: 1000 lookups in chunks of 256, one provider.
    let n = 1000.min(m);
    let applicants: Vec<Vec<u8>> = universe.entries()[..n].to_vec();
    let provider_id = NodeId::new("credit-center").expect("valid");
    let querier_id = NodeId::new("bank-xiamen-1").expect("valid");
    let binding = SessionBinding { contract, epoch: Epoch(1), session: SessionId::random(&mut rng) };
    let start = Instant::now();
    let query =
        LookupQuery::new(header, universe.clone(), vec![provider_id.clone()], &applicants).expect("query");
    let config = QuerierConfig { binding: binding.clone(), provider: provider_id.clone(), chunk_size: 256 };
    let (mut session, first) = query.start_session(config, &mut rng).expect("start");
    let mut provider = LookupProvider::new(
        ProviderConfig {
            binding,
            querier: querier_id.clone(),
            universe_digest: universe.digest(),
            policy: ProviderPolicy { remaining_quota: n as u64, max_lookups: n as u64 },
        },
        key,
    );
    let mut to_provider: VecDeque<Vec<u8>> = first.into_iter().map(|m| m.bytes).collect();
    let mut to_querier: VecDeque<Vec<u8>> = VecDeque::new();
    let mut bytes_on_wire = 0usize;
    loop {
        if let Some(bytes) = to_provider.pop_front() {
            bytes_on_wire += bytes.len();
            let (next, out) = provider.handle(&querier_id, &bytes).expect("provider");
            provider = next;
            to_querier.extend(out.into_iter().map(|m| m.bytes));
        } else if let Some(bytes) = to_querier.pop_front() {
            bytes_on_wire += bytes.len();
            let (next, out) = session.handle(&provider_id, &bytes).expect("querier");
            session = next;
            to_provider.extend(out.into_iter().map(|m| m.bytes));
        } else {
            break;
        }
    }
    let reply = session.into_reply().expect("session done");
    let output = query.finish(&vector, vec![reply]).expect("finish");
    let session_seconds = start.elapsed().as_secs_f64();
    // The run is only a measurement if it is right.
    for (i, result) in output.results.iter().enumerate() {
        assert_eq!(*result, xmcredit_protocol::lookup::LookupValue::Value(values[i]), "applicant {i}");
    }
    println!(
        "\nquery session, {n} lookups, 1 provider: {session_seconds:.4} s, {} bytes on the wire",
        bytes_on_wire
    );
    println!("vector download: {} bytes ({} per entry)", vector.packed().len(), vector.width().entry_len());
}
