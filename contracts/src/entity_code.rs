//! Unified social credit codes (统一社会信用代码, GB 32100-2015): the key of every market
//! entity in every dataset.
//!
//! Layout of the 18 characters, over the alphabet `0123456789ABCDEFGHJKLMNPQRTUWXY`
//! (no I, O, S, V, Z):
//!
//! | positions | meaning |
//! |---|---|
//! | 1 | registration authority (`9` = market regulation) |
//! | 2 | entity type (for `9`: `1` enterprise, `2` sole proprietor, `3` farmers' cooperative) |
//! | 3-8 | administrative division (digits; Xiamen's districts are 350203..350213) |
//! | 9-17 | organization code (GB 11714), its own check character at 17 |
//! | 18 | check character: `31 - (Σ value(c_i)·w_i mod 31)`, 31 read as 0 |
//!
//! Import normalizes (trim, full-width to ASCII, upper case) and rejects a code whose
//! position-18 check fails; a failed GB 11714 check at position 17 is only a warning,
//! because older organization codes in government data do not always carry it.

use std::fmt;

use rand_core::RngCore;
use serde::{Deserialize, Serialize};

/// The 31 characters of the code alphabet, in value order.
pub const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// Weights of positions 1..17 for the check character (3^(i-1) mod 31).
const WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];
/// GB 11714 weights of the 8 organization-code body characters.
const ORG_WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
/// Registration authorities GB 32100 assigns.
const AUTHORITIES: &[u8] = b"123456789ANY";

/// Xiamen's districts by administrative division code.
pub const XIAMEN_DISTRICTS: [(&str, &str); 6] = [
    ("350203", "Siming"),
    ("350205", "Haicang"),
    ("350206", "Huli"),
    ("350211", "Jimei"),
    ("350212", "Tong'an"),
    ("350213", "Xiang'an"),
];

/// What is wrong with a code, precisely enough for a data steward to fix the row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntityCodeError {
    #[error("code has {got} characters, a unified social credit code has 18")]
    Length { got: usize },
    #[error("character {found:?} at position {position} is not in the code alphabet (no I, O, S, V, Z)")]
    InvalidCharacter { position: usize, found: char },
    #[error("registration authority {found:?} (position 1) is not one GB 32100 assigns")]
    UnknownAuthority { found: char },
    #[error("entity type {found:?} (position 2) is not valid for registration authority {authority:?}")]
    UnknownEntityType { authority: char, found: char },
    #[error("administrative division {found:?} (positions 3-8) must be six digits")]
    BadDivision { found: String },
    #[error("check character is {found:?}, the first 17 characters require {expected:?}")]
    CheckCharacter { expected: char, found: char },
}

/// Something suspicious that does not make the code invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityCodeWarning {
    /// Position 17 does not satisfy GB 11714's organization-code check.
    OrganizationCheck { expected: char, found: char },
}

impl fmt::Display for EntityCodeWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OrganizationCheck { expected, found } => {
                write!(f, "organization code check (position 17) is {found:?}, GB 11714 expects {expected:?}")
            }
        }
    }
}

/// The kind of market entity, from positions 1-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    Enterprise,
    SoleProprietor,
    FarmersCooperative,
    /// Registered by another authority (institutions, social organizations, ...).
    Other,
}

/// A validated, normalized 18-character code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntityCode([u8; 18]);

impl EntityCode {
    /// Normalizes and validates `raw`; the warning, if any, is returned beside the code.
    pub fn parse(raw: &str) -> Result<(Self, Option<EntityCodeWarning>), EntityCodeError> {
        let normalized = normalize(raw);
        let chars: Vec<char> = normalized.chars().collect();
        if chars.len() != 18 {
            return Err(EntityCodeError::Length { got: chars.len() });
        }
        let mut bytes = [0u8; 18];
        let mut values = [0u32; 18];
        for (i, c) in chars.iter().enumerate() {
            let value =
                char_value(*c).ok_or(EntityCodeError::InvalidCharacter { position: i + 1, found: *c })?;
            bytes[i] = *c as u8;
            values[i] = value;
        }
        let authority = chars[0];
        if !AUTHORITIES.contains(&bytes[0]) {
            return Err(EntityCodeError::UnknownAuthority { found: authority });
        }
        if !entity_type_allowed(bytes[0], bytes[1]) {
            return Err(EntityCodeError::UnknownEntityType { authority, found: chars[1] });
        }
        if !bytes[2..8].iter().all(u8::is_ascii_digit) {
            return Err(EntityCodeError::BadDivision { found: chars[2..8].iter().collect() });
        }
        let expected = check_character(&values[..17]);
        if expected != bytes[17] {
            return Err(EntityCodeError::CheckCharacter { expected: expected as char, found: chars[17] });
        }
        let warning =
            organization_check(&bytes[8..16]).filter(|expected| *expected != bytes[16]).map(|expected| {
                EntityCodeWarning::OrganizationCheck { expected: expected as char, found: chars[16] }
            });
        Ok((Self(bytes), warning))
    }

    pub fn as_str(&self) -> &str {
        // Only ALPHABET bytes are ever stored, all ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8; 18] {
        &self.0
    }

    /// The administrative division (positions 3-8).
    pub fn division(&self) -> &str {
        &self.as_str()[2..8]
    }

    /// The Xiamen district name, if the division is one.
    pub fn xiamen_district(&self) -> Option<&'static str> {
        let division = self.division();
        XIAMEN_DISTRICTS.iter().find(|(code, _)| *code == division).map(|(_, name)| *name)
    }

    pub fn kind(&self) -> EntityKind {
        match (self.0[0], self.0[1]) {
            (b'9', b'1') => EntityKind::Enterprise,
            (b'9', b'2') => EntityKind::SoleProprietor,
            (b'9', b'3') => EntityKind::FarmersCooperative,
            _ => EntityKind::Other,
        }
    }

    /// A random valid code of `kind` in `division` (six digits), with a valid GB 11714
    /// organization check too: synthetic data for the simulator and tests.
    pub fn random(rng: &mut impl RngCore, kind: EntityKind, division: &str) -> Result<Self, EntityCodeError> {
        let type_char = match kind {
            EntityKind::Enterprise => b'1',
            EntityKind::SoleProprietor => b'2',
            EntityKind::FarmersCooperative => b'3',
            EntityKind::Other => b'9',
        };
        let authority = if kind == EntityKind::Other { b'5' } else { b'9' };
        let mut text = vec![authority, type_char];
        text.extend_from_slice(division.as_bytes());
        // Organization code body: digits and capital letters of the code alphabet.
        for _ in 0..8 {
            text.push(ALPHABET[(rng.next_u32() % 31) as usize]);
        }
        let org_check = organization_check(&text[8..16]).ok_or(EntityCodeError::Length { got: 0 })?;
        text.push(org_check);
        let values: Vec<u32> = text.iter().filter_map(|b| char_value(*b as char)).collect();
        if values.len() != 17 {
            return Err(EntityCodeError::BadDivision { found: division.to_string() });
        }
        text.push(check_character(&values));
        let code = String::from_utf8_lossy(&text).into_owned();
        Self::parse(&code).map(|(code, _)| code)
    }
}

impl fmt::Display for EntityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for EntityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityCode({})", self.as_str())
    }
}

impl TryFrom<String> for EntityCode {
    type Error = EntityCodeError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).map(|(code, _)| code)
    }
}

impl From<EntityCode> for String {
    fn from(code: EntityCode) -> String {
        code.as_str().to_string()
    }
}

/// Trim, full-width forms to ASCII (U+FF01..U+FF5E, ideographic space), upper case.
pub fn normalize(raw: &str) -> String {
    raw.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            other => other,
        })
        .collect::<String>()
        .trim()
        .to_ascii_uppercase()
}

fn char_value(c: char) -> Option<u32> {
    ALPHABET.iter().position(|a| *a as char == c).map(|p| p as u32)
}

fn entity_type_allowed(authority: u8, entity_type: u8) -> bool {
    match authority {
        b'9' => matches!(entity_type, b'1' | b'2' | b'3'),
        b'Y' => entity_type == b'1',
        _ => matches!(entity_type, b'1'..=b'9'),
    }
}

/// The GB 32100 check character over the values of positions 1..17.
fn check_character(values: &[u32]) -> u8 {
    let sum: u32 = values.iter().zip(WEIGHTS.iter()).map(|(v, w)| v * w).sum();
    let check = (31 - sum % 31) % 31;
    ALPHABET[check as usize]
}

/// The GB 11714 check character of an 8-character organization-code body
/// (digits value 0-9, letters A=10 .. Z=35), or `None` if a character is out of range.
fn organization_check(body: &[u8]) -> Option<u8> {
    let mut sum = 0u32;
    for (b, w) in body.iter().zip(ORG_WEIGHTS.iter()) {
        let value = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return None,
        };
        sum += value * w;
    }
    Some(match 11 - sum % 11 {
        10 => b'X',
        11 => b'0',
        digit => b'0' + digit as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    /// A generated valid code (the generator is itself checked against independently
    /// computed codes below).
    fn valid_code() -> EntityCode {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        EntityCode::random(&mut rng, EntityKind::Enterprise, "350203").expect("generator makes valid codes")
    }

    /// Codes whose check characters were computed independently of this module (a
    /// short Python script over the rules in design.md):
    /// `91350203MA31XEK09`: weighted sum 2085, 2085 mod 31 = 8, 31 - 8 = 23 -> 'P';
    /// `92350206MA8T12340`: weighted sum 1785, 1785 mod 31 = 18, 31 - 18 = 13 -> 'D';
    /// organization bodies MA31XEK0 and MA8T1234 have GB 11714 checks '9' and '0'.
    #[test]
    fn independently_computed_codes_validate() {
        let (code, warning) = EntityCode::parse("91350203MA31XEK09P").expect("valid enterprise code");
        assert_eq!(warning, None);
        assert_eq!(code.kind(), EntityKind::Enterprise);
        assert_eq!(code.xiamen_district(), Some("Siming"));
        let (code, warning) = EntityCode::parse("92350206MA8T12340D").expect("valid sole proprietor code");
        assert_eq!(warning, None);
        assert_eq!(code.kind(), EntityKind::SoleProprietor);
        assert_eq!(code.xiamen_district(), Some("Huli"));
        // Same body with position 17 = '7': GB 32100 check 'H' holds, GB 11714 wants '9'.
        let (_, warning) = EntityCode::parse("91350203MA31XEK07H").expect("valid with a warning");
        assert_eq!(warning, Some(EntityCodeWarning::OrganizationCheck { expected: '9', found: '7' }));
        assert_eq!(
            EntityCode::parse("91350203MA31XEK09Q").err(),
            Some(EntityCodeError::CheckCharacter { expected: 'P', found: 'Q' })
        );
    }

    #[test]
    fn generator_codes_validate_without_warnings() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        for (division, _) in XIAMEN_DISTRICTS {
            for kind in [EntityKind::Enterprise, EntityKind::SoleProprietor, EntityKind::FarmersCooperative] {
                let code = EntityCode::random(&mut rng, kind, division).expect("valid");
                let (parsed, warning) = EntityCode::parse(code.as_str()).expect("valid");
                assert_eq!(parsed, code);
                assert_eq!(warning, None);
                assert_eq!(parsed.kind(), kind);
                assert!(parsed.xiamen_district().is_some());
            }
        }
    }

    #[test]
    fn normalization_trims_upcases_and_folds_full_width() {
        let code = valid_code();
        let messy: String = format!("  {}\u{3000}", code.as_str().to_ascii_lowercase())
            .chars()
            .map(|c| if c.is_ascii_digit() { char::from_u32(c as u32 + 0xFEE0).unwrap_or(c) } else { c })
            .collect();
        assert_eq!(EntityCode::parse(&messy).map(|(c, _)| c), Ok(code));
    }

    #[test]
    fn each_kind_of_bad_code_is_named() {
        let good = valid_code();
        let s = good.as_str();
        assert_eq!(EntityCode::parse(&s[..17]).err(), Some(EntityCodeError::Length { got: 17 }));
        let with_o = format!("{}O{}", &s[..5], &s[6..]);
        assert_eq!(
            EntityCode::parse(&with_o).err(),
            Some(EntityCodeError::InvalidCharacter { position: 6, found: 'O' })
        );
        let bad_authority = format!("Z{}", &s[1..]);
        assert_eq!(
            EntityCode::parse(&bad_authority).err(),
            Some(EntityCodeError::InvalidCharacter { position: 1, found: 'Z' })
        );
        let bad_authority = format!("B{}", &s[1..]);
        assert_eq!(
            EntityCode::parse(&bad_authority).err(),
            Some(EntityCodeError::UnknownAuthority { found: 'B' })
        );
        let bad_type = format!("95{}", &s[2..]);
        assert_eq!(
            EntityCode::parse(&bad_type).err(),
            Some(EntityCodeError::UnknownEntityType { authority: '9', found: '5' })
        );
        let bad_division = format!("{}A{}", &s[..2], &s[3..]);
        assert!(matches!(EntityCode::parse(&bad_division), Err(EntityCodeError::BadDivision { .. })));
        // Change the check character to every other alphabet character: all refused.
        for other in ALPHABET.iter().map(|b| *b as char).filter(|c| !s.ends_with(*c)) {
            let tampered = format!("{}{}", &s[..17], other);
            assert!(matches!(EntityCode::parse(&tampered), Err(EntityCodeError::CheckCharacter { .. })));
        }
    }

    #[test]
    fn bad_organization_check_is_a_warning_only() {
        let good = valid_code();
        let s = good.as_str();
        // Change position 17 and recompute position 18 so only GB 11714 fails.
        let position_17 = s.as_bytes()[16];
        let replacement = if position_17 == b'1' { '2' } else { '1' };
        let mut prefix = format!("{}{}", &s[..16], replacement);
        let values: Vec<u32> = prefix.chars().filter_map(char_value).collect();
        prefix.push(check_character(&values) as char);
        let (_, warning) = EntityCode::parse(&prefix).expect("only a warning");
        assert_eq!(
            warning,
            Some(EntityCodeWarning::OrganizationCheck { expected: position_17 as char, found: replacement })
        );
    }
}
