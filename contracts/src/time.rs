//! Points in time as unix seconds. The canonical form is always the integer; people may
//! write an RFC 3339 time with an explicit offset instead (`2026-01-01T00:00:00+08:00`,
//! quoted or as a TOML offset date-time), which is read into the same integer, so the
//! signed bytes do not depend on how a time was written.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::Deserializer;

use crate::canonical::MAX_SAFE_INTEGER;
use crate::data::{civil_from_days, days_from_civil, Date};

/// Seconds in a day.
pub const DAY: u64 = 86_400;

/// Parses `YYYY-MM-DDTHH:MM:SS` followed by `Z` or `±HH:MM` (no fractional seconds) into
/// unix seconds. Times before 1970 are refused.
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let bad = |reason: &str| format!("{text:?} is not a time YYYY-MM-DDTHH:MM:SS+08:00: {reason}");
    if text.len() < 19 || !text.is_char_boundary(10) || !text.is_char_boundary(19) {
        return Err(bad("too short"));
    }
    let date = Date::parse(&text[..10]).map_err(|e| bad(&e.to_string()))?;
    let bytes = text.as_bytes();
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[13] != b':' || bytes[16] != b':' {
        return Err(bad("expected 'T' then HH:MM:SS"));
    }
    let two = |at: usize| -> Result<i64, String> {
        let pair = &bytes[at..at + 2];
        if pair.iter().all(u8::is_ascii_digit) {
            Ok(i64::from(pair[0] - b'0') * 10 + i64::from(pair[1] - b'0'))
        } else {
            Err(bad("hours, minutes and seconds are two digits each"))
        }
    };
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    if hour > 23 || minute > 59 || second > 59 {
        return Err(bad("hour, minute or second out of range"));
    }
    let offset = match &text[19..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && zone.is_char_boundary(1) && zone.as_bytes()[3] == b':' => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad("offset must be Z or ±HH:MM")),
            };
            let (h, m) = (two(20)?, two(23)?);
            if h > 23 || m > 59 {
                return Err(bad("offset out of range"));
            }
            sign * (h * 3600 + m * 60)
        }
        zone if zone.starts_with('.') => return Err(bad("fractional seconds are not allowed")),
        "" => return Err(bad("an offset (Z or +08:00) is required")),
        _ => return Err(bad("offset must be Z or ±HH:MM")),
    };
    let seconds =
        i64::from(date.days_since_epoch()) * DAY as i64 + hour * 3600 + minute * 60 + second - offset;
    if seconds < 0 {
        return Err(bad("before 1970-01-01T00:00:00Z"));
    }
    Ok(seconds as u64)
}

/// `YYYY-MM-DDTHH:MM:SSZ`, for messages and annotations.
pub fn format_utc(unix: u64) -> String {
    let days = (unix / DAY) as i64;
    let rest = unix % DAY;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest / 60 % 60, rest % 60)
}

/// Unix seconds at midnight UTC of a date, for tests and tools.
pub fn unix_at_midnight_utc(year: i32, month: u32, day: u32) -> u64 {
    days_from_civil(i64::from(year), month, day).max(0) as u64 * DAY
}

/// Deserializes unix seconds from an integer, an RFC 3339 string or a TOML offset
/// date-time.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(UnixSecondsVisitor)
}

/// The key under which the `toml` crate hands a TOML date-time to serde.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

struct UnixSecondsVisitor;

impl<'de> Visitor<'de> for UnixSecondsVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unix seconds, or a time like \"2026-01-01T00:00:00+08:00\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v > MAX_SAFE_INTEGER as u64 {
            return Err(E::custom(format!("{v} is beyond 2^53-1")));
        }
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom("a time must not be negative")).and_then(|v| self.visit_u64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_rfc3339(v).map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        match map.next_key::<String>()? {
            Some(key) if key == TOML_DATETIME_KEY => {
                let text: String = map.next_value()?;
                parse_rfc3339(&text).map_err(de::Error::custom)
            }
            _ => Err(de::Error::custom("expected unix seconds or a time like \"2026-01-01T00:00:00+08:00\"")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00+08:00"), Ok(1_767_196_800));
        assert_eq!(parse_rfc3339("2025-12-31T16:00:00Z"), Ok(1_767_196_800));
        assert_eq!(format_utc(1_767_196_800), "2025-12-31T16:00:00Z");
        for bad in [
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.5Z",
            "2026-01-01T24:00:00Z",
            "2026-02-30T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-01-01T00:00:00+8:00",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deserializes_from_toml_in_three_spellings() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "deserialize")]
            t: u64,
        }
        for text in [
            "t = 1767196800",
            "t = \"2026-01-01T00:00:00+08:00\"",
            "t = 2026-01-01T00:00:00+08:00",
            "t = 2025-12-31T16:00:00Z",
        ] {
            let parsed: T = toml::from_str(text).expect(text);
            assert_eq!(parsed.t, 1_767_196_800, "{text}");
        }
        assert!(toml::from_str::<T>("t = 2026-01-01T00:00:00").is_err());
        assert!(toml::from_str::<T>("t = -1").is_err());
    }
}
