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

fn now() -> u64 {
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
