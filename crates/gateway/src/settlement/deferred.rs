//! The deferred-settlement worker: settles `forwarded` entries of deferred calls after the
//! agent was answered, earliest-expiring first, from its queue and the durable backlog.
//!
//! Must not: settle an entry that is not `forwarded`, or end a served entry for a passing
//! fault (the sweep settles it or voids it at expiry).

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;

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

    fn len(&self) -> usize {
        self.heap.len()
    }
}

/// The fewest entries the worker reads from the durable backlog at once (more with a larger
/// `deferred_concurrency`: see [`backlog_page`]).
const BACKLOG_PAGE_MIN: usize = 256;

/// Entries read from the backlog at once: at least twice `deferred_concurrency`, so a full
/// page always holds entries the worker is not already settling or holding (it reads only
/// when fewer than `deferred_concurrency` wait, beside at most as many in flight).
fn backlog_page(concurrency: usize) -> u32 {
    u32::try_from(concurrency.saturating_mul(2).max(BACKLOG_PAGE_MIN)).unwrap_or(u32::MAX)
}

/// When the worker reads the durable backlog before its next sweep.
#[derive(Debug)]
struct Refill {
    /// The last read filled its page: more entries may be waiting in the ledger.
    more: bool,
    /// Settlements handed to the chain when the backlog was last read: reading again at once
    /// is only worth it once some have been (a chain that is down leaves the entries to the
    /// sweep's pace instead of a tight retry loop).
    finished_at_read: u64,
}

/// Drains the deferred queue, settling up to `settlement.deferred_concurrency` entries at
/// once, earliest-expiring first, each with retries and backoff; also drains the durable
/// backlog (entries queued while the channel was full, or before a restart), in the same
/// order. The backlog is read at start, at every `recovery_interval`, and, while it has
/// more, as soon as fewer than `deferred_concurrency` entries wait and settlements have
/// progressed since the last read (or the queue overflowed again): so a burst larger than the
/// queue drains as fast as settlements finish, one page ([`backlog_page`]) at a time. Sends
/// are serialised on the relayer's nonce; what overlaps is the wait for receipts, so a chain
/// with blocks every few seconds still settles many entries per block.
pub async fn deferred_worker(svc: Arc<Settlements>, mut rx: tokio::sync::mpsc::Receiver<Queued>) {
    let sweep = svc.config.settlement.recovery_interval;
    let concurrency = svc.config.settlement.deferred_concurrency;
    let page = backlog_page(concurrency);
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    // Entries being settled by a task of this worker: a backlog read must not start a second
    // attempt beside the first (it would lose the ledger claim, but only after an estimate
    // and a signature).
    let in_flight: Arc<std::sync::Mutex<std::collections::HashSet<EntryId>>> = Arc::default();
    let progress = Arc::new(Progress::default());
    let mut waiting = Waiting::default();
    let mut refill = Refill { more: true, finished_at_read: 0 };
    // None: the backlog is read at start (entries left by a previous process).
    let mut last_sweep: Option<tokio::time::Instant> = None;
    let mut overflowed = false;
    loop {
        let done = progress.finished.load(std::sync::atomic::Ordering::Acquire);
        let since_sweep = last_sweep.map_or(sweep, |t| t.elapsed());
        let room = waiting.len() < concurrency;
        let progressed = done > refill.finished_at_read;
        // An overflow signalled while the worker was busy (the permit `Notify` keeps).
        if room && !overflowed && svc.deferred_overflow.notified().now_or_never().is_some() {
            overflowed = true;
        }
        // The durable backlog is read every `recovery_interval`, busy or not, so entries the
        // queue had no room for compete on expiry with the queued ones; and at once when
        // there is room and more to read.
        if since_sweep >= sweep || (room && (overflowed || (refill.more && progressed))) {
            last_sweep = Some(tokio::time::Instant::now());
            overflowed = false;
            refill.finished_at_read = done;
            match svc.ledger.entries().deferred_backlog(page).await {
                Ok(entries) => {
                    refill.more = entries.len() >= page as usize;
                    for e in entries {
                        if in_flight_has(&in_flight, &e.id) {
                            continue;
                        }
                        let q = Queued { id: e.id, valid_before_unix_s: e.valid_before_unix_s, slot: None };
                        waiting.push(q, &svc.backlog);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "deferred backlog unavailable"),
            }
        }
        if waiting.is_empty() {
            // Wake for a queued entry, an overflow into the backlog, a finished settlement
            // when the backlog has more, or the next sweep.
            let more = refill.more;
            tokio::select! {
                q = rx.recv() => match q {
                    Some(q) => waiting.push(q, &svc.backlog),
                    None => return,
                },
                () = svc.deferred_overflow.notified() => overflowed = true,
                () = tokio::time::sleep(sweep.saturating_sub(since_sweep)) => {}
                () = progress.notify.notified(), if more => {}
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
        let (svc, in_flight, progress) = (svc.clone(), in_flight.clone(), progress.clone());
        tokio::spawn(async move {
            if settle_queued(&svc, &next.id).await {
                svc.backlog.record_finished(svc.clock.now_unix_s());
                progress.finished.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                progress.notify.notify_one();
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

/// Whether a task of the worker is settling `id`.
fn in_flight_has(in_flight: &std::sync::Mutex<std::collections::HashSet<EntryId>>, id: &EntryId) -> bool {
    in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(id)
}

/// Settlements this worker's tasks handed to the chain, and a wake-up for the worker when
/// one is (it reads more of the backlog then).
#[derive(Debug, Default)]
struct Progress {
    finished: std::sync::atomic::AtomicU64,
    notify: tokio::sync::Notify,
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
            // The token refuses the payer's authorization (spent, cancelled, expired, bad
            // signature): final, a served call not paid (`settle_failed`, a finance exception).
            Err(e) if e.payer_fault() => {
                fail(svc, &entry, EntryState::Forwarded, e.reason_code()).await;
                return false;
            }
            // Ours and not passing by itself (a ledger error that is not retryable, e.g. a full
            // disk; no relayer for the chain): never a reason to give up on a served call. It
            // stays `forwarded`; the sweep tries again until it settles or expires (found by the
            // AFTER benchmark: a full disk turned served calls into `settle_failed`).
            Err(e) => {
                tracing::error!(%id, error = %e, "deferred settlement failed on our side; left to the recovery sweep");
                svc.counters.left_to_next_sweep();
                return false;
            }
        }
    }
    false
}
