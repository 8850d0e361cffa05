//! Token balances by (chain, asset, payer) for the deferred-mode balance check, kept for
//! `verification.balance_cache_ttl_ms` in a bounded cache (`moka`: entries expire by age and
//! the least used go first past the bound, instead of clearing everything at once).
//!
//! Owns the cache; must not decide anything about a payment (the caller compares the balance
//! with the payer's pending spend).

use std::time::Duration;

use alloy_primitives::{Address, U256};
use tollgate_verifier::{VerifiedPayment, Verifier, VerifyError};

/// (chain id, asset, payer).
pub type BalanceKey = (u64, Address, Address);

/// Payers whose balance is kept at once.
const BALANCES_MAX: u64 = 100_000;

/// The balance cache (one per process).
pub struct BalanceCache(moka::sync::Cache<BalanceKey, U256>);

impl std::fmt::Debug for BalanceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceCache").field("entries", &self.0.entry_count()).finish()
    }
}

impl BalanceCache {
    /// A cache whose balances are read again after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        BalanceCache(moka::sync::Cache::builder().max_capacity(BALANCES_MAX).time_to_live(ttl).build())
    }

    /// The balance of `key` when it was read within the TTL (`crate::limits`: a payer known
    /// to be unfunded is refused without an RPC call).
    pub fn known(&self, key: &BalanceKey) -> Option<U256> {
        self.0.get(key)
    }

    /// Keeps a balance the chain reported (a full verification that found it short).
    pub fn remember(&self, key: BalanceKey, balance: U256) {
        self.0.insert(key, balance);
    }

    /// The payer's balance of `p`'s token, from the cache when it is fresh enough, else from
    /// the chain (and kept).
    pub async fn balance(&self, verifier: &Verifier, p: &VerifiedPayment) -> Result<U256, VerifyError> {
        let key = (p.chain_id, p.asset, p.authorization.from);
        if let Some(balance) = self.0.get(&key) {
            return Ok(balance);
        }
        let balance = verifier.token_balance(p.chain_id, p.asset, p.authorization.from).await?;
        self.0.insert(key, balance);
        Ok(balance)
    }
}
