//! Request limits of the public listener: what one request may cost before the gateway does
//! any work for it (docs/operations.md, Limits). The connection-level limits (cap, header
//! and keep-alive timeouts, TLS handshakes) are in `crate::listener`.
//!
//! In order, outermost first, for every request:
//! 1. the head: at most `headers_count_max` fields, `header_bytes_max` bytes of names and
//!    values, a target of at most `uri_bytes_max` bytes (431 `headers_too_large`, 414
//!    `uri_too_long`);
//! 2. a request without a payment header is answered within `request_timeout_ms` (503
//!    `request_timeout`); a paid call is not cut by a timer once it may have been charged:
//!    its phases have their own bounds (RPC timeout, the route's `upstream_timeout_ms`,
//!    `receipt_timeout_ms`);
//! 3. everything but the probes (`/healthz`, `/readyz`) shares `concurrency_max` slots; a
//!    request that finds none is shed at once (503 `overloaded`, `Retry-After`), with tower's
//!    `LoadShed` over a `GlobalConcurrencyLimit`;
//! 4. a request for a priced route takes a token from its client IP's bucket
//!    ([`PeerBudget`], `unpaid_per_ip_per_s`, `unpaid_per_ip_burst`); an empty bucket answers
//!    429 `rate_limited` with `Retry-After` before anything is decoded, read or asked of the
//!    chain. A payment that verifies gives its token back with one more (the 402 quote that
//!    preceded it); an answer of the gateway's own failing (5xx) gives it back too; a 4xx —
//!    no payment, a malformed, forged, expired, replayed or unfunded one — keeps it. So only
//!    requests that carry no valid payment count, and a flood of them, concurrent or not,
//!    costs at most `burst + rate × seconds` verifications per address.
//!
//! Why a bucket of our own and not `governor`: the rule above needs a token to be given
//! back once a payment verifies (otherwise a paying client's own concurrent calls would
//! count against it, or a flood of concurrent bad payments would all pass a check that only
//! counts failures after they happen); GCRA as `governor` implements it has no give-back.
//!
//! Payers known to be unfunded: [`verify_funded`] refuses a payment whose payer's balance
//! was read below the price within `[verification] balance_cache_ttl_ms` (the same cache as
//! deferred routes' balance checks) after the offline checks and without an RPC call, so a
//! flood reusing one unfunded wallet costs one verification per TTL and address set, not
//! four RPC calls a request.
//!
//! Client IPs are the socket's peer address (IPv6 grouped by /64, which one host usually
//! holds whole); `X-Forwarded-For` is not trusted. Behind a load balancer every client shares
//! its address: raise the limits or set `unpaid_per_ip_per_s = 0` there.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use tollgate_verifier::{VerifiedPayment, VerifierConfig, VerifyError, check_offline};
use tollgate_x402::{PaymentPayload, v2};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::app::Gateway;
use crate::balances::BalanceKey;
use crate::config::ServerLimits;
use crate::error::GatewayError;

/// Wraps the gateway's routes in the request limits: `probes` get the head checks and the
/// timeout only (a load balancer's health checks must not be shed or rate limited);
/// `calls` (paid routes, receipts) get all of them.
pub fn layered(gw: &Arc<Gateway>, probes: Router, calls: Router) -> Router {
    let limits = &gw.config.server.limits;
    let budget = PeerBudget::new(limits.unpaid_per_ip_per_s, limits.unpaid_per_ip_burst).map(Arc::new);
    let calls = calls.layer(axum::Extension(Budget(budget)));
    let shed_gw = gw.clone();
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |_: tower::BoxError| {
            let gw = shed_gw.clone();
            async move {
                gw.metrics.listener.limited("overloaded");
                GatewayError::Overloaded.rescue(None)
            }
        }))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(limits.concurrency_max))
        .service(calls);
    let front = Arc::new(Front { gw: gw.clone(), limits: limits.clone() });
    probes.fallback_service(shed).layer(axum::middleware::from_fn_with_state(front, front_checks))
}

struct Front {
    gw: Arc<Gateway>,
    limits: ServerLimits,
}

/// Whether the request carries a payment header (v2 or v1).
fn carries_payment(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key("payment-signature") || headers.contains_key("x-payment")
}

/// Steps 1 and 2: the head's size, then the timeout of requests without a payment.
async fn front_checks(State(front): State<Arc<Front>>, request: Request, next: Next) -> Response {
    if let Err(e) = check_head(&front.limits, &request) {
        front.gw.metrics.listener.limited(e.code());
        return e.rescue(None);
    }
    if carries_payment(request.headers()) {
        return next.run(request).await;
    }
    match tokio::time::timeout(front.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            front.gw.metrics.listener.limited("request_timeout");
            GatewayError::RequestTimeout.rescue(None)
        }
    }
}

/// Step 1. The HTTP parser holds a hard cap above these (`crate::listener`); within it, the
/// configured limits answer with a code.
fn check_head(limits: &ServerLimits, request: &Request) -> Result<(), GatewayError> {
    let uri = request.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len()) + uri.authority().map_or(0, |a| a.as_str().len());
    if target > limits.uri_bytes_max {
        return Err(GatewayError::UriTooLong { part: "target", limit_bytes: limits.uri_bytes_max });
    }
    let headers = request.headers();
    if headers.len() > limits.headers_count_max {
        return Err(GatewayError::HeadersTooLarge { what: "fields", limit: limits.headers_count_max });
    }
    // As on the wire: `name: value\r\n`.
    let bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if bytes > limits.header_bytes_max {
        return Err(GatewayError::HeadersTooLarge { what: "bytes", limit: limits.header_bytes_max });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Step 4: requests without a valid payment, per client IP.

/// The per-IP buckets (absent when `unpaid_per_ip_per_s = 0`), as a request extension.
#[derive(Clone)]
struct Budget(Option<Arc<PeerBudget>>);

/// Token buckets by client address: `burst` tokens, refilled at `rate` a second. Sharded
/// maps under short locks; at most [`PEERS_MAX`] addresses are tracked (full buckets are
/// forgotten first: they hold nothing a new one would not).
#[derive(Debug)]
pub struct PeerBudget {
    rate: f64,
    burst: f64,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
    hasher: RandomState,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

const SHARDS: usize = 16;
/// Client addresses tracked at once (about 40 bytes each).
pub const PEERS_MAX: usize = 65_536;

impl Bucket {
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }
}

/// The address a limit is kept for: IPv4 as is (IPv4-mapped IPv6 included), IPv6 by /64.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

impl PeerBudget {
    /// `None` when `rate` is 0 (no limit).
    pub fn new(rate: u32, burst: u32) -> Option<PeerBudget> {
        (rate > 0).then(|| PeerBudget {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        })
    }

    fn shard(&self, key: IpAddr) -> Option<std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>>> {
        let i = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        // A poisoned shard is still a map of numbers.
        Some(self.shards.get(i)?.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Takes a token for `key` (already [`peer_key`]ed), or says how long until one is there.
    pub fn take(&self, key: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let (rate, burst) = (self.rate, self.burst);
        let Some(mut shard) = self.shard(key) else { return Ok(()) };
        if shard.len() >= PEERS_MAX / SHARDS && !shard.contains_key(&key) {
            shard.retain(|_, b| {
                b.refill(now, rate, burst);
                b.tokens < burst
            });
            if shard.len() >= PEERS_MAX / SHARDS {
                // More addresses are short of tokens than can be tracked: forget them all
                // rather than refuse addresses never seen (a flood from so many addresses is
                // not one a per-address limit can stop).
                tracing::warn!(tracked = shard.len(), "per-IP limit: too many addresses tracked; shard reset");
                shard.clear();
            }
        }
        let bucket = shard.entry(key).or_insert(Bucket { tokens: burst, at: now });
        bucket.refill(now, rate, burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// Gives `n` tokens back to `key` (never above the burst).
    pub fn give_back(&self, key: IpAddr, n: f64) {
        let now = Instant::now();
        if let Some(mut shard) = self.shard(key)
            && let Some(b) = shard.get_mut(&key)
        {
            b.refill(now, self.rate, self.burst);
            b.tokens = (b.tokens + n).min(self.burst);
        }
    }
}

/// The token a request holds (request extension, so that [`payment_verified`] finds it).
#[derive(Clone)]
struct Held(Arc<HeldToken>);

struct HeldToken {
    budget: Arc<PeerBudget>,
    key: IpAddr,
    /// The token is out and its fate undecided.
    out: AtomicBool,
}

/// A request's token, from [`admit`] to [`Charge::finish`]. Dropped without a verdict, it
/// goes back.
#[must_use]
pub struct Charge(Option<Held>);

impl Charge {
    /// Ends the request's account. A request whose payment never verified keeps its token,
    /// whatever its status: a 5xx (the chain unavailable while checking a payment) still cost
    /// the RPC calls this budget bounds, so a flood that makes the node fail must not switch
    /// the limit off. A verified payment already had its token back; if the call was then
    /// refused by us with a 4xx (policy, body too large, body timeout: not charged), the
    /// tokens it got back are taken again, so a funded wallet refused every time is limited
    /// like any other request without a valid payment.
    pub fn finish(self, status: StatusCode, refused: bool) {
        let Some(h) = &self.0 else { return };
        let unverified = h.0.out.swap(false, Ordering::AcqRel);
        if !unverified && refused && status.is_client_error() {
            // The two given back at verification (its own and the quote's); an empty bucket
            // simply stays empty.
            let _ = h.0.budget.take(h.0.key);
            let _ = h.0.budget.take(h.0.key);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(h) = &self.0
            && h.0.out.swap(false, Ordering::AcqRel)
        {
            h.0.budget.give_back(h.0.key, 1.0);
        }
    }
}

/// Step 4, at the start of a call to a priced route: takes a token from the client's bucket,
/// or refuses with 429 `rate_limited` (before anything is decoded, read or verified).
pub fn admit(gw: &Gateway, parts: &mut Parts) -> Result<Charge, GatewayError> {
    let Some(Budget(Some(budget))) = parts.extensions.get::<Budget>().cloned() else { return Ok(Charge(None)) };
    let Some(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()) else {
        return Ok(Charge(None));
    };
    let key = peer_key(peer);
    match budget.take(key) {
        Ok(()) => {
            let held = Held(Arc::new(HeldToken { budget, key, out: AtomicBool::new(true) }));
            parts.extensions.insert(held.clone());
            Ok(Charge(Some(held)))
        }
        Err(wait) => {
            gw.metrics.listener.limited("rate_limited");
            let retry_after_s = wait.as_secs_f64().ceil().max(1.0);
            Err(GatewayError::RateLimited { retry_after_s: retry_after_s.min(3600.0) as u64 })
        }
    }
}

/// A payment of this request verified: its token goes back, with one more for the quote
/// (the unpaid 402) that usually precedes a payment, so a paying client is never limited by
/// its own paid calls.
pub fn payment_verified(parts: &Parts) {
    if let Some(h) = parts.extensions.get::<Held>()
        && h.0.out.swap(false, Ordering::AcqRel)
    {
        h.0.budget.give_back(h.0.key, 2.0);
    }
}

// ---------------------------------------------------------------------------------------
// Payers known to be unfunded.

/// Full verification, except that a payer whose balance was read below the price within the
/// balance cache's TTL is refused `insufficient_funds` without an RPC call (after the offline
/// checks, so a bad signature or an expired authorization is still told as such). A refusal
/// for want of balance is remembered.
///
/// `signer` is set to the payer when the payment is refused for want of balance after a full
/// verification: the verifier checks the signature before the balance, so that payer signed
/// (the audit record names it). A refusal from the cache leaves it unset: it is counted, not
/// audited, so repeating it grows nothing.
pub async fn verify_funded(
    gw: &Gateway,
    offer: &v2::PaymentRequirements,
    payment: &PaymentPayload,
    signer: &mut Option<Address>,
) -> Result<VerifiedPayment, VerifyError> {
    let a = &payment.exact().authorization;
    let key: BalanceKey = (offer.network.chain_id, offer.asset, a.from);
    let required = a.value.0;
    if let Some(balance) = known_balance(gw, &key)
        && balance < required
    {
        let config = VerifierConfig {
            valid_before_buffer_s: gw.config.verification.valid_before_buffer_s,
            validity_window_max_s: gw.config.verification.validity_window_max_s,
            ..VerifierConfig::default()
        };
        check_offline(offer, payment, gw.verifier.now_unix_s(), &config)?;
        gw.metrics.listener.limited("unfunded_cached");
        return Err(VerifyError::InsufficientBalance { balance, required });
    }
    let verified = gw.verifier.verify(offer, payment).await;
    if let Err(VerifyError::InsufficientBalance { balance, .. }) = &verified {
        gw.balances.remember(key, *balance);
        *signer = Some(a.from);
    }
    verified
}

/// The cached balance of `key`, when read within `[verification] balance_cache_ttl_ms`.
fn known_balance(gw: &Gateway, key: &BalanceKey) -> Option<U256> {
    gw.balances.known(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's charge as `admit` makes it: one token taken from `ip`'s bucket.
    fn charged(b: &Arc<PeerBudget>, ip: IpAddr) -> (Charge, Held) {
        b.take(ip).unwrap();
        let held = Held(Arc::new(HeldToken { budget: b.clone(), key: ip, out: AtomicBool::new(true) }));
        (Charge(Some(held.clone())), held)
    }

    /// How many tokens `ip` can take now (emptying its bucket).
    fn tokens_left(b: &PeerBudget, ip: IpAddr) -> usize {
        (0..100).take_while(|_| b.take(ip).is_ok()).count()
    }

    // Goal: a payment that never verified keeps its token whatever the answer, a 5xx included
    // (a chain failing under a flood must not switch the limit off); a verified payment gets
    // its token back plus the quote's; a verified call then refused by us with a 4xx has both
    // taken again; a request dropped without a verdict gives its token back.
    #[test]
    fn charge_outcomes() {
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let fresh = || Arc::new(PeerBudget::new(1, 5).unwrap());

        let b = fresh();
        let (charge, _) = charged(&b, ip);
        charge.finish(StatusCode::SERVICE_UNAVAILABLE, true);
        assert_eq!(tokens_left(&b, ip), 4, "an unverified payment answered 503 kept its token");

        let b = fresh();
        let (charge, _) = charged(&b, ip);
        charge.finish(StatusCode::PAYMENT_REQUIRED, true);
        assert_eq!(tokens_left(&b, ip), 4);

        let b = fresh();
        b.take(ip).unwrap(); // the quote before the payment
        let (charge, held) = charged(&b, ip);
        let mut parts = axum::http::Request::new(()).into_parts().0;
        parts.extensions.insert(held);
        payment_verified(&parts);
        charge.finish(StatusCode::OK, false);
        assert_eq!(tokens_left(&b, ip), 5, "a paid call costs its client nothing, quote included");

        let b = fresh();
        b.take(ip).unwrap();
        let (charge, held) = charged(&b, ip);
        let mut parts = axum::http::Request::new(()).into_parts().0;
        parts.extensions.insert(held);
        payment_verified(&parts);
        charge.finish(StatusCode::FORBIDDEN, true);
        assert_eq!(tokens_left(&b, ip), 3, "a verified call refused by policy counts like any refusal");

        let b = fresh();
        let (charge, _) = charged(&b, ip);
        drop(charge);
        assert_eq!(tokens_left(&b, ip), 5, "no verdict: the token goes back");
    }

    // Goal: a bucket holds `burst` tokens, refills at `rate`, says how long to wait when
    // empty, and a token given back is usable at once (never above the burst).
    #[test]
    fn bucket_takes_waits_and_gives_back() {
        let b = PeerBudget::new(2, 3).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..3 {
            b.take(ip).unwrap();
        }
        let wait = b.take(ip).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        b.give_back(ip, 1.0);
        b.take(ip).unwrap();
        b.give_back(ip, 100.0);
        for _ in 0..3 {
            b.take(ip).unwrap();
        }
        assert!(b.take(ip).is_err(), "never above the burst");
        // Another address has its own bucket.
        b.take("192.0.2.8".parse().unwrap()).unwrap();
        assert!(PeerBudget::new(0, 10).is_none(), "rate 0: no limit");
    }

    // Goal: IPv6 addresses of one /64 share a bucket; IPv4-mapped ones are their IPv4.
    #[test]
    fn peer_keys() {
        let a = peer_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = peer_key("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = peer_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(peer_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    // Goal: the tracked set stays bounded under a flood of addresses.
    #[test]
    fn tracked_addresses_are_bounded() {
        let b = PeerBudget::new(1, 1).unwrap();
        for i in 0..(PEERS_MAX as u32 * 2) {
            let _ = b.take(IpAddr::V4(std::net::Ipv4Addr::from(i)));
        }
        let tracked: usize = b.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(tracked <= PEERS_MAX, "{tracked}");
    }
}
