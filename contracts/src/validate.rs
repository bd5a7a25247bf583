//! Well-formedness: the rules a contract must satisfy before anyone signs or runs it.
//! Each refusal is [`ContractError::Malformed`] with the path of the field at fault.
//! These rules depend on the document alone (no time, no signatures, no schema).

use std::collections::BTreeSet;

use xmcredit_crypto::count_noise::count_noise_half;
use xmcredit_crypto::noise::{skellam_tail_bound, MAX_VARIANCE};
use xmcredit_crypto::NodeId;

use crate::canonical::MAX_SAFE_INTEGER;
use crate::data::is_identifier;
use crate::document::{
    Computation, ComputationKind, Contract, CountNoise, DatasetUse, LookupOutput, OutputForm, PsiOutput,
    Role, SumNoise,
};
use crate::error::list;
use crate::key::KeyKind;
use crate::scorecard::{bounds, MAX_RULES};
use crate::ContractError;

/// The most characters a purpose may have.
pub const MAX_PURPOSE_CHARS: usize = 2000;
/// The largest `limits.max_set_size` of an overthreshold contract: 2^32 items per bank,
/// so that with 1024 banks the tags (40 + 2·42 bits) still fit 128 bits.
pub const MAX_OVERTHRESHOLD_SET: u64 = 1 << 32;
/// The most groups (vector entries) a secagg contract may declare.
pub const MAX_GROUPS: usize = 1 << 16;

fn malformed(field: impl Into<String>, reason: impl Into<String>) -> ContractError {
    ContractError::Malformed { field: field.into(), reason: reason.into() }
}

/// (role, fewest parties holding it, most parties holding it).
fn role_counts(kind: ComputationKind) -> &'static [(Role, usize, usize)] {
    match kind {
        ComputationKind::Psi => &[(Role::Server, 1, 1), (Role::Client, 1, 1)],
        ComputationKind::Overthreshold => {
            &[(Role::Coordinator, 1, 1), (Role::Committee, 1, usize::MAX), (Role::Contributor, 2, usize::MAX)]
        }
        ComputationKind::Secagg => &[(Role::Coordinator, 1, 1), (Role::Contributor, 2, usize::MAX)],
        ComputationKind::Lookup => {
            &[(Role::Coordinator, 1, 1), (Role::Provider, 1, usize::MAX), (Role::Querier, 1, usize::MAX)]
        }
    }
}

impl Contract {
    /// Checks every well-formedness rule (ARCHITECTURE.md, "Contracts"), naming the field
    /// of the first one broken.
    pub fn validate(&self) -> Result<(), ContractError> {
        self.validate_header()?;
        self.validate_parties()?;
        self.validate_datasets()?;
        self.validate_keys()?;
        self.validate_computation()?;
        self.validate_receivers()?;
        self.validate_limits()
    }

    fn validate_header(&self) -> Result<(), ContractError> {
        if self.version == 0 {
            return Err(malformed("version", "versions start at 1"));
        }
        if self.purpose.trim().is_empty() {
            return Err(malformed("purpose", "must say what the contract is for"));
        }
        if self.purpose.chars().count() > MAX_PURPOSE_CHARS {
            return Err(malformed("purpose", format!("longer than {MAX_PURPOSE_CHARS} characters")));
        }
        if self.purpose.chars().any(|c| c.is_control() && c != '\n') {
            return Err(malformed("purpose", "control characters other than a line break are not allowed"));
        }
        let max = MAX_SAFE_INTEGER as u64;
        if self.not_after > max {
            return Err(malformed("not_after", "beyond 2^53-1"));
        }
        if self.not_before >= self.not_after {
            return Err(malformed(
                "not_after",
                format!("{} is not after not_before {}", self.not_after, self.not_before),
            ));
        }
        if self.epoch_seconds == 0 || self.epoch_seconds > max {
            return Err(malformed("epoch_seconds", "must be between 1 and 2^53-1"));
        }
        Ok(())
    }

    fn validate_parties(&self) -> Result<(), ContractError> {
        let kind = self.kind();
        if self.parties.len() < 2 {
            return Err(malformed("parties", "a contract needs at least two parties"));
        }
        let allowed: Vec<Role> = role_counts(kind).iter().map(|(role, _, _)| *role).collect();
        for (i, party) in self.parties.iter().enumerate() {
            let field = format!("parties[{i}]");
            if self.parties[..i].iter().any(|p| p.node == party.node) {
                return Err(malformed(format!("{field}.node"), format!("{} is listed twice", party.node)));
            }
            if self.parties[..i].iter().any(|p| p.public_key == party.public_key) {
                return Err(malformed(
                    format!("{field}.public_key"),
                    "the same key is listed for two parties",
                ));
            }
            if party.roles.is_empty() {
                return Err(malformed(format!("{field}.roles"), "a party needs at least one role"));
            }
            for (j, role) in party.roles.iter().enumerate() {
                if party.roles[..j].contains(role) {
                    return Err(malformed(format!("{field}.roles"), format!("{role} is listed twice")));
                }
                if !allowed.contains(role) {
                    return Err(malformed(
                        format!("{field}.roles"),
                        format!(
                            "role {role} has no place in a {kind} computation (allowed: {})",
                            list(&allowed)
                        ),
                    ));
                }
            }
            if let Some(name) = &party.name {
                if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control)
                {
                    return Err(malformed(format!("{field}.name"), "must be 1 to 200 printable characters"));
                }
            }
        }
        for (role, fewest, most) in role_counts(kind) {
            let count = self.parties_with(*role).count();
            if count < *fewest || count > *most {
                let wanted =
                    if fewest == most { format!("exactly {fewest}") } else { format!("at least {fewest}") };
                return Err(malformed(
                    "parties",
                    format!("a {kind} computation needs {wanted} {role}, found {count}"),
                ));
            }
        }
        if let Some(both) =
            self.parties.iter().find(|p| p.roles.contains(&Role::Server) && p.roles.contains(&Role::Client))
        {
            return Err(malformed("parties", format!("{} cannot be both server and client", both.node)));
        }
        if self.proposer().is_none() {
            let example = self.parties.first().map(|p| p.node.as_str()).unwrap_or("credit-center");
            return Err(malformed(
                "id",
                format!(
                    "{:?} is not scoped by its proposer: a contract id is `<proposer node id>.<name>` with the proposer one of the parties (e.g. \"{example}.{}\"), so no party can take another's id",
                    self.id.as_str(),
                    self.id.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// The party that scopes this contract's id: the node id before the first `.` of
    /// `id` (node ids have no `.`), if it is a party. Only that party may propose the
    /// contract, and nodes accept it only with that party's signature.
    pub fn proposer(&self) -> Option<&NodeId> {
        let (scope, name) = self.id.as_str().split_once('.')?;
        if name.is_empty() {
            return None;
        }
        self.parties.iter().map(|p| &p.node).find(|node| node.as_str() == scope)
    }

    fn validate_datasets(&self) -> Result<(), ContractError> {
        for (i, dataset) in self.datasets.iter().enumerate() {
            let field = format!("datasets[{i}]");
            let Some(party) = self.party(&dataset.party) else {
                return Err(malformed(format!("{field}.party"), format!("{} is not a party", dataset.party)));
            };
            if !party.roles.iter().any(|r| r.holds_data()) {
                return Err(malformed(
                    format!("{field}.party"),
                    format!("{} brings no data in its roles ({})", dataset.party, list(&party.roles)),
                ));
            }
            if let Some(role) = dataset.role {
                if !party.roles.contains(&role) || !role.holds_data() {
                    return Err(malformed(
                        format!("{field}.role"),
                        format!(
                            "{} brings no data as {role} (its roles: {})",
                            dataset.party,
                            list(&party.roles)
                        ),
                    ));
                }
            }
            if let Some(earlier) = self.datasets[..i].iter().find(|d| d.party == dataset.party) {
                // Only a lookup party that provides and queries brings two: one per role.
                let one_per_role = self.kind() == ComputationKind::Lookup
                    && earlier.role.is_some()
                    && dataset.role.is_some()
                    && earlier.role != dataset.role
                    && earlier.name != dataset.name;
                if !one_per_role {
                    return Err(malformed(
                        format!("{field}.party"),
                        format!(
                            "{} has two datasets (only a lookup provider that also queries brings two: different ones, each with its `role`)",
                            dataset.party
                        ),
                    ));
                }
            }
            validate_dataset_names(dataset, &field)?;
            let is_provider = self.kind() == ComputationKind::Lookup
                && party.roles.contains(&Role::Provider)
                && dataset.role.is_none_or(|r| r == Role::Provider);
            let sums_a_column =
                matches!(self.computation, Computation::Lookup { output: LookupOutput::Value, .. });
            if is_provider && sums_a_column {
                if dataset.columns.len() != 1 || !dataset.rules.is_empty() {
                    return Err(malformed(
                        format!("{field}.columns"),
                        "output \"value\" sums one column: a provider names exactly that column and no rules",
                    ));
                }
                continue;
            }
            if !dataset.rules.is_empty() && !is_provider {
                return Err(malformed(
                    format!("{field}.rules"),
                    "only a lookup provider's dataset carries rules",
                ));
            }
            if dataset.rules.len() > MAX_RULES {
                return Err(malformed(format!("{field}.rules"), format!("more than {MAX_RULES} rules")));
            }
            for (j, rule) in dataset.rules.iter().enumerate() {
                let field = format!("{field}.rules[{j}]");
                rule.check_shape().map_err(|reason| malformed(field.clone(), reason))?;
                if !dataset.columns.contains(&rule.column) {
                    return Err(malformed(
                        format!("{field}.column"),
                        format!(
                            "{} is not among the dataset's columns ({})",
                            rule.column,
                            list(&dataset.columns)
                        ),
                    ));
                }
            }
            if is_provider && dataset.rules.is_empty() {
                return Err(malformed(format!("{field}.rules"), "a lookup provider needs at least one rule"));
            }
        }
        for party in self.parties.iter().filter(|p| p.roles.iter().any(|r| r.holds_data())) {
            if self.dataset_of(&party.node).is_none() {
                return Err(malformed(
                    "datasets",
                    format!("{} brings data but no dataset is named for it", party.node),
                ));
            }
            let both = party.roles.contains(&Role::Provider) && party.roles.contains(&Role::Querier);
            let per_role = [Role::Provider, Role::Querier]
                .iter()
                .all(|role| self.datasets.iter().any(|d| d.party == party.node && d.role == Some(*role)));
            if both && !per_role {
                return Err(malformed(
                    "datasets",
                    format!(
                        "{} provides and queries: it names two datasets, one with role \"provider\" and one with role \"querier\"",
                        party.node
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Datasets that are matched against each other share one key definition (PSI,
    /// overthreshold); a lookup's keys, and a secagg's in universe mode, are the
    /// universe's entity codes.
    fn validate_keys(&self) -> Result<(), ContractError> {
        let codes_only = match &self.computation {
            Computation::Psi { .. } | Computation::Overthreshold { .. } => false,
            Computation::Lookup { .. } => true,
            Computation::Secagg { groups, .. } if groups.is_empty() => true,
            Computation::Secagg { .. } => return Ok(()),
        };
        let Some(first) = self.datasets.first() else { return Ok(()) };
        for (i, dataset) in self.datasets.iter().enumerate() {
            if codes_only && !dataset.key_kind.is_entity_code() {
                return Err(malformed(
                    format!("datasets[{i}].key_kind"),
                    format!(
                        "{}'s dataset is keyed by {}; a {} over the universe of registered entities needs {}",
                        dataset.party,
                        dataset.key_kind.definition(),
                        self.kind(),
                        KeyKind::EntityCode.definition()
                    ),
                ));
            }
            if !codes_only && dataset.key_kind != first.key_kind {
                return Err(ContractError::KeyDefinitionsDiffer {
                    computation: self.kind().to_string(),
                    party: first.party.clone(),
                    definition: first.key_kind.definition(),
                    other_party: dataset.party.clone(),
                    other_definition: dataset.key_kind.definition(),
                });
            }
        }
        Ok(())
    }

    fn validate_computation(&self) -> Result<(), ContractError> {
        let contributors = self.parties_with(Role::Contributor).count();
        match &self.computation {
            Computation::Psi { output, label_columns, noise } => {
                if let Some(noise) = noise {
                    validate_count_noise(*output, noise)?;
                }
                if (*output == PsiOutput::Labels) == label_columns.is_empty() {
                    return Err(malformed(
                        "computation.label_columns",
                        "required for output \"labels\" and only for it",
                    ));
                }
                let server = self.parties_with(Role::Server).next().map(|p| p.node.clone());
                let columns = server.as_ref().and_then(|s| self.dataset_of(s)).map(|d| &d.columns);
                for (i, column) in label_columns.iter().enumerate() {
                    if label_columns[..i].contains(column) {
                        return Err(malformed(
                            "computation.label_columns",
                            format!("{column} is listed twice"),
                        ));
                    }
                    if !columns.is_some_and(|c| c.contains(column)) {
                        return Err(malformed(
                            "computation.label_columns",
                            format!("{column} is not a column of the server's dataset"),
                        ));
                    }
                }
            }
            Computation::Overthreshold { threshold } => {
                let t = *threshold as usize;
                if t < 2 || t > contributors {
                    return Err(malformed(
                        "computation.threshold",
                        format!("must be between 2 and the {contributors} contributors, is {threshold}"),
                    ));
                }
            }
            Computation::Secagg { threshold, value_column, group_column, groups, .. } => {
                // The protocol needs t >= 2: with t = 1 one share is the secret, so any
                // single share the coordinator collects unmasks a contributor.
                let t = *threshold as usize;
                if t < 2 || t > contributors {
                    return Err(malformed(
                        "computation.threshold",
                        format!("must be between 2 and the {contributors} contributors, is {threshold}"),
                    ));
                }
                for (field, column) in [("value_column", value_column), ("group_column", group_column)] {
                    if !is_identifier(column) {
                        return Err(malformed(
                            format!("computation.{field}"),
                            format!("{column:?} is not a column name"),
                        ));
                    }
                }
                if value_column == group_column {
                    return Err(malformed("computation.group_column", "must differ from value_column"));
                }
                // `groups = []` is universe mode: the vector has one entry per code of the
                // public universe of registered entities, which the coordinator publishes
                // for each session; the group column is then every contributor's key.
                if groups.len() > MAX_GROUPS {
                    return Err(malformed(
                        "computation.groups",
                        format!("must have at most {MAX_GROUPS} entries (none: the universe)"),
                    ));
                }
                for (i, group) in groups.iter().enumerate() {
                    if group.trim().is_empty() || groups[..i].contains(group) {
                        return Err(malformed(format!("computation.groups[{i}]"), "empty or listed twice"));
                    }
                }
                for contributor in self.parties_with(Role::Contributor) {
                    let Some(dataset) = self.dataset_of(&contributor.node) else { continue };
                    if groups.is_empty() && dataset.key != *group_column {
                        return Err(malformed(
                            "computation.group_column",
                            format!(
                                "with no groups (the universe) it must be the key column; {}'s dataset {} is keyed by {}",
                                contributor.node, dataset.name, dataset.key
                            ),
                        ));
                    }
                    for column in [value_column, group_column] {
                        let is_key_group = column == group_column && dataset.key == *column;
                        if !dataset.columns.contains(column) && !is_key_group {
                            return Err(malformed(
                                "datasets",
                                format!(
                                    "{}'s dataset {} lacks column {column}",
                                    contributor.node, dataset.name
                                ),
                            ));
                        }
                    }
                }
            }
            Computation::Lookup { output, scale } => {
                if *output == LookupOutput::Bitmask && self.parties_with(Role::Provider).count() != 1 {
                    return Err(malformed("computation.output", "a bit mask needs exactly one provider"));
                }
                if *scale != 0 && *output != LookupOutput::Value {
                    return Err(malformed("computation.scale", "only output \"value\" has a scale"));
                }
                if *scale > crate::data::MAX_SCALE {
                    return Err(malformed(
                        "computation.scale",
                        format!("at most {} decimal places", crate::data::MAX_SCALE),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_receivers(&self) -> Result<(), ContractError> {
        if self.receivers.is_empty() {
            return Err(malformed("receivers", "someone must receive the output"));
        }
        for (i, receiver) in self.receivers.iter().enumerate() {
            let field = format!("receivers[{i}]");
            let Some(party) = self.party(&receiver.node) else {
                return Err(malformed(format!("{field}.node"), format!("{} is not a party", receiver.node)));
            };
            if self.receivers[..i].iter().any(|r| r.node == receiver.node) {
                return Err(malformed(format!("{field}.node"), format!("{} is listed twice", receiver.node)));
            }
            let needed_role = match (self.kind(), receiver.form) {
                (ComputationKind::Overthreshold, OutputForm::OwnMatches) => Some(Role::Contributor),
                (ComputationKind::Overthreshold, OutputForm::Histogram) => Some(Role::Coordinator),
                (ComputationKind::Secagg, OutputForm::Sum) => None,
                (ComputationKind::Lookup, OutputForm::Scores) => Some(Role::Querier),
                (
                    ComputationKind::Psi,
                    OutputForm::Intersection | OutputForm::Cardinality | OutputForm::Labels,
                ) => None,
                (kind, form) => {
                    return Err(malformed(
                        format!("{field}.form"),
                        format!("{form} is not an output of {kind}"),
                    ))
                }
            };
            if let Some(role) = needed_role {
                if !party.roles.contains(&role) {
                    return Err(malformed(
                        format!("{field}.form"),
                        format!("{} output goes to a {role}; {} is not one", receiver.form, receiver.node),
                    ));
                }
            }
        }
        match &self.computation {
            Computation::Psi { output, .. } => {
                let client = self.parties_with(Role::Client).next().map(|p| p.node.clone());
                let server = self.parties_with(Role::Server).next().map(|p| p.node.clone());
                let expected: Vec<(Option<NodeId>, OutputForm)> = match output {
                    PsiOutput::Intersection => vec![(client, OutputForm::Intersection)],
                    PsiOutput::Cardinality => vec![(client, OutputForm::Cardinality)],
                    PsiOutput::Labels => vec![(client, OutputForm::Labels)],
                    PsiOutput::Both => {
                        vec![(client, OutputForm::Intersection), (server, OutputForm::Intersection)]
                    }
                };
                let mut expected: Vec<(String, OutputForm)> =
                    expected.into_iter().map(|(n, f)| (n.map(String::from).unwrap_or_default(), f)).collect();
                expected.sort_by(|a, b| a.0.cmp(&b.0));
                let mut actual: Vec<(String, OutputForm)> =
                    self.receivers.iter().map(|r| (r.node.to_string(), r.form)).collect();
                actual.sort_by(|a, b| a.0.cmp(&b.0));
                if actual != expected {
                    let wanted: Vec<String> = expected.iter().map(|(n, f)| format!("{n} ({f})")).collect();
                    return Err(malformed(
                        "receivers",
                        format!("psi output {output:?} means: {}", list(&wanted)),
                    ));
                }
            }
            Computation::Lookup { .. } => {
                if let Some(q) = self.parties_with(Role::Querier).find(|q| self.receiver(&q.node).is_none()) {
                    return Err(malformed(
                        "receivers",
                        format!("querier {} must receive its scores", q.node),
                    ));
                }
            }
            Computation::Overthreshold { .. } | Computation::Secagg { .. } => {}
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ContractError> {
        let kind = self.kind();
        let limits = &self.limits;
        let max = MAX_SAFE_INTEGER as u64;
        for (node, size) in &limits.min_set_size {
            let field = format!("limits.min_set_size.{node}");
            let Some(party) = self.party(node) else {
                return Err(malformed(field, format!("{node} is not a party")));
            };
            if !party.roles.iter().any(|r| r.holds_data()) {
                return Err(malformed(field, format!("{node} brings no set")));
            }
            if *size == 0 || *size > max {
                return Err(malformed(field, "must be between 1 and 2^53-1"));
            }
        }
        let must_name: Vec<&NodeId> = match kind {
            ComputationKind::Psi => self.parties.iter().map(|p| &p.node).collect(),
            ComputationKind::Overthreshold => self.parties_with(Role::Contributor).map(|p| &p.node).collect(),
            ComputationKind::Secagg | ComputationKind::Lookup => Vec::new(),
        };
        if let Some(node) = must_name.into_iter().find(|n| !limits.min_set_size.contains_key(*n)) {
            return Err(malformed(
                "limits.min_set_size",
                format!("a {kind} contract sets the minimum for {node}"),
            ));
        }

        // Lookups: every querier has a daily quota. PSI: the client has one (the server
        // counts the elements it evaluates for it per day). Nobody else can.
        // Overthreshold: every contributor has one too, counted by each committee member
        // (a contributor could otherwise test guessed ids, run after run).
        let (quota_role, who) = match kind {
            ComputationKind::Psi => (Role::Client, "exactly the client"),
            ComputationKind::Overthreshold => (Role::Contributor, "exactly the contributors"),
            _ => (Role::Querier, "exactly the queriers"),
        };
        let must_have_quota: BTreeSet<&NodeId> = self.parties_with(quota_role).map(|p| &p.node).collect();
        let quota_named: BTreeSet<&NodeId> = limits.lookups_per_day.keys().collect();
        // A PSI client must have a quota too: a minimum set size alone does not stop a
        // client from padding one target with dummies, run after run.
        if quota_named != must_have_quota {
            return Err(malformed(
                "limits.lookups_per_day",
                format!("must name {who} ({})", list(&must_have_quota.iter().copied().collect::<Vec<_>>())),
            ));
        }
        if let Some((node, _)) = limits.lookups_per_day.iter().find(|(_, n)| **n == 0 || **n > max) {
            return Err(malformed(format!("limits.lookups_per_day.{node}"), "must be between 1 and 2^53-1"));
        }

        let contributors = match kind {
            ComputationKind::Lookup => self.parties_with(Role::Provider).count(),
            _ => self.parties_with(Role::Contributor).count(),
        };
        let threshold = match self.computation {
            Computation::Overthreshold { threshold } | Computation::Secagg { threshold, .. } => threshold,
            _ => 1,
        };
        match (kind, limits.min_contributors) {
            (ComputationKind::Psi, Some(_)) => {
                return Err(malformed("limits.min_contributors", "psi has no contributors"))
            }
            (ComputationKind::Overthreshold | ComputationKind::Secagg, None) => {
                return Err(malformed("limits.min_contributors", format!("a {kind} contract must set it")))
            }
            (_, Some(n)) => {
                let fewest = threshold.max(if kind == ComputationKind::Lookup { 1 } else { 2 });
                if n < fewest || n as usize > contributors {
                    return Err(malformed(
                        "limits.min_contributors",
                        format!("must be between {fewest} and the {contributors} named, is {n}"),
                    ));
                }
            }
            _ => {}
        }

        match (kind, limits.output_bits) {
            (ComputationKind::Secagg | ComputationKind::Lookup, None) => {
                return Err(malformed("limits.output_bits", format!("a {kind} contract must set it")))
            }
            (ComputationKind::Psi | ComputationKind::Overthreshold, Some(_)) => {
                return Err(malformed("limits.output_bits", format!("{kind} has no summed output")))
            }
            (_, Some(bits)) if !(1..=64).contains(&bits) => {
                return Err(malformed("limits.output_bits", "must be between 1 and 64"))
            }
            _ => {}
        }
        match (kind, limits.max_set_size) {
            (ComputationKind::Overthreshold, None) => {
                return Err(malformed(
                    "limits.max_set_size",
                    "an overthreshold contract must set it (it fixes the tag length every party derives)",
                ))
            }
            (ComputationKind::Overthreshold, Some(n)) if n == 0 || n > MAX_OVERTHRESHOLD_SET => {
                return Err(malformed(
                    "limits.max_set_size",
                    format!("must be between 1 and {MAX_OVERTHRESHOLD_SET}, is {n}"),
                ))
            }
            (ComputationKind::Overthreshold, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(malformed(
                    "limits.max_set_size",
                    format!("only overthreshold sets it, not {kind}"),
                ))
            }
        }
        if let (Computation::Lookup { output, .. }, Some(bits)) = (&self.computation, limits.output_bits) {
            self.validate_lookup_width(*output, bits)?;
        }
        if let (ComputationKind::Secagg, Some(bits)) = (kind, limits.output_bits) {
            validate_secagg_width(contributors, bits)?;
            if let Computation::Secagg { noise: Some(noise), .. } = &self.computation {
                validate_secagg_noise(contributors, bits, noise)?;
            }
        }
        Ok(())
    }

    /// The sum of every provider's contribution must fit `output_bits`, so it cannot wrap.
    fn validate_lookup_width(&self, output: LookupOutput, bits: u32) -> Result<(), ContractError> {
        let provider_rules: Vec<&DatasetUse> = self
            .parties_with(Role::Provider)
            .filter_map(|p| self.dataset_for(&p.node, Role::Provider))
            .collect();
        match output {
            LookupOutput::Bitmask => {
                let rules = provider_rules.iter().map(|d| d.rules.len()).sum::<usize>();
                if rules > bits as usize {
                    return Err(malformed(
                        "limits.output_bits",
                        format!("a bit mask of {rules} rules needs {rules} bits, only {bits} are declared"),
                    ));
                }
            }
            // Values are only known to their providers: each refuses one that could make
            // the sum wrap (`value_bound`).
            LookupOutput::Value => {}
            LookupOutput::Points => {
                let (lo, hi) = bounds(provider_rules.iter().flat_map(|d| d.rules.iter().map(|r| r.points)));
                let (min, max) = if lo >= 0 {
                    (0i128, (1i128 << bits) - 1)
                } else {
                    (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                };
                if i128::from(lo) < min || i128::from(hi) > max {
                    return Err(malformed(
                        "limits.output_bits",
                        format!("scores range over [{lo}, {hi}], which does not fit {bits} bits"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The sum of `contributors` vectors of `bits`-bit entries is computed mod 2^64; it is
/// the exact sum only when `contributors × (2^bits − 1) <= 2^64 − 1`.
fn validate_secagg_width(contributors: usize, bits: u32) -> Result<(), ContractError> {
    let largest = (contributors as u128).saturating_mul((1u128 << bits) - 1);
    if largest > u128::from(u64::MAX) {
        return Err(malformed(
            "limits.output_bits",
            format!("{contributors} contributors × (2^{bits} − 1) exceeds 2^64 − 1: the sum could wrap"),
        ));
    }
    Ok(())
}

/// Count noise only on a cardinality (every other form hands out elements, which no
/// count noise hides), with ε the protocol accepts.
fn validate_count_noise(output: PsiOutput, noise: &CountNoise) -> Result<(), ContractError> {
    if output != PsiOutput::Cardinality {
        return Err(malformed(
            "computation.noise",
            format!("noise is for output \"cardinality\" only; this contract's output is {output:?}"),
        ));
    }
    if let Err(e) = count_noise_half(noise.epsilon_milli()) {
        return Err(malformed("computation.noise.epsilon_milli", e.to_string()));
    }
    Ok(())
}

/// Noise must be one a sampler accepts, and sum plus noise must decode as a signed
/// 64-bit integer: `n × (2^bits − 1)` plus the noise's tail bound stays below 2^63.
fn validate_secagg_noise(contributors: usize, bits: u32, noise: &SumNoise) -> Result<(), ContractError> {
    let variance = noise.variance();
    if !(1..=MAX_VARIANCE).contains(&variance) {
        return Err(malformed("computation.noise.variance", "must be between 1 and 2^50"));
    }
    if noise.sensitivity() == 0 {
        return Err(malformed("computation.noise.sensitivity", "must be at least 1"));
    }
    let largest = (contributors as u128) * ((1u128 << bits) - 1) + u128::from(skellam_tail_bound(variance));
    if largest > i64::MAX as u128 {
        return Err(malformed(
            "limits.output_bits",
            format!(
                "with noise the sum is decoded as signed: {contributors} contributors × (2^{bits} − 1) plus the noise's bound exceeds 2^63 − 1"
            ),
        ));
    }
    Ok(())
}

fn validate_dataset_names(dataset: &DatasetUse, field: &str) -> Result<(), ContractError> {
    if !is_identifier(&dataset.name) {
        return Err(malformed(format!("{field}.name"), format!("{:?} is not a dataset name", dataset.name)));
    }
    if !is_identifier(&dataset.key) {
        return Err(malformed(format!("{field}.key"), format!("{:?} is not a column name", dataset.key)));
    }
    for (i, column) in dataset.columns.iter().enumerate() {
        if !is_identifier(column) {
            return Err(malformed(
                format!("{field}.columns[{i}]"),
                format!("{column:?} is not a column name"),
            ));
        }
        if *column == dataset.key || dataset.columns[..i].contains(column) {
            return Err(malformed(format!("{field}.columns[{i}]"), format!("{column} is listed twice")));
        }
    }
    Ok(())
}
