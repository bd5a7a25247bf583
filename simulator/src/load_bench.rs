//! `bench-load` (issue 11): many banks run PSI and SecAgg against one credit center at
//! once, for a fixed time, while an intruder (an alliance member that is party to no
//! contract) holds raw TCP connections, authenticated connections and silent PSI
//! streams at the credit center's limits. Measured: jobs completed and failed, their
//! latency (p50/p99, as each bank's operator sees it), failures by reason, what the
//! intruder got, and the credit center's peak RSS and open file descriptors.
//!
//! Every PSI run's intersection is checked against the plaintext one, and every SecAgg
//! sum against the plaintext sum: load must not change answers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use tokio::net::TcpStream;
use xmcredit_node::config::NodeConfig;
use xmcredit_node::proto;
use xmcredit_node::service::peer_client;

use crate::alliance::{Alliance, NodeHandle, NodeProgram};
use crate::contracts::{self, PartyLine};
use crate::secagg_scenarios::SecaggContract;

/// Banks per SecAgg contract; bank i contributes to contract i / SECAGG_GROUP over its
/// own value column, so no two contracts sum one column over different banks.
const SECAGG_GROUP: usize = 4;
/// SecAgg epochs are short here so a contract can run again within the bench.
const SECAGG_EPOCH_SECONDS: u64 = 15;
const DISTRICTS: [&str; 6] = ["350203", "350205", "350206", "350211", "350212", "350213"];
const INTRUDER: &str = "intruder";
const SERVER_ROWS: usize = 4000;
const APPLICANTS: usize = 300;

#[derive(Debug, Default, Serialize)]
pub struct JobStats {
    pub completed: u64,
    pub failed: u64,
    /// Completed runs whose answer differs from the plaintext one.
    pub wrong: u64,
    pub p50_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct IntruderReport {
    pub raw_tcp_held: usize,
    pub connections_held: usize,
    pub connections_refused: usize,
    pub streams_opened: u64,
    pub streams_refused_resource_exhausted: u64,
}

#[derive(Debug, Serialize)]
pub struct LoadBench {
    pub banks: usize,
    pub seconds: f64,
    pub psi: JobStats,
    pub secagg: JobStats,
    pub jobs_per_minute: f64,
    /// Failed runs by the first words of their reason.
    pub failures_by_reason: BTreeMap<String, u64>,
    pub intruder: IntruderReport,
    pub center_rss_before_mib: f64,
    pub center_peak_rss_mib: f64,
    pub center_peak_open_fds: usize,
    /// The operator's `status` on the credit center during the load, slowest answer.
    pub operator_status_max_s: f64,
}

fn stats(mut times: Vec<f64>, failed: u64, wrong: u64) -> JobStats {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if times.is_empty() {
            return 0.0;
        }
        times[((times.len() - 1) as f64 * q).round() as usize]
    };
    JobStats {
        completed: times.len() as u64,
        failed,
        wrong,
        p50_s: at(0.5),
        p99_s: at(0.99),
        max_s: times.last().copied().unwrap_or(0.0),
    }
}

/// The first words of an error, so failures group by cause rather than by session id.
fn reason_of(error: &anyhow::Error) -> String {
    let text = format!("{error:#}");
    text.split_whitespace().take(8).collect::<Vec<_>>().join(" ")
}

fn codes(rng: &mut ChaCha20Rng, count: usize) -> Result<Vec<String>> {
    use xmcredit_contracts::entity_code::{EntityCode, EntityKind, XIAMEN_DISTRICTS};
    let mut seen = BTreeSet::new();
    while seen.len() < count {
        let (division, _) = XIAMEN_DISTRICTS[rng.gen_range(0..XIAMEN_DISTRICTS.len())];
        seen.insert(EntityCode::random(rng, EntityKind::Enterprise, division)?.to_string());
    }
    Ok(seen.into_iter().collect())
}

/// One bank's data: applicants (half of them on the credit center's list) and a loan
/// book with a district and one value column per SecAgg contract.
struct BankData {
    applicants: Vec<String>,
    /// (district index, amount) per loan.
    loans: Vec<(usize, u64)>,
}

pub async fn run(program: NodeProgram, base: &Path, banks: usize, seconds: u64) -> Result<LoadBench> {
    anyhow::ensure!(banks >= SECAGG_GROUP, "at least {SECAGG_GROUP} banks");
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let bank_ids: Vec<String> = (1..=banks).map(|i| format!("bank-{i:02}")).collect();
    let mut ids = vec!["credit-center"];
    ids.extend(bank_ids.iter().map(String::as_str));
    ids.push(INTRUDER);
    let alliance =
        Alliance::create_with_limits(program, base, &ids, true, "dataset_lookups_per_day = 1000000000")
            .await
            .context("starting the alliance")?;
    let data_dir = base.join("load-data");
    std::fs::create_dir_all(&data_dir)?;

    // The credit center's list and each bank's data.
    let listed = codes(&mut rng, SERVER_ROWS)?;
    let mut text = String::from("credit_code\n");
    for code in &listed {
        let _ = writeln!(text, "{code}");
    }
    let (schema, csv) = (data_dir.join("gov.toml"), data_dir.join("gov.csv"));
    std::fs::write(&schema, "name = \"gov_list\"\nkey = \"credit_code\"\ncolumns = []\n")?;
    std::fs::write(&csv, text)?;
    alliance.node("credit-center")?.import("gov_list", &schema, &csv, false).await?;
    let outsiders = codes(&mut rng, APPLICANTS * banks)?;
    let listed_set: BTreeSet<&String> = listed.iter().collect();
    let outsiders: Vec<&String> = outsiders.iter().filter(|c| !listed_set.contains(c)).collect();
    let applicants_schema = data_dir.join("applicants.toml");
    std::fs::write(&applicants_schema, "name = \"loan_applicants\"\nkey = \"credit_code\"\ncolumns = []\n")?;
    let contracts_count = banks.div_ceil(SECAGG_GROUP);
    let loans_schema = data_dir.join("loans.toml");
    let mut columns = String::from("  { name = \"district\", type = \"integer\" },\n");
    for k in 0..contracts_count {
        let _ = writeln!(columns, "  {{ name = \"v{k}\", type = \"integer\" }},");
    }
    std::fs::write(
        &loans_schema,
        format!("name = \"loans\"\nkey = \"credit_code\"\ncolumns = [\n{columns}]\n"),
    )?;
    let mut data = Vec::new();
    for (b, bank) in bank_ids.iter().enumerate() {
        let mut applicants: Vec<String> = listed
            .iter()
            .skip(b * 7)
            .step_by(SERVER_ROWS / (APPLICANTS / 2))
            .take(APPLICANTS / 2)
            .cloned()
            .collect();
        applicants
            .extend(outsiders.iter().skip(b * APPLICANTS / 2).take(APPLICANTS / 2).map(|c| (*c).clone()));
        let csv = data_dir.join(format!("applicants-{bank}.csv"));
        std::fs::write(&csv, format!("credit_code\n{}\n", applicants.join("\n")))?;
        alliance.node(bank)?.import("loan_applicants", &applicants_schema, &csv, false).await?;
        let loans: Vec<(usize, u64)> = applicants
            .iter()
            .map(|_| (rng.gen_range(0..DISTRICTS.len()), rng.gen_range(1..1_000_000)))
            .collect();
        let mut text = String::from("credit_code,district");
        for k in 0..contracts_count {
            let _ = write!(text, ",v{k}");
        }
        text.push('\n');
        for (code, (district, amount)) in applicants.iter().zip(&loans) {
            let _ = write!(text, "{code},{}", DISTRICTS[*district]);
            for _ in 0..contracts_count {
                let _ = write!(text, ",{amount}");
            }
            text.push('\n');
        }
        let csv = data_dir.join(format!("loans-{bank}.csv"));
        std::fs::write(&csv, text)?;
        alliance.node(bank)?.import("loans", &loans_schema, &csv, false).await?;
        data.push(BankData { applicants, loans });
    }

    // Contracts: one PSI contract per bank, one SecAgg contract per group of banks.
    let center = alliance.node("credit-center")?;
    let center_line = PartyLine { node: "credit-center", public_key: &center.public_key, roles: &["server"] };
    for bank in &bank_ids {
        let node = alliance.node(bank)?;
        let id = format!("credit-center.load-psi-{bank}");
        let client = PartyLine { node: bank, public_key: &node.public_key, roles: &["client"] };
        let toml =
            contracts::psi(&id, "load bench", &center_line, "gov_list", &client, "intersection", &[], 10, 10)
                .replace(
                    &format!("{bank} = {}", contracts::PSI_DAILY_QUOTA),
                    &format!("{bank} = 1000000000"),
                );
        alliance.agree("credit-center", &toml, &id, &[bank.as_str()]).await?;
    }
    let mut secagg_ids = Vec::new();
    for (k, group) in bank_ids.chunks(SECAGG_GROUP).enumerate() {
        let id = format!("credit-center.load-secagg-{k}");
        let value_column = format!("v{k}");
        let contributors: Vec<PartyLine> = group
            .iter()
            .map(|bank| {
                let node = alliance.node(bank)?;
                Ok(PartyLine { node: bank, public_key: &node.public_key, roles: &["contributor"] })
            })
            .collect::<Result<_>>()?;
        let contract = SecaggContract {
            id: &id,
            purpose: "load bench",
            coordinator: PartyLine {
                node: "credit-center",
                public_key: &center.public_key,
                roles: &["coordinator"],
            },
            threshold: (group.len() - 1).max(2),
            min_contributors: (group.len() - 1).max(2),
            contributors,
            dataset: "loans",
            value_column: &value_column,
            group_column: "district",
            groups: DISTRICTS.iter().map(|d| d.to_string()).collect(),
            output_bits: 40,
        };
        let toml = contract
            .toml()
            .replace("epoch_seconds = 86400", &format!("epoch_seconds = {SECAGG_EPOCH_SECONDS}"));
        let signers: Vec<&str> = group.iter().map(String::as_str).collect();
        alliance.agree("credit-center", &toml, &id, &signers).await?;
        let mut want = vec![0u64; DISTRICTS.len()];
        for bank in &data[k * SECAGG_GROUP..k * SECAGG_GROUP + group.len()] {
            for (district, amount) in &bank.loans {
                want[*district] += amount;
            }
        }
        let not_before = xmcredit_contracts::Contract::from_toml_str(&toml)?.not_before;
        secagg_ids.push((id, want, not_before));
    }

    let center_rss_before_mib = center.memory_kib().map_or(0.0, |(_, rss)| rss as f64 / 1024.0);
    center.reset_peak_memory();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let alliance = Arc::new(alliance);

    // The intruder, at the credit center's limits for the whole run.
    let intruder = tokio::spawn(hold_limits(alliance.clone(), deadline));
    // The credit center's descriptors and the operator's view, sampled.
    let sampler = tokio::spawn(sample_center(alliance.clone(), deadline));

    let mut tasks = tokio::task::JoinSet::new();
    for (b, bank) in bank_ids.iter().enumerate() {
        let (alliance, bank) = (alliance.clone(), bank.clone());
        let want: BTreeSet<String> =
            data[b].applicants.iter().filter(|c| listed_set.contains(c)).cloned().collect();
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            let id = format!("credit-center.load-psi-{bank}");
            while Instant::now() < deadline {
                let began = Instant::now();
                let result = match alliance.node(&bank) {
                    Ok(node) => node.run("psi", &id).await,
                    Err(e) => Err(e),
                };
                let right = result.as_ref().map(|report| {
                    let got: BTreeSet<String> = report["intersection"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                        .unwrap_or_default();
                    got == want
                });
                outcomes.push(("psi", began.elapsed().as_secs_f64(), right.map_err(reason_of)));
            }
            outcomes
        });
    }
    {
        let alliance = alliance.clone();
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            // Each contract runs once per epoch of its own (its `not_before` + k·15 s).
            let mut last_epoch: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < deadline {
                let now = contracts::now();
                let due: Vec<(String, Vec<u64>)> = secagg_ids
                    .iter()
                    .filter(|(id, _, not_before)| {
                        let epoch = now.saturating_sub(*not_before) / SECAGG_EPOCH_SECONDS;
                        last_epoch.get(id) != Some(&epoch)
                    })
                    .map(|(id, want, _)| (id.clone(), want.clone()))
                    .collect();
                if due.is_empty() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                for (id, _, not_before) in &secagg_ids {
                    if due.iter().any(|(d, _)| d == id) {
                        last_epoch.insert(id.clone(), now.saturating_sub(*not_before) / SECAGG_EPOCH_SECONDS);
                    }
                }
                let mut runs = tokio::task::JoinSet::new();
                for (id, want) in due {
                    let alliance = alliance.clone();
                    runs.spawn(async move {
                        let began = Instant::now();
                        let result = match alliance.node("credit-center") {
                            Ok(node) => node.run("secagg", &id).await,
                            Err(e) => Err(e),
                        };
                        let right = result.map(|report| {
                            let got: Vec<u64> = report["sum"]
                                .as_array()
                                .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                                .unwrap_or_default();
                            got == want
                        });
                        ("secagg", began.elapsed().as_secs_f64(), right.map_err(|e| reason_of(&e)))
                    });
                }
                while let Some(Ok(outcome)) = runs.join_next().await {
                    outcomes.push(outcome);
                }
            }
            outcomes
        });
    }
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut failed: BTreeMap<&str, u64> = BTreeMap::new();
    let mut wrong: BTreeMap<&str, u64> = BTreeMap::new();
    let mut failures_by_reason = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        for (kind, seconds, outcome) in joined? {
            match outcome {
                Ok(right) => {
                    times.entry(kind).or_default().push(seconds);
                    *wrong.entry(kind).or_default() += u64::from(!right);
                }
                Err(reason) => {
                    *failed.entry(kind).or_default() += 1;
                    *failures_by_reason.entry(format!("{kind}: {reason}")).or_insert(0) += 1;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let intruder = intruder.await??;
    let (center_peak_open_fds, operator_status_max_s) = sampler.await??;
    let center = alliance.node("credit-center")?;
    let center_peak_rss_mib = center.memory_kib().map_or(0.0, |(hwm, _)| hwm as f64 / 1024.0);
    let psi = stats(
        times.remove("psi").unwrap_or_default(),
        failed.remove("psi").unwrap_or(0),
        wrong.remove("psi").unwrap_or(0),
    );
    let secagg = stats(
        times.remove("secagg").unwrap_or_default(),
        failed.remove("secagg").unwrap_or(0),
        wrong.remove("secagg").unwrap_or(0),
    );
    let jobs_per_minute = (psi.completed + secagg.completed) as f64 * 60.0 / elapsed;
    if let Ok(mut alliance) = Arc::try_unwrap(alliance) {
        alliance.stop_all();
    }
    Ok(LoadBench {
        banks,
        seconds: elapsed,
        psi,
        secagg,
        jobs_per_minute,
        failures_by_reason,
        intruder,
        center_rss_before_mib,
        center_peak_rss_mib,
        center_peak_open_fds,
        operator_status_max_s,
    })
}

async fn dial(from: &NodeHandle, to: &NodeHandle) -> Result<tonic::transport::Channel> {
    let auth = xmcredit_node::server::client_auth(&NodeConfig::load(&from.config)?)?;
    Ok(xmcredit_node::transport::connect(&to.address, &to.id, auth, Duration::from_secs(5)).await?)
}

/// Raw TCP connections, authenticated connections up to the per-peer limit and past
/// it, and silent PSI streams kept at the session limit (topped up as the node drops
/// them at its hello deadline), until `deadline`.
async fn hold_limits(alliance: Arc<Alliance>, deadline: Instant) -> Result<IntruderReport> {
    let center = alliance.node("credit-center")?;
    let intruder = alliance.node(INTRUDER)?;
    let limits = NodeConfig::load(&center.config)?.limits;
    let mut report = IntruderReport::default();
    let mut raw = Vec::new();
    for _ in 0..200 {
        if let Ok(stream) = TcpStream::connect(&center.address).await {
            raw.push(stream);
        }
    }
    report.raw_tcp_held = raw.len();
    let mut channels = Vec::new();
    for _ in 0..limits.max_connections_per_peer + 4 {
        match dial(intruder, center).await {
            Ok(channel) => channels.push(channel),
            Err(_) => report.connections_refused += 1,
        }
    }
    report.connections_held = channels.len();
    let (results_tx, mut results) = tokio::sync::mpsc::channel::<Option<tonic::Code>>(1024);
    let mut senders = Vec::new();
    while Instant::now() < deadline && !channels.is_empty() {
        // Past the session limit each round: the surplus must be refused.
        for i in 0..limits.max_sessions_per_peer + 4 {
            let (frames_tx, frames_rx) = tokio::sync::mpsc::channel::<proto::Frame>(1);
            senders.push(frames_tx);
            let mut client = peer_client(channels[i % channels.len()].clone());
            let results_tx = results_tx.clone();
            tokio::spawn(async move {
                let answer = client.psi(tokio_stream::wrappers::ReceiverStream::new(frames_rx)).await;
                let _ = results_tx.send(answer.err().map(|s| s.code())).await;
            });
            report.streams_opened += 1;
        }
        let pause = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(5));
        tokio::time::sleep(pause).await;
        while let Ok(code) = results.try_recv() {
            report.streams_refused_resource_exhausted +=
                u64::from(code == Some(tonic::Code::ResourceExhausted));
        }
    }
    drop((raw, channels, senders));
    Ok(report)
}

/// Samples the credit center's open descriptors and times the operator's `status`.
async fn sample_center(alliance: Arc<Alliance>, deadline: Instant) -> Result<(usize, f64)> {
    let center = alliance.node("credit-center")?;
    let (mut fds, mut status_max) = (0usize, 0f64);
    while Instant::now() < deadline {
        if let Some(pid) = center.pid() {
            fds = fds.max(std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()));
        }
        let began = Instant::now();
        center.status().await.context("the operator's status during the load")?;
        status_max = status_max.max(began.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok((fds, status_max))
}
