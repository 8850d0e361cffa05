//! Decimal-string 256-bit integers (`amount`, `value`, `validAfter`, `validBefore`).

use std::fmt;
use std::str::FromStr;

use alloy_primitives::U256;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An unsigned 256-bit integer written on the wire as a decimal string.
///
/// Parsing is strict: one to 78 ASCII digits, nothing else (no sign, no `0x`, no spaces, no
/// exponent), and the value must fit 256 bits. A JSON number is rejected too: clients send
/// strings, and a number would silently lose precision in JavaScript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DecimalU256(pub U256);

/// Why a decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecimalError {
    /// Empty, or a character other than `0`-`9`.
    NotDecimal,
    /// More than 2^256 - 1.
    Overflow,
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecimalError::NotDecimal => f.write_str("expected a string of decimal digits"),
            DecimalError::Overflow => f.write_str("integer does not fit in 256 bits"),
        }
    }
}

impl std::error::Error for DecimalError {}

impl DecimalU256 {
    /// The value as `u64`, or `None` when it does not fit.
    pub fn to_u64(self) -> Option<u64> {
        u64::try_from(self.0).ok()
    }
}

impl From<U256> for DecimalU256 {
    fn from(v: U256) -> Self {
        DecimalU256(v)
    }
}

impl From<u64> for DecimalU256 {
    fn from(v: u64) -> Self {
        DecimalU256(U256::from(v))
    }
}

impl FromStr for DecimalU256 {
    type Err = DecimalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // 2^256 - 1 has 78 digits; anything longer cannot fit (leading zeros included, which
        // no honest client sends).
        if s.is_empty() || s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecimalError::NotDecimal);
        }
        U256::from_str_radix(s, 10).map(DecimalU256).map_err(|_| DecimalError::Overflow)
    }
}

impl fmt::Display for DecimalU256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for DecimalU256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DecimalU256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DecimalU256;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal integer string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: only plain decimal digits that fit 256 bits are accepted.
    #[test]
    fn parses_strictly() {
        assert_eq!("0".parse::<DecimalU256>(), Ok(DecimalU256(U256::ZERO)));
        assert_eq!("10000".parse::<DecimalU256>(), Ok(DecimalU256(U256::from(10_000u64))));
        let max = U256::MAX.to_string();
        assert_eq!(max.parse::<DecimalU256>(), Ok(DecimalU256(U256::MAX)));
        for bad in ["", "-1", "+1", "0x10", "1e6", " 1", "1 ", "1.0", "١"] {
            assert_eq!(bad.parse::<DecimalU256>(), Err(DecimalError::NotDecimal), "{bad:?}");
        }
        let over = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert_eq!(over.parse::<DecimalU256>(), Err(DecimalError::Overflow));
        assert_eq!("1".repeat(79).parse::<DecimalU256>(), Err(DecimalError::NotDecimal));
    }

    // Goal: JSON numbers are refused; strings round-trip.
    #[test]
    fn json_is_string_only() {
        assert!(serde_json::from_str::<DecimalU256>("10000").is_err());
        let v: DecimalU256 = serde_json::from_str("\"10000\"").unwrap_or_default();
        assert_eq!(serde_json::to_string(&v).ok().as_deref(), Some("\"10000\""));
    }
}
