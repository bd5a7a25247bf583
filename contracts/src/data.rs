//! The small data model that contracts and scorecards talk about: column types, cell
//! values and dataset schemas.
//!
//! A CSV importer calls [`ColumnType::parse_cell`] once per cell; the reasons it gives
//! are meant for the data steward fixing the file. Decimals are fixed point in an `i64`
//! and dates are days since 1970-01-01, so no floating point and no calendar crate are
//! involved anywhere a value is compared or summed.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::key::KeyKind;

/// The largest decimal scale (places after the point) a column may declare.
pub const MAX_SCALE: u8 = 18;

/// Why a cell, a row or a schema was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    #[error("empty cell")]
    Empty,
    #[error("{text:?} is not an integer")]
    NotInteger { text: String },
    #[error("{text:?} is out of range for a 64-bit integer")]
    IntegerOutOfRange { text: String },
    #[error("{text:?} is not a decimal number (digits, optionally a '.' and more digits)")]
    NotDecimal { text: String },
    #[error("decimal {text:?} has {places} places, column allows {scale}")]
    TooManyPlaces { text: String, places: usize, scale: u8 },
    #[error("decimal {text:?} is out of range for {scale} places in a 64-bit integer")]
    DecimalOutOfRange { text: String, scale: u8 },
    #[error("{text:?} is not one of {}", allowed.join(", "))]
    NotInEnum { text: String, allowed: Vec<String> },
    #[error("{text:?} is not a date YYYY-MM-DD: {reason}")]
    NotDate { text: String, reason: String },
    #[error("{text:?} is not a boolean (true/false, 1/0, yes/no, y/n, 是/否)")]
    NotBool { text: String },
    #[error("row has {got} cells, the schema has {expected} columns")]
    RowLength { expected: usize, got: usize },
    #[error("column {column}: {reason}")]
    InColumn { column: String, reason: Box<DataError> },
    #[error("schema {schema}: {reason}")]
    Schema { schema: String, reason: String },
}

/// Cell text as shown in an error: at most 40 characters, so a stray multi-megabyte
/// cell does not end up in a log.
fn shown(text: &str) -> String {
    if text.chars().count() <= 40 {
        text.to_string()
    } else {
        let mut short: String = text.chars().take(40).collect();
        short.push('…');
        short
    }
}

/// Dataset and column names: an ASCII letter, then up to 63 ASCII letters, digits or
/// `_`. They appear in contracts, in schemas and as CSV headers.
pub fn is_identifier(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphabetic()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// The type of a column.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ColumnType {
    /// A signed 64-bit integer (`-12`, `+7`, `0`).
    Integer,
    /// A fixed-point number with `scale` places, stored as `value × 10^scale` in an i64.
    Decimal { scale: u8 },
    /// One of a closed list of strings, e.g. tax grades A, B, M, C, D.
    Enum { values: Vec<String> },
    /// A calendar date written `YYYY-MM-DD` (years 0001-9999).
    Date,
    /// `true`/`false`, `1`/`0`, `yes`/`no`, `y`/`n` (any case), `是`/`否`.
    Bool,
}

impl ColumnType {
    /// Checks the type itself: a scale of at most 18, an enum of distinct, non-empty values.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Decimal { scale } if *scale > MAX_SCALE => {
                Err(format!("decimal scale {scale} is above the maximum {MAX_SCALE}"))
            }
            Self::Enum { values } => {
                if values.is_empty() {
                    return Err("an enum needs at least one value".into());
                }
                for (i, v) in values.iter().enumerate() {
                    if v.trim().is_empty() || v.trim() != v {
                        return Err(format!("enum value {v:?} is empty or has surrounding spaces"));
                    }
                    if values[..i].contains(v) {
                        return Err(format!("enum value {v:?} appears twice"));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Parses one cell (surrounding whitespace ignored).
    pub fn parse_cell(&self, text: &str) -> Result<Value, DataError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DataError::Empty);
        }
        match self {
            Self::Integer => parse_integer(text).map(Value::Integer),
            Self::Decimal { scale } => {
                parse_decimal(text, *scale).map(|units| Value::Decimal { units, scale: *scale })
            }
            Self::Enum { values } => {
                if values.iter().any(|v| v == text) {
                    Ok(Value::Enum(text.to_string()))
                } else {
                    Err(DataError::NotInEnum { text: shown(text), allowed: values.clone() })
                }
            }
            Self::Date => Date::parse(text).map(Value::Date),
            Self::Bool => match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "y" | "是" => Ok(Value::Bool(true)),
                "false" | "0" | "no" | "n" | "否" => Ok(Value::Bool(false)),
                _ => Err(DataError::NotBool { text: shown(text) }),
            },
        }
    }

    /// Whether values of this type have an order (`lt`, `le`, `ge`, `gt` apply).
    pub fn is_ordered(&self) -> bool {
        matches!(self, Self::Integer | Self::Decimal { .. } | Self::Date)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer => f.write_str("integer"),
            Self::Decimal { scale } => write!(f, "decimal({scale})"),
            Self::Enum { values } => write!(f, "enum({})", values.join(", ")),
            Self::Date => f.write_str("date"),
            Self::Bool => f.write_str("bool"),
        }
    }
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn parse_integer(text: &str) -> Result<i64, DataError> {
    let (negative, digits) = split_sign(text);
    if !all_digits(digits) {
        return Err(DataError::NotInteger { text: shown(text) });
    }
    let magnitude: i128 = digits
        .bytes()
        .try_fold(0i128, |acc, d| acc.checked_mul(10)?.checked_add(i128::from(d - b'0')))
        .filter(|m| *m <= i128::from(i64::MAX) + 1)
        .ok_or_else(|| DataError::IntegerOutOfRange { text: shown(text) })?;
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).map_err(|_| DataError::IntegerOutOfRange { text: shown(text) })
}

fn parse_decimal(text: &str, scale: u8) -> Result<i64, DataError> {
    let (negative, body) = split_sign(text);
    let (whole, fraction) = match body.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (body, ""),
    };
    if !all_digits(whole) || (body.contains('.') && !all_digits(fraction)) {
        return Err(DataError::NotDecimal { text: shown(text) });
    }
    if fraction.len() > usize::from(scale) {
        return Err(DataError::TooManyPlaces { text: shown(text), places: fraction.len(), scale });
    }
    let out_of_range = || DataError::DecimalOutOfRange { text: shown(text), scale };
    let padded = format!("{whole}{fraction:0<width$}", width = usize::from(scale));
    let magnitude: i128 = padded
        .bytes()
        .try_fold(0i128, |acc, d| acc.checked_mul(10)?.checked_add(i128::from(d - b'0')))
        .ok_or_else(out_of_range)?;
    i64::try_from(if negative { -magnitude } else { magnitude }).map_err(|_| out_of_range())
}

/// A typed cell value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    Integer(i64),
    /// `units / 10^scale`.
    Decimal {
        units: i64,
        scale: u8,
    },
    Enum(String),
    Date(Date),
    Bool(bool),
}

impl Value {
    /// Compares two values of the same type (and, for decimals, the same scale); `None`
    /// when they are of different types. Enums compare by text, meaningful only for
    /// equality; booleans order `false < true`.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Integer(a), Value::Integer(b)) => Some(a.cmp(b)),
            (Value::Decimal { units: a, scale: sa }, Value::Decimal { units: b, scale: sb }) if sa == sb => {
                Some(a.cmp(b))
            }
            (Value::Enum(a), Value::Enum(b)) => Some(a.cmp(b)),
            (Value::Date(a), Value::Date(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Whether this value can be a cell of a column of type `ty`.
    pub fn has_type(&self, ty: &ColumnType) -> bool {
        match (self, ty) {
            (Value::Integer(_), ColumnType::Integer) => true,
            (Value::Decimal { scale, .. }, ColumnType::Decimal { scale: s }) => scale == s,
            (Value::Enum(v), ColumnType::Enum { values }) => values.contains(v),
            (Value::Date(_), ColumnType::Date) | (Value::Bool(_), ColumnType::Bool) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Integer(i) => write!(f, "{i}"),
            Value::Decimal { units, scale } => {
                if *scale == 0 {
                    return write!(f, "{units}");
                }
                let sign = if *units < 0 { "-" } else { "" };
                let magnitude = units.unsigned_abs();
                let divisor = 10u64.pow(u32::from(*scale));
                let width = usize::from(*scale);
                write!(f, "{sign}{}.{:0width$}", magnitude / divisor, magnitude % divisor)
            }
            Value::Enum(s) => f.write_str(s),
            Value::Date(d) => write!(f, "{d}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A calendar date (proleptic Gregorian), as days since 1970-01-01.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date(i32);

impl Date {
    /// The date `year-month-day`, if it exists and the year is in 1..=9999.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Date> {
        if !(1..=9999).contains(&year) || !(1..=12).contains(&month) || day == 0 {
            return None;
        }
        if day > days_in_month(year, month) {
            return None;
        }
        Some(Date(days_from_civil(i64::from(year), month, day) as i32))
    }

    pub fn from_days_since_epoch(days: i32) -> Date {
        Date(days)
    }

    pub fn days_since_epoch(self) -> i32 {
        self.0
    }

    /// (year, month, day).
    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(i64::from(self.0))
    }

    /// Parses exactly `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<Date, DataError> {
        let bad = |reason: &str| DataError::NotDate { text: shown(text), reason: reason.to_string() };
        let bytes = text.as_bytes();
        let shape_ok = bytes.len() == 10
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes.iter().enumerate().all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
        if !shape_ok {
            return Err(bad("expected four-digit year, two-digit month and day, separated by '-'"));
        }
        let number = |range: std::ops::Range<usize>| {
            text[range].bytes().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
        };
        let (year, month, day) = (number(0..4) as i32, number(5..7), number(8..10));
        if year == 0 {
            return Err(bad("year 0000 does not exist"));
        }
        if !(1..=12).contains(&month) {
            return Err(bad("month must be 01 to 12"));
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err(bad(&format!("{year:04}-{month:02} has {} days", days_in_month(year, month))));
        }
        Date::from_ymd(year, month, day).ok_or_else(|| bad("out of range"))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Date({self})")
    }
}

impl TryFrom<String> for Date {
    type Error = DataError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Date::parse(&text)
    }
}

impl From<Date> for String {
    fn from(date: Date) -> String {
        date.to_string()
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-Compatible
/// Low-Level Date Algorithms", days_from_civil).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`] (Hinnant's civil_from_days).
pub(crate) fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

/// The schema of a dataset a node holds: its name, the column that keys its rows (the
/// unified social credit code, an invoice number ...) and its typed value columns, in
/// CSV order. The key column is not among `columns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SchemaRepr", into = "SchemaRepr")]
pub struct DatasetSchema {
    name: String,
    key: String,
    columns: Vec<(String, ColumnType)>,
    /// What the key holds (entity codes unless the schema says otherwise).
    key_kind: KeyKind,
}

impl DatasetSchema {
    /// Checks names (see [`is_identifier`]), distinctness and each column type.
    pub fn new(
        name: impl Into<String>,
        key: impl Into<String>,
        columns: Vec<(String, ColumnType)>,
    ) -> Result<Self, DataError> {
        let name = name.into();
        let key = key.into();
        let bad = |reason: String| DataError::Schema { schema: name.clone(), reason };
        if !is_identifier(&name) {
            return Err(bad("dataset name must be an ASCII letter then letters, digits or '_'".into()));
        }
        if !is_identifier(&key) {
            return Err(bad(format!("key column {key:?} is not a valid column name")));
        }
        for (i, (column, ty)) in columns.iter().enumerate() {
            if !is_identifier(column) {
                return Err(bad(format!("column {column:?} is not a valid column name")));
            }
            if *column == key || columns[..i].iter().any(|(c, _)| c == column) {
                return Err(bad(format!("column {column:?} appears twice")));
            }
            ty.validate().map_err(|reason| bad(format!("column {column}: {reason}")))?;
        }
        Ok(Self { name, key, columns, key_kind: KeyKind::EntityCode })
    }

    /// The same schema keyed by `key_kind`. A composite's part columns are CSV columns
    /// of their own: neither the key's name nor a value column.
    pub fn with_key_kind(mut self, key_kind: KeyKind) -> Result<Self, DataError> {
        let bad = |reason: String| DataError::Schema { schema: self.name.clone(), reason };
        key_kind.validate().map_err(|e| bad(e.to_string()))?;
        if let KeyKind::Composite(parts) = &key_kind {
            for part in parts {
                if part.column == self.key || self.column(&part.column).is_some() {
                    return Err(bad(format!(
                        "key part column {} is also the key's name or a value column",
                        part.column
                    )));
                }
            }
        }
        self.key_kind = key_kind;
        Ok(self)
    }

    pub fn key_kind(&self) -> &KeyKind {
        &self.key_kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn columns(&self) -> &[(String, ColumnType)] {
        &self.columns
    }

    /// The position and type of a value column.
    pub fn column(&self, name: &str) -> Option<(usize, &ColumnType)> {
        self.columns.iter().position(|(c, _)| c == name).map(|i| (i, &self.columns[i].1))
    }

    /// Parses the value cells of one row, in column order (the key cell excluded).
    pub fn parse_row(&self, cells: &[&str]) -> Result<Vec<Value>, DataError> {
        if cells.len() != self.columns.len() {
            return Err(DataError::RowLength { expected: self.columns.len(), got: cells.len() });
        }
        self.columns
            .iter()
            .zip(cells)
            .map(|((column, ty), cell)| {
                ty.parse_cell(cell).map_err(|reason| DataError::InColumn {
                    column: column.clone(),
                    reason: Box::new(reason),
                })
            })
            .collect()
    }
}

/// How a schema is written (TOML or JSON):
/// `{ name, key, columns = [{ name = "tax_grade", type = "enum", values = [...] }] }`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaRepr {
    name: String,
    key: String,
    /// Absent: entity codes (schemas written before key kinds keep their meaning).
    #[serde(default, skip_serializing_if = "KeyKind::is_entity_code")]
    key_kind: KeyKind,
    columns: Vec<ColumnRepr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnRepr {
    name: String,
    #[serde(rename = "type")]
    ty: TypeName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scale: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    values: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TypeName {
    Integer,
    Decimal,
    Enum,
    Date,
    Bool,
}

impl TryFrom<SchemaRepr> for DatasetSchema {
    type Error = DataError;
    fn try_from(repr: SchemaRepr) -> Result<Self, Self::Error> {
        let mut columns = Vec::with_capacity(repr.columns.len());
        for c in repr.columns {
            let bad = |reason: &str| DataError::Schema {
                schema: repr.name.clone(),
                reason: format!("column {}: {reason}", c.name),
            };
            let ty = match (c.ty, c.scale, c.values) {
                (TypeName::Decimal, Some(scale), None) => ColumnType::Decimal { scale },
                (TypeName::Decimal, None, _) => return Err(bad("a decimal column needs `scale`")),
                (TypeName::Enum, None, Some(values)) => ColumnType::Enum { values },
                (TypeName::Enum, _, None) => return Err(bad("an enum column needs `values`")),
                (TypeName::Integer, None, None) => ColumnType::Integer,
                (TypeName::Date, None, None) => ColumnType::Date,
                (TypeName::Bool, None, None) => ColumnType::Bool,
                _ => {
                    return Err(bad("`scale` is only for decimal columns and `values` only for enum columns"))
                }
            };
            columns.push((c.name, ty));
        }
        DatasetSchema::new(repr.name, repr.key, columns)?.with_key_kind(repr.key_kind)
    }
}

impl From<DatasetSchema> for SchemaRepr {
    fn from(schema: DatasetSchema) -> Self {
        let columns = schema
            .columns
            .into_iter()
            .map(|(name, ty)| {
                let (ty, scale, values) = match ty {
                    ColumnType::Integer => (TypeName::Integer, None, None),
                    ColumnType::Decimal { scale } => (TypeName::Decimal, Some(scale), None),
                    ColumnType::Enum { values } => (TypeName::Enum, None, Some(values)),
                    ColumnType::Date => (TypeName::Date, None, None),
                    ColumnType::Bool => (TypeName::Bool, None, None),
                };
                ColumnRepr { name, ty, scale, values }
            })
            .collect();
        SchemaRepr { name: schema.name, key: schema.key, key_kind: schema.key_kind, columns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grades() -> ColumnType {
        ColumnType::Enum { values: ["A", "B", "M", "C", "D"].map(String::from).to_vec() }
    }

    #[test]
    fn integers() {
        assert_eq!(ColumnType::Integer.parse_cell(" -12 "), Ok(Value::Integer(-12)));
        assert_eq!(ColumnType::Integer.parse_cell("+7"), Ok(Value::Integer(7)));
        assert_eq!(ColumnType::Integer.parse_cell("-9223372036854775808"), Ok(Value::Integer(i64::MIN)));
        assert_eq!(
            ColumnType::Integer.parse_cell("9223372036854775808"),
            Err(DataError::IntegerOutOfRange { text: "9223372036854775808".into() })
        );
        for bad in ["1,000", "1.0", "x", "-", "1e3"] {
            assert_eq!(ColumnType::Integer.parse_cell(bad), Err(DataError::NotInteger { text: bad.into() }));
        }
        assert_eq!(ColumnType::Integer.parse_cell("  "), Err(DataError::Empty));
        assert_eq!(
            ColumnType::Integer.parse_cell("abc").map_err(|e| e.to_string()),
            Err("\"abc\" is not an integer".into())
        );
    }

    #[test]
    fn decimals() {
        let money = ColumnType::Decimal { scale: 2 };
        assert_eq!(money.parse_cell("12.34"), Ok(Value::Decimal { units: 1234, scale: 2 }));
        assert_eq!(money.parse_cell("12"), Ok(Value::Decimal { units: 1200, scale: 2 }));
        assert_eq!(money.parse_cell("-0.5"), Ok(Value::Decimal { units: -50, scale: 2 }));
        let err = money.parse_cell("1.005").expect_err("three places");
        assert_eq!(err, DataError::TooManyPlaces { text: "1.005".into(), places: 3, scale: 2 });
        assert_eq!(err.to_string(), "decimal \"1.005\" has 3 places, column allows 2");
        for bad in [".5", "5.", "1.2.3", "1,5", "abc"] {
            assert!(matches!(money.parse_cell(bad), Err(DataError::NotDecimal { .. })), "{bad}");
        }
        assert!(matches!(money.parse_cell("92233720368547758.08"), Err(DataError::DecimalOutOfRange { .. })));
        assert_eq!(Value::Decimal { units: -5, scale: 2 }.to_string(), "-0.05");
    }

    #[test]
    fn enums() {
        assert_eq!(grades().parse_cell("M"), Ok(Value::Enum("M".into())));
        let err = grades().parse_cell("X").expect_err("not a grade");
        assert_eq!(err.to_string(), "\"X\" is not one of A, B, M, C, D");
    }

    #[test]
    fn dates() {
        assert_eq!(Date::parse("1970-01-01").map(Date::days_since_epoch), Ok(0));
        assert_eq!(Date::parse("2000-03-01").map(Date::days_since_epoch), Ok(11017));
        assert_eq!(Date::parse("1969-12-31").map(Date::days_since_epoch), Ok(-1));
        let d = Date::parse("2024-02-29").expect("leap day");
        assert_eq!(d.to_string(), "2024-02-29");
        let err = Date::parse("2023-02-29").expect_err("not a leap year");
        assert_eq!(err.to_string(), "\"2023-02-29\" is not a date YYYY-MM-DD: 2023-02 has 28 days");
        for bad in ["2024/01/02", "20240102", "2024-1-2", "2024-13-01", "0000-01-01"] {
            assert!(matches!(ColumnType::Date.parse_cell(bad), Err(DataError::NotDate { .. })), "{bad}");
        }
        // Every day of four centuries round-trips.
        for days in days_from_civil(1900, 1, 1)..days_from_civil(2300, 1, 1) {
            let date = Date::from_days_since_epoch(days as i32);
            assert_eq!(Date::parse(&date.to_string()), Ok(date));
        }
    }

    #[test]
    fn bools() {
        for t in ["true", "TRUE", "1", "yes", "Y", "是"] {
            assert_eq!(ColumnType::Bool.parse_cell(t), Ok(Value::Bool(true)), "{t}");
        }
        for f in ["false", "0", "No", "n", "否"] {
            assert_eq!(ColumnType::Bool.parse_cell(f), Ok(Value::Bool(false)), "{f}");
        }
        assert!(matches!(ColumnType::Bool.parse_cell("maybe"), Err(DataError::NotBool { .. })));
    }

    #[test]
    fn long_cells_are_shortened_in_errors() {
        let long = "x".repeat(1000);
        let err = ColumnType::Integer.parse_cell(&long).expect_err("not an integer").to_string();
        assert!(err.chars().count() < 70, "{err}");
    }

    #[test]
    fn schema_validation_and_rows() {
        let schema = DatasetSchema::new(
            "gov_credit",
            "credit_code",
            vec![("tax_grade".into(), grades()), ("headcount".into(), ColumnType::Integer)],
        )
        .expect("valid");
        assert_eq!(schema.column("headcount").map(|(i, _)| i), Some(1));
        assert_eq!(schema.parse_row(&["A", "12"]), Ok(vec![Value::Enum("A".into()), Value::Integer(12)]));
        let err = schema.parse_row(&["A", "x"]).expect_err("bad cell");
        assert_eq!(err.to_string(), "column headcount: \"x\" is not an integer");
        assert_eq!(schema.parse_row(&["A"]), Err(DataError::RowLength { expected: 2, got: 1 }));
        assert!(DatasetSchema::new("d", "k", vec![("k".into(), ColumnType::Bool)]).is_err());
        assert!(DatasetSchema::new("d", "k", vec![("a b".into(), ColumnType::Bool)]).is_err());
        assert!(DatasetSchema::new("d", "k", vec![("a".into(), ColumnType::Decimal { scale: 19 })]).is_err());
    }

    #[test]
    fn schema_serde_round_trip() {
        let text = r#"
            name = "gov_credit"
            key = "credit_code"
            columns = [
              { name = "tax_grade", type = "enum", values = ["A", "B", "M", "C", "D"] },
              { name = "arrears", type = "decimal", scale = 2 },
              { name = "registered_on", type = "date" },
            ]
        "#;
        let schema: DatasetSchema = toml::from_str(text).expect("parses");
        assert_eq!(schema.column("arrears").map(|(_, t)| t.clone()), Some(ColumnType::Decimal { scale: 2 }));
        let json = serde_json::to_string(&schema).expect("serializes");
        let back: DatasetSchema = serde_json::from_str(&json).expect("parses back");
        assert_eq!(back, schema);
        let missing_scale = text.replace(", scale = 2", "");
        let err = toml::from_str::<DatasetSchema>(&missing_scale).expect_err("no scale");
        assert!(err.to_string().contains("needs `scale`"), "{err}");
    }
}
