//! The paid request, as one top-level function calling one short function per phase, with
//! one per-call context ([`call::PaidCall`]) (see `docs/request-lifecycle.md`):
//!
//! match route → quote (402) → decode → verify → policy + reserve → upstream request (body
//! read, strip, inject) → forward → settle or void → respond with the receipt → record.
//!
//! Branching lives in [`paid_call`]; the phases stay small. The settlement modes are hooks
//! at three fixed points of this one pipeline (`modes`), not pipelines of their own. Nothing
//! is forwarded before the spend is reserved in the ledger, and nothing is charged when the
//! upstream fails.
//!
//! Modules, each depending only on those listed before it: `call` (the context), `idempotency`
//! (the x402 payment-identifier: phase 3a, before the offer is matched; the claim; the
//! remembered answer), `route` (phase 1),
//! `admit` (phases 2–4), `upstream` (phase 7 and the writes it leads to),
//! `reserve` (phases 5–6), `answer` (receipts, log line, audit, public read endpoints),
//! `refund` (`before` mode's refunds owed), `modes` (the hooks), `free` (free routes: the
//! forward and the audit record without quote, payment or ledger entry).

mod admit;
mod answer;
mod call;
mod free;
mod idempotency;
mod modes;
mod refund;
mod reserve;
mod route;
mod upstream;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::Response;
use tollgate_x402::find_offer;

pub use answer::{get_receipt, healthz};
pub use idempotency::fingerprint as payment_id_fingerprint;

use crate::app::Gateway;
use crate::error::GatewayError;
use admit::{Admitted, decode, not_seen_before, payment_header, quote_open, settlement_open, verify};
use answer::{audit, log_paid_call};
use call::PaidCall;
use modes::{Delivered, Settlement};
use reserve::{request_body, reserve};
use route::match_route;
use upstream::forward;

/// The axum handler for every path that is not one of the gateway's own.
///
/// The call runs in its own task: if the agent disconnects, axum drops this future, but once
/// a payment is reserved the entry must reach its next state now (settled, voided), not at
/// the next recovery sweep.
pub async fn handle(State(gw): State<Arc<Gateway>>, request: Request<Body>) -> Response {
    match tokio::spawn(run(gw, request)).await {
        Ok(response) => response,
        Err(e) => GatewayError::Internal(format!("request task failed: {e}")).rescue(None),
    }
}

/// One request: the route, the phases, then what is told (answer, log line, metrics, audit).
async fn run(gw: Arc<Gateway>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let mut call = match match_route(&gw, parts, body) {
        Ok(call) => call,
        Err(e) => return e.rescue(None),
    };
    // The client IP's budget of requests without a valid payment (`crate::limits`).
    let charge = match crate::limits::admit(&gw, &mut call.parts) {
        Ok(charge) => charge,
        Err(e) => return e.rescue(None),
    };
    let started = Instant::now();
    if call.endpoint.route.free {
        // Free: forwarded with the credential and audited; nothing is quoted or paid.
        let result = free::free_call(&gw, &mut call).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let refused = result.is_err();
        let (response, reason) = match result {
            Ok(response) => (response, free::FREE),
            Err(e) => {
                let code = e.code();
                (e.rescue(None), code)
            }
        };
        free::audit_free(&gw, call, reason, latency_ms).await;
        charge.finish(response.status(), refused);
        return response;
    }
    let paying = payment_header(&call.parts.headers).is_some();
    let result = paid_call(&gw, &mut call).await;
    // What the agent is told is remembered under its payment identifier, if it sent one.
    let result = idempotency::remember(&gw, &mut call, result).await;
    let elapsed = started.elapsed();
    let latency_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let refused = result.is_err();
    let (mut response, reason) = match result {
        Ok(response) => {
            call.trail.upstream_status = call.trail.upstream_status.or(Some(response.status().as_u16()));
            (response, "ok")
        }
        Err(e) => {
            let code = e.code();
            (e.rescue(Some(&call.challenge)), code)
        }
    };
    // Every answer made after the reservation names its ledger entry: a refusal, so an agent
    // can check `GET /receipts/{id}` before it signs anything new for the same call; an answer
    // (paid, or the upstream's error), so the agent can keep the id with its own record. An
    // answer without it was refused before anything was reserved.
    if let Some(id) = &call.entry_id
        && let Ok(v) = HeaderValue::from_str(id.as_str())
    {
        response.headers_mut().insert(HeaderName::from_static("tollgate-receipt"), v);
    }
    let verified = call.payment.is_some();
    if paying {
        let mode = call.trail.mode.unwrap_or(call.endpoint.route.settlement).as_str();
        gw.metrics.paid_call(&call.endpoint.name, mode, reason, elapsed, &call.trail.timings);
        if verified {
            log_paid_call(&call, mode, reason, response.status(), latency_ms);
        }
    }
    // A quote (no payment header) is not an attempt. An attempt is audited once its payment
    // verified (the call holds the payment exactly then), refused by policy or not, and when
    // it was refused after its signature verified (for want of balance: `trail.signer`, the
    // payer it names); anything else (garbage, a forgery, a replay, a payment the chain
    // refuses) costs the sender nothing to repeat, so it is counted and sampled in the log
    // instead of growing the permanent audit chain.
    if paying && (verified || call.trail.signer.is_some()) {
        audit(&gw, call, reason, latency_ms).await;
    } else if paying {
        gw.counters.unaudited_attempt(reason, &call.endpoint.name);
    }
    charge.finish(response.status(), refused);
    response
}

/// The phases, in order.
async fn paid_call(gw: &Arc<Gateway>, call: &mut PaidCall) -> Result<Response, GatewayError> {
    // 2. quote: no payment, the challenge (when the call could be paid now).
    let Some(raw) = payment_header(&call.parts.headers) else {
        quote_open(gw, call)?;
        return Err(GatewayError::PaymentRequired);
    };
    // 3. decode.
    let payment = decode(gw, raw)?;
    // 3a. a known payment identifier is answered before the offer is matched: a retry of a
    // call already processed gets its outcome even if the route's price changed since.
    let payment_id = idempotency::extract(call, &payment)?;
    if let Some(pid) = &payment_id
        && let Some(replayed) = idempotency::replay(gw, pid).await?
    {
        return Ok(replayed);
    }
    // Then our offer (never the echo), and the refusals that need no chain.
    let offer = find_offer(&call.challenge.offers, &payment).map_err(GatewayError::OfferMismatch)?.clone();
    settlement_open(gw, &offer)?;
    not_seen_before(gw, &offer, &payment).await?;
    // 4. verify (and, for deferred routes, admission control).
    let phase = Instant::now();
    let Admitted { verified, mode, slot } = verify(gw, call, &offer, &payment).await?;
    call.trail.timings.verify = Some(phase.elapsed());
    call.trail.mode = Some(mode);
    crate::limits::payment_verified(&call.parts);
    if let Some(pid) = payment_id {
        idempotency::claim(gw, call, pid).await?;
    }
    let mut settlement = Settlement::new(mode, slot);
    // 5 + 6. policy and reserve, one ledger transaction.
    let phase = Instant::now();
    let reserved = reserve(gw, call, &verified, mode).await;
    // Only a verified payer is recorded: a forged payment must not file records under a wallet.
    call.payment = Some(verified);
    let id = reserved?;
    idempotency::attach(gw, call, &id).await;
    let _live = gw.settlements.live_entries.hold(id.clone());
    call.trail.timings.reserve = Some(phase.elapsed());
    call.entry_id = Some(id.clone());
    // 7. the upstream request: the body in full within the cap, then the mode's first hook.
    request_body(gw, call, &id).await?;
    settlement.before_upstream(gw, call).await?;
    let phase = Instant::now();
    let answer = forward(gw, call, settlement.buffers()).await;
    call.trail.timings.upstream = Some(phase.elapsed());
    if let Ok(up) = &answer {
        call.trail.upstream_status = Some(up.status.as_u16());
    }
    // 8. settle or void, and 9. respond: the mode's hooks.
    let up = match settlement.upstream_answered(gw, call, answer).await? {
        Delivered::Ok(up) => up,
        Delivered::Failed(response) => return Ok(response),
    };
    settlement.respond(gw, call, up).await
}
