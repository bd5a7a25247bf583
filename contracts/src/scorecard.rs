//! Contribution rules: a small declarative scorecard.
//!
//! A rule is `column comparison constant → points`; a row scores the sum of the points of
//! the rules that hold for it (or, as a bit mask, bit i set when rule i holds). In the
//! `lookup` computation each provider evaluates its own rules on its own rows, for every
//! entity in the published universe.
//!
//! Constants are written as text and read with the column's own cell parser
//! ([`ColumnType::parse_cell`]), so `"0.50"` means exactly what a CSV cell `0.50` means
//! in that column. A rule set is checked against the provider's [`DatasetSchema`] by
//! [`Scorecard::compile`].

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::data::{ColumnType, DatasetSchema, Value};
use crate::ContractError;

/// The most rules one dataset may carry (a bit mask of them fits a u64).
pub const MAX_RULES: usize = 64;
/// The largest magnitude of a rule's points (2^40), so any sum stays far inside ±(2^53−1).
pub const MAX_POINTS: i64 = 1 << 40;

/// How a rule compares a cell with its constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Comparison {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
    /// Equal to one of a list of constants.
    In,
}

impl Comparison {
    /// `lt`, `le`, `ge`, `gt` need an ordered column type.
    pub fn needs_order(self) -> bool {
        matches!(self, Self::Lt | Self::Le | Self::Ge | Self::Gt)
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lt => "lt",
            Self::Le => "le",
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Ge => "ge",
            Self::Gt => "gt",
            Self::In => "in",
        })
    }
}

/// A rule's constant as written: one value, or a list for `in`. In the canonical form
/// always strings; a TOML integer or boolean is read as its text (`3` as `"3"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Constant {
    One(String),
    Many(Vec<String>),
}

impl Serialize for Constant {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Constant::One(text) => serializer.serialize_str(text),
            Constant::Many(items) => items.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Constant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ConstantVisitor { nested: false })
    }
}

struct ConstantVisitor {
    nested: bool,
}

impl<'de> Visitor<'de> for ConstantVisitor {
    type Value = Constant;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nested {
            f.write_str("a string, integer or boolean")
        } else {
            f.write_str("a string, integer or boolean, or a list of them for `in`")
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Constant, E> {
        Ok(Constant::One(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Constant, E> {
        Ok(Constant::One(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Constant, E> {
        Ok(Constant::One(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Constant, E> {
        Ok(Constant::One(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Constant, A::Error> {
        if self.nested {
            return Err(de::Error::custom("lists of lists are not allowed"));
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(NestedSeed)? {
            items.push(item);
        }
        Ok(Constant::Many(items))
    }
}

struct NestedSeed;

impl<'de> de::DeserializeSeed<'de> for NestedSeed {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        match deserializer.deserialize_any(ConstantVisitor { nested: true })? {
            Constant::One(text) => Ok(text),
            Constant::Many(_) => Err(de::Error::custom("lists of lists are not allowed")),
        }
    }
}

/// One contribution rule, as written in the contract.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub column: String,
    pub comparison: Comparison,
    pub constant: Constant,
    pub points: i64,
}

impl Rule {
    /// The shape rules that need no schema: `in` takes a non-empty list of distinct
    /// constants, every other comparison exactly one; points within ±2^40.
    pub fn check_shape(&self) -> Result<(), String> {
        match (&self.constant, self.comparison) {
            (Constant::Many(items), Comparison::In) => {
                if items.is_empty() {
                    return Err("`in` needs at least one constant".into());
                }
                if has_duplicates(items) {
                    return Err("`in` lists a constant twice".into());
                }
            }
            (Constant::One(_), Comparison::In) => return Err("`in` takes a list of constants".into()),
            (Constant::Many(_), other) => return Err(format!("`{other}` takes one constant, not a list")),
            (Constant::One(_), _) => {}
        }
        if !(-MAX_POINTS..=MAX_POINTS).contains(&self.points) {
            return Err(format!("points {} are outside ±2^40", self.points));
        }
        Ok(())
    }

    /// The constants as a slice, one or many.
    pub fn constants(&self) -> &[String] {
        match &self.constant {
            Constant::One(text) => std::slice::from_ref(text),
            Constant::Many(items) => items,
        }
    }
}

fn has_duplicates(items: &[String]) -> bool {
    items.iter().enumerate().any(|(i, a)| items[..i].contains(a))
}

/// Rules checked against a schema: column positions resolved, constants typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scorecard {
    columns: usize,
    rules: Vec<CompiledRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct CompiledRule {
    column: String,
    index: usize,
    column_type: ColumnType,
    comparison: Comparison,
    constants: Vec<Value>,
    points: i64,
}

impl Scorecard {
    /// Resolves each rule's column in `schema` and parses its constants with the column's
    /// type; refuses orderings on unordered types (enums, booleans).
    pub fn compile(rules: &[Rule], schema: &DatasetSchema) -> Result<Scorecard, ContractError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            rule.check_shape()
                .map_err(|reason| ContractError::Malformed { field: format!("rules[{i}]"), reason })?;
            let (index, ty) =
                schema.column(&rule.column).ok_or_else(|| ContractError::ColumnNotInSchema {
                    dataset: schema.name().to_string(),
                    column: rule.column.clone(),
                })?;
            if rule.comparison.needs_order() && !ty.is_ordered() {
                return Err(ContractError::RuleNotApplicable {
                    dataset: schema.name().to_string(),
                    rule: i,
                    column: rule.column.clone(),
                    comparison: rule.comparison,
                    column_type: ty.clone(),
                });
            }
            let constants = rule
                .constants()
                .iter()
                .map(|text| ty.parse_cell(text))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| ContractError::BadRuleConstant {
                    dataset: schema.name().to_string(),
                    rule: i,
                    column: rule.column.clone(),
                    reason,
                })?;
            compiled.push(CompiledRule {
                column: rule.column.clone(),
                index,
                column_type: ty.clone(),
                comparison: rule.comparison,
                constants,
                points: rule.points,
            });
        }
        Ok(Scorecard { columns: schema.columns().len(), rules: compiled })
    }

    /// The sum of the points of the rules that hold for `row` (values in schema column
    /// order, as [`DatasetSchema::parse_row`] returns them).
    pub fn evaluate(&self, row: &[Value]) -> Result<i64, ContractError> {
        let mut total = 0i64;
        for (rule, holds) in self.rules.iter().zip(self.holds(row)?) {
            if holds {
                total += rule.points;
            }
        }
        Ok(total)
    }

    /// Bit i set when rule i holds (at most 64 rules).
    pub fn evaluate_mask(&self, row: &[Value]) -> Result<u64, ContractError> {
        Ok(self
            .holds(row)?
            .iter()
            .enumerate()
            .filter(|(_, h)| **h)
            .fold(0u64, |mask, (i, _)| mask | (1 << i)))
    }

    /// The lowest and highest score any row can get.
    pub fn bounds(&self) -> (i64, i64) {
        bounds(self.rules.iter().map(|r| r.points))
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn holds(&self, row: &[Value]) -> Result<Vec<bool>, ContractError> {
        if row.len() != self.columns {
            return Err(ContractError::RowLength { expected: self.columns, got: row.len() });
        }
        self.rules
            .iter()
            .map(|rule| {
                let value = &row[rule.index];
                if !value.has_type(&rule.column_type) {
                    return Err(ContractError::RowType {
                        column: rule.column.clone(),
                        value: value.clone(),
                        column_type: rule.column_type.clone(),
                    });
                }
                Ok(rule_holds(rule.comparison, value, &rule.constants))
            })
            .collect()
    }
}

fn rule_holds(comparison: Comparison, value: &Value, constants: &[Value]) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let first = constants.first().and_then(|c| value.compare(c));
    match comparison {
        Comparison::Lt => first == Some(Less),
        Comparison::Le => matches!(first, Some(Less | Equal)),
        Comparison::Eq => first == Some(Equal),
        Comparison::Ne => matches!(first, Some(Less | Greater)),
        Comparison::Ge => matches!(first, Some(Greater | Equal)),
        Comparison::Gt => first == Some(Greater),
        Comparison::In => constants.iter().any(|c| value.compare(c) == Some(Equal)),
    }
}

/// (sum of the negative points, sum of the positive points).
pub(crate) fn bounds(points: impl Iterator<Item = i64>) -> (i64, i64) {
    points.fold((0, 0), |(lo, hi), p| if p < 0 { (lo + p, hi) } else { (lo, hi + p) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> DatasetSchema {
        DatasetSchema::new(
            "gov_credit",
            "credit_code",
            vec![
                (
                    "tax_grade".into(),
                    ColumnType::Enum { values: ["A", "B", "M", "C", "D"].map(String::from).to_vec() },
                ),
                ("headcount".into(), ColumnType::Integer),
                ("arrears".into(), ColumnType::Decimal { scale: 2 }),
                ("dishonest".into(), ColumnType::Bool),
            ],
        )
        .expect("valid schema")
    }

    fn rule(column: &str, comparison: Comparison, constant: Constant, points: i64) -> Rule {
        Rule { column: column.into(), comparison, constant, points }
    }

    fn one(text: &str) -> Constant {
        Constant::One(text.into())
    }

    #[test]
    fn sums_the_points_of_rules_that_hold() {
        let rules = vec![
            rule("tax_grade", Comparison::In, Constant::Many(vec!["A".into(), "B".into()]), 30),
            rule("headcount", Comparison::Ge, one("10"), 20),
            rule("arrears", Comparison::Gt, one("0"), -15),
            rule("dishonest", Comparison::Eq, one("true"), -100),
        ];
        let card = Scorecard::compile(&rules, &schema()).expect("compiles");
        let row = schema().parse_row(&["B", "12", "0.00", "false"]).expect("row");
        assert_eq!(card.evaluate(&row), Ok(50));
        assert_eq!(card.evaluate_mask(&row), Ok(0b0011));
        let row = schema().parse_row(&["C", "3", "12.50", "是"]).expect("row");
        assert_eq!(card.evaluate(&row), Ok(-115));
        assert_eq!(card.evaluate_mask(&row), Ok(0b1100));
        assert_eq!(card.bounds(), (-115, 50));
    }

    #[test]
    fn every_comparison() {
        let row = schema().parse_row(&["A", "10", "1", "no"]).expect("row");
        let cases = [
            (Comparison::Lt, "11", true),
            (Comparison::Lt, "10", false),
            (Comparison::Le, "10", true),
            (Comparison::Eq, "10", true),
            (Comparison::Ne, "10", false),
            (Comparison::Ne, "9", true),
            (Comparison::Ge, "11", false),
            (Comparison::Gt, "9", true),
        ];
        for (comparison, constant, expected) in cases {
            let card = Scorecard::compile(&[rule("headcount", comparison, one(constant), 1)], &schema())
                .expect("compiles");
            assert_eq!(card.evaluate(&row), Ok(i64::from(expected)), "{comparison} {constant}");
        }
    }

    #[test]
    fn refusals_name_the_rule() {
        let lt_on_enum = [rule("tax_grade", Comparison::Lt, one("B"), 1)];
        assert!(matches!(
            Scorecard::compile(&lt_on_enum, &schema()),
            Err(ContractError::RuleNotApplicable { rule: 0, comparison: Comparison::Lt, .. })
        ));
        let bad_constant = [
            rule("headcount", Comparison::Ge, one("10"), 1),
            rule("arrears", Comparison::Gt, one("0.001"), 1),
        ];
        let err = Scorecard::compile(&bad_constant, &schema()).expect_err("three places");
        assert!(matches!(err, ContractError::BadRuleConstant { rule: 1, .. }), "{err}");
        assert!(err.to_string().contains("has 3 places, column allows 2"), "{err}");
        let unknown = [rule("turnover", Comparison::Gt, one("1"), 1)];
        assert!(matches!(
            Scorecard::compile(&unknown, &schema()),
            Err(ContractError::ColumnNotInSchema { .. })
        ));
        let in_without_list = [rule("tax_grade", Comparison::In, one("A"), 1)];
        assert!(matches!(
            Scorecard::compile(&in_without_list, &schema()),
            Err(ContractError::Malformed { .. })
        ));
    }

    #[test]
    fn rows_of_the_wrong_shape_are_refused() {
        let card =
            Scorecard::compile(&[rule("headcount", Comparison::Ge, one("1"), 1)], &schema()).expect("ok");
        assert_eq!(card.evaluate(&[]), Err(ContractError::RowLength { expected: 4, got: 0 }));
        let row = vec![Value::Enum("A".into()), Value::Bool(true), Value::Integer(0), Value::Bool(true)];
        assert!(matches!(card.evaluate(&row), Err(ContractError::RowType { .. })));
    }

    #[test]
    fn constants_read_from_toml_scalars_and_lists() {
        #[derive(Deserialize)]
        struct T {
            rules: Vec<Rule>,
        }
        let t: T = toml::from_str(
            r#"rules = [
                { column = "headcount", comparison = "ge", constant = 10, points = 1 },
                { column = "dishonest", comparison = "eq", constant = true, points = -1 },
                { column = "tax_grade", comparison = "in", constant = ["A", "B"], points = 2 },
            ]"#,
        )
        .expect("parses");
        assert_eq!(t.rules[0].constant, one("10"));
        assert_eq!(t.rules[1].constant, one("true"));
        assert_eq!(t.rules[2].constant, Constant::Many(vec!["A".into(), "B".into()]));
        assert!(toml::from_str::<T>(
            r#"rules = [{ column = "a", comparison = "in", constant = [["A"]], points = 1 }]"#
        )
        .is_err());
        assert!(toml::from_str::<T>(
            r#"rules = [{ column = "a", comparison = "eq", constant = 1.5, points = 1 }]"#
        )
        .is_err());
    }
}
