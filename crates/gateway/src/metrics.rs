//! `/metrics`: the `MetricsRender` service, which renders the families the request path
//! updates (`crate::meters`) with what other parts already count, read at scrape time: the
//! deferred backlog, ledger entries by state (a cached count query), the relayers as the
//! readiness monitor last saw them, RPC calls and errors per method (counted by the verifier's
//! `RpcStats`), the audit queue, the control-plane version and [`crate::counters::Counters`].
//! Served as text by `GET /metrics` on the admin listener. It sits above `app`: it reads the
//! gateway's parts, and `app` does not import it.
//!
//! Must not: use a label whose values the public can choose (a concrete path, a payer, a
//! header); do anything on the request path (it runs per scrape).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::task::TaskTracker;
use tollgate_metering::Ledger;
use tollgate_verifier::{Clock, RpcStats};

use crate::admission::Backlog;
use crate::app::Gateway;
use crate::control::Live;
use crate::counters::Counters;
use crate::meters::{Metrics, NetworkLabels, ReasonLabels};
use crate::readiness::Readiness;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    network: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// What a scrape reads.
pub struct MetricsRender {
    /// The families the request path updates (and the cached entry counts).
    metrics: Arc<Metrics>,
    /// Entries by state.
    ledger: Ledger,
    /// Now, for the deferred throughput and the settlement lag.
    clock: Arc<dyn Clock>,
    /// The deferred backlog and its measured throughput.
    backlog: Arc<Backlog>,
    /// The last readiness report: ready, and the relayers.
    readiness: Arc<Readiness>,
    /// RPC calls and errors per method, per network (CAIP-2 id).
    rpc_stats: Vec<(String, Arc<RpcStats>)>,
    /// Audit records queued and not yet committed.
    audit_pending: TaskTracker,
    /// The control-plane version.
    live: Arc<Live>,
    /// The process's counters.
    counters: Arc<Counters>,
}

impl std::fmt::Debug for MetricsRender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRender").finish_non_exhaustive()
    }
}

impl MetricsRender {
    /// The render of `gw`'s parts (shared handles: cheap to build).
    pub fn new(gw: &Gateway) -> MetricsRender {
        MetricsRender {
            metrics: gw.metrics.clone(),
            ledger: gw.ledger.clone(),
            clock: gw.clock.clone(),
            backlog: gw.settlements.backlog.clone(),
            readiness: gw.readiness.clone(),
            rpc_stats: gw.rpc_stats.clone(),
            audit_pending: gw.audit_pending.clone(),
            live: gw.live.clone(),
            counters: gw.counters.clone(),
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub async fn render(&self) -> String {
        let mut r = Registry::with_prefix("tollgate");
        self.metrics.register(&mut r);

        let now = self.clock.now_unix_s();
        gauge(
            &mut r,
            "deferred_backlog",
            "Deferred payments admitted and not settled (this process)",
            as_i64(self.backlog.len()),
        );
        gauge(
            &mut r,
            "deferred_settlements_per_second",
            "Measured deferred settlement throughput (best second of the last minute)",
            as_i64(self.backlog.throughput_per_s(now)),
        );
        if let Some(counts) = self.metrics.state_counts(&self.ledger).await {
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

        let (ready, relayers) = match self.readiness.last_report() {
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
        for (network, stats) in &self.rpc_stats {
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
            i64::try_from(self.audit_pending.len()).unwrap_or(i64::MAX),
        );
        gauge(
            &mut r,
            "control_version",
            "Control-plane version of this replica's snapshot",
            as_i64(self.live.get().version),
        );

        let unaudited: Family<ReasonLabels, Counter> = Family::default();
        for (name, label, value) in self.counters.snapshot() {
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
}

/// Renders `gw`'s metrics (what the admin listener's `GET /metrics` calls).
pub async fn render(gw: &Gateway) -> String {
    MetricsRender::new(gw).render().await
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
