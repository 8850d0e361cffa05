//! The deferred-settlement worker: settles `forwarded` entries of deferred calls after the
//! agent was answered, earliest-expiring first, from its queue and the durable backlog.
//!
//! Must not: settle an entry that is not `forwarded`, or end a served entry for a passing
//! fault (the sweep settles it or voids it at expiry).

use std::sync::Arc;
use std::time::Duration;

use tollgate_metering::{EntryId, EntryState};

use super::record::{fail, stored_payment, unusable_payment};
use super::service::{Queued, Settlements};
use super::settle::{SettleError, Waiter, settle_entry};

/// The worker's waiting entries, earliest expiry first, each id once.
#[derive(Default)]
struct Waiting {
    heap: std::collections::BinaryHeap<Queued>,
    ids: std::collections::HashSet<EntryId>,
}

impl Waiting {
    /// Adds `q` unless its entry is already waiting. A duplicate's admission slot is parked
    /// under the entry's id rather than dropped: the entry is still unsettled, so its slot
    /// must keep counting until the task that finishes the entry unparks it.
    fn push(&mut self, q: Queued, backlog: &crate::admission::Backlog) {
        if self.ids.insert(q.id.clone()) {
            self.heap.push(q);
        } else if let Some(slot) = q.slot {
            backlog.park(q.id.as_str(), slot);
        }
    }

    fn pop(&mut self) -> Option<Queued> {
        let q = self.heap.pop()?;
        self.ids.remove(&q.id);
        Some(q)
    }

    fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Drains the deferred queue, settling up to `settlement.deferred_concurrency` entries at
/// once, earliest-expiring first, each with retries and backoff; also picks up the durable
/// backlog (entries queued while the channel was full, or before a restart), in the same
/// order. Sends are serialised on the relayer's nonce; what overlaps is the wait for
/// receipts, so a chain with blocks every few seconds still settles many entries per block.
pub async fn deferred_worker(svc: Arc<Settlements>, mut rx: tokio::sync::mpsc::Receiver<Queued>) {
    let sweep = svc.config.settlement.recovery_interval;
    let slots = Arc::new(tokio::sync::Semaphore::new(svc.config.settlement.deferred_concurrency));
    // Entries being settled by a task of this worker: the backlog sweep must not start a
    // second attempt beside the first (it would lose the ledger claim, but only after an
    // estimate and a signature).
    let in_flight: Arc<std::sync::Mutex<std::collections::HashSet<EntryId>>> = Arc::default();
    let mut waiting = Waiting::default();
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        // The durable backlog is read every `recovery_interval`, busy or not, so entries the
        // queue had no room for compete on expiry with the queued ones.
        if last_sweep.elapsed() >= sweep {
            last_sweep = tokio::time::Instant::now();
            match svc.ledger.entries().deferred_backlog(256).await {
                Ok(entries) => {
                    for e in entries {
                        let q = Queued { id: e.id, valid_before_unix_s: e.valid_before_unix_s, slot: None };
                        waiting.push(q, &svc.backlog);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "deferred backlog unavailable"),
            }
        }
        if waiting.is_empty() {
            match tokio::time::timeout(sweep, rx.recv()).await {
                Ok(Some(q)) => waiting.push(q, &svc.backlog),
                Ok(None) => return,
                Err(_) => {}
            }
            continue;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        // Whatever arrived while waiting for a slot competes on expiry too.
        while let Ok(q) = rx.try_recv() {
            waiting.push(q, &svc.backlog);
        }
        let Some(mut next) = waiting.pop() else { continue };
        // Already being settled by a task: the duplicate's admission slot (if it carries one)
        // is parked under the same lock the task takes to finish, so it is released by that
        // task's unpark and never before the entry is finished (nor left parked after it).
        {
            let mut set = in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !set.insert(next.id.clone()) {
                if let Some(dup) = next.slot.take() {
                    svc.backlog.park(next.id.as_str(), dup);
                }
                continue;
            }
        }
        let (svc, in_flight) = (svc.clone(), in_flight.clone());
        tokio::spawn(async move {
            if settle_queued(&svc, &next.id).await {
                svc.backlog.record_finished(svc.clock.now_unix_s());
            }
            {
                let mut set = in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                set.remove(&next.id);
                svc.backlog.unpark(next.id.as_str());
            }
            drop(next.slot);
            drop(slot);
        });
    }
}

/// Settles one deferred entry with retries; returns whether a settlement transaction was
/// handed to the chain by this attempt (what admission control counts as throughput).
async fn settle_queued(svc: &Settlements, id: &EntryId) -> bool {
    let attempts_max = svc.config.settlement.deferred_attempts_max;
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=attempts_max {
        let entry = match svc.ledger.entries().get(id).await {
            Ok(Some(e)) if e.state == EntryState::Forwarded => e,
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(%id, error = %e, "deferred: ledger unavailable");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let payment = match stored_payment(&entry) {
            Ok(p) => p,
            Err(e) => {
                unusable_payment(svc, &entry, EntryState::Forwarded, e).await;
                return false;
            }
        };
        match settle_entry(svc, id, EntryState::Forwarded, &payment, "deferred_settlement", Waiter::Background).await {
            Ok(_) => return true,
            Err(e) if e.is_transient() && attempt < attempts_max => {
                tracing::warn!(%id, attempt, error = %e, "deferred settlement will be retried");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            // Claimed by another worker, or claimed by us and refused by the node: the entry
            // is `settling` and the recovery sweep re-sends it (a deferred call was served).
            Err(SettleError::LostRace | SettleError::NotBroadcast { .. }) => return false,
            // Already recorded `settle_failed` (or left for the sweep to record).
            Err(SettleError::Reverted(_)) => return false,
            // Out of attempts on a passing fault (chain down, relayer busy): the call was
            // served and the authorization may still be valid, so it stays `forwarded` for
            // the sweep, which settles it or voids it at expiry. Only a payer's fault is final.
            Err(e) if e.is_transient() => {
                tracing::warn!(%id, error = %e, "deferred settlement left to the recovery sweep");
                return false;
            }
            Err(e) => {
                fail(svc, &entry, EntryState::Forwarded, e.reason_code()).await;
                return false;
            }
        }
    }
    false
}
