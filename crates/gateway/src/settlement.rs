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
use crate::stored_payment::{StoredPayment, StoredPaymentError};

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

/// Who waits for a settlement's receipt, which sets how often the node is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// A paid call in progress (`after`, `before`): `settlement.receipt_poll_interval_ms`.
    Call,
    /// Nobody (the deferred worker, recovery):
    /// `settlement.deferred_receipt_poll_interval_ms`.
    Background,
}

/// How long a settlement refused as "not yet valid" waits before its one retry.
const NOT_YET_VALID_WAIT: Duration = Duration::from_millis(1_100);

/// One claim-and-broadcast under the relayer lease (shared databases).
async fn submit_once(
    gw: &Gateway,
    settler: &tollgate_verifier::Settler,
    payment: &VerifiedPayment,
    claim: &mut LedgerClaim<'_>,
) -> Result<Result<Option<tollgate_verifier::Submitted>, VerifyError>, SettleError> {
    let hold = relayer_lease(gw, payment.chain_id, settler.address()).await?;
    let sent = settler.submit_claimed(payment, claim).await;
    if let Some(hold) = hold
        && let Err(e) = gw.ledger.release_lease(&hold.name, &gw.instance).await
    {
        // Safe to drop: the lease expires by itself after `relayer_lease_ttl_s`; until then
        // other replicas wait for it (and this process re-enters it).
        tracing::warn!(id = %claim.id, error = %e, "relayer lease not released; it will expire");
        gw.counters.leases_left_to_expire.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(sent)
}

/// Attempts at recording a mined settlement before leaving it to the recovery sweep.
const RECORD_ATTEMPTS: u32 = 3;

/// Settles the entry `id`, currently in state `from`, for `payment`, polling for the receipt
/// as `waiter` needs. The hash is recorded before broadcast. `Ok` means money may have moved
/// (settled, or pending with a hash); `Err` means it cannot have, through us (see
/// [`SettleError`]).
pub async fn settle_entry(
    gw: &Gateway,
    id: &EntryId,
    from: EntryState,
    payment: &VerifiedPayment,
    cause: &str,
    waiter: Waiter,
) -> Result<SettleResult, SettleError> {
    let settler = gw.settlers.get(&payment.chain_id).ok_or(SettleError::NoRelayer { chain_id: payment.chain_id })?;
    let mut claim = LedgerClaim { gw, id, expected: from, cause, error: None, claimed: None };
    let mut sent = submit_once(gw, settler, payment, &mut claim).await?;
    // The chain's clock may not have passed `validAfter` yet (the token wants `now >
    // validAfter` by block time, and blocks lag the wall clock): not a refusal, a wait.
    if let Err(VerifyError::NotYetValid { .. }) = &sent
        && claim.claimed.is_none()
    {
        tokio::time::sleep(NOT_YET_VALID_WAIT).await;
        sent = submit_once(gw, settler, payment, &mut claim).await?;
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
    let outcome = match (waiter, submitted.acknowledged) {
        // The broadcast's answer was lost: one look, then the payer hears "pending" now
        // rather than after a whole receipt wait for a transaction that may not exist, and
        // the chaser re-broadcasts the same bytes until they land or cannot any more.
        (_, false) => match settler.check_receipt(payment, tx_hash).await {
            Ok(Some(s)) => Ok(SettleOutcome::Settled(s)),
            _ => {
                chase(gw, settler, id, payment, submitted).await;
                Ok(SettleOutcome::Pending { tx_hash })
            }
        },
        (Waiter::Call, true) => settler.await_receipt(payment, tx_hash).await,
        (Waiter::Background, true) => {
            settler.await_receipt_every(payment, tx_hash, gw.config.settlement.deferred_receipt_poll_interval).await
        }
    };
    match outcome {
        Ok(SettleOutcome::Settled(s)) => {
            gw.metrics.settlement_receipt(&payment.network(), broadcast_at.elapsed());
            if record_settled_or_leave(gw, id, &s).await {
                Ok(SettleResult::Settled(s))
            } else {
                Ok(SettleResult::SettledUnrecorded(s))
            }
        }
        Ok(SettleOutcome::Pending { tx_hash }) => Ok(SettleResult::Pending(tx_hash)),
        Err(e) => {
            // Our transaction reverted. If the authorization is now used, an earlier
            // transaction of ours (or a third party's) moved the money: leave the entry
            // `settling` for the recovery sweep, which checks every recorded hash, and say
            // "pending". Only a definite "unused" makes the failure final.
            let used = gw
                .verifier
                .authorization_used(payment.chain_id, payment.asset, payment.payer(), payment.authorization.nonce)
                .await;
            if !matches!(used, Ok(false)) {
                return Ok(SettleResult::Pending(tx_hash));
            }
            let now = gw.clock.now_unix_s();
            let reverted = SettleError::Reverted(e);
            let t = Transition::SettleFailed { reason: reverted.reason_code().to_owned() };
            if let Err(db) =
                gw.ledger.transition_from(id, EntryState::Settling, t, "settlement_reverted", None, now).await
            {
                // Safe to leave: the sweep finds every recorded transaction reverted and the
                // authorization unused, and records the failure; nothing re-broadcasts it.
                tracing::error!(%id, error = %db, "could not record a reverted settlement; recovery will");
                gw.counters.left_to_recovery();
            }
            Err(reverted)
        }
    }
}

/// A settlement whose broadcast is in doubt, handed to the chaser.
#[derive(Debug)]
pub struct Chase {
    /// The entry (`settling` with this transaction).
    pub id: EntryId,
    /// Its payment.
    pub payment: VerifiedPayment,
    /// The signed transaction.
    pub submitted: tollgate_verifier::Submitted,
}

async fn chase(
    gw: &Gateway,
    settler: &tollgate_verifier::Settler,
    id: &EntryId,
    payment: &VerifiedPayment,
    submitted: tollgate_verifier::Submitted,
) {
    let c = Chase { id: id.clone(), payment: payment.clone(), submitted };
    if let Err(e) = gw.chase_tx.try_send(c) {
        // Safe to drop: the entry is `settling` with the hash; the sweep follows it (and voids
        // it once it can no longer land), it just is not re-broadcast. The relayer asks the
        // node for its nonce again, so a gap left by a transaction no node has is refilled
        // by the next send instead of stalling every later one.
        let id = match e {
            tokio::sync::mpsc::error::TrySendError::Full(c) | tokio::sync::mpsc::error::TrySendError::Closed(c) => c.id,
        };
        tracing::warn!(%id, "chaser queue full; an in-doubt settlement is left to the sweep");
        gw.counters.chases_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        settler.forget_nonce().await;
    }
}

/// In-doubt settlements chased at once; more wait in the chaser's queue.
const CHASES_AT_ONCE: usize = 64;

/// Longest a chaser follows one in-doubt settlement: the receipt timeout, at least this.
const CHASE_MIN: Duration = Duration::from_secs(10);

/// Follows settlements whose broadcast answer was lost: re-broadcasts the very same signed
/// bytes (same hash, same nonce, so at most one can land) until the node knows them, then
/// waits for the receipt and records it. The agent was told `settlement_pending` with this
/// hash and got its response: this is what makes that hash become the payment. It gives up
/// when the nonce is taken by another transaction (the sweep voids the entry) or after the
/// receipt timeout, and then makes the relayer ask the node for its nonce again, so a gap
/// left by a transaction no node has is refilled.
pub async fn chase_worker(gw: Arc<Gateway>, mut rx: tokio::sync::mpsc::Receiver<Chase>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CHASES_AT_ONCE));
    while let Some(c) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let gw = gw.clone();
        tokio::spawn(async move {
            chase_one(gw, c).await;
            drop(slot);
        });
    }
}

async fn chase_one(gw: Arc<Gateway>, c: Chase) {
    let Some(settler) = gw.settlers.get(&c.payment.chain_id).cloned() else { return };
    let tx_hash = c.submitted.tx_hash;
    let deadline = tokio::time::Instant::now() + gw.config.settlement.receipt_timeout.max(CHASE_MIN);
    let mut wait = gw.config.settlement.receipt_poll_interval.max(Duration::from_millis(20));
    let mut known = false;
    loop {
        match settler.check_receipt(&c.payment, tx_hash).await {
            Ok(Some(s)) => {
                // Not recorded: logged and counted inside; the sweep finds the same receipt.
                if record_settled_or_leave(&gw, &c.id, &s).await {
                    tracing::info!(id = %c.id, %tx_hash, "in-doubt settlement landed");
                }
                return;
            }
            Ok(None) => {}
            Err(e) if e.fault() == Fault::Chain => {}
            // Reverted: the sweep records what became of it.
            Err(e) => {
                tracing::warn!(id = %c.id, %tx_hash, error = %e, "in-doubt settlement reverted");
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(id = %c.id, %tx_hash, "in-doubt settlement not confirmed in time; left to the sweep");
            settler.forget_nonce().await;
            return;
        }
        if !known {
            match settler.rebroadcast(&c.submitted.raw).await {
                tollgate_verifier::Rebroadcast::Known => known = true,
                // Mined meanwhile (the receipt is seen next round) or replaced: one more look.
                tollgate_verifier::Rebroadcast::NonceTaken => {
                    if let Ok(Some(s)) = settler.check_receipt(&c.payment, tx_hash).await
                        && record_settled_or_leave(&gw, &c.id, &s).await
                    {
                        tracing::info!(id = %c.id, %tx_hash, "in-doubt settlement landed");
                    }
                    // Not recorded: logged and counted inside; the sweep finds the same receipt.
                    return;
                }
                tollgate_verifier::Rebroadcast::Failed(e) => {
                    tracing::debug!(id = %c.id, %tx_hash, error = %e, "re-broadcast failed; will retry");
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// Records a mined settlement, retrying briefly; if the ledger stays unavailable the entry is
/// left `settling` with the hash, and the recovery sweep finds the receipt and records it.
/// The payer has paid either way, which is what the caller tells them.
async fn record_settled_or_leave(gw: &Gateway, id: &EntryId, s: &Settled) -> bool {
    let mut backoff = Duration::from_millis(20);
    for attempt in 1..=RECORD_ATTEMPTS {
        match record_settled(gw, id, s).await {
            Ok(_) => return true,
            Err(e) if attempt < RECORD_ATTEMPTS && e.is_retryable() => {
                tokio::time::sleep(backoff).await;
                backoff *= 4;
            }
            Err(e) => {
                tracing::error!(%id, tx = %s.tx_hash, error = %e,
                    "settlement mined but not recorded; the recovery sweep will record it");
                gw.counters.left_to_recovery();
                return false;
            }
        }
    }
    false
}

/// The cause of the note an `after` call leaves on its `settling` entry when it answers the
/// agent before the settlement is recorded (pending, or mined but not recorded).
pub const ANSWERED: &str = "answered";

/// The prefix of the note a `before` call leaves on its `settling` entry when its upstream
/// failed while the settlement was pending (followed by the cause): the sweep records the
/// refund owed once the settlement lands.
pub const REFUND_DUE: &str = "refund_due:";

/// Notes on a `settling` entry that its agent is being answered (the response delivered),
/// before the answer goes out. The recovery sweep reads it: an `after` entry whose
/// transaction landed without this note belonged to a process that died before answering,
/// and is owed back. If the note cannot be written the sweep errs on the agent's side.
pub async fn note_answered(gw: &Gateway, id: &EntryId) {
    let mut backoff = Duration::from_millis(20);
    for attempt in 1..=RECORD_ATTEMPTS {
        match gw.ledger.note_settling(id, ANSWERED, gw.clock.now_unix_s()).await {
            Ok(_) => return,
            Err(e) if attempt < RECORD_ATTEMPTS && e.is_retryable() => {
                tokio::time::sleep(backoff).await;
                backoff *= 4;
            }
            // Safe to leave: without the note the sweep records a refund owed if the
            // transaction lands, so the agent is never charged for a response it may not
            // have had (the provider bears it).
            Err(e) => {
                tracing::warn!(%id, error = %e, "could not note the answer; a landed settlement will be owed back");
                gw.counters.left_to_recovery();
                return;
            }
        }
    }
}

/// What a claim records beside its transaction hash (the event's detail): who sends it with
/// which account nonce, so the sweep can tell when an unmined transaction no longer can land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ClaimDetail {
    relayer: alloy_primitives::Address,
    nonce: u64,
}

impl ClaimDetail {
    fn to_json(self) -> String {
        serde_json::json!({ "relayer": self.relayer, "nonce": self.nonce }).to_string()
    }

    fn from_event(detail: Option<&str>) -> Option<Self> {
        serde_json::from_str(detail?).ok()
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
    /// The last transaction the ledger recorded through this claim.
    claimed: Option<B256>,
}

#[async_trait::async_trait]
impl Claim for LedgerClaim<'_> {
    async fn claim(&mut self, tx_hash: B256, relayer: alloy_primitives::Address, nonce: u64) -> bool {
        let now = self.gw.clock.now_unix_s();
        let t = Transition::Settling { tx_hash };
        let detail = ClaimDetail { relayer, nonce }.to_json();
        match self.gw.ledger.transition_from(self.id, self.expected, t, self.cause, Some(&detail), now).await {
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

/// The payment stored with an entry (`crate::stored_payment`, any known version).
pub fn stored_payment(entry: &Entry) -> Result<VerifiedPayment, StoredPaymentError> {
    StoredPayment::parse(&entry.payment)
}

/// An entry whose stored payment cannot be used: an unreadable one can never be settled and
/// ends `settle_failed`; one written by a newer gateway is left for a process that reads it
/// (logged), never failed.
async fn unusable_payment(gw: &Gateway, entry: &Entry, from: EntryState, e: StoredPaymentError) {
    match e {
        StoredPaymentError::Unreadable(_) => {
            tracing::error!(id = %entry.id, error = %e, "stored payment unreadable; the entry cannot be settled");
            fail(gw, entry, from, "stored_payment_unreadable").await;
        }
        StoredPaymentError::NewerVersion { .. } => {
            tracing::warn!(id = %entry.id, error = %e, "left for a gateway that knows this stored payment version");
        }
    }
}

/// A deferred entry handed to the worker.
#[derive(Debug)]
pub struct Queued {
    /// The entry (`forwarded`).
    pub id: EntryId,
    /// Its authorization's `validBefore`: the worker settles the earliest-expiring first.
    pub valid_before_unix_s: u64,
    /// Its place in the admission backlog, released when the settlement finishes (absent for
    /// entries picked up from the ledger by the backlog sweep).
    pub slot: Option<crate::admission::Slot>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Reversed, so that a `BinaryHeap` pops the earliest `validBefore` first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.valid_before_unix_s.cmp(&self.valid_before_unix_s).then_with(|| other.id.as_str().cmp(self.id.as_str()))
    }
}

/// The worker's waiting entries, earliest expiry first, each id once.
#[derive(Default)]
struct Waiting {
    heap: std::collections::BinaryHeap<Queued>,
    ids: std::collections::HashSet<EntryId>,
}

impl Waiting {
    fn push(&mut self, q: Queued) {
        if self.ids.insert(q.id.clone()) {
            self.heap.push(q);
        }
    }

    fn pop(&mut self) -> Option<Queued> {
        let q = self.heap.pop()?;
        self.ids.remove(&q.id);
        Some(q)
    }

    fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Drains the deferred queue, settling up to `settlement.deferred_concurrency` entries at
/// once, earliest-expiring first, each with retries and backoff; also picks up the durable
/// backlog (entries queued while the channel was full, or before a restart), in the same
/// order. Sends are serialised on the relayer's nonce; what overlaps is the wait for
/// receipts, so a chain with blocks every few seconds still settles many entries per block.
pub async fn deferred_worker(gw: Arc<Gateway>, mut rx: tokio::sync::mpsc::Receiver<Queued>) {
    let sweep = gw.config.settlement.recovery_interval;
    let slots = Arc::new(tokio::sync::Semaphore::new(gw.config.settlement.deferred_concurrency));
    // Entries being settled by a task of this worker: the backlog sweep must not start a
    // second attempt beside the first (it would lose the ledger claim, but only after an
    // estimate and a signature).
    let in_flight: Arc<std::sync::Mutex<std::collections::HashSet<EntryId>>> = Arc::default();
    let mut waiting = Waiting::default();
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        // The durable backlog is read every `recovery_interval`, busy or not, so entries the
        // queue had no room for compete on expiry with the queued ones.
        if last_sweep.elapsed() >= sweep {
            last_sweep = tokio::time::Instant::now();
            match gw.ledger.deferred_backlog(256).await {
                Ok(entries) => {
                    for e in entries {
                        waiting.push(Queued { id: e.id, valid_before_unix_s: e.valid_before_unix_s, slot: None });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "deferred backlog unavailable"),
            }
        }
        if waiting.is_empty() {
            match tokio::time::timeout(sweep, rx.recv()).await {
                Ok(Some(q)) => waiting.push(q),
                Ok(None) => return,
                Err(_) => {}
            }
            continue;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        // Whatever arrived while waiting for a slot competes on expiry too.
        while let Ok(q) = rx.try_recv() {
            waiting.push(q);
        }
        let Some(next) = waiting.pop() else { continue };
        if !in_flight.lock().is_ok_and(|mut set| set.insert(next.id.clone())) {
            continue;
        }
        let (gw, in_flight) = (gw.clone(), in_flight.clone());
        tokio::spawn(async move {
            if settle_queued(&gw, &next.id).await {
                gw.backlog.record_finished(gw.clock.now_unix_s());
            }
            gw.backlog.unpark(next.id.as_str());
            if let Ok(mut set) = in_flight.lock() {
                set.remove(&next.id);
            }
            drop(next.slot);
            drop(slot);
        });
    }
}

/// Settles one deferred entry with retries; returns whether a settlement transaction was
/// handed to the chain by this attempt (what admission control counts as throughput).
async fn settle_queued(gw: &Gateway, id: &EntryId) -> bool {
    let attempts_max = gw.config.settlement.deferred_attempts_max;
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=attempts_max {
        let entry = match gw.ledger.entry(id).await {
            Ok(Some(e)) if e.state == EntryState::Forwarded => e,
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(%id, error = %e, "deferred: ledger unavailable");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let payment = match stored_payment(&entry) {
            Ok(p) => p,
            Err(e) => {
                unusable_payment(gw, &entry, EntryState::Forwarded, e).await;
                return false;
            }
        };
        match settle_entry(gw, id, EntryState::Forwarded, &payment, "deferred_settlement", Waiter::Background).await {
            Ok(_) => return true,
            Err(e) if e.is_transient() && attempt < attempts_max => {
                tracing::warn!(%id, attempt, error = %e, "deferred settlement will be retried");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            // Claimed by another worker, or claimed by us and refused by the node: the entry
            // is `settling` and the recovery sweep re-sends it (a deferred call was served).
            Err(SettleError::LostRace | SettleError::NotBroadcast { .. }) => return false,
            // Already recorded `settle_failed` (or left for the sweep to record).
            Err(SettleError::Reverted(_)) => return false,
            // Out of attempts on a passing fault (chain down, relayer busy): the call was
            // served and the authorization may still be valid, so it stays `forwarded` for
            // the sweep, which settles it or voids it at expiry. Only a payer's fault is final.
            Err(e) if e.is_transient() => {
                tracing::warn!(%id, error = %e, "deferred settlement left to the recovery sweep");
                return false;
            }
            Err(e) => {
                fail(gw, &entry, EntryState::Forwarded, e.reason_code()).await;
                return false;
            }
        }
    }
    false
}

async fn fail(gw: &Gateway, entry: &Entry, from: EntryState, reason: &str) {
    let now = gw.clock.now_unix_s();
    // The service was delivered but no money moved: finance sees it as a failed settlement.
    let t = Transition::SettleFailed { reason: reason.to_owned() };
    match gw.ledger.transition_from(&entry.id, from, t, reason, None, now).await {
        Ok(true) => {
            gw.counters.entries_ended_uncharged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(false) => {}
        // Safe to leave: the entry stays unfinished and the next sweep decides it again.
        Err(e) => {
            tracing::error!(id = %entry.id, error = %e, "could not record a settlement failure; next sweep");
            gw.counters.left_to_next_sweep();
        }
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
/// flight in a live process) is driven towards a terminal state, up to
/// `settlement.deferred_concurrency` entries at once (the same bound as the deferred worker:
/// their receipt waits overlap, so a backlog settles many entries per block, not one).
pub async fn recover_once(gw: &Gateway) -> Result<usize, MeteringError> {
    use futures_util::StreamExt as _;
    let now = gw.clock.now_unix_s();
    let cutoff = now.saturating_sub(gw.config.settlement.recovery_grace_s);
    let mut stuck = gw.ledger.unfinished(cutoff, 200).await?;
    stuck.retain(|e| !gw.live_entries.contains(&e.id));
    let count = stuck.len();
    futures_util::stream::iter(stuck.iter())
        .for_each_concurrent(gw.config.settlement.deferred_concurrency.max(1), |entry| async move {
            recover_entry(gw, entry).await;
            // A deferred entry the worker's queue had no room for may have been settled or
            // voided here instead: its admission slot is released either way.
            gw.backlog.unpark(entry.id.as_str());
        })
        .await;
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
        // Reserved but never marked forwarded: the call cannot be shown to have been
        // delivered, so nothing is charged.
        EntryState::Reserved => {
            let reason = if entry.mode == SettlementMode::Deferred {
                "recovery_delivery_unknown"
            } else {
                "recovery_never_forwarded"
            };
            void_left(gw, entry, EntryState::Reserved, reason, now).await;
        }
        // `after`: the upstream answered but the body is released only with a settlement,
        // and no transaction was ever claimed: the process died before the agent got
        // anything. Nothing is charged.
        EntryState::Forwarded if entry.mode == SettlementMode::After => {
            void_left(gw, entry, EntryState::Forwarded, "recovery_never_delivered", now).await;
        }
        // `deferred`: the call was served; settle while the authorization is valid, void once
        // it cannot be settled any more.
        EntryState::Forwarded if entry.mode == SettlementMode::Deferred => {
            if expired {
                void_left(gw, entry, EntryState::Forwarded, "recovery_expired_unsettled", now).await;
                return;
            }
            match stored_payment(entry) {
                Ok(p) => {
                    match settle_entry(gw, &entry.id, EntryState::Forwarded, &p, "recovery", Waiter::Background).await {
                        Ok(_)
                        | Err(SettleError::LostRace | SettleError::NotBroadcast { .. } | SettleError::Reverted(_)) => {}
                        Err(e) if e.is_transient() => {}
                        Err(e) => fail(gw, entry, EntryState::Forwarded, e.reason_code()).await,
                    }
                }
                Err(e) => unusable_payment(gw, entry, EntryState::Forwarded, e).await,
            }
        }
        EntryState::Settling => recover_settling(gw, entry).await,
        _ => {}
    }
}

/// Voids an entry the sweep found unfinished; a failure is retried by the next sweep.
async fn void_left(gw: &Gateway, entry: &Entry, from: EntryState, reason: &str, now: u64) {
    let t = Transition::Voided { reason: reason.to_owned() };
    match gw.ledger.transition_from(&entry.id, from, t, "recovery", None, now).await {
        Ok(true) => {
            gw.counters.entries_ended_uncharged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(false) => {}
        // Safe to leave: the entry stays unfinished and the next sweep voids it.
        Err(e) => {
            tracing::warn!(id = %entry.id, error = %e, "recovery could not void an entry; next sweep");
            gw.counters.left_to_next_sweep();
        }
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
    // Unusable: the recovery sweep decides what becomes of the entry.
    let Ok(payment) = stored_payment(&entry) else { return };
    let Some(settler) = gw.settlers.get(&payment.chain_id) else { return };
    let hashes = match gw.ledger.events(id).await {
        Ok(events) => events.iter().filter_map(|e| e.tx_hash).chain(entry.tx_hash).collect::<Vec<_>>(),
        // Safe to leave: nothing was written; the recovery sweep reads the same events.
        Err(e) => {
            tracing::warn!(%id, error = %e, "re-check: ledger unavailable; the recovery sweep will");
            return;
        }
    };
    for tx_hash in hashes {
        if let Ok(Some(s)) = settler.check_receipt(&payment, tx_hash).await {
            if let Err(e) = record_settled(gw, id, &s).await {
                // Safe to leave: the entry stays `settling` and the recovery sweep finds the
                // same receipt.
                tracing::warn!(%id, error = %e, "re-check could not record a settlement; recovery will");
                gw.counters.left_to_next_sweep();
            }
            return;
        }
    }
}

/// Whether none of these unmined transactions can be mined any more: each claim noted its
/// relayer nonce, and each relayer's mined nonce has passed it (another transaction took
/// it). Unknown nonces (claims recorded before nonces were noted) or a chain error: false.
async fn none_can_land(settler: &tollgate_verifier::Settler, unmined: &[Option<ClaimDetail>]) -> bool {
    for detail in unmined {
        let Some(d) = detail else { return false };
        match settler.nonce_still_open(d.relayer, d.nonce).await {
            Ok(false) => {}
            Ok(true) | Err(_) => return false,
        }
    }
    true
}

/// One or more transactions were recorded for this entry (a replacement may have followed
/// the first): find out what became of them.
async fn recover_settling(gw: &Gateway, entry: &Entry) {
    let now = gw.clock.now_unix_s();
    let payment = match stored_payment(entry) {
        Ok(p) => p,
        Err(e) => return unusable_payment(gw, entry, EntryState::Settling, e).await,
    };
    let Some(settler) = gw.settlers.get(&payment.chain_id) else { return };
    let events = match gw.ledger.events(&entry.id).await {
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
    // The chain's facts that make a transaction unable to land are read *before* the
    // receipts and the authorization state: if they hold now, they held when those were
    // read, so "no receipt, authorization unused" cannot hide one that landed in between.
    let head_unix_s = match settler.head_timestamp().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(id = %entry.id, error = %e, "recovery: chain unavailable");
            return;
        }
    };
    let chain_expired = head_unix_s >= entry.valid_before_unix_s;
    let details: Vec<Option<ClaimDetail>> = claims.iter().map(|(_, d)| *d).collect();
    let nonces_passed = none_can_land(settler, &details).await;
    let mut unmined = 0usize;
    for (tx_hash, _) in &claims {
        match settler.check_receipt(&payment, *tx_hash).await {
            Ok(Some(s)) => {
                match record_settled(gw, &entry.id, &s).await {
                    // An `after` call releases its body only with its answer, and every answer
                    // given before the entry is `settled` is noted first. No note: the process
                    // died between the broadcast and the answer, the agent never had the
                    // response, and the payment it did not get is owed back. Only when this
                    // sweep's own record won: another writer (a live call) knows better.
                    Ok(true) if entry.mode == SettlementMode::After && !answered => {
                        owe_back(gw, &entry.id, "recovery_delivery_failed", now).await;
                    }
                    // A `before` call whose upstream failed while its settlement was pending:
                    // the refund its live process noted is recorded now that the money landed.
                    Ok(true) if refund_due.is_some() => {
                        owe_back(gw, &entry.id, refund_due.unwrap_or("upstream_failed"), now).await;
                    }
                    Ok(_) => {}
                    // Safe to leave: the next sweep finds the same receipt.
                    Err(e) => {
                        tracing::warn!(id = %entry.id, error = %e, "recovery could not record a settlement; next sweep");
                        gw.counters.left_to_next_sweep();
                    }
                }
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
    let ours_cannot_land = unmined == 0 || chain_expired || nonces_passed;
    match used {
        // One of ours may still land (or just did, after we looked): look again next sweep.
        Ok(true) if !ours_cannot_land => {}
        // None of our transactions moved it and none can now: someone else used the
        // authorization. No money reached the payee through us; finance sees the exception.
        Ok(true) => fail(gw, entry, EntryState::Settling, "authorization_used_elsewhere").await,
        // Every transaction we recorded was mined and reverted: no money moved, for good.
        Ok(false) if unmined == 0 => fail(gw, entry, EntryState::Settling, "settlement_reverted").await,
        // The chain is past `validBefore` (block time), or, for a call not known to be
        // served, every claim's nonce was taken by another transaction: nothing can use
        // this authorization through us any more.
        Ok(false) if chain_expired || (entry.mode != SettlementMode::Deferred && nonces_passed) => {
            void_left(gw, entry, EntryState::Settling, "recovery_tx_never_landed", now).await;
        }
        // Still valid and unused, a transaction of ours unmined: it was dropped, refused or
        // never broadcast (a crash between the claim and the send). Only a deferred call is
        // known to have been served, so only it is sent again (the token lets at most one
        // transaction land), by one replica at a time. An `after` or `before` call may never
        // have reached its agent: it is not re-broadcast; it is voided (above) once every
        // claim's nonce has passed or the chain passes `validBefore`, and waits until then.
        Ok(false) if entry.mode == SettlementMode::Deferred => resend(gw, entry, &payment, now).await,
        Ok(false) => {}
        Err(e) => tracing::warn!(id = %entry.id, error = %e, "recovery: chain unavailable"),
    }
}

/// Records a refund owed on a settled entry whose agent did not get what it paid for.
async fn owe_back(gw: &Gateway, id: &EntryId, reason: &str, now: u64) {
    let t = Transition::RefundOwed { reason: reason.to_owned() };
    match gw.ledger.transition_from(id, EntryState::Settled, t, "recovery", None, now).await {
        Ok(_) => tracing::warn!(%id, "settled after its process died before answering; refund owed"),
        // Left `settled`: finance sees a charge without a recorded answer. Counted and logged.
        Err(e) => {
            tracing::error!(%id, error = %e, "could not record a refund owed for an unanswered call");
            gw.counters.left_to_recovery();
        }
    }
}

/// Re-sends a deferred entry's settlement, under a per-entry lease so that two sweeps (two
/// replicas) do not both broadcast a replacement.
async fn resend(gw: &Gateway, entry: &Entry, payment: &VerifiedPayment, now: u64) {
    let lease = format!("resend:{}", entry.id);
    let ttl_s = gw.config.settlement.receipt_timeout.as_secs().saturating_add(10);
    match gw.ledger.try_lease(&lease, &gw.instance, ttl_s, now).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(id = %entry.id, error = %e, "recovery: ledger unavailable");
            return;
        }
    }
    if let Err(e) =
        settle_entry(gw, &entry.id, EntryState::Settling, payment, "recovery_resend", Waiter::Background).await
    {
        tracing::warn!(id = %entry.id, error = %e, "recovery re-send did not settle; next sweep");
    }
}
