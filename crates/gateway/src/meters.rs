//! The metric families the request path updates, one set per process (`Gateway::metrics`):
//! paid calls by route, mode and outcome; phase latency histograms; settlement
//! broadcast→receipt latency; what the public listener's limits did; and the cached count of
//! ledger entries by state that scrapes reuse. `crate::metrics` renders them with what other
//! parts already count.
//!
//! Must not: import the gateway's state (`app`, `settlement`, `listener`, `limits` and `paid`
//! update these families; the rendering that reads the rest lives above `app`), do IO on the
//! request path, or use a label whose values the public can choose (a concrete path, a payer,
//! a header): routes are labelled by their pattern name (`provider:/pattern`), which only the
//! operator and providers create.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tollgate_metering::{Ledger, StateCounts};

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
pub(crate) struct NetworkLabels {
    pub(crate) network: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) reason: String,
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

    /// The ledger's entries by state, at most [`STATE_COUNTS_TTL`] old (the count scans the
    /// entries table, so scrapes reuse it); `None` when the ledger does not answer.
    pub(crate) async fn state_counts(&self, ledger: &Ledger) -> Option<StateCounts> {
        if let Ok(cache) = self.state_counts.lock()
            && let Some((at, counts)) = cache.as_ref()
            && at.elapsed() < STATE_COUNTS_TTL
        {
            return Some(counts.clone());
        }
        match ledger.spend().state_counts().await {
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

    /// Registers the families the request path updates, in the order `/metrics` shows them.
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "paid_calls",
            "Paid attempts by route pattern, settlement mode and outcome code",
            self.paid_calls.clone(),
        );
        r.register("call_seconds", "Whole paid call latency by route", self.call_seconds.clone());
        r.register("verify_seconds", "Payment verification latency by route", self.verify_seconds.clone());
        r.register("reserve_seconds", "Ledger reservation latency by route", self.reserve_seconds.clone());
        r.register("upstream_seconds", "Upstream request latency by route", self.upstream_seconds.clone());
        r.register(
            "settlement_receipt_seconds",
            "Settlement wait from broadcast to receipt, by network",
            self.settlement_receipt_seconds.clone(),
        );

        let l = &self.listener;
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
    }
}
