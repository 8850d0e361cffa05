//! Arguments shared by the agent commands: where the key comes from, amounts, allowlist
//! entries, headers, the store path; and how a `ClientError` becomes an exit code.
//!
//! This is the only place the agent commands read the environment (the key variable, the
//! keystore password, `TOLLGATE_HOME`, `HOME`, `TOLLGATE_CA_FILE`); the client library never
//! does.

use std::path::PathBuf;

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, U256};
use secrecy::SecretString;
use tollgate_client::{AllowedAsset, ClientError, HeaderName, HeaderValue, keys};
use tollgate_metering::TokenUnits;
use tollgate_x402::Network;

use crate::{EXIT_BUDGET, EXIT_FAILURE, EXIT_NO_REQUIREMENT, EXIT_REFUSED, EXIT_TRANSPORT, EXIT_USAGE, Failure};

/// The variable read when no key option is given.
pub const DEFAULT_KEY_ENV: &str = "TOLLGATE_KEY";
/// The keystore password variable.
pub const KEYSTORE_PASSWORD_ENV: &str = "TOLLGATE_KEYSTORE_PASSWORD";
/// The extra CA file variable (`--ca-file` wins).
pub const CA_FILE_ENV: &str = "TOLLGATE_CA_FILE";

/// Trust for `https` URLs: the built-in Mozilla roots, plus a private CA when given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM file of extra CA certificates trusted for https, beside the built-in Mozilla roots
    /// [env: TOLLGATE_CA_FILE].
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

impl TlsArgs {
    /// The client TLS configuration (a bad CA file is a usage error naming the file).
    pub fn client_tls(&self) -> Result<tollgate_tls::ClientTls, Failure> {
        client_tls(self.ca_file.as_deref())
    }
}

/// The client TLS configuration from `--ca-file`, else `TOLLGATE_CA_FILE`, else the Mozilla
/// roots only.
pub fn client_tls(ca_file: Option<&std::path::Path>) -> Result<tollgate_tls::ClientTls, Failure> {
    let from_env = std::env::var_os(CA_FILE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    let path = ca_file.map(std::path::Path::to_path_buf).or(from_env);
    tollgate_tls::ClientTls::new(path.as_deref()).map_err(|e| Failure::usage(format!("--ca-file: {e}")))
}

/// Where the agent's key comes from (at most one; default `--key-env TOLLGATE_KEY`).
#[derive(Debug, Clone, clap::Args)]
#[group(multiple = false)]
pub struct KeyArgs {
    /// Environment variable holding the hex private key [default: TOLLGATE_KEY].
    #[arg(long, value_name = "NAME")]
    pub key_env: Option<String>,
    /// File holding the hex private key (as written by `tollgate wallet new --out`).
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Encrypted JSON keystore (v3); the password is read from TOLLGATE_KEYSTORE_PASSWORD.
    #[arg(long, value_name = "PATH")]
    pub keystore: Option<PathBuf>,
}

impl KeyArgs {
    /// Loads the signer; every failure is a usage error and never shows key material.
    pub fn load(&self) -> Result<PrivateKeySigner, Failure> {
        let loaded = if let Some(path) = &self.key_file {
            keys::signer_from_file(path)
        } else if let Some(path) = &self.keystore {
            let password = keystore_password()?;
            keys::signer_from_keystore(path, &password)
        } else {
            let name = self.key_env.as_deref().unwrap_or(DEFAULT_KEY_ENV);
            keys::signer_from_env(name, &|k| std::env::var(k).ok()).map_err(|e| match e {
                ClientError::Key { reason } if self.key_env.is_none() => ClientError::Key {
                    reason: format!("{reason} (pass --key-env NAME, --key-file PATH or --keystore PATH)"),
                },
                other => other,
            })
        };
        loaded.map_err(client_failure)
    }
}

/// The keystore password from its variable (non-empty).
pub fn keystore_password() -> Result<SecretString, Failure> {
    match std::env::var(KEYSTORE_PASSWORD_ENV) {
        Ok(p) if !p.is_empty() => Ok(SecretString::from(p)),
        _ => Err(Failure::usage(format!("set {KEYSTORE_PASSWORD_ENV} to the keystore password"))),
    }
}

/// USDC has 6 decimals.
/// Parses an amount: human USDC (`0.05`, `1`, up to 6 decimals) or atomic units with the
/// suffix `atomic` (`50000atomic`): the one convention (`tollgate_metering::TokenUnits`) the
/// admin commands and reports use too.
pub fn parse_amount(s: &str) -> Result<U256, String> {
    TokenUnits::default().parse(s)
}

/// Writes atomic USDC units in token units, without trailing zeros (`1000` → `0.001`): the same
/// text as the admin API, reports and CSVs.
pub fn usdc(atomic: U256) -> String {
    TokenUnits::default().human(atomic)
}

/// Parses `eip155:<chain id>:0x<asset>`.
pub fn parse_allow(s: &str) -> Result<AllowedAsset, String> {
    let (network, asset) = s.rsplit_once(':').ok_or_else(|| format!("`{s}`: expected eip155:<chain id>:0x<asset>"))?;
    let network = Network::parse(network).map_err(|e| format!("`{s}`: {e}"))?;
    let asset: Address = asset.parse().map_err(|_| format!("`{s}`: the asset is not a 0x address"))?;
    Ok(AllowedAsset { network, asset })
}

/// Parses `Name: value`.
pub fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s.split_once(':').ok_or_else(|| format!("`{s}`: expected 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| format!("`{s}`: invalid header name"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| format!("`{s}`: invalid header value"))?;
    Ok((name, value))
}

/// `--store`, else `$TOLLGATE_HOME/spend.json`, else `~/.tollgate/spend.json`.
pub fn store_path(explicit: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    if let Some(home) = std::env::var_os("TOLLGATE_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home).join("spend.json"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".tollgate").join("spend.json")),
        None => Err(Failure::usage("no HOME or TOLLGATE_HOME: pass --store PATH")),
    }
}

/// The exit code and line for a client error.
pub fn client_failure(e: ClientError) -> Failure {
    let code = match &e {
        ClientError::PaymentRejected { .. } => EXIT_REFUSED,
        ClientError::BudgetExceeded { .. } => EXIT_BUDGET,
        ClientError::NoAcceptableRequirement { .. } => EXIT_NO_REQUIREMENT,
        ClientError::Transport { .. } | ClientError::PaymentOutcomeUnknown { .. } => EXIT_TRANSPORT,
        ClientError::Key { .. } | ClientError::InvalidRequest { .. } => EXIT_USAGE,
        ClientError::Store { .. } | ClientError::Protocol { .. } | ClientError::ResponseTooLarge { .. } => EXIT_FAILURE,
    };
    Failure::new(code, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: amounts parse as USDC with up to 6 decimals or as suffixed atomic units, and
    // print back in token units without trailing zeros (the admin API's and reports' text).
    #[test]
    fn amounts() {
        assert_eq!(parse_amount("0.05"), Ok(U256::from(50_000)));
        assert_eq!(parse_amount("1"), Ok(U256::from(1_000_000)));
        assert_eq!(parse_amount(".5"), Ok(U256::from(500_000)));
        assert_eq!(parse_amount("0.000001"), Ok(U256::from(1)));
        assert_eq!(parse_amount("50000atomic"), Ok(U256::from(50_000)));
        for bad in ["", ".", "-1", "0.0000001", "1e6", "atomic", "1.5atomic", "0x10", "1,5"] {
            assert!(parse_amount(bad).is_err(), "{bad:?}");
        }
        assert_eq!(usdc(U256::from(1_000)), "0.001");
        assert_eq!(usdc(U256::from(12_345_678)), "12.345678");
        assert_eq!(usdc(U256::ZERO), "0");
    }

    // Goal: allowlist entries and headers parse, and malformed ones are refused.
    #[test]
    fn allow_and_headers() {
        let a = parse_allow("eip155:8453:0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913").unwrap();
        assert_eq!(a.network, Network::BASE);
        assert!(parse_allow("eip155:8453").is_err());
        assert!(parse_allow("base:0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913").is_ok());
        assert!(parse_allow("eip155:8453:nope").is_err());
        let (n, v) = parse_header("X-Trace:  abc ").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-trace", "abc"));
        assert!(parse_header("no colon").is_err());
    }
}
