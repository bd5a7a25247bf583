//! The floor: the raw curve, hash and PRG operations a protocol cannot avoid, as
//! workloads a caller times. Benchmarks report their protocol's wall time as a ratio to
//! the floor computed from these costs measured in the same run.
//!
//! This module runs the operations; it does not read a clock (the caller does), so it
//! stays as pure as the rest of the crate.

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use rand_core::CryptoRngCore;

use crate::prg::{fill_masks, Seed};
use crate::set::{ClientSetSession, TagContext, UnblindedElement};
use crate::{ContractId, Epoch};

/// One raw operation whose per-element cost enters the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FloorOp {
    /// RFC 9497 HashToGroup of an 18-byte entity code.
    HashToGroup,
    /// Variable-base scalar multiplication.
    ScalarMul,
    /// `compress()` of one point.
    Compress,
    /// Compression inside `double_and_compress_batch`, per point.
    CompressBatched,
    /// Checked decompression.
    Decompress,
    /// One SHA-512 tag.
    Tag,
    /// 8 bytes of ChaCha20 keystream (one u64 mask).
    PrgU64,
}

impl FloorOp {
    pub const ALL: [FloorOp; 7] = [
        FloorOp::HashToGroup,
        FloorOp::ScalarMul,
        FloorOp::Compress,
        FloorOp::CompressBatched,
        FloorOp::Decompress,
        FloorOp::Tag,
        FloorOp::PrgU64,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FloorOp::HashToGroup => "hash_to_group",
            FloorOp::ScalarMul => "scalar_mul",
            FloorOp::Compress => "compress",
            FloorOp::CompressBatched => "compress_batched",
            FloorOp::Decompress => "decompress",
            FloorOp::Tag => "tag_sha512",
            FloorOp::PrgU64 => "prg_u64",
        }
    }
}

/// Prepared inputs for timing each [`FloorOp`] on one thread.
#[derive(Debug)]
pub struct FloorWorkload {
    inputs: Vec<[u8; 18]>,
    points: Vec<RistrettoPoint>,
    compressed: Vec<CompressedRistretto>,
    scalar: Scalar,
    tags: TagContext,
    elements: Vec<UnblindedElement>,
}

impl FloorWorkload {
    /// A workload of `n` elements.
    pub fn new(n: usize, rng: &mut impl CryptoRngCore) -> Self {
        let inputs: Vec<[u8; 18]> = (0..n)
            .map(|i| {
                let mut code = *b"913502030000000000";
                code[8..18].copy_from_slice(format!("{i:010}").as_bytes());
                code
            })
            .collect();
        let points: Vec<RistrettoPoint> = (0..n).map(|_| RistrettoPoint::random(rng)).collect();
        let compressed = points.iter().map(|p| p.compress()).collect();
        let elements = points.iter().map(|p| UnblindedElement(p.compress().0)).collect();
        let contract = ContractId::new("floor").unwrap_or_else(|_| unreachable!("valid literal id"));
        let tags =
            TagContext::new(&contract, Epoch(0), 80).unwrap_or_else(|_| unreachable!("80 bits is valid"));
        Self { inputs, points, compressed, scalar: Scalar::random(rng), tags, elements }
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Runs `op` once per element on the calling thread; returns a value derived from
    /// the results so the optimizer cannot drop the work.
    pub fn run(&self, op: FloorOp) -> u64 {
        let suite = crate::oprf::Suite::base();
        match op {
            FloorOp::HashToGroup => {
                self.inputs.iter().map(|i| u64::from(suite.hash_to_group(i).compress().0[0])).sum()
            }
            FloorOp::ScalarMul => self.points.iter().map(|p| (self.scalar * p == *p) as u64).sum(),
            FloorOp::Compress => self.points.iter().map(|p| u64::from(p.compress().0[0])).sum(),
            FloorOp::CompressBatched => RistrettoPoint::double_and_compress_batch(&self.points)
                .iter()
                .map(|c| u64::from(c.0[0]))
                .sum(),
            FloorOp::Decompress => self.compressed.iter().map(|c| c.decompress().is_some() as u64).sum(),
            FloorOp::Tag => self.elements.iter().map(|e| u64::from(self.tags.tag(e).0[0])).sum(),
            FloorOp::PrgU64 => {
                let mut out = vec![0u64; self.inputs.len()];
                fill_masks(&Seed([1u8; 32]), 0, &mut out);
                out.iter().fold(0, |a, b| a ^ b)
            }
        }
    }

    /// The blinding a client must do in a session: used to check the batch code's
    /// throughput against the per-op floor.
    pub fn blind_batch(&self, session: &ClientSetSession) -> usize {
        session.blind_batch(&self.inputs).map(|v| v.len()).unwrap_or(0)
    }

    pub fn inputs(&self) -> &[[u8; 18]] {
        &self.inputs
    }
}

/// Measured single-thread seconds per element of each operation.
#[derive(Debug, Clone, Default)]
pub struct FloorCosts {
    pub hash_to_group: f64,
    pub scalar_mul: f64,
    pub compress: f64,
    pub compress_batched: f64,
    pub decompress: f64,
    pub tag: f64,
    pub prg_u64: f64,
}

impl FloorCosts {
    pub fn set(&mut self, op: FloorOp, seconds_per_element: f64) {
        let slot = match op {
            FloorOp::HashToGroup => &mut self.hash_to_group,
            FloorOp::ScalarMul => &mut self.scalar_mul,
            FloorOp::Compress => &mut self.compress,
            FloorOp::CompressBatched => &mut self.compress_batched,
            FloorOp::Decompress => &mut self.decompress,
            FloorOp::Tag => &mut self.tag,
            FloorOp::PrgU64 => &mut self.prg_u64,
        };
        *slot = seconds_per_element;
    }

    /// CPU-seconds the DH-OPRF PSI cannot avoid for a client set of `n` and a server set
    /// of `m`: client hashes and blinds n (H + mul + batched compress), server decodes
    /// and evaluates n (decompress + mul + batched compress), client decodes and
    /// unblinds n (decompress + mul + batched compress) and tags n; server hashes,
    /// evaluates and tags its m (H + mul + batched compress + tag).
    pub fn psi_cpu_seconds(&self, n: u64, m: u64) -> f64 {
        let per_client = self.hash_to_group
            + 3.0 * self.scalar_mul
            + 3.0 * self.compress_batched
            + 2.0 * self.decompress
            + self.tag;
        let per_server = self.hash_to_group + self.scalar_mul + self.compress_batched + self.tag;
        n as f64 * per_client + m as f64 * per_server
    }

    /// CPU-seconds a lookup provider cannot avoid to prepare its contribution over a
    /// universe of `m` entries: per entry one HashToGroup, one scalar multiplication,
    /// one batched compression (to serialize `N = k·H(u)`) and one SHA-512 for the pad
    /// (the same work as a tag).
    pub fn lookup_provider_cpu_seconds(&self, m: u64) -> f64 {
        m as f64 * (self.hash_to_group + self.scalar_mul + self.compress_batched + self.tag)
    }

    /// CPU-seconds duplicate detection (overthreshold) cannot avoid for `items` items
    /// across all banks and a committee of `committee`: per item the bank hashes and
    /// blinds (H + mul + batched compress), each member decodes and evaluates
    /// (decompress + mul + batched compress), the bank decodes each member's reply
    /// (decompress), unblinds the sum (mul + batched compress) and tags it. Point
    /// additions and the coordinator's counting are left out (they are far cheaper).
    pub fn overthreshold_cpu_seconds(&self, items: u64, committee: u64) -> f64 {
        let c = committee as f64;
        let per_item = self.hash_to_group
            + 2.0 * (self.scalar_mul + self.compress_batched)
            + c * (2.0 * self.decompress + self.scalar_mul + self.compress_batched)
            + self.tag;
        items as f64 * per_item
    }

    /// The PSI floor in wall seconds on `cores` cores, perfectly parallel.
    pub fn psi_floor_seconds(&self, n: u64, m: u64, cores: usize) -> f64 {
        self.psi_cpu_seconds(n, m) / cores.max(1) as f64
    }
}
