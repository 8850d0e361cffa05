//! The paid request, as one top-level function calling one short function per phase
//! (see `docs/request-lifecycle.md`):
//!
//! match route → quote (402) → decode → verify → policy → reserve → forward (strip,
//! inject) → settle or void → respond with the receipt.
//!
//! Branching lives in [`paid_call`]; the phases stay small. Nothing is forwarded before
//! the spend is reserved in the ledger, and nothing is charged when the upstream fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tollgate_metering::{
    AtomicAmount, Decision, EntryId, EntryState, MeteringError, NewAuditRecord, NewEntry, SettlementMode, Transition,
};
use tollgate_verifier::{VerifiedPayment, VerifyError};
use tollgate_x402::facilitator::SettleResponse;
use tollgate_x402::{PaymentPayload, find_offer, v2};

use crate::admission::Slot;
use crate::app::Gateway;
use crate::challenge::{Challenge, attach_receipt};
use crate::config::DeferredOverflow;
use crate::config::{Injection, SecretSource};
use crate::control::{RouteEntry, Snapshot};
use crate::error::GatewayError;
use crate::metrics::Timings;
use crate::proxy::{self, Target, Upstream};
use crate::routes::{check_request_path, check_target_length};
use crate::stored_payment::StoredPayment;
use crate::settlement::{Queued, REFUND_DUE, SettleError, SettleResult, Waiter, note_answered, settle_entry};

/// What one request carries through its phases.
struct Ctx {
    entry: Arc<RouteEntry>,
    credential: Option<Served>,
    challenge: Challenge,
    method: String,
    path: String,
    query: Option<String>,
}

/// The credential that serves this call, resolved when the route matched (a rotation
/// after that point applies to the next request).
struct Served {
    injection: Injection,
    secret: secrecy::SecretString,
    /// `vault:NAME`, `env:NAME` or `file:PATH` — recorded, never the value.
    id: String,
    version: Option<u64>,
}

/// What the audit record of a paid attempt needs, filled in as the phases run.
#[derive(Default)]
struct Trail {
    wallet: Option<alloy_primitives::Address>,
    accepted: bool,
    entry_id: Option<String>,
    tx_hash: Option<String>,
    upstream_status: Option<u16>,
    /// How the call settles (the route's mode, or `after` when admission control refused
    /// a deferred payment); unset before verification.
    mode: Option<SettlementMode>,
    /// Phase latencies, for the log line and the metrics.
    timings: Timings,
}

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

async fn run(gw: Arc<Gateway>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let ctx = match match_route(&gw, &parts) {
        Ok(ctx) => ctx,
        Err(e) => return e.rescue(None),
    };
    let started = Instant::now();
    let paying = payment_header(&parts.headers).is_some();
    let mut trail = Trail::default();
    let result = paid_call(&gw, &ctx, &mut trail, parts, body).await;
    let elapsed = started.elapsed();
    let latency_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let (response, reason) = match result {
        Ok(response) => {
            trail.upstream_status = trail.upstream_status.or(Some(response.status().as_u16()));
            (response, "ok")
        }
        Err(e) => {
            let code = e.code();
            let mut response = e.rescue(Some(&ctx.challenge));
            // A refusal after the reservation names its ledger entry, so an agent can check
            // `GET /receipts/{id}` before it signs anything new for the same call.
            if let Some(id) = &trail.entry_id
                && let Ok(v) = HeaderValue::from_str(id)
            {
                response.headers_mut().insert(HeaderName::from_static("tollgate-receipt"), v);
            }
            (response, code)
        }
    };
    if paying {
        let mode = trail.mode.unwrap_or(ctx.entry.route.settlement).as_str();
        gw.metrics.paid_call(&ctx.entry.name, mode, reason, elapsed, &trail.timings);
        if trail.wallet.is_some() {
            log_paid_call(&ctx, &trail, mode, reason, response.status(), latency_ms);
        }
    }
    // A quote (no payment header) is not an attempt. An attempt is audited once its payment
    // verified (the trail's wallet is set exactly then), refused by policy or not; anything
    // else (garbage, a forgery, a replay, a payment the chain refuses) costs the sender
    // nothing to repeat, so it is counted and sampled in the log instead of growing the
    // permanent audit chain.
    if paying && trail.wallet.is_some() {
        audit(&gw, &ctx, trail, reason, latency_ms).await;
    } else if paying {
        gw.counters.unaudited_attempt(reason, &ctx.entry.name);
    }
    response
}

/// The one INFO line of a paid call whose payment verified: entry id, route, payer, mode,
/// outcome and phase latencies (never the path's query, a header or the credential).
fn log_paid_call(ctx: &Ctx, trail: &Trail, mode: &str, outcome: &str, status: StatusCode, latency_ms: u64) {
    let ms = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let t = &trail.timings;
    tracing::info!(
        entry = trail.entry_id.as_deref().unwrap_or(""),
        route = %ctx.entry.name,
        payer = %trail.wallet.map(|w| format!("{w:#x}")).unwrap_or_default(),
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

/// Queues the attempt's audit record. Waits for room when the queue is full (bounded), so
/// records are not dropped.
async fn audit(gw: &Gateway, ctx: &Ctx, trail: Trail, reason: &str, latency_ms: u64) {
    let record = NewAuditRecord {
        at_unix_ms: gw.clock.now_unix_s().saturating_mul(1000),
        wallet: trail.wallet,
        provider: Some(ctx.entry.provider.id.clone()),
        endpoint: Some(ctx.entry.name.clone()),
        method: ctx.method.clone(),
        path: ctx.path.clone(),
        price_version: ctx.entry.price_version,
        decision: if trail.accepted { Decision::Accepted } else { Decision::Denied },
        reason: reason.to_owned(),
        credential: ctx.credential.as_ref().map(|c| c.id.clone()),
        credential_version: ctx.credential.as_ref().and_then(|c| c.version),
        upstream_status: trail.upstream_status,
        latency_ms,
        entry_id: trail.entry_id,
        tx_hash: trail.tx_hash,
    };
    gw.audit_pending.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    // Bounded wait: when the writer cannot keep up (the database is down), the answer is not
    // held hostage. An accepted call's record is rebuilt from its ledger entry later
    // (settlement::backfill_audit); a denied attempt's is lost, and said so in the log.
    if let Err(e) = gw.audit_tx.send_timeout(record, AUDIT_SEND_WAIT).await {
        gw.audit_pending.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let record = match e {
            tokio::sync::mpsc::error::SendTimeoutError::Timeout(r)
            | tokio::sync::mpsc::error::SendTimeoutError::Closed(r) => r,
        };
        tracing::error!(decision = ?record.decision, reason = %record.reason, entry = ?record.entry_id,
            "audit queue full; record dropped");
    }
}

/// The phases, in order.
async fn paid_call(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    trail: &mut Trail,
    parts: Parts,
    body: Body,
) -> Result<Response, GatewayError> {
    let Some(raw) = payment_header(&parts.headers) else {
        quote_open(gw, ctx)?;
        return Err(GatewayError::PaymentRequired);
    };
    let payment = decode(gw, raw)?;
    let offer = find_offer(&ctx.challenge.offers, &payment).map_err(GatewayError::OfferMismatch)?;
    settlement_open(gw, offer)?;
    not_seen_before(gw, offer, &payment).await?;
    let phase = Instant::now();
    let Admitted { verified, mode, slot } = verify(gw, ctx, offer, &payment).await?;
    trail.timings.verify = Some(phase.elapsed());
    trail.mode = Some(mode);
    // Only a verified payer is recorded: a forged payment must not file records under a wallet.
    trail.wallet = Some(verified.authorization.from);
    let phase = Instant::now();
    let id = reserve(gw, ctx, &parts, &verified, mode).await?;
    let _live = gw.live_entries.hold(id.clone());
    trail.timings.reserve = Some(phase.elapsed());
    trail.accepted = true;
    trail.entry_id = Some(id.to_string());
    let body = request_body(gw, &id, ctx, &parts, body).await?;
    match (mode, slot) {
        (SettlementMode::Deferred, Some(slot)) => {
            let valid_before_unix_s = u64::try_from(verified.authorization.valid_before).unwrap_or(u64::MAX);
            let queued = Queued { id, valid_before_unix_s, slot: Some(slot) };
            settle_deferred(gw, ctx, trail, queued, parts, body).await
        }
        (SettlementMode::Before, _) => settle_before(gw, ctx, trail, &id, &verified, parts, body).await,
        _ => settle_after(gw, ctx, trail, &id, &verified, parts, body).await,
    }
}

/// Phase 2 guard: no challenge is offered for a call that cannot be paid now (the database
/// is down, or no offered network can settle). Reads the readiness monitor's atomics only.
fn quote_open(gw: &Gateway, ctx: &Ctx) -> Result<(), GatewayError> {
    match gw.readiness.quote_refusal(&ctx.challenge.offers) {
        None => Ok(()),
        Some(blocked) => {
            Err(GatewayError::NotReady { reason: blocked.code(), retry_after_s: retry_after_s(gw), receipt: None })
        }
    }
}

/// Phase 3 guard: a payment whose network cannot settle now is refused before it is
/// verified, reserved or forwarded (fail closed: the upstream never serves a call that
/// cannot be paid). The authorization is not used; the agent may retry it later.
fn settlement_open(gw: &Gateway, offer: &v2::PaymentRequirements) -> Result<(), GatewayError> {
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

/// Phase 1: the route, by path then method. Unknown paths are 404, never 402.
fn match_route(gw: &Gateway, parts: &Parts) -> Result<Ctx, GatewayError> {
    let path = parts.uri.path();
    check_target_length(path, parts.uri.query())
        .map_err(|t| GatewayError::UriTooLong { part: t.part, limit_bytes: t.limit_bytes })?;
    check_request_path(path).map_err(|reason| GatewayError::PathRefused { reason })?;
    let snapshot = gw.live.get();
    let mut method_mismatch = false;
    for entry in &snapshot.routes {
        let route = &entry.route;
        if !route.pattern.matches(path) {
            continue;
        }
        if !route.methods.contains(parts.method.as_str()) {
            method_mismatch = true;
            continue;
        }
        let resource = v2::ResourceInfo {
            url: format!("{}{}", public_base(gw, parts), path),
            description: Some(route.description.clone()),
            mime_type: Some(route.mime_type.clone()),
        };
        let credential = served_credential(&snapshot, entry)?;
        return Ok(Ctx {
            entry: entry.clone(),
            credential,
            challenge: Challenge { offers: entry.offers.clone(), resource },
            method: parts.method.as_str().to_owned(),
            path: path.to_owned(),
            query: parts.uri.query().map(str::to_owned),
        });
    }
    Err(if method_mismatch { GatewayError::MethodNotAllowed } else { GatewayError::RouteNotFound })
}

/// The provider's credential as of this request: a file/environment secret, or the vault's
/// latest unrevoked version. A vault credential with no usable version refuses the call
/// before anything is quoted or charged.
fn served_credential(snapshot: &Snapshot, entry: &RouteEntry) -> Result<Option<Served>, GatewayError> {
    let Some(c) = &entry.provider.credential else { return Ok(None) };
    Ok(Some(match &c.secret {
        SecretSource::Static { secret, source } => {
            Served { injection: c.injection.clone(), secret: secret.clone(), id: source.clone(), version: None }
        }
        SecretSource::Vault { name } => {
            let live = snapshot
                .secrets
                .get(&(entry.provider.id.clone(), name.clone()))
                .ok_or(GatewayError::CredentialUnavailable)?;
            Served {
                injection: c.injection.clone(),
                secret: live.secret.clone(),
                id: format!("vault:{name}"),
                version: Some(live.version),
            }
        }
    }))
}

/// The base of resource URLs: the configured public URL, else the `Host` the agent used
/// (informational only: verification never depends on it), else the listen address.
fn public_base(gw: &Gateway, parts: &Parts) -> String {
    if let Some(u) = &gw.config.server.public_url {
        return u.as_str().trim_end_matches('/').to_owned();
    }
    let host = parts.headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).filter(|h| {
        !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    });
    // How the agent reached us: over TLS when this listener serves it.
    let scheme = if gw.config.server.tls.is_some() { "https" } else { "http" };
    match host {
        Some(h) => format!("{scheme}://{h}"),
        None => format!("{scheme}://{}", gw.config.server.listen),
    }
}

/// Phase 2 (quote) is the absence of this header: the caller answers with the challenge.
fn payment_header(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get("payment-signature").or_else(|| headers.get("x-payment")).map(HeaderValue::as_bytes)
}

/// Phase 3: base64 + JSON, within the header cap.
fn decode(gw: &Gateway, raw: &[u8]) -> Result<PaymentPayload, GatewayError> {
    PaymentPayload::from_header(raw, gw.config.server.payment_header_bytes_max).map_err(GatewayError::MalformedPayment)
}

/// Phase 3b: a replay of an authorization this gateway already holds is refused from the
/// ledger, before any RPC call (a replayed header must not cost the chain four queries).
async fn not_seen_before(
    gw: &Gateway,
    offer: &v2::PaymentRequirements,
    payment: &PaymentPayload,
) -> Result<(), GatewayError> {
    let a = &payment.exact().authorization;
    match gw.ledger.entry_by_authorization(offer.network.chain_id, offer.asset, a.from, a.nonce).await? {
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
async fn verify(
    gw: &Gateway,
    ctx: &Ctx,
    offer: &v2::PaymentRequirements,
    payment: &PaymentPayload,
) -> Result<Admitted, GatewayError> {
    let mode = ctx.entry.route.settlement;
    if mode != SettlementMode::Deferred {
        let verified = gw.verifier.verify(offer, payment).await.map_err(GatewayError::Verify)?;
        return Ok(Admitted { verified, mode, slot: None });
    }
    let verified = gw.verifier.verify_signature_only(offer, payment).await.map_err(GatewayError::Verify)?;
    let a = &verified.authorization;
    let (used, balance) = tokio::join!(
        gw.verifier.authorization_used(verified.chain_id, verified.asset, a.from, a.nonce),
        async { gw.balances.balance(&gw.verifier, &verified).await.map_err(GatewayError::Verify) }
    );
    if used.map_err(GatewayError::Verify)? {
        return Err(GatewayError::Verify(VerifyError::NonceAlreadyUsed { from: a.from, nonce: a.nonce }));
    }
    let balance = balance?;
    let pending = gw.ledger.pending_spend(verified.chain_id, verified.asset, a.from).await?;
    let available = balance.saturating_sub(alloy_primitives::U256::from(pending));
    if available < a.value {
        return Err(GatewayError::Verify(VerifyError::InsufficientBalance { balance: available, required: a.value }));
    }
    let now = gw.clock.now_unix_s();
    let valid_before_unix_s = u64::try_from(a.valid_before).unwrap_or(u64::MAX);
    let value = u128::try_from(a.value).unwrap_or(u128::MAX);
    let payer = format!("{}:{:#x}:{:#x}", verified.chain_id, verified.asset, a.from);
    match gw.backlog.admit(&gw.config.settlement, valid_before_unix_s, now, &payer, pending, value) {
        Ok(slot) => Ok(Admitted { verified, mode, slot: Some(slot) }),
        Err(refusal) => {
            gw.counters.deferred_admission_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(route = %ctx.entry.name, %refusal, overflow = ?gw.config.settlement.deferred_overflow,
                "deferred admission refused");
            match gw.config.settlement.deferred_overflow {
                DeferredOverflow::Reject => Err(GatewayError::DeferredAdmission(refusal)),
                DeferredOverflow::After => {
                    let verified = gw.verifier.verify(offer, payment).await.map_err(GatewayError::Verify)?;
                    Ok(Admitted { verified, mode: SettlementMode::After, slot: None })
                }
            }
        }
    }
}

/// A verified payment and how this call settles it.
struct Admitted {
    verified: VerifiedPayment,
    /// The route's mode, or `after` for a deferred payment admission control refused.
    mode: SettlementMode,
    /// The deferred backlog place (deferred calls only).
    slot: Option<Slot>,
}

/// Phase 6: the spend is recorded before anything is forwarded. The database's unique
/// key on (chain, asset, payer, nonce) makes this the single point where a replay loses,
/// across every replica sharing the database.
async fn reserve(
    gw: &Gateway,
    ctx: &Ctx,
    parts: &Parts,
    p: &VerifiedPayment,
    mode: SettlementMode,
) -> Result<EntryId, GatewayError> {
    let a = &p.authorization;
    let amount = AtomicAmount::from_u256(a.value)
        .ok_or_else(|| GatewayError::Internal("price does not fit the ledger's amount range".to_owned()))?;
    let payment =
        StoredPayment::to_json(p).map_err(|e| GatewayError::Internal(format!("stored payment JSON: {e}")))?;
    let entry = NewEntry {
        chain_id: p.chain_id,
        asset: p.asset,
        payer: a.from,
        pay_to: a.to,
        nonce: a.nonce,
        amount,
        valid_before_unix_s: u64::try_from(a.valid_before).unwrap_or(i64::MAX as u64).min(i64::MAX as u64),
        provider: ctx.entry.provider.id.clone(),
        route: ctx.entry.name.clone(),
        method: parts.method.as_str().to_owned(),
        path: ctx.path.clone(),
        mode,
        payment,
        price_version: ctx.entry.price_version,
        credential: ctx.credential.as_ref().map(|c| c.id.clone()),
        credential_version: ctx.credential.as_ref().and_then(|c| c.version),
        now_unix_s: gw.clock.now_unix_s(),
    };
    match gw.ledger.reserve(&entry).await {
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
async fn request_body(gw: &Gateway, id: &EntryId, ctx: &Ctx, parts: &Parts, body: Body) -> Result<Body, GatewayError> {
    let route = &ctx.entry.route;
    match proxy::read_request_body(body, &parts.headers, route.body_bytes_max, route.upstream_timeout).await {
        Ok(bytes) => Ok(Body::from(bytes)),
        Err(e) => {
            void(gw, id, EntryState::Reserved, void_cause(&e)).await;
            Err(e)
        }
    }
}

/// Phase 7: forward with the credential injected and our own forwarding headers.
async fn forward(gw: &Gateway, ctx: &Ctx, parts: &Parts, body: Body, buffer: bool) -> Result<Upstream, GatewayError> {
    let provider = &ctx.entry.provider;
    let route = &ctx.entry.route;
    let url =
        proxy::upstream_url(&provider.upstream, &ctx.path, provider.strip_prefix.as_deref(), ctx.query.as_deref());
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
        credential: ctx.credential.as_ref().map(|c| (&c.injection, &c.secret)),
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
async fn void(gw: &Gateway, id: &EntryId, from: EntryState, reason: &str) {
    let t = Transition::Voided { reason: reason.to_owned() };
    match gw.ledger.transition_from(id, from, t, reason, None, gw.clock.now_unix_s()).await {
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

fn void_cause(e: &GatewayError) -> &'static str {
    match e {
        GatewayError::UpstreamTimeout => "upstream_timeout",
        GatewayError::BodyTooLarge { .. } => "request_body_too_large",
        GatewayError::RequestBodyIncomplete => "request_body_incomplete",
        GatewayError::RequestBodyTimeout => "request_body_timeout",
        GatewayError::UpstreamResponseTooLarge { .. } => "upstream_response_too_large",
        _ => "upstream_unavailable",
    }
}

fn upstream_failed_cause(status: StatusCode) -> &'static str {
    if status.is_server_error() {
        "upstream_5xx"
    } else if status.is_redirection() {
        "upstream_redirect"
    } else {
        "upstream_4xx"
    }
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
async fn forwarded(gw: &Gateway, id: &EntryId, status: StatusCode, mode: SettlementMode) -> Result<(), GatewayError> {
    let t = Transition::Forwarded { upstream_status: Some(status.as_u16()) };
    let error = match gw
        .ledger
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
        match gw.ledger.entry(id).await {
            Ok(Some(e)) if e.state == EntryState::Forwarded => return Ok(()),
            Ok(Some(e)) if e.state == EntryState::Reserved => {
                let now = gw.clock.now_unix_s();
                let t = Transition::Voided { reason: "forwarded_mark_failed".to_owned() };
                match gw.ledger.transition_from(id, EntryState::Reserved, t, "forwarded_mark_failed", None, now).await {
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

fn receipt(p: &VerifiedPayment, tx: alloy_primitives::B256) -> SettleResponse {
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
fn pending_receipt(p: &VerifiedPayment, tx: alloy_primitives::B256) -> SettleResponse {
    SettleResponse {
        success: false,
        error_reason: Some("settlement_pending".to_owned()),
        payer: Some(p.payer()),
        transaction: format!("{tx:#x}"),
        network: p.network(),
    }
}

fn failed_receipt(p: &VerifiedPayment, reason: &str) -> SettleResponse {
    SettleResponse {
        success: false,
        error_reason: Some(reason.to_owned()),
        payer: Some(p.payer()),
        transaction: String::new(),
        network: p.network(),
    }
}

fn respond(up: Upstream, receipt: Option<&SettleResponse>, extra: &[(&'static str, String)], cap: u64) -> Response {
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

/// What the upstream delivered, for the modes that charge only for a successful delivery.
enum Delivered {
    /// 2xx (3xx where the route charges redirects), read in full; the entry is still
    /// `reserved` (the caller records `forwarded`).
    Ok(Upstream),
    /// The upstream's own failure or a redirect, relayed; the entry is `voided`.
    Failed(Response),
}

/// Forwards (body read in full); an upstream failure or a transport error (returned as the
/// error) voids the entry before the agent hears of it.
async fn forward_or_void(
    gw: &Gateway,
    ctx: &Ctx,
    trail: &mut Trail,
    id: &EntryId,
    parts: &Parts,
    body: Body,
) -> Result<Delivered, GatewayError> {
    let phase = Instant::now();
    let forwarded = forward(gw, ctx, parts, body, true).await;
    trail.timings.upstream = Some(phase.elapsed());
    let up = match forwarded {
        Ok(up) => up,
        Err(e) => {
            void(gw, id, EntryState::Reserved, void_cause(&e)).await;
            return Err(e);
        }
    };
    trail.upstream_status = Some(up.status.as_u16());
    if let Some(rejected) = credential_rejected(ctx, up.status) {
        void(gw, id, EntryState::Reserved, CREDENTIAL_REJECTED).await;
        return Err(rejected);
    }
    if !up.succeeded(ctx.entry.route.charge_redirects) {
        void(gw, id, EntryState::Reserved, upstream_failed_cause(up.status)).await;
        return Ok(Delivered::Failed(respond(up, None, &[], gw.config.server.response_bytes_max)));
    }
    Ok(Delivered::Ok(up))
}

/// The cause recorded when the upstream refuses the credential we injected.
const CREDENTIAL_REJECTED: &str = "upstream_credential_rejected";

/// An upstream 401/403 while we injected the provider's credential is the provider's
/// credential failing (wrong, revoked, expired), not an answer to relay: the agent would
/// read it as its own fault. Logged at WARN naming the provider and the credential's id and
/// version (never its value); answered 502 and not charged.
fn credential_rejected(ctx: &Ctx, status: StatusCode) -> Option<GatewayError> {
    let served = ctx.credential.as_ref()?;
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        return None;
    }
    tracing::warn!(
        provider = %ctx.entry.provider.id,
        credential = %served.id,
        credential_version = served.version,
        upstream_status = status.as_u16(),
        route = %ctx.entry.name,
        "the upstream rejected the injected credential; answered 502, not charged"
    );
    Some(GatewayError::UpstreamCredentialRejected { status: status.as_u16() })
}

/// Forwards and records the outcome: `forwarded` on success (durable before the caller
/// settles or answers), `voided` on failure. When the `forwarded` mark cannot be written the
/// body is withheld: the entry stays `reserved`, which the recovery sweep voids, so the agent
/// is told the truth ("not charged") and is not served.
async fn forward_then_record(
    gw: &Gateway,
    ctx: &Ctx,
    trail: &mut Trail,
    id: &EntryId,
    mode: SettlementMode,
    parts: &Parts,
    body: Body,
) -> Result<Delivered, GatewayError> {
    let delivered = forward_or_void(gw, ctx, trail, id, parts, body).await?;
    if let Delivered::Ok(up) = &delivered {
        forwarded(gw, id, up.status, mode).await?;
    }
    Ok(delivered)
}

/// Mode `after` (x402 default): forward, then settle only if the upstream succeeded. The
/// body goes out exactly when money may have moved (settled, or `settlement_pending` with
/// the hash); it is withheld exactly when nothing can be charged.
async fn settle_after(
    gw: &Gateway,
    ctx: &Ctx,
    trail: &mut Trail,
    id: &EntryId,
    p: &VerifiedPayment,
    parts: Parts,
    body: Body,
) -> Result<Response, GatewayError> {
    let cap = gw.config.server.response_bytes_max;
    let up = match forward_then_record(gw, ctx, trail, id, SettlementMode::After, &parts, body).await? {
        Delivered::Ok(up) => up,
        Delivered::Failed(response) => return Ok(response),
    };
    let phase = Instant::now();
    let settled = settle_entry(gw, id, EntryState::Forwarded, p, "settle_after", Waiter::Call).await;
    trail.timings.settle = Some(phase.elapsed());
    match settled {
        Ok(SettleResult::Settled(s)) => {
            trail.tx_hash = Some(format!("{:#x}", s.tx_hash));
            Ok(respond(up, Some(&receipt(p, s.tx_hash)), &[], cap))
        }
        // Paid, and the ledger could not say so yet: the answer is noted first (so the sweep,
        // recording it later, knows the body went out), then the agent is told it paid.
        Ok(SettleResult::SettledUnrecorded(s)) => {
            trail.tx_hash = Some(format!("{:#x}", s.tx_hash));
            note_answered(gw, id).await;
            Ok(respond(up, Some(&receipt(p, s.tx_hash)), &[], cap))
        }
        // A transaction may exist: the payment may be made, so the agent gets what it pays
        // for, with `settlement_pending` and the hash (noted first, as above). It must not
        // pay again.
        Ok(SettleResult::Pending(tx)) => {
            trail.tx_hash = Some(format!("{tx:#x}"));
            note_answered(gw, id).await;
            gw.counters.settlements_pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let extra = [("tollgate-settlement", "pending".to_owned()), ("tollgate-receipt", id.to_string())];
            Ok(respond(up, Some(&pending_receipt(p, tx)), &extra, cap))
        }
        Err(e) => Err(settlement_refused(gw, id, EntryState::Forwarded, p, e).await),
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
    id: &EntryId,
    from: EntryState,
    p: &VerifiedPayment,
    e: SettleError,
) -> GatewayError {
    let reason = e.reason_code();
    tracing::warn!(%id, error = %e, reason, "settlement refused; nothing charged");
    let now = gw.clock.now_unix_s();
    let ended = match (&e, from) {
        // Already recorded `settle_failed` by settle_entry (or left for the sweep to).
        (SettleError::Reverted(_), _) => Ok(true),
        (SettleError::NotBroadcast { .. }, _) => {
            let t = Transition::Voided { reason: "settlement_not_broadcast".to_owned() };
            gw.ledger.transition_from(id, EntryState::Settling, t, reason, None, now).await
        }
        // The claim may or may not have committed: end whichever state the entry is in.
        (SettleError::Ledger(_), EntryState::Forwarded) => end_unclaimed(gw, id, reason, now).await,
        (_, EntryState::Forwarded) if e.payer_fault() => {
            let t = Transition::SettleFailed { reason: reason.to_owned() };
            gw.ledger.transition_from(id, EntryState::Forwarded, t, reason, None, now).await
        }
        (_, EntryState::Forwarded) => {
            let t = Transition::Voided { reason: reason.to_owned() };
            gw.ledger.transition_from(id, EntryState::Forwarded, t, reason, None, now).await
        }
        // Nothing was forwarded: voided whatever the cause, from `from` or, when a claim may
        // have committed (a ledger error while claiming), from `settling`.
        (_, from) => {
            let t = Transition::Voided { reason: reason.to_owned() };
            match gw.ledger.transition_from(id, from, t.clone(), reason, None, now).await {
                Ok(false) => gw.ledger.transition_from(id, EntryState::Settling, t, reason, None, now).await,
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
    if gw.ledger.transition_from(id, EntryState::Forwarded, t.clone(), reason, None, now).await? {
        return Ok(true);
    }
    gw.ledger.transition_from(id, EntryState::Settling, t, reason, None, now).await
}

/// Mode `before`: settle first, then forward; an upstream failure after settlement is
/// recorded as a refund owed to the payer, and so is a body that breaks off mid-delivery.
async fn settle_before(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    trail: &mut Trail,
    id: &EntryId,
    p: &VerifiedPayment,
    parts: Parts,
    body: Body,
) -> Result<Response, GatewayError> {
    let cap = gw.config.server.response_bytes_max;
    let phase = Instant::now();
    let settled = settle_entry(gw, id, EntryState::Reserved, p, "settle_before", Waiter::Call).await;
    trail.timings.settle = Some(phase.elapsed());
    let (paid, extra) = match settled {
        Ok(SettleResult::Settled(s) | SettleResult::SettledUnrecorded(s)) => (receipt(p, s.tx_hash), Vec::new()),
        // The payment may be made: the call is served, and the receipt says pending.
        Ok(SettleResult::Pending(tx)) => {
            gw.counters.settlements_pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let extra = vec![("tollgate-settlement", "pending".to_owned()), ("tollgate-receipt", id.to_string())];
            (pending_receipt(p, tx), extra)
        }
        Err(e) => return Err(settlement_refused(gw, id, EntryState::Reserved, p, e).await),
    };
    trail.tx_hash = Some(paid.transaction.clone());
    let phase = Instant::now();
    let forwarded = forward(gw, ctx, &parts, body, false).await;
    trail.timings.upstream = Some(phase.elapsed());
    if let Ok(up) = &forwarded {
        trail.upstream_status = Some(up.status.as_u16());
    }
    match forwarded {
        // Settled already: the payer is owed the money back (`before` cannot void).
        Ok(up) if let Some(rejected) = credential_rejected(ctx, up.status) => {
            refund_owed(gw, id, CREDENTIAL_REJECTED);
            Err(rejected)
        }
        Ok(mut up) if up.succeeded(ctx.entry.route.charge_redirects) => {
            refund_if_broken(gw, id, up.watch_delivery());
            Ok(respond(up, Some(&paid), &extra, cap))
        }
        Ok(up) => {
            refund_owed(gw, id, upstream_failed_cause(up.status));
            Ok(respond(up, Some(&paid), &extra, cap))
        }
        Err(e) => {
            refund_owed(gw, id, void_cause(&e));
            Err(e)
        }
    }
}

/// `before` mode streams the body after settlement: when the upstream breaks off, times out
/// or overruns the response cap mid-body, the agent got a truncated answer it paid for, so
/// the entry is moved to `refund_owed` with the cause. An agent that goes away before the end
/// is not owed anything (the stream is dropped without a report).
fn refund_if_broken(gw: &Arc<Gateway>, id: &EntryId, ended: tokio::sync::oneshot::Receiver<proxy::Delivery>) {
    let (gw, id) = (gw.clone(), id.clone());
    tokio::spawn(async move {
        match ended.await {
            Ok(proxy::Delivery::Complete) => {}
            Ok(proxy::Delivery::Broken { cause }) => {
                tracing::warn!(%id, cause, "paid body broke off mid-delivery; refund owed");
                refund_owed(&gw, &id, cause);
            }
            Err(_) => tracing::info!(%id, "the agent went away before the paid body ended"),
        }
    });
}

/// Longest a refund owed waits for its settlement to be recorded (a pending settlement is
/// chased, or followed by the sweep, until it lands).
const REFUND_WAIT_MIN: Duration = Duration::from_secs(60);

/// Records that the payer of a paid (`before`) call is owed a refund. Only a `settled` entry
/// can owe one: money that has not landed is not refunded. A `settling` entry (the settlement
/// is pending) is followed until it is `settled` (then owed) or ends uncharged (then nothing
/// is owed); this runs beside the response.
fn refund_owed(gw: &Arc<Gateway>, id: &EntryId, reason: &'static str) {
    let (gw, id) = (gw.clone(), id.clone());
    tokio::spawn(async move {
        let deadline = Instant::now() + gw.config.settlement.receipt_timeout.saturating_mul(2).max(REFUND_WAIT_MIN);
        let t = Transition::RefundOwed { reason: reason.to_owned() };
        let mut noted = false;
        while Instant::now() < deadline {
            let now = gw.clock.now_unix_s();
            match gw.ledger.transition_from(&id, EntryState::Settled, t.clone(), reason, None, now).await {
                Ok(true) => return,
                Ok(false) => match gw.ledger.entry(&id).await {
                    // Pending: noted durably first, so a restart (or this wait running out)
                    // cannot lose the refund; the sweep records it when the money lands.
                    Ok(Some(e)) if e.state == EntryState::Settling => {
                        if !noted {
                            let cause = format!("{REFUND_DUE}{reason}");
                            // A failed note is retried on the next round; the final failure is
                            // logged and counted below.
                            match gw.ledger.note_settling(&id, &cause, gw.clock.now_unix_s()).await {
                                Ok(_) => noted = true,
                                Err(e) => tracing::warn!(%id, error = %e, "refund due not noted yet; retrying"),
                            }
                        }
                    }
                    Ok(Some(e)) if e.state == EntryState::Settled => continue,
                    Ok(Some(e)) if e.state == EntryState::RefundOwed => return,
                    Ok(Some(e)) => {
                        tracing::info!(%id, state = %e.state, reason, "no refund owed: the payment did not land");
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%id, error = %e, "refund owed: entry unreadable; retrying"),
                },
                Err(e) => tracing::warn!(%id, error = %e, "refund owed not recorded yet; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tracing::error!(%id, reason, "could not record a refund owed");
        gw.counters.left_to_recovery();
    });
}

/// Mode `deferred`: answer right after the upstream succeeds and the entry is durably
/// `forwarded` (eligible for settlement); a background worker settles. A 2xx never goes out
/// for an entry the recovery sweep could void as undelivered.
///
/// `queued` is what the worker will be handed (the entry, its `validBefore`, its backlog slot).
async fn settle_deferred(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    trail: &mut Trail,
    queued: Queued,
    parts: Parts,
    body: Body,
) -> Result<Response, GatewayError> {
    let cap = gw.config.server.response_bytes_max;
    let id = queued.id.clone();
    let up = match forward_then_record(gw, ctx, trail, &id, SettlementMode::Deferred, &parts, body).await? {
        Delivered::Ok(up) => up,
        Delivered::Failed(response) => return Ok(response),
    };
    queue(gw, queued);
    // No x402 receipt yet: a `success:true` receipt without a transaction would make clients
    // count the call as settled (and fails the v1 receipt schema). The receipt id tells the
    // agent where to look; `GET /receipts/{id}` reports the transaction once it is mined.
    let extra = [("tollgate-receipt", id.to_string()), ("tollgate-settlement", "deferred".to_owned())];
    Ok(respond(up, None, &extra, cap))
}

/// Hands a `forwarded` deferred entry to the worker.
fn queue(gw: &Gateway, queued: Queued) {
    if let Err(e) = gw.deferred_tx.try_send(queued) {
        // The queue is full (or the worker is gone at shutdown): the entry is durable in the
        // ledger and the worker's backlog sweep will settle it. Its admission slot stays
        // counted until then.
        let q = match e {
            tokio::sync::mpsc::error::TrySendError::Full(q) | tokio::sync::mpsc::error::TrySendError::Closed(q) => q,
        };
        tracing::warn!(id = %q.id, "deferred queue full; left to the backlog sweep");
        if let Some(slot) = q.slot {
            gw.backlog.park(q.id.as_str(), slot);
        }
    }
}

/// `GET /receipts/{id}`: the state of a ledger entry, for agents of deferred routes.
pub async fn get_receipt(
    State(gw): State<Arc<Gateway>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Ok(id) = id.parse::<EntryId>() else { return GatewayError::ReceiptNotFound.rescue(None) };
    match gw.ledger.entry(&id).await {
        Ok(Some(e)) => {
            let body = serde_json::json!({
                "id": e.id.to_string(),
                "state": e.state.as_str(),
                "network": tollgate_x402::Network::new(e.chain_id).caip2(),
                "payer": format!("{:#x}", e.payer),
                "amount": e.amount.get().to_string(),
                "transaction": e.tx_hash.map(|t| format!("{t:#x}")),
                "blockNumber": e.block_number,
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
