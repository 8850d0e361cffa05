//! One value of the file to its type: durations, secrets from the environment or a file,
//! addresses, URLs, human amounts, the vault's master key.
//!
//! Each function knows the key it is given only to name it in an error, and nothing of the
//! sections: must not import any other part of `config` but `error`.

use std::path::Path;
use std::time::Duration;

use alloy_primitives::Address;
use reqwest::Url;
use secrecy::SecretString;
use tollgate_control::VaultKey;

use super::error::{ConfigError, invalid};

pub(super) fn ms(v: Option<u64>, default_ms: u64) -> Duration {
    Duration::from_millis(v.unwrap_or(default_ms))
}

pub(super) fn secret_from(
    key: &str,
    env_name: Option<&str>,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(SecretString, String)>, ConfigError> {
    match (env_name, file) {
        (Some(_), Some(_)) => Err(invalid(key, "give either the _env or the _file form, not both")),
        (Some(name), None) => match env(name) {
            Some(v) if !v.trim().is_empty() => {
                Ok(Some((SecretString::from(v.trim().to_owned()), format!("env:{name}"))))
            }
            _ => Err(invalid(key, format!("environment variable {name} is not set"))),
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => {
                Ok(Some((SecretString::from(v.trim().to_owned()), format!("file:{}", path.display()))))
            }
            Ok(_) => Err(invalid(key, format!("{} is empty", path.display()))),
            Err(e) => Err(invalid(key, format!("cannot read {}: {e}", path.display()))),
        },
        (None, None) => Ok(None),
    }
}

/// A `0x`-prefixed 20-byte address (the file's and the admin API's one rule).
pub(crate) fn address(key: &str, s: &str) -> Result<Address, ConfigError> {
    tollgate_control::admin::parse_address(s).map_err(|reason| invalid(key, reason))
}

pub(super) fn url(key: &str, s: &str) -> Result<Url, ConfigError> {
    let u = Url::parse(s).map_err(|e| invalid(key, format!("not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(invalid(key, "only http and https URLs are supported"));
    }
    Ok(u)
}

/// A base URL that paths are appended to (an upstream, the public URL). Credentials in it
/// would be printed, stored and (for the public URL) published in every challenge: an
/// upstream's belong in `credential`, in a redacted type. A query or fragment would end up
/// before the appended path.
pub(super) fn base_url(key: &str, s: &str) -> Result<Url, ConfigError> {
    let u = url(key, s)?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err(invalid(
            key,
            "must not contain credentials (user:password@); give an upstream's as credential = { inject = \"basic\", ... }",
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(invalid(
            key,
            "must not contain a query or fragment; give an upstream's key as credential = { inject = \"query\", ... }",
        ));
    }
    Ok(u)
}

/// Converts a human decimal amount (`"0.001"`) to atomic units with `decimals`.
pub fn parse_human_amount(s: &str, decimals: u8) -> Result<u64, String> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits_only = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !digits_only(whole) || !digits_only(frac) || s.ends_with('.') {
        return Err("not a non-negative decimal amount like \"0.001\"".to_owned());
    }
    if frac.len() > usize::from(decimals) {
        return Err(format!("more decimal places than the token's {decimals}"));
    }
    let scale = 10u128.checked_pow(u32::from(decimals)).ok_or("decimals too large")?;
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| "too large".to_owned())? };
    let frac_scaled: u128 = if frac.is_empty() {
        0
    } else {
        let pad = 10u128.pow(u32::from(decimals) - u32::try_from(frac.len()).unwrap_or(0));
        frac.parse::<u128>().map_err(|_| "malformed".to_owned())? * pad
    };
    let total = whole.checked_mul(scale).and_then(|w| w.checked_add(frac_scaled)).ok_or("too large".to_owned())?;
    u64::try_from(total).map_err(|_| "too large".to_owned())
}

/// A 32-byte key as 64 hex digits (optionally `0x`-prefixed).
pub(super) fn parse_master_key(s: &str) -> Result<VaultKey, &'static str> {
    let bytes = hex::decode(s.trim().trim_start_matches("0x")).map_err(|_| "expected 64 hex digits")?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| "expected 32 bytes (64 hex digits)")?;
    Ok(VaultKey(secrecy::SecretBox::new(Box::new(key))))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: human prices convert exactly; malformed, negative and over-precise ones are refused.
    #[test]
    fn human_amounts() {
        assert_eq!(parse_human_amount("0.001", 6), Ok(1_000));
        assert_eq!(parse_human_amount("1", 6), Ok(1_000_000));
        assert_eq!(parse_human_amount("12.5", 6), Ok(12_500_000));
        assert_eq!(parse_human_amount(".5", 6), Ok(500_000));
        for bad in ["", "-1", "1.", "1.0000001", "1e3", "0x10", " 1", "1,5", "."] {
            assert!(parse_human_amount(bad, 6).is_err(), "{bad:?}");
        }
        assert!(parse_human_amount("99999999999999999999999", 6).is_err());
    }
}
