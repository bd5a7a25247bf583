//! Contract documents the simulated parties sign, written as an operator would write
//! them (TOML), with the parties' real identity keys.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// One party of a contract: node id, identity public key (hex), roles.
#[derive(Debug, Clone)]
pub struct PartyLine<'a> {
    pub node: &'a str,
    pub public_key: &'a str,
    pub roles: &'a [&'a str],
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Header common to every contract: id, purpose, a window from an hour ago to 30
/// days from now, daily epochs.
pub fn header(id: &str, purpose: &str) -> String {
    let start = now() - 3600;
    format!(
        "id = \"{id}\"\nversion = 1\npurpose = \"{purpose}\"\nnot_before = {start}\nnot_after = {}\nepoch_seconds = 86400\n\n",
        start + 30 * 86400
    )
}

pub fn parties(text: &mut String, parties: &[PartyLine<'_>]) {
    for party in parties {
        let roles: Vec<String> = party.roles.iter().map(|r| format!("\"{r}\"")).collect();
        let _ = write!(
            text,
            "[[parties]]\nnode = \"{}\"\npublic_key = \"{}\"\nroles = [{}]\n\n",
            party.node,
            party.public_key,
            roles.join(", ")
        );
    }
}

/// The daily quota (elements evaluated per day) the generated PSI contracts give the
/// client: a bank's daily applicant flow with room for a re-run, not millions (issue 10).
pub const PSI_DAILY_QUOTA: u64 = 10_000;

/// A PSI contract between `server` (its `server_dataset`) and `client`
/// (`loan_applicants`), with output form `output` and the given minimum set sizes.
#[allow(clippy::too_many_arguments)]
pub fn psi(
    id: &str,
    purpose: &str,
    server: &PartyLine<'_>,
    server_dataset: &str,
    client: &PartyLine<'_>,
    output: &str,
    label_columns: &[&str],
    min_server: u64,
    min_client: u64,
) -> String {
    let mut text = header(id, purpose);
    let _ = write!(text, "[computation]\nkind = \"psi\"\noutput = \"{output}\"\n");
    if !label_columns.is_empty() {
        let columns: Vec<String> = label_columns.iter().map(|c| format!("\"{c}\"")).collect();
        let _ = writeln!(text, "label_columns = [{}]", columns.join(", "));
    }
    text.push('\n');
    parties(&mut text, &[server.clone(), client.clone()]);
    let columns: Vec<String> = label_columns.iter().map(|c| format!("\"{c}\"")).collect();
    let _ = write!(
        text,
        "[[datasets]]\nparty = \"{}\"\nname = \"{server_dataset}\"\nkey = \"credit_code\"\ncolumns = [{}]\n\n[[datasets]]\nparty = \"{}\"\nname = \"loan_applicants\"\nkey = \"credit_code\"\ncolumns = []\n\n",
        server.node,
        columns.join(", "),
        client.node
    );
    let client_form = match output {
        "both" => "intersection",
        other => other,
    };
    let _ = write!(text, "[[receivers]]\nnode = \"{}\"\nform = \"{client_form}\"\n\n", client.node);
    if output == "both" {
        let _ = write!(text, "[[receivers]]\nnode = \"{}\"\nform = \"intersection\"\n\n", server.node);
    }
    // Every PSI client has a daily quota (the server enforces it); this one is generous,
    // tests of the quota replace the line.
    let _ = write!(
        text,
        "[limits]\nmin_set_size = {{ {} = {min_server}, {} = {min_client} }}\nlookups_per_day = {{ {} = {PSI_DAILY_QUOTA} }}\n",
        server.node, client.node, client.node
    );
    text
}

/// A `psi` cardinality contract (from [`psi`]) with count noise the server adds:
/// ε = `epsilon_milli / 1000` per run, one run per client and epoch.
pub fn with_count_noise(cardinality_toml: &str, epsilon_milli: u32) -> String {
    cardinality_toml.replacen(
        "output = \"cardinality\"\n",
        &format!(
            "output = \"cardinality\"\nnoise = {{ mechanism = \"discrete_laplace\", epsilon_milli = {epsilon_milli} }}\n"
        ),
        1,
    )
}

/// One lookup provider's dataset: its name, the columns its rules read, and the rules
/// as a TOML array (`[{ column = "...", comparison = "...", constant = ..., points = n }, ...]`).
#[derive(Debug, Clone)]
pub struct LookupProvider<'a> {
    pub node: &'a str,
    pub dataset: &'a str,
    pub columns: &'a [&'a str],
    pub rules: &'a str,
}

/// A lookup contract: `parties` (with their roles: one coordinator, the providers, the
/// queriers), the providers' datasets and rules, each querier's `loan_applicants` with
/// `quota` lookups a day, output `points` or `bitmask` over `bits` bits, or `value`
/// (providers name their one column and no rules; sums in fen, scale 2). A querier that
/// is also a provider marks each of its two datasets with its role.
#[allow(clippy::too_many_arguments)]
pub fn lookup(
    id: &str,
    purpose: &str,
    parties_list: &[PartyLine<'_>],
    providers: &[LookupProvider<'_>],
    queriers: &[&str],
    output: &str,
    bits: u32,
    quota: u64,
) -> String {
    lookup_over(id, purpose, parties_list, providers, (queriers, "loan_applicants"), output, bits, quota)
}

/// [`lookup`] with the queriers' dataset named (`queriers.1`), e.g. the suppliers a
/// bank was presented receivables by.
#[allow(clippy::too_many_arguments)]
pub fn lookup_over(
    id: &str,
    purpose: &str,
    parties_list: &[PartyLine<'_>],
    providers: &[LookupProvider<'_>],
    (queriers, querier_dataset): (&[&str], &str),
    output: &str,
    bits: u32,
    quota: u64,
) -> String {
    let mut text = header(id, purpose);
    let scale = if output == "value" { "scale = 2\n" } else { "" };
    let _ = write!(text, "[computation]\nkind = \"lookup\"\noutput = \"{output}\"\n{scale}\n");
    parties(&mut text, parties_list);
    let role_line = |node: &str, role: &str| {
        let both = queriers.contains(&node) && providers.iter().any(|p| p.node == node);
        if both {
            format!("role = \"{role}\"\n")
        } else {
            String::new()
        }
    };
    for provider in providers {
        let columns: Vec<String> = provider.columns.iter().map(|c| format!("\"{c}\"")).collect();
        let rules =
            if provider.rules.is_empty() { String::new() } else { format!("rules = {}\n", provider.rules) };
        let _ = write!(
            text,
            "[[datasets]]\nparty = \"{}\"\n{}name = \"{}\"\nkey = \"credit_code\"\ncolumns = [{}]\n{rules}\n",
            provider.node,
            role_line(provider.node, "provider"),
            provider.dataset,
            columns.join(", "),
        );
    }
    for querier in queriers {
        let _ = write!(
            text,
            "[[datasets]]\nparty = \"{querier}\"\n{}name = \"{querier_dataset}\"\nkey = \"credit_code\"\ncolumns = []\n\n[[receivers]]\nnode = \"{querier}\"\nform = \"scores\"\n\n",
            role_line(querier, "querier")
        );
    }
    let quotas: Vec<String> = queriers.iter().map(|q| format!("{q} = {quota}")).collect();
    let _ = write!(
        text,
        "[limits]\nlookups_per_day = {{ {} }}\nmin_contributors = {}\noutput_bits = {bits}\n",
        quotas.join(", "),
        providers.len()
    );
    text
}

/// The Credit Easy Loan product of the simulator and the tests, as rules on the credit
/// center's `registry`: tax grade A or B, social-insurance headcount >= 5, utility
/// arrears of at most 3 months, not on the dishonesty list (bits 0..=3 in that order).
pub const EASY_LOAN_COLUMNS: &[&str] = &["tax_grade", "si_headcount", "utility_arrears_months", "dishonest"];
pub const EASY_LOAN_RULES: &str = r#"[
  { column = "tax_grade", comparison = "in", constant = ["A", "B"], points = 1 },
  { column = "si_headcount", comparison = "ge", constant = 5, points = 1 },
  { column = "utility_arrears_months", comparison = "le", constant = 3, points = 1 },
  { column = "dishonest", comparison = "eq", constant = false, points = 1 },
]"#;

/// The easy-loan criteria evaluated in the clear on one registry row (what the lookup
/// must reproduce): one flag per rule, in rule order.
pub fn easy_loan_criteria(
    tax_grade: &str,
    si_headcount: i64,
    arrears_months: i64,
    dishonest: bool,
) -> [bool; 4] {
    [matches!(tax_grade, "A" | "B"), si_headcount >= 5, arrears_months <= 3, !dishonest]
}
