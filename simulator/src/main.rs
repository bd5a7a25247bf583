//! `xmcredit-simulator`: the whole alliance on one machine. Starts the credit center and
//! N banks as real node processes, imports synthetic data, has every party sign the
//! contracts, runs the scenarios, checks each answer against the plaintext, injects
//! faults, writes a report, and exits non-zero if anything differs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use xmcredit_simulator::alliance::{Alliance, NodeProgram};
use xmcredit_simulator::data::World;
use xmcredit_simulator::floor::FloorReport;
use xmcredit_simulator::{datasets, faults, scenarios};

#[derive(Debug, Parser)]
#[command(name = "xmcredit-simulator", about = "Run the xmcredit alliance demo on one machine")]
struct Args {
    /// Number of banks.
    #[arg(long, default_value_t = 3)]
    banks: usize,
    /// Registered entities at the credit center.
    #[arg(long, default_value_t = 20_000)]
    entities: usize,
    /// Loan applicants per bank.
    #[arg(long, default_value_t = 2_000)]
    applicants: usize,
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Keep the nodes' data directories here (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skip fault injection.
    #[arg(long)]
    no_faults: bool,
}

fn main() -> Result<()> {
    let mut raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `xmcredit-simulator node ...` acts as the node binary: the simulator's node
    // processes are this same executable, so one build runs the whole demo.
    if raw.get(1).is_some_and(|a| a == "node") {
        raw.remove(1);
        return xmcredit_node::cli::main_with_args(raw);
    }
    let args = Args::parse_from(raw);
    xmcredit_node::logging::init(false);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let passed = runtime.block_on(simulate(args))?;
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

async fn simulate(args: Args) -> Result<bool> {
    let started = Instant::now();
    let temp = tempfile::tempdir()?;
    let base = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let bank_ids: Vec<String> =
        (0..args.banks).map(|i| format!("bank-{}", (b'a' + i as u8) as char)).collect();
    anyhow::ensure!((2..=26).contains(&args.banks), "--banks must be between 2 and 26");
    println!(
        "xmcredit alliance simulation: credit center + {} banks, {} entities, {} applicants per bank",
        args.banks, args.entities, args.applicants
    );

    let floor = FloorReport::measure(4096);
    println!(
        "floor on this machine ({} cores): scalar mul {:.1} µs, hash-to-group {:.1} µs; PSI floor 2^16: {:.2} s, 2^20: {:.1} s",
        floor.cores, floor.per_element_us["scalar_mul"], floor.per_element_us["hash_to_group"], floor.psi_floor_s_2_16, floor.psi_floor_s_2_20
    );

    let world = World::generate(args.seed, args.entities, args.banks, args.applicants)?;
    let mut ids: Vec<&str> = vec!["credit-center"];
    ids.extend(bank_ids.iter().map(String::as_str));
    let program = NodeProgram::SelfWith("node".into());
    let setup_started = Instant::now();
    let mut alliance =
        Alliance::create(program.clone(), &base, &ids, true).await.context("starting the alliance")?;
    println!(
        "{} nodes up with certificates from a throwaway CA in {:.1} s ({})",
        ids.len(),
        setup_started.elapsed().as_secs_f64(),
        base.display()
    );

    let data_dir = base.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let center = alliance.node("credit-center")?;
    for file in datasets::credit_center_files(&world, &data_dir.join("credit-center").tap_create()?)? {
        let report = center.import(file.name, &file.schema, &file.csv, false).await?;
        println!(
            "  credit-center imported {:<18} {:>6} rows  digest {}",
            file.name,
            report["rows_accepted"],
            &report["digest"].as_str().unwrap_or("")[..16]
        );
    }
    for (b, bank) in bank_ids.iter().enumerate() {
        for file in datasets::bank_files(&world, b, &data_dir.join(bank).tap_create()?)? {
            let report = alliance.node(bank)?.import(file.name, &file.schema, &file.csv, false).await?;
            println!("  {bank} imported {:<18} {:>6} rows", file.name, report["rows_accepted"]);
        }
    }

    let mut results = Vec::new();
    results.extend(scenarios::a_grade(&alliance, &world, &bank_ids).await?);
    results.push(scenarios::dishonest_count(&alliance, &world, &bank_ids[0], 0).await?);
    results.push(scenarios::labels(&alliance, &world, &bank_ids[1], 1).await?);
    results.push(scenarios::mutual(&alliance, &world, (&bank_ids[0], 0), (&bank_ids[1], 1)).await?);

    let mut fault_results = Vec::new();
    if !args.no_faults {
        fault_results.push(faults::foreign_certificate(&alliance, &program).await?);
        fault_results.push(faults::wrong_name(&alliance).await?);
        fault_results.push(faults::malformed_messages(&alliance).await?);
        let last = bank_ids.last().cloned().unwrap_or_default();
        fault_results
            .push(faults::bank_killed(&mut alliance, &last, &format!("xel-psi-a-grade-{last}")).await?);
    }

    println!("\n{:<58} {:<13} {:>8} {:>11} {:>7}  result", "scenario", "output", "wall s", "bytes", "×floor");
    let mut rows = Vec::new();
    for r in &results {
        let n = r.sizes.values().copied().min().unwrap_or(0);
        let m = r.sizes.values().copied().max().unwrap_or(0);
        let ratio = r.wall_s / floor.psi_floor_s(n, m).max(1e-9);
        println!(
            "{:<58} {:<13} {:>8.3} {:>11} {:>7.1}  {}",
            r.name,
            r.output,
            r.wall_s,
            r.bytes_total,
            ratio,
            if r.verified { "OK" } else { "MISMATCH" }
        );
        println!("    {}", r.detail);
        let mut row = serde_json::to_value(r)?;
        row["floor_s"] = serde_json::json!(floor.psi_floor_s(n, m));
        row["ratio_to_floor"] = serde_json::json!(ratio);
        rows.push(row);
    }
    if !fault_results.is_empty() {
        println!("\nfaults:");
        for f in &fault_results {
            println!("  {:<44} {}", f.name, if f.passed { "handled" } else { "NOT HANDLED" });
            println!("    {}", f.observed);
        }
    }
    let passed = results.iter().all(|r| r.verified) && fault_results.iter().all(|f| f.passed);
    let observations = serde_json::json!({
        "credit-center": "as PSI server: each client's set size and session; as CA: certificate requests. Never a bank's applicant codes (only blinded points).",
        "banks (psi client)": "their own matches (intersection, count or labels as the contract grants) and the server's set size.",
        "bank as psi server (both form)": "the client's set size and the common applicants, which the contract grants it.",
        "network": "blinded and evaluated ristretto255 points, truncated tags, encrypted labels; all inside mutual TLS.",
    });
    let report = serde_json::json!({
        "passed": passed,
        "alliance": { "nodes": ids, "entities": args.entities, "applicants_per_bank": args.applicants, "seed": args.seed },
        "floor": floor,
        "scenarios": rows,
        "faults": fault_results,
        "observations": observations,
        "wall_s": started.elapsed().as_secs_f64(),
    });
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("\nreport written to {}", path.display());
    }
    alliance.stop_all();
    println!(
        "\n{} in {:.1} s",
        if passed { "ALL RESULTS MATCH THE PLAINTEXT ANSWERS" } else { "FAILED: see above" },
        started.elapsed().as_secs_f64()
    );
    Ok(passed)
}

trait TapCreate: Sized {
    fn tap_create(self) -> Result<Self>;
}

impl TapCreate for PathBuf {
    fn tap_create(self) -> Result<Self> {
        std::fs::create_dir_all(&self)?;
        Ok(self)
    }
}
