//! One settlement attempt: claim the entry for a transaction (its hash recorded before the
//! broadcast, under the relayer lease on shared databases), broadcast, wait for the receipt,
//! record it. What the attempt's outcome means for money is [`SettleResult`] / [`SettleError`].
//!
//! Must not: broadcast before the ledger names the transaction, or report "not charged"
//! while a transaction of ours may land.

use std::time::Duration;

use alloy_primitives::B256;
use tollgate_metering::{EntryId, EntryState, MeteringError, Transition};
use tollgate_verifier::{Claim, Fault, GasPlan, SettleOutcome, Settled, VerifiedPayment, VerifyError};

use super::chase::chase;
use super::record::{ClaimDetail, record_settled_or_leave};
use super::service::Settlements;
use crate::config::SettlementWait;

/// How a settlement attempt ended when money may have moved.
#[derive(Debug)]
pub enum SettleResult {
    /// Mined with the expected transfer; the entry is `settled`.
    Settled(Settled),
    /// Mined with the expected transfer, but the ledger could not record it: the entry is
    /// still `settling` with this hash for the recovery sweep to record. The payer has paid.
    SettledUnrecorded(Settled),
    /// A transaction may exist and no receipt came: the broadcast was acknowledged and the
    /// receipt wait ran out, the broadcast's answer was lost, or what happened to it cannot be
    /// established now. The entry stays `settling` with this hash. The payer is told
    /// `settlement_pending` with the hash, never "not charged".
    Pending(B256),
    /// Mined with the expected transfer (recorded `settled`, or left `settling` for the sweep
    /// when the ledger could not), but the route waits for more confirmations
    /// (`settlement_wait = "confirmations:N"`) than the block had when the receipt wait ran
    /// out. The payer has paid; the agent is told `settlement_pending` with the hash.
    Shallow(Settled),
}

/// Why a settlement attempt did not complete. Every variant means that no transaction of
/// ours for this entry can move the money now: nothing was broadcast, or what was broadcast
/// reverted with the authorization still unused. Which entries a later sweep may broadcast
/// again is decided by mode (see [`recover_entry`]).
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// Refused before anything was signed or broadcast: the token's simulation (the payer's
    /// fault), or the chain could not be reached. The entry is still in its `from` state.
    #[error("{0}")]
    Verify(VerifyError),
    /// The ledger failed while claiming; nothing was broadcast. The claim may have committed
    /// (the entry `settling` with a transaction that exists nowhere) or not.
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
    /// The claim was recorded, then the node answered and refused the broadcast (relayer out
    /// of gas, rate limit, connection refused): the entry is `settling` with a transaction no
    /// node has.
    #[error("settlement transaction {tx_hash} refused by the node: {source}")]
    NotBroadcast {
        /// The transaction recorded by the claim.
        tx_hash: B256,
        /// The node's refusal.
        source: VerifyError,
    },
    /// Mined and reverted while the authorization stayed unused: no money moved. The entry is
    /// `settle_failed` (or still `settling` if that could not be recorded; the sweep then
    /// finds every recorded transaction reverted and records it).
    #[error("settlement reverted: {0}")]
    Reverted(VerifyError),
}

impl SettleError {
    /// Whether trying again later may succeed (and the entry should stay as it is).
    pub fn is_transient(&self) -> bool {
        match self {
            SettleError::Verify(VerifyError::NotYetValid { .. }) => true,
            SettleError::Verify(e) => e.fault() == Fault::Chain,
            SettleError::Ledger(e) => e.is_retryable(),
            SettleError::RelayerBusy | SettleError::LostRace | SettleError::NotBroadcast { .. } => true,
            SettleError::NoRelayer { .. } | SettleError::Reverted(_) => false,
        }
    }

    /// Whether the payer's authorization is at fault (the token would refuse it: balance,
    /// nonce used or cancelled, expired, bad signature), as opposed to the chain, the
    /// relayer or the ledger. A payer fault answers 402; the others 503.
    pub fn payer_fault(&self) -> bool {
        match self {
            // The chain's clock behind `validAfter`: a wait, not the payer's fault.
            SettleError::Verify(VerifyError::NotYetValid { .. }) => false,
            SettleError::Verify(e) | SettleError::Reverted(e) => e.fault() == Fault::Client,
            _ => false,
        }
    }

    /// Whether the agent is told `settlement_failed` (402: the payer's authorization is at
    /// fault, or our transaction reverted) rather than `settlement_unavailable` (503: try
    /// again later). Nothing was charged either way.
    pub fn is_final(&self) -> bool {
        self.payer_fault() || matches!(self, SettleError::Reverted(_))
    }

    /// The stable reason code recorded in the ledger and sent in a failed receipt: the one
    /// mapping from a settlement failure to its code (the payer's fault keeps the verifier's
    /// code; a revert that is not is `settlement_reverted`; anything else is
    /// `settlement_unavailable`).
    pub fn reason_code(&self) -> &'static str {
        match self {
            SettleError::Verify(e) | SettleError::Reverted(e) if self.payer_fault() => e.reason_code(),
            SettleError::Reverted(_) => "settlement_reverted",
            _ => "settlement_unavailable",
        }
    }
}

/// Who waits for a settlement's receipt, which sets how often the node is asked (and whether
/// the verifier's simulation of the transfer is fresh enough to skip the gas estimate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// A `before` call settling right after its verification, nothing in between:
    /// `settlement.receipt_poll_interval_ms`, and no `eth_estimateGas` once the token's gas
    /// is known.
    CallJustVerified,
    /// A paid call in progress after its upstream answered (`after`):
    /// `settlement.receipt_poll_interval_ms`. The payer may have cancelled the authorization
    /// or moved its balance while the upstream worked, so the transfer is estimated (which
    /// simulates it) again: a payer's refusal is then a 402 before anything is sent, never a
    /// mined revert.
    Call,
    /// Nobody (the deferred worker, recovery):
    /// `settlement.deferred_receipt_poll_interval_ms`.
    Background,
}

/// How long a settlement refused as "not yet valid" waits before its one retry.
const NOT_YET_VALID_WAIT: Duration = Duration::from_millis(1_100);

/// One claim-and-broadcast under the relayer lease (shared databases).
async fn submit_once(
    svc: &Settlements,
    settler: &tollgate_verifier::Settler,
    payment: &VerifiedPayment,
    claim: &mut LedgerClaim<'_>,
    waiter: Waiter,
) -> Result<Result<Option<tollgate_verifier::Submitted>, VerifyError>, SettleError> {
    // Only a `before` call settles the very payment its verification simulated moments ago;
    // after an upstream call, in the deferred worker and in the sweep the payer may have
    // cancelled or spent meanwhile, and the estimate simulates the transfer again.
    let gas = match waiter {
        Waiter::CallJustVerified => GasPlan::Simulated,
        Waiter::Call | Waiter::Background => GasPlan::Estimate,
    };
    let hold = relayer_lease(svc, payment.chain_id, settler.address()).await?;
    let sent = settler.submit_claimed(payment, claim, gas).await;
    release_relayer_lease(svc, hold, claim.id).await;
    Ok(sent)
}

/// Gives back a lease taken by [`relayer_lease`]; `what` names the send in the log (the
/// entry, or the nonce being closed).
async fn release_relayer_lease(
    svc: &Settlements,
    hold: Option<RelayerHold<'_>>,
    what: &(dyn std::fmt::Display + Sync),
) {
    if let Some(hold) = hold
        && let Err(e) = svc.ledger.leases().release(&hold.name, &svc.instance).await
    {
        // Safe to drop: the lease expires by itself after `relayer_lease_ttl_s`; until then
        // other replicas wait for it (and this process re-enters it).
        tracing::warn!(send = %what, error = %e, "relayer lease not released; it will expire");
        svc.counters.leases_left_to_expire.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Closes the relayer nonce `nonce` (see [`tollgate_verifier::Settler::close_nonce`]) under
/// the relayer lease, like a send.
pub(super) async fn close_nonce_leased(
    svc: &Settlements,
    settler: &tollgate_verifier::Settler,
    chain_id: u64,
    nonce: u64,
) -> Result<tollgate_verifier::NonceClosure, SettleError> {
    let hold = relayer_lease(svc, chain_id, settler.address()).await?;
    let closed = settler.close_nonce(nonce).await.map_err(SettleError::Verify);
    release_relayer_lease(svc, hold, &format!("closing relayer nonce {nonce}")).await;
    closed
}

/// Settles the entry `id`, currently in state `from`, for `payment`, polling for the receipt
/// as `waiter` needs. The hash is recorded before broadcast. `Ok` means money may have moved
/// (settled, or pending with a hash); `Err` means it cannot have, through us (see
/// [`SettleError`]).
pub async fn settle_entry(
    svc: &Settlements,
    id: &EntryId,
    from: EntryState,
    payment: &VerifiedPayment,
    cause: &str,
    waiter: Waiter,
) -> Result<SettleResult, SettleError> {
    settle_entry_until(svc, id, from, payment, cause, waiter, SettlementWait::Included).await
}

/// [`settle_entry`], returning when the route's `settlement_wait` says (an `after` call):
/// `Submitted` once the node acknowledged the broadcast ([`SettleResult::Pending`]; the
/// chaser follows the transaction to its receipt and records it), `Included` at the receipt,
/// `Confirmations(n)` once the receipt's block has `n` confirmations, its own included, all
/// within the receipt timeout from the broadcast ([`SettleResult::Shallow`] beyond it).
pub async fn settle_entry_until(
    svc: &Settlements,
    id: &EntryId,
    from: EntryState,
    payment: &VerifiedPayment,
    cause: &str,
    waiter: Waiter,
    wait: SettlementWait,
) -> Result<SettleResult, SettleError> {
    let settler = svc.settlers.get(&payment.chain_id).ok_or(SettleError::NoRelayer { chain_id: payment.chain_id })?;
    let mut claim = LedgerClaim { svc, id, expected: from, cause, error: None, claimed: None };
    let mut sent = submit_once(svc, settler, payment, &mut claim, waiter).await?;
    // The chain's clock may not have passed `validAfter` yet (the token wants `now >
    // validAfter` by block time, and blocks lag the wall clock): not a refusal, a wait.
    if let Err(VerifyError::NotYetValid { .. }) = &sent
        && claim.claimed.is_none()
    {
        tokio::time::sleep(NOT_YET_VALID_WAIT).await;
        sent = submit_once(svc, settler, payment, &mut claim, waiter).await?;
    }
    let submitted = match sent {
        Ok(Some(s)) => s,
        Ok(None) => return Err(claim.error.map(SettleError::Ledger).unwrap_or(SettleError::LostRace)),
        Err(e) => {
            return Err(match claim.claimed {
                // The node refused a transaction the ledger already names: it exists nowhere.
                Some(tx_hash) => SettleError::NotBroadcast { tx_hash, source: e },
                None => SettleError::Verify(e),
            });
        }
    };
    let tx_hash = submitted.tx_hash;
    let broadcast_at = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + svc.config.settlement.receipt_timeout;
    let outcome = match (waiter, submitted.acknowledged) {
        // The node has the transaction and the route answers now: the agent hears
        // `settlement_pending` with the hash, and the chaser (which re-sends nothing for an
        // acknowledged broadcast) waits for the receipt and records it; the sweep records it
        // when the chaser's queue is full or its wait runs out.
        (Waiter::Call, true) if wait == SettlementWait::Submitted => {
            chase(svc, settler, id, payment, submitted).await;
            return Ok(SettleResult::Pending(tx_hash));
        }
        // The broadcast's answer was lost: one look, then the payer hears "pending" now
        // rather than after a whole receipt wait for a transaction that may not exist, and
        // the chaser re-broadcasts the same bytes until they land or cannot any more.
        (_, false) => match settler.check_receipt(payment, tx_hash).await {
            Ok(Some(s)) => Ok(SettleOutcome::Settled(s)),
            _ => {
                chase(svc, settler, id, payment, submitted).await;
                Ok(SettleOutcome::Pending { tx_hash })
            }
        },
        (Waiter::Call | Waiter::CallJustVerified, true) => settler.await_receipt(payment, tx_hash).await,
        (Waiter::Background, true) => {
            settler.await_receipt_every(payment, tx_hash, svc.config.settlement.deferred_receipt_poll_interval).await
        }
    };
    match outcome {
        Ok(SettleOutcome::Settled(s)) => {
            svc.metrics.settlement_receipt(&payment.network(), broadcast_at.elapsed());
            // Recorded as soon as mined: the ledger says where the money is whatever the
            // route waits for before answering.
            let recorded = record_settled_or_leave(svc, id, &s).await;
            if let SettlementWait::Confirmations(n) = wait
                && !confirmed(settler, s.block_number, n, deadline, svc.config.settlement.receipt_poll_interval).await
            {
                return Ok(SettleResult::Shallow(s));
            }
            if recorded { Ok(SettleResult::Settled(s)) } else { Ok(SettleResult::SettledUnrecorded(s)) }
        }
        Ok(SettleOutcome::Pending { tx_hash }) => Ok(SettleResult::Pending(tx_hash)),
        Err(e) => {
            // Our transaction reverted. If the authorization is now used, an earlier
            // transaction of ours (or a third party's) moved the money: leave the entry
            // `settling` for the recovery sweep, which checks every recorded hash, and say
            // "pending". Only a definite "unused" makes the failure final, read as of the block
            // our transaction reverted in: a node behind that block (a lagging replica) then
            // answers an error, never "unused" from before an earlier transaction of ours moved
            // the money.
            let (chain_id, asset, payer, nonce) =
                (payment.chain_id, payment.asset, payment.payer(), payment.authorization.nonce);
            let used = match &e {
                VerifyError::SettlementReverted { block_number, .. } => {
                    svc.verifier.authorization_used_at(chain_id, asset, payer, nonce, *block_number).await
                }
                _ => svc.verifier.authorization_used(chain_id, asset, payer, nonce).await,
            };
            if !matches!(used, Ok(false)) {
                return Ok(SettleResult::Pending(tx_hash));
            }
            let now = svc.clock.now_unix_s();
            let reverted = SettleError::Reverted(e);
            let t = Transition::SettleFailed { reason: reverted.reason_code().to_owned() };
            if let Err(db) = svc
                .ledger
                .entries()
                .transition_from(id, EntryState::Settling, t, "settlement_reverted", None, now)
                .await
            {
                // Safe to leave: the sweep finds every recorded transaction reverted and the
                // authorization unused, and records the failure; nothing re-broadcasts it.
                tracing::error!(%id, error = %db, "could not record a reverted settlement; recovery will");
                svc.counters.left_to_recovery();
            }
            Err(reverted)
        }
    }
}

/// Polls the head until `block` has `n` confirmations (its own included) or `deadline`
/// passes. A node that does not answer is asked again until then: the wait is bounded, and
/// what it decides is only what the agent is told, never the ledger.
async fn confirmed(
    settler: &tollgate_verifier::Settler,
    block: u64,
    n: u64,
    deadline: tokio::time::Instant,
    poll: Duration,
) -> bool {
    let wait = poll.max(CONFIRMATION_POLL_MIN);
    loop {
        if let Ok(head) = settler.chain().block_number().await
            && crate::finality::confirmations(block, head) >= n
        {
            return true;
        }
        if tokio::time::Instant::now() + wait > deadline {
            return false;
        }
        tokio::time::sleep(wait).await;
    }
}

/// The shortest wait between two head reads while a call waits for confirmations.
const CONFIRMATION_POLL_MIN: Duration = Duration::from_millis(20);

/// Claims an entry for a settlement transaction: `expected → settling(tx)`, conditional on
/// the entry still being in `expected`.
struct LedgerClaim<'a> {
    svc: &'a Settlements,
    id: &'a EntryId,
    expected: EntryState,
    cause: &'a str,
    error: Option<MeteringError>,
    /// The last transaction the ledger recorded through this claim.
    claimed: Option<B256>,
}

#[async_trait::async_trait]
impl Claim for LedgerClaim<'_> {
    async fn claim(&mut self, tx_hash: B256, relayer: alloy_primitives::Address, nonce: u64) -> bool {
        let now = self.svc.clock.now_unix_s();
        let t = Transition::Settling { tx_hash };
        let detail = ClaimDetail { relayer, nonce }.to_json();
        match self.svc.ledger.entries().transition_from(self.id, self.expected, t, self.cause, Some(&detail), now).await
        {
            Ok(true) => {
                self.expected = EntryState::Settling;
                self.claimed = Some(tx_hash);
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
    svc: &'a Settlements,
    chain_id: u64,
    relayer: alloy_primitives::Address,
) -> Result<Option<RelayerHold<'a>>, SettleError> {
    if !svc.ledger.leases().needed() {
        return Ok(None);
    }
    let turn = svc.relayer_turn.lock().await;
    let name = format!("relayer:{chain_id}:{relayer:#x}");
    let deadline = tokio::time::Instant::now() + svc.config.settlement.relayer_lease_wait;
    loop {
        let now = svc.clock.now_unix_s();
        let ttl_s = svc.config.settlement.relayer_lease_ttl_s;
        if svc.ledger.leases().try_acquire(&name, &svc.instance, ttl_s, now).await.map_err(SettleError::Ledger)? {
            return Ok(Some(RelayerHold { name, _turn: turn }));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SettleError::RelayerBusy);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
