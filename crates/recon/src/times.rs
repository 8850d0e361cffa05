//! Times: the arguments of a reconciliation and of every admin filter (unix seconds or RFC
//! 3339, parsed by the `time` crate's strict RFC 3339 parser), and the RFC 3339 UTC form a
//! report writes.
//!
//! Must not: read a clock or do IO.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Parses a time argument: unix seconds (`1767225600`) or RFC 3339 (`2026-01-01T00:00:00Z`,
/// `2026-01-01T01:00:00+01:00`, fractional seconds dropped).
pub fn parse_time(s: &str) -> Result<u64, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format!("`{s}` is too large"));
    }
    let bad = || format!("`{s}` is neither unix seconds nor RFC 3339 (2026-01-31T00:00:00Z)");
    // RFC 3339 separates date and time with `T` (any case) or, by its section 5.6, a space;
    // the parser takes any byte there, so the separator is checked first.
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return Err(bad());
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| bad())?;
    u64::try_from(t.unix_timestamp()).map_err(|_| bad())
}

/// `unix_s` as RFC 3339 in UTC, to the second (`2026-01-01T00:00:00Z`); empty past year 9999.
pub fn rfc3339_utc(unix_s: u64) -> String {
    let Some(t) = i64::try_from(unix_s).ok().and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()) else {
        return String::new();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        // Goal: a report's times are RFC 3339 UTC to the second and parse back to the same instant.
        assert_eq!(rfc3339_utc(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        for t in [0, 1_709_251_199, 1_767_225_600] {
            assert_eq!(parse_time(&rfc3339_utc(t)), Ok(t));
        }
    }

    #[test]
    fn time_arguments() {
        // Goal: unix seconds and RFC 3339 (Z, offsets, fractions) parse to the same instant; malformed and impossible times are refused.
        assert_eq!(parse_time("1767225600"), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01t00:00:00.250z"), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01T01:30:00+01:30"), Ok(1_767_225_600));
        assert_eq!(parse_time("2025-12-31T22:00:00-02:00"), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01 00:00:00Z"), Ok(1_767_225_600));
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-01-01X00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00+24:00",
            "+2026-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "1e9",
            "-5",
            "99999999999999999999999",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }
}
