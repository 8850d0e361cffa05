//! How a token amount is shown to people: the one formatting function of every human-facing
//! amount (CLI output, the reconciliation's CSV and JSON, revenue, runs, exceptions) and the
//! one parser of an amount an operator types.
//!
//! An amount is shown as a decimal string in token units (`"0.028"`) with the asset's symbol
//! (`USDC`); in JSON and CSV the atomic integer stands beside it as a decimal string
//! (`"28000"`). Never hex, never a float.
//!
//! Must not: do IO, or name the error type (a parse failure is a plain message).

use alloy_primitives::U256;
use serde_json::{Map, Value};

/// The symbol and decimals of a token, as configured for its network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUnits {
    /// The asset's symbol (`USDC`).
    pub symbol: String,
    /// The token's decimals (6 for USDC).
    pub decimals: u8,
}

impl Default for TokenUnits {
    /// USDC: 6 decimals.
    fn default() -> TokenUnits {
        TokenUnits { symbol: "USDC".to_owned(), decimals: 6 }
    }
}

impl TokenUnits {
    /// The amount in token units, without trailing zeros: `28000` → `"0.028"`, `1000000` →
    /// `"1"`, `0` → `"0"`.
    pub fn human(&self, atomic: U256) -> String {
        let digits = atomic.to_string();
        let places = usize::from(self.decimals);
        if places == 0 {
            return digits;
        }
        let padded = format!("{digits:0>width$}", width = places + 1);
        let (whole, frac) = padded.split_at(padded.len() - places);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() { whole.to_owned() } else { format!("{whole}.{frac}") }
    }

    /// The amount with its symbol, for a line of text: `"0.028 USDC"`.
    pub fn label(&self, atomic: U256) -> String {
        format!("{} {}", self.human(atomic), self.symbol)
    }

    /// Writes `name` (token units) and `name_atomic` (the atomic integer) into a JSON object,
    /// both decimal strings; `None` writes both as null.
    pub fn put(&self, object: &mut Map<String, Value>, name: &str, atomic: Option<U256>) {
        let (human, raw) = match atomic {
            Some(a) => (Value::String(self.human(a)), Value::String(a.to_string())),
            None => (Value::Null, Value::Null),
        };
        object.insert(name.to_owned(), human);
        object.insert(format!("{name}_atomic"), raw);
    }

    /// Parses an amount an operator typed: token units by default (`0.013`, `1`, `.5`, at most
    /// `decimals` places), atomic units with the suffix `atomic` (`13000atomic`).
    pub fn parse(&self, s: &str) -> Result<U256, String> {
        let bad = || {
            format!(
                "`{s}`: expected an amount in {} like 0.013 (at most {} decimal places) or atomic units like \
                 13000atomic",
                self.symbol, self.decimals
            )
        };
        let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if let Some(atomic) = s.strip_suffix("atomic") {
            if atomic.is_empty() || !digits(atomic) {
                return Err(bad());
            }
            return U256::from_str_radix(atomic, 10).map_err(|_| bad());
        }
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let places = usize::from(self.decimals);
        if (whole.is_empty() && frac.is_empty())
            || s.ends_with('.')
            || !digits(whole)
            || !digits(frac)
            || frac.len() > places
        {
            return Err(bad());
        }
        let whole = if whole.is_empty() { "0" } else { whole };
        U256::from_str_radix(&format!("{whole}{frac:0<places$}"), 10).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: amounts print in token units without trailing zeros or hex, with the symbol when
    // labelled, and the atomic integer beside them in JSON.
    #[test]
    fn formats() {
        let u = TokenUnits::default();
        let cases = [(0u64, "0"), (1, "0.000001"), (28_000, "0.028"), (1_000_000, "1"), (12_345_678, "12.345678")];
        for (atomic, human) in cases {
            assert_eq!(u.human(U256::from(atomic)), human);
        }
        assert_eq!(u.label(U256::from(28_000u64)), "0.028 USDC");
        let whole = TokenUnits { symbol: "WEI".to_owned(), decimals: 0 };
        assert_eq!(whole.human(U256::from(42u64)), "42");
        let mut o = Map::new();
        u.put(&mut o, "total", Some(U256::from(28_000u64)));
        u.put(&mut o, "none", None);
        assert_eq!(
            Value::Object(o),
            serde_json::json!({"total": "0.028", "total_atomic": "28000", "none": null, "none_atomic": null})
        );
    }

    // Goal: typed amounts are token units by default and atomic only with the suffix; what is
    // neither, or more precise than the token, is refused.
    #[test]
    fn parses() {
        let u = TokenUnits::default();
        assert_eq!(u.parse("0.013"), Ok(U256::from(13_000u64)));
        assert_eq!(u.parse("1"), Ok(U256::from(1_000_000u64)));
        assert_eq!(u.parse(".5"), Ok(U256::from(500_000u64)));
        assert_eq!(u.parse("13000atomic"), Ok(U256::from(13_000u64)));
        for bad in ["", ".", "1.", "-1", "0.0000001", "1e6", "atomic", "1.5atomic", "0x10", "1,5", " 1"] {
            assert!(u.parse(bad).is_err(), "{bad:?}");
        }
        for text in ["0.028", "1", "0.000001"] {
            assert_eq!(u.human(u.parse(text).unwrap()), text);
        }
    }
}
