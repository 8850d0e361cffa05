//! What a [`crate::PayingClient`] is built from, by value. Nothing here reads the
//! environment or files.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, U256, address};
use tollgate_x402::Network;

/// USDC on Base mainnet (EIP-712 domain "USD Coin", version "2").
pub const USDC_BASE: Address = address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
/// USDC on Base Sepolia (EIP-712 domain "USDC", version "2").
pub const USDC_BASE_SEPOLIA: Address = address!("036CbD53842c5426634e7929541eC2318f3dCF7e");

/// A token the agent is willing to pay with, on one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllowedAsset {
    /// The chain.
    pub network: Network,
    /// The token contract.
    pub asset: Address,
}

impl AllowedAsset {
    /// USDC on Base and on Base Sepolia: the default allowlist.
    pub fn usdc_defaults() -> Vec<AllowedAsset> {
        vec![
            AllowedAsset { network: Network::BASE, asset: USDC_BASE },
            AllowedAsset { network: Network::BASE_SEPOLIA, asset: USDC_BASE_SEPOLIA },
        ]
    }
}

/// Spend controls, in the atomic units of the allowed assets. Budgets add amounts across
/// assets, so the allowlist should hold tokens of the same unit (USDC everywhere: 6
/// decimals). `None` means no limit. The lifetime budgets and the per-day budgets are all
/// computed from the persisted spending record, so they hold across runs and processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendLimits {
    /// One payment may not exceed this.
    pub max_per_call_atomic: Option<U256>,
    /// Everything the store counts, across hosts and restarts.
    pub total_budget_atomic: Option<U256>,
    /// Everything the store counts for one `host:port`.
    pub per_host_budget_atomic: Option<U256>,
    /// Everything the store counts on the current UTC day (by each record's
    /// `created_unix_s`), across hosts.
    pub daily_budget_atomic: Option<U256>,
    /// Everything the store counts on the current UTC day for one `host:port`.
    pub per_host_daily_budget_atomic: Option<U256>,
}

/// Wall-clock seconds, injected so tests control validity windows.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now_unix_s(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_s(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }
}

/// Everything a [`crate::PayingClient`] needs.
#[derive(Clone)]
pub struct ClientConfig {
    /// The agent's key (signs the authorizations; `from` is its address).
    pub signer: PrivateKeySigner,
    /// Acceptable `(network, asset)` pairs; offers elsewhere are never paid.
    pub allow: Vec<AllowedAsset>,
    /// Spend controls, checked before signing.
    pub limits: SpendLimits,
    /// The spending record (JSON file; a `.lock` file sits beside it).
    pub store_path: PathBuf,
    /// Whole-request timeout (connect, send, wait for and read the response). A paid call
    /// waits for the server's settlement, so allow for it.
    pub request_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Re-sends after a transport error (same payment header when one was attached) or a
    /// `409 payment_in_flight`.
    pub retries: u32,
    /// First backoff; doubles per retry up to `retry_backoff_max`.
    pub retry_backoff_initial: Duration,
    /// Backoff cap.
    pub retry_backoff_max: Duration,
    /// Fresh authorizations per logical request (a new one is signed only after a definite
    /// refusal that a new authorization can cure, such as a failed settlement).
    pub payment_attempts_max: u32,
    /// Cap on a response body read into memory.
    pub response_bytes_max: usize,
    /// Clock for `validBefore` and the record's timestamps.
    pub clock: Arc<dyn Clock>,
    /// Trusted roots for `https` (`None`: the Mozilla roots only; a private CA is added with
    /// `tollgate_tls::ClientTls::new(Some(path))`).
    pub tls: Option<tollgate_tls::ClientTls>,
}

impl ClientConfig {
    /// Defaults: USDC on Base and Base Sepolia, no spend limits, 60 s request timeout, 10 s
    /// connect timeout, 2 retries from 200 ms backoff (cap 5 s), 2 payment attempts, 16 MiB
    /// response cap, the system clock.
    pub fn new(signer: PrivateKeySigner, store_path: impl Into<PathBuf>) -> Self {
        ClientConfig {
            signer,
            allow: AllowedAsset::usdc_defaults(),
            limits: SpendLimits::default(),
            store_path: store_path.into(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retries: 2,
            retry_backoff_initial: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(5),
            payment_attempts_max: 2,
            response_bytes_max: 16 * 1024 * 1024,
            clock: Arc::new(SystemClock),
            tls: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signer is shown by address only.
        f.debug_struct("ClientConfig")
            .field("address", &self.signer.address())
            .field("allow", &self.allow)
            .field("limits", &self.limits)
            .field("store_path", &self.store_path)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retries", &self.retries)
            .field("retry_backoff_initial", &self.retry_backoff_initial)
            .field("retry_backoff_max", &self.retry_backoff_max)
            .field("payment_attempts_max", &self.payment_attempts_max)
            .field("response_bytes_max", &self.response_bytes_max)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the configuration's Debug output shows the address, never the private key.
    #[test]
    fn debug_never_shows_the_key() {
        let signer = PrivateKeySigner::random();
        let key = format!("{:x}", signer.to_bytes());
        let dir = tempfile::tempdir().unwrap();
        let config = ClientConfig::new(signer.clone(), dir.path().join("spend.json"));
        let shown = format!("{config:?} {:?}", crate::PayingClient::new(config.clone()).unwrap());
        assert!(shown.contains(&format!("{:x}", signer.address())), "{shown}");
        assert!(!shown.contains(&key), "{shown}");
    }
}
