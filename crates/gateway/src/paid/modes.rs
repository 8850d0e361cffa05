//! The settlement modes as hooks on the one pipeline of `super::paid_call` (pingora's
//! `ProxyHttp` phases are the model): the pipeline always reserves, reads the body, forwards
//! and answers; a mode decides what happens at three fixed points.
//!
//! | hook | `after` | `before` | `deferred` |
//! |---|---|---|---|
//! | [`Settlement::before_upstream`] | nothing | settle (refused: `voided`, 402/503) | nothing |
//! | [`Settlement::upstream_answered`] | failure: `voided`; success: `forwarded` | failure: `refund_owed` | as `after` |
//! | [`Settlement::respond`] | settle, then answer when the route's `settlement_wait` says | answer with the receipt | hand to the worker, answer with `Tollgate-Receipt` |
//!
//! Must not: let a body out when nothing can be charged in `after` mode, or answer a
//! deferred call as served before its entry is durably `forwarded`.

use std::sync::Arc;
use std::time::Instant;

use axum::response::Response;
use tollgate_metering::{EntryId, EntryState, MeteringError, SettlementMode, Transition};
use tollgate_verifier::{Settled, VerifiedPayment};
use tollgate_x402::facilitator::SettleResponse;

use super::answer::{failed_receipt, pending_receipt, receipt, respond};
use super::call::PaidCall;
use super::refund::{refund_if_broken, refund_owed};
use super::upstream::{
    CREDENTIAL_REJECTED, credential_rejected, mark_forwarded, upstream_failed_cause, void, void_cause,
};
use crate::admission::Slot;
use crate::app::Gateway;
use crate::error::GatewayError;
use crate::proxy::Upstream;
use crate::settlement::{Queued, SettleError, SettleResult, Waiter, note_answered, settle_entry, settle_entry_until};

/// How this call settles, with what the mode learned on the way.
pub(super) enum Settlement {
    /// x402's default (`authorization` flow): forward (body read in full), then settle only a
    /// success. The body goes out exactly when money may have moved (settled, or
    /// `settlement_pending` with the hash); it is withheld exactly when nothing can be charged.
    After,
    /// x402's `upfront` flow: settle first, then forward (streamed); an upstream failure after
    /// settlement is recorded as a refund owed, and so is a body that breaks off mid-delivery.
    /// Holds the receipt (and its extra headers) once settled.
    Before(Option<(SettleResponse, Vec<(&'static str, String)>)>),
    /// Answer right after the upstream succeeds and the entry is durably `forwarded`
    /// (eligible for settlement); a background worker settles. A 2xx never goes out for an
    /// entry the recovery sweep could void as undelivered. Holds the backlog slot until the
    /// entry is handed to the worker.
    Deferred(Option<Slot>),
}

/// What the upstream's answer means for the call.
pub(super) enum Delivered {
    /// Served (2xx, or 3xx where the route charges redirects): answer through [`Settlement::respond`].
    Ok(Upstream),
    /// The upstream's own failure or a redirect, relayed as it is; nothing more to do.
    Failed(Response),
}

impl Settlement {
    /// The mode admission settled on (`after` for a deferred payment admission control
    /// refused) with the deferred backlog slot, if any.
    pub(super) fn new(mode: SettlementMode, slot: Option<Slot>) -> Self {
        match (mode, slot) {
            (SettlementMode::Deferred, Some(slot)) => Settlement::Deferred(Some(slot)),
            (SettlementMode::Before, _) => Settlement::Before(None),
            _ => Settlement::After,
        }
    }

    /// Whether the upstream's body is read in full before the answer (`before` streams it:
    /// the money moved already).
    pub(super) fn buffers(&self) -> bool {
        !matches!(self, Settlement::Before(_))
    }

    /// Hook 1, after the body is read and before the upstream hears of the call: `before`
    /// settles here (a refused settlement ends the call, nothing forwarded).
    pub(super) async fn before_upstream(&mut self, gw: &Gateway, call: &mut PaidCall) -> Result<(), GatewayError> {
        let Settlement::Before(paid) = self else { return Ok(()) };
        let (id, p) = call.reserved()?;
        let phase = Instant::now();
        let settled =
            settle_entry(&gw.settlements, &id, EntryState::Reserved, &p, "settle_before", Waiter::CallJustVerified)
                .await;
        call.trail.timings.settle = Some(phase.elapsed());
        let (receipt, extra) = match settled {
            // A `before` route waits for the receipt only (`settlement_wait` is an `after`
            // option), so a mined settlement is a success here.
            Ok(SettleResult::Settled(s) | SettleResult::SettledUnrecorded(s) | SettleResult::Shallow(s)) => {
                (receipt(&p, s.tx_hash), Vec::new())
            }
            // The payment may be made: the call is served, and the receipt says pending.
            Ok(SettleResult::Pending(tx)) => {
                gw.counters.settlements_pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let extra = vec![("tollgate-settlement", "pending".to_owned()), ("tollgate-receipt", id.to_string())];
                (pending_receipt(&p, tx), extra)
            }
            Err(e) => return Err(settlement_refused(gw, call, &id, EntryState::Reserved, &p, e).await),
        };
        call.trail.tx_hash = Some(receipt.transaction.clone());
        *paid = Some((receipt, extra));
        Ok(())
    }

    /// Hook 2, the upstream's answer (or the transport error): `after` and `deferred` charge
    /// only a success, so a failure voids the entry before the agent hears of it and a
    /// success is recorded `forwarded` first; `before` has been paid, so a failure is owed back.
    pub(super) async fn upstream_answered(
        &self,
        gw: &Arc<Gateway>,
        call: &mut PaidCall,
        answer: Result<Upstream, GatewayError>,
    ) -> Result<Delivered, GatewayError> {
        let (id, _) = call.reserved()?;
        match self {
            Settlement::After => charge_only_success(gw, call, &id, SettlementMode::After, answer).await,
            Settlement::Deferred(_) => charge_only_success(gw, call, &id, SettlementMode::Deferred, answer).await,
            Settlement::Before(paid) => {
                let (paid, extra) = paid.as_ref().map(|(r, x)| (Some(r), x.as_slice())).unwrap_or((None, &[]));
                let cap = gw.config.server.response_bytes_max;
                match answer {
                    // Settled already: the payer is owed the money back (`before` cannot void).
                    Ok(up) if let Some(rejected) = credential_rejected(call, up.status) => {
                        refund_owed(gw, &id, CREDENTIAL_REJECTED);
                        call.trail.ended(EntryState::RefundOwed, CREDENTIAL_REJECTED);
                        Err(rejected)
                    }
                    Ok(mut up) if up.succeeded(call.endpoint.route.charge_redirects) => {
                        refund_if_broken(gw, &id, up.watch_delivery());
                        Ok(Delivered::Ok(up))
                    }
                    Ok(up) => {
                        refund_owed(gw, &id, upstream_failed_cause(up.status));
                        call.trail.ended(EntryState::RefundOwed, upstream_failed_cause(up.status));
                        Ok(Delivered::Failed(respond(up, paid, extra, cap)))
                    }
                    Err(e) => {
                        refund_owed(gw, &id, void_cause(&e));
                        call.trail.ended(EntryState::RefundOwed, void_cause(&e));
                        Err(e)
                    }
                }
            }
        }
    }

    /// Hook 3, a served call's answer: `after` settles now and answers with the receipt (or
    /// refuses, body withheld); `before` answers with the receipt it has; `deferred` hands the
    /// entry to the worker and answers with where to look (`Tollgate-Receipt`).
    pub(super) async fn respond(
        self,
        gw: &Gateway,
        call: &mut PaidCall,
        up: Upstream,
    ) -> Result<Response, GatewayError> {
        let cap = gw.config.server.response_bytes_max;
        let (id, p) = call.reserved()?;
        match self {
            Settlement::After => settle_after(gw, call, &id, &p, up).await,
            Settlement::Before(paid) => {
                let (paid, extra) = paid.map(|(r, x)| (Some(r), x)).unwrap_or((None, Vec::new()));
                Ok(respond(up, paid.as_ref(), &extra, cap))
            }
            Settlement::Deferred(slot) => {
                let valid_before_unix_s = u64::try_from(p.authorization.valid_before).unwrap_or(u64::MAX);
                queue(gw, Queued { id: id.clone(), valid_before_unix_s, slot });
                // No x402 receipt yet: a `success:true` receipt without a transaction would
                // make clients count the call as settled (and fails the v1 receipt schema). The
                // receipt id tells the agent where to look; `GET /receipts/{id}` reports the
                // transaction once it is mined.
                let extra = [("tollgate-receipt", id.to_string()), ("tollgate-settlement", "deferred".to_owned())];
                Ok(respond(up, None, &extra, cap))
            }
        }
    }
}

/// `after` and `deferred`: an upstream failure or a transport error (returned as the error)
/// voids the entry before the agent hears of it; a success is recorded `forwarded` (durable
/// before the caller settles or answers). When the `forwarded` mark cannot be written the
/// body is withheld: the entry stays `reserved`, which the recovery sweep voids, so the agent
/// is told the truth ("not charged") and is not served.
async fn charge_only_success(
    gw: &Gateway,
    call: &mut PaidCall,
    id: &EntryId,
    mode: SettlementMode,
    answer: Result<Upstream, GatewayError>,
) -> Result<Delivered, GatewayError> {
    let up = match answer {
        Ok(up) => up,
        Err(e) => {
            void(gw, id, EntryState::Reserved, void_cause(&e)).await;
            call.trail.ended(EntryState::Voided, void_cause(&e));
            return Err(e);
        }
    };
    if let Some(rejected) = credential_rejected(call, up.status) {
        void(gw, id, EntryState::Reserved, CREDENTIAL_REJECTED).await;
        call.trail.ended(EntryState::Voided, CREDENTIAL_REJECTED);
        return Err(rejected);
    }
    if !up.succeeded(call.endpoint.route.charge_redirects) {
        void(gw, id, EntryState::Reserved, upstream_failed_cause(up.status)).await;
        call.trail.ended(EntryState::Voided, upstream_failed_cause(up.status));
        return Ok(Delivered::Failed(respond(up, None, &[], gw.config.server.response_bytes_max)));
    }
    mark_forwarded(gw, id, up.status, mode).await?;
    Ok(Delivered::Ok(up))
}

/// `after`: the served call is settled before its body goes out.
async fn settle_after(
    gw: &Gateway,
    call: &mut PaidCall,
    id: &EntryId,
    p: &VerifiedPayment,
    up: Upstream,
) -> Result<Response, GatewayError> {
    let cap = gw.config.server.response_bytes_max;
    let phase = Instant::now();
    let wait = call.endpoint.route.settlement_wait;
    let settled =
        settle_entry_until(&gw.settlements, id, EntryState::Forwarded, p, "settle_after", Waiter::Call, wait).await;
    call.trail.timings.settle = Some(phase.elapsed());
    match settled {
        Ok(SettleResult::Settled(s)) => {
            call.trail.tx_hash = Some(format!("{:#x}", s.tx_hash));
            Ok(respond(up, Some(&receipt(p, s.tx_hash)), &[], cap))
        }
        // Paid, and the ledger could not say so yet: the answer is noted first (so the sweep,
        // recording it later, knows the body went out), then the agent is told it paid.
        Ok(SettleResult::SettledUnrecorded(s)) => {
            call.trail.tx_hash = Some(format!("{:#x}", s.tx_hash));
            note_answered(&gw.settlements, id).await;
            Ok(respond(up, Some(&receipt(p, s.tx_hash)), &[], cap))
        }
        // A transaction may exist (or exists: `settlement_wait = "submitted"` answers once the
        // node acknowledged it; or is mined with fewer confirmations than the route waits
        // for): the payment may be made, so the agent gets what it pays for, with
        // `settlement_pending` and the hash (noted first, as above: the note is written
        // before the answer, or the sweep would owe a landed payment back). It must not pay
        // again.
        Ok(SettleResult::Pending(tx) | SettleResult::Shallow(Settled { tx_hash: tx, .. })) => {
            call.trail.tx_hash = Some(format!("{tx:#x}"));
            note_answered(&gw.settlements, id).await;
            gw.counters.settlements_pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let extra = [("tollgate-settlement", "pending".to_owned()), ("tollgate-receipt", id.to_string())];
            Ok(respond(up, Some(&pending_receipt(p, tx)), &extra, cap))
        }
        Err(e) => Err(settlement_refused(gw, call, id, EntryState::Forwarded, p, e).await),
    }
}

/// A settlement that cannot have moved money (see [`SettleError`]): the entry, settled from
/// `from` (`forwarded` in mode `after`, `reserved` in mode `before`), is ended and the agent
/// told so. A served (`forwarded`) entry ends `settle_failed` for the payer's fault, `voided`
/// otherwise; an unserved (`reserved`) one ends `voided`. The answer is true even when that
/// write fails: no transaction of ours exists for an `after` or `before` entry, and the
/// recovery sweep never broadcasts one for them (it voids them).
async fn settlement_refused(
    gw: &Gateway,
    call: &mut PaidCall,
    id: &EntryId,
    from: EntryState,
    p: &VerifiedPayment,
    e: SettleError,
) -> GatewayError {
    let reason = e.reason_code();
    tracing::warn!(%id, error = %e, reason, "settlement refused; nothing charged");
    // Reverted and payer-fault refusals of a served call end `settle_failed`; the rest `voided`.
    let served_payer_fault =
        matches!(e, SettleError::Reverted(_)) || (from == EntryState::Forwarded && e.payer_fault());
    call.trail.ended(if served_payer_fault { EntryState::SettleFailed } else { EntryState::Voided }, reason);
    let now = gw.clock.now_unix_s();
    let ended = match (&e, from) {
        // Already recorded `settle_failed` by settle_entry (or left for the sweep to).
        (SettleError::Reverted(_), _) => Ok(true),
        (SettleError::NotBroadcast { .. }, _) => {
            let t = Transition::Voided { reason: "settlement_not_broadcast".to_owned() };
            gw.ledger.entries().transition_from(id, EntryState::Settling, t, reason, None, now).await
        }
        // The claim may or may not have committed: end whichever state the entry is in.
        (SettleError::Ledger(_), EntryState::Forwarded) => end_unclaimed(gw, id, reason, now).await,
        (_, EntryState::Forwarded) if e.payer_fault() => {
            let t = Transition::SettleFailed { reason: reason.to_owned() };
            gw.ledger.entries().transition_from(id, EntryState::Forwarded, t, reason, None, now).await
        }
        (_, EntryState::Forwarded) => {
            let t = Transition::Voided { reason: reason.to_owned() };
            gw.ledger.entries().transition_from(id, EntryState::Forwarded, t, reason, None, now).await
        }
        // Nothing was forwarded: voided whatever the cause, from `from` or, when a claim may
        // have committed (a ledger error while claiming), from `settling`.
        (_, from) => {
            let t = Transition::Voided { reason: reason.to_owned() };
            match gw.ledger.entries().transition_from(id, from, t.clone(), reason, None, now).await {
                Ok(false) => gw.ledger.entries().transition_from(id, EntryState::Settling, t, reason, None, now).await,
                other => other,
            }
        }
    };
    if let Err(db) = ended {
        // Safe to leave: nothing re-broadcasts an `after` or `before` entry; the sweep voids it.
        tracing::warn!(%id, error = %db, "could not end a refused settlement's entry; recovery will void it");
        gw.counters.left_to_recovery();
    }
    if e.is_final() {
        GatewayError::SettlementFailed(failed_receipt(p, reason))
    } else {
        gw.counters.settlements_unavailable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        GatewayError::SettlementUnavailable(failed_receipt(p, reason))
    }
}

/// Voids an entry whose settlement claim may or may not have committed (`forwarded` or
/// `settling` with a transaction that was never broadcast).
async fn end_unclaimed(gw: &Gateway, id: &EntryId, reason: &str, now: u64) -> Result<bool, MeteringError> {
    let t = Transition::Voided { reason: "settlement_not_broadcast".to_owned() };
    if gw.ledger.entries().transition_from(id, EntryState::Forwarded, t.clone(), reason, None, now).await? {
        return Ok(true);
    }
    gw.ledger.entries().transition_from(id, EntryState::Settling, t, reason, None, now).await
}

/// Hands a `forwarded` deferred entry to the worker.
fn queue(gw: &Gateway, queued: Queued) {
    if let Err(e) = gw.settlements.deferred_tx.try_send(queued) {
        // The queue is full (or the worker is gone at shutdown): the entry is durable in the
        // ledger and the worker reads it from the backlog as soon as it has room. Its
        // admission slot stays counted until then.
        let q = match e {
            tokio::sync::mpsc::error::TrySendError::Full(q) | tokio::sync::mpsc::error::TrySendError::Closed(q) => q,
        };
        tracing::warn!(id = %q.id, "deferred queue full; left to the durable backlog");
        if let Some(slot) = q.slot {
            gw.settlements.backlog.park(q.id.as_str(), slot);
        }
        gw.settlements.deferred_overflow.notify_one();
    }
}
