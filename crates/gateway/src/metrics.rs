//! Prometheus metrics, served as text by `GET /metrics` on the admin listener.
//!
//! Owns the metric families the request path updates (paid calls by route, mode and outcome;
//! phase latency histograms; settlement broadcast→receipt latency) and the rendering, which
//! adds at scrape time what other parts already count: the deferred backlog, ledger entries
//! by state (a cached count query), the relayers as the readiness monitor last saw them, RPC
//! calls and errors per method (counted by the verifier's `RpcStats`), the audit queue, the
//! control-plane version and [`crate::counters::Counters`].
//!
//! Must not: use a label whose values the public can choose (a concrete path, a payer, a
//! header): routes are labelled by their pattern name (`provider:/pattern`), which only the
//! operator and providers create. Nothing here does IO on the request path.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tollgate_metering::StateCounts;

use crate::app::Gateway;

/// How long a ledger count by state is reused between scrapes (it scans the entries table).
pub const STATE_COUNTS_TTL: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    route: String,
    mode: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabels {
    network: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    network: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 1 ms to about 65 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// How long each phase of one paid call took (absent: the phase did not run).
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    /// Verification (signature, RPC checks).
    pub verify: Option<Duration>,
    /// The ledger reservation (with the wallet policy).
    pub reserve: Option<Duration>,
    /// The upstream request, to its answer's head (and body when buffered).
    pub upstream: Option<Duration>,
    /// Settlement as the call waited for it (claim, broadcast, receipt).
    pub settle: Option<Duration>,
}

/// What the public listener's limits did (`crate::limits`), by reason: a fixed set of
/// values, never anything a client chooses.
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    accepted: Counter,
    open: Gauge,
    closed: Family<ReasonLabels, Counter>,
    limited: Family<ReasonLabels, Counter>,
}

impl ListenerMetrics {
    /// A connection was accepted and is now open (counted until [`ListenerMetrics::closed`]).
    pub fn opened(&self) {
        self.accepted.inc();
        self.open.inc();
    }

    /// An accepted connection ended (for any reason).
    pub fn closed(&self) {
        self.open.dec();
    }

    /// A connection the listener closed itself: `connection_cap` (refused on accept),
    /// `header_timeout`, `idle_timeout`, `tls_handshake`.
    pub fn cut(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// A request answered by a limit instead of the gateway: `overloaded`, `request_timeout`,
    /// `rate_limited`, `headers_too_large`, `uri_too_long`, or `unfunded_cached` (a payment
    /// refused from the balance cache without an RPC call).
    pub fn limited(&self, reason: &'static str) {
        self.limited.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// How many requests `reason` has answered (tests, benchmarks).
    pub fn limited_count(&self, reason: &'static str) -> u64 {
        self.limited.get_or_create(&ReasonLabels { reason: reason.to_owned() }).get()
    }

    /// How many connections were closed for `reason` (tests, benchmarks).
    pub fn cut_count(&self, reason: &'static str) -> u64 {
        self.closed.get_or_create(&ReasonLabels { reason: reason.to_owned() }).get()
    }

    /// Connections open now.
    pub fn open_now(&self) -> i64 {
        self.open.get()
    }
}

/// The families the request path updates (one per process).
#[derive(Debug)]
pub struct Metrics {
    /// The public listener's limits.
    pub listener: ListenerMetrics,
    paid_calls: Family<CallLabels, Counter>,
    call_seconds: Histograms<RouteLabels>,
    verify_seconds: Histograms<RouteLabels>,
    reserve_seconds: Histograms<RouteLabels>,
    upstream_seconds: Histograms<RouteLabels>,
    settlement_receipt_seconds: Histograms<NetworkLabels>,
    state_counts: Mutex<Option<(Instant, StateCounts)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let h = || Histograms::new_with_constructor(latency_histogram as fn() -> Histogram);
        Metrics {
            listener: ListenerMetrics::default(),
            paid_calls: Family::default(),
            call_seconds: h(),
            verify_seconds: h(),
            reserve_seconds: h(),
            upstream_seconds: h(),
            settlement_receipt_seconds: Histograms::new_with_constructor(latency_histogram as fn() -> Histogram),
            state_counts: Mutex::new(None),
        }
    }
}

impl Metrics {
    /// Records one paid attempt: its route (pattern name), mode, outcome code and phases.
    pub fn paid_call(&self, route: &str, mode: &str, outcome: &str, total: Duration, t: &Timings) {
        let labels = CallLabels { route: route.to_owned(), mode: mode.to_owned(), outcome: outcome.to_owned() };
        self.paid_calls.get_or_create(&labels).inc();
        let route = RouteLabels { route: route.to_owned() };
        self.call_seconds.get_or_create(&route).observe(total.as_secs_f64());
        for (family, d) in
            [(&self.verify_seconds, t.verify), (&self.reserve_seconds, t.reserve), (&self.upstream_seconds, t.upstream)]
        {
            if let Some(d) = d {
                family.get_or_create(&route).observe(d.as_secs_f64());
            }
        }
    }

    /// Records a settlement's wait from broadcast to its receipt.
    pub fn settlement_receipt(&self, network: &str, elapsed: Duration) {
        let labels = NetworkLabels { network: network.to_owned() };
        self.settlement_receipt_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    async fn state_counts(&self, gw: &Gateway) -> Option<StateCounts> {
        if let Ok(cache) = self.state_counts.lock()
            && let Some((at, counts)) = cache.as_ref()
            && at.elapsed() < STATE_COUNTS_TTL
        {
            return Some(counts.clone());
        }
        match gw.ledger.spend().state_counts().await {
            Ok(counts) => {
                if let Ok(mut cache) = self.state_counts.lock() {
                    *cache = Some((Instant::now(), counts.clone()));
                }
                Some(counts)
            }
            Err(e) => {
                // A scrape without entry counts is better than no scrape: the database
                // being down shows in `tollgate_ready` and the readiness checks.
                tracing::warn!(error = %e, "metrics: ledger counts unavailable");
                None
            }
        }
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Renders every metric in the Prometheus text format.
pub async fn render(gw: &Gateway) -> String {
    let m = &gw.metrics;
    let mut r = Registry::with_prefix("tollgate");
    r.register("paid_calls", "Paid attempts by route pattern, settlement mode and outcome code", m.paid_calls.clone());
    r.register("call_seconds", "Whole paid call latency by route", m.call_seconds.clone());
    r.register("verify_seconds", "Payment verification latency by route", m.verify_seconds.clone());
    r.register("reserve_seconds", "Ledger reservation latency by route", m.reserve_seconds.clone());
    r.register("upstream_seconds", "Upstream request latency by route", m.upstream_seconds.clone());
    r.register(
        "settlement_receipt_seconds",
        "Settlement wait from broadcast to receipt, by network",
        m.settlement_receipt_seconds.clone(),
    );

    let l = &m.listener;
    r.register("connections_accepted", "Connections accepted by the public listener", l.accepted.clone());
    r.register("connections_open", "Connections open on the public listener", l.open.clone());
    r.register(
        "connections_closed_by_limit",
        "Connections the public listener closed itself, by reason (connection_cap, header_timeout, idle_timeout, \
         tls_handshake)",
        l.closed.clone(),
    );
    r.register(
        "requests_limited",
        "Requests answered by a listener limit, by reason (overloaded, request_timeout, rate_limited, \
         headers_too_large, uri_too_long, unfunded_cached)",
        l.limited.clone(),
    );

    let now = gw.clock.now_unix_s();
    gauge(
        &mut r,
        "deferred_backlog",
        "Deferred payments admitted and not settled (this process)",
        as_i64(gw.settlements.backlog.len()),
    );
    gauge(
        &mut r,
        "deferred_settlements_per_second",
        "Measured deferred settlement throughput (best second of the last minute)",
        as_i64(gw.settlements.backlog.throughput_per_s(now)),
    );
    if let Some(counts) = m.state_counts(gw).await {
        let family: Family<StateLabels, Gauge> = Family::default();
        for state in tollgate_metering::EntryState::ALL {
            let n = counts.by_state.iter().find(|(s, _)| *s == state).map(|(_, n)| *n).unwrap_or(0);
            family.get_or_create(&StateLabels { state: state.as_str().to_owned() }).set(as_i64(n));
        }
        r.register("ledger_entries", "Ledger entries by state (the whole ledger: every replica's)", family);
        let lag = counts.oldest_unsettled_deferred_unix_s.map(|t| now.saturating_sub(t)).unwrap_or(0);
        gauge(
            &mut r,
            "settlement_lag_seconds",
            "Age of the oldest deferred entry not yet settled (0: none)",
            as_i64(lag),
        );
    }

    let (ready, relayers) = match gw.readiness.last_report() {
        Some(report) => (report.ready, report.relayers.clone()),
        None => (false, Vec::new()),
    };
    gauge(&mut r, "ready", "1 when every readiness check passed at the last check", i64::from(ready));
    let balance: Family<NetworkLabels, Gauge<f64, AtomicU64>> = Family::default();
    let nonce: Family<NetworkLabels, Gauge> = Family::default();
    let pending: Family<NetworkLabels, Gauge> = Family::default();
    let cost: Family<NetworkLabels, Gauge<f64, AtomicU64>> = Family::default();
    for s in &relayers {
        let l = NetworkLabels { network: s.network.clone() };
        // Wei do not fit an i64; a float is exact enough for a gauge (never for money).
        balance.get_or_create(&l).set(f64::from(s.balance_wei));
        cost.get_or_create(&l).set(f64::from(s.settlement_cost_wei));
        nonce.get_or_create(&l).set(as_i64(s.nonce));
        pending.get_or_create(&l).set(as_i64(s.pending));
    }
    r.register("relayer_balance_wei", "Relayer native balance (last readiness check)", balance);
    r.register("relayer_settlement_cost_wei", "Cost of one settlement at the current fee cap", cost);
    r.register("relayer_nonce", "Relayer next nonce, pending included", nonce);
    r.register("relayer_pending_transactions", "Relayer transactions sent and not mined", pending);

    let calls: Family<RpcLabels, Counter> = Family::default();
    let errors: Family<RpcLabels, Counter> = Family::default();
    for (network, stats) in &gw.rpc_stats {
        for (method, c) in stats.snapshot() {
            let l = RpcLabels { network: network.clone(), method: method.to_owned() };
            calls.get_or_create(&l).inc_by(c.calls);
            errors.get_or_create(&l).inc_by(c.errors);
        }
    }
    r.register("rpc_calls", "JSON-RPC calls by network and method", calls);
    r.register("rpc_errors", "JSON-RPC calls that failed (transport, timeout, error object)", errors);

    gauge(
        &mut r,
        "audit_queue_depth",
        "Audit records queued and not yet committed",
        as_i64(u64::try_from(gw.audit_pending.len()).unwrap_or(u64::MAX)),
    );
    gauge(&mut r, "control_version", "Control-plane version of this replica's snapshot", as_i64(gw.live.get().version));

    let unaudited: Family<ReasonLabels, Counter> = Family::default();
    for (name, label, value) in gw.counters.snapshot() {
        if name == "payment_attempts_unaudited" {
            unaudited.get_or_create(&ReasonLabels { reason: label.to_owned() }).inc_by(value);
        } else {
            let c: Counter = Counter::default();
            c.inc_by(value);
            r.register(name, "See crates/gateway/src/counters.rs", c);
        }
    }
    r.register(
        "payment_attempts_unaudited",
        "Payment attempts refused before their payment verified, by reason code",
        unaudited,
    );

    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &r) {
        tracing::error!(error = %e, "metrics: encoding failed");
    }
    out
}
