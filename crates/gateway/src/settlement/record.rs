//! What settling writes besides the claim: a mined settlement recorded, the notes a live
//! call leaves on a `settling` entry for the sweep (answered, refund due), what a claim
//! records beside its hash, the payment read back from its entry, and a failure recorded.
//!
//! Must not: move money or talk to the chain.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use tollgate_metering::{Entry, EntryId, EntryState, MeteringError, Transition};
use tollgate_verifier::{Settled, VerifiedPayment};

use super::service::Settlements;
use crate::stored_payment::{StoredPayment, StoredPaymentError};

/// Attempts at recording a mined settlement (or noting an answer) before leaving it to the
/// recovery sweep.
const RECORD_ATTEMPTS: usize = 3;

/// The waits between those attempts: 20 ms, then 80 ms (no jitter, no cap reached).
fn record_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_factor(4.0)
        .without_max_delay()
        .with_max_times(RECORD_ATTEMPTS - 1)
}

/// Records a mined settlement, retrying briefly while the error is retryable; if the ledger
/// stays unavailable the entry is left `settling` with the hash, and the recovery sweep finds
/// the receipt and records it. The payer has paid either way, which is what the caller tells
/// them.
pub(super) async fn record_settled_or_leave(svc: &Settlements, id: &EntryId, s: &Settled) -> bool {
    let recorded = (|| record_settled(svc, id, s))
        .retry(record_backoff())
        .sleep(tokio::time::sleep)
        .when(MeteringError::is_retryable)
        .await;
    match recorded {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(%id, tx = %s.tx_hash, error = %e,
                "settlement mined but not recorded; the recovery sweep will record it");
            svc.counters.left_to_recovery();
            false
        }
    }
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
pub async fn note_answered(svc: &Settlements, id: &EntryId) {
    let noted = (|| svc.ledger.entries().note_settling(id, ANSWERED, svc.clock.now_unix_s()))
        .retry(record_backoff())
        .sleep(tokio::time::sleep)
        .when(MeteringError::is_retryable)
        .await;
    // Safe to leave: without the note the sweep records a refund owed if the transaction
    // lands, so the agent is never charged for a response it may not have had (the provider
    // bears it).
    if let Err(e) = noted {
        tracing::warn!(%id, error = %e, "could not note the answer; a landed settlement will be owed back");
        svc.counters.left_to_recovery();
    }
}

/// What a claim records beside its transaction hash (the event's detail): who sends it with
/// which account nonce, so the sweep can tell when an unmined transaction no longer can land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct ClaimDetail {
    pub(super) relayer: alloy_primitives::Address,
    pub(super) nonce: u64,
}

impl ClaimDetail {
    pub(super) fn to_json(self) -> String {
        serde_json::json!({ "relayer": self.relayer, "nonce": self.nonce }).to_string()
    }

    pub(super) fn from_event(detail: Option<&str>) -> Option<Self> {
        serde_json::from_str(detail?).ok()
    }
}

pub(super) async fn record_settled(svc: &Settlements, id: &EntryId, s: &Settled) -> Result<bool, MeteringError> {
    let t = settled_transition(s);
    svc.ledger.entries().transition_from(id, EntryState::Settling, t, "receipt", None, svc.clock.now_unix_s()).await
}

/// The ledger transition that records where a settlement landed.
pub(super) fn settled_transition(s: &Settled) -> Transition {
    Transition::Settled {
        tx_hash: s.tx_hash,
        block_number: s.block_number,
        block_hash: s.block_hash,
        log_index: s.log_index,
    }
}

/// The payment stored with an entry (`crate::stored_payment`, any known version).
pub fn stored_payment(entry: &Entry) -> Result<VerifiedPayment, StoredPaymentError> {
    StoredPayment::parse(&entry.payment)
}

/// An entry whose stored payment cannot be used: an unreadable one can never be settled and
/// ends `settle_failed`; one written by a newer gateway is left for a process that reads it
/// (logged), never failed.
pub(super) async fn unusable_payment(svc: &Settlements, entry: &Entry, from: EntryState, e: StoredPaymentError) {
    match e {
        StoredPaymentError::Unreadable(_) => {
            tracing::error!(id = %entry.id, error = %e, "stored payment unreadable; the entry cannot be settled");
            fail(svc, entry, from, "stored_payment_unreadable").await;
        }
        StoredPaymentError::NewerVersion { .. } => {
            tracing::warn!(id = %entry.id, error = %e, "left for a gateway that knows this stored payment version");
        }
    }
}

pub(super) async fn fail(svc: &Settlements, entry: &Entry, from: EntryState, reason: &str) {
    let now = svc.clock.now_unix_s();
    // The service was delivered but no money moved: finance sees it as a failed settlement.
    let t = Transition::SettleFailed { reason: reason.to_owned() };
    match svc.ledger.entries().transition_from(&entry.id, from, t, reason, None, now).await {
        Ok(true) => {
            svc.counters.entries_ended_uncharged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(false) => {}
        // Safe to leave: the entry stays unfinished and the next sweep decides it again.
        Err(e) => {
            tracing::error!(id = %entry.id, error = %e, "could not record a settlement failure; next sweep");
            svc.counters.left_to_next_sweep();
        }
    }
}
