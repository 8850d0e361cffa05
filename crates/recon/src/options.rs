//! The limits of one reconciliation, set by the caller (the gateway's `[reconciliation]`,
//! the CLI's flags).

/// Limits of one reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileOptions {
    /// Blocks per `eth_getLogs` call (hosted nodes cap the range).
    pub chunk_blocks: u64,
    /// Confirmations a transfer needs to count (the block itself is the first).
    pub confirmations_min: u64,
    /// Attempts per RPC call when the chain fails (at least 1).
    pub rpc_attempts: u32,
    /// Wait before the first retry; doubles on each further retry.
    pub retry_backoff_ms: u64,
    /// Most ledger entries loaded per payee; more is an error, never a silent truncation.
    pub entries_max: u32,
    /// Most extra RPC look-ups (receipts and block hashes of unmatched entries) per run.
    pub lookups_max: usize,
}

impl Default for ReconcileOptions {
    fn default() -> ReconcileOptions {
        ReconcileOptions {
            chunk_blocks: 2_000,
            confirmations_min: 10,
            rpc_attempts: 4,
            retry_backoff_ms: 250,
            entries_max: 100_000,
            lookups_max: 10_000,
        }
    }
}
