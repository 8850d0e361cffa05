//! The settlement service: what settling needs, and nothing of the request path. Built once
//! by `Gateway::start` and shared by the paid path (which settles `after`/`before` calls and
//! hands deferred ones to the worker), the deferred worker, the chaser and the recovery sweep.
//!
//! Holds the settlers (one per chain with a relayer key) and the relayer turn, the deferred
//! queue with its admission backlog, the chaser's queue, the entries live calls hold, and
//! shared handles on the ledger, the verifier (authorization state), the clock, the
//! configuration, the counters and the metrics.
//!
//! Must not: know HTTP or the route table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tollgate_metering::{EntryId, Ledger};
use tollgate_verifier::{Clock, Settler, VerifiedPayment, Verifier};

use crate::admission::Backlog;
use crate::config::Config;
use crate::counters::Counters;
use crate::meters::Metrics;

/// Settlements waiting for the chaser: in-doubt ones (a rare path: a broadcast whose answer
/// was lost) and those of `settlement_wait = "submitted"` calls (every one of them, to record
/// its receipt); past this, the sweep follows them without re-broadcasting, once they are
/// `recovery_grace_s` old. A sustained `submitted` load beyond 64 receipt waits at once then
/// records receipts late, never wrongly.
const CHASE_QUEUE_CAPACITY: usize = 1024;

/// Everything settling needs.
pub struct Settlements {
    /// The configuration (`[settlement]`, and `[verification]` for expiry margins).
    pub config: Arc<Config>,
    /// The metering ledger.
    pub ledger: Ledger,
    /// Authorization state on chain (settlement re-checks it after a revert).
    pub verifier: Arc<Verifier>,
    /// The clock used for validity windows and ledger times.
    pub clock: Arc<dyn Clock>,
    /// One settler per chain id (absent without a relayer key).
    pub settlers: HashMap<u64, Arc<Settler>>,
    /// Held by the settlement that holds this process's relayer lease (shared databases):
    /// the lease is re-entrant for its holder, so the process's settlements take turns.
    pub relayer_turn: tokio::sync::Mutex<()>,
    /// This process's id for leases.
    pub instance: String,
    /// Entries this process's live calls are working on (the sweep skips them).
    pub live_entries: Arc<LiveEntries>,
    /// Deferred payments admitted and not finished, and the measured settlement throughput
    /// (admission control, `crate::admission`).
    pub backlog: Arc<Backlog>,
    /// Deferred settlements waiting for the worker.
    pub deferred_tx: mpsc::Sender<Queued>,
    /// The worker's end of the queue (taken by `serve`).
    pub deferred_rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    /// Signalled when the queue had no room and an entry went to the durable backlog: the
    /// worker reads the backlog as soon as it has room instead of at its next sweep.
    pub deferred_overflow: tokio::sync::Notify,
    /// In-doubt settlements for the chaser (`settlement::chase_worker`).
    pub chase_tx: mpsc::Sender<Chase>,
    /// The chaser's end of the queue (taken by `serve`).
    pub chase_rx: Mutex<Option<mpsc::Receiver<Chase>>>,
    /// What happened off the happy path of settlement.
    pub counters: Arc<Counters>,
    /// Settlement latencies.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Settlements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settlements").field("instance", &self.instance).finish_non_exhaustive()
    }
}

/// Entries a live call of this process is working on. The recovery sweep leaves them alone,
/// whatever their age: a slow upstream must not have its reservation voided under it.
#[derive(Debug, Default)]
pub struct LiveEntries(Mutex<std::collections::HashSet<tollgate_metering::EntryId>>);

/// One live call's hold on its entry, released when dropped.
#[derive(Debug)]
pub struct LiveHold(Arc<LiveEntries>, tollgate_metering::EntryId);

impl LiveEntries {
    /// Marks `id` live until the hold is dropped.
    pub fn hold(self: &Arc<Self>, id: tollgate_metering::EntryId) -> LiveHold {
        if let Ok(mut set) = self.0.lock() {
            set.insert(id.clone());
        }
        LiveHold(self.clone(), id)
    }

    /// Whether a live call holds `id`.
    pub fn contains(&self, id: &tollgate_metering::EntryId) -> bool {
        self.0.lock().is_ok_and(|set| set.contains(id))
    }
}

impl Drop for LiveHold {
    fn drop(&mut self) {
        if let Ok(mut set) = self.0.0.lock() {
            set.remove(&self.1);
        }
    }
}

/// The shared handles a settlement service is built from.
pub struct SettlementsParts {
    /// See [`Settlements::config`].
    pub config: Arc<Config>,
    /// See [`Settlements::ledger`].
    pub ledger: Ledger,
    /// See [`Settlements::verifier`].
    pub verifier: Arc<Verifier>,
    /// See [`Settlements::clock`].
    pub clock: Arc<dyn Clock>,
    /// See [`Settlements::settlers`].
    pub settlers: HashMap<u64, Arc<Settler>>,
    /// See [`Settlements::instance`].
    pub instance: String,
    /// See [`Settlements::counters`].
    pub counters: Arc<Counters>,
    /// See [`Settlements::metrics`].
    pub metrics: Arc<Metrics>,
}

impl Settlements {
    /// The service, with its queues (bounded: `settlement.deferred_queue_capacity` deferred
    /// entries, 1024 in-doubt broadcasts).
    pub fn new(p: SettlementsParts) -> Self {
        let (deferred_tx, deferred_rx) = mpsc::channel(p.config.settlement.deferred_queue_capacity);
        let (chase_tx, chase_rx) = mpsc::channel(CHASE_QUEUE_CAPACITY);
        Settlements {
            config: p.config,
            ledger: p.ledger,
            verifier: p.verifier,
            clock: p.clock,
            settlers: p.settlers,
            relayer_turn: tokio::sync::Mutex::new(()),
            instance: p.instance,
            live_entries: Arc::default(),
            backlog: Arc::default(),
            deferred_tx,
            deferred_rx: Mutex::new(Some(deferred_rx)),
            deferred_overflow: tokio::sync::Notify::new(),
            chase_tx,
            chase_rx: Mutex::new(Some(chase_rx)),
            counters: p.counters,
            metrics: p.metrics,
        }
    }
}

/// A settlement whose broadcast is in doubt, handed to the chaser.
#[derive(Debug)]
pub struct Chase {
    /// The entry (`settling` with this transaction).
    pub id: EntryId,
    /// Its payment.
    pub payment: VerifiedPayment,
    /// The signed transaction.
    pub submitted: tollgate_verifier::Submitted,
}

/// A deferred entry handed to the worker.
#[derive(Debug)]
pub struct Queued {
    /// The entry (`forwarded`).
    pub id: EntryId,
    /// Its authorization's `validBefore`: the worker settles the earliest-expiring first.
    pub valid_before_unix_s: u64,
    /// Its place in the admission backlog, released when the settlement finishes (absent for
    /// entries picked up from the ledger by the backlog sweep).
    pub slot: Option<crate::admission::Slot>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    /// Reversed, so that a `BinaryHeap` pops the earliest `validBefore` first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.valid_before_unix_s.cmp(&self.valid_before_unix_s).then_with(|| other.id.as_str().cmp(self.id.as_str()))
    }
}
