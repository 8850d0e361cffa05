//! Phases 5 and 6: policy and the reservation (one ledger transaction), then the agent's body
//! read in full within the route's cap.
//!
//! Must not: forward anything; a body refused here voids the entry before the upstream or
//! the chain hears of the call.

use axum::body::Body;
use tollgate_metering::{AtomicAmount, EntryId, EntryState, MeteringError, NewEntry, SettlementMode};
use tollgate_verifier::VerifiedPayment;

use super::call::PaidCall;
use super::upstream::{void, void_cause};
use crate::app::Gateway;
use crate::error::GatewayError;
use crate::proxy;
use crate::stored_payment::StoredPayment;

/// Phase 6: the spend is recorded before anything is forwarded. The database's unique
/// key on (chain, asset, payer, nonce) makes this the single point where a replay loses,
/// across every replica sharing the database.
pub(super) async fn reserve(
    gw: &Gateway,
    call: &mut PaidCall,
    p: &VerifiedPayment,
    mode: SettlementMode,
) -> Result<EntryId, GatewayError> {
    let a = &p.authorization;
    let amount = AtomicAmount::from_u256(a.value)
        .ok_or_else(|| GatewayError::Internal("price does not fit the ledger's amount range".to_owned()))?;
    let payment = StoredPayment::to_json(p).map_err(|e| GatewayError::Internal(format!("stored payment JSON: {e}")))?;
    let entry = NewEntry {
        chain_id: p.chain_id,
        asset: p.asset,
        payer: a.from,
        pay_to: a.to,
        nonce: a.nonce,
        amount,
        valid_before_unix_s: u64::try_from(a.valid_before).unwrap_or(i64::MAX as u64).min(i64::MAX as u64),
        provider: call.endpoint.provider.id.clone(),
        route: call.endpoint.name.clone(),
        method: call.parts.method.as_str().to_owned(),
        path: call.path().to_owned(),
        mode,
        payment,
        price_version: call.endpoint.price_version,
        credential: call.credential.as_ref().map(|c| c.id.clone()),
        credential_version: call.credential.as_ref().and_then(|c| c.version),
        now_unix_s: gw.clock.now_unix_s(),
    };
    match gw.ledger.entries().reserve(&entry).await {
        Ok(id) => Ok(id),
        Err(MeteringError::DuplicateAuthorization { state, .. }) if state.is_terminal() => {
            Err(GatewayError::AuthorizationUsed)
        }
        Err(MeteringError::DuplicateAuthorization { .. }) => Err(GatewayError::PaymentInFlight),
        Err(e) => Err(e.into()),
    }
}

/// The agent's body, read in full within the route's cap before anything goes upstream, and
/// in `before` mode before anything is settled: an upstream never executes a paid call whose
/// body the gateway would refuse or could only send in part. A refused body voids the entry.
pub(super) async fn request_body(gw: &Gateway, call: &mut PaidCall, id: &EntryId) -> Result<(), GatewayError> {
    let route = &call.endpoint.route;
    let body = std::mem::take(&mut call.body);
    match proxy::read_request_body(body, &call.parts.headers, route.body_bytes_max, route.upstream_timeout).await {
        Ok(bytes) => {
            call.body = Body::from(bytes);
            Ok(())
        }
        Err(e) => {
            void(gw, id, EntryState::Reserved, void_cause(&e)).await;
            call.trail.ended(EntryState::Voided, void_cause(&e));
            Err(e)
        }
    }
}
