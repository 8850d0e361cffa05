//! The reconciliation store's vocabulary: what a reconciliation run records in the ledger
//! (`recon_runs`, `recon_exceptions`, `recon_notes`) and reads back.
//!
//! Owns: the classes of [`ReconClass`] and their stored names, the scope of a run
//! ([`ReconScope`]), the classified item ([`ReconItem`]), the run to record ([`NewReconRun`])
//! and the recorded forms ([`ReconRun`], [`ReconException`], [`ReconNote`]).
//!
//! Must not: classify, total or tie out (that is `tollgate-recon`'s pure matcher), read a
//! chain or depend on alloy providers. Amounts are never floats.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use alloy_primitives::{Address, B256, U256};
use serde::Serialize;

use crate::MeteringError;
use crate::types::{EntryId, EntryState};

/// How one reconciled item came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconClass {
    /// The ledger's settlement and the chain's transfer agree in payer, nonce, payee and amount.
    Matched,
    /// The ledger says settled (with a confirmed block) but no such transfer is on chain.
    LedgerSettledMissingOnchain,
    /// A transfer to a payee of ours that the ledger does not record as settled: an
    /// authorization settled by someone else, or a plain transfer.
    OnchainMissingInLedger,
    /// Same authorization, different amount.
    AmountMismatch,
    /// Same authorization, different payee.
    PayeeMismatch,
    /// Fewer confirmations than required (or a settlement whose receipt is not recorded yet).
    Unconfirmed,
    /// The block hash recorded at settlement is no longer the chain's block at that height.
    Reorged,
}

impl ReconClass {
    /// Every class, in report order.
    pub const ALL: [ReconClass; 7] = [
        ReconClass::Matched,
        ReconClass::LedgerSettledMissingOnchain,
        ReconClass::OnchainMissingInLedger,
        ReconClass::AmountMismatch,
        ReconClass::PayeeMismatch,
        ReconClass::Unconfirmed,
        ReconClass::Reorged,
    ];

    /// The stored and reported name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReconClass::Matched => "matched",
            ReconClass::LedgerSettledMissingOnchain => "ledger_settled_missing_onchain",
            ReconClass::OnchainMissingInLedger => "onchain_missing_in_ledger",
            ReconClass::AmountMismatch => "amount_mismatch",
            ReconClass::PayeeMismatch => "payee_mismatch",
            ReconClass::Unconfirmed => "unconfirmed",
            ReconClass::Reorged => "reorged",
        }
    }
}

impl fmt::Display for ReconClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReconClass {
    type Err = MeteringError;

    fn from_str(s: &str) -> Result<ReconClass, MeteringError> {
        ReconClass::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| MeteringError::InvalidValue {
            what: "reconciliation class",
            reason: format!("unknown class `{}`", s.escape_debug()),
        })
    }
}

/// What is being reconciled: one asset on one chain, paid to these addresses, over a block range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconScope {
    /// EVM chain id.
    pub chain_id: u64,
    /// The token contract.
    pub asset: Address,
    /// Our payees.
    pub pay_to: Vec<Address>,
    /// First block, inclusive.
    pub from_block: u64,
    /// Last block, inclusive.
    pub to_block: u64,
}

/// One classified item: a ledger entry, an on-chain transfer, or both joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconItem {
    /// The outcome.
    pub class: ReconClass,
    /// EVM chain id.
    pub chain_id: u64,
    /// The token contract.
    pub asset: Address,
    /// The payer (ledger's, else the transfer's `from`).
    pub payer: Address,
    /// The payee (ledger's, else the transfer's `to`).
    pub pay_to: Address,
    /// The transfer's `to` when it differs from `pay_to` (payee mismatch).
    pub chain_to: Option<Address>,
    /// The authorization nonce, if known.
    pub nonce: Option<B256>,
    /// The ledger's amount.
    pub amount_ledger: Option<u64>,
    /// The chain's amount.
    pub amount_chain: Option<U256>,
    /// The transaction (the chain's, else the ledger's).
    pub tx_hash: Option<B256>,
    /// The block (the chain's, else the ledger's).
    pub block_number: Option<u64>,
    /// The `Transfer` log index (the chain's, else the ledger's).
    pub log_index: Option<u64>,
    /// The ledger entry.
    pub entry_id: Option<EntryId>,
    /// The provider of the entry.
    pub provider: Option<String>,
    /// The route of the entry.
    pub route: Option<String>,
    /// The entry's state when it was reconciled (`settling`, `settled` and `refund_owed` say
    /// money moved: their amount is expected on chain).
    pub ledger_state: Option<EntryState>,
    /// The block's timestamp (unix seconds), once the run has read it (the matcher leaves it
    /// `None`; it is not stored with an exception).
    pub block_time_unix_s: Option<u64>,
}

/// A reconciliation run to record: its scope, cursor, times, counts, totals, tie-out and
/// exceptions (the matcher's report, in the form the store keeps).
#[derive(Debug, Clone)]
pub struct NewReconRun<'a> {
    /// What was reconciled.
    pub scope: &'a ReconScope,
    /// The last block fully reconciled (confirmed and checked); `None` if none in the range is.
    pub cursor_block: Option<u64>,
    /// When the run started.
    pub started_unix_s: u64,
    /// When it finished.
    pub finished_unix_s: u64,
    /// Items per class (a class absent here is stored as 0).
    pub counts: &'a BTreeMap<ReconClass, u64>,
    /// Sum of on-chain transfers to our payees.
    pub chain_total: U256,
    /// Sum of the ledger entries reported.
    pub ledger_total: U256,
    /// Sum of matched items.
    pub matched_total: U256,
    /// Whether the tie-out held.
    pub tie_out_holds: bool,
    /// The items that are not matched, stored with the run.
    pub exceptions: Vec<&'a ReconItem>,
}

/// A recorded run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconRun {
    /// Position in the run log (increasing).
    pub id: i64,
    /// EVM chain id.
    pub chain_id: u64,
    /// The token contract.
    pub asset: Address,
    /// First block, inclusive.
    pub from_block: u64,
    /// Last block, inclusive.
    pub to_block: u64,
    /// The last block fully reconciled.
    pub cursor_block: Option<u64>,
    /// When the run started.
    pub started_unix_s: u64,
    /// When it finished.
    pub finished_unix_s: u64,
    /// Items per class.
    pub counts: BTreeMap<ReconClass, u64>,
    /// Sum of on-chain transfers to our payees.
    pub chain_total: U256,
    /// Sum of the ledger entries reported.
    pub ledger_total: U256,
    /// Sum of matched items.
    pub matched_total: U256,
    /// Whether the tie-out held.
    pub tie_out_holds: bool,
}

/// A recorded exception (an item of a run that was not matched).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconException {
    /// The exception's id (notes refer to it).
    pub id: i64,
    /// The run it belongs to.
    pub run_id: i64,
    /// The run's chain.
    pub chain_id: u64,
    /// The class.
    pub class: ReconClass,
    /// The payer.
    pub payer: Address,
    /// The payee.
    pub pay_to: Address,
    /// The transfer's `to` when it differs from `pay_to`.
    pub chain_to: Option<Address>,
    /// The authorization nonce.
    pub nonce: Option<B256>,
    /// The transaction.
    pub tx_hash: Option<B256>,
    /// The block.
    pub block_number: Option<u64>,
    /// The log index.
    pub log_index: Option<u64>,
    /// The ledger entry.
    pub entry_id: Option<EntryId>,
    /// The ledger's amount.
    pub amount_ledger: Option<u64>,
    /// The chain's amount.
    pub amount_chain: Option<U256>,
}

/// An appended resolution note on an exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconNote {
    /// The note's id.
    pub id: i64,
    /// The exception.
    pub exception_id: i64,
    /// Who wrote it.
    pub who: String,
    /// Why (the resolution).
    pub why: String,
    /// When.
    pub at_unix_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip() {
        // Goal: every class parses back from its stored name.
        for c in ReconClass::ALL {
            assert_eq!(c.as_str().parse::<ReconClass>().unwrap(), c);
        }
        assert!("Matched".parse::<ReconClass>().is_err());
    }
}
