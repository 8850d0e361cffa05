//! Phase 7, the upstream request: the forward itself (the agent's credentials and payment
//! stripped, ours injected, by `crate::proxy`), what an upstream answer means (a rejected
//! credential, a failure cause), and the ledger writes the forward leads to in every mode:
//! `voided` when nothing may be charged, `forwarded` when the call was served.
//!
//! Must not: settle (the modes decide when, `super::modes`).

use std::time::Duration;

use axum::http::StatusCode;
use tollgate_metering::{EntryId, EntryState, SettlementMode, Transition};

use super::call::PaidCall;
use super::route::public_base;
use crate::app::Gateway;
use crate::error::GatewayError;
use crate::proxy::{self, Target, Upstream};

/// Phase 7: forward with the credential injected and our own forwarding headers.
pub(super) async fn forward(gw: &Gateway, call: &mut PaidCall, buffer: bool) -> Result<Upstream, GatewayError> {
    let body = std::mem::take(&mut call.body);
    let (parts, provider, route) = (&call.parts, &call.endpoint.provider, &call.endpoint.route);
    let url = proxy::upstream_url(&provider.upstream, call.path(), provider.strip_prefix.as_deref(), call.query());
    // Already read within the cap by `request_body`; this only takes the bytes out.
    let body = proxy::read_request_body(body, &parts.headers, route.body_bytes_max, route.upstream_timeout).await?;
    let forwarded = gw.config.server.forwarded_headers.then(|| {
        let base = public_base(gw, parts);
        let (proto, rest) = base.split_once("://").unwrap_or(("http", base.as_str()));
        proxy::Forwarded {
            client_ip: parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip()),
            proto: proto.to_owned(),
            host: rest.split('/').next().filter(|h| !h.is_empty()).map(str::to_owned),
        }
    });
    let target = Target {
        url,
        credential: call.credential.as_ref().map(|c| (&c.injection, &c.secret)),
        timeout: route.upstream_timeout,
        response_bytes_max: gw.config.server.response_bytes_max,
        provider: &provider.id,
        base: &provider.upstream,
        strip_prefix: provider.strip_prefix.as_deref(),
        forwarded,
        allow_set_cookie: route.allow_set_cookie,
    };
    // An admin-created provider goes through the guarded client (its resolver checks every
    // connection's addresses); an IP literal never reaches a resolver and is checked here.
    let http = if provider.guarded {
        gw.upstream_guard.check_literal(&provider.upstream).map_err(|r| {
            tracing::warn!(provider = %provider.id, rule = r.rule.code(), "SSRF guard refused an admin-created upstream");
            GatewayError::UpstreamUnavailable { reason: r.to_string() }
        })?;
        &gw.http_guarded
    } else {
        &gw.http
    };
    proxy::forward(http, target, parts.method.clone(), &parts.headers, body, buffer).await
}

/// Voids the entry: the upstream failed, nothing is charged.
pub(super) async fn void(gw: &Gateway, id: &EntryId, from: EntryState, reason: &str) {
    let t = Transition::Voided { reason: reason.to_owned() };
    match gw.ledger.entries().transition_from(id, from, t, reason, None, gw.clock.now_unix_s()).await {
        Ok(true) => {
            gw.counters.entries_ended_uncharged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(false) => {}
        // Safe to leave: nothing was claimed for this entry, and the sweep voids a `reserved`
        // entry (and an unclaimed `forwarded` one of an `after` route) once its grace is over.
        Err(e) => {
            tracing::error!(%id, error = %e, "could not void an entry; recovery will");
            gw.counters.left_to_recovery();
        }
    }
}

pub(super) fn void_cause(e: &GatewayError) -> &'static str {
    match e {
        GatewayError::UpstreamTimeout => "upstream_timeout",
        GatewayError::BodyTooLarge { .. } => "request_body_too_large",
        GatewayError::RequestBodyIncomplete => "request_body_incomplete",
        GatewayError::RequestBodyTimeout => "request_body_timeout",
        GatewayError::UpstreamResponseTooLarge { .. } => "upstream_response_too_large",
        _ => "upstream_unavailable",
    }
}

pub(super) fn upstream_failed_cause(status: StatusCode) -> &'static str {
    if status.is_server_error() {
        "upstream_5xx"
    } else if status.is_redirection() {
        "upstream_redirect"
    } else {
        "upstream_4xx"
    }
}

/// The cause recorded when the upstream refuses the credential we injected.
pub(super) const CREDENTIAL_REJECTED: &str = "upstream_credential_rejected";

/// An upstream 401/403 while we injected the provider's credential is the provider's
/// credential failing (wrong, revoked, expired), not an answer to relay: the agent would
/// read it as its own fault. Logged at WARN naming the provider and the credential's id and
/// version (never its value); answered 502 and not charged.
pub(super) fn credential_rejected(call: &PaidCall, status: StatusCode) -> Option<GatewayError> {
    let served = call.credential.as_ref()?;
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        return None;
    }
    tracing::warn!(
        provider = %call.endpoint.provider.id,
        credential = %served.id,
        credential_version = served.version,
        upstream_status = status.as_u16(),
        route = %call.endpoint.name,
        "the upstream rejected the injected credential; answered 502, not charged"
    );
    Some(GatewayError::UpstreamCredentialRejected { status: status.as_u16() })
}

/// Attempts at learning what became of a deferred entry whose `forwarded` write failed.
const MARK_READBACK_ATTEMPTS: u32 = 3;

/// Records `reserved → forwarded`. `Ok(false)` (the entry left `reserved`: the recovery sweep
/// of another process voided it because the call outlived its grace period) is an error: the
/// call was released, nothing is charged, and it must not be answered as served.
///
/// On a deferred route a failed write may still have committed (a statement timeout or a
/// connection lost after the commit), and a `forwarded` entry will be settled: the state is
/// read back. `forwarded` → answer; `reserved` → voided here, then the error; still unknown →
/// answer all the same, because the entry may be charged, and serving what may be charged is
/// the agent's side of the doubt (the provider's risk is an entry the sweep later voids).
pub(super) async fn mark_forwarded(
    gw: &Gateway,
    id: &EntryId,
    status: StatusCode,
    mode: SettlementMode,
) -> Result<(), GatewayError> {
    let t = Transition::Forwarded { upstream_status: Some(status.as_u16()) };
    let error = match gw
        .ledger
        .entries()
        .transition_from(id, EntryState::Reserved, t, "upstream_ok", None, gw.clock.now_unix_s())
        .await
    {
        Ok(true) => return Ok(()),
        Ok(false) => return Err(GatewayError::EntryReleased),
        Err(e) if mode != SettlementMode::Deferred => return Err(e.into()),
        Err(e) => e,
    };
    let mut backoff = Duration::from_millis(50);
    for _ in 0..MARK_READBACK_ATTEMPTS {
        match gw.ledger.entries().get(id).await {
            Ok(Some(e)) if e.state == EntryState::Forwarded => return Ok(()),
            Ok(Some(e)) if e.state == EntryState::Reserved => {
                let now = gw.clock.now_unix_s();
                let t = Transition::Voided { reason: "forwarded_mark_failed".to_owned() };
                match gw
                    .ledger
                    .entries()
                    .transition_from(id, EntryState::Reserved, t, "forwarded_mark_failed", None, now)
                    .await
                {
                    Ok(true) => return Err(error.into()),
                    // Moved meanwhile: look again.
                    Ok(false) => continue,
                    // Retried by the next round; the last round's doubt is logged and counted.
                    Err(e) => tracing::warn!(%id, error = %e, "could not void a reserved entry after a failed mark"),
                }
            }
            Ok(Some(_)) => return Err(GatewayError::EntryReleased),
            Ok(None) | Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
    tracing::warn!(%id, error = %error, "deferred forwarded mark in doubt; answering, the entry may be settled");
    gw.counters.left_to_recovery();
    Ok(())
}
