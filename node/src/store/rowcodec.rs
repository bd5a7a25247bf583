//! The compact binary encoding of one dataset row (store layout 2, ARCHITECTURE.md
//! "Dataset blocks"): `varint(len key) ‖ key ‖ value…` with one value per schema
//! column, typed by the schema so no value carries its own type:
//!
//! | column type | bytes |
//! |---|---|
//! | integer | zigzag LEB128 varint of the i64 |
//! | decimal | zigzag LEB128 varint of the units (the scale is the schema's) |
//! | enum | LEB128 varint of the value's index in the schema's list |
//! | date | zigzag LEB128 varint of days since 1970-01-01 |
//! | bool | one byte, 0 or 1 |
//!
//! A row's encoding is self-delimiting given the schema, so rows are concatenated in
//! blocks and hashed in sequence for the version's digest without length prefixes.

use xmcredit_contracts::data::{ColumnType, Date, Value};

use super::DatasetRow;
use crate::NodeError;

/// The column types of a schema, in column order: what encoding and decoding need.
#[derive(Debug, Clone)]
pub struct RowCodec {
    types: Vec<ColumnType>,
}

impl RowCodec {
    pub fn new(schema: &xmcredit_contracts::DatasetSchema) -> Self {
        Self { types: schema.columns().iter().map(|(_, ty)| ty.clone()).collect() }
    }

    /// Appends the encoding of the values (in schema order) to `out`. The values come
    /// from `DatasetSchema::parse_row`, so a mismatch is a bug, reported, not a panic.
    pub fn encode_values(&self, values: &[Value], out: &mut Vec<u8>) -> Result<(), NodeError> {
        if values.len() != self.types.len() {
            return Err(NodeError::Internal(format!(
                "row of {} values for {} columns",
                values.len(),
                self.types.len()
            )));
        }
        for (value, ty) in values.iter().zip(&self.types) {
            match (value, ty) {
                (Value::Integer(v), ColumnType::Integer) => put_signed(out, *v),
                (Value::Decimal { units, scale }, ColumnType::Decimal { scale: want }) if scale == want => {
                    put_signed(out, *units)
                }
                (Value::Enum(text), ColumnType::Enum { values }) => {
                    let index = values.iter().position(|v| v == text).ok_or_else(|| {
                        NodeError::Internal(format!("enum value {text:?} is not in the schema"))
                    })?;
                    put_unsigned(out, index as u64);
                }
                (Value::Date(date), ColumnType::Date) => put_signed(out, i64::from(date.days_since_epoch())),
                (Value::Bool(b), ColumnType::Bool) => out.push(u8::from(*b)),
                (value, ty) => {
                    return Err(NodeError::Internal(format!("value {value} does not fit column type {ty:?}")))
                }
            }
        }
        Ok(())
    }

    /// Appends one row: its key, then its values.
    pub fn encode_row(&self, key: &[u8], values: &[Value], out: &mut Vec<u8>) -> Result<(), NodeError> {
        put_unsigned(out, key.len() as u64);
        out.extend_from_slice(key);
        self.encode_values(values, out)
    }

    /// Decodes the row starting at `*pos` and moves `*pos` past it.
    pub fn decode_row(&self, bytes: &[u8], pos: &mut usize) -> Result<DatasetRow, NodeError> {
        let key = self.decode_key(bytes, pos)?;
        let key = std::str::from_utf8(key).map_err(|_| corrupt("a row key is not UTF-8"))?.to_string();
        let mut values = Vec::with_capacity(self.types.len());
        for ty in &self.types {
            values.push(match ty {
                ColumnType::Integer => Value::Integer(get_signed(bytes, pos)?),
                ColumnType::Decimal { scale } => {
                    Value::Decimal { units: get_signed(bytes, pos)?, scale: *scale }
                }
                ColumnType::Enum { values } => {
                    let index = get_unsigned(bytes, pos)?;
                    let text = usize::try_from(index)
                        .ok()
                        .and_then(|i| values.get(i))
                        .ok_or_else(|| corrupt("an enum index outside the schema's list"))?;
                    Value::Enum(text.clone())
                }
                ColumnType::Date => {
                    let days =
                        i32::try_from(get_signed(bytes, pos)?).map_err(|_| corrupt("a date out of range"))?;
                    Value::Date(Date::from_days_since_epoch(days))
                }
                ColumnType::Bool => {
                    let byte = *bytes.get(*pos).ok_or_else(|| corrupt("a row cut short"))?;
                    *pos += 1;
                    match byte {
                        0 => Value::Bool(false),
                        1 => Value::Bool(true),
                        _ => return Err(corrupt("a bool byte other than 0 or 1")),
                    }
                }
            });
        }
        Ok(DatasetRow { key, values })
    }

    /// The key of the row at `*pos`; moves `*pos` to its first value.
    pub fn decode_key<'a>(&self, bytes: &'a [u8], pos: &mut usize) -> Result<&'a [u8], NodeError> {
        let len = usize::try_from(get_unsigned(bytes, pos)?).map_err(|_| corrupt("a key length"))?;
        let end = pos
            .checked_add(len)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| corrupt("a key cut short"))?;
        let key = &bytes[*pos..end];
        *pos = end;
        Ok(key)
    }

    /// Moves `*pos` past the values of one row without building them.
    pub fn skip_values(&self, bytes: &[u8], pos: &mut usize) -> Result<(), NodeError> {
        for ty in &self.types {
            match ty {
                ColumnType::Bool => {
                    if *pos >= bytes.len() {
                        return Err(corrupt("a row cut short"));
                    }
                    *pos += 1;
                }
                _ => {
                    get_unsigned(bytes, pos)?;
                }
            }
        }
        Ok(())
    }
}

fn corrupt(reason: &str) -> NodeError {
    NodeError::Corrupt { what: "dataset block", reason: reason.to_string() }
}

pub(super) fn put_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

pub(super) fn get_unsigned(bytes: &[u8], pos: &mut usize) -> Result<u64, NodeError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos).ok_or_else(|| corrupt("a varint cut short"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            // The tenth byte may carry only the top bit.
            if shift == 63 && byte > 1 {
                break;
            }
            return Ok(value);
        }
    }
    Err(corrupt("a varint longer than 64 bits"))
}

fn get_signed(bytes: &[u8], pos: &mut usize) -> Result<i64, NodeError> {
    let raw = get_unsigned(bytes, pos)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmcredit_contracts::DatasetSchema;

    fn schema() -> DatasetSchema {
        DatasetSchema::new(
            "d",
            "k",
            vec![
                ("i".into(), ColumnType::Integer),
                ("m".into(), ColumnType::Decimal { scale: 2 }),
                ("g".into(), ColumnType::Enum { values: vec!["A".into(), "B".into()] }),
                ("t".into(), ColumnType::Date),
                ("b".into(), ColumnType::Bool),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rows_round_trip_at_the_extremes() {
        let codec = RowCodec::new(&schema());
        let rows = [
            (
                "91350203MA31XEK09P",
                vec![
                    Value::Integer(i64::MIN),
                    Value::Decimal { units: i64::MAX, scale: 2 },
                    Value::Enum("B".into()),
                    Value::Date(Date::from_days_since_epoch(-719_162)),
                    Value::Bool(true),
                ],
            ),
            (
                "",
                vec![
                    Value::Integer(0),
                    Value::Decimal { units: -1, scale: 2 },
                    Value::Enum("A".into()),
                    Value::Date(Date::from_days_since_epoch(2_932_896)),
                    Value::Bool(false),
                ],
            ),
        ];
        let mut bytes = Vec::new();
        for (key, values) in &rows {
            codec.encode_row(key.as_bytes(), values, &mut bytes).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut pos = 0;
        for (key, values) in &rows {
            let row = codec.decode_row(&bytes, &mut pos).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((row.key.as_str(), &row.values), (*key, values));
        }
        assert_eq!(pos, bytes.len());
    }

    #[test]
    fn known_encoding() {
        let codec = RowCodec::new(&schema());
        let mut bytes = Vec::new();
        let values = vec![
            Value::Integer(-1),
            Value::Decimal { units: 300, scale: 2 },
            Value::Enum("B".into()),
            Value::Date(Date::from_days_since_epoch(1)),
            Value::Bool(true),
        ];
        codec.encode_row(b"K1", &values, &mut bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "02", "4b31", // key length, key
                "01",   // -1 zigzag
                "d804", // 300 zigzag = 600 = 0x258
                "01",   // enum index 1
                "02",   // date 1 zigzag
                "01",   // true
            )
        );
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let codec = RowCodec::new(&schema());
        let mut bytes = Vec::new();
        let values = vec![
            Value::Integer(5),
            Value::Decimal { units: 5, scale: 2 },
            Value::Enum("A".into()),
            Value::Date(Date::from_days_since_epoch(5)),
            Value::Bool(false),
        ];
        codec.encode_row(b"KEY", &values, &mut bytes).unwrap_or_else(|e| panic!("{e}"));
        for cut in 0..bytes.len() {
            assert!(codec.decode_row(&bytes[..cut], &mut 0).is_err(), "cut at {cut}");
        }
        let mut bad_enum = bytes.clone();
        bad_enum[6] = 9;
        assert!(codec.decode_row(&bad_enum, &mut 0).is_err());
        let mut bad_bool = bytes.clone();
        let last = bad_bool.len() - 1;
        bad_bool[last] = 2;
        assert!(codec.decode_row(&bad_bool, &mut 0).is_err());
        assert!(get_unsigned(&[0xff; 11], &mut 0).is_err());
    }
}
