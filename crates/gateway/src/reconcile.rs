//! On-chain reconciliation of one network's asset over a block range: reads the chain, loads
//! the ledger, classifies with [`tollgate_metering::reconcile`] and records the run. Also the
//! range by time, the resume from the stored cursor, the optional periodic job, and the CSV
//! and JSON renderings documented in `docs/reconciliation.md`.
//!
//! Owns: chunked `eth_getLogs` reads with bounded retries, the join of `Transfer` and
//! `AuthorizationUsed` logs by transaction, the choice of which ledger entries and block
//! hashes the pure classification sees, the binary search of block timestamps (times to
//! blocks, blocks to UTC days), and the job's lease (one replica at a time).
//!
//! Must not: classify (that is the metering crate's pure function, so the rules are unit-tested
//! without a chain), change ledger entries beyond one correction — a settled entry whose block
//! was reorged away goes back to `settling` and is re-checked (Ledger::reopen_reorged) —
//! (otherwise reconciliation only reports; resolutions are notes), or know HTTP.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use serde_json::{Value, json};
use tollgate_metering::{
    ChainTransfer, Entry, EntryId, EntryState, MeteringError, NewReconRun, ReconBreakdown, ReconClass, ReconItem,
    ReconReport, ReconScope, ReconSums, breakdown, reconcile, unix_s_of_utc,
};
use tollgate_verifier::{AUTHORIZATION_USED_TOPIC, Chain, Fault, LogQuery, ReceiptLog, TRANSFER_TOPIC, VerifyError};
use tollgate_x402::Network;

use crate::Gateway;
use crate::config::ReconciliationConfig;

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

/// Reconciles `network`'s asset, paid to every configured provider's `pay_to`, over
/// `[from_block, to_block]`, and records the run.
pub async fn reconcile_range(
    gw: &Gateway,
    network: Network,
    from_block: u64,
    to_block: u64,
    opts: ReconcileOptions,
) -> Result<ReconcileOutcome, ReconcileError> {
    let started_unix_s = gw.clock.now_unix_s();
    let invalid = |reason| ReconcileError::InvalidRange { from_block, to_block, reason };
    if to_block < from_block {
        return Err(invalid("the last block is before the first"));
    }
    if opts.chunk_blocks == 0 || opts.rpc_attempts == 0 {
        return Err(invalid("chunk_blocks and rpc_attempts must be at least 1"));
    }
    let net =
        gw.config.network(network).ok_or_else(|| ReconcileError::NetworkNotConfigured { network: network.caip2() })?;
    let chain = gw.verifier.chain(network.chain_id)?.clone();
    let chain = chain.as_ref();
    let current_block = retry(opts, || chain.block_number()).await?;
    if to_block > current_block {
        return Err(invalid("the last block is beyond the chain head"));
    }
    // Every payee the control plane knows (providers from the file and from the admin API).
    let snapshot = gw.live.get();
    let pay_to: Vec<Address> = gw
        .config
        .providers
        .iter()
        .map(|p| p.pay_to)
        .chain(snapshot.providers.iter().map(|p| p.pay_to))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let scope = ReconScope { chain_id: network.chain_id, asset: net.asset, pay_to, from_block, to_block };

    let mut transfers = read_transfers(chain, &scope, opts).await?;
    let mut entries = Vec::new();
    for p in &scope.pay_to {
        let got = gw
            .ledger
            .recon()
            .settled_entries(scope.chain_id, scope.asset, *p, Some(from_block), Some(to_block), opts.entries_max)
            .await?;
        if got.len() >= usize::try_from(opts.entries_max).unwrap_or(usize::MAX) {
            return Err(ReconcileError::TooManyEntries { pay_to: *p, limit: opts.entries_max });
        }
        entries.extend(got);
    }
    add_entries_of_authorizations(gw, &scope, &transfers, &mut entries).await?;
    let lookups = add_receipts_of_entries(chain, &scope, &entries, &mut transfers, opts).await?;
    let hashes = block_hashes_of_entries(chain, &entries, &transfers, lookups, opts).await?;

    let report =
        reconcile(&scope, &entries, &transfers, current_block, opts.confirmations_min, &|n| hashes.get(&n).copied());
    let lookups = lookups.saturating_add(hashes.len());
    let days = days_of_blocks(chain, &report.items, current_block, lookups, opts).await?;
    let created: HashMap<&EntryId, u64> = entries.iter().map(|e| (&e.id, e.created_unix_s)).collect();
    let breakdown = breakdown(&report.items, &|i| {
        // The block's day when the item has a block, else when the call was made.
        i.block_number
            .and_then(|n| days.get(&n).copied())
            .or_else(|| i.entry_id.as_ref().and_then(|id| created.get(id).copied()))
    });
    let confirmed_head = current_block.saturating_add(1).checked_sub(opts.confirmations_min.max(1));
    let cursor_block = confirmed_head.map(|head| head.min(to_block)).filter(|c| *c >= from_block);
    let run = NewReconRun {
        scope: &scope,
        cursor_block,
        started_unix_s,
        finished_unix_s: gw.clock.now_unix_s().max(started_unix_s),
        report: &report,
    };
    let run_id = gw.ledger.recon().record_run(&run).await?;
    let reopened = reopen_reorged(gw, &report, &entries).await?;
    Ok(ReconcileOutcome { run_id, scope, cursor_block, current_block, report, breakdown, reopened })
}

/// Settled entries whose block was reorged away go back to `settling` and are re-checked at
/// once: where the transaction landed now is recorded (the next run matches it), or, if it
/// landed nowhere, the recovery sweep resends or voids it like any unfinished settlement.
async fn reopen_reorged(gw: &Gateway, report: &ReconReport, entries: &[Entry]) -> Result<Vec<EntryId>, ReconcileError> {
    let mut reopened = Vec::new();
    for item in report.items.iter().filter(|i| i.class == ReconClass::Reorged) {
        let Some(entry) = item.entry_id.as_ref().and_then(|id| entries.iter().find(|e| &e.id == id)) else { continue };
        let (EntryState::Settled, Some(block_hash)) = (entry.state, entry.block_hash) else { continue };
        if gw.ledger.entries().reopen_reorged(&entry.id, block_hash, gw.clock.now_unix_s()).await? {
            tracing::warn!(id = %entry.id, block = ?entry.block_number, "settlement reorged away; re-checking");
            crate::settlement::recheck(&gw.settlements, &entry.id).await;
            reopened.push(entry.id.clone());
        }
    }
    Ok(reopened)
}

/// The chain handle of a configured network and its asset.
fn chain_of(gw: &Gateway, network: Network) -> Result<(Arc<dyn Chain>, Address), ReconcileError> {
    let net =
        gw.config.network(network).ok_or_else(|| ReconcileError::NetworkNotConfigured { network: network.caip2() })?;
    Ok((gw.verifier.chain(network.chain_id)?.clone(), net.asset))
}

/// Timestamp of block `number` (at most `head`), retried like every RPC call here.
async fn timestamp(chain: &dyn Chain, number: u64, head: u64, opts: ReconcileOptions) -> Result<u64, ReconcileError> {
    retry(opts, || chain.block_timestamp(number)).await?.ok_or(ReconcileError::BlockMissing { number, head })
}

/// The first block in `[lo, head]` whose timestamp is at least `unix_s`, or `None` when even
/// the head is older. Binary search: block timestamps never decrease. About log2(head - lo)
/// calls, each bounded by the RPC timeout and the retries.
async fn first_block_at_or_after(
    chain: &dyn Chain,
    unix_s: u64,
    lo: u64,
    head: u64,
    opts: ReconcileOptions,
) -> Result<Option<u64>, ReconcileError> {
    if timestamp(chain, head, head, opts).await? < unix_s {
        return Ok(None);
    }
    // Invariant: the answer is in [lo, hi], and block `hi` qualifies.
    let (mut lo, mut hi) = (lo.min(head), head);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if timestamp(chain, mid, head, opts).await? >= unix_s {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(Some(lo))
}

/// The block range of the times `[from_unix_s, to_unix_s)`: from the first block at or after
/// `from_unix_s` to the last block before `to_unix_s` (or the head, when none is at or after
/// it yet).
pub async fn blocks_of_times(
    gw: &Gateway,
    network: Network,
    from_unix_s: u64,
    to_unix_s: u64,
    opts: ReconcileOptions,
) -> Result<(u64, u64), ReconcileError> {
    let empty = |reason| ReconcileError::EmptyTimeRange { from_unix_s, to_unix_s, reason };
    if to_unix_s <= from_unix_s {
        return Err(empty("the end is not after the start"));
    }
    let (chain, _) = chain_of(gw, network)?;
    let chain = chain.as_ref();
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
    gw: &Gateway,
    network: Network,
    from_unix_s: u64,
    to_unix_s: u64,
    opts: ReconcileOptions,
) -> Result<ReconcileOutcome, ReconcileError> {
    let (from_block, to_block) = blocks_of_times(gw, network, from_unix_s, to_unix_s, opts).await?;
    reconcile_range(gw, network, from_block, to_block, opts).await
}

/// Reconciles `network` from its stored cursor + 1 (or `start_block` when no run has a cursor)
/// to the chain head, at most `blocks_max` blocks (the rest is left to the next run). `None`
/// when there is no new block to reconcile. Used by `tollgate reconcile --resume` and the
/// periodic job.
pub async fn reconcile_resume(
    gw: &Gateway,
    network: Network,
    start_block: u64,
    blocks_max: u64,
    opts: ReconcileOptions,
) -> Result<Option<ReconcileOutcome>, ReconcileError> {
    let (chain, asset) = chain_of(gw, network)?;
    let from_block = match gw.ledger.recon().cursor(network.chain_id, asset).await? {
        Some(cursor) => cursor.saturating_add(1),
        None => start_block,
    };
    let head = retry(opts, || chain.block_number()).await?;
    if from_block > head {
        return Ok(None);
    }
    let to_block = head.min(from_block.saturating_add(blocks_max.max(1) - 1));
    reconcile_range(gw, network, from_block, to_block, opts).await.map(Some)
}

/// The start of the UTC day (unix seconds) of each block that an item names, found by
/// bisecting the items' blocks: when two blocks fall on the same UTC day, so does every block
/// between them (timestamps never decrease), so a run over many items costs about
/// log2(items) look-ups per day they span, not one per item. Blocks above the head (a ledger
/// block lost to a reorg) are left out. At most `lookups_max` look-ups in all.
async fn days_of_blocks(
    chain: &dyn Chain,
    items: &[ReconItem],
    head: u64,
    lookups_done: usize,
    opts: ReconcileOptions,
) -> Result<HashMap<u64, u64>, ReconcileError> {
    const DAY_S: u64 = 86_400;
    let blocks: Vec<u64> = items
        .iter()
        .filter_map(|i| i.block_number)
        .filter(|n| *n <= head)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (Some(&first), Some(&last)) = (blocks.first(), blocks.last()) else { return Ok(HashMap::new()) };
    let mut lookups = lookups_done;
    let mut day_of: HashMap<u64, u64> = HashMap::new();
    for n in BTreeSet::from([first, last]) {
        lookups += 1;
        if lookups > opts.lookups_max {
            return Err(ReconcileError::TooManyLookups { limit: opts.lookups_max });
        }
        let ts = timestamp(chain, n, head, opts).await?;
        day_of.insert(n, ts - ts % DAY_S);
    }
    // Spans of indexes into `blocks` whose two ends have a known day.
    let mut spans = vec![(0, blocks.len() - 1)];
    while let Some((lo, hi)) = spans.pop() {
        let (Some(&b_lo), Some(&b_hi)) = (blocks.get(lo), blocks.get(hi)) else { continue };
        let (Some(&d_lo), Some(&d_hi)) = (day_of.get(&b_lo), day_of.get(&b_hi)) else { continue };
        if d_lo == d_hi {
            for n in blocks.get(lo..=hi).unwrap_or_default() {
                day_of.insert(*n, d_lo);
            }
            continue;
        }
        if hi - lo < 2 {
            continue;
        }
        let mid = lo + (hi - lo) / 2;
        let Some(&b_mid) = blocks.get(mid) else { continue };
        lookups += 1;
        if lookups > opts.lookups_max {
            return Err(ReconcileError::TooManyLookups { limit: opts.lookups_max });
        }
        let ts = timestamp(chain, b_mid, head, opts).await?;
        day_of.insert(b_mid, ts - ts % DAY_S);
        spans.push((lo, mid));
        spans.push((mid, hi));
    }
    Ok(day_of)
}

/// Parses a time argument: unix seconds (`1767225600`) or RFC 3339 (`2026-01-01T00:00:00Z`,
/// `2026-01-01T01:00:00+01:00`, fractional seconds dropped).
pub fn parse_time(s: &str) -> Result<u64, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format!("`{s}` is too large"));
    }
    let bad = || format!("`{s}` is neither unix seconds nor RFC 3339 (2026-01-31T00:00:00Z)");
    let num = |range: std::ops::Range<usize>| -> Result<u64, String> {
        let part = s.get(range).ok_or_else(bad)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let sep = |i: usize, allowed: &[u8]| s.as_bytes().get(i).is_some_and(|b| allowed.contains(b));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return Err(bad());
    }
    let local =
        unix_s_of_utc(num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?).ok_or_else(bad)?;
    let mut rest = s.get(19..).ok_or_else(bad)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = frac.get(digits..).ok_or_else(bad)?;
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => Ok(local),
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let offset_s = num(s.len() - 5..s.len() - 3)? * 3_600 + num(s.len() - 2..s.len())? * 60;
            if offset_s >= 86_400 {
                return Err(bad());
            }
            // The local time is `offset` ahead of UTC for `+`.
            if *sign == b'+' { local.checked_sub(offset_s) } else { local.checked_add(offset_s) }.ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// The periodic job's settings (`[reconciliation]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSettings {
    /// Time between ticks.
    pub interval: Duration,
    /// First block of the first run of a network (no cursor stored yet).
    pub start_block: u64,
    /// Most blocks per run; a longer backlog is caught up over several ticks.
    pub run_blocks_max: u64,
    /// The job's lease lasts this long (renewed before each network).
    pub lease_ttl_s: u64,
    /// Reconciliation limits.
    pub options: ReconcileOptions,
}

/// The name of the job's lease in the ledger.
pub const JOB_LEASE: &str = "reconciliation";

/// What one tick of the job did.
#[derive(Debug)]
pub enum JobTick {
    /// Another process holds the lease: nothing done.
    LeaseBusy,
    /// The outcome per configured network (`Ok(None)`: no new block).
    Ran(Vec<(Network, Result<Option<ReconcileOutcome>, ReconcileError>)>),
}

/// One tick: takes the lease (so that of several replicas one reconciles at a time),
/// reconciles every configured network from its cursor to the head, records the runs and
/// releases the lease. A network's failure is reported in the result and does not stop the
/// others.
pub async fn job_tick(gw: &Gateway, job: &JobSettings) -> Result<JobTick, ReconcileError> {
    let mut results = Vec::new();
    for n in &gw.config.networks {
        // Renewed before each network, so a long tick keeps it; lost only if a run outlasts
        // the TTL, in which case another replica may record a duplicate (identical) run.
        if !gw.ledger.leases().try_acquire(JOB_LEASE, &gw.instance, job.lease_ttl_s, gw.clock.now_unix_s()).await? {
            if results.is_empty() {
                return Ok(JobTick::LeaseBusy);
            }
            break;
        }
        let outcome = reconcile_resume(gw, n.network, job.start_block, job.run_blocks_max, job.options).await;
        results.push((n.network, outcome));
    }
    gw.ledger.leases().release(JOB_LEASE, &gw.instance).await?;
    Ok(JobTick::Ran(results))
}

/// Runs [`job_tick`] now and then every `interval` until the task is aborted. Errors are
/// logged and the work is retried at the next tick; nothing here can stop the server.
pub async fn job_loop(gw: Arc<Gateway>, job: JobSettings) {
    loop {
        match job_tick(&gw, &job).await {
            Ok(JobTick::LeaseBusy) => tracing::debug!("reconciliation: another process holds the lease"),
            Ok(JobTick::Ran(results)) => {
                for (network, result) in results {
                    match result {
                        Ok(Some(o)) => tracing::info!(
                            %network,
                            run_id = o.run_id,
                            from_block = o.scope.from_block,
                            to_block = o.scope.to_block,
                            cursor_block = ?o.cursor_block,
                            exceptions = o.report.exceptions().count(),
                            "reconciliation run recorded"
                        ),
                        Ok(None) => tracing::debug!(%network, "reconciliation: no new block"),
                        Err(e) => tracing::warn!(%network, error = %e, "reconciliation failed; will retry"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciliation job failed; will retry"),
        }
        tokio::time::sleep(job.interval).await;
    }
}

impl ReconcileOptions {
    /// The options of `[reconciliation]` (confirmations, chunk size), the rest default.
    pub fn from_config(c: &ReconciliationConfig) -> ReconcileOptions {
        ReconcileOptions { chunk_blocks: c.chunk_blocks, confirmations_min: c.confirmations, ..Self::default() }
    }
}

impl JobSettings {
    /// The job of `[reconciliation]`, or `None` when `interval_s` is absent (disabled).
    pub fn from_config(c: &ReconciliationConfig) -> Option<JobSettings> {
        Some(JobSettings {
            interval: c.interval?,
            start_block: c.start_block,
            run_blocks_max: c.run_blocks_max,
            lease_ttl_s: c.lease_ttl_s,
            options: ReconcileOptions::from_config(c),
        })
    }
}

/// Starts the periodic job when `[reconciliation] interval_s` is set.
pub fn spawn_job(gw: &Arc<Gateway>) -> Option<tokio::task::JoinHandle<()>> {
    let job = JobSettings::from_config(&gw.config.reconciliation)?;
    Some(tokio::spawn(job_loop(gw.clone(), job)))
}

/// Calls `f` up to `rpc_attempts` times while the chain is at fault, with doubling backoff.
async fn retry<T, F, Fut>(opts: ReconcileOptions, mut f: F) -> Result<T, VerifyError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, VerifyError>>,
{
    let mut backoff_ms = opts.retry_backoff_ms;
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if e.fault() == Fault::Chain && attempt < opts.rpc_attempts => {
                tracing::warn!(attempt, error = %e, "reconciliation RPC failed; retrying");
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = backoff_ms.saturating_mul(2);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `Transfer` logs of the asset to our payees, joined with the `AuthorizationUsed` logs of
/// their transactions, read in chunks.
async fn read_transfers(
    chain: &dyn Chain,
    scope: &ReconScope,
    opts: ReconcileOptions,
) -> Result<Vec<ChainTransfer>, ReconcileError> {
    let mut transfers = Vec::new();
    let mut from = scope.from_block;
    loop {
        let to = from.saturating_add(opts.chunk_blocks - 1).min(scope.to_block);
        let query = |topic0, topic1: Vec<B256>, topic2: Vec<B256>| LogQuery {
            addresses: vec![scope.asset],
            topic0,
            topic1,
            topic2,
            from_block: from,
            to_block: to,
        };
        let to_us = query(TRANSFER_TOPIC, Vec::new(), scope.pay_to.iter().map(|a| a.into_word()).collect());
        let logs = retry(opts, || chain.logs(&to_us)).await?;
        if !logs.is_empty() {
            // Only the senders of these transfers can have authorized them (topic 1 is the
            // authorizer), which keeps the read small on a busy token.
            let senders: BTreeSet<B256> = logs.iter().filter_map(|l| l.topics.get(1).copied()).collect();
            let used = query(AUTHORIZATION_USED_TOPIC, senders.into_iter().collect(), Vec::new());
            let auths = retry(opts, || chain.logs(&used)).await?;
            transfers.extend(join_logs(scope.asset, &logs, &auths));
        }
        if to >= scope.to_block {
            break;
        }
        from = to + 1;
    }
    Ok(transfers)
}

/// Joins each `Transfer` with the `AuthorizationUsed` of the same transaction whose
/// authorizer is the sender: the nearest one before it (the token emits it just before the
/// transfer), each used once. Logs of other contracts and malformed logs are skipped.
fn join_logs(asset: Address, transfers: &[ReceiptLog], auths: &[ReceiptLog]) -> Vec<ChainTransfer> {
    let mut by_tx: HashMap<B256, Vec<(u64, Address, B256)>> = HashMap::new();
    for log in auths.iter().filter(|l| l.address == asset) {
        if let [topic0, authorizer, nonce, ..] = log.topics.as_slice()
            && *topic0 == AUTHORIZATION_USED_TOPIC
        {
            by_tx.entry(log.tx_hash).or_default().push((log.log_index, Address::from_word(*authorizer), *nonce));
        }
    }
    let mut taken: HashSet<(B256, u64)> = HashSet::new();
    let mut out = Vec::new();
    for log in transfers.iter().filter(|l| l.address == asset) {
        let [topic0, from, to, ..] = log.topics.as_slice() else { continue };
        if *topic0 != TRANSFER_TOPIC || log.data.len() != 32 {
            continue;
        }
        let from = Address::from_word(*from);
        let nonce = by_tx
            .get(&log.tx_hash)
            .and_then(|candidates| {
                candidates
                    .iter()
                    .filter(|(index, authorizer, _)| {
                        *authorizer == from && *index < log.log_index && !taken.contains(&(log.tx_hash, *index))
                    })
                    .max_by_key(|(index, _, _)| *index)
            })
            .map(|(index, _, nonce)| {
                taken.insert((log.tx_hash, *index));
                *nonce
            });
        out.push(ChainTransfer {
            tx_hash: log.tx_hash,
            log_index: log.log_index,
            block_number: log.block_number,
            block_hash: log.block_hash,
            from,
            to: Address::from_word(*to),
            value: U256::from_be_slice(&log.data),
            authorization_nonce: nonce,
        });
    }
    out
}

/// Adds the ledger entries of on-chain authorizations that the range query did not return
/// (voided or failed entries, or settlements recorded in another block), so that they are
/// judged with their entry rather than as strangers.
async fn add_entries_of_authorizations(
    gw: &Gateway,
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
        if let Some(e) = gw.ledger.entries().by_authorization(scope.chain_id, scope.asset, t.from, nonce).await? {
            entries.push(e);
        }
    }
    Ok(())
}

/// For settled entries whose authorization was not among the transfers to our payees, reads
/// the recorded transaction's receipt: a transfer to someone else is a payee mismatch, not a
/// missing settlement. Returns how many look-ups were made.
async fn add_receipts_of_entries(
    chain: &dyn Chain,
    scope: &ReconScope,
    entries: &[Entry],
    transfers: &mut Vec<ChainTransfer>,
    opts: ReconcileOptions,
) -> Result<usize, ReconcileError> {
    let seen: HashSet<(Address, B256)> =
        transfers.iter().filter_map(|t| Some((t.from, t.authorization_nonce?))).collect();
    let mut lookups = 0;
    for e in entries {
        let Some(tx_hash) = e.tx_hash else { continue };
        if e.block_number.is_none() || seen.contains(&(e.payer, e.nonce)) {
            continue;
        }
        lookups += 1;
        if lookups > opts.lookups_max {
            return Err(ReconcileError::TooManyLookups { limit: opts.lookups_max });
        }
        let Some(receipt) = retry(opts, || chain.receipt(tx_hash)).await? else { continue };
        if !receipt.success {
            continue;
        }
        let logs: Vec<ReceiptLog> = receipt.logs.clone();
        let joined = join_logs(scope.asset, &logs, &logs);
        transfers.extend(
            joined.into_iter().filter(|t| {
                t.from == e.payer && t.authorization_nonce == Some(e.nonce) && !scope.pay_to.contains(&t.to)
            }),
        );
    }
    Ok(lookups)
}

/// The chain's current hashes of the blocks recorded by entries without a transfer (for the
/// reorg check).
async fn block_hashes_of_entries(
    chain: &dyn Chain,
    entries: &[Entry],
    transfers: &[ChainTransfer],
    lookups_done: usize,
    opts: ReconcileOptions,
) -> Result<HashMap<u64, B256>, ReconcileError> {
    let seen: HashSet<(Address, B256)> =
        transfers.iter().filter_map(|t| Some((t.from, t.authorization_nonce?))).collect();
    let blocks: BTreeSet<u64> =
        entries.iter().filter(|e| !seen.contains(&(e.payer, e.nonce))).filter_map(|e| e.block_number).collect();
    if lookups_done.saturating_add(blocks.len()) > opts.lookups_max {
        return Err(ReconcileError::TooManyLookups { limit: opts.lookups_max });
    }
    let mut hashes = HashMap::new();
    for n in blocks {
        if let Some(h) = retry(opts, || chain.block_hash(n)).await? {
            hashes.insert(n, h);
        }
    }
    Ok(hashes)
}

/// The CSV columns, in order (see `docs/reconciliation.md`).
pub const CSV_COLUMNS: [&str; 15] = [
    "class",
    "chain_id",
    "asset",
    "payer",
    "pay_to",
    "chain_to",
    "nonce",
    "amount_ledger",
    "amount_chain",
    "tx_hash",
    "block_number",
    "log_index",
    "entry_id",
    "provider",
    "route",
];

/// One CSV field per RFC 4180: quoted (with inner quotes doubled) when it holds a comma, a
/// quote, CR or LF.
fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn item_fields(i: &ReconItem) -> [String; 15] {
    let opt = |v: Option<String>| v.unwrap_or_default();
    [
        i.class.as_str().to_owned(),
        i.chain_id.to_string(),
        format!("{:#x}", i.asset),
        format!("{:#x}", i.payer),
        format!("{:#x}", i.pay_to),
        opt(i.chain_to.map(|a| format!("{a:#x}"))),
        opt(i.nonce.map(|n| format!("{n:#x}"))),
        opt(i.amount_ledger.map(|a| a.to_string())),
        opt(i.amount_chain.map(|a| a.to_string())),
        opt(i.tx_hash.map(|h| format!("{h:#x}"))),
        opt(i.block_number.map(|n| n.to_string())),
        opt(i.log_index.map(|n| n.to_string())),
        opt(i.entry_id.as_ref().map(|id| id.to_string())),
        opt(i.provider.clone()),
        opt(i.route.clone()),
    ]
}

/// The report's items as CSV (RFC 4180: a header line, CRLF line ends, amounts as decimal
/// atomic units, empty fields for absent values).
pub fn render_csv(report: &ReconReport) -> String {
    let mut out = String::new();
    out.push_str(&CSV_COLUMNS.join(","));
    out.push_str("\r\n");
    for item in &report.items {
        for (n, field) in item_fields(item).iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            csv_field(&mut out, field);
        }
        out.push_str("\r\n");
    }
    out
}

/// The columns of the totals CSV, in order (see `docs/reconciliation.md`).
pub const TOTALS_CSV_COLUMNS: [&str; 5] = ["group", "key", "expected", "matched", "outstanding"];

/// Every group of a breakdown as (group name, key, sums), in the documented order.
fn breakdown_rows(b: &ReconBreakdown) -> Vec<(&'static str, String, ReconSums)> {
    let rows = |group: &'static str, map: &BTreeMap<String, ReconSums>| {
        map.iter().map(move |(k, v)| (group, k.clone(), *v)).collect::<Vec<_>>()
    };
    let mut out = rows("day", &b.by_day);
    out.extend(rows("month", &b.by_month));
    out.extend(rows("provider", &b.by_provider));
    out.extend(rows("route", &b.by_route));
    out.extend(b.by_payer.iter().map(|(k, v)| ("payer", format!("{k:#x}"), *v)));
    out
}

/// The breakdown as CSV (RFC 4180, like [`render_csv`]): one row per UTC day, UTC month,
/// provider, route and payer, with expected, matched and outstanding amounts.
pub fn render_totals_csv(b: &ReconBreakdown) -> String {
    let mut out = String::new();
    out.push_str(&TOTALS_CSV_COLUMNS.join(","));
    out.push_str("\r\n");
    for (group, key, sums) in breakdown_rows(b) {
        let fields =
            [group.to_owned(), key, sums.expected.to_string(), sums.matched.to_string(), sums.outstanding.to_string()];
        for (n, field) in fields.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            csv_field(&mut out, field);
        }
        out.push_str("\r\n");
    }
    out
}

fn sums_json<K: ToString>(map: impl IntoIterator<Item = (K, ReconSums)>) -> Value {
    map.into_iter()
        .map(|(k, v)| {
            let sums = json!({
                "expected": v.expected.to_string(),
                "matched": v.matched.to_string(),
                "outstanding": v.outstanding.to_string(),
            });
            (k.to_string(), sums)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The run as JSON: scope, cursor, counts, totals (decimal strings), tie-out and items, with
/// the item fields named as the CSV columns.
pub fn render_json(outcome: &ReconcileOutcome) -> Value {
    let r = &outcome.report;
    let t = &r.totals;
    let tie = r.tie_out(&outcome.scope.pay_to);
    let dec = |map: &std::collections::BTreeMap<String, U256>| -> Value {
        map.iter().map(|(k, v)| (k.clone(), Value::String(v.to_string()))).collect::<serde_json::Map<_, _>>().into()
    };
    json!({
        "run_id": outcome.run_id,
        "chain_id": outcome.scope.chain_id,
        "asset": format!("{:#x}", outcome.scope.asset),
        "pay_to": outcome.scope.pay_to.iter().map(|a| format!("{a:#x}")).collect::<Vec<_>>(),
        "from_block": outcome.scope.from_block,
        "to_block": outcome.scope.to_block,
        "cursor_block": outcome.cursor_block,
        "current_block": outcome.current_block,
        "reopened": outcome.reopened.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        "counts": t.counts.iter().map(|(c, n)| (c.as_str().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "totals": {
            "chain": t.chain_total.to_string(),
            "ledger": t.ledger_total.to_string(),
            "matched": t.matched_total.to_string(),
            "matched_by_provider": dec(&t.matched_by_provider),
            "matched_by_route": dec(&t.matched_by_route),
            "matched_by_payer": t.matched_by_payer.iter()
                .map(|(a, v)| (format!("{a:#x}"), Value::String(v.to_string())))
                .collect::<serde_json::Map<_, _>>(),
            "by_day": sums_json(outcome.breakdown.by_day.iter().map(|(k, v)| (k, *v))),
            "by_month": sums_json(outcome.breakdown.by_month.iter().map(|(k, v)| (k, *v))),
            "by_provider": sums_json(outcome.breakdown.by_provider.iter().map(|(k, v)| (k, *v))),
            "by_route": sums_json(outcome.breakdown.by_route.iter().map(|(k, v)| (k, *v))),
            "by_payer": sums_json(outcome.breakdown.by_payer.iter().map(|(k, v)| (format!("{k:#x}"), *v))),
        },
        "tie_out": {
            "chain_total": tie.chain_total.to_string(),
            "matched_total": tie.matched_total.to_string(),
            "explained_by_exceptions": tie.explained_chain.to_string(),
            "holds": tie.holds,
        },
        "items": r.items.iter().map(|i| {
            CSV_COLUMNS.iter().zip(item_fields(i)).map(|(k, v)| {
                let v = if v.is_empty() { Value::Null } else { Value::String(v) };
                ((*k).to_owned(), v)
            }).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_per_rfc_4180() {
        // Goal: fields with commas, quotes or line breaks are quoted with inner quotes doubled; others are bare.
        let mut out = String::new();
        for v in ["plain", "a,b", "say \"hi\"", "two\r\nlines"] {
            csv_field(&mut out, v);
            out.push('|');
        }
        assert_eq!(out, "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\r\nlines\"|");
    }

    #[test]
    fn time_arguments() {
        // Goal: unix seconds and RFC 3339 (Z, offsets, fractions) parse to the same instant; malformed and impossible times are refused.
        assert_eq!(parse_time("1767225600"), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01t00:00:00.250z"), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01T01:30:00+01:30"), Ok(1_767_225_600));
        assert_eq!(parse_time("2025-12-31T22:00:00-02:00"), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01 00:00:00Z"), Ok(1_767_225_600));
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-02-30T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00+24:00",
            "+2026-01-01T00:00:00Z",
            "1e9",
            "-5",
            "99999999999999999999999",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn totals_csv_rows() {
        // Goal: the totals CSV has the documented header and one row per group key, days first, CRLF line ends.
        let sums = ReconSums { expected: U256::from(5u64), matched: U256::from(3u64), outstanding: U256::from(2u64) };
        let mut b = ReconBreakdown::default();
        b.by_day.insert("2026-01-01".to_owned(), sums);
        b.by_month.insert("2026-01".to_owned(), sums);
        b.by_route.insert("weather:/w,x".to_owned(), sums);
        b.by_payer.insert(Address::repeat_byte(0xab), sums);
        let csv = render_totals_csv(&b);
        let expected = format!(
            "group,key,expected,matched,outstanding\r\nday,2026-01-01,5,3,2\r\nmonth,2026-01,5,3,2\r\n\
             route,\"weather:/w,x\",5,3,2\r\npayer,{:#x},5,3,2\r\n",
            Address::repeat_byte(0xab)
        );
        assert_eq!(csv, expected);
    }

    #[test]
    fn joins_authorization_to_its_transfer() {
        // Goal: a Transfer takes the nonce of the AuthorizationUsed just before it in the same transaction from the same authorizer; a plain transfer gets none; other contracts are ignored.
        let asset = Address::repeat_byte(0x83);
        let (payer, payee) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let log = |tx: u8, index: u64, topics: Vec<B256>, data: Vec<u8>| ReceiptLog {
            address: asset,
            topics,
            data: data.into(),
            log_index: index,
            tx_hash: B256::repeat_byte(tx),
            block_number: 5,
            block_hash: B256::repeat_byte(0xbb),
        };
        let value = U256::from(1_000u64).to_be_bytes::<32>().to_vec();
        let transfer =
            |tx, index| log(tx, index, vec![TRANSFER_TOPIC, payer.into_word(), payee.into_word()], value.clone());
        let auths = [log(1, 3, vec![AUTHORIZATION_USED_TOPIC, payer.into_word(), B256::repeat_byte(9)], vec![])];
        let mut foreign = transfer(1, 7);
        foreign.address = Address::repeat_byte(0x99);
        let joined = join_logs(asset, &[transfer(1, 4), transfer(2, 1), foreign], &auths);
        assert_eq!(joined.len(), 2);
        assert_eq!(joined[0].authorization_nonce, Some(B256::repeat_byte(9)));
        assert_eq!((joined[0].from, joined[0].to, joined[0].value), (payer, payee, U256::from(1_000u64)));
        assert_eq!(joined[1].authorization_nonce, None);
    }
}
