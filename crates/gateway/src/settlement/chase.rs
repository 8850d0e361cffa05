//! The chaser: follows settlements whose broadcast answer was lost, re-broadcasting the same
//! signed bytes until they land or cannot any more; and settlements of calls answered at the
//! broadcast (`settlement_wait = "submitted"`), to record their receipt.
//!
//! Must not: sign anything new (only the recorded transaction is re-sent).

use std::sync::Arc;
use std::time::Duration;

use tollgate_metering::EntryId;
use tollgate_verifier::{Fault, VerifiedPayment};

use super::record::record_settled_or_leave;
use super::service::{Chase, Settlements};

pub(super) async fn chase(
    svc: &Settlements,
    settler: &tollgate_verifier::Settler,
    id: &EntryId,
    payment: &VerifiedPayment,
    submitted: tollgate_verifier::Submitted,
) {
    let c = Chase { id: id.clone(), payment: payment.clone(), submitted };
    if let Err(e) = svc.chase_tx.try_send(c) {
        // Safe to drop: the entry is `settling` with the hash; the sweep follows it (and voids
        // it once it can no longer land), it just is not re-broadcast. The relayer asks the
        // node for its nonce again, so a gap left by a transaction no node has is refilled
        // by the next send instead of stalling every later one.
        let id = match e {
            tokio::sync::mpsc::error::TrySendError::Full(c) | tokio::sync::mpsc::error::TrySendError::Closed(c) => c.id,
        };
        tracing::warn!(%id, "chaser queue full; an in-doubt settlement is left to the sweep");
        svc.counters.chases_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
pub async fn chase_worker(svc: Arc<Settlements>, mut rx: tokio::sync::mpsc::Receiver<Chase>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CHASES_AT_ONCE));
    while let Some(c) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let svc = svc.clone();
        tokio::spawn(async move {
            chase_one(svc, c).await;
            drop(slot);
        });
    }
}

async fn chase_one(svc: Arc<Settlements>, c: Chase) {
    let Some(settler) = svc.settlers.get(&c.payment.chain_id).cloned() else { return };
    let tx_hash = c.submitted.tx_hash;
    let deadline = tokio::time::Instant::now() + svc.config.settlement.receipt_timeout.max(CHASE_MIN);
    let mut wait = svc.config.settlement.receipt_poll_interval.max(Duration::from_millis(20));
    // An acknowledged broadcast (a `settlement_wait = "submitted"` call) is known to the node
    // already: it is only followed to its receipt, never re-sent.
    let mut known = c.submitted.acknowledged;
    loop {
        match settler.check_receipt(&c.payment, tx_hash).await {
            Ok(Some(s)) => {
                // Not recorded: logged and counted inside; the sweep finds the same receipt.
                if record_settled_or_leave(&svc, &c.id, &s).await {
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
            tracing::warn!(id = %c.id, %tx_hash, "settlement not confirmed in time; left to the sweep");
            // Only a broadcast in doubt may have left a gap in the relayer's nonces.
            if !c.submitted.acknowledged {
                settler.forget_nonce().await;
            }
            return;
        }
        if !known {
            match settler.rebroadcast(&c.submitted.raw).await {
                tollgate_verifier::Rebroadcast::Known => known = true,
                // Mined meanwhile (the receipt is seen next round) or replaced: one more look.
                tollgate_verifier::Rebroadcast::NonceTaken => {
                    if let Ok(Some(s)) = settler.check_receipt(&c.payment, tx_hash).await
                        && record_settled_or_leave(&svc, &c.id, &s).await
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
