//! A free route (`free = true`, or a price of 0): the same route match, limits and forward as
//! a paid call — the agent's credentials and any payment header stripped, the provider's
//! credential injected, the answer cleaned — with no quote, no payment and no ledger entry.
//! Each call is audited (`accepted`, reason `free`, no wallet and no entry), so a provider
//! sees its health and documentation traffic beside its paid calls.
//!
//! Chosen: no ledger entry. The ledger records payments and their settlement; a free call has
//! neither, and an entry without an authorization would break the ledger's rules (one row per
//! signed authorization, amounts greater than zero). The audit trail is the record.
//!
//! Must not: quote (402), read a payment, or write the ledger.

use axum::response::Response;
use tollgate_metering::{Decision, NewAuditRecord};

use super::answer::{queue_audit, respond};
use super::call::PaidCall;
use super::upstream::{credential_rejected, forward};
use crate::app::Gateway;
use crate::error::GatewayError;

/// The audit reason of a free call that was forwarded.
pub(super) const FREE: &str = "free";

/// Forwards a free call and answers with the upstream's answer. An upstream 401/403 to the
/// provider's own credential is answered 502 like a paid call's (the agent is not at fault).
pub(super) async fn free_call(gw: &Gateway, call: &mut PaidCall) -> Result<Response, GatewayError> {
    let up = forward(gw, call, false).await?;
    call.trail.upstream_status = Some(up.status.as_u16());
    if let Some(rejected) = credential_rejected(call, up.status) {
        return Err(rejected);
    }
    Ok(respond(up, None, &[], gw.config.server.response_bytes_max))
}

/// Queues the audit record of a free call (forwarded or refused).
pub(super) async fn audit_free(gw: &Gateway, call: PaidCall, reason: &str, latency_ms: u64) {
    let record = NewAuditRecord {
        at_unix_ms: gw.clock.now_unix_ms(),
        wallet: None,
        provider: Some(call.endpoint.provider.id.clone()),
        endpoint: Some(call.endpoint.name.clone()),
        method: call.parts.method.as_str().to_owned(),
        path: call.parts.uri.path().to_owned(),
        price_version: call.endpoint.price_version,
        decision: if reason == FREE { Decision::Accepted } else { Decision::Denied },
        reason: reason.to_owned(),
        credential: call.credential.as_ref().map(|c| c.id.clone()),
        credential_version: call.credential.as_ref().and_then(|c| c.version),
        upstream_status: call.trail.upstream_status,
        latency_ms,
        entry_id: None,
        tx_hash: None,
    };
    queue_audit(gw, record).await;
}
