//! Why a reconciliation could not run.

use alloy_primitives::Address;
use tollgate_metering::MeteringError;
use tollgate_verifier::VerifyError;

/// Why a reconciliation could not run. Nothing is recorded when it fails.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The network is not in the configuration.
    #[error("network {network} is not configured")]
    NetworkNotConfigured {
        /// CAIP-2 id.
        network: String,
    },
    /// The block range or an option cannot work.
    #[error("invalid reconciliation range {from_block}..={to_block}: {reason}")]
    InvalidRange {
        /// First block asked for.
        from_block: u64,
        /// Last block asked for.
        to_block: u64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The chain failed, after the retries.
    #[error("chain: {0}")]
    Chain(#[from] VerifyError),
    /// The ledger failed.
    #[error("ledger: {0}")]
    Ledger(#[from] MeteringError),
    /// More entries than `entries_max` for one payee in the range: use a smaller range.
    #[error("more than {limit} ledger entries for payee {pay_to:#x} in the range; use a smaller range")]
    TooManyEntries {
        /// The payee.
        pay_to: Address,
        /// The limit.
        limit: u32,
    },
    /// More unmatched entries to look up than `lookups_max`.
    #[error("more than {limit} look-ups needed; use a smaller range")]
    TooManyLookups {
        /// The limit.
        limit: usize,
    },
    /// A time range resolves to no block.
    #[error("no block in the time range {from_unix_s}..{to_unix_s}: {reason}")]
    EmptyTimeRange {
        /// Start, inclusive (unix seconds).
        from_unix_s: u64,
        /// End, exclusive (unix seconds).
        to_unix_s: u64,
        /// Why.
        reason: &'static str,
    },
    /// The node does not know a block at or below its own head.
    #[error("the node has no block {number} (head {head})")]
    BlockMissing {
        /// The block asked for.
        number: u64,
        /// The head it reported.
        head: u64,
    },
}
