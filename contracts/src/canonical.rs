//! Canonical JSON: the one byte encoding that contracts, revocations and audit records
//! are signed or hashed as.
//!
//! It is RFC 8785 (JSON Canonicalization Scheme, JCS) restricted to a data model that has
//! one obvious encoding per value, so the floating-point part of JCS never applies:
//!
//! - values are strings, integers in ±(2^53 − 1), `true`/`false`, arrays and objects;
//!   `null` and numbers with a fraction or exponent are refused;
//! - no whitespace anywhere;
//! - object members sorted by their keys' UTF-16 code units (RFC 8785 §3.2.3), no
//!   duplicate keys;
//! - strings escaped minimally as ECMAScript's `JSON.stringify` does (RFC 8785 §3.2.2.2):
//!   `\"`, `\\`, `\b`, `\t`, `\n`, `\f`, `\r`, other U+0000..U+001F as `\u00xx` with lower
//!   case hex, everything else (all of non-ASCII, U+007F, U+2028) as its raw UTF-8;
//! - integers in shortest decimal form, `-` only for negatives, no `-0`.
//!
//! [`decode`] refuses any input that is not already in this form. It does so by parsing
//! strictly and then encoding the parsed value again and comparing bytes: that is a
//! canonicality check, never a re-serialization for verification (signatures are
//! always checked over the bytes as received).

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::Serialize;

/// The largest magnitude an integer may have: 2^53 − 1, exact in every JSON library.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Nesting deeper than this is refused (a decoder must not recurse without bound).
const MAX_DEPTH: usize = 32;

/// A value of the canonical data model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CanonicalValue {
    Bool(bool),
    Integer(i64),
    String(String),
    Array(Vec<CanonicalValue>),
    /// Members in any order; encoding sorts them. Keys must be distinct.
    Object(Vec<(String, CanonicalValue)>),
}

/// Bytes or a value outside the canonical form, with where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not canonical JSON at {location}: {reason}")]
pub struct CanonicalError {
    /// `byte N` of the input, or the path of the offending value (`limits.output_bits`).
    pub location: String,
    pub reason: String,
}

impl CanonicalError {
    fn at_byte(offset: usize, reason: impl Into<String>) -> Self {
        Self { location: format!("byte {offset}"), reason: reason.into() }
    }

    fn at_path(path: &str, reason: impl Into<String>) -> Self {
        let location = if path.is_empty() { "the top level".to_string() } else { path.to_string() };
        Self { location, reason: reason.into() }
    }
}

/// Compares keys by their UTF-16 code units (RFC 8785 §3.2.3). For ASCII keys this is
/// byte order.
pub fn utf16_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The canonical bytes of `value`.
pub fn encode(value: &CanonicalValue) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::new();
    write_value(&mut out, value, &mut String::new())?;
    Ok(out)
}

/// The canonical bytes of anything serde can turn into the data model (see
/// [`from_json_value`] for what it refuses).
pub fn to_canonical_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let json = serde_json::to_value(value).map_err(|e| CanonicalError::at_path("", e.to_string()))?;
    encode(&from_json_value(json)?)
}

/// Parses bytes that must already be canonical; anything else is refused with the byte
/// offset of the first difference from the canonical form.
pub fn decode(bytes: &[u8]) -> Result<CanonicalValue, CanonicalError> {
    let value = Parser::new(bytes, true)?.parse_document()?;
    let again = encode(&value)?;
    if again != bytes {
        let offset =
            again.iter().zip(bytes).position(|(a, b)| a != b).unwrap_or(again.len().min(bytes.len()));
        return Err(CanonicalError::at_byte(
            offset,
            "not in canonical form (object keys out of order or a string escaped non-minimally)",
        ));
    }
    Ok(value)
}

/// Parses any JSON text inside the data model (whitespace and any escapes allowed), still
/// refusing `null`, non-integers, out-of-range integers and duplicate keys. For documents
/// people write by hand.
pub fn decode_lenient(bytes: &[u8]) -> Result<CanonicalValue, CanonicalError> {
    Parser::new(bytes, false)?.parse_document()
}

/// Converts a `serde_json::Value`, refusing what the data model has no place for.
pub fn from_json_value(value: serde_json::Value) -> Result<CanonicalValue, CanonicalError> {
    convert(value, &mut String::new())
}

fn convert(value: serde_json::Value, path: &mut String) -> Result<CanonicalValue, CanonicalError> {
    use serde_json::Value;
    Ok(match value {
        Value::Null => return Err(CanonicalError::at_path(path, "null is not allowed (omit the field)")),
        Value::Bool(b) => CanonicalValue::Bool(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) => CanonicalValue::Integer(i),
            Some(_) => {
                return Err(CanonicalError::at_path(path, format!("integer {n} is outside ±(2^53-1)")))
            }
            None if n.is_u64() => {
                return Err(CanonicalError::at_path(path, format!("integer {n} is outside ±(2^53-1)")))
            }
            None => return Err(CanonicalError::at_path(path, format!("{n} is not an integer"))),
        },
        Value::String(s) => CanonicalValue::String(s),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(convert(item, path)?);
                path.truncate(len);
            }
            CanonicalValue::Array(out)
        }
        Value::Object(map) => {
            let mut out = Vec::with_capacity(map.len());
            for (key, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                let item = convert(item, path)?;
                path.truncate(len);
                out.push((key, item));
            }
            CanonicalValue::Object(out)
        }
    })
}

fn write_value(out: &mut Vec<u8>, value: &CanonicalValue, path: &mut String) -> Result<(), CanonicalError> {
    match value {
        CanonicalValue::Bool(true) => out.extend_from_slice(b"true"),
        CanonicalValue::Bool(false) => out.extend_from_slice(b"false"),
        CanonicalValue::Integer(i) => {
            if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) {
                return Err(CanonicalError::at_path(path, format!("integer {i} is outside ±(2^53-1)")));
            }
            out.extend_from_slice(i.to_string().as_bytes());
        }
        CanonicalValue::String(s) => write_string(out, s),
        CanonicalValue::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                write_value(out, item, path)?;
                path.truncate(len);
            }
            out.push(b']');
        }
        CanonicalValue::Object(members) => {
            let mut sorted: Vec<&(String, CanonicalValue)> = members.iter().collect();
            sorted.sort_by(|a, b| utf16_cmp(&a.0, &b.0));
            out.push(b'{');
            for (i, (key, item)) in sorted.iter().map(|m| (&m.0, &m.1)).enumerate() {
                if i > 0 {
                    if sorted[i - 1].0 == *key {
                        return Err(CanonicalError::at_path(path, format!("duplicate key {key:?}")));
                    }
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                write_value(out, item, path)?;
                path.truncate(len);
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// RFC 8785 §3.2.2.2: the escaping of ECMAScript's `JSON.stringify`.
fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Canonical bytes as annotated hex, one line per JSON token group: the hex of the
/// bytes, then `# ` and the same bytes as text. Lines break after each `{`, `[` and `,`
/// outside strings. Concatenating the hex before each `#` gives the bytes back.
pub fn annotate_hex(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut segment = String::new();
    let (mut in_string, mut escaped) = (false, false);
    let flush = |segment: &mut String, out: &mut String| {
        if !segment.is_empty() {
            out.push_str(&format!("{}  # {}\n", hex::encode(segment.as_bytes()), segment));
            segment.clear();
        }
    };
    for c in text.chars() {
        segment.push(c);
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, '{' | '[' | ',') {
            flush(&mut segment, &mut out);
        }
    }
    flush(&mut segment, &mut out);
    out
}

/// Reads the bytes back from [`annotate_hex`]'s form: the hex before each `#`; lines
/// starting with `#` are comments.
pub fn parse_annotated_hex(text: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let hex_part = line.split('#').next().unwrap_or_default().trim();
        if hex_part.is_empty() {
            continue;
        }
        bytes.extend(hex::decode(hex_part).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    Ok(bytes)
}

/// A recursive-descent JSON parser for the data model. `strict` refuses whitespace; the
/// re-encoding comparison in [`decode`] refuses the rest of what is not canonical.
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    strict: bool,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(bytes: &'a [u8], strict: bool) -> Result<Self, CanonicalError> {
        if let Err(e) = std::str::from_utf8(bytes) {
            return Err(CanonicalError::at_byte(e.valid_up_to(), "invalid UTF-8"));
        }
        Ok(Self { bytes, pos: 0, strict, depth: 0 })
    }

    fn error(&self, reason: impl Into<String>) -> CanonicalError {
        CanonicalError::at_byte(self.pos, reason)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) -> Result<(), CanonicalError> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            if self.strict {
                return Err(self.error("whitespace is not allowed"));
            }
            self.pos += 1;
        }
        Ok(())
    }

    fn expect(&mut self, byte: u8) -> Result<(), CanonicalError> {
        self.skip_whitespace()?;
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(format!("expected '{}'", byte as char)))
        }
    }

    fn parse_document(mut self) -> Result<CanonicalValue, CanonicalError> {
        let value = self.parse_value()?;
        self.skip_whitespace()?;
        if self.pos != self.bytes.len() {
            return Err(self.error("trailing bytes after the value"));
        }
        Ok(value)
    }

    fn parse_value(&mut self) -> Result<CanonicalValue, CanonicalError> {
        self.skip_whitespace()?;
        match self.peek() {
            Some(b'{') => self.nested(Self::parse_object),
            Some(b'[') => self.nested(Self::parse_array),
            Some(b'"') => Ok(CanonicalValue::String(self.parse_string()?)),
            Some(b't') => self.literal(b"true", CanonicalValue::Bool(true)),
            Some(b'f') => self.literal(b"false", CanonicalValue::Bool(false)),
            Some(b'n') => Err(self.error("null is not allowed (omit the field)")),
            Some(b'-' | b'0'..=b'9') => self.parse_integer(),
            Some(_) => Err(self.error("expected a JSON value")),
            None => Err(self.error("unexpected end of input")),
        }
    }

    fn nested(
        &mut self,
        parse: fn(&mut Self) -> Result<CanonicalValue, CanonicalError>,
    ) -> Result<CanonicalValue, CanonicalError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH}")));
        }
        self.depth += 1;
        let value = parse(self);
        self.depth -= 1;
        value
    }

    fn literal(&mut self, text: &[u8], value: CanonicalValue) -> Result<CanonicalValue, CanonicalError> {
        if self.bytes[self.pos..].starts_with(text) {
            self.pos += text.len();
            Ok(value)
        } else {
            Err(self.error("expected a JSON value"))
        }
    }

    fn parse_object(&mut self) -> Result<CanonicalValue, CanonicalError> {
        self.expect(b'{')?;
        let mut members = Vec::new();
        let mut seen = BTreeSet::new();
        self.skip_whitespace()?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(CanonicalValue::Object(members));
        }
        loop {
            self.skip_whitespace()?;
            let key_at = self.pos;
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.parse_string()?;
            if !seen.insert(key.clone()) {
                return Err(CanonicalError::at_byte(key_at, format!("duplicate key {key:?}")));
            }
            self.expect(b':')?;
            let value = self.parse_value()?;
            members.push((key, value));
            self.skip_whitespace()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(CanonicalValue::Object(members));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn parse_array(&mut self) -> Result<CanonicalValue, CanonicalError> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_whitespace()?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(CanonicalValue::Array(items));
        }
        loop {
            items.push(self.parse_value()?);
            self.skip_whitespace()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(CanonicalValue::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn parse_integer(&mut self) -> Result<CanonicalValue, CanonicalError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        let digits = &self.bytes[digits_start..self.pos];
        if digits.is_empty() {
            return Err(self.error("expected digits"));
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(CanonicalError::at_byte(digits_start, "leading zero"));
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return Err(self.error("only integers are allowed (no fraction or exponent)"));
        }
        let magnitude = if digits.len() > 16 {
            None
        } else {
            digits.iter().try_fold(0i64, |acc, d| acc.checked_mul(10)?.checked_add(i64::from(d - b'0')))
        };
        match magnitude {
            Some(m) if m <= MAX_SAFE_INTEGER => Ok(CanonicalValue::Integer(if negative { -m } else { m })),
            _ => Err(CanonicalError::at_byte(start, "integer is outside ±(2^53-1)")),
        }
    }

    fn parse_string(&mut self) -> Result<String, CanonicalError> {
        self.expect(b'"')?;
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let Some(byte) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            match byte {
                b'"' => {
                    self.pos += 1;
                    break;
                }
                b'\\' => {
                    self.pos += 1;
                    let c = self.parse_escape()?;
                    let mut tmp = [0u8; 4];
                    buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
                0x00..=0x1f => return Err(self.error("control character must be escaped")),
                _ => {
                    buf.push(byte);
                    self.pos += 1;
                }
            }
        }
        // The input is valid UTF-8 and we only split it at ASCII bytes.
        String::from_utf8(buf).map_err(|_| self.error("invalid UTF-8 in string"))
    }

    fn parse_escape(&mut self) -> Result<char, CanonicalError> {
        let Some(byte) = self.peek() else {
            return Err(self.error("unterminated escape"));
        };
        self.pos += 1;
        Ok(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.parse_hex4()?;
                if (0xD800..0xDC00).contains(&high) {
                    if !self.bytes[self.pos..].starts_with(b"\\u") {
                        return Err(self.error("lone surrogate"));
                    }
                    self.pos += 2;
                    let low = self.parse_hex4()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(self.error("lone surrogate"));
                    }
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    char::from_u32(code).ok_or_else(|| self.error("invalid code point"))?
                } else {
                    char::from_u32(high).ok_or_else(|| self.error("lone surrogate"))?
                }
            }
            _ => return Err(self.error("invalid escape")),
        })
    }

    fn parse_hex4(&mut self) -> Result<u32, CanonicalError> {
        let Some(hex) = self.bytes.get(self.pos..self.pos + 4) else {
            return Err(self.error("truncated \\u escape"));
        };
        let mut value = 0u32;
        for b in hex {
            let digit = (*b as char).to_digit(16).ok_or_else(|| self.error("invalid \\u escape"))?;
            value = value * 16 + digit;
        }
        self.pos += 4;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(members: &[(&str, CanonicalValue)]) -> CanonicalValue {
        CanonicalValue::Object(members.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // RFC 8785 §3.2.3's example: U+10000 (surrogates D800 DC00) sorts before U+FB33
        // in UTF-16 although it sorts after it in UTF-8 and by code point.
        let value = obj(&[
            ("\u{fb33}", CanonicalValue::Integer(1)),
            ("\u{10000}", CanonicalValue::Integer(2)),
            ("a", CanonicalValue::Integer(3)),
            ("\r", CanonicalValue::Integer(4)),
        ]);
        let bytes = encode(&value).expect("encodes");
        assert_eq!(
            String::from_utf8(bytes).expect("utf8"),
            "{\"\\r\":4,\"a\":3,\"\u{10000}\":2,\"\u{fb33}\":1}"
        );
    }

    #[test]
    fn strings_escape_minimally() {
        let value = CanonicalValue::String("\"\\\u{8}\t\n\u{c}\r\u{1}\u{1f}\u{7f}/é信\u{2028}".into());
        let bytes = encode(&value).expect("encodes");
        assert_eq!(
            String::from_utf8(bytes.clone()).expect("utf8"),
            "\"\\\"\\\\\\b\\t\\n\\f\\r\\u0001\\u001f\u{7f}/é信\u{2028}\""
        );
        assert_eq!(decode(&bytes), Ok(value));
    }

    #[test]
    fn round_trip() {
        let value = obj(&[
            ("z", CanonicalValue::Array(vec![CanonicalValue::Bool(true), CanonicalValue::Bool(false)])),
            ("n", CanonicalValue::Integer(-MAX_SAFE_INTEGER)),
            ("m", CanonicalValue::Integer(MAX_SAFE_INTEGER)),
            ("o", obj(&[])),
            ("s", CanonicalValue::String("信易贷".into())),
        ]);
        let bytes = encode(&value).expect("encodes");
        let back = decode(&bytes).expect("decodes");
        assert_eq!(encode(&back).expect("encodes"), bytes);
    }

    #[test]
    fn decode_refuses_every_non_canonical_form() {
        let cases: &[(&str, &str)] = &[
            ("{\"b\":1,\"a\":2}", "not in canonical form"),
            ("{\"a\": 1}", "whitespace"),
            (" {}", "whitespace"),
            ("{\"a\":1,\"a\":1}", "duplicate key"),
            ("{\"a\":null}", "null"),
            ("1.0", "only integers"),
            ("1e3", "only integers"),
            ("01", "leading zero"),
            ("-0", "not in canonical form"),
            ("9007199254740992", "outside"),
            ("-9007199254740992", "outside"),
            ("\"\\u0041\"", "not in canonical form"),
            ("\"\\/\"", "not in canonical form"),
            ("\"\\u001F\"", "not in canonical form"),
            ("\"\u{1}\"", "control character"),
            ("\"\\ud800\"", "lone surrogate"),
            ("[1,]", "expected a JSON value"),
            ("{}{}", "trailing bytes"),
            ("\"abc", "unterminated"),
        ];
        for (input, reason) in cases {
            let err = decode(input.as_bytes()).expect_err(input);
            assert!(err.reason.contains(reason), "{input}: {err}");
        }
        assert!(decode(b"\"\xff\"").expect_err("bad utf8").reason.contains("UTF-8"));
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(decode(deep.as_bytes()).expect_err("deep").reason.contains("nested"));
    }

    #[test]
    fn lenient_decoding_accepts_formatting_but_not_the_model_breakers() {
        let value = decode_lenient(b" { \"b\" : [ 1 , 2 ] ,\n \"a\" : \"\\u0041\\/\" } ").expect("lenient");
        assert_eq!(encode(&value).expect("encodes"), b"{\"a\":\"A/\",\"b\":[1,2]}");
        assert!(decode_lenient(b"{\"a\":1, \"a\":2}").is_err());
        assert!(decode_lenient(b"{\"a\":1.5}").is_err());
    }

    #[test]
    fn from_serde_refuses_floats_nulls_and_big_integers() {
        assert!(to_canonical_bytes(&1.5f64).is_err());
        assert!(to_canonical_bytes(&Option::<u8>::None).is_err());
        assert!(to_canonical_bytes(&u64::MAX).is_err());
        let err = to_canonical_bytes(&serde_json::json!({"limits": {"bits": 1u64 << 60}})).expect_err("big");
        assert_eq!(err.location, "limits.bits");
    }

    #[test]
    fn annotated_hex_round_trips() {
        let bytes = r#"{"a":[1,"x,{[\"y"],"b":{"c":"信"}}"#.as_bytes();
        let text = annotate_hex(bytes);
        assert!(text.starts_with("7b  # {\n"), "{text}");
        assert_eq!(parse_annotated_hex(&text), Ok(bytes.to_vec()));
    }

    #[test]
    fn decoder_never_panics_on_mutations() {
        let base = br#"{"a":[1,-2,"x\n\u0001"],"b":{"c":true,"d":"\u4fe1"}}"#;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = base.to_vec();
            let at = (state as usize) % bytes.len();
            bytes[at] = (state >> 32) as u8;
            if state & 1 == 0 {
                bytes.truncate(at);
            }
            let _ = decode(&bytes);
            let _ = decode_lenient(&bytes);
        }
    }
}
