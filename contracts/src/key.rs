//! Dataset keys: what a dataset's key holds, how a cell becomes the key, and the bytes
//! that get hashed to the curve (ARCHITECTURE.md, "Dataset keys").
//!
//! Three kinds: a unified social credit code (`entity_code`, the default), an
//! identifier with a declared normalization and pattern (a 20-digit e-invoice number,
//! a VAT invoice code and number), and a composite of 2-8 columns, each a code or an
//! identifier (debtor, creditor, invoice number). A key's *element text* is what the
//! store keeps as the row key and what every set protocol hashes: the normalized code,
//! the normalized identifier, or for a composite the concatenated netstrings
//! `len ":" part ","` of its parts in declared order. Two parties match only if they
//! use the same key definition, so a contract names it per dataset and nodes refuse a
//! dataset whose definition differs ([`KeyKind::definition`] in both messages).

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::is_identifier;
use crate::entity_code::{EntityCode, EntityCodeError};

/// Longest identifier (in characters, after normalization).
pub const MAX_IDENTIFIER_CHARS: usize = 128;
/// Longest pattern source (characters).
pub const MAX_PATTERN_CHARS: usize = 256;
/// Most parts of a composite key.
pub const MAX_PARTS: usize = 8;
/// The compiled size a pattern may take (bytes): a pattern is data from a contract.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Why a key cell (or a key definition) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("bad unified social credit code: {0}")]
    EntityCode(#[from] EntityCodeError),
    #[error("empty identifier")]
    Empty,
    #[error("identifier has {chars} characters, at most {MAX_IDENTIFIER_CHARS} allowed")]
    TooLong { chars: usize },
    #[error("identifier contains a control character")]
    ControlCharacter,
    #[error("{normalized:?} does not match the pattern {pattern}")]
    PatternMismatch { normalized: String, pattern: String },
    #[error("key column {column}: {reason}")]
    InPart { column: String, reason: Box<KeyError> },
    #[error("the key needs {expected} cells, got {got}")]
    CellCount { expected: usize, got: usize },
    #[error("key definition: {0}")]
    Definition(String),
}

/// One normalization step of an identifier. Whatever order they are written in, they
/// apply in this order (the declaration order), so a definition has one meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Full-width forms U+FF01..U+FF5E to ASCII (minus 0xFEE0), U+3000 to a space.
    Fullwidth,
    /// Leading and trailing white space removed (Unicode `White_Space`).
    Trim,
    /// Every white-space character removed (`2535 0200 ...` → `25350200...`).
    StripSpaces,
    /// Hyphens and dashes removed: U+002D, U+2010, U+2011, U+2012, U+2013, U+2014,
    /// U+2212, U+FF0D.
    StripHyphens,
    /// ASCII `a`-`z` to `A`-`Z` (ASCII only: Unicode case tables change between versions).
    Upper,
}

const HYPHENS: [char; 8] =
    ['-', '\u{2010}', '\u{2011}', '\u{2012}', '\u{2013}', '\u{2014}', '\u{2212}', '\u{FF0D}'];

impl Normalization {
    fn apply(self, text: String) -> String {
        match self {
            Self::Fullwidth => text
                .chars()
                .map(|c| match c {
                    '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                    '\u{3000}' => ' ',
                    other => other,
                })
                .collect(),
            Self::Trim => text.trim().to_string(),
            Self::StripSpaces => text.chars().filter(|c| !c.is_whitespace()).collect(),
            Self::StripHyphens => text.chars().filter(|c| !HYPHENS.contains(c)).collect(),
            Self::Upper => text.to_ascii_uppercase(),
        }
    }
}

/// A pattern an identifier must match as a whole: the `regex` crate's syntax (linear
/// time, no backreferences), anchored at both ends. `\d` and `\w` are Unicode-aware
/// there; write `[0-9]` for ASCII digits.
#[derive(Clone)]
pub struct KeyPattern {
    source: String,
    regex: regex::Regex,
}

impl KeyPattern {
    pub fn new(source: &str) -> Result<Self, KeyError> {
        if source.is_empty() || source.chars().count() > MAX_PATTERN_CHARS {
            return Err(KeyError::Definition(format!("a pattern has 1 to {MAX_PATTERN_CHARS} characters")));
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|e| KeyError::Definition(format!("pattern {source:?}: {e}")))?;
        Ok(Self { source: source.to_string(), regex })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl PartialEq for KeyPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for KeyPattern {}

impl Hash for KeyPattern {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

impl fmt::Debug for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPattern({:?})", self.source)
    }
}

/// An identifier's rule: its normalization (a set, applied in [`Normalization`]'s
/// order) and an optional pattern. Every identifier, whatever the rule, is 1 to
/// [`MAX_IDENTIFIER_CHARS`] characters after normalization, without control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdentifierRule {
    normalize: Vec<Normalization>,
    pattern: Option<KeyPattern>,
}

impl IdentifierRule {
    pub fn new(mut normalize: Vec<Normalization>, pattern: Option<KeyPattern>) -> Self {
        normalize.sort_unstable();
        normalize.dedup();
        Self { normalize, pattern }
    }

    /// Only trimmed (what `--key-kind id` meant before key definitions).
    pub fn trimmed() -> Self {
        Self::new(vec![Normalization::Trim], None)
    }

    pub fn normalize(&self) -> &[Normalization] {
        &self.normalize
    }

    pub fn pattern(&self) -> Option<&KeyPattern> {
        self.pattern.as_ref()
    }

    /// The normalized identifier, or why the cell is not one.
    pub fn read(&self, raw: &str) -> Result<String, KeyError> {
        let text = self.normalize.iter().fold(raw.to_string(), |text, step| step.apply(text));
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        let chars = text.chars().count();
        if chars > MAX_IDENTIFIER_CHARS {
            return Err(KeyError::TooLong { chars });
        }
        if text.chars().any(char::is_control) {
            return Err(KeyError::ControlCharacter);
        }
        if let Some(pattern) = &self.pattern {
            if !pattern.is_match(&text) {
                let normalized = text.chars().take(40).collect();
                return Err(KeyError::PatternMismatch { normalized, pattern: pattern.source.clone() });
            }
        }
        Ok(text)
    }
}

/// What one column of a key holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PartKind {
    EntityCode,
    Identifier(IdentifierRule),
}

impl PartKind {
    /// The normalized cell and remarks for the data steward: a failed GB 11714 check,
    /// and a code accepted only after normalization (trim, full-width forms, case), so
    /// the steward can fix the source system that wrote it that way. Identifier rules
    /// normalize by design (spaces and hyphens in invoice numbers are routine) and give
    /// no remark.
    fn read(&self, raw: &str) -> Result<(String, Vec<String>), KeyError> {
        match self {
            Self::EntityCode => {
                let (code, warning) = EntityCode::parse(raw)?;
                let mut warnings: Vec<String> = warning.map(|w| w.to_string()).into_iter().collect();
                if code.as_str() != raw {
                    warnings.push(format!("code normalized from {raw:?}"));
                }
                Ok((code.to_string(), warnings))
            }
            Self::Identifier(rule) => rule.read(raw).map(|id| (id, Vec::new())),
        }
    }
}

/// One column of a composite key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyPart {
    pub column: String,
    pub kind: PartKind,
}

/// What a dataset's key holds. Written in a schema or a contract as
/// `{ kind = "entity_code" }`, `{ kind = "identifier", normalize = [...], pattern = "..." }`
/// or `{ kind = "composite", parts = [{ column = "...", kind = ..., ... }, ...] }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "KindRepr", into = "KindRepr")]
pub enum KeyKind {
    /// A unified social credit code (GB 32100), normalized and validated.
    #[default]
    EntityCode,
    /// An identifier under its rule, from the key column.
    Identifier(IdentifierRule),
    /// Several columns, in order; the key column names the whole and is not in the CSV.
    Composite(Vec<KeyPart>),
}

/// A key read from one row: its element text and any remarks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadKey {
    pub element: String,
    pub warnings: Vec<String>,
}

impl KeyKind {
    pub fn is_entity_code(&self) -> bool {
        *self == Self::EntityCode
    }

    /// Checks a composite: 2 to [`MAX_PARTS`] distinct, valid column names.
    pub fn validate(&self) -> Result<(), KeyError> {
        if let Self::Composite(parts) = self {
            if !(2..=MAX_PARTS).contains(&parts.len()) {
                return Err(KeyError::Definition(format!(
                    "a composite key has 2 to {MAX_PARTS} parts, not {}",
                    parts.len()
                )));
            }
            for (i, part) in parts.iter().enumerate() {
                if !is_identifier(&part.column) {
                    return Err(KeyError::Definition(format!(
                        "part column {:?} is not a valid column name",
                        part.column
                    )));
                }
                if parts[..i].iter().any(|p| p.column == part.column) {
                    return Err(KeyError::Definition(format!("part column {} appears twice", part.column)));
                }
            }
        }
        Ok(())
    }

    /// The CSV columns the key is read from: the key column itself, or a composite's parts.
    pub fn source_columns<'a>(&'a self, key_column: &'a str) -> Vec<&'a str> {
        match self {
            Self::Composite(parts) => parts.iter().map(|p| p.column.as_str()).collect(),
            _ => vec![key_column],
        }
    }

    /// Reads a key from its cells, in [`KeyKind::source_columns`] order.
    pub fn read(&self, cells: &[&str]) -> Result<ReadKey, KeyError> {
        let expected = match self {
            Self::Composite(parts) => parts.len(),
            _ => 1,
        };
        if cells.len() != expected {
            return Err(KeyError::CellCount { expected, got: cells.len() });
        }
        match self {
            Self::EntityCode => {
                let (element, warnings) = PartKind::EntityCode.read(cells[0])?;
                Ok(ReadKey { element, warnings })
            }
            Self::Identifier(rule) => Ok(ReadKey { element: rule.read(cells[0])?, warnings: Vec::new() }),
            Self::Composite(parts) => {
                let mut element = String::new();
                let mut warnings = Vec::new();
                for (part, cell) in parts.iter().zip(cells) {
                    let (text, part_warnings) = part.kind.read(cell).map_err(|reason| KeyError::InPart {
                        column: part.column.clone(),
                        reason: Box::new(reason),
                    })?;
                    element.push_str(&netstring(&text));
                    warnings.extend(part_warnings.into_iter().map(|w| format!("{}: {w}", part.column)));
                }
                Ok(ReadKey { element, warnings })
            }
        }
    }

    /// The canonical text of the definition (restricted RFC 8785 JSON, as in contracts):
    /// what a contract's dataset names and what refusals show.
    pub fn definition(&self) -> String {
        crate::canonical::to_canonical_bytes(&KindRepr::from(self.clone()))
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_default()
    }

    /// Reads a definition written as JSON (any spacing; [`KeyKind::definition`] gives
    /// the canonical text back).
    pub fn from_definition(text: &str) -> Result<Self, KeyError> {
        serde_json::from_str(text).map_err(|e| KeyError::Definition(e.to_string()))
    }

    /// SHA-256 of [`KeyKind::definition`], hex: a short name for the definition.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.definition().as_bytes()))
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.definition())
    }
}

/// `len ":" text ","`, `len` the UTF-8 byte length in decimal (D. J. Bernstein's
/// netstrings): parts are self-delimiting, so no part can shift into the next.
fn netstring(text: &str) -> String {
    format!("{}:{text},", text.len())
}

/// The parts of a composite key's element text, or `None` if it is not one.
pub fn composite_parts(element: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut rest = element;
    while !rest.is_empty() {
        let (len, tail) = rest.split_once(':')?;
        if len.is_empty()
            || !len.bytes().all(|b| b.is_ascii_digit())
            || (len.len() > 1 && len.starts_with('0'))
        {
            return None;
        }
        let len: usize = len.parse().ok()?;
        let part = tail.get(..len)?;
        rest = tail.get(len..)?.strip_prefix(',')?;
        parts.push(part);
    }
    (!parts.is_empty()).then_some(parts)
}

/// How a key kind (or part) is written.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KindRepr {
    kind: KindName,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    normalize: Vec<Normalization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parts: Vec<PartRepr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartRepr {
    column: String,
    kind: KindName,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    normalize: Vec<Normalization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pattern: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KindName {
    EntityCode,
    Identifier,
    Composite,
}

fn part_kind(
    kind: KindName,
    normalize: Vec<Normalization>,
    pattern: Option<String>,
) -> Result<PartKind, KeyError> {
    match kind {
        KindName::EntityCode if normalize.is_empty() && pattern.is_none() => Ok(PartKind::EntityCode),
        KindName::EntityCode => {
            Err(KeyError::Definition("an entity_code key has its own normalization and no pattern".into()))
        }
        KindName::Identifier => {
            let pattern = pattern.as_deref().map(KeyPattern::new).transpose()?;
            Ok(PartKind::Identifier(IdentifierRule::new(normalize, pattern)))
        }
        KindName::Composite => Err(KeyError::Definition("a composite's parts cannot be composite".into())),
    }
}

impl TryFrom<KindRepr> for KeyKind {
    type Error = KeyError;
    fn try_from(repr: KindRepr) -> Result<Self, Self::Error> {
        let kind = match repr.kind {
            KindName::Composite => {
                if !repr.normalize.is_empty() || repr.pattern.is_some() {
                    return Err(KeyError::Definition(
                        "a composite key's normalization and pattern belong to its parts".into(),
                    ));
                }
                let parts = repr
                    .parts
                    .into_iter()
                    .map(|p| {
                        Ok(KeyPart { kind: part_kind(p.kind, p.normalize, p.pattern)?, column: p.column })
                    })
                    .collect::<Result<Vec<_>, KeyError>>()?;
                KeyKind::Composite(parts)
            }
            _ if !repr.parts.is_empty() => {
                return Err(KeyError::Definition("only a composite key has parts".into()));
            }
            other => match part_kind(other, repr.normalize, repr.pattern)? {
                PartKind::EntityCode => KeyKind::EntityCode,
                PartKind::Identifier(rule) => KeyKind::Identifier(rule),
            },
        };
        kind.validate()?;
        Ok(kind)
    }
}

fn rule_repr(rule: &IdentifierRule) -> (Vec<Normalization>, Option<String>) {
    (rule.normalize.clone(), rule.pattern.as_ref().map(|p| p.source.clone()))
}

impl From<KeyKind> for KindRepr {
    fn from(kind: KeyKind) -> Self {
        let empty = |kind| KindRepr { kind, normalize: Vec::new(), pattern: None, parts: Vec::new() };
        match kind {
            KeyKind::EntityCode => empty(KindName::EntityCode),
            KeyKind::Identifier(rule) => {
                let (normalize, pattern) = rule_repr(&rule);
                KindRepr { normalize, pattern, ..empty(KindName::Identifier) }
            }
            KeyKind::Composite(parts) => KindRepr {
                parts: parts
                    .into_iter()
                    .map(|p| match p.kind {
                        PartKind::EntityCode => PartRepr {
                            column: p.column,
                            kind: KindName::EntityCode,
                            normalize: Vec::new(),
                            pattern: None,
                        },
                        PartKind::Identifier(rule) => {
                            let (normalize, pattern) = rule_repr(&rule);
                            PartRepr { column: p.column, kind: KindName::Identifier, normalize, pattern }
                        }
                    })
                    .collect(),
                ..empty(KindName::Composite)
            },
        }
    }
}

impl fmt::Display for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EntityCode => "entity_code",
            Self::Identifier => "identifier",
            Self::Composite => "composite",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: &str = "91350203MA31XEK09P";

    fn invoice_key() -> KeyKind {
        toml::from_str::<KeyKind>(
            r#"kind = "identifier"
               normalize = ["upper", "strip_hyphens", "fullwidth", "strip_spaces", "trim"]
               pattern = "[0-9]{20}""#,
        )
        .expect("parses")
    }

    fn receivable_key() -> KeyKind {
        toml::from_str::<KeyKind>(
            r#"kind = "composite"
               parts = [
                 { column = "supplier_code", kind = "entity_code" },
                 { column = "invoice_no", kind = "identifier", normalize = ["strip_spaces", "strip_hyphens"], pattern = "[0-9]{20}" },
               ]"#,
        )
        .expect("parses")
    }

    #[test]
    fn identifiers_normalize_in_one_order_whatever_was_written() {
        let key = invoice_key();
        let read = |cell: &str| key.read(&[cell]).map(|k| k.element);
        assert_eq!(read(" 2535 0200 0000-0012-3456 "), Ok("25350200000000123456".into()));
        // Full-width digits and an ideographic space, as typed on a Chinese keyboard.
        let full_width: String = "25350200000000123456"
            .chars()
            .map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap_or(c))
            .chain(['\u{3000}'])
            .collect();
        assert_eq!(read(&full_width), Ok("25350200000000123456".into()));
        assert_eq!(
            read("2535020000000012345"),
            Err(KeyError::PatternMismatch {
                normalized: "2535020000000012345".into(),
                pattern: "[0-9]{20}".into()
            })
        );
        assert_eq!(read(" - "), Err(KeyError::Empty));
        // The pattern is anchored: a valid number with a suffix does not pass.
        assert!(matches!(read("25350200000000123456X"), Err(KeyError::PatternMismatch { .. })));
        assert_eq!(
            key.definition(),
            r#"{"kind":"identifier","normalize":["fullwidth","trim","strip_spaces","strip_hyphens","upper"],"pattern":"[0-9]{20}"}"#
        );
    }

    #[test]
    fn identifier_without_pattern_still_refuses_control_characters_and_huge_cells() {
        let key = KeyKind::Identifier(IdentifierRule::trimmed());
        assert_eq!(key.read(&["a\u{1}b"]).map(|k| k.element), Err(KeyError::ControlCharacter));
        assert_eq!(key.read(&[&"x".repeat(129)]).map(|k| k.element), Err(KeyError::TooLong { chars: 129 }));
        assert_eq!(key.read(&["  AB-1 "]).map(|k| k.element), Ok("AB-1".into()));
    }

    /// The composite's element text, byte for byte (ARCHITECTURE.md, "Dataset keys").
    #[test]
    fn composite_element_is_length_prefixed_parts_in_order() {
        let key = receivable_key();
        let read = key.read(&[" 91350203ma31xek09p ", "2535-0200-0000-0012-3456"]).expect("valid");
        assert_eq!(read.element, format!("18:{CODE},20:25350200000000123456,"));
        // The code needed normalizing; the invoice number's rule is routine, no remark.
        assert_eq!(
            read.warnings,
            vec!["supplier_code: code normalized from \" 91350203ma31xek09p \"".to_string()]
        );
        assert_eq!(key.read(&[CODE, "25350200000000123456"]).map(|k| k.warnings), Ok(Vec::new()));
        assert_eq!(
            hex::encode(read.element.as_bytes()),
            // "18:" CODE "," "20:" number ","
            "31383a".to_owned()
                + &hex::encode(CODE)
                + "2c"
                + "32303a"
                + &hex::encode("25350200000000123456")
                + "2c"
        );
        assert_eq!(composite_parts(&read.element), Some(vec![CODE, "25350200000000123456"]));
        let err = key.read(&[CODE, "123"]).expect_err("short invoice number");
        assert_eq!(err.to_string(), "key column invoice_no: \"123\" does not match the pattern [0-9]{20}");
        let err = key.read(&["91350203MA31XEK09Q", "25350200000000123456"]).expect_err("bad check");
        assert!(
            err.to_string().starts_with("key column supplier_code: bad unified social credit code"),
            "{err}"
        );
        assert_eq!(key.read(&[CODE]).map(|k| k.element), Err(KeyError::CellCount { expected: 2, got: 1 }));
    }

    /// A code accepted only after normalization is a remark for the data steward,
    /// naming the cell as written; a code written canonically gives none.
    #[test]
    fn entity_codes_accepted_after_normalization_say_what_they_were() {
        let key = KeyKind::EntityCode;
        let full_width: String =
            CODE.chars().map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap_or(c)).collect();
        for raw in [" 91350203MA31XEK09P", "91350203ma31xek09p", full_width.as_str()] {
            let read = key.read(&[raw]).expect("valid");
            assert_eq!(read.element, CODE);
            assert_eq!(read.warnings, vec![format!("code normalized from {raw:?}")]);
        }
        assert_eq!(key.read(&[CODE]).map(|k| k.warnings), Ok(Vec::new()));
    }

    /// A part cannot swallow its neighbour: ("1:2,", "x") and ("1", "2,x") never collide.
    #[test]
    fn composite_parts_cannot_shift_into_each_other() {
        let key: KeyKind = toml::from_str(
            r#"kind = "composite"
               parts = [{ column = "a", kind = "identifier" }, { column = "b", kind = "identifier" }]"#,
        )
        .expect("parses");
        let one = key.read(&["1:2,", "x"]).expect("valid").element;
        let two = key.read(&["1", "2,x"]).expect("valid").element;
        assert_ne!(one, two);
        assert_eq!(composite_parts(&one), Some(vec!["1:2,", "x"]));
        assert_eq!(composite_parts(&two), Some(vec!["1", "2,x"]));
        for bad in ["", "3:ab,", "01:a,", "1:a", "x:a,"] {
            assert_eq!(composite_parts(bad), None, "{bad}");
        }
    }

    #[test]
    fn definitions_round_trip_and_bad_ones_are_named() {
        for kind in [KeyKind::EntityCode, invoice_key(), receivable_key()] {
            let json = kind.definition();
            let back = KeyKind::from_definition(&json).expect("parses back");
            assert_eq!(back, kind);
            assert_eq!(back.digest().len(), 64);
        }
        assert_eq!(KeyKind::EntityCode.definition(), r#"{"kind":"entity_code"}"#);
        assert_ne!(invoice_key().digest(), receivable_key().digest());
        let refused = [
            (r#"kind = "composite""#, "2 to 8 parts"),
            (
                r#"kind = "identifier"
                pattern = "[0-9""#,
                "pattern",
            ),
            (
                r#"kind = "entity_code"
                pattern = "x""#,
                "own normalization",
            ),
            (
                r#"kind = "identifier"
                parts = [{ column = "a", kind = "identifier" }]"#,
                "only a composite",
            ),
            (
                r#"kind = "composite"
                parts = [{ column = "a", kind = "identifier" }, { column = "a", kind = "entity_code" }]"#,
                "twice",
            ),
            (
                r#"kind = "composite"
                parts = [{ column = "a", kind = "composite" }, { column = "b", kind = "entity_code" }]"#,
                "cannot be composite",
            ),
            (
                r#"kind = "identifier"
                normalize = ["lowercase"]"#,
                "unknown variant",
            ),
        ];
        for (text, reason) in refused {
            let err = toml::from_str::<KeyKind>(text).expect_err(text).to_string();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
