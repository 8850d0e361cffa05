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

use crate::app::Gateway;
use crate::challenge::{Challenge, attach_receipt};
use crate::config::{Injection, SecretSource};
use crate::control::{RouteEntry, Snapshot};
use crate::error::GatewayError;
use crate::proxy::{self, Target, Upstream};
use crate::routes::check_request_path;
use crate::settlement::{SettleError, SettleResult, Waiter, settle_entry};

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
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (response, reason) = match result {
        Ok(response) => {
            tracing::info!(route = %ctx.entry.name, status = response.status().as_u16(), latency_ms, "paid call");
            trail.upstream_status = trail.upstream_status.or(Some(response.status().as_u16()));
            (response, "ok")
        }
        Err(e) => {
            let code = e.code();
            (e.rescue(Some(&ctx.challenge)), code)
        }
    };
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
    let raw = payment_header(&parts.headers).ok_or(GatewayError::PaymentRequired)?;
    let payment = decode(gw, raw)?;
    let offer = find_offer(&ctx.challenge.offers, &payment).map_err(GatewayError::OfferMismatch)?;
    let verified = verify(gw, ctx, offer, &payment).await?;
    // Only a verified payer is recorded: a forged payment must not file records under a wallet.
    trail.wallet = Some(verified.authorization.from);
    let id = reserve(gw, ctx, &parts, &verified).await?;
    trail.accepted = true;
    trail.entry_id = Some(id.to_string());
    match ctx.entry.route.settlement {
        SettlementMode::After => settle_after(gw, ctx, trail, &id, &verified, parts, body).await,
        SettlementMode::Before => settle_before(gw, ctx, trail, &id, &verified, parts, body).await,
        SettlementMode::Deferred => settle_deferred(gw, ctx, &id, parts, body).await,
    }
}

/// Phase 1: the route, by path then method. Unknown paths are 404, never 402.
fn match_route(gw: &Gateway, parts: &Parts) -> Result<Ctx, GatewayError> {
    let path = parts.uri.path();
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
    match host {
        Some(h) => format!("http://{h}"),
        None => format!("http://{}", gw.config.server.listen),
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

/// Phase 4: the full check, or for deferred routes the signature plus a cached balance
/// check against this payer's pending spend (no RPC per request once cached).
async fn verify(
    gw: &Gateway,
    ctx: &Ctx,
    offer: &v2::PaymentRequirements,
    payment: &PaymentPayload,
) -> Result<VerifiedPayment, GatewayError> {
    if ctx.entry.route.settlement != SettlementMode::Deferred {
        return gw.verifier.verify(offer, payment).await.map_err(GatewayError::Verify);
    }
    let verified = gw.verifier.verify_signature_only(offer, payment).await.map_err(GatewayError::Verify)?;
    let a = &verified.authorization;
    let balance = cached_balance(gw, &verified).await?;
    let pending = gw.ledger.pending_spend(verified.chain_id, verified.asset, a.from).await?;
    let available = balance.saturating_sub(alloy_primitives::U256::from(pending));
    if available < a.value {
        return Err(GatewayError::Verify(VerifyError::InsufficientBalance { balance: available, required: a.value }));
    }
    Ok(verified)
}

async fn cached_balance(gw: &Gateway, p: &VerifiedPayment) -> Result<alloy_primitives::U256, GatewayError> {
    let key = (p.chain_id, p.asset, p.authorization.from);
    let ttl = Duration::from_millis(gw.config.verification.balance_cache_ttl_ms);
    if let Ok(cache) = gw.balances.lock()
        && let Some((balance, at)) = cache.get(&key)
        && at.elapsed() < ttl
    {
        return Ok(*balance);
    }
    let balance =
        gw.verifier.token_balance(p.chain_id, p.asset, p.authorization.from).await.map_err(GatewayError::Verify)?;
    if let Ok(mut cache) = gw.balances.lock() {
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(key, (balance, Instant::now()));
    }
    Ok(balance)
}

/// Phase 6: the spend is recorded before anything is forwarded. The database's unique
/// key on (chain, asset, payer, nonce) makes this the single point where a replay loses,
/// across every replica sharing the database.
async fn reserve(gw: &Gateway, ctx: &Ctx, parts: &Parts, p: &VerifiedPayment) -> Result<EntryId, GatewayError> {
    let a = &p.authorization;
    let amount = AtomicAmount::from_u256(a.value)
        .ok_or_else(|| GatewayError::Internal("price does not fit the ledger's amount range".to_owned()))?;
    let payment = serde_json::to_string(p).map_err(|e| GatewayError::Internal(format!("payment JSON: {e}")))?;
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
        mode: ctx.entry.route.settlement,
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

/// Phase 7: forward with the credential injected.
async fn forward(gw: &Gateway, ctx: &Ctx, parts: &Parts, body: Body, buffer: bool) -> Result<Upstream, GatewayError> {
    let url = proxy::upstream_url(
        &ctx.entry.provider.upstream,
        &ctx.path,
        ctx.entry.provider.strip_prefix.as_deref(),
        ctx.query.as_deref(),
    );
    let target = Target {
        url,
        credential: ctx.credential.as_ref().map(|c| (&c.injection, &c.secret)),
        timeout: ctx.entry.route.upstream_timeout,
        body_bytes_max: ctx.entry.route.body_bytes_max,
        response_bytes_max: gw.config.server.response_bytes_max,
    };
    proxy::forward(&gw.http, target, parts.method.clone(), &parts.headers, body, buffer).await
}

/// Voids the entry: the upstream failed, nothing is charged.
async fn void(gw: &Gateway, id: &EntryId, from: EntryState, reason: &str) {
    let t = Transition::Voided { reason: reason.to_owned() };
    if let Err(e) = gw.ledger.transition_from(id, from, t, reason, None, gw.clock.now_unix_s()).await {
        tracing::error!(%id, error = %e, "could not void an entry; recovery will");
    }
}

fn void_cause(e: &GatewayError) -> &'static str {
    match e {
        GatewayError::UpstreamTimeout => "upstream_timeout",
        GatewayError::BodyTooLarge { .. } => "request_body_too_large",
        GatewayError::UpstreamResponseTooLarge { .. } => "upstream_response_too_large",
        _ => "upstream_unavailable",
    }
}

fn upstream_failed_cause(status: StatusCode) -> &'static str {
    if status.is_server_error() { "upstream_5xx" } else { "upstream_4xx" }
}

async fn forwarded(gw: &Gateway, id: &EntryId, status: StatusCode) -> Result<(), GatewayError> {
    let t = Transition::Forwarded { upstream_status: Some(status.as_u16()) };
    gw.ledger.transition_from(id, EntryState::Reserved, t, "upstream_ok", None, gw.clock.now_unix_s()).await?;
    Ok(())
}

fn receipt(p: &VerifiedPayment, tx: alloy_primitives::B256) -> SettleResponse {
    SettleResponse {
        success: true,
        error_reason: None,
        payer: Some(p.payer()),
        transaction: format!("{tx:#x}"),
        network: format!("eip155:{}", p.chain_id),
    }
}

fn failed_receipt(p: &VerifiedPayment, reason: &str) -> SettleResponse {
    SettleResponse {
        success: false,
        error_reason: Some(reason.to_owned()),
        payer: Some(p.payer()),
        transaction: String::new(),
        network: format!("eip155:{}", p.chain_id),
    }
}

fn respond(up: Upstream, receipt: Option<&SettleResponse>, extra: &[(&'static str, String)], cap: u64) -> Response {
    let mut headers = up.headers;
    if let Some(r) = receipt {
        attach_receipt(&mut headers, r);
    }
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    (up.status, headers, proxy::into_body(up.body, cap)).into_response()
}

/// What the upstream delivered, for the modes that charge only for a successful delivery.
enum Delivered {
    /// 2xx/3xx, read in full; the entry is still `reserved` (the caller records `forwarded`).
    Ok(Upstream),
    /// The upstream's own failure, relayed; the entry is `voided`.
    Failed(Response),
}

/// Forwards (body read in full); an upstream failure or a transport error (returned as the
/// error) voids the entry before the agent hears of it.
async fn forward_or_void(
    gw: &Gateway,
    ctx: &Ctx,
    id: &EntryId,
    parts: &Parts,
    body: Body,
) -> Result<Delivered, GatewayError> {
    let up = match forward(gw, ctx, parts, body, true).await {
        Ok(up) => up,
        Err(e) => {
            void(gw, id, EntryState::Reserved, void_cause(&e)).await;
            return Err(e);
        }
    };
    if !up.succeeded() {
        void(gw, id, EntryState::Reserved, upstream_failed_cause(up.status)).await;
        return Ok(Delivered::Failed(respond(up, None, &[], gw.config.server.response_bytes_max)));
    }
    Ok(Delivered::Ok(up))
}

/// Forwards and records the outcome: `forwarded` on success (before the caller settles),
/// `voided` on failure.
async fn forward_then_record(
    gw: &Gateway,
    ctx: &Ctx,
    id: &EntryId,
    parts: &Parts,
    body: Body,
) -> Result<Delivered, GatewayError> {
    let delivered = forward_or_void(gw, ctx, id, parts, body).await?;
    if let Delivered::Ok(up) = &delivered {
        forwarded(gw, id, up.status).await?;
    }
    Ok(delivered)
}

/// Mode `after` (x402 default): forward, then settle only if the upstream succeeded.
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
    let up = match forward_then_record(gw, ctx, id, &parts, body).await? {
        Delivered::Ok(up) => up,
        Delivered::Failed(response) => return Ok(response),
    };
    trail.upstream_status = Some(up.status.as_u16());
    match settle_entry(gw, id, EntryState::Forwarded, p, "settle_after", Waiter::Call).await {
        Ok(SettleResult::Settled(s)) => {
            trail.tx_hash = Some(format!("{:#x}", s.tx_hash));
            Ok(respond(up, Some(&receipt(p, s.tx_hash)), &[], cap))
        }
        // Sent and simulated, not yet mined: the payment is made; the receipt says so and
        // the entry is resolved by the recovery sweep. The agent must not pay again.
        Ok(SettleResult::Pending(tx)) => {
            trail.tx_hash = Some(format!("{tx:#x}"));
            Ok(respond(up, Some(&receipt(p, tx)), &[("tollgate-settlement", "pending".to_owned())], cap))
        }
        Err(e) => Err(settlement_failed(gw, id, p, e).await),
    }
}

/// A settlement that failed before anything was broadcast (or whose transaction reverted):
/// the body is withheld and nothing is charged.
async fn settlement_failed(gw: &Gateway, id: &EntryId, p: &VerifiedPayment, e: SettleError) -> GatewayError {
    let reason = match &e {
        SettleError::Verify(v) => v.reason_code(),
        _ => "unexpected_settle_error",
    };
    tracing::warn!(%id, error = %e, "settlement failed");
    let t = Transition::SettleFailed { reason: reason.to_owned() };
    let _ = gw.ledger.transition_from(id, EntryState::Forwarded, t, reason, None, gw.clock.now_unix_s()).await;
    GatewayError::SettlementFailed(failed_receipt(p, reason))
}

/// Mode `before`: settle first, then forward; an upstream failure after settlement is
/// recorded as a refund owed to the payer.
async fn settle_before(
    gw: &Gateway,
    ctx: &Ctx,
    trail: &mut Trail,
    id: &EntryId,
    p: &VerifiedPayment,
    parts: Parts,
    body: Body,
) -> Result<Response, GatewayError> {
    let cap = gw.config.server.response_bytes_max;
    let tx = match settle_entry(gw, id, EntryState::Reserved, p, "settle_before", Waiter::Call).await {
        Ok(SettleResult::Settled(s)) => s.tx_hash,
        Ok(SettleResult::Pending(tx)) => tx,
        Err(e) => {
            let reason = match &e {
                SettleError::Verify(v) => v.reason_code(),
                _ => "unexpected_settle_error",
            };
            void(gw, id, EntryState::Reserved, reason).await;
            return Err(GatewayError::SettlementFailed(failed_receipt(p, reason)));
        }
    };
    trail.tx_hash = Some(format!("{tx:#x}"));
    let paid = receipt(p, tx);
    match forward(gw, ctx, &parts, body, false).await {
        Ok(up) if up.succeeded() => Ok(respond(up, Some(&paid), &[], cap)),
        Ok(up) => {
            refund_owed(gw, id, upstream_failed_cause(up.status)).await;
            Ok(respond(up, Some(&paid), &[], cap))
        }
        Err(e) => {
            refund_owed(gw, id, void_cause(&e)).await;
            Err(e)
        }
    }
}

async fn refund_owed(gw: &Gateway, id: &EntryId, reason: &str) {
    let now = gw.clock.now_unix_s();
    let t = Transition::RefundOwed { reason: reason.to_owned() };
    for from in [EntryState::Settled, EntryState::Settling] {
        if let Ok(true) = gw.ledger.transition_from(id, from, t.clone(), reason, None, now).await {
            return;
        }
    }
    tracing::error!(%id, reason, "could not record a refund owed");
}

/// Mode `deferred`: answer right after the upstream succeeds; a background worker settles.
async fn settle_deferred(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    id: &EntryId,
    parts: Parts,
    body: Body,
) -> Result<Response, GatewayError> {
    let cap = gw.config.server.response_bytes_max;
    let up = match forward_or_void(gw, ctx, id, &parts, body).await? {
        Delivered::Ok(up) => up,
        Delivered::Failed(response) => return Ok(response),
    };
    mark_forwarded_then_queue(gw, id.clone(), up.status);
    // No x402 receipt yet: a `success:true` receipt without a transaction would make clients
    // count the call as settled (and fails the v1 receipt schema). The receipt id tells the
    // agent where to look; `GET /receipts/{id}` reports the transaction once it is mined.
    let extra = [("tollgate-receipt", id.to_string()), ("tollgate-settlement", "deferred".to_owned())];
    Ok(respond(up, None, &extra, cap))
}

/// Longest wait between attempts at a deferred call's `forwarded` mark.
const MARK_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Deferred routes: the `forwarded` mark is written beside the response instead of before
/// it (the spend was reserved before forwarding; the mark only makes the entry eligible for
/// settlement), then the entry is queued for the worker. Transient ledger errors (a database
/// restart or failover) are retried with capped backoff for up to half the recovery grace
/// period, so the sweep never sees an entry whose mark is still being retried. If the process
/// dies first, or the deadline passes, the entry stays `reserved` and the sweep voids it with
/// `recovery_delivery_unknown`: the call may have been served and is not charged, which is
/// the side of the risk a deferred route already takes for a payer who empties the wallet
/// before settlement. Shutdown waits for these writes (`marks_pending`).
fn mark_forwarded_then_queue(gw: &Arc<Gateway>, id: EntryId, status: StatusCode) {
    struct Pending(Arc<std::sync::atomic::AtomicU64>);
    impl Drop for Pending {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
    gw.marks_pending.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let pending = Pending(gw.marks_pending.clone());
    let gw = gw.clone();
    tokio::spawn(async move {
        let _pending = pending;
        let deadline = Instant::now() + Duration::from_secs(gw.config.settlement.recovery_grace_s / 2);
        let t = Transition::Forwarded { upstream_status: Some(status.as_u16()) };
        let mut backoff = Duration::from_millis(20);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let now = gw.clock.now_unix_s();
            match gw.ledger.transition_from(&id, EntryState::Reserved, t.clone(), "upstream_ok", None, now).await {
                Ok(true) => {
                    queue(&gw, &id);
                    return;
                }
                // Not `reserved` any more: an earlier attempt may have committed after its
                // client-side timeout. Only a `forwarded` entry goes on to the worker.
                Ok(false) => break,
                Err(e) if e.is_retryable() && Instant::now() + backoff < deadline => {
                    tracing::warn!(%id, attempt, error = %e, "forwarded mark will be retried");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MARK_BACKOFF_MAX);
                }
                Err(e) => {
                    tracing::error!(%id, attempt, error = %e, "could not write a deferred call's forwarded mark");
                    break;
                }
            }
        }
        queue_if_forwarded(&gw, &id).await;
    });
}

/// Hands a `forwarded` deferred entry to the worker.
fn queue(gw: &Gateway, id: &EntryId) {
    if gw.deferred_tx.try_send(id.clone()).is_err() {
        // The queue is full: the entry is durable in the ledger and the worker's backlog
        // sweep will settle it.
        tracing::warn!(%id, "deferred queue full; left to the backlog sweep");
    }
}

/// Hands a deferred entry to the worker if it is `forwarded`; says so in the log otherwise.
async fn queue_if_forwarded(gw: &Gateway, id: &EntryId) {
    match gw.ledger.entry(id).await {
        Ok(Some(e)) if e.state == EntryState::Forwarded => queue(gw, id),
        Ok(Some(e)) if e.state == EntryState::Reserved => {
            tracing::error!(%id, "served deferred call left `reserved`; recovery will void it uncharged");
        }
        // Already past `forwarded` (a worker or the sweep has it) or voided.
        Ok(Some(_)) => {}
        Ok(None) => tracing::error!(%id, "deferred entry vanished before its forwarded mark"),
        Err(e) => tracing::warn!(%id, error = %e, "ledger unavailable; the backlog sweep will queue the entry"),
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
                "network": format!("eip155:{}", e.chain_id),
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
