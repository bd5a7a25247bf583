//! The floor benchmark: per-element costs of the raw operations on this machine, the
//! batched and parallel throughput of the set-session code, and the derived floor of a
//! PSI of 2^16 and 2^20 elements. Run with `cargo bench -p xmcredit-crypto --bench floor`.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use xmcredit_crypto::floor::{FloorCosts, FloorOp, FloorWorkload};
use xmcredit_crypto::keys::{KeyPurpose, MasterSecret};
use xmcredit_crypto::prg::{fill_masks, Seed};
use xmcredit_crypto::set::{evaluate_batch, ClientSetSession, TagContext};
use xmcredit_crypto::{ContractId, Epoch};

fn per_element(n: usize, f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() / n as f64
}

fn main() {
    let n: usize = std::env::var("FLOOR_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 14);
    let cores = rayon::current_num_threads();
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let workload = FloorWorkload::new(n, &mut rng);
    println!("floor benchmark: {n} elements, {cores} threads");
    println!("{:<28} {:>12} {:>14}", "operation (1 thread)", "µs/element", "elements/s");
    let mut costs = FloorCosts::default();
    for op in FloorOp::ALL {
        let mut sink = 0u64;
        let seconds = per_element(n, || sink = workload.run(op));
        std::hint::black_box(sink);
        costs.set(op, seconds);
        println!("{:<28} {:>12.3} {:>14.0}", op.name(), seconds * 1e6, 1.0 / seconds);
    }
    let prg_gbps = 8.0 / costs.prg_u64 / 1e9;
    println!("{:<28} {:>12.2} GB/s", "prg throughput", prg_gbps);

    println!("\n{:<28} {:>12} {:>14}", "batched, parallel", "µs/element", "elements/s");
    let contract = ContractId::new("floor-bench").unwrap_or_else(|e| panic!("{e}"));
    let key = MasterSecret::generate(&mut rng)
        .derive_oprf_key(&contract, Epoch(0), KeyPurpose::PsiServer)
        .unwrap_or_else(|e| panic!("{e}"));
    let session = ClientSetSession::new(&mut rng);
    let mut blinded = Vec::new();
    let blind =
        per_element(n, || blinded = session.blind_batch(workload.inputs()).unwrap_or_else(|e| panic!("{e}")));
    let mut evaluated = Vec::new();
    let evaluate =
        per_element(n, || evaluated = evaluate_batch(&key, &blinded).unwrap_or_else(|e| panic!("{e}")));
    let mut unblinded = Vec::new();
    let unblind =
        per_element(n, || unblinded = session.unblind_batch(&evaluated).unwrap_or_else(|e| panic!("{e}")));
    let tags = TagContext::new(&contract, Epoch(0), 80).unwrap_or_else(|e| panic!("{e}"));
    let tag = per_element(n, || {
        std::hint::black_box(tags.tag_batch(&unblinded));
    });
    let mut out = vec![0u64; n * 64];
    let prg = per_element(n * 64, || fill_masks(&Seed([3u8; 32]), 0, &mut out));
    for (name, seconds) in [
        ("blind_batch (H + mul)", blind),
        ("evaluate_batch (dec + mul)", evaluate),
        ("unblind_batch (dec + mul)", unblind),
        ("tag_batch", tag),
        ("prg u64 (1 thread)", prg),
    ] {
        println!("{:<28} {:>12.3} {:>14.0}", name, seconds * 1e6, 1.0 / seconds);
    }
    // Single-element RFC path for comparison.
    let suite = xmcredit_crypto::oprf::Suite::base();
    let rfc = per_element(1000, || {
        for input in workload.inputs().iter().take(1000) {
            let (blind, blinded) = suite.blind(input, &mut rng).unwrap_or_else(|e| panic!("{e}"));
            let evaluated = xmcredit_crypto::oprf::blind_evaluate(&key, &blinded);
            std::hint::black_box(suite.finalize(input, &blind, &evaluated).unwrap_or_else(|e| panic!("{e}")));
        }
    });
    println!("{:<28} {:>12.3} {:>14.0}", "RFC blind+eval+finalize, 1", rfc * 1e6, 1.0 / rfc);

    println!("\nPSI floor (n = m), from the 1-thread costs above:");
    for log_n in [16u32, 20] {
        let size = 1u64 << log_n;
        println!(
            "  2^{log_n}: {:.2} CPU-s, {:.2} s on {cores} cores; batch code on {cores} cores: {:.2} s",
            costs.psi_cpu_seconds(size, size),
            costs.psi_floor_seconds(size, size, cores),
            size as f64 * (blind + evaluate + unblind + 2.0 * tag) + size as f64 * (blind + tag),
        );
    }
}
