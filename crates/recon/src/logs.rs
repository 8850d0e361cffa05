//! Reading the chain for a reconciliation, through the verifier's [`Chain`] only: chunked
//! `eth_getLogs` reads of `Transfer` logs to our payees joined with the `AuthorizationUsed`
//! logs of their transactions, receipts and block hashes of entries without a transfer, the
//! binary search of block timestamps (times to blocks) and the timestamps of the items' blocks, each call retried
//! with backoff while the chain is at fault.
//!
//! Must not: touch the ledger, classify, or build an RPC client (the caller's [`Chain`] is
//! used as given; every call's timeout is the chain's).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use backon::{ExponentialBuilder, Retryable};
use tollgate_metering::{Entry, ReconItem, ReconScope};
use tollgate_verifier::{
    AUTHORIZATION_CANCELED_TOPIC, AUTHORIZATION_USED_TOPIC, Chain, Fault, LogQuery, ReceiptLog, TRANSFER_TOPIC,
    VerifyError,
};

use crate::error::ReconcileError;
use crate::matcher::ChainTransfer;
use crate::options::ReconcileOptions;

/// Calls `f` up to `rpc_attempts` times while the chain is at fault, waiting
/// `retry_backoff_ms` before the first retry and doubling the wait before each further one.
pub(crate) async fn retry<T, F, Fut>(opts: ReconcileOptions, f: F) -> Result<T, VerifyError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, VerifyError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(opts.retry_backoff_ms))
        .with_factor(2.0)
        .without_max_delay()
        .with_max_times(usize::try_from(opts.rpc_attempts.saturating_sub(1)).unwrap_or(usize::MAX));
    f.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &VerifyError| e.fault() == Fault::Chain)
        .notify(|e: &VerifyError, wait: Duration| {
            tracing::warn!(error = %e, wait_ms = wait.as_millis(), "reconciliation RPC failed; retrying");
        })
        .await
}

/// Timestamp of block `number` (at most `head`), retried like every RPC call here.
pub(crate) async fn timestamp(
    chain: &dyn Chain,
    number: u64,
    head: u64,
    opts: ReconcileOptions,
) -> Result<u64, ReconcileError> {
    retry(opts, || chain.block_timestamp(number)).await?.ok_or(ReconcileError::BlockMissing { number, head })
}

/// The first block in `[lo, head]` whose timestamp is at least `unix_s`, or `None` when even
/// the head is older. Binary search: block timestamps never decrease. About log2(head - lo)
/// calls, each bounded by the RPC timeout and the retries.
pub(crate) async fn first_block_at_or_after(
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

/// Where an EIP-3009 authorization was consumed on chain: the transaction whose token log
/// `AuthorizationUsed(authorizer, nonce)` (a transfer) or `AuthorizationCanceled(authorizer,
/// nonce)` (the payer's cancellation) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthorizationUse {
    /// The transaction that consumed it.
    pub tx_hash: B256,
    /// Its block.
    pub block_number: u64,
    /// Cancelled by the payer rather than used by a transfer.
    pub cancelled: bool,
}

/// Finds the transaction that consumed the authorization `(authorizer, nonce)` of `asset` in
/// the blocks from the first at or after `from_unix_s` (the authorization's `validAfter`: the
/// token refuses it before) to `to_block`, reading the logs in `chunk_blocks` chunks, each
/// call retried like every RPC call here. `None` when no such log is there: not consumed by
/// `to_block`, or the node has not indexed it yet; a caller never reads `None` as a proof.
pub async fn find_authorization_use(
    chain: &dyn Chain,
    asset: Address,
    authorizer: Address,
    nonce: B256,
    from_unix_s: u64,
    to_block: u64,
    opts: ReconcileOptions,
) -> Result<Option<AuthorizationUse>, ReconcileError> {
    let head_unix_s = timestamp(chain, to_block, to_block, opts).await?;
    if head_unix_s < from_unix_s {
        return Ok(None);
    }
    // A block's timestamp is above its parent's, so the first block at or after `from_unix_s`
    // is at most `head_unix_s - from_unix_s` blocks below the head: the search starts there
    // (a dozen reads for an hour of 2-second blocks, not one per bit of the chain's height),
    // and from the genesis when the chain keeps equal timestamps and that bound fails.
    let mut lo = to_block.saturating_sub(head_unix_s - from_unix_s);
    if lo > 0 && timestamp(chain, lo, to_block, opts).await? >= from_unix_s {
        lo = 0;
    }
    let Some(mut from) = first_block_at_or_after(chain, from_unix_s, lo, to_block, opts).await? else {
        return Ok(None);
    };
    loop {
        let to = from.saturating_add(opts.chunk_blocks.max(1) - 1).min(to_block);
        for (topic0, cancelled) in [(AUTHORIZATION_USED_TOPIC, false), (AUTHORIZATION_CANCELED_TOPIC, true)] {
            let query = LogQuery {
                addresses: vec![asset],
                topic0,
                topic1: vec![authorizer.into_word()],
                topic2: vec![nonce],
                from_block: from,
                to_block: to,
            };
            let logs = retry(opts, || chain.logs(&query)).await?;
            // The token lets an authorization be consumed once: at most one log names it.
            if let Some(log) = logs.iter().find(|l| {
                l.address == asset
                    && l.topics.get(1) == Some(&authorizer.into_word())
                    && l.topics.get(2) == Some(&nonce)
            }) {
                return Ok(Some(AuthorizationUse { tx_hash: log.tx_hash, block_number: log.block_number, cancelled }));
            }
        }
        if to >= to_block {
            return Ok(None);
        }
        from = to + 1;
    }
}

/// `Transfer` logs of the asset to our payees, joined with the `AuthorizationUsed` logs of
/// their transactions, read in chunks.
pub(crate) async fn read_transfers(
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

/// For settled entries whose authorization was not among the transfers to our payees, reads
/// the recorded transaction's receipt: a transfer to someone else is a payee mismatch, not a
/// missing settlement. Returns how many look-ups were made.
pub(crate) async fn add_receipts_of_entries(
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
pub(crate) async fn block_hashes_of_entries(
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

/// The timestamp (unix seconds) of each block that an item names: the item's block time in
/// the CSV and JSON, and its UTC day and month in the breakdown. One look-up per distinct
/// block, never more than `lookups_max` in all (with those already done). Blocks above the
/// head (a ledger block lost to a reorg) are left out.
pub(crate) async fn times_of_blocks(
    chain: &dyn Chain,
    items: &[ReconItem],
    head: u64,
    lookups_done: usize,
    opts: ReconcileOptions,
) -> Result<HashMap<u64, u64>, ReconcileError> {
    let blocks: BTreeSet<u64> = items.iter().filter_map(|i| i.block_number).filter(|n| *n <= head).collect();
    if lookups_done.saturating_add(blocks.len()) > opts.lookups_max {
        return Err(ReconcileError::TooManyLookups { limit: opts.lookups_max });
    }
    let mut time_of = HashMap::with_capacity(blocks.len());
    for n in blocks {
        time_of.insert(n, timestamp(chain, n, head, opts).await?);
    }
    Ok(time_of)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn joins_each_payment_of_a_batch() {
        // Goal: in one batch transaction (many AuthorizationUsed + Transfer pairs, one payer paying twice the same payee and value, and a failed inner call that left no log) each Transfer takes its own authorization's nonce, none twice, and the failed call's authorization appears nowhere.
        let asset = Address::repeat_byte(0x83);
        let (payer, other, payee) = (Address::repeat_byte(1), Address::repeat_byte(3), Address::repeat_byte(2));
        let log = |index: u64, topics: Vec<B256>, data: Vec<u8>| ReceiptLog {
            address: asset,
            topics,
            data: data.into(),
            log_index: index,
            tx_hash: B256::repeat_byte(7),
            block_number: 5,
            block_hash: B256::repeat_byte(0xbb),
        };
        let value = U256::from(1_000u64).to_be_bytes::<32>().to_vec();
        let used = |index, from: Address, nonce: u8| {
            log(index, vec![AUTHORIZATION_USED_TOPIC, from.into_word(), B256::repeat_byte(nonce)], vec![])
        };
        let transfer =
            |index, from: Address| log(index, vec![TRANSFER_TOPIC, from.into_word(), payee.into_word()], value.clone());
        // Calls: payer (nonce 1), other (nonce 2, failed: no logs), payer (nonce 3), other (nonce 4).
        let auths = [used(10, payer, 1), used(12, payer, 3), used(14, other, 4)];
        let transfers = [transfer(11, payer), transfer(13, payer), transfer(15, other)];
        let joined = join_logs(asset, &transfers, &auths);
        let nonces: Vec<_> = joined.iter().map(|t| (t.log_index, t.authorization_nonce)).collect();
        assert_eq!(
            nonces,
            vec![(11, Some(B256::repeat_byte(1))), (13, Some(B256::repeat_byte(3))), (15, Some(B256::repeat_byte(4))),]
        );
        assert!(joined.iter().all(|t| t.tx_hash == B256::repeat_byte(7)));
    }
}
