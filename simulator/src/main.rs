//! `xmcredit-simulator`: the whole alliance on one machine. Starts the credit center and
//! N banks as real node processes, imports synthetic data, has every party sign the
//! contracts, runs the scenarios, checks each answer against the plaintext, injects
//! faults, writes a report, and exits non-zero if anything differs.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use xmcredit_simulator::alliance::NodeProgram;
use xmcredit_simulator::demo::{self, DemoOptions};

#[derive(Debug, Parser)]
#[command(
    name = "xmcredit-simulator",
    about = "Run the xmcredit alliance demo on one machine",
    long_about = "Run the xmcredit alliance demo on one machine: the credit center, N banks and a utilities \
company and a chain leader as node processes. Scenarios: PSI (A-grade taxpayers, dishonest count, registry labels, \
co-lending), SecAgg (loans per district, industry and entity, with dropouts) and lookup \
(easy-loan-matching, multi-bank-exposure, sole-proprietor-profile), receivable-confirmation (a \
chain leader's payables against a bank's presented receivables, seeded frauds), supplier-exposure \
(lookup over every bank's financing) and overthreshold (duplicate-financing), each checked against the plaintext answer; then the faults."
)]
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
    /// Write the report as a self-contained HTML page with SVG charts here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Keep the nodes' data directories here (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skip fault injection.
    #[arg(long)]
    no_faults: bool,
    #[command(subcommand)]
    bench: Option<Bench>,
}

/// Benchmarks between real node processes (not part of the demo).
// The variant names are the subcommands (`bench-psi`, `bench-lookup`, `bench-import`).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, clap::Subcommand)]
enum Bench {
    /// PSI between two nodes: first run and repeat run (cached server set).
    BenchPsi {
        #[arg(long, default_value_t = 1 << 16)]
        n: usize,
        #[arg(long, default_value_t = 1 << 16)]
        m: usize,
        /// Run a PSI cardinality with count noise of this ε (in thousandths) instead of
        /// the intersection.
        #[arg(long)]
        noise_epsilon_milli: Option<u32>,
        /// Write the JSON result here (as `--report`).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Lookup between two nodes: provider preparation over a universe against its floor,
    /// query time for 1,000 and 10,000 applicants, bytes downloaded per universe entry.
    BenchLookup {
        #[arg(long, default_value_t = 1 << 16)]
        universe: usize,
        /// 1 (the credit center) or 3 and more (the credit center and banks b, c, ...,
        /// summed with SecAgg).
        #[arg(long, default_value_t = 1)]
        providers: usize,
        /// Write the JSON result here (as `--report`).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Many banks run PSI and SecAgg against one credit center for a fixed time, while
    /// an intruder holds connections and streams at its limits: jobs per minute, p50/p99
    /// latency, failures by reason, the credit center's peak RSS and open descriptors.
    BenchLoad {
        #[arg(long, default_value_t = 20)]
        banks: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Write the JSON result here (as `--report`).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Duplicate detection (overthreshold) between node processes: banks × n financed
    /// invoices, a committee, threshold 2; wall time against the floor measured in the
    /// same run, bytes on the wire per item.
    BenchOverthreshold {
        #[arg(long, default_value_t = 5)]
        banks: usize,
        /// Invoices per bank.
        #[arg(long, default_value_t = 1 << 16)]
        n: usize,
        /// Committee members (the credit center and the first banks).
        #[arg(long, default_value_t = 3)]
        committee: usize,
        /// Write the JSON result here (as `--report`).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Import speed of a large CSV.
    BenchImport {
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Write the JSON result here (as `--report`).
        #[arg(long)]
        json: Option<PathBuf>,
    },
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
    if let Some(bench) = args.bench {
        return runtime.block_on(run_bench(bench, args.dir, args.report));
    }
    let options = DemoOptions {
        banks: args.banks,
        entities: args.entities,
        applicants: args.applicants,
        seed: args.seed,
        report: args.report,
        dir: args.dir,
        faults: !args.no_faults,
        html: args.html,
    };
    let passed = runtime.block_on(demo::run(options, NodeProgram::SelfWith("node".into())))?;
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

async fn run_bench(bench: Bench, dir: Option<PathBuf>, report: Option<PathBuf>) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let base = dir.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&base)?;
    let program = NodeProgram::SelfWith("node".into());
    let report = match &bench {
        Bench::BenchLookup { json: Some(path), .. }
        | Bench::BenchPsi { json: Some(path), .. }
        | Bench::BenchImport { json: Some(path), .. }
        | Bench::BenchOverthreshold { json: Some(path), .. }
        | Bench::BenchLoad { json: Some(path), .. } => Some(path.clone()),
        _ => report,
    };
    let json = match bench {
        Bench::BenchPsi { n, m, noise_epsilon_milli, .. } => {
            let result = xmcredit_simulator::bench::psi(program, &base, n, m, noise_epsilon_milli).await?;
            println!(
                "PSI ({}{}) between two node processes, n = {n}, m = {m} (floor {:.2} s on {} cores)",
                result.output,
                noise_epsilon_milli.map_or(String::new(), |e| format!(
                    ", noise ε {}/1000, {} dummies",
                    e, result.noise_dummies
                )),
                result.floor_s,
                result.floor.cores
            );
            println!(
                "idle node RSS {:.1} MiB; server import {:.2} s; server store {:.1} bytes/row ({:.2}x its CSV)",
                result.idle_node_rss_mib,
                result.import_s,
                result.server_store_bytes_per_row,
                result.server_store_to_csv
            );
            for run in &result.runs {
                println!(
                    "  {:<30} {:>8.2} s  ×floor {:>5.2}  C→S {:>5.1} B/elem  S→C {:>5.1} B/elem  peak client {:>6.1} MiB (from {:.1}) server {:>6.1} MiB (from {:.1})  {}",
                    run.run,
                    run.wall_s,
                    run.ratio_to_floor,
                    run.client_to_server_bytes_per_element,
                    run.server_to_client_bytes_per_element,
                    run.client_peak_mib,
                    run.client_rss_before_mib,
                    run.server_peak_mib,
                    run.server_rss_before_mib,
                    if run.verified { "OK" } else { "MISMATCH" }
                );
            }
            serde_json::to_value(&result)?
        }
        Bench::BenchLookup { universe, providers, .. } => {
            let result = xmcredit_simulator::bench::lookup(program, &base, universe, providers).await?;
            println!(
                "lookup with {providers} provider(s), preparation over {universe} entries: {:.2} s (floor {:.2} s on {} cores, ×{:.2}); {:.1} bytes downloaded per entry",
                result.provider_s,
                result.provider_floor_s,
                result.floor.cores,
                result.provider_ratio_to_floor,
                result.vector_bytes_per_entry
            );
            for q in &result.queries {
                println!(
                    "  {:>6} applicants ({} lookups): run {:.3} s, query {:.3} s, download {:.3} s, {} + {} bytes  {}",
                    q.applicants,
                    q.lookups,
                    q.wall_s,
                    q.query_s,
                    q.vector_s,
                    q.bytes_vector,
                    q.bytes_query,
                    if q.verified { "OK" } else { "MISMATCH" }
                );
            }
            serde_json::to_value(&result)?
        }
        Bench::BenchOverthreshold { banks, n, committee, .. } => {
            let result =
                xmcredit_simulator::overthreshold_bench::run(program, &base, banks, n, committee).await?;
            println!(
                "overthreshold between node processes: {banks} banks × {n} invoices, committee of {committee}, t = 2: {:.2} s (floor {:.2} s on {} cores, ×{:.2}); {:.1} bytes per item; {} matches  {}",
                result.wall_s,
                result.floor_s,
                result.floor.cores,
                result.ratio_to_floor,
                result.bytes_per_element,
                result.matches,
                if result.verified { "OK" } else { "MISMATCH" }
            );
            serde_json::to_value(&result)?
        }
        Bench::BenchLoad { banks, seconds, .. } => {
            let result = xmcredit_simulator::load_bench::run(program, &base, banks, seconds).await?;
            println!(
                "load: {banks} banks for {:.0} s against one credit center, an intruder at its limits",
                result.seconds
            );
            for (kind, jobs) in [("psi", &result.psi), ("secagg", &result.secagg)] {
                println!(
                    "  {kind:<7} {:>5} completed, {:>3} failed, {} wrong; p50 {:.3} s, p99 {:.3} s, max {:.3} s",
                    jobs.completed, jobs.failed, jobs.wrong, jobs.p50_s, jobs.p99_s, jobs.max_s
                );
            }
            println!(
                "  {:.0} jobs/min; credit center RSS {:.1} MiB before, peak {:.1} MiB; peak open fds {}; operator status slowest {:.2} s",
                result.jobs_per_minute,
                result.center_rss_before_mib,
                result.center_peak_rss_mib,
                result.center_peak_open_fds,
                result.operator_status_max_s
            );
            println!("  intruder: {:?}", result.intruder);
            for (reason, count) in &result.failures_by_reason {
                println!("  failed {count:>4}: {reason}");
            }
            serde_json::to_value(&result)?
        }
        Bench::BenchImport { rows, .. } => {
            let result = xmcredit_simulator::bench::import(program, &base, rows).await?;
            println!(
                "import of {} rows: {:.2} s ({:.0} rows/s; floor {:.2} s, ×{:.2}), node peak {:.1} MiB (from {:.1}); store {:.1} bytes/row, {:.2}x the CSV ({:.1} bytes/row)",
                result.rows,
                result.seconds,
                result.rows_per_second,
                result.floor_s,
                result.ratio_to_floor,
                result.node_peak_mib,
                result.node_rss_before_mib,
                result.store_bytes_per_row,
                result.store_to_csv,
                result.csv_bytes as f64 / result.rows as f64
            );
            serde_json::to_value(&result)?
        }
    };
    if let Some(path) = report {
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
