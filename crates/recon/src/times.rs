//! Time arguments of a reconciliation: unix seconds or RFC 3339, parsed by the `time` crate's
//! strict RFC 3339 parser.
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

#[cfg(test)]
mod tests {
    use super::*;

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
