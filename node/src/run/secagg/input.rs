//! The contract's secagg parameters, and a contributor's vector made from its dataset.

use std::collections::HashMap;

use xmcredit_contracts::{Computation, DatasetSchema, Role, SumNoise, SurvivorRule, Value, VerifiedContract};

use crate::store::DatasetRow;
use crate::NodeError;

/// What a secagg contract fixes about the vectors and who may be summed.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    /// Shamir threshold `t`, also the fewest contributors any round may go on with.
    pub threshold: usize,
    /// `limits.min_contributors`: the fewest inputs a sum may contain (>= t).
    pub min_contributors: usize,
    pub value_column: String,
    pub group_column: String,
    /// Vector positions; empty in universe mode.
    pub groups: Vec<String>,
    /// `limits.output_bits`: the width of every element of every contributor's vector.
    pub bits: u32,
    /// A `lookup` contract's aggregation: the contributors are its providers other than
    /// the coordinator, each input is its padded vector over the universe
    /// (`run::lookup`), and every contributor must be in the sum.
    pub lookup: bool,
    /// The contract's distributed noise (`computation.noise`); none for lookups.
    pub noise: Option<SumNoise>,
}

impl Params {
    pub(crate) fn of(verified: &VerifiedContract) -> Result<Self, NodeError> {
        let contract = verified.contract();
        if let Computation::Lookup { .. } = &contract.computation {
            let params = crate::run::lookup::Params::of(verified)?;
            let contributors = params.secagg_contributors().len();
            return Ok(Self {
                threshold: contributors,
                min_contributors: contributors,
                value_column: String::new(),
                group_column: String::new(),
                groups: Vec::new(),
                bits: params.width.bits(),
                lookup: true,
                noise: None,
            });
        }
        let Computation::Secagg { threshold, value_column, group_column, groups, survivors, noise } =
            &contract.computation
        else {
            return Err(NodeError::Refused(format!(
                "contract {} is for {}, not secagg",
                verified.id(),
                contract.kind()
            )));
        };
        let bits = contract
            .limits
            .output_bits
            .ok_or_else(|| NodeError::Refused(format!("contract {} sets no output_bits", verified.id())))?;
        // `survivors = "all"` makes every contributor's input necessary: each contributor
        // builds its own setup from the contract with threshold n, so it refuses every
        // round (and every unmask request) that leaves anyone out.
        let contributors = contract.parties_with(Role::Contributor).count();
        let threshold = match survivors {
            SurvivorRule::All => contributors,
            SurvivorRule::Threshold => *threshold as usize,
        };
        let min_contributors =
            contract.limits.min_contributors.map_or(threshold, |m| m as usize).max(threshold);
        Ok(Self {
            threshold,
            min_contributors,
            value_column: value_column.clone(),
            group_column: group_column.clone(),
            groups: groups.clone(),
            bits,
            lookup: false,
            noise: *noise,
        })
    }

    /// `groups = []`: one entry per code of the universe the coordinator publishes.
    pub(crate) fn universe_mode(&self) -> bool {
        self.groups.is_empty()
    }

    /// The fewest contributors a round may go on with: the threshold, or the contract's
    /// minimum number of contributors if that is higher.
    pub(crate) fn fewest(&self) -> usize {
        self.min_contributors.max(self.threshold)
    }
}

/// A contributor's vector and what the node records about how it was made.
pub(crate) struct Input {
    pub values: Vec<u64>,
    /// Rows counted into some entry.
    pub rows_used: usize,
    /// Rows whose group is not a vector position (not counted).
    pub rows_outside: usize,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("len", &self.values.len())
            .field("rows_used", &self.rows_used)
            .field("rows_outside", &self.rows_outside)
            .finish_non_exhaustive()
    }
}

/// Why a vector could not be made. `Display` is what the contributor's operator sees;
/// [`InputError::for_peer`] is what the coordinator is told, which names no row, key or
/// value.
#[derive(Debug)]
pub(crate) enum InputError {
    Schema(String),
    Negative {
        rows: usize,
        first_row: usize,
    },
    TooWide {
        entries: usize,
        first_group: String,
        bits: u32,
    },
    /// The dataset could not be read from the store.
    Read(String),
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Schema(reason) => f.write_str(reason),
            Self::Negative { rows, first_row } => write!(
                f,
                "{rows} rows have a negative value (the first is row {first_row}); secagg sums values >= 0"
            ),
            Self::Read(reason) => write!(f, "reading the dataset: {reason}"),
            Self::TooWide { entries, first_group, bits } => write!(
                f,
                "{entries} entries of this node's input exceed the contract's output_bits = {bits} (the first is group {first_group})"
            ),
        }
    }
}

impl InputError {
    pub(crate) fn for_peer(&self) -> String {
        match self {
            Self::Schema(reason) => reason.clone(),
            Self::Negative { .. } => "the contributor's input has negative values; it does not take part".into(),
            Self::Read(_) => "the contributor could not read its dataset; it does not take part".into(),
            Self::TooWide { bits, .. } => format!(
                "the contributor's input does not fit the contract's output_bits = {bits}; it does not take part"
            ),
        }
    }
}

/// Entry i = the sum of the value column (integer, or decimal units) over the rows whose
/// group is `positions[i]`: the contract's groups, or the universe in universe mode.
/// Refuses negative values and any entry above `2^bits - 1`, before anything is sent.
/// Rows are read one at a time (block by block from the store): the working set is the
/// vector of sums.
pub(crate) fn build(
    params: &Params,
    schema: &DatasetSchema,
    rows: impl IntoIterator<Item = Result<DatasetRow, crate::NodeError>>,
    universe: &[String],
) -> Result<Input, InputError> {
    let (value_index, _) = schema.column(&params.value_column).ok_or_else(|| {
        InputError::Schema(format!("dataset {} has no column {}", schema.name(), params.value_column))
    })?;
    let group_is_key = params.group_column == schema.key();
    let positions: &[String] = if params.universe_mode() { universe } else { &params.groups };
    if params.universe_mode() && !group_is_key {
        return Err(InputError::Schema(format!(
            "universe mode sums by the key column {}, not {}",
            schema.key(),
            params.group_column
        )));
    }
    // Which entry a row adds to: by its key, or by its group column's typed value.
    let by_key: HashMap<&str, usize>;
    let by_value: HashMap<Value, usize>;
    let group_index;
    if group_is_key {
        by_key = positions.iter().enumerate().map(|(i, g)| (g.trim(), i)).collect();
        by_value = HashMap::new();
        group_index = None;
    } else {
        let (index, ty) = schema.column(&params.group_column).ok_or_else(|| {
            InputError::Schema(format!("dataset {} has no column {}", schema.name(), params.group_column))
        })?;
        let mut map = HashMap::with_capacity(positions.len());
        for (i, group) in positions.iter().enumerate() {
            let value = ty.parse_cell(group).map_err(|e| {
                InputError::Schema(format!(
                    "group {group:?} is not a value of column {}: {e}",
                    params.group_column
                ))
            })?;
            map.insert(value, i);
        }
        by_key = HashMap::new();
        by_value = map;
        group_index = Some(index);
    }

    let mut sums = vec![0u128; positions.len()];
    let (mut rows_used, mut rows_outside) = (0, 0);
    let (mut negative, mut first_negative) = (0, 0);
    for (row_number, row) in rows.into_iter().enumerate() {
        let row = row.map_err(|e| InputError::Read(e.to_string()))?;
        let entry = match group_index {
            None => by_key.get(row.key.as_str()).copied(),
            Some(index) => row.values.get(index).and_then(|v| by_value.get(v)).copied(),
        };
        let Some(entry) = entry else {
            rows_outside += 1;
            continue;
        };
        let units = match row.values.get(value_index) {
            Some(Value::Integer(v)) => *v,
            Some(Value::Decimal { units, .. }) => *units,
            _ => {
                return Err(InputError::Schema(format!(
                    "column {} of dataset {} is not an integer or decimal",
                    params.value_column,
                    schema.name()
                )))
            }
        };
        if units < 0 {
            if negative == 0 {
                first_negative = row_number + 1;
            }
            negative += 1;
            continue;
        }
        sums[entry] += units as u128;
        rows_used += 1;
    }
    if negative > 0 {
        return Err(InputError::Negative { rows: negative, first_row: first_negative });
    }
    let max = (1u128 << params.bits) - 1;
    let too_wide: Vec<usize> = (0..sums.len()).filter(|&i| sums[i] > max).collect();
    if let Some(&first) = too_wide.first() {
        return Err(InputError::TooWide {
            entries: too_wide.len(),
            first_group: positions[first].clone(),
            bits: params.bits,
        });
    }
    // Every entry is at most 2^bits - 1 <= 2^64 - 1 (bits <= 64).
    let values = sums.into_iter().map(|s| s as u64).collect();
    Ok(Input { values, rows_used, rows_outside })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use xmcredit_contracts::ColumnType;

    use super::*;

    fn schema() -> DatasetSchema {
        DatasetSchema::new(
            "loans",
            "credit_code",
            vec![
                ("district".into(), ColumnType::Enum { values: vec!["d1".into(), "d2".into(), "d3".into()] }),
                ("outstanding".into(), ColumnType::Decimal { scale: 2 }),
            ],
        )
        .unwrap()
    }

    fn row(key: &str, district: &str, units: i64) -> DatasetRow {
        DatasetRow {
            key: key.into(),
            values: vec![Value::Enum(district.into()), Value::Decimal { units, scale: 2 }],
        }
    }

    fn ok(rows: &[DatasetRow]) -> impl Iterator<Item = Result<DatasetRow, crate::NodeError>> + '_ {
        rows.iter().cloned().map(Ok)
    }

    fn params(group_column: &str, groups: &[&str], bits: u32) -> Params {
        Params {
            threshold: 2,
            min_contributors: 2,
            value_column: "outstanding".into(),
            group_column: group_column.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            bits,
            lookup: false,
            noise: None,
        }
    }

    #[test]
    fn sums_by_group_and_by_universe_key() {
        let rows = vec![row("K1", "d1", 150), row("K2", "d2", 7), row("K3", "d1", 50), row("K4", "d3", 9)];
        let by_district = build(&params("district", &["d2", "d1"], 16), &schema(), ok(&rows), &[]).unwrap();
        assert_eq!(by_district.values, vec![7, 200]);
        assert_eq!((by_district.rows_used, by_district.rows_outside), (3, 1));

        let universe: Vec<String> = ["K0", "K1", "K3"].iter().map(|s| s.to_string()).collect();
        let by_key = build(&params("credit_code", &[], 16), &schema(), ok(&rows), &universe).unwrap();
        assert_eq!(by_key.values, vec![0, 150, 50]);
        assert_eq!((by_key.rows_used, by_key.rows_outside), (2, 2));
    }

    #[test]
    fn refuses_negative_values_and_entries_wider_than_the_contract() {
        let negative = build(&params("district", &["d1"], 16), &schema(), ok(&[row("K1", "d1", -1)]), &[]);
        assert!(matches!(negative, Err(InputError::Negative { rows: 1, first_row: 1 })));

        let rows = vec![row("K1", "d1", 200), row("K2", "d1", 56), row("K3", "d2", 255)];
        let wide = build(&params("district", &["d2", "d1"], 8), &schema(), ok(&rows), &[]).unwrap_err();
        assert!(
            matches!(&wide, InputError::TooWide { entries: 1, first_group, bits: 8 } if first_group == "d1")
        );
        assert!(!wide.for_peer().contains("d1"), "the peer is not told which group");
        assert!(build(&params("district", &["d2", "d1"], 9), &schema(), ok(&rows), &[]).is_ok());
    }
}
