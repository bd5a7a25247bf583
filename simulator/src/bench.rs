//! Benchmarks between real node processes: PSI at chosen sizes (first run and repeat
//! run with the server's evaluated set cached) and CSV import speed. Every figure is
//! reported beside the floor measured in the same run.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use xmcredit_contracts::entity_code::{EntityCode, EntityKind, XIAMEN_DISTRICTS};

use crate::alliance::{Alliance, NodeProgram};
use crate::contracts::{self, PartyLine};
use crate::floor::FloorReport;

/// `count` distinct valid codes.
fn codes(rng: &mut ChaCha20Rng, count: usize) -> Result<Vec<EntityCode>> {
    let mut seen = std::collections::HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let (division, _) = XIAMEN_DISTRICTS[rng.gen_range(0..XIAMEN_DISTRICTS.len())];
        let code = EntityCode::random(rng, EntityKind::Enterprise, division)?;
        if seen.insert(code) {
            out.push(code);
        }
    }
    Ok(out)
}

fn write_key_csv(path: &Path, codes: &[EntityCode]) -> Result<()> {
    let mut text = String::with_capacity(codes.len() * 20 + 16);
    text.push_str("credit_code\n");
    for code in codes {
        let _ = writeln!(text, "{code}");
    }
    std::fs::write(path, text)?;
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct PsiRun {
    pub run: &'static str,
    pub wall_s: f64,
    pub ratio_to_floor: f64,
    pub client_to_server_bytes_per_element: f64,
    pub server_to_client_bytes_per_element: f64,
    pub matches: u64,
    pub verified: bool,
    pub client_peak_mib: f64,
    pub server_peak_mib: f64,
    /// Resident memory just before the run (after the imports).
    pub client_rss_before_mib: f64,
    pub server_rss_before_mib: f64,
}

#[derive(Debug, Serialize)]
pub struct PsiBench {
    pub n: usize,
    pub m: usize,
    /// `intersection`, or `cardinality` when the run adds count noise.
    pub output: String,
    /// The count noise's ε in thousandths (`--noise-epsilon-milli`), and the dummy
    /// replies (and extra tags) it adds to each session.
    pub noise_epsilon_milli: Option<u32>,
    pub noise_dummies: u32,
    pub floor_s: f64,
    pub idle_node_rss_mib: f64,
    pub import_s: f64,
    /// The server's store on disk after its import, per row of its dataset, and over
    /// the size of the CSV it was imported from.
    pub server_store_bytes_per_row: f64,
    pub server_store_to_csv: f64,
    pub runs: Vec<PsiRun>,
    pub floor: FloorReport,
}

/// PSI between two node processes: `n` client elements, `m` server elements, a
/// quarter of the client's in the server's set. With `noise_epsilon_milli`, a noisy
/// cardinality instead of the intersection (its count checked within the clamp).
pub async fn psi(
    program: NodeProgram,
    base: &Path,
    n: usize,
    m: usize,
    noise_epsilon_milli: Option<u32>,
) -> Result<PsiBench> {
    let half = match noise_epsilon_milli {
        Some(milli) => xmcredit_crypto::count_noise::count_noise_half(milli)?,
        None => 0,
    };
    let floor = FloorReport::measure(4096);
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let all = codes(&mut rng, n + m)?;
    let overlap = n / 4;
    let client: Vec<EntityCode> = all[..n].to_vec();
    let mut server: Vec<EntityCode> = all[n..n + m - overlap.min(m)].to_vec();
    server.extend_from_slice(&client[..overlap.min(m)]);
    let expected = overlap.min(m) as u64;

    // The bench's sets are far above a bank's daily flow: raise the per-dataset ceiling
    // and the contract's quota to fit two runs.
    let alliance = Alliance::create_with_limits(
        program,
        base,
        &["credit-center", "bank-a"],
        true,
        &format!(
            "dataset_lookups_per_day = {}\ndataset_epsilon_milli_per_day = {}",
            2 * n as u64,
            2 * noise_epsilon_milli.unwrap_or(0)
        ),
    )
    .await?;
    let idle = alliance.node("bank-a")?.memory_kib().map_or(0.0, |(_, rss)| rss as f64 / 1024.0);
    let data = base.join("bench-data");
    std::fs::create_dir_all(&data)?;
    write_key_csv(&data.join("server.csv"), &server)?;
    write_key_csv(&data.join("client.csv"), &client)?;
    std::fs::write(
        data.join("server.toml"),
        "name = \"a_grade_taxpayers\"\nkey = \"credit_code\"\ncolumns = []\n",
    )?;
    std::fs::write(
        data.join("client.toml"),
        "name = \"loan_applicants\"\nkey = \"credit_code\"\ncolumns = []\n",
    )?;
    let import_started = Instant::now();
    alliance
        .node("credit-center")?
        .import("a_grade_taxpayers", &data.join("server.toml"), &data.join("server.csv"), false)
        .await?;
    let import_s = import_started.elapsed().as_secs_f64();
    let server_csv = std::fs::metadata(data.join("server.csv"))?.len() as f64;
    let server_store = dir_bytes(&alliance.node("credit-center")?.dir.join("store")) as f64;
    alliance
        .node("bank-a")?
        .import("loan_applicants", &data.join("client.toml"), &data.join("client.csv"), false)
        .await?;

    let center = alliance.node("credit-center")?;
    let bank = alliance.node("bank-a")?;
    let toml = contracts::psi(
        "credit-center.bench-psi",
        "benchmark",
        &PartyLine { node: "credit-center", public_key: &center.public_key, roles: &["server"] },
        "a_grade_taxpayers",
        &PartyLine { node: "bank-a", public_key: &bank.public_key, roles: &["client"] },
        if noise_epsilon_milli.is_some() { "cardinality" } else { "intersection" },
        &[],
        1,
        1,
    )
    .replace(&format!("= {} }}", contracts::PSI_DAILY_QUOTA), &format!("= {} }}", 2 * n as u64));
    let toml = match noise_epsilon_milli {
        Some(milli) => contracts::with_count_noise(&toml, milli),
        None => toml,
    };
    alliance.agree("credit-center", &toml, "credit-center.bench-psi", &["bank-a"]).await?;
    // The dummies are replies like the others (a fixed-base and a variable-base
    // multiplication on the server, an unblinding on the client): counted as n + d.
    let dummies = 2 * half;
    let floor_s = floor.psi_floor_s(n as u64 + u64::from(dummies), m as u64);
    let mut runs = Vec::new();
    // A noisy cardinality answers one run per client and epoch: no repeat.
    let kinds: &[&'static str] = if noise_epsilon_milli.is_some() {
        &["first (server set evaluated)"]
    } else {
        &["first (server set evaluated)", "repeat (server set cached)"]
    };
    for &run in kinds {
        // Peaks of the run alone, not of the imports before it.
        bank.reset_peak_memory();
        center.reset_peak_memory();
        let rss = |node: &crate::alliance::NodeHandle| {
            node.memory_kib().map_or(0.0, |(_, rss)| rss as f64 / 1024.0)
        };
        let (client_rss_before_mib, server_rss_before_mib) = (rss(bank), rss(center));
        let started = Instant::now();
        let report = bank.run("psi", "credit-center.bench-psi").await.context("psi run")?;
        let wall_s = started.elapsed().as_secs_f64();
        let sent = report["bytes_sent"].as_u64().unwrap_or(0) as f64;
        let received = report["bytes_received"].as_u64().unwrap_or(0) as f64;
        let matches = report["cardinality"].as_u64().unwrap_or(0);
        runs.push(PsiRun {
            run,
            wall_s,
            ratio_to_floor: wall_s / floor_s.max(1e-9),
            client_to_server_bytes_per_element: sent / n as f64,
            server_to_client_bytes_per_element: received / (n + m) as f64,
            matches,
            verified: matches.abs_diff(expected) <= u64::from(half),
            client_peak_mib: bank.memory_kib().map_or(0.0, |(hwm, _)| hwm as f64 / 1024.0),
            server_peak_mib: center.memory_kib().map_or(0.0, |(hwm, _)| hwm as f64 / 1024.0),
            client_rss_before_mib,
            server_rss_before_mib,
        });
    }
    Ok(PsiBench {
        n,
        m,
        output: if noise_epsilon_milli.is_some() { "cardinality" } else { "intersection" }.into(),
        noise_epsilon_milli,
        noise_dummies: dummies,
        floor_s,
        idle_node_rss_mib: idle,
        import_s,
        server_store_bytes_per_row: server_store / m as f64,
        server_store_to_csv: server_store / server_csv.max(1.0),
        runs,
        floor,
    })
}

#[derive(Debug, Serialize)]
pub struct ImportBench {
    pub rows: usize,
    pub seconds: f64,
    pub rows_per_second: f64,
    pub node_peak_mib: f64,
    /// The node's resident memory just before the import (started, idle).
    pub node_rss_before_mib: f64,
    /// The floor measured in the same run: reading the CSV and splitting it into cells,
    /// in this process, on one core (what any import must at least do).
    pub floor_s: f64,
    pub ratio_to_floor: f64,
    pub csv_bytes: u64,
    /// The node's store directory after the import (sled files; the dataset dominates).
    pub store_bytes: u64,
    pub store_bytes_per_row: f64,
    pub store_to_csv: f64,
}

/// Bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Reads `path` and splits it into lines and cells; returns the seconds taken and the
/// cell count (so the work cannot be optimized away).
fn csv_floor(path: &Path) -> Result<(f64, u64)> {
    let started = Instant::now();
    let text = std::fs::read_to_string(path)?;
    let cells = text.lines().map(|line| line.split(',').count() as u64).sum();
    Ok((started.elapsed().as_secs_f64(), cells))
}

/// Imports `rows` rows (code + four typed columns) into one node.
pub async fn import(program: NodeProgram, base: &Path, rows: usize) -> Result<ImportBench> {
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let all = codes(&mut rng, rows)?;
    let data = base.join("bench-data");
    std::fs::create_dir_all(&data)?;
    let mut text = String::with_capacity(rows * 48);
    text.push_str("credit_code,tax_grade,si_headcount,arrears,registered\n");
    for code in &all {
        let grade = ["A", "B", "M", "C", "D"][rng.gen_range(0..5)];
        let _ = writeln!(
            text,
            "{code},{grade},{},{}.{:02},2019-0{}-1{}",
            rng.gen_range(0..500),
            rng.gen_range(0..9999),
            rng.gen_range(0..100),
            rng.gen_range(1..10),
            rng.gen_range(0..10)
        );
    }
    std::fs::write(data.join("big.csv"), text)?;
    std::fs::write(
        data.join("big.toml"),
        "name = \"registry\"\nkey = \"credit_code\"\ncolumns = [\n  { name = \"tax_grade\", type = \"enum\", values = [\"A\", \"B\", \"M\", \"C\", \"D\"] },\n  { name = \"si_headcount\", type = \"integer\" },\n  { name = \"arrears\", type = \"decimal\", scale = 2 },\n  { name = \"registered\", type = \"date\" },\n]\n",
    )?;
    let csv_bytes = std::fs::metadata(data.join("big.csv"))?.len();
    let (floor_s, cells) = csv_floor(&data.join("big.csv"))?;
    anyhow::ensure!(cells == (rows as u64 + 1) * 5, "the floor read {cells} cells");
    let alliance = Alliance::create(program, base, &["credit-center"], true).await?;
    let node = alliance.node("credit-center")?;
    node.reset_peak_memory();
    let node_rss_before_mib = node.memory_kib().map_or(0.0, |(_, rss)| rss as f64 / 1024.0);
    let started = Instant::now();
    let report = node.import("registry", &data.join("big.toml"), &data.join("big.csv"), false).await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report["rows_accepted"].as_u64() == Some(rows as u64),
        "import accepted {}",
        report["rows_accepted"]
    );
    let node_peak_mib = node.memory_kib().map_or(0.0, |(hwm, _)| hwm as f64 / 1024.0);
    let store_bytes = dir_bytes(&node.dir.join("store"));
    Ok(ImportBench {
        rows,
        seconds,
        rows_per_second: rows as f64 / seconds,
        node_peak_mib,
        node_rss_before_mib,
        floor_s,
        ratio_to_floor: seconds / floor_s.max(1e-9),
        csv_bytes,
        store_bytes,
        store_bytes_per_row: store_bytes as f64 / rows as f64,
        store_to_csv: store_bytes as f64 / csv_bytes.max(1) as f64,
    })
}

#[derive(Debug, Serialize)]
pub struct LookupQueryRun {
    pub applicants: usize,
    pub lookups: u64,
    /// The querier's whole run: vector download, query session, output.
    pub wall_s: f64,
    /// The query session alone (blind, evaluate, unblind, unpad).
    pub query_s: f64,
    /// The vector download (universe and vector chunks).
    pub vector_s: f64,
    pub bytes_vector: u64,
    pub bytes_query: u64,
    pub verified: bool,
}

#[derive(Debug, Serialize)]
pub struct LookupBench {
    pub universe: usize,
    /// Providers whose vectors are summed (1: the credit center alone, no SecAgg).
    pub providers: usize,
    /// The provider's preparation of its padded vector at the node (registry and rows
    /// read, scorecard, hash, multiply, pad), from the coordinator's `run lookup`; with
    /// several providers, every provider's preparation and the SecAgg sum.
    pub provider_s: f64,
    /// H + mul + batched compress + SHA-512 per entry and provider, on all cores,
    /// measured here (the providers share this machine's cores).
    pub provider_floor_s: f64,
    pub provider_ratio_to_floor: f64,
    /// Vector bytes downloaded per universe entry (w/8 plus the universe's codes).
    pub vector_bytes_per_entry: f64,
    pub output_bits: u32,
    pub queries: Vec<LookupQueryRun>,
    pub floor: FloorReport,
}

/// Lookup between node processes: the credit center prepares its padded vector over a
/// universe of `universe` entities, bank-a queries 1,000 and then 10,000 applicants
/// (90 % registered). With one provider the vector is the credit center's easy-loan
/// bit mask; with more, banks b, c, ... score their overdue counts too and the vectors
/// are summed with SecAgg (points).
pub async fn lookup(
    program: NodeProgram,
    base: &Path,
    universe: usize,
    providers: usize,
) -> Result<LookupBench> {
    anyhow::ensure!(
        providers == 1 || providers >= 3,
        "one provider, or three and more (two banks besides the credit center, for SecAgg)"
    );
    let floor = FloorReport::measure(4096);
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    let sizes = [1_000usize, 10_000];
    let outside = codes(&mut rng, universe + sizes[1] / 10 + 1)?;
    let registry: Vec<EntityCode> = outside[..universe].to_vec();
    let unregistered: Vec<EntityCode> = outside[universe..].to_vec();
    let data = base.join("bench-data");
    std::fs::create_dir_all(&data)?;
    let mut text = String::with_capacity(universe * 40);
    text.push_str("credit_code,tax_grade,si_headcount,utility_arrears_months,dishonest\n");
    for code in &registry {
        let grade = ["A", "B", "M", "C", "D"][rng.gen_range(0..5)];
        let _ = writeln!(
            text,
            "{code},{grade},{},{},{}",
            rng.gen_range(0..50),
            rng.gen_range(0..8),
            rng.gen_bool(0.05)
        );
    }
    std::fs::write(data.join("registry.csv"), text)?;
    std::fs::write(
        data.join("registry.toml"),
        "name = \"registry\"\nkey = \"credit_code\"\ncolumns = [\n  { name = \"tax_grade\", type = \"enum\", values = [\"A\", \"B\", \"M\", \"C\", \"D\"] },\n  { name = \"si_headcount\", type = \"integer\" },\n  { name = \"utility_arrears_months\", type = \"integer\" },\n  { name = \"dishonest\", type = \"bool\" },\n]\n",
    )?;
    std::fs::write(
        data.join("applicants.toml"),
        "name = \"loan_applicants\"\nkey = \"credit_code\"\ncolumns = []\n",
    )?;
    // A bench's queries are far above a bank's daily flow: raise the per-dataset ceiling
    // to the contract's quota.
    let lenders: Vec<String> = (1..providers).map(|i| format!("bank-{}", (b'a' + i as u8) as char)).collect();
    let mut ids = vec!["credit-center", "bank-a"];
    ids.extend(lenders.iter().map(String::as_str));
    let alliance =
        Alliance::create_with_limits(program, base, &ids, true, "dataset_lookups_per_day = 10000000").await?;
    let center = alliance.node("credit-center")?;
    let bank = alliance.node("bank-a")?;
    center.import("registry", &data.join("registry.toml"), &data.join("registry.csv"), false).await?;
    // Each other bank's overdue counts for a third of the registry.
    std::fs::write(
        data.join("overdue.toml"),
        "name = \"overdue\"\nkey = \"credit_code\"\ncolumns = [{ name = \"overdue_count\", type = \"integer\" }]\n",
    )?;
    for (b, lender) in lenders.iter().enumerate() {
        let mut text = String::with_capacity(universe * 14);
        text.push_str("credit_code,overdue_count\n");
        for code in registry.iter().skip(b).step_by(3) {
            let _ = writeln!(text, "{code},{}", rng.gen_range(0..6));
        }
        let file = data.join(format!("overdue-{lender}.csv"));
        std::fs::write(&file, text)?;
        alliance.node(lender)?.import("overdue", &data.join("overdue.toml"), &file, false).await?;
    }
    let id = "credit-center.bench-lookup";
    let center_roles: &[&str] = &["coordinator", "provider"];
    let mut parties = vec![
        PartyLine { node: "credit-center", public_key: &center.public_key, roles: center_roles },
        PartyLine { node: "bank-a", public_key: &bank.public_key, roles: &["querier"] },
    ];
    for lender in &lenders {
        parties.push(PartyLine {
            node: lender,
            public_key: &alliance.node(lender)?.public_key,
            roles: &["provider"],
        });
    }
    const OVERDUE_RULES: &str = "[\n  { column = \"overdue_count\", comparison = \"ge\", constant = 1, points = 1 },\n  { column = \"overdue_count\", comparison = \"ge\", constant = 3, points = 1 },\n]";
    let mut provider_lines = vec![contracts::LookupProvider {
        node: "credit-center",
        dataset: "registry",
        columns: contracts::EASY_LOAN_COLUMNS,
        rules: contracts::EASY_LOAN_RULES,
    }];
    for lender in &lenders {
        provider_lines.push(contracts::LookupProvider {
            node: lender,
            dataset: "overdue",
            columns: &["overdue_count"],
            rules: OVERDUE_RULES,
        });
    }
    let output = if providers == 1 { "bitmask" } else { "points" };
    let toml =
        contracts::lookup(id, "benchmark", &parties, &provider_lines, &["bank-a"], output, 8, 10_000_000);
    let mut signers = vec!["bank-a"];
    signers.extend(lenders.iter().map(String::as_str));
    alliance.agree("credit-center", &toml, id, &signers).await?;
    let started = Instant::now();
    let published = center.run("lookup", id).await.context("publishing the vector")?;
    let provider_s = started.elapsed().as_secs_f64();
    let cores = floor.cores.max(1) as f64;
    let provider_floor_s =
        providers as f64 * floor.costs.lookup_provider_cpu_seconds(universe as u64) / cores;
    anyhow::ensure!(published["universe_size"].as_u64() == Some(universe as u64), "{published}");

    let known: std::collections::HashSet<EntityCode> = registry.iter().copied().collect();
    let mut queries = Vec::new();
    let mut vector_bytes_per_entry = 0.0;
    for (i, &n) in sizes.iter().enumerate() {
        let registered = n - n / 10;
        let mut applicants: Vec<EntityCode> =
            registry.iter().step_by((universe / registered).max(1)).take(registered).copied().collect();
        applicants.extend(unregistered.iter().take(n - applicants.len()).copied());
        let file = data.join(format!("applicants-{i}.csv"));
        write_key_csv(&file, &applicants)?;
        bank.import("loan_applicants", &data.join("applicants.toml"), &file, false).await?;
        let started = Instant::now();
        let report = bank.run("lookup", id).await.context("lookup run")?;
        let wall_s = started.elapsed().as_secs_f64();
        let lookups = report["lookups"].as_u64().unwrap_or(0);
        let bytes_vector = report["bytes_vector"].as_u64().unwrap_or(0);
        vector_bytes_per_entry = bytes_vector as f64 / universe as f64;
        queries.push(LookupQueryRun {
            applicants: n,
            lookups,
            wall_s,
            query_s: report["query_s"].as_f64().unwrap_or(0.0),
            vector_s: report["vector_s"].as_f64().unwrap_or(0.0),
            bytes_vector,
            bytes_query: report["bytes_query"].as_u64().unwrap_or(0),
            verified: lookups == applicants.iter().filter(|c| known.contains(*c)).count() as u64
                && report["applicants"].as_u64() == Some(n as u64),
        });
    }
    Ok(LookupBench {
        universe,
        providers,
        provider_s,
        provider_floor_s,
        provider_ratio_to_floor: provider_s / provider_floor_s.max(1e-9),
        vector_bytes_per_entry,
        output_bits: 8,
        queries,
        floor,
    })
}
