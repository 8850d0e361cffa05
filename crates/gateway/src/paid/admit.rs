//! Phases 2 to 4: the quote (402) and its readiness guard, decoding the payment header,
//! refusing what cannot be settled now or was seen before, and verification with deferred
//! admission control.
//!
//! Must not: write to the ledger (a payment that has not verified leaves no record) or
//! forward anything.

use axum::http::{HeaderMap, HeaderValue};
use tollgate_metering::SettlementMode;
use tollgate_verifier::{VerifiedPayment, VerifyError};
use tollgate_x402::facilitator::SettleResponse;
use tollgate_x402::{PaymentPayload, v2};

use super::call::PaidCall;
use crate::admission::Slot;
use crate::app::Gateway;
use crate::config::DeferredOverflow;
use crate::error::GatewayError;

/// Phase 2 guard: no challenge is offered for a call that cannot be paid now (the database
/// is down, or no offered network can settle). Reads the readiness monitor's atomics only.
pub(super) fn quote_open(gw: &Gateway, call: &PaidCall) -> Result<(), GatewayError> {
    match gw.readiness.quote_refusal(&call.challenge.offers) {
        None => Ok(()),
        Some(blocked) => {
            Err(GatewayError::NotReady { reason: blocked.code(), retry_after_s: retry_after_s(gw), receipt: None })
        }
    }
}

/// Phase 3 guard: a payment whose network cannot settle now is refused before it is
/// verified, reserved or forwarded (fail closed: the upstream never serves a call that
/// cannot be paid). The authorization is not used; the agent may retry it later.
pub(super) fn settlement_open(gw: &Gateway, offer: &v2::PaymentRequirements) -> Result<(), GatewayError> {
    let Some(blocked) = gw.readiness.refusal(offer.network.chain_id) else { return Ok(()) };
    gw.counters.refused_not_ready.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let receipt = SettleResponse {
        success: false,
        error_reason: Some("settlement_unavailable".to_owned()),
        payer: None,
        transaction: String::new(),
        network: offer.network.caip2(),
    };
    Err(GatewayError::NotReady {
        reason: blocked.code(),
        retry_after_s: retry_after_s(gw),
        receipt: Some(Box::new(receipt)),
    })
}

/// About one monitor interval, at least a second.
fn retry_after_s(gw: &Gateway) -> u64 {
    gw.config.settlement.health_interval.as_secs().max(1)
}

/// Phase 2 (quote) is the absence of this header: the caller answers with the challenge.
pub(super) fn payment_header(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get("payment-signature").or_else(|| headers.get("x-payment")).map(HeaderValue::as_bytes)
}

/// Phase 3: base64 + JSON, within the header cap.
pub(super) fn decode(gw: &Gateway, raw: &[u8]) -> Result<PaymentPayload, GatewayError> {
    PaymentPayload::from_header(raw, gw.config.server.payment_header_bytes_max).map_err(GatewayError::MalformedPayment)
}

/// Phase 3b: a replay of an authorization this gateway already holds is refused from the
/// ledger, before any RPC call (a replayed header must not cost the chain four queries).
pub(super) async fn not_seen_before(
    gw: &Gateway,
    offer: &v2::PaymentRequirements,
    payment: &PaymentPayload,
) -> Result<(), GatewayError> {
    let a = &payment.exact().authorization;
    match gw.ledger.entries().by_authorization(offer.network.chain_id, offer.asset, a.from, a.nonce).await? {
        Some(e) if e.state.is_terminal() => Err(GatewayError::AuthorizationUsed),
        Some(_) => Err(GatewayError::PaymentInFlight),
        None => Ok(()),
    }
}

/// Phase 4: the full check, or for deferred routes the signature, the authorization's
/// on-chain state (one `eth_call`, never cached: an authorization cancelled on chain must
/// not buy a free call) and a cached balance check against this payer's pending spend.
///
/// A deferred payment also passes admission control (`crate::admission`); one it refuses is
/// served in `after` mode (fully verified here) or refused with 503, as configured.
pub(super) async fn verify(
    gw: &Gateway,
    call: &mut PaidCall,
    offer: &v2::PaymentRequirements,
    payment: &PaymentPayload,
) -> Result<Admitted, GatewayError> {
    let mode = call.endpoint.route.settlement;
    if mode != SettlementMode::Deferred {
        let verified = crate::limits::verify_funded(gw, offer, payment, &mut call.trail.signer)
            .await
            .map_err(GatewayError::Verify)?;
        return Ok(Admitted { verified, mode, slot: None });
    }
    let verified = gw.verifier.verify_signature_only(offer, payment).await.map_err(GatewayError::Verify)?;
    let a = &verified.authorization;
    // A payer the balance cache knows cannot pay is refused before any RPC call (the
    // `authorization_used` read below included): the unfunded-wallet flood costs nothing here.
    let key = (verified.chain_id, verified.asset, a.from);
    if let Some(balance) = gw.balances.known(&key)
        && balance < a.value
    {
        gw.metrics.listener.limited("unfunded_cached");
        return Err(GatewayError::Verify(VerifyError::InsufficientBalance { balance, required: a.value }));
    }
    // The signature verified: a refusal from here on is audited under this payer (a cached
    // refusal above is counted, not audited, so repeating it grows nothing).
    call.trail.signer = Some(a.from);
    let (used, balance) = tokio::join!(
        gw.verifier.authorization_used(verified.chain_id, verified.asset, a.from, a.nonce),
        gw.balances.balance(&gw.verifier, &verified)
    );
    if used.map_err(GatewayError::Verify)? {
        return Err(GatewayError::Verify(VerifyError::NonceAlreadyUsed { from: a.from, nonce: a.nonce }));
    }
    let balance = balance.map_err(GatewayError::Verify)?;
    let pending = gw.ledger.spend().pending(verified.chain_id, verified.asset, a.from).await?;
    let available = balance.saturating_sub(alloy_primitives::U256::from(pending));
    if available < a.value {
        return Err(GatewayError::Verify(VerifyError::InsufficientBalance { balance: available, required: a.value }));
    }
    let now = gw.clock.now_unix_s();
    let valid_before_unix_s = u64::try_from(a.valid_before).unwrap_or(u64::MAX);
    let value = u128::try_from(a.value).unwrap_or(u128::MAX);
    let payer = format!("{}:{:#x}:{:#x}", verified.chain_id, verified.asset, a.from);
    match gw.settlements.backlog.admit(&gw.config.settlement, valid_before_unix_s, now, &payer, pending, value) {
        Ok(slot) => Ok(Admitted { verified, mode, slot: Some(slot) }),
        Err(refusal) => {
            gw.counters.deferred_admission_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(route = %call.endpoint.name, %refusal, overflow = ?gw.config.settlement.deferred_overflow,
                "deferred admission refused");
            match gw.config.settlement.deferred_overflow {
                DeferredOverflow::Reject => Err(GatewayError::DeferredAdmission(refusal)),
                DeferredOverflow::After => {
                    let verified = crate::limits::verify_funded(gw, offer, payment, &mut call.trail.signer)
                        .await
                        .map_err(GatewayError::Verify)?;
                    Ok(Admitted { verified, mode: SettlementMode::After, slot: None })
                }
            }
        }
    }
}

/// A verified payment and how this call settles it.
pub(super) struct Admitted {
    pub(super) verified: VerifiedPayment,
    /// The route's mode, or `after` for a deferred payment admission control refused.
    pub(super) mode: SettlementMode,
    /// The deferred backlog place (deferred calls only).
    pub(super) slot: Option<Slot>,
}
