//! One reconciliation of one network's asset over a block range: reads the chain (`logs`),
//! loads the ledger's entries, classifies (`matcher`) and records the run; also the range by
//! time and the resume from the stored cursor.
//!
//! Owns: the [`Reconciler`] (the ledger, the clock, the configured networks' chains and the
//! [`Host`] that knows the payees and re-checks reopened settlements), the choice of which
//! ledger entries and block hashes the matcher sees, and the one correction reconciliation
//! makes: a settled entry whose block was reorged away goes back to `settling`
//! (`Ledger::reopen_reorged`) and is handed to the host.
//!
//! Must not: change ledger entries otherwise (reconciliation reports; resolutions are notes),
//! write the control plane, or know HTTP.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use alloy_primitives::{Address, B256};
use tollgate_metering::{Entry, EntryId, EntryState, Ledger, ReconClass, ReconScope};
use tollgate_verifier::{Chain, Clock};
use tollgate_x402::Network;

use crate::error::ReconcileError;
use crate::logs::{
    add_receipts_of_entries, block_hashes_of_entries, first_block_at_or_after, read_transfers, retry, times_of_blocks,
};
use crate::matcher::{ChainTransfer, ReconBreakdown, ReconReport, breakdown, reconcile};
use crate::options::ReconcileOptions;

/// One configured network: its chain and its asset.
#[derive(Clone)]
pub struct Target {
    /// The network.
    pub network: Network,
    /// The token contract reconciled.
    pub asset: Address,
    /// The chain, with its RPC timeout.
    pub chain: Arc<dyn Chain>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("network", &self.network).field("asset", &self.asset).finish_non_exhaustive()
    }
}

/// What a reconciliation needs from the process that runs it.
#[async_trait::async_trait]
pub trait Host: Send + Sync {
    /// Every payee of ours now (the file's providers and the admin API's); order and
    /// duplicates do not matter.
    fn payees(&self) -> Vec<Address>;

    /// A settled entry this run moved back to `settling` (its block was reorged away): re-check
    /// where its transaction landed now, if this process can.
    async fn reopened(&self, id: &EntryId);
}

/// A host with fixed payees that re-checks nothing: `tollgate reconcile`, which has no
/// settler. A reopened entry stays `settling` for the serving gateway's recovery sweep, which
/// reads its transactions' receipts and records where it landed (or resends or voids it).
#[derive(Debug, Clone, Default)]
pub struct Standalone {
    /// Our payees.
    pub payees: Vec<Address>,
}

#[async_trait::async_trait]
impl Host for Standalone {
    fn payees(&self) -> Vec<Address> {
        self.payees.clone()
    }

    async fn reopened(&self, id: &EntryId) {
        tracing::warn!(%id, "settlement reorged away: left settling for the gateway's recovery sweep");
    }
}

/// Everything a reconciliation reads and records through.
#[derive(Clone)]
pub struct Reconciler {
    /// The ledger (entries, runs, the cursor, the job's lease).
    pub ledger: Ledger,
    /// Run times and the lease's clock.
    pub clock: Arc<dyn Clock>,
    /// The networks that can be reconciled.
    pub targets: Vec<Target>,
    /// The payees and the re-check of reopened settlements.
    pub host: Arc<dyn Host>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").field("targets", &self.targets).finish_non_exhaustive()
    }
}

impl Reconciler {
    /// The target of a configured network.
    fn target(&self, network: Network) -> Result<&Target, ReconcileError> {
        self.targets
            .iter()
            .find(|t| t.network == network)
            .ok_or_else(|| ReconcileError::NetworkNotConfigured { network: network.caip2() })
    }
}

/// A recorded run.
#[derive(Debug, Clone)]
pub struct ReconcileOutcome {
    /// The run's id in the ledger.
    pub run_id: i64,
    /// What was reconciled.
    pub scope: ReconScope,
    /// The last block fully reconciled (confirmed), if any.
    pub cursor_block: Option<u64>,
    /// The chain head when the run read it.
    pub current_block: u64,
    /// The classified items and totals.
    pub report: ReconReport,
    /// Expected, matched and outstanding sums per UTC day, UTC month, provider, route and payer.
    pub breakdown: ReconBreakdown,
    /// Settled entries this run found reorged, moved back to `settling` and re-checked.
    pub reopened: Vec<EntryId>,
}

/// Reconciles `network`'s asset, paid to every payee the host knows, over
/// `[from_block, to_block]`, and records the run.
pub async fn reconcile_range(
    r: &Reconciler,
    network: Network,
    from_block: u64,
    to_block: u64,
    opts: ReconcileOptions,
) -> Result<ReconcileOutcome, ReconcileError> {
    let started_unix_s = r.clock.now_unix_s();
    let invalid = |reason| ReconcileError::InvalidRange { from_block, to_block, reason };
    if to_block < from_block {
        return Err(invalid("the last block is before the first"));
    }
    if opts.chunk_blocks == 0 || opts.rpc_attempts == 0 {
        return Err(invalid("chunk_blocks and rpc_attempts must be at least 1"));
    }
    let target = r.target(network)?;
    let chain = target.chain.as_ref();
    let current_block = retry(opts, || chain.block_number()).await?;
    if to_block > current_block {
        return Err(invalid("the last block is beyond the chain head"));
    }
    // Every payee the host knows (providers from the file and from the admin API), once each.
    let pay_to: Vec<Address> = r.host.payees().into_iter().collect::<BTreeSet<_>>().into_iter().collect();
    let scope = ReconScope { chain_id: network.chain_id, asset: target.asset, pay_to, from_block, to_block };

    let mut transfers = read_transfers(chain, &scope, opts).await?;
    let mut entries = Vec::new();
    for p in &scope.pay_to {
        let got = r
            .ledger
            .recon()
            .settled_entries(scope.chain_id, scope.asset, *p, Some(from_block), Some(to_block), opts.entries_max)
            .await?;
        if got.len() >= usize::try_from(opts.entries_max).unwrap_or(usize::MAX) {
            return Err(ReconcileError::TooManyEntries { pay_to: *p, limit: opts.entries_max });
        }
        entries.extend(got);
    }
    add_entries_of_authorizations(r, &scope, &transfers, &mut entries).await?;
    let lookups = add_receipts_of_entries(chain, &scope, &entries, &mut transfers, opts).await?;
    let hashes = block_hashes_of_entries(chain, &entries, &transfers, lookups, opts).await?;

    let mut report =
        reconcile(&scope, &entries, &transfers, current_block, opts.confirmations_min, &|n| hashes.get(&n).copied());
    let lookups = lookups.saturating_add(hashes.len());
    let times = times_of_blocks(chain, &report.items, current_block, lookups, opts).await?;
    for item in &mut report.items {
        item.block_time_unix_s = item.block_number.and_then(|n| times.get(&n).copied());
    }
    let created: HashMap<&EntryId, u64> = entries.iter().map(|e| (&e.id, e.created_unix_s)).collect();
    let breakdown = breakdown(&report.items, &|i| {
        // The block's day when the item has a block, else when the call was made.
        i.block_time_unix_s.or_else(|| i.entry_id.as_ref().and_then(|id| created.get(id).copied()))
    });
    let confirmed_head = current_block.saturating_add(1).checked_sub(opts.confirmations_min.max(1));
    let cursor_block = confirmed_head.map(|head| head.min(to_block)).filter(|c| *c >= from_block);
    let run = report.new_run(&scope, cursor_block, started_unix_s, r.clock.now_unix_s().max(started_unix_s));
    let run_id = r.ledger.recon().record_run(&run).await?;
    let reopened = reopen_reorged(r, &report, &entries).await?;
    Ok(ReconcileOutcome { run_id, scope, cursor_block, current_block, report, breakdown, reopened })
}

/// Settled entries whose block was reorged away go back to `settling` and are handed to the
/// host to re-check: where the transaction landed now is recorded (the next run matches it),
/// or, if it landed nowhere, the recovery sweep resends or voids it like any unfinished
/// settlement.
async fn reopen_reorged(
    r: &Reconciler,
    report: &ReconReport,
    entries: &[Entry],
) -> Result<Vec<EntryId>, ReconcileError> {
    let mut reopened = Vec::new();
    for item in report.items.iter().filter(|i| i.class == ReconClass::Reorged) {
        let Some(entry) = item.entry_id.as_ref().and_then(|id| entries.iter().find(|e| &e.id == id)) else { continue };
        let (EntryState::Settled, Some(block_hash)) = (entry.state, entry.block_hash) else { continue };
        if r.ledger.entries().reopen_reorged(&entry.id, block_hash, r.clock.now_unix_s()).await? {
            tracing::warn!(id = %entry.id, block = ?entry.block_number, "settlement reorged away; re-checking");
            r.host.reopened(&entry.id).await;
            reopened.push(entry.id.clone());
        }
    }
    Ok(reopened)
}

/// The block range of the times `[from_unix_s, to_unix_s)`: from the first block at or after
/// `from_unix_s` to the last block before `to_unix_s` (or the head, when none is at or after
/// it yet).
pub async fn blocks_of_times(
    r: &Reconciler,
    network: Network,
    from_unix_s: u64,
    to_unix_s: u64,
    opts: ReconcileOptions,
) -> Result<(u64, u64), ReconcileError> {
    let empty = |reason| ReconcileError::EmptyTimeRange { from_unix_s, to_unix_s, reason };
    if to_unix_s <= from_unix_s {
        return Err(empty("the end is not after the start"));
    }
    let chain = r.target(network)?.chain.as_ref();
    let head = retry(opts, || chain.block_number()).await?;
    let from_block =
        first_block_at_or_after(chain, from_unix_s, 0, head, opts).await?.ok_or(empty("the chain head is older"))?;
    let to_block = match first_block_at_or_after(chain, to_unix_s, from_block, head, opts).await? {
        Some(0) => return Err(empty("the first block is after the end")),
        Some(n) => n - 1,
        None => head,
    };
    if to_block < from_block {
        return Err(empty("no block was made in it"));
    }
    Ok((from_block, to_block))
}

/// Reconciles `network` by time: [`blocks_of_times`], then [`reconcile_range`].
pub async fn reconcile_times(
    r: &Reconciler,
    network: Network,
    from_unix_s: u64,
    to_unix_s: u64,
    opts: ReconcileOptions,
) -> Result<ReconcileOutcome, ReconcileError> {
    let (from_block, to_block) = blocks_of_times(r, network, from_unix_s, to_unix_s, opts).await?;
    reconcile_range(r, network, from_block, to_block, opts).await
}

/// Reconciles `network` from its stored cursor + 1 (or `start_block` when no run has a cursor)
/// to the chain head, at most `blocks_max` blocks (the rest is left to the next run). `None`
/// when there is no new block to reconcile. Used by `tollgate reconcile --resume` and the
/// periodic job.
pub async fn reconcile_resume(
    r: &Reconciler,
    network: Network,
    start_block: u64,
    blocks_max: u64,
    opts: ReconcileOptions,
) -> Result<Option<ReconcileOutcome>, ReconcileError> {
    let target = r.target(network)?;
    let chain = target.chain.as_ref();
    let from_block = match r.ledger.recon().cursor(network.chain_id, target.asset).await? {
        Some(cursor) => cursor.saturating_add(1),
        None => start_block,
    };
    let head = retry(opts, || chain.block_number()).await?;
    if from_block > head {
        return Ok(None);
    }
    let to_block = head.min(from_block.saturating_add(blocks_max.max(1) - 1));
    reconcile_range(r, network, from_block, to_block, opts).await.map(Some)
}

/// Adds the ledger entries of on-chain authorizations that the range query did not return
/// (voided or failed entries, or settlements recorded in another block), so that they are
/// judged with their entry rather than as strangers.
async fn add_entries_of_authorizations(
    r: &Reconciler,
    scope: &ReconScope,
    transfers: &[ChainTransfer],
    entries: &mut Vec<Entry>,
) -> Result<(), ReconcileError> {
    let known: HashSet<(Address, B256)> = entries.iter().map(|e| (e.payer, e.nonce)).collect();
    for t in transfers {
        let Some(nonce) = t.authorization_nonce else { continue };
        if known.contains(&(t.from, nonce)) {
            continue;
        }
        if let Some(e) = r.ledger.entries().by_authorization(scope.chain_id, scope.asset, t.from, nonce).await? {
            entries.push(e);
        }
    }
    Ok(())
}
