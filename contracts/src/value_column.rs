//! The `value` rule of a lookup provider: its one named column (an outstanding balance,
//! say), converted exactly to the contract's units, so the querier's sum is exact.
//!
//! A value is never rounded or clamped: a row that cannot be represented (negative,
//! more decimal places than the contract's scale, or above the provider's share of the
//! output width) is refused with its column and value, because a wrong total is worse
//! than no total for a bank deciding on a loan.

use crate::data::{ColumnType, DatasetSchema, Value};
use crate::document::DatasetUse;
use crate::ContractError;

/// A provider's value column resolved against its schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueColumn {
    column: String,
    index: usize,
    columns: usize,
    column_type: ColumnType,
    /// The contract's decimal places.
    scale: u8,
    /// The largest value one provider may contribute: `(2^bits − 1) / providers`, so the
    /// sum of every provider's value fits the output width.
    bound: u64,
}

impl ValueColumn {
    /// Resolves `used`'s one column in `schema`; `bits` and `providers` fix the bound.
    pub fn compile(
        used: &DatasetUse,
        schema: &DatasetSchema,
        scale: u8,
        bits: u32,
        providers: usize,
    ) -> Result<ValueColumn, ContractError> {
        let [column] = used.columns.as_slice() else {
            return Err(ContractError::Malformed {
                field: "datasets.columns".into(),
                reason: format!(
                    "output \"value\" sums one column; dataset {} names {}",
                    used.name,
                    used.columns.len()
                ),
            });
        };
        let (index, ty) = schema.column(column).ok_or_else(|| ContractError::ColumnNotInSchema {
            dataset: used.name.clone(),
            column: column.clone(),
        })?;
        if !matches!(ty, ColumnType::Integer | ColumnType::Decimal { .. }) {
            return Err(ContractError::ColumnTypeNotAllowed {
                dataset: used.name.clone(),
                column: column.clone(),
                column_type: ty.clone(),
                allowed: "integer or decimal",
            });
        }
        let largest = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
        Ok(ValueColumn {
            column: column.clone(),
            index,
            columns: schema.columns().len(),
            column_type: ty.clone(),
            scale,
            bound: largest / providers.max(1) as u64,
        })
    }

    /// The row's value in the contract's units.
    pub fn units(&self, row: &[Value]) -> Result<u64, ContractError> {
        if row.len() != self.columns {
            return Err(ContractError::RowLength { expected: self.columns, got: row.len() });
        }
        let value = &row[self.index];
        let refuse = |reason: String| ContractError::ValueNotRepresentable {
            column: self.column.clone(),
            value: value.clone(),
            reason,
        };
        let (units, places) = match value {
            Value::Integer(n) => (i128::from(*n), 0u8),
            Value::Decimal { units, scale } => (i128::from(*units), *scale),
            _ => {
                return Err(ContractError::RowType {
                    column: self.column.clone(),
                    value: value.clone(),
                    column_type: self.column_type.clone(),
                })
            }
        };
        if units < 0 {
            return Err(refuse("a summed value cannot be negative".into()));
        }
        let converted = if places <= self.scale {
            units.checked_mul(10i128.pow(u32::from(self.scale - places)))
        } else {
            let divisor = 10i128.pow(u32::from(places - self.scale));
            if units % divisor != 0 {
                return Err(refuse(format!("it has more than the contract's {} decimal places", self.scale)));
            }
            Some(units / divisor)
        };
        match converted.and_then(|v| u64::try_from(v).ok()) {
            Some(v) if v <= self.bound => Ok(v),
            _ => {
                Err(refuse(format!("above {} units, each provider's share of the output width", self.bound)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetSchema;

    fn schema() -> DatasetSchema {
        DatasetSchema::new(
            "loans",
            "credit_code",
            vec![
                ("balance".into(), ColumnType::Decimal { scale: 2 }),
                ("count".into(), ColumnType::Integer),
                ("grade".into(), ColumnType::Enum { values: vec!["A".into(), "B".into()] }),
            ],
        )
        .expect("schema")
    }

    fn used(column: &str) -> DatasetUse {
        DatasetUse {
            party: xmcredit_crypto::NodeId::new("bank-a").expect("id"),
            name: "loans".into(),
            key: "credit_code".into(),
            key_kind: Default::default(),
            columns: vec![column.into()],
            rules: Vec::new(),
            role: None,
        }
    }

    fn row(balance: i64, count: i64) -> Vec<Value> {
        vec![Value::Decimal { units: balance, scale: 2 }, Value::Integer(count), Value::Enum("A".into())]
    }

    #[test]
    fn decimals_convert_exactly_to_the_contract_scale() {
        let fen = ValueColumn::compile(&used("balance"), &schema(), 2, 40, 3).expect("compile");
        assert_eq!(fen.units(&row(123_456, 0)), Ok(123_456));
        let tenth_fen = ValueColumn::compile(&used("balance"), &schema(), 3, 40, 3).expect("compile");
        assert_eq!(tenth_fen.units(&row(123_456, 0)), Ok(1_234_560));
        let yuan = ValueColumn::compile(&used("balance"), &schema(), 0, 40, 3).expect("compile");
        assert_eq!(yuan.units(&row(500, 0)), Ok(5));
        let counts = ValueColumn::compile(&used("count"), &schema(), 0, 16, 1).expect("compile");
        assert_eq!(counts.units(&row(0, 7)), Ok(7));
    }

    #[test]
    fn a_value_that_would_be_rounded_is_refused() {
        let yuan = ValueColumn::compile(&used("balance"), &schema(), 0, 40, 3).expect("compile");
        assert!(matches!(yuan.units(&row(501, 0)), Err(ContractError::ValueNotRepresentable { .. })));
    }

    #[test]
    fn negative_values_and_values_that_could_wrap_the_sum_are_refused() {
        let counts = ValueColumn::compile(&used("count"), &schema(), 0, 8, 3).expect("compile");
        // 3 providers share 8 bits: at most 255 / 3 = 85 each, so the sum is at most 255.
        assert_eq!(counts.units(&row(0, 85)), Ok(85));
        assert!(matches!(counts.units(&row(0, 86)), Err(ContractError::ValueNotRepresentable { .. })));
        assert!(matches!(counts.units(&row(0, -1)), Err(ContractError::ValueNotRepresentable { .. })));
    }

    #[test]
    fn only_a_numeric_column_can_be_summed() {
        assert!(matches!(
            ValueColumn::compile(&used("grade"), &schema(), 0, 8, 1),
            Err(ContractError::ColumnTypeNotAllowed { .. })
        ));
        assert!(matches!(
            ValueColumn::compile(&used("missing"), &schema(), 0, 8, 1),
            Err(ContractError::ColumnNotInSchema { .. })
        ));
    }
}
