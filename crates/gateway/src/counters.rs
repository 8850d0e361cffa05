//! Process-local counters of what the gateway refuses without a record: payment attempts that
//! never verified (garbage, forgeries, replays, payments the chain refuses). They are not
//! written to the audit chain, which anyone could otherwise grow without limit by sending
//! junk headers; they are counted here, by reason code, and sampled in the log. Also the
//! settlement path's off-the-happy-path counts (pending answers, 503s, ledger writes left to
//! the recovery sweep, deferred admission refusals).
//!
//! Owns the numbers and the log sampling; knows nothing of HTTP or the database. Every
//! counter is listed by [`Counters::snapshot`] as (name, label, value), the shape a metrics
//! exporter (issue 15) turns into `tollgate_<name>_total{reason="<label>"}`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The least time between two sampled WARN lines about unaudited attempts.
pub const UNAUDITED_WARN_INTERVAL: Duration = Duration::from_secs(1);

/// The gateway's counters (one per process).
#[derive(Debug)]
pub struct Counters {
    started: Instant,
    unaudited_total: AtomicU64,
    unaudited_by_reason: Mutex<BTreeMap<&'static str, u64>>,
    /// Milliseconds after `started` of the last WARN, plus one (0: none yet).
    last_warn_ms: AtomicU64,
    /// Attempts counted since the last WARN (reported with the next one).
    since_warn: AtomicU64,
    /// Ledger writes on the money path that failed for good and were left to the recovery
    /// sweep (which re-derives them from the chain); each is also logged with its entry id.
    pub ledger_writes_left_to_recovery: AtomicU64,
    /// Ledger writes of the recovery sweep (or a re-check) that failed and are left to the
    /// next sweep, which decides the entry again from the ledger and the chain; each is also
    /// logged with its entry id.
    pub ledger_writes_left_to_next_sweep: AtomicU64,
    /// Relayer leases whose release failed; each expires by itself after
    /// `settlement.relayer_lease_ttl_s` (logged with the entry whose send held it).
    pub leases_left_to_expire: AtomicU64,
    /// Paid calls answered `settlement_pending` (a transaction may exist, no receipt yet; or
    /// the route answers at the broadcast or wants more confirmations than there were).
    pub settlements_pending: AtomicU64,
    /// Paid calls refused with 503 `settlement_unavailable` before any money could move.
    pub settlements_unavailable: AtomicU64,
    /// Deferred payments refused or downgraded by admission control.
    pub deferred_admission_refused: AtomicU64,
    /// In-doubt settlements not chased because the chaser's queue was full (left to the
    /// sweep; the relayer's nonce is refetched so a gap cannot stall later sends).
    pub chases_dropped: AtomicU64,
    /// Entries ended `voided` or `settle_failed` by the live path or the sweep.
    pub entries_ended_uncharged: AtomicU64,
    /// Payments refused before verification because the readiness monitor knows they cannot
    /// be settled now (relayer gas, RPC or database down).
    pub refused_not_ready: AtomicU64,
    /// Relayer nonces closed by the recovery sweep with a zero-value self-transfer: a
    /// settlement claimed by a process that died before broadcasting it, for a call whose
    /// agent was never answered, can then never land (see `recovery::close_unsent`).
    pub relayer_nonces_closed: AtomicU64,
    /// payment-identifier writes (entry, outcome, release) that failed; each is logged with
    /// its entry id. A replay then answers from the ledger entry instead (`paid::idempotency`).
    pub payment_id_writes_failed: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            started: Instant::now(),
            unaudited_total: AtomicU64::new(0),
            unaudited_by_reason: Mutex::new(BTreeMap::new()),
            last_warn_ms: AtomicU64::new(0),
            since_warn: AtomicU64::new(0),
            ledger_writes_left_to_recovery: AtomicU64::new(0),
            ledger_writes_left_to_next_sweep: AtomicU64::new(0),
            leases_left_to_expire: AtomicU64::new(0),
            settlements_pending: AtomicU64::new(0),
            payment_id_writes_failed: AtomicU64::new(0),
            settlements_unavailable: AtomicU64::new(0),
            deferred_admission_refused: AtomicU64::new(0),
            chases_dropped: AtomicU64::new(0),
            entries_ended_uncharged: AtomicU64::new(0),
            refused_not_ready: AtomicU64::new(0),
            relayer_nonces_closed: AtomicU64::new(0),
        }
    }
}

impl Counters {
    /// Counts a payment attempt refused before its payment verified, and logs at most one WARN
    /// per [`UNAUDITED_WARN_INTERVAL`] (with how many were counted since the previous one), so
    /// a flood of junk cannot flood the log either.
    pub fn unaudited_attempt(&self, reason: &'static str, route: &str) {
        self.unaudited_total.fetch_add(1, Ordering::Relaxed);
        // A poisoned lock only means another thread panicked mid-increment; the map is still
        // a valid map, and a count is better than none.
        let mut by_reason = self.unaudited_by_reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *by_reason.entry(reason).or_insert(0) += 1;
        drop(by_reason);
        self.since_warn.fetch_add(1, Ordering::Relaxed);
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        let interval_ms = u64::try_from(UNAUDITED_WARN_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now_ms.saturating_sub(last) >= interval_ms)
            && self.last_warn_ms.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let counted = self.since_warn.swap(0, Ordering::Relaxed);
            tracing::warn!(
                reason,
                route,
                attempts_since_last_warning = counted,
                "payment attempt refused before verification (counted, not audited; sampled at most once a second)"
            );
        }
    }

    /// Counts one ledger write on the money path that failed and was left to the recovery
    /// sweep. The caller logs it with the entry id and says why leaving it is safe.
    pub fn left_to_recovery(&self) {
        self.ledger_writes_left_to_recovery.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one write of the sweep left to the next sweep (logged by the caller).
    pub fn left_to_next_sweep(&self) {
        self.ledger_writes_left_to_next_sweep.fetch_add(1, Ordering::Relaxed);
    }

    /// Payment attempts refused before verification, in total.
    pub fn unaudited_attempts(&self) -> u64 {
        self.unaudited_total.load(Ordering::Relaxed)
    }

    /// Every counter as (metric name, reason label, value), for an exporter.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let by_reason = self.unaudited_by_reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<_> = by_reason.iter().map(|(reason, n)| ("payment_attempts_unaudited", *reason, *n)).collect();
        all.extend(
            [
                ("ledger_writes_left_to_recovery", "", &self.ledger_writes_left_to_recovery),
                ("ledger_writes_left_to_next_sweep", "", &self.ledger_writes_left_to_next_sweep),
                ("leases_left_to_expire", "", &self.leases_left_to_expire),
                ("settlements_pending", "", &self.settlements_pending),
                ("payment_id_writes_failed", "", &self.payment_id_writes_failed),
                ("settlements_unavailable", "", &self.settlements_unavailable),
                ("deferred_admission_refused", "", &self.deferred_admission_refused),
                ("chases_dropped", "", &self.chases_dropped),
                ("entries_ended_uncharged", "", &self.entries_ended_uncharged),
                ("refused_not_ready", "", &self.refused_not_ready),
                ("relayer_nonces_closed", "", &self.relayer_nonces_closed),
            ]
            .map(|(name, label, n)| (name, label, n.load(Ordering::Relaxed))),
        );
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: attempts are counted in total and per reason, and the snapshot lists each reason once.
    #[test]
    fn counts_by_reason() {
        let c = Counters::default();
        for _ in 0..3 {
            c.unaudited_attempt("malformed_payment", "r");
        }
        c.unaudited_attempt("invalid_signature", "r");
        assert_eq!(c.unaudited_attempts(), 4);
        assert_eq!(
            c.snapshot().into_iter().filter(|(name, _, _)| *name == "payment_attempts_unaudited").collect::<Vec<_>>(),
            vec![
                ("payment_attempts_unaudited", "invalid_signature", 1),
                ("payment_attempts_unaudited", "malformed_payment", 3)
            ]
        );
    }
}
