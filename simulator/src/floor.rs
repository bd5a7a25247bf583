//! The floor measured in the same run as the scenarios: per-element costs of the raw
//! operations on this machine, so every scenario's wall time can be read as a ratio.

use std::time::Instant;

use rand::SeedableRng;
use serde::Serialize;
use xmcredit_crypto::floor::{FloorCosts, FloorOp, FloorWorkload};

#[derive(Debug, Clone, Serialize)]
pub struct FloorReport {
    pub elements_timed: usize,
    pub cores: usize,
    /// Microseconds per element, one thread.
    pub per_element_us: std::collections::BTreeMap<&'static str, f64>,
    pub psi_floor_s_2_16: f64,
    pub psi_floor_s_2_20: f64,
    #[serde(skip)]
    pub costs: FloorCosts,
}

impl FloorReport {
    pub fn measure(n: usize) -> Self {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let workload = FloorWorkload::new(n, &mut rng);
        let mut costs = FloorCosts::default();
        let mut per_element_us = std::collections::BTreeMap::new();
        for op in FloorOp::ALL {
            let started = Instant::now();
            std::hint::black_box(workload.run(op));
            let seconds = started.elapsed().as_secs_f64() / n as f64;
            costs.set(op, seconds);
            per_element_us.insert(op.name(), seconds * 1e6);
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self {
            elements_timed: n,
            cores,
            per_element_us,
            psi_floor_s_2_16: costs.psi_floor_seconds(1 << 16, 1 << 16, cores),
            psi_floor_s_2_20: costs.psi_floor_seconds(1 << 20, 1 << 20, cores),
            costs,
        }
    }

    /// The PSI floor for a client set of `n` and a server set of `m`.
    pub fn psi_floor_s(&self, n: u64, m: u64) -> f64 {
        self.costs.psi_floor_seconds(n, m, self.cores)
    }
}
