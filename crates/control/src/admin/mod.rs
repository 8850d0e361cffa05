//! The admin operations: every control-plane action of the admin API, checked against the
//! caller's [`Principal`] and the control plane's rules, over the store's repositories.
//!
//! An operation asks its permission check first, then decodes its input (the transport passes
//! a decoder, so a caller without the right learns nothing from input errors), then applies
//! the rules, writes through `tollgate-metering`'s repositories, and answers with the admin
//! contract's types (`tollgate-admin-api`). What only the gateway can judge — a provider's
//! upstream against its SSRF guard, an endpoint against the configured networks, whether it
//! can settle, reloading its snapshot — is asked of the [`Host`].
//!
//! Modules by concern: [`tokens`], [`catalog`] (providers and endpoints), [`credentials`],
//! [`wallets`] (wallet policies and settings), [`views`] (revenue, ledger entries, audit,
//! reconciliation exceptions and notes).
//!
//! Must not: know HTTP (no status codes, no bodies as bytes, no axum), authenticate a token
//! (the transport builds the `Principal`), or return a credential or a token after creation.

use std::future::Future;
use std::time::Duration;

use alloy_primitives::Address;
use serde::Serialize;
use tollgate_metering::{Ledger, TokenUnits};

use crate::{ControlError, EndpointSpec, ProviderSpec, VaultKey};

pub mod catalog;
pub mod credentials;
pub mod events;
pub mod tokens;
pub mod views;
pub mod wallets;

/// What the operations need from the gateway that serves them.
pub trait Host: Send + Sync {
    /// The host's error: everything the control plane refuses, and what its own checks
    /// refuse (the SSRF guard's refusal keeps its own answer).
    type Error: From<ControlError> + Send;

    /// The store.
    fn ledger(&self) -> &Ledger;

    /// Now, from the host's clock.
    fn now_unix_s(&self) -> u64;

    /// Whether the vault has a master key.
    fn vault_key(&self) -> Option<&VaultKey>;

    /// Whether priced endpoints could settle (a relayer key is configured).
    fn can_settle(&self) -> bool;

    /// How amounts on `chain_id` are shown to people (the first network's for `None`: totals
    /// over every network, such as revenue, assume one token).
    fn units(&self, chain_id: Option<u64>) -> TokenUnits;

    /// The gateway's own request body cap (a provider token may not raise an endpoint's above it).
    fn body_bytes_max(&self) -> u64;

    /// Checks a provider set through the admin API as the gateway would serve it (payee,
    /// upstream URL, credential injection; secrets only from the vault), then its upstream
    /// against the SSRF guard, after DNS.
    fn check_provider(&self, spec: &ProviderSpec) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Checks an endpoint of `provider` (as served now) as the gateway would serve it: path
    /// pattern, methods, networks, prices, settlement mode. `NotFound` when the provider is
    /// not served.
    fn check_endpoint(&self, provider: &str, spec: &EndpointSpec) -> Result<CheckedEndpoint, Self::Error>;

    /// Whether two path patterns can match the same path.
    fn paths_overlap(&self, a: &str, b: &str) -> bool;

    /// Reloads this process's snapshot after a change, so that it applies before the answer.
    fn applied(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// An endpoint as the gateway would serve it: what the rules judge, and its prices as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedEndpoint {
    /// The request body cap it would apply.
    pub body_bytes_max: u64,
    /// The upstream timeout it would apply.
    pub upstream_timeout: Duration,
    /// The `maxTimeoutSeconds` it would offer.
    pub max_timeout_seconds: u64,
    /// Its provider's path prefix (`strip_prefix`), as served.
    pub provider_strip_prefix: Option<String>,
    /// Its prices in the stored form of a price version.
    pub prices_stored: String,
}

/// A `0x`-prefixed 20-byte address, `field` named when it is not one.
pub fn address(field: &str, s: &str) -> Result<Address, ControlError> {
    parse_address(s).map_err(|reason| ControlError::invalid(field, reason))
}

/// The one rule for an address a person writes (admin bodies and the configuration file):
/// `0x` and 40 hex digits. On refusal, the reason (never the value).
pub fn parse_address(s: &str) -> Result<Address, &'static str> {
    let hex = s.strip_prefix("0x").ok_or("expected a 0x-prefixed address")?;
    if hex.len() != 40 {
        return Err("expected 20 bytes (40 hex digits)");
    }
    hex.parse::<Address>().map_err(|_| "not a hex address")
}

/// A whole number of atomic units that the store can hold (below 2^63).
pub fn atomic(field: &str, s: Option<&str>) -> Result<Option<u64>, ControlError> {
    match s {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v
            .parse::<u64>()
            .ok()
            .filter(|n| i64::try_from(*n).is_ok())
            .map(Some)
            .ok_or_else(|| ControlError::invalid(field, "too large")),
        Some(v) => Err(ControlError::invalid(field, format!("`{v}` is not a whole number of atomic units"))),
    }
}

/// A record of the store as JSON, inside the contract's envelopes.
pub fn value<T: Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Records of the store as JSON.
pub fn values<T: Serialize>(list: Vec<T>) -> Vec<serde_json::Value> {
    list.into_iter().map(value).collect()
}

#[cfg(test)]
mod tests;
