//! The x402 `payment-identifier` extension (issue 19, part 3; docs/x402-extensions.md): a
//! client's idempotency key, scoped per payer and route, kept in the ledger
//! (`ledger.payment_ids()`).
//!
//! - Phase 3a, [`extract`] and [`replay`], before the offer is matched and anything is
//!   verified (a retry gets its outcome whatever the route's price now): the id's format (400
//!   `invalid_payment_id`), a required id missing (400 `payment_id_required`), and a known id:
//!   the same payment replays what the agent was told (the stored body on routes that opt in,
//!   otherwise 409 `payment_already_processed` naming the entry) without calling the upstream;
//!   another payment gets 409 `payment_id_conflict`; a first call still running gets 409
//!   `payment_in_flight` with `Retry-After`.
//! - After verification, [`claim`] takes the id (one of two concurrent calls wins; a stale
//!   claim only by the same payment, another gets 409 `payment_id_conflict`); after the
//!   reservation, [`attach`] binds it to the entry; after the answer, [`remember`] stores the
//!   outcome (or gives the id back when nothing was reserved).
//!
//! Must not: decide anything about money. The ledger's unique authorization is still the guard
//! against a second charge; an id only changes what a repeated request is told. A payment
//! that has not verified claims nothing (a forger cannot block a wallet's ids).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_metering::{Entry, EntryId, EntryState, PaymentIdKey, payment_id_valid};
use tollgate_x402::PaymentPayload;
use tollgate_x402::facilitator::SettleResponse;

use super::call::{PaidCall, PaymentId};
use crate::app::Gateway;
use crate::challenge::attach_receipt;
use crate::error::GatewayError;

/// The extension's name in `extensions`.
pub const EXTENSION: &str = "payment-identifier";

/// Phase 3a: the id of a v2 payment (`extensions["payment-identifier"].info.id`), checked.
/// A v1 payment carries none.
pub(super) fn extract(call: &PaidCall, payment: &PaymentPayload) -> Result<Option<PaymentId>, GatewayError> {
    let required = call.endpoint.route.payment_id_required;
    let id = match payment {
        PaymentPayload::V2(p) => p.extensions.as_ref().and_then(|e| e.get(EXTENSION)),
        PaymentPayload::V1(_) => None,
    }
    .and_then(|ext| ext.get("info"))
    .and_then(|info| info.get("id"));
    let id = match id {
        None | Some(serde_json::Value::Null) if required => return Err(GatewayError::PaymentIdRequired),
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(id)) if payment_id_valid(id) => id.clone(),
        Some(_) => return Err(GatewayError::PaymentIdInvalid),
    };
    let fingerprint = fingerprint(call.parts.method.as_str(), call.path(), call.query(), payment);
    let authorization = &payment.exact().authorization;
    let key = PaymentIdKey { payer: authorization.from, route: call.endpoint.name.clone(), id };
    Ok(Some(PaymentId { key, fingerprint, nonce: authorization.nonce }))
}

/// The fingerprint a payment identifier is bound to (`payment_ids.fingerprint`): SHA-256 (hex)
/// of the method, the path and query, and the decoded payment (its signature, authorization,
/// echoed requirement and extensions, the id included). Stored: a change of recipe turns every
/// retry of a stored id into a 409 until the records expire. Public so tests can write a
/// record as a gateway (one that then died) would.
pub fn fingerprint(method: &str, path: &str, query: Option<&str>, payment: &PaymentPayload) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update(b"\n");
    hash.update(path.as_bytes());
    hash.update(b"?");
    hash.update(query.unwrap_or("").as_bytes());
    hash.update(b"\n");
    // Serialising the decoded payment cannot fail (plain structs and JSON maps); its field
    // order is ours, so the same payment always hashes the same whatever the client's spelling.
    hash.update(serde_json::to_vec(payment).unwrap_or_default());
    hex::encode(hash.finalize())
}

/// Phase 3a: a known id is answered here, before the offer is matched and before anything is
/// verified: `Ok(Some)` replays the stored answer, `Err` refuses (conflict, in flight, already
/// processed); `Ok(None)` goes on to the offer and verification.
///
/// Before the offer, because a retry of a call already processed must get its outcome even
/// when the route's price or flow changed since (a fresh 402 would invite a second payment).
/// Replaying without verifying is safe because of what must match first: the record is found
/// by the payer the signed authorization names and the route's name, its fingerprint must
/// equal this request's exactly (the method, path, query and the whole payment, signature
/// included: only the very payment that verified when it claimed the id can match it), and the
/// entry it names must be this authorization's (payer, route, nonce).
pub(super) async fn replay(gw: &Gateway, pid: &PaymentId) -> Result<Option<Response>, GatewayError> {
    let now = gw.clock.now_unix_s();
    let Some(record) = gw.ledger.payment_ids().get(&pid.key, now).await? else { return Ok(None) };
    if record.fingerprint != pid.fingerprint {
        return Err(GatewayError::PaymentIdConflict);
    }
    let Some(entry_id) = record.entry_id else {
        // Claimed and not yet reserved: the first call is being verified or reserved now; a
        // claim left unused longer than the sweep's grace is taken over by `claim` (by this
        // same payment only: the fingerprints are equal here).
        return if record.created_unix_s <= stale_before(gw, now) {
            Ok(None)
        } else {
            Err(GatewayError::PaymentInFlight)
        };
    };
    let entry = gw.ledger.entries().get(&entry_id).await?;
    if let Some(e) = &entry
        && (e.payer != pid.key.payer || e.route != pid.key.route || e.nonce != pid.nonce)
    {
        // Cannot happen while the ledger holds its invariants (the claim, the reservation and
        // the binding are all this payment's): the record is not replayed to anyone.
        tracing::error!(entry = %entry_id, route = %pid.key.route, "payment id names another payment's entry");
        return Err(GatewayError::Internal("payment id bound to another payment's entry".to_owned()));
    }
    let stored = match record.outcome.as_deref().map(StoredOutcome::parse) {
        Some(Ok(stored)) => Some(stored),
        Some(Err(e)) => {
            // A newer gateway's format, or damage: the entry still says what happened.
            tracing::warn!(entry = %entry_id, error = %e, "stored payment-id outcome unreadable; answering from the entry");
            None
        }
        None => None,
    };
    let Some(stored) = stored else {
        // No answer recorded: the call is still running, or the process that ran it stopped
        // before recording it. The entry says which once it is terminal.
        return match entry {
            Some(e) if e.state.is_terminal() => {
                Err(GatewayError::PaymentAlreadyProcessed { entry: entry_id, receipt: entry_receipt(&e).map(Box::new) })
            }
            _ => Err(GatewayError::PaymentInFlight),
        };
    };
    // A receipt that said pending is brought up to date from the entry.
    let receipt = match (&stored.receipt, &entry) {
        (Some(r), Some(e)) if r.error_reason.as_deref() == Some("settlement_pending") => {
            entry_receipt(e).or_else(|| Some(r.clone()))
        }
        (r, _) => r.clone(),
    };
    match stored.body_b64.as_deref().map(|b| base64::engine::general_purpose::STANDARD.decode(b)) {
        Some(Ok(body)) => {
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            let mut headers = HeaderMap::new();
            for (name, value) in &stored.headers {
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                    headers.insert(n, v);
                }
            }
            if let Some(r) = &receipt {
                attach_receipt(&mut headers, r);
            }
            headers.insert(HeaderName::from_static("tollgate-payment-id"), HeaderValue::from_static("replayed"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(Some((status, headers, Body::from(body)).into_response()))
        }
        _ => Err(GatewayError::PaymentAlreadyProcessed { entry: entry_id, receipt: receipt.map(Box::new) }),
    }
}

/// After verification: takes the id for this payment. Of two calls with the same id, the
/// loser is told the first is in flight (same payment) or that the id is taken (another). A
/// stale claim is taken over only by its own payment: another payment that passed `replay`
/// before that claim was written (and verified for longer than the grace) is refused here.
pub(super) async fn claim(gw: &Gateway, call: &mut PaidCall, pid: PaymentId) -> Result<(), GatewayError> {
    let now = gw.clock.now_unix_s();
    let retention_s = gw.config.server.payment_id_retention.as_secs();
    let ids = gw.ledger.payment_ids();
    if !ids.claim(&pid.key, &pid.fingerprint, now, retention_s, stale_before(gw, now)).await? {
        return match ids.get(&pid.key, now).await? {
            Some(r) if r.fingerprint != pid.fingerprint => Err(GatewayError::PaymentIdConflict),
            _ => Err(GatewayError::PaymentInFlight),
        };
    }
    call.payment_id = Some(pid);
    Ok(())
}

/// After the reservation: the id names the entry. A failure is logged and counted: the claim
/// then looks unused, and a retry taken over by `claim` meets the entry's authorization in
/// the ledger (402 `invalid_exact_evm_nonce_already_used` or 409 `payment_in_flight`), so
/// nothing is charged twice.
pub(super) async fn attach(gw: &Gateway, call: &mut PaidCall, entry: &EntryId) {
    let Some(pid) = &call.payment_id else { return };
    match gw.ledger.payment_ids().attach_entry(&pid.key, &pid.fingerprint, entry).await {
        Ok(true) => {}
        Ok(false) => failed(gw, entry, "the claim was no longer this payment's"),
        Err(e) => failed(gw, entry, &e.to_string()),
    }
}

/// After the answer: stores what the agent is told (and, on routes that opt in, a body within
/// the route's cap), or gives the id back when nothing was reserved. Returns the answer.
pub(super) async fn remember(
    gw: &Gateway,
    call: &mut PaidCall,
    result: Result<Response, GatewayError>,
) -> Result<Response, GatewayError> {
    let Some(pid) = &call.payment_id else { return result };
    let ids = gw.ledger.payment_ids();
    let Some(entry) = &call.entry_id else {
        // Refused before the reservation: nothing happened, the same payment may come again.
        if let Err(e) = ids.release(&pid.key, &pid.fingerprint).await {
            // Safe: the claim is taken over once older than the sweep's grace.
            tracing::warn!(route = %call.endpoint.name, error = %e, "payment id not released");
            gw.counters.payment_id_writes_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        return result;
    };
    let (stored, result) = match result {
        Ok(response) => {
            let (stored, response) =
                StoredOutcome::of_response(response, call.endpoint.route.replay_body_bytes_max).await;
            (stored, Ok(response))
        }
        Err(e) => {
            let stored = StoredOutcome {
                v: OUTCOME_VERSION,
                status: e.status().as_u16(),
                code: Some(e.code().to_owned()),
                receipt: e.receipt().cloned(),
                headers: Vec::new(),
                body_b64: None,
            };
            (stored, Err(e))
        }
    };
    match serde_json::to_string(&stored) {
        Ok(text) => match ids.record_outcome(&pid.key, &pid.fingerprint, &text).await {
            Ok(true) => {}
            Ok(false) => failed(gw, entry, "an outcome was already stored"),
            Err(e) => failed(gw, entry, &e.to_string()),
        },
        Err(e) => failed(gw, entry, &e.to_string()),
    }
    result
}

/// A payment-identifier write that failed: safe to leave, since a replay answers from the
/// ledger entry when no outcome is stored.
fn failed(gw: &Gateway, entry: &EntryId, why: &str) {
    tracing::warn!(%entry, error = why, "payment id write failed; a replay answers from the entry");
    gw.counters.payment_id_writes_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Claims older than this were left by a call that stopped before its reservation.
fn stale_before(gw: &Gateway, now_unix_s: u64) -> u64 {
    now_unix_s.saturating_sub(gw.config.settlement.recovery_grace_s.max(60))
}

/// The receipt an entry's state says, when it says one (`None` while the call is running or
/// a deferred entry awaits its settlement).
fn entry_receipt(e: &Entry) -> Option<SettleResponse> {
    let tx = e.tx_hash.map(|t| format!("{t:#x}"));
    let (success, reason) = match e.state {
        EntryState::Settled | EntryState::RefundOwed => (true, None),
        EntryState::Settling => (false, Some("settlement_pending".to_owned())),
        EntryState::SettleFailed | EntryState::Voided => {
            (false, Some(e.reason.clone().unwrap_or_else(|| e.state.as_str().to_owned())))
        }
        EntryState::Reserved | EntryState::Forwarded => return None,
    };
    Some(SettleResponse {
        success,
        error_reason: reason,
        payer: Some(e.payer),
        transaction: if success || e.state == EntryState::Settling { tx.unwrap_or_default() } else { String::new() },
        network: tollgate_x402::Network::new(e.chain_id).caip2(),
    })
}

/// The version of [`StoredOutcome`] this gateway writes.
const OUTCOME_VERSION: u32 = 1;

/// What the agent was told, as stored (`payment_ids.outcome`): a pinned, versioned format owned
/// by the gateway (golden test below); a record of a newer version is not read (the replay
/// then answers from the entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredOutcome {
    v: u32,
    /// The answer's status.
    status: u16,
    /// The refusal's stable code, when the answer was an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    /// The x402 receipt (`PAYMENT-RESPONSE`), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    receipt: Option<SettleResponse>,
    /// Headers replayed with a stored body (media type, `Tollgate-Receipt`, `Tollgate-Settlement`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(String, String)>,
    /// The body (standard base64), on routes that opt in and within their cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_b64: Option<String>,
}

/// Headers kept with a stored body.
const REPLAYED_HEADERS: [&str; 4] = ["content-type", "content-encoding", "tollgate-receipt", "tollgate-settlement"];

impl StoredOutcome {
    fn parse(text: &str) -> Result<StoredOutcome, String> {
        let stored: StoredOutcome = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if stored.v != OUTCOME_VERSION {
            return Err(format!("outcome version {} (this gateway reads {OUTCOME_VERSION})", stored.v));
        }
        Ok(stored)
    }

    /// The outcome of an answer, and the answer (its body read when it is stored: only a 2xx
    /// whose whole body is known and within `body_bytes_max`; a streamed body is never held).
    async fn of_response(response: Response, body_bytes_max: u64) -> (StoredOutcome, Response) {
        let (parts, body) = response.into_parts();
        let receipt = parts
            .headers
            .get("payment-response")
            .and_then(|v| tollgate_x402::decode_header::<SettleResponse>(v.as_bytes(), 64 * 1024).ok());
        let mut stored = StoredOutcome {
            v: OUTCOME_VERSION,
            status: parts.status.as_u16(),
            code: None,
            receipt,
            headers: Vec::new(),
            body_b64: None,
        };
        let exact = axum::body::HttpBody::size_hint(&body).exact();
        let keep = parts.status.is_success() && exact.is_some_and(|n| n <= body_bytes_max) && body_bytes_max > 0;
        if !keep {
            return (stored, Response::from_parts(parts, body));
        }
        // The size is known and within the cap, so this reads what is already in memory.
        let cap = usize::try_from(body_bytes_max).unwrap_or(usize::MAX);
        match axum::body::to_bytes(body, cap).await {
            Ok(bytes) => {
                stored.body_b64 = Some(base64::engine::general_purpose::STANDARD.encode(&bytes));
                stored.headers = REPLAYED_HEADERS
                    .iter()
                    .filter_map(|n| Some((n.to_string(), parts.headers.get(*n)?.to_str().ok()?.to_owned())))
                    .collect();
                (stored, Response::from_parts(parts, Body::from(bytes)))
            }
            // Cannot happen for a body of known size within the cap; the agent then gets an
            // empty body with the status and receipt, and a replay no body (409).
            Err(e) => {
                tracing::warn!(error = %e, "buffered body could not be read for the payment id");
                (stored, Response::from_parts(parts, Body::empty()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the stored outcome's version 1 format is pinned: the golden record reads into the
    // expected value and is written back byte for byte, so renaming a field fails here and
    // not on records already stored.
    #[test]
    fn stored_outcome_v1_golden() {
        let golden = include_str!("idempotency/outcome_v1.json").trim_end();
        let expected = StoredOutcome {
            v: 1,
            status: 200,
            code: None,
            receipt: Some(SettleResponse {
                success: true,
                error_reason: None,
                payer: Some("0x00000000000000000000000000000000000000aa".parse().unwrap()),
                transaction: format!("0x{}", "11".repeat(32)),
                network: "eip155:8453".to_owned(),
            }),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body_b64: Some("eyJvayI6dHJ1ZX0=".to_owned()),
        };
        assert_eq!(StoredOutcome::parse(golden).unwrap(), expected);
        assert_eq!(serde_json::to_string(&expected).unwrap(), golden);
        let newer = golden.replace("\"v\":1", "\"v\":2");
        assert!(StoredOutcome::parse(&newer).is_err(), "a newer version is left alone");
    }
}
