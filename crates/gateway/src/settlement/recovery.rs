//! Crash recovery: the sweep drives every entry left unfinished past the grace period to a
//! terminal state from what the ledger and the chain say, re-checks entries a reorg sent back,
//! and rebuilds audit records lost with a process.
//!
//! Must not: touch an entry a live call of this process holds, or re-broadcast for a call
//! that is not known to have been served (`after`, `before`).

use std::sync::Arc;

use alloy_primitives::B256;
use tollgate_metering::{
    Decision, Entry, EntryId, EntryState, MeteringError, NewAuditRecord, SettlementMode, Transition,
};
use tollgate_verifier::{Fault, VerifiedPayment};

use super::record::{
    ANSWERED, ClaimDetail, REFUND_DUE, fail, record_settled, settled_transition, stored_payment, unusable_payment,
};
use super::service::Settlements;
use super::settle::{SettleError, Waiter, close_nonce_leased, settle_entry};

/// Runs the recovery sweep now and then every `recovery_interval` until the process ends.
pub async fn recovery_loop(svc: Arc<Settlements>) {
    loop {
        if let Err(e) = recover_once(&svc).await {
            tracing::warn!(error = %e, "recovery sweep failed; will retry");
        }
        tokio::time::sleep(svc.config.settlement.recovery_interval).await;
    }
}

/// One sweep: every entry left unfinished for longer than the grace period (so not in
/// flight in a live process) is driven towards a terminal state, up to
/// `settlement.deferred_concurrency` entries at once (the same bound as the deferred worker:
/// their receipt waits overlap, so a backlog settles many entries per block, not one).
pub async fn recover_once(svc: &Settlements) -> Result<usize, MeteringError> {
    use futures_util::StreamExt as _;
    let now = svc.clock.now_unix_s();
    let cutoff = now.saturating_sub(svc.config.settlement.recovery_grace_s);
    let mut stuck = svc.ledger.entries().unfinished(cutoff, 200).await?;
    stuck.retain(|e| !svc.live_entries.contains(&e.id));
    let count = stuck.len();
    futures_util::stream::iter(stuck.iter())
        .for_each_concurrent(svc.config.settlement.deferred_concurrency.max(1), |entry| async move {
            recover_entry(svc, entry).await;
            // A deferred entry the worker's queue had no room for may have been settled or
            // voided here instead: its admission slot is released either way.
            svc.backlog.unpark(entry.id.as_str());
        })
        .await;
    backfill_audit(svc).await?;
    Ok(count)
}

/// Deletes the x402 payment identifiers past `[server] payment_id_retention_s`. Rides on the
/// audit backfill's lease (at most once a minute across replicas). A failure is logged and
/// left to the next run: an expired record is never read (`get` skips it) and a claim
/// replaces it, so keeping it longer changes no answer.
async fn purge_payment_ids(svc: &Settlements) {
    match svc.ledger.payment_ids().purge_expired(svc.clock.now_unix_s()).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(purged = n, "expired payment identifiers deleted"),
        Err(e) => tracing::warn!(error = %e, "expired payment identifiers not deleted; next sweep retries"),
    }
}

/// How far back the sweep looks for accepted calls that lost their audit record.
const AUDIT_BACKFILL_WINDOW_S: u64 = 7 * 86_400;

/// Accepted calls whose audit record was still queued when a process died have a ledger entry
/// but no record: append one (reason `recovered_after_restart`, from the entry). Only entries
/// that ended more than the recovery grace period ago (a live process queues its record when
/// the call ends), reserved since the audit trail began; at most one sweep a minute across
/// replicas (a lease, held until it expires). The cutoff is read at the instant the lease is
/// taken: a sweep that computed an older one before a long recovery pass would take the
/// minute's lease and then skip what had just become due.
pub async fn backfill_audit(svc: &Settlements) -> Result<usize, MeteringError> {
    const LEASE: &str = "audit_backfill";
    // The holder is unique per sweep, so two sweeps of one process exclude each other too.
    let holder = format!("{}-{}", svc.instance, hex::encode(rand::random::<[u8; 4]>()));
    let now = svc.clock.now_unix_s();
    if !svc.ledger.leases().try_acquire(LEASE, &holder, 60, now).await? {
        return Ok(0);
    }
    let before_unix_s = now.saturating_sub(svc.config.settlement.recovery_grace_s);
    purge_payment_ids(svc).await;
    let since = before_unix_s.saturating_sub(AUDIT_BACKFILL_WINDOW_S);
    let missing = svc.ledger.entries().without_audit(since, before_unix_s, 500).await?;
    if missing.is_empty() {
        return Ok(0);
    }
    let records: Vec<NewAuditRecord> = missing
        .iter()
        .map(|e| NewAuditRecord {
            at_unix_ms: e.created_unix_s.saturating_mul(1000),
            wallet: Some(e.payer),
            provider: Some(e.provider.clone()),
            endpoint: Some(e.route.clone()),
            method: e.method.clone(),
            path: e.path.clone(),
            price_version: e.price_version,
            // What the ledger says became of the call: an entry ended uncharged is a denial.
            decision: if matches!(e.state, EntryState::Voided | EntryState::SettleFailed) {
                Decision::Denied
            } else {
                Decision::Accepted
            },
            reason: "recovered_after_restart".to_owned(),
            credential: e.credential.clone(),
            credential_version: e.credential_version,
            upstream_status: e.upstream_status,
            latency_ms: 0,
            entry_id: Some(e.id.to_string()),
            tx_hash: e.tx_hash.map(|t| format!("{t:#x}")),
        })
        .collect();
    svc.ledger.audit().append(&records).await?;
    tracing::warn!(records = records.len(), "audit records recovered from the ledger");
    Ok(records.len())
}

async fn recover_entry(svc: &Settlements, entry: &Entry) {
    let now = svc.clock.now_unix_s();
    let expired = entry.valid_before_unix_s <= now.saturating_add(svc.config.verification.valid_before_buffer_s);
    match entry.state {
        // Reserved but never marked forwarded: the call cannot be shown to have been
        // delivered, so nothing is charged.
        EntryState::Reserved => {
            let reason = if entry.mode == SettlementMode::Deferred {
                "recovery_delivery_unknown"
            } else {
                "recovery_never_forwarded"
            };
            void_left(svc, entry, EntryState::Reserved, reason, now).await;
        }
        // `after`: the upstream answered but the body is released only with a settlement,
        // and no transaction was ever claimed: the process died before the agent got
        // anything. Nothing is charged.
        EntryState::Forwarded if entry.mode == SettlementMode::After => {
            void_left(svc, entry, EntryState::Forwarded, "recovery_never_delivered", now).await;
        }
        // `deferred`: the call was served; settle while the authorization is valid, void once
        // it cannot be settled any more.
        EntryState::Forwarded if entry.mode == SettlementMode::Deferred => {
            if expired {
                void_left(svc, entry, EntryState::Forwarded, "recovery_expired_unsettled", now).await;
                return;
            }
            match stored_payment(entry) {
                Ok(p) => {
                    match settle_entry(svc, &entry.id, EntryState::Forwarded, &p, "recovery", Waiter::Background).await
                    {
                        Ok(_)
                        | Err(SettleError::LostRace | SettleError::NotBroadcast { .. } | SettleError::Reverted(_)) => {}
                        Err(e) if e.is_transient() => {}
                        // Only the payer's fault is final for a served call.
                        Err(e) if e.payer_fault() => fail(svc, entry, EntryState::Forwarded, e.reason_code()).await,
                        // Ours (a ledger error that is not retryable, no relayer): the next sweep
                        // tries again, until the entry settles or expires.
                        Err(e) => {
                            tracing::error!(id = %entry.id, error = %e, "recovery could not settle a served entry; next sweep");
                            svc.counters.left_to_next_sweep();
                        }
                    }
                }
                Err(e) => unusable_payment(svc, entry, EntryState::Forwarded, e).await,
            }
        }
        EntryState::Settling => recover_settling(svc, entry).await,
        _ => {}
    }
}

/// Voids an entry the sweep found unfinished; a failure is retried by the next sweep.
async fn void_left(svc: &Settlements, entry: &Entry, from: EntryState, reason: &str, now: u64) {
    let t = Transition::Voided { reason: reason.to_owned() };
    match svc.ledger.entries().transition_from(&entry.id, from, t, "recovery", None, now).await {
        Ok(true) => {
            svc.counters.entries_ended_uncharged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(false) => {}
        // Safe to leave: the entry stays unfinished and the next sweep voids it.
        Err(e) => {
            tracing::warn!(id = %entry.id, error = %e, "recovery could not void an entry; next sweep");
            svc.counters.left_to_next_sweep();
        }
    }
}

/// Looks now for where a `settling` entry's recorded transactions landed and records the
/// one that did (used after a reorg moved a settled entry back to `settling`). Resending or
/// voiding is left to the recovery sweep, after its grace period.
pub async fn recheck(svc: &Settlements, id: &EntryId) {
    let entry = match svc.ledger.entries().get(id).await {
        Ok(Some(e)) if e.state == EntryState::Settling => e,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(%id, error = %e, "re-check: ledger unavailable; the recovery sweep will");
            return;
        }
    };
    // Unusable: the recovery sweep decides what becomes of the entry.
    let Ok(payment) = stored_payment(&entry) else { return };
    let Some(settler) = svc.settlers.get(&payment.chain_id) else { return };
    let hashes = match svc.ledger.entries().events(id).await {
        Ok(events) => events.iter().filter_map(|e| e.tx_hash).chain(entry.tx_hash).collect::<Vec<_>>(),
        // Safe to leave: nothing was written; the recovery sweep reads the same events.
        Err(e) => {
            tracing::warn!(%id, error = %e, "re-check: ledger unavailable; the recovery sweep will");
            return;
        }
    };
    for tx_hash in hashes {
        if let Ok(Some(s)) = settler.check_receipt(&payment, tx_hash).await {
            if let Err(e) = record_settled(svc, id, &s).await {
                // Safe to leave: the entry stays `settling` and the recovery sweep finds the
                // same receipt.
                tracing::warn!(%id, error = %e, "re-check could not record a settlement; recovery will");
                svc.counters.left_to_next_sweep();
            }
            return;
        }
    }
}

/// Whether none of these transactions can be mined after block `head`: each claim noted its
/// relayer nonce, and each relayer's mined nonce as of `head` had passed it (another
/// transaction took it). Unknown nonces (claims recorded before nonces were noted) or a chain
/// error: false.
async fn none_can_land(settler: &tollgate_verifier::Settler, unmined: &[Option<ClaimDetail>], head: u64) -> bool {
    for detail in unmined {
        let Some(d) = detail else { return false };
        match settler.nonce_still_open(d.relayer, d.nonce, head).await {
            Ok(false) => {}
            Ok(true) | Err(_) => return false,
        }
    }
    true
}

/// One or more transactions were recorded for this entry (a replacement may have followed
/// the first): find out what became of them.
async fn recover_settling(svc: &Settlements, entry: &Entry) {
    let now = svc.clock.now_unix_s();
    let payment = match stored_payment(entry) {
        Ok(p) => p,
        Err(e) => return unusable_payment(svc, entry, EntryState::Settling, e).await,
    };
    let Some(settler) = svc.settlers.get(&payment.chain_id) else { return };
    let events = match svc.ledger.entries().events(&entry.id).await {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(id = %entry.id, error = %e, "recovery: ledger unavailable");
            return;
        }
    };
    // Whether the agent was answered: a live process noted it while the entry was `settling`,
    // or the entry was `settled` before (a reorg sent it back here), which an `after` call
    // records before it answers.
    let answered = events.iter().any(|e| e.cause == ANSWERED || e.to_state == EntryState::Settled);
    // A refund its live process found due while the settlement was pending (`before` mode).
    let refund_due = events.iter().find_map(|e| e.cause.strip_prefix(REFUND_DUE));
    // Every transaction recorded for the entry, with the relayer nonce its claim noted.
    let mut claims: Vec<(B256, Option<ClaimDetail>)> =
        events.iter().filter_map(|e| Some((e.tx_hash?, ClaimDetail::from_event(e.detail.as_deref())))).collect();
    if let Some(h) = entry.tx_hash
        && !claims.iter().any(|(c, _)| *c == h)
    {
        claims.push((h, None));
    }
    let mut seen = std::collections::HashSet::new();
    claims.retain(|(h, _)| seen.insert(*h));
    // Every fact that decides the entry is read as of one block, the head: the relayer's
    // mined nonces, the authorization state and the chain's clock. A node behind that block
    // answers an error rather than an older state, so two nodes behind a load balancer cannot
    // give the sweep facts from different blocks; and a transaction that lands after it is
    // seen by the next sweep. Receipts cannot be pinned: only one that is there is a fact.
    let (head, head_unix_s) = match settler.head().await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(id = %entry.id, error = %e, "recovery: chain unavailable");
            return;
        }
    };
    let chain_expired = head_unix_s >= entry.valid_before_unix_s;
    let details: Vec<Option<ClaimDetail>> = claims.iter().map(|(_, d)| *d).collect();
    let nonces_passed = none_can_land(settler, &details, head).await;
    let mut unmined = 0usize;
    let mut unmined_claims = Vec::new();
    let answer = Answer { answered, refund_due };
    for (tx_hash, detail) in &claims {
        match settler.check_receipt(&payment, *tx_hash).await {
            Ok(Some(s)) => return record_found(svc, entry, &s, answer, now).await,
            Ok(None) => {
                unmined += 1;
                unmined_claims.push(*detail);
            }
            // Reverted, or no matching transfer: this one did not move the money.
            Err(e) if e.fault() != Fault::Chain => {}
            Err(e) => {
                tracing::warn!(id = %entry.id, error = %e, "recovery: chain unavailable");
                return;
            }
        }
    }
    let used = svc
        .verifier
        .authorization_used_at(payment.chain_id, payment.asset, payment.payer(), payment.authorization.nonce, head)
        .await;
    let ours_cannot_land = unmined == 0 || chain_expired || nonces_passed;
    match used {
        // One of ours may still land (or just did, after we looked): look again next sweep.
        Ok(true) if !ours_cannot_land => {}
        // Used, while no transaction of ours shows the transfer now and none can still land:
        // which transaction consumed it is read from the token's logs, never inferred from a
        // receipt that is missing (see `consumed_by`).
        Ok(true) => {
            let seen = Seen { claims: &claims, answer, head };
            consumed_by(svc, settler, entry, &payment, seen, now).await;
        }
        // Every transaction we recorded was mined and reverted: no money moved, for good.
        Ok(false) if unmined == 0 => fail(svc, entry, EntryState::Settling, "settlement_reverted").await,
        // The chain is past `validBefore` (block time), or, for a call not known to be
        // served, every claim's nonce was taken by another transaction: nothing can use
        // this authorization through us any more.
        Ok(false) if chain_expired || (entry.mode != SettlementMode::Deferred && nonces_passed) => {
            void_left(svc, entry, EntryState::Settling, "recovery_tx_never_landed", now).await;
        }
        // Still valid and unused, a transaction of ours unmined: it was dropped, refused or
        // never broadcast (a crash between the claim and the send). Only a deferred call is
        // known to have been served, so only it is sent again (the token lets at most one
        // transaction land), by one replica at a time. An `after` or `before` call may never
        // have reached its agent: it is not re-broadcast; it is voided (above) once every
        // claim's nonce has passed or the chain passes `validBefore`, and waits until then.
        Ok(false) if entry.mode == SettlementMode::Deferred => resend(svc, entry, &payment, now).await,
        Ok(false) => close_unsent(svc, settler, entry, &payment, &unmined_claims).await,
        Err(e) => tracing::warn!(id = %entry.id, error = %e, "recovery: chain unavailable"),
    }
}

/// What the sweep read of an entry's answer in its events: whether its agent was answered,
/// and a refund its live process found due.
#[derive(Debug, Clone, Copy)]
struct Answer<'a> {
    answered: bool,
    refund_due: Option<&'a str>,
}

/// Records the settlement found in a receipt of one of the entry's transactions. When its
/// payer is owed the money back, the settlement and the refund are one ledger write
/// (`settle_owing`): a crash between two writes would leave the entry `settled` and the refund
/// forgotten, as the SIGKILL crash test once caught.
async fn record_found(svc: &Settlements, entry: &Entry, s: &tollgate_verifier::Settled, answer: Answer<'_>, now: u64) {
    // An `after` call releases its body only with its answer, and every answer given before
    // the entry is `settled` is noted first. No note: the process died between the broadcast
    // and the answer, the agent never had the response, and the payment it did not get is owed
    // back. A `before` call whose upstream failed while its settlement was pending: the refund
    // its live process noted is recorded now that the money landed.
    let owed = if entry.mode == SettlementMode::After && !answer.answered {
        Some("recovery_delivery_failed")
    } else {
        answer.refund_due
    };
    let recorded = match owed {
        None => record_settled(svc, &entry.id, s).await,
        Some(reason) => {
            let entries = svc.ledger.entries();
            let done = entries.settle_owing(&entry.id, &settled_transition(s), reason, "recovery", now).await;
            if let Ok(true) = done {
                tracing::warn!(id = %entry.id, reason, "settlement recorded by the sweep with the refund its payer is owed");
            }
            done
        }
    };
    // `Ok(false)`: another writer (a live call) recorded it first, and knows better.
    if let Err(e) = recorded {
        // Safe to leave: the entry stays `settling`; the next sweep finds the same receipt.
        tracing::warn!(id = %entry.id, error = %e, "recovery could not record a settlement; next sweep");
        svc.counters.left_to_next_sweep();
    }
}

/// What the sweep read of a `settling` entry: its claimed transactions (with the relayer
/// nonce each claim noted), its answer, and the block its chain facts were read at.
#[derive(Debug, Clone, Copy)]
struct Seen<'a> {
    claims: &'a [(B256, Option<ClaimDetail>)],
    answer: Answer<'a>,
    head: u64,
}

/// How far before an entry's creation the sweep looks for the transaction that consumed its
/// authorization (the payer may have used or cancelled it just before calling; validity
/// windows are minutes, and the gateway's clock may be off the chain's).
const CONSUMED_LOOKBACK_S: u64 = 3_600;

/// A `settling` entry whose authorization is used (as of `seen.head`) while none of its
/// transactions shows the transfer and none can still land (each mined without it, its relayer
/// nonce passed, or the chain past `validBefore`). A missing receipt proves nothing: a node
/// shows a block's state (the nonce, the authorization) before its receipts, and a replica
/// behind a load balancer lags. Only the token's `AuthorizationUsed`/`AuthorizationCanceled`
/// log decides, naming the transaction that consumed the authorization: one of ours is
/// recorded as the settlement once its receipt is readable; another one (a third party's
/// transfer, the payer's cancellation), once `[reconciliation] confirmations` deep, ends the
/// entry `settle_failed`. No log: the entry stays `settling` and the next sweep looks again,
/// whatever the chain's clock (an empty answer is never a proof); it is counted, and finance
/// sees it unfinished rather than booked wrong.
async fn consumed_by(
    svc: &Settlements,
    settler: &tollgate_verifier::Settler,
    entry: &Entry,
    payment: &VerifiedPayment,
    seen: Seen<'_>,
    now: u64,
) {
    let chain = settler.chain().as_ref();
    let a = &payment.authorization;
    let from_unix_s =
        u64::try_from(a.valid_after).unwrap_or(0).max(entry.created_unix_s.saturating_sub(CONSUMED_LOOKBACK_S));
    // The operator's `[reconciliation] chunk_blocks` (a provider's `eth_getLogs` range cap)
    // and confirmations; one attempt per call: a chain fault leaves the entry to the next sweep.
    let opts = tollgate_recon::ReconcileOptions { rpc_attempts: 1, ..svc.config.reconciliation.options() };
    let found =
        tollgate_recon::find_authorization_use(chain, payment.asset, a.from, a.nonce, from_unix_s, seen.head, opts)
            .await;
    match found {
        Ok(Some(u)) if seen.claims.iter().any(|(h, _)| *h == u.tx_hash) => {
            match settler.check_receipt(payment, u.tx_hash).await {
                Ok(Some(s)) => record_found(svc, entry, &s, seen.answer, now).await,
                // Safe to leave: the money moved through our transaction; the next sweep reads
                // its receipt again and records it.
                Ok(None) => {
                    tracing::warn!(id = %entry.id, tx = %u.tx_hash,
                        "recovery: our transaction used the authorization; its receipt is not readable yet; next sweep");
                    svc.counters.left_to_next_sweep();
                }
                Err(e) if e.fault() == Fault::Chain => {
                    tracing::warn!(id = %entry.id, error = %e, "recovery: chain unavailable");
                    svc.counters.left_to_next_sweep();
                }
                // The token says our transaction consumed the authorization, its receipt says
                // it moved nothing to the payee: not something a sweep decides. Left
                // `settling`, logged and counted for an operator.
                Err(e) => {
                    tracing::error!(id = %entry.id, tx = %u.tx_hash, error = %e,
                        "recovery: our transaction used the authorization without the expected transfer; left settling");
                    svc.counters.left_to_recovery();
                }
            }
        }
        Ok(Some(u)) if seen.head.saturating_sub(u.block_number) + 1 < opts.confirmations_min => {
            tracing::info!(id = %entry.id, tx = %u.tx_hash, block = u.block_number,
                "recovery: authorization consumed by another transaction; waiting for its confirmations");
        }
        Ok(Some(u)) => {
            tracing::warn!(id = %entry.id, tx = %u.tx_hash, cancelled = u.cancelled,
                "authorization consumed by a transaction that is not ours; nothing charged through us");
            fail(svc, entry, EntryState::Settling, "authorization_used_elsewhere").await;
        }
        // Safe to leave: the entry stays `settling`; the next sweep reads the chain again.
        Ok(None) => {
            tracing::warn!(id = %entry.id,
                "recovery: authorization used, the transaction that used it not found yet; next sweep");
            svc.counters.left_to_next_sweep();
        }
        Err(e) => {
            tracing::warn!(id = %entry.id, error = %e, "recovery: chain unavailable");
            svc.counters.left_to_next_sweep();
        }
    }
}

/// An `after` or `before` entry whose claimed transactions are unmined, its authorization
/// unused and still valid: the process that claimed them died, or its transaction was lost.
/// An entry whose agent was answered `settlement_pending` is treated the same: the sweep
/// never re-broadcasts for an `after`/`before` call (it keeps no signed bytes), so the entry
/// ends `voided` once its nonce has passed, as it did before this step, only sooner. If the lowest claimed nonce is this relayer's next free one on the node, no
/// transaction of ours holds it: the claim was never broadcast (or was dropped). Closing the
/// nonce with a zero-value self-transfer makes every claimed transaction unable to land, and
/// the next sweep voids the entry once that is mined (`nonces_passed`) instead of waiting for
/// later traffic or `validBefore`, which on a quiet gateway can be an hour.
async fn close_unsent(
    svc: &Settlements,
    settler: &tollgate_verifier::Settler,
    entry: &Entry,
    payment: &VerifiedPayment,
    claims: &[Option<ClaimDetail>],
) {
    use tollgate_verifier::NonceClosure;
    // Only claims of this relayer with a recorded nonce can be closed from here.
    let Some(nonce) = claims.iter().flatten().filter(|d| d.relayer == settler.address()).map(|d| d.nonce).min() else {
        return;
    };
    match close_nonce_leased(svc, settler, payment.chain_id, nonce).await {
        Ok(NonceClosure::Sent { tx_hash }) => {
            svc.counters.relayer_nonces_closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(id = %entry.id, nonce, tx = %tx_hash,
                "settlement claimed but never broadcast by a process that died; relayer nonce closed");
        }
        Ok(NonceClosure::Passed | NonceClosure::Busy) => {}
        // Safe to leave: nothing moved; the next sweep looks again.
        Err(e) => tracing::warn!(id = %entry.id, nonce, error = %e, "recovery: could not close a relayer nonce"),
    }
}

/// Re-sends a deferred entry's settlement, under a per-entry lease so that two sweeps (two
/// replicas) do not both broadcast a replacement.
async fn resend(svc: &Settlements, entry: &Entry, payment: &VerifiedPayment, now: u64) {
    let lease = format!("resend:{}", entry.id);
    let ttl_s = svc.config.settlement.receipt_timeout.as_secs().saturating_add(10);
    match svc.ledger.leases().try_acquire(&lease, &svc.instance, ttl_s, now).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(id = %entry.id, error = %e, "recovery: ledger unavailable");
            return;
        }
    }
    if let Err(e) =
        settle_entry(svc, &entry.id, EntryState::Settling, payment, "recovery_resend", Waiter::Background).await
    {
        tracing::warn!(id = %entry.id, error = %e, "recovery re-send did not settle; next sweep");
    }
}
