//! Settling ledger entries, the deferred-settlement worker, and crash recovery.
//!
//! Every path that moves money goes through [`settle_entry`]: the settlement transaction's
//! hash is recorded in the ledger (`settling`) *before* it is broadcast, through a
//! conditional state change that only one process can win. A crash at any point therefore
//! leaves either nothing sent, or a hash to check — and the recovery sweep drives every
//! entry left in `reserved`, `forwarded` or `settling` to a terminal state.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::B256;
use tollgate_metering::{
    Decision, Entry, EntryId, EntryState, MeteringError, NewAuditRecord, SettlementMode, Transition,
};
use tollgate_verifier::{Claim, Fault, SettleOutcome, Settled, VerifiedPayment, VerifyError};

use crate::app::Gateway;

/// How a settlement attempt ended.
#[derive(Debug)]
pub enum SettleResult {
    /// Mined with the expected transfer; the entry is `settled`.
    Settled(Settled),
    /// Sent; no receipt yet. The entry stays `settling` with this hash.
    Pending(B256),
}

/// Why a settlement attempt did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The chain or the token refused, or the chain could not be reached.
    #[error("{0}")]
    Verify(VerifyError),
    /// The ledger failed.
    #[error("ledger: {0}")]
    Ledger(MeteringError),
    /// Another worker claimed this entry first; it owns the settlement.
    #[error("another worker is settling this entry")]
    LostRace,
    /// No relayer key is configured for this chain.
    #[error("no relayer configured for chain {chain_id}")]
    NoRelayer {
        /// The chain.
        chain_id: u64,
    },
    /// The relayer lease could not be had in time (another replica is sending).
    #[error("relayer busy")]
    RelayerBusy,
}

impl SettleError {
    /// Whether trying again later may succeed (and the entry should stay as it is).
    pub fn is_transient(&self) -> bool {
        match self {
            SettleError::Verify(e) => e.fault() == Fault::Chain,
            SettleError::Ledger(e) => e.is_retryable(),
            SettleError::RelayerBusy | SettleError::LostRace => true,
            SettleError::NoRelayer { .. } => false,
        }
    }
}

/// Who waits for a settlement's receipt, which sets how often the node is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// A paid call in progress (`after`, `before`): `settlement.receipt_poll_interval_ms`.
    Call,
    /// Nobody (the deferred worker, recovery):
    /// `settlement.deferred_receipt_poll_interval_ms`.
    Background,
}

/// Settles the entry `id`, currently in state `from`, for `payment`, polling for the receipt
/// as `waiter` needs. The hash is recorded before broadcast; on a definitive failure *after*
/// broadcast the entry is marked `settle_failed`; failures before broadcast leave the entry
/// in `from` for the caller to decide.
pub async fn settle_entry(
    gw: &Gateway,
    id: &EntryId,
    from: EntryState,
    payment: &VerifiedPayment,
    cause: &str,
    waiter: Waiter,
) -> Result<SettleResult, SettleError> {
    let settler = gw.settlers.get(&payment.chain_id).ok_or(SettleError::NoRelayer { chain_id: payment.chain_id })?;
    let hold = relayer_lease(gw, payment.chain_id, settler.address()).await?;
    let mut claim = LedgerClaim { gw, id, expected: from, cause, error: None };
    let sent = settler.submit_claimed(payment, &mut claim).await;
    let db_err = claim.error;
    if let Some(hold) = hold {
        let _ = gw.ledger.release_lease(&hold.name, &gw.instance).await;
    }
    let tx_hash = match sent {
        Ok(Some(tx)) => tx,
        Ok(None) => return Err(db_err.map(SettleError::Ledger).unwrap_or(SettleError::LostRace)),
        Err(e) => return Err(SettleError::Verify(e)),
    };
    let outcome = match waiter {
        Waiter::Call => settler.await_receipt(payment, tx_hash).await,
        Waiter::Background => {
            settler.await_receipt_every(payment, tx_hash, gw.config.settlement.deferred_receipt_poll_interval).await
        }
    };
    match outcome {
        Ok(SettleOutcome::Settled(s)) => {
            record_settled(gw, id, &s).await.map_err(SettleError::Ledger)?;
            Ok(SettleResult::Settled(s))
        }
        Ok(SettleOutcome::Pending { tx_hash }) => Ok(SettleResult::Pending(tx_hash)),
        Err(e) => {
            // Our transaction reverted. If the authorization is now used, an earlier
            // transaction of ours (or a third party's) moved the money: leave the entry
            // `settling` for the recovery sweep, which checks every recorded hash. Otherwise
            // no money moved and the failure is final.
            let used = gw
                .verifier
                .authorization_used(payment.chain_id, payment.asset, payment.payer(), payment.authorization.nonce)
                .await;
            if let Ok(false) = used {
                let now = gw.clock.now_unix_s();
                let t = Transition::SettleFailed { reason: e.reason_code().to_owned() };
                gw.ledger.transition_from(id, EntryState::Settling, t, "settlement_reverted", None, now).await.ok();
            }
            Err(SettleError::Verify(e))
        }
    }
}

/// Claims an entry for a settlement transaction: `expected → settling(tx)`, conditional on
/// the entry still being in `expected`.
struct LedgerClaim<'a> {
    gw: &'a Gateway,
    id: &'a EntryId,
    expected: EntryState,
    cause: &'a str,
    error: Option<MeteringError>,
}

#[async_trait::async_trait]
impl Claim for LedgerClaim<'_> {
    async fn claim(&mut self, tx_hash: B256) -> bool {
        let now = self.gw.clock.now_unix_s();
        let t = Transition::Settling { tx_hash };
        match self.gw.ledger.transition_from(self.id, self.expected, t, self.cause, None, now).await {
            Ok(true) => {
                self.expected = EntryState::Settling;
                true
            }
            Ok(false) => false,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }
}

async fn record_settled(gw: &Gateway, id: &EntryId, s: &Settled) -> Result<bool, MeteringError> {
    let t = Transition::Settled {
        tx_hash: s.tx_hash,
        block_number: s.block_number,
        block_hash: s.block_hash,
        log_index: s.log_index,
    };
    gw.ledger.transition_from(id, EntryState::Settling, t, "receipt", None, gw.clock.now_unix_s()).await
}

/// A relayer lease held for one send, with this process's turn on it.
struct RelayerHold<'a> {
    name: String,
    /// The lease is re-entrant for its holder (the process): the process's settlements take
    /// turns holding it, so that one releasing it cannot leave another sending unleased.
    _turn: tokio::sync::MutexGuard<'a, ()>,
}

/// With a shared database, only one process at a time may send from a relayer key; the
/// lease is held for the send only (the nonce is refreshed from the node when it moved).
/// With SQLite there is a single process and no lease.
async fn relayer_lease<'a>(
    gw: &'a Gateway,
    chain_id: u64,
    relayer: alloy_primitives::Address,
) -> Result<Option<RelayerHold<'a>>, SettleError> {
    if gw.ledger.engine() != tollgate_metering::Engine::Postgres {
        return Ok(None);
    }
    let turn = gw.relayer_turn.lock().await;
    let name = format!("relayer:{chain_id}:{relayer:#x}");
    let deadline = tokio::time::Instant::now() + gw.config.settlement.relayer_lease_wait;
    loop {
        let now = gw.clock.now_unix_s();
        let ttl_s = gw.config.settlement.relayer_lease_ttl_s;
        if gw.ledger.try_lease(&name, &gw.instance, ttl_s, now).await.map_err(SettleError::Ledger)? {
            return Ok(Some(RelayerHold { name, _turn: turn }));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SettleError::RelayerBusy);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The payment stored with an entry.
pub fn stored_payment(entry: &Entry) -> Option<VerifiedPayment> {
    serde_json::from_str(&entry.payment).ok()
}

/// Drains the deferred queue, settling up to `settlement.deferred_concurrency` entries at
/// once, each with retries and backoff; also picks up the durable backlog (entries queued
/// while the channel was full, or before a restart). Sends are serialised on the relayer's
/// nonce; what overlaps is the wait for receipts, so a chain with blocks every few seconds
/// still settles many entries per block instead of one.
pub async fn deferred_worker(gw: Arc<Gateway>, mut rx: tokio::sync::mpsc::Receiver<EntryId>) {
    let sweep = gw.config.settlement.recovery_interval;
    let slots = Arc::new(tokio::sync::Semaphore::new(gw.config.settlement.deferred_concurrency));
    // Entries being settled by a task of this worker: the backlog sweep must not start a
    // second attempt beside the first (it would lose the ledger claim, but only after an
    // estimate and a signature).
    let in_flight: Arc<std::sync::Mutex<std::collections::HashSet<EntryId>>> = Arc::default();
    loop {
        let next = tokio::time::timeout(sweep, rx.recv()).await;
        let ids: Vec<EntryId> = match next {
            Ok(Some(id)) => vec![id],
            Ok(None) => return,
            Err(_) => match gw.ledger.deferred_backlog(64).await {
                Ok(entries) => entries.into_iter().map(|e| e.id).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "deferred backlog unavailable");
                    Vec::new()
                }
            },
        };
        for id in ids {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            if !in_flight.lock().is_ok_and(|mut set| set.insert(id.clone())) {
                continue;
            }
            let (gw, in_flight) = (gw.clone(), in_flight.clone());
            tokio::spawn(async move {
                settle_deferred(&gw, &id).await;
                if let Ok(mut set) = in_flight.lock() {
                    set.remove(&id);
                }
                drop(slot);
            });
        }
    }
}

async fn settle_deferred(gw: &Gateway, id: &EntryId) {
    let attempts_max = gw.config.settlement.deferred_attempts_max;
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=attempts_max {
        let entry = match gw.ledger.entry(id).await {
            Ok(Some(e)) if e.state == EntryState::Forwarded => e,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(%id, error = %e, "deferred: ledger unavailable");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let Some(payment) = stored_payment(&entry) else {
            fail(gw, &entry, EntryState::Forwarded, "stored_payment_unreadable").await;
            return;
        };
        match settle_entry(gw, id, EntryState::Forwarded, &payment, "deferred_settlement", Waiter::Background).await {
            Ok(_) => return,
            Err(e) if e.is_transient() && attempt < attempts_max => {
                tracing::warn!(%id, attempt, error = %e, "deferred settlement will be retried");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(SettleError::LostRace) => return,
            Err(e) => {
                let reason = match &e {
                    SettleError::Verify(v) => v.reason_code(),
                    _ => "settlement_unavailable",
                };
                fail(gw, &entry, EntryState::Forwarded, reason).await;
                return;
            }
        }
    }
}

async fn fail(gw: &Gateway, entry: &Entry, from: EntryState, reason: &str) {
    let now = gw.clock.now_unix_s();
    // The service was delivered but no money moved: finance sees it as a failed settlement.
    let t = Transition::SettleFailed { reason: reason.to_owned() };
    if let Err(e) = gw.ledger.transition_from(&entry.id, from, t, reason, None, now).await {
        tracing::error!(id = %entry.id, error = %e, "could not record a settlement failure");
    }
}

/// Runs the recovery sweep now and then every `recovery_interval` until the process ends.
pub async fn recovery_loop(gw: Arc<Gateway>) {
    loop {
        if let Err(e) = recover_once(&gw).await {
            tracing::warn!(error = %e, "recovery sweep failed; will retry");
        }
        tokio::time::sleep(gw.config.settlement.recovery_interval).await;
    }
}

/// One sweep: every entry left unfinished for longer than the grace period (so not in
/// flight in a live process) is driven towards a terminal state.
pub async fn recover_once(gw: &Gateway) -> Result<usize, MeteringError> {
    let now = gw.clock.now_unix_s();
    let cutoff = now.saturating_sub(gw.config.settlement.recovery_grace_s);
    let stuck = gw.ledger.unfinished(cutoff, 200).await?;
    let count = stuck.len();
    for entry in stuck {
        recover_entry(gw, &entry).await;
    }
    backfill_audit(gw, cutoff).await?;
    Ok(count)
}

/// How far back the sweep looks for accepted calls that lost their audit record.
const AUDIT_BACKFILL_WINDOW_S: u64 = 7 * 86_400;

/// Accepted calls whose audit record was still queued when a process died have a ledger entry
/// but no record: append one (reason `recovered_after_restart`, from the entry). Only entries
/// that ended more than the recovery grace period ago (a live process queues its record when
/// the call ends), reserved since the audit trail began; at most one sweep a minute across
/// replicas (a lease, held until it expires).
pub async fn backfill_audit(gw: &Gateway, before_unix_s: u64) -> Result<usize, MeteringError> {
    const LEASE: &str = "audit_backfill";
    // The holder is unique per sweep, so two sweeps of one process exclude each other too.
    let holder = format!("{}-{}", gw.instance, hex::encode(rand::random::<[u8; 4]>()));
    if !gw.ledger.try_lease(LEASE, &holder, 60, gw.clock.now_unix_s()).await? {
        return Ok(0);
    }
    let since = before_unix_s.saturating_sub(AUDIT_BACKFILL_WINDOW_S);
    let missing = gw.ledger.entries_without_audit(since, before_unix_s, 500).await?;
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
            decision: Decision::Accepted,
            reason: "recovered_after_restart".to_owned(),
            credential: e.credential.clone(),
            credential_version: e.credential_version,
            upstream_status: e.upstream_status,
            latency_ms: 0,
            entry_id: Some(e.id.to_string()),
            tx_hash: e.tx_hash.map(|t| format!("{t:#x}")),
        })
        .collect();
    gw.ledger.append_audit(&records).await?;
    tracing::warn!(records = records.len(), "audit records recovered from the ledger");
    Ok(records.len())
}

async fn recover_entry(gw: &Gateway, entry: &Entry) {
    let now = gw.clock.now_unix_s();
    let expired = entry.valid_before_unix_s <= now.saturating_add(gw.config.verification.valid_before_buffer_s);
    match entry.state {
        // Reserved but never marked forwarded: the call cannot be shown to have been delivered,
        // so nothing is charged. On a deferred route the agent may have had its answer (the
        // mark is written beside the response), which the reason says for finance.
        EntryState::Reserved => {
            let reason = if entry.mode == SettlementMode::Deferred {
                "recovery_delivery_unknown"
            } else {
                "recovery_never_forwarded"
            };
            let t = Transition::Voided { reason: reason.to_owned() };
            let _ = gw.ledger.transition_from(&entry.id, EntryState::Reserved, t, "recovery", None, now).await;
        }
        // The upstream answered but settlement never started: settle while the
        // authorization is valid, void once it cannot be settled any more.
        EntryState::Forwarded if entry.mode != SettlementMode::Before => {
            if expired {
                let t = Transition::Voided { reason: "recovery_expired_unsettled".to_owned() };
                let _ = gw.ledger.transition_from(&entry.id, EntryState::Forwarded, t, "recovery", None, now).await;
                return;
            }
            match stored_payment(entry) {
                Some(p) => {
                    if let Err(e) =
                        settle_entry(gw, &entry.id, EntryState::Forwarded, &p, "recovery", Waiter::Background).await
                        && !e.is_transient()
                    {
                        let reason = match &e {
                            SettleError::Verify(v) => v.reason_code(),
                            _ => "settlement_unavailable",
                        };
                        fail(gw, entry, EntryState::Forwarded, reason).await;
                    }
                }
                None => fail(gw, entry, EntryState::Forwarded, "stored_payment_unreadable").await,
            }
        }
        EntryState::Settling => recover_settling(gw, entry, expired).await,
        _ => {}
    }
}

/// Looks now for where a `settling` entry's recorded transactions landed and records the
/// one that did (used after a reorg moved a settled entry back to `settling`). Resending or
/// voiding is left to the recovery sweep, after its grace period.
pub async fn recheck(gw: &Gateway, id: &EntryId) {
    let entry = match gw.ledger.entry(id).await {
        Ok(Some(e)) if e.state == EntryState::Settling => e,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(%id, error = %e, "re-check: ledger unavailable; the recovery sweep will");
            return;
        }
    };
    let Some(payment) = stored_payment(&entry) else { return };
    let Some(settler) = gw.settlers.get(&payment.chain_id) else { return };
    let hashes = match gw.ledger.events(id).await {
        Ok(events) => events.iter().filter_map(|e| e.tx_hash).chain(entry.tx_hash).collect::<Vec<_>>(),
        Err(_) => return,
    };
    for tx_hash in hashes {
        if let Ok(Some(s)) = settler.check_receipt(&payment, tx_hash).await {
            let _ = record_settled(gw, id, &s).await;
            return;
        }
    }
}

/// One or more transactions were recorded for this entry (a replacement may have followed
/// the first): find out what became of them.
async fn recover_settling(gw: &Gateway, entry: &Entry, expired: bool) {
    let now = gw.clock.now_unix_s();
    let Some(payment) = stored_payment(entry) else {
        fail(gw, entry, EntryState::Settling, "stored_payment_unreadable").await;
        return;
    };
    let Some(settler) = gw.settlers.get(&payment.chain_id) else { return };
    let mut hashes: Vec<B256> = match gw.ledger.events(&entry.id).await {
        Ok(events) => events.iter().filter_map(|e| e.tx_hash).collect(),
        Err(e) => {
            tracing::warn!(id = %entry.id, error = %e, "recovery: ledger unavailable");
            return;
        }
    };
    hashes.extend(entry.tx_hash);
    hashes.dedup();
    let mut unmined = 0;
    for tx_hash in &hashes {
        match settler.check_receipt(&payment, *tx_hash).await {
            Ok(Some(s)) => {
                let _ = record_settled(gw, &entry.id, &s).await;
                return;
            }
            Ok(None) => unmined += 1,
            // Reverted, or no matching transfer: this one did not move the money.
            Err(e) if e.fault() != Fault::Chain => {}
            Err(e) => {
                tracing::warn!(id = %entry.id, error = %e, "recovery: chain unavailable");
                return;
            }
        }
    }
    let used = gw
        .verifier
        .authorization_used(payment.chain_id, payment.asset, payment.payer(), payment.authorization.nonce)
        .await;
    match used {
        // One of ours may still land (or just did, after we looked): look again next sweep.
        Ok(true) if unmined > 0 => {}
        // None of our transactions moved it, and none is pending: someone else used the
        // authorization. No money reached the payee through us; finance sees the exception.
        Ok(true) => fail(gw, entry, EntryState::Settling, "authorization_used_elsewhere").await,
        Ok(false) if expired => {
            let t = Transition::Voided { reason: "recovery_tx_never_landed".to_owned() };
            let _ = gw.ledger.transition_from(&entry.id, EntryState::Settling, t, "recovery", None, now).await;
        }
        // Still valid and unused: our transaction was dropped or never broadcast (a crash
        // between the claim and the send). Send again; the token lets at most one land.
        Ok(false) => {
            let _ = settle_entry(gw, &entry.id, EntryState::Settling, &payment, "recovery_resend", Waiter::Background)
                .await;
        }
        Err(e) => tracing::warn!(id = %entry.id, error = %e, "recovery: chain unavailable"),
    }
}
