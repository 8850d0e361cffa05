//! Phase 9 and after: the answer (receipts in x402's shapes, extra headers), the one INFO
//! line and the audit record of a paid call; and the public read-only endpoints
//! (`/receipts/{id}`, `/healthz`).
//!
//! Must not: change a ledger entry (everything here reports what the phases did).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tollgate_metering::{Decision, EntryId, EntryState, NewAuditRecord};
use tollgate_verifier::VerifiedPayment;
use tollgate_x402::facilitator::SettleResponse;

use super::call::PaidCall;
use crate::app::Gateway;
use crate::challenge::attach_receipt;
use crate::control::QueuedAudit;
use crate::error::GatewayError;
use crate::finality::Finality;
use crate::proxy::Upstream;

/// The one INFO line of a paid call whose payment verified: entry id, route, payer, mode,
/// outcome and phase latencies (never the path's query, a header or the credential).
pub(super) fn log_paid_call(call: &PaidCall, mode: &str, outcome: &str, status: StatusCode, latency_ms: u64) {
    let ms = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let (trail, t) = (&call.trail, &call.trail.timings);
    tracing::info!(
        entry = call.entry_id.as_ref().map(EntryId::as_str).unwrap_or(""),
        route = %call.endpoint.name,
        payer = %call.payment.as_ref().map(|p| format!("{:#x}", p.payer())).unwrap_or_default(),
        mode,
        outcome,
        status = status.as_u16(),
        upstream_status = trail.upstream_status,
        tx = trail.tx_hash.as_deref().unwrap_or(""),
        latency_ms,
        verify_ms = ms(t.verify),
        reserve_ms = ms(t.reserve),
        upstream_ms = ms(t.upstream),
        settle_ms = ms(t.settle),
        "paid call"
    );
}

/// Longest a request waits for room in the audit queue.
const AUDIT_SEND_WAIT: Duration = Duration::from_secs(1);

/// The audit decision and reason of an attempt: what the ledger says became of its entry.
/// A call whose entry was voided or failed to settle is `denied` with the ledger's cause
/// (`upstream_5xx`, `upstream_credential_rejected`, ...), not `accepted`/`ok`; one that owes
/// the payer a refund is `accepted` (the money moved) with the cause; a call without an entry
/// is `denied` with the refusal's code.
fn decision(call: &PaidCall, reason: &str) -> (Decision, String) {
    match (&call.entry_id, call.trail.ended) {
        (None, _) => (Decision::Denied, reason.to_owned()),
        (Some(_), Some((EntryState::Voided | EntryState::SettleFailed, cause))) => (Decision::Denied, cause.to_owned()),
        (Some(_), Some((_, cause))) => (Decision::Accepted, cause.to_owned()),
        (Some(_), None) => (Decision::Accepted, reason.to_owned()),
    }
}

/// Queues the attempt's audit record. Waits for room when the queue is full (bounded), so
/// records are not dropped.
pub(super) async fn audit(gw: &Gateway, call: PaidCall, reason: &str, latency_ms: u64) {
    let (decision, reason) = decision(&call, reason);
    let trail = call.trail;
    let record = NewAuditRecord {
        at_unix_ms: gw.clock.now_unix_ms(),
        wallet: call.payment.as_ref().map(VerifiedPayment::payer).or(trail.signer),
        provider: Some(call.endpoint.provider.id.clone()),
        endpoint: Some(call.endpoint.name.clone()),
        method: call.parts.method.as_str().to_owned(),
        path: call.parts.uri.path().to_owned(),
        price_version: call.endpoint.price_version,
        decision,
        reason,
        credential: call.credential.as_ref().map(|c| c.id.clone()),
        credential_version: call.credential.as_ref().and_then(|c| c.version),
        upstream_status: trail.upstream_status,
        latency_ms,
        entry_id: call.entry_id.map(|id| id.to_string()),
        tx_hash: trail.tx_hash,
    };
    queue_audit(gw, record).await;
}

/// Queues an audit record, waiting a bounded time for room in the queue.
pub(super) async fn queue_audit(gw: &Gateway, record: NewAuditRecord) {
    // Bounded wait: when the writer cannot keep up (the database is down), the answer is not
    // held hostage. An accepted call's record is rebuilt from its ledger entry later
    // (settlement::backfill_audit); a denied attempt's is lost, and said so in the log.
    // The record counts as pending from here; dropped unsent, it no longer does.
    let queued = QueuedAudit::new(record, &gw.audit_pending);
    if let Err(e) = gw.audit_tx.send_timeout(queued, AUDIT_SEND_WAIT).await {
        let queued = match e {
            tokio::sync::mpsc::error::SendTimeoutError::Timeout(q)
            | tokio::sync::mpsc::error::SendTimeoutError::Closed(q) => q,
        };
        let record = queued.record();
        tracing::error!(decision = ?record.decision, reason = %record.reason, entry = ?record.entry_id,
            "audit queue full; record dropped");
    }
}

pub(super) fn receipt(p: &VerifiedPayment, tx: alloy_primitives::B256) -> SettleResponse {
    SettleResponse {
        success: true,
        error_reason: None,
        payer: Some(p.payer()),
        transaction: format!("{tx:#x}"),
        network: p.network(),
    }
}

/// The x402 `settlement_pending` answer: a transaction may exist (its hash is given so the
/// agent can look on chain or at `/receipts/{id}`), no confirmation yet. Non-terminal: the
/// agent must not pay this call again.
pub(super) fn pending_receipt(p: &VerifiedPayment, tx: alloy_primitives::B256) -> SettleResponse {
    SettleResponse {
        success: false,
        error_reason: Some("settlement_pending".to_owned()),
        payer: Some(p.payer()),
        transaction: format!("{tx:#x}"),
        network: p.network(),
    }
}

pub(super) fn failed_receipt(p: &VerifiedPayment, reason: &str) -> SettleResponse {
    SettleResponse {
        success: false,
        error_reason: Some(reason.to_owned()),
        payer: Some(p.payer()),
        transaction: String::new(),
        network: p.network(),
    }
}

pub(super) fn respond(
    up: Upstream,
    receipt: Option<&SettleResponse>,
    extra: &[(&'static str, String)],
    cap: u64,
) -> Response {
    let (status, mut headers, body) = up.into_parts(cap);
    if let Some(r) = receipt {
        attach_receipt(&mut headers, r);
    }
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    (status, headers, body).into_response()
}

/// `GET /receipts/{id}`: the state of a ledger entry (for agents of deferred routes, and of
/// any call answered `settlement_pending`), with its finality: `pending` until a block is
/// recorded, then `included` with the block's confirmations, `final` at the network's
/// `finality_confirmations` (`crate::finality`; the head is read at most once a second).
pub async fn get_receipt(
    State(gw): State<Arc<Gateway>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Ok(id) = id.parse::<EntryId>() else { return GatewayError::ReceiptNotFound.rescue(None) };
    match gw.ledger.entries().get(&id).await {
        Ok(Some(e)) => {
            let depth =
                gw.config.networks.iter().find(|n| n.network.chain_id == e.chain_id).map(|n| n.finality_confirmations);
            // Only an entry with a recorded block needs the head; a network no longer
            // configured has no chain to ask (and no depth): its finality stays `included`.
            let head = match (e.block_number, depth, gw.verifier.chain(e.chain_id)) {
                (Some(_), Some(_), Ok(chain)) => gw.heads.head(chain).await,
                _ => None,
            };
            let finality = Finality::of(&e, head, depth.unwrap_or(u64::MAX));
            let body = serde_json::json!({
                "id": e.id.to_string(),
                "state": e.state.as_str(),
                "network": tollgate_x402::Network::new(e.chain_id).caip2(),
                "payer": format!("{:#x}", e.payer),
                "amount": e.amount.get().to_string(),
                "transaction": e.tx_hash.map(|t| format!("{t:#x}")),
                "blockNumber": e.block_number,
                "confirmations": finality.confirmations(),
                "finality": finality.name(),
                "finalityDepth": depth,
                "reason": e.reason,
            });
            (StatusCode::OK, [(axum::http::header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
        }
        Ok(None) => GatewayError::ReceiptNotFound.rescue(None),
        Err(e) => GatewayError::Ledger(e).rescue(None),
    }
}

/// `GET /healthz`.
pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok")
}
