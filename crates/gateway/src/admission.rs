//! Admission control for deferred settlement: a deferred route answers before it settles, so
//! it may only take on what its settlement worker can settle while the authorizations are
//! still valid.
//!
//! The backlog is this process's deferred payments admitted and not yet finished; its bound
//! is the measured settlement throughput (settlements handed to the chain over the last
//! minute, averaged over at least [`MIN_SPAN_S`] seconds so one block's burst is not taken
//! for a rate; at least one per second) times `settlement.deferred_backlog_horizon_s`, and
//! never fewer than `settlement.deferred_concurrency`. A payment is admitted when the backlog is under
//! that bound and its `validBefore` leaves room for the expected wait (backlog ÷
//! throughput) plus `settlement.deferred_admission_margin_s`. What is refused falls back to
//! `after` for that call or is refused with 503, as `settlement.deferred_overflow` says.
//!
//! Owns only counters and the decision; knows nothing of HTTP, the ledger or the chain.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::SettlementConfig;

/// Seconds of settlement history the throughput estimate looks at.
const WINDOW_S: usize = 60;

/// The shortest span a throughput average is taken over (a few blocks of a slow chain).
pub const MIN_SPAN_S: u64 = 5;

/// This process's deferred backlog and its measured settlement throughput.
#[derive(Debug, Default)]
pub struct Backlog {
    admitted: AtomicU64,
    /// Settlements finished per second, for the last [`WINDOW_S`] seconds: (second, count).
    finished: Mutex<Vec<(u64, u64)>>,
    /// Unsettled deferred spend admitted by this process, per payer key (atomic units):
    /// checked and raised under one lock, so concurrent calls of one payer cannot all slip
    /// under the cap.
    exposure: Mutex<HashMap<String, u128>>,
    /// Slots of entries the worker's queue had no room for: kept (still counted) until the
    /// worker finishes the entry, found by the backlog sweep.
    parked: Mutex<HashMap<String, Slot>>,
}

/// One admitted deferred payment, counted in the backlog (and in its payer's exposure) until
/// it is dropped (settled, failed, voided, or handed to the recovery sweep).
#[derive(Debug)]
pub struct Slot {
    backlog: Arc<Backlog>,
    payer: String,
    value: u128,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.backlog.admitted.fetch_sub(1, Ordering::AcqRel);
        let mut exposure = self.backlog.exposure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = exposure.get_mut(&self.payer) {
            *v = v.saturating_sub(self.value);
            if *v == 0 {
                exposure.remove(&self.payer);
            }
        }
    }
}

/// Why a deferred payment was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The backlog is at its bound.
    #[error("deferred backlog full ({backlog} of {bound})")]
    BacklogFull {
        /// Admitted and unfinished.
        backlog: u64,
        /// The bound now.
        bound: u64,
    },
    /// The authorization would expire before its settlement's expected turn.
    #[error("authorization valid for {valid_for_s} s; settlement expected within {needed_s} s")]
    ExpiresTooSoon {
        /// Seconds left before `validBefore`.
        valid_for_s: u64,
        /// Expected wait plus the margin.
        needed_s: u64,
    },
    /// The payer's unsettled deferred spend would exceed its cap.
    #[error("payer's unsettled deferred spend would exceed the cap")]
    PayerExposure,
}

impl Backlog {
    /// Admitted and unfinished deferred payments.
    pub fn len(&self) -> u64 {
        self.admitted.load(Ordering::Acquire)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Settlements per second this process has shown it does: those of the last minute over
    /// the span since the first of them (at least [`MIN_SPAN_S`]), at least 1.
    pub fn throughput_per_s(&self, now_unix_s: u64) -> u64 {
        let Ok(finished) = self.finished.lock() else { return 1 };
        let since = now_unix_s.saturating_sub(WINDOW_S as u64);
        let recent = finished.iter().filter(|(s, _)| *s >= since);
        let (first, total) = recent.fold((now_unix_s, 0u64), |(first, total), (s, n)| (first.min(*s), total + n));
        let span = now_unix_s.saturating_sub(first).saturating_add(1).max(MIN_SPAN_S);
        (total / span).max(1)
    }

    /// Keeps the slot of an entry the worker's queue had no room for, until
    /// [`Backlog::unpark`] (the worker finished it).
    pub fn park(&self, id: &str, slot: Slot) {
        let mut parked = self.parked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        parked.insert(id.to_owned(), slot);
    }

    /// Releases a parked slot, if any.
    pub fn unpark(&self, id: &str) {
        let slot = self.parked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
        drop(slot);
    }

    /// Records one finished settlement (its outcome does not matter: it left the backlog).
    pub fn record_finished(&self, now_unix_s: u64) {
        let Ok(mut finished) = self.finished.lock() else { return };
        match finished.last_mut() {
            Some((s, n)) if *s == now_unix_s => *n += 1,
            _ => finished.push((now_unix_s, 1)),
        }
        let since = now_unix_s.saturating_sub(WINDOW_S as u64);
        finished.retain(|(s, _)| *s >= since);
    }

    /// Admits a deferred payment valid until `valid_before_unix_s` of `payer` (a key naming
    /// chain, asset and payer), whose unsettled spend the ledger puts at `payer_pending`, now
    /// adding `value` (atomic units), or says why not. The payer's exposure is the larger of
    /// the ledger's figure and what this process admitted and has not finished; across
    /// replicas sharing a database the ledger's figure can lag by the calls in flight.
    pub fn admit(
        self: &Arc<Self>,
        config: &SettlementConfig,
        valid_before_unix_s: u64,
        now_unix_s: u64,
        payer: &str,
        payer_pending: u128,
        value: u128,
    ) -> Result<Slot, Refusal> {
        {
            let mut exposure = self.exposure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mine = exposure.get(payer).copied().unwrap_or(0);
            if let Some(cap) = config.deferred_payer_exposure_max_atomic
                && mine.max(payer_pending).saturating_add(value) > cap
            {
                return Err(Refusal::PayerExposure);
            }
            exposure.insert(payer.to_owned(), mine.saturating_add(value));
        }
        let rate = self.throughput_per_s(now_unix_s);
        let floor = u64::try_from(config.deferred_concurrency).unwrap_or(u64::MAX);
        let bound = rate.saturating_mul(config.deferred_backlog_horizon_s).max(floor);
        let backlog = self.admitted.fetch_add(1, Ordering::AcqRel);
        let slot = Slot { backlog: self.clone(), payer: payer.to_owned(), value };
        if backlog >= bound {
            return Err(Refusal::BacklogFull { backlog, bound });
        }
        let needed_s = backlog.saturating_add(1).div_ceil(rate).saturating_add(config.deferred_admission_margin_s);
        let valid_for_s = valid_before_unix_s.saturating_sub(now_unix_s);
        if valid_for_s < needed_s {
            return Err(Refusal::ExpiresTooSoon { valid_for_s, needed_s });
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    fn config(text: &str) -> crate::Config {
        let base = "[settlement]\nrelayer_key_env = \"KEY\"\n";
        let env = |k: &str| {
            (k == "KEY").then(|| "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".to_owned())
        };
        crate::Config::parse(&format!("{base}{text}"), &env).unwrap()
    }

    // Goal: the backlog bound follows measured throughput (averaged, not one block's burst),
    // expiry needs room for the wait, a refused payment leaves no trace in the backlog, and
    // the payer cap holds against the ledger's figure and against this process's own
    // concurrent admissions.
    #[test]
    fn admission_follows_throughput_and_expiry() {
        let c = config(
            "deferred_concurrency = 2\ndeferred_backlog_horizon_s = 3\ndeferred_admission_margin_s = 10\ndeferred_payer_exposure_max_atomic = \"5000\"\n",
        );
        let b = Arc::new(Backlog::default());
        let now = 1_000;
        // Unmeasured: 1/s × 3 s = bound 3.
        let s1 = b.admit(&c.settlement, now + 100, now, "a", 0, 1).unwrap();
        let s2 = b.admit(&c.settlement, now + 100, now, "b", 0, 1).unwrap();
        let s3 = b.admit(&c.settlement, now + 100, now, "c", 0, 1).unwrap();
        assert_eq!(
            b.admit(&c.settlement, now + 100, now, "d", 0, 1).unwrap_err(),
            Refusal::BacklogFull { backlog: 3, bound: 3 }
        );
        assert_eq!(b.len(), 3, "a refusal is not counted");
        // Wait for the 3rd would be 3 s + 10 s margin.
        drop(s3);
        assert!(matches!(
            b.admit(&c.settlement, now + 12, now, "c", 0, 1),
            Err(Refusal::ExpiresTooSoon { valid_for_s: 12, needed_s: 13 })
        ));
        // Sixty settlements in one block: averaged over at least MIN_SPAN_S, not 60/s.
        for _ in 0..60 {
            b.record_finished(now);
        }
        assert_eq!(b.throughput_per_s(now), 60 / MIN_SPAN_S);
        assert_eq!(b.throughput_per_s(now + 5), 10, "60 over six seconds");
        let more: Vec<_> =
            (0..28).map(|i| b.admit(&c.settlement, now + 100, now + 5, &format!("m{i}"), 0, 1).unwrap()).collect();
        assert_eq!(b.len(), 30);
        assert!(b.admit(&c.settlement, now + 100, now + 5, "x", 0, 1).is_err());
        // A minute later the measurement has aged out.
        assert_eq!(b.throughput_per_s(now + 61), 1);
        drop((s1, s2, more));
        assert!(b.is_empty());
        // The ledger's figure counts…
        assert_eq!(b.admit(&c.settlement, now + 100, now, "p", 4_999, 2).unwrap_err(), Refusal::PayerExposure);
        // …and so do this process's own admissions the ledger does not show yet.
        let first = b.admit(&c.settlement, now + 100, now, "p", 0, 3_000).unwrap();
        assert_eq!(b.admit(&c.settlement, now + 100, now, "p", 0, 3_000).unwrap_err(), Refusal::PayerExposure);
        drop(first);
        let again = b.admit(&c.settlement, now + 100, now, "p", 0, 3_000).unwrap();
        // A parked slot stays counted until unparked.
        b.park("entry-1", again);
        assert_eq!(b.len(), 1);
        b.unpark("entry-1");
        assert!(b.is_empty());
    }
}
