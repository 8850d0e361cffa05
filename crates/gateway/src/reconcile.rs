//! On-chain reconciliation of one network's asset over a block range: reads the chain, loads
//! the ledger, classifies with [`tollgate_metering::reconcile`] and records the run. Also the
//! CSV and JSON renderings documented in `docs/reconciliation.md`.
//!
//! Owns: chunked `eth_getLogs` reads with bounded retries, the join of `Transfer` and
//! `AuthorizationUsed` logs by transaction, and the choice of which ledger entries and block
//! hashes the pure classification sees.
//!
//! Must not: classify (that is the metering crate's pure function, so the rules are unit-tested
//! without a chain), change ledger entries (reconciliation only reports; resolutions are notes),
//! or know HTTP.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use serde_json::{Value, json};
use tollgate_metering::{
    ChainTransfer, Entry, MeteringError, NewReconRun, ReconItem, ReconReport, ReconScope, reconcile,
};
use tollgate_verifier::{AUTHORIZATION_USED_TOPIC, Chain, Fault, LogQuery, ReceiptLog, TRANSFER_TOPIC, VerifyError};
use tollgate_x402::Network;

use crate::Gateway;

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
    let pay_to: Vec<Address> =
        gw.config.providers.iter().map(|p| p.pay_to).collect::<BTreeSet<_>>().into_iter().collect();
    let scope = ReconScope { chain_id: network.chain_id, asset: net.asset, pay_to, from_block, to_block };

    let mut transfers = read_transfers(chain, &scope, opts).await?;
    let mut entries = Vec::new();
    for p in &scope.pay_to {
        let got = gw
            .ledger
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
    let confirmed_head = current_block.saturating_add(1).checked_sub(opts.confirmations_min.max(1));
    let cursor_block = confirmed_head.map(|head| head.min(to_block)).filter(|c| *c >= from_block);
    let run = NewReconRun {
        scope: &scope,
        cursor_block,
        started_unix_s,
        finished_unix_s: gw.clock.now_unix_s().max(started_unix_s),
        report: &report,
    };
    let run_id = gw.ledger.record_recon_run(&run).await?;
    Ok(ReconcileOutcome { run_id, scope, cursor_block, current_block, report })
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
        if let Some(e) = gw.ledger.entry_by_authorization(scope.chain_id, scope.asset, t.from, nonce).await? {
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
