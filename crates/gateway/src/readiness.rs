//! Readiness, the verdict: whether this process can take paid calls now, as the last check
//! saw it (`crate::readyz` runs the checks).
//!
//! Owns the verdict the paid path reads (an atomic per network and one for the database, so
//! fail-closed costs the request path no RPC and no query), the shapes of a check's report,
//! and the last report with the lock that keeps checks one at a time.
//!
//! Must not: do IO (it is read on the request path), or import the gateway's state (`app`
//! holds a verdict; the checks that set it live above `app`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use alloy_primitives::U256;
use serde::Serialize;
use tollgate_x402::v2;

/// Why paid calls are refused before anything is verified or forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The ledger database does not answer (or its schema is not this build's).
    DatabaseUnavailable,
    /// The network's RPC does not answer, or answers with another chain id.
    RpcUnavailable,
    /// The relayer cannot pay the gas of one settlement at the current fee cap.
    RelayerGasLow,
}

impl Blocked {
    /// The reason code, given to the agent and the log.
    pub fn code(self) -> &'static str {
        match self {
            Blocked::DatabaseUnavailable => "database_unavailable",
            Blocked::RpcUnavailable => "rpc_unavailable",
            Blocked::RelayerGasLow => "relayer_gas_low",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Blocked::DatabaseUnavailable => 1,
            Blocked::RpcUnavailable => 2,
            Blocked::RelayerGasLow => 3,
        }
    }

    fn from_u8(v: u8) -> Option<Blocked> {
        match v {
            1 => Some(Blocked::DatabaseUnavailable),
            2 => Some(Blocked::RpcUnavailable),
            3 => Some(Blocked::RelayerGasLow),
            _ => None,
        }
    }
}

/// One check of `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `database`, `rpc:eip155:8453`, `relayer_gas:eip155:8453`, `vault`, `control`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was seen (never a URL or a secret).
    pub detail: String,
}

/// The relayer on one network, as the last check saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RelayerStatus {
    /// CAIP-2 id.
    pub network: String,
    /// Native balance, wei.
    pub balance_wei: U256,
    /// Cost of one settlement at the current fee cap, wei.
    pub settlement_cost_wei: U256,
    /// Next nonce, counting pending transactions.
    pub nonce: u64,
    /// Transactions sent and not yet mined.
    pub pending: u64,
}

/// A full readiness report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether every check passed.
    pub ready: bool,
    /// Every check.
    pub checks: Vec<Check>,
    /// The relayers (for `/readyz` and the metrics).
    pub relayers: Vec<RelayerStatus>,
}

/// The verdict the request path reads, and the last report.
#[derive(Debug, Default)]
pub struct Readiness {
    database_down: AtomicBool,
    /// Per chain id (the networks are fixed at startup): 0 open, else a [`Blocked`].
    chains: HashMap<u64, AtomicU8>,
    last: std::sync::Mutex<Option<(Instant, Arc<Report>)>>,
    /// One check at a time (concurrent probes share its result).
    running: tokio::sync::Mutex<()>,
}

impl Readiness {
    /// Open for every chain in `chain_ids` until the first check says otherwise (startup
    /// already connected to each one).
    pub fn new(chain_ids: impl IntoIterator<Item = u64>) -> Readiness {
        Readiness { chains: chain_ids.into_iter().map(|id| (id, AtomicU8::new(0))).collect(), ..Default::default() }
    }

    /// Why a payment on `chain_id` cannot be settled now, if it cannot. Atomics only.
    pub fn refusal(&self, chain_id: u64) -> Option<Blocked> {
        if self.database_down.load(Ordering::Acquire) {
            return Some(Blocked::DatabaseUnavailable);
        }
        self.chains.get(&chain_id).and_then(|c| Blocked::from_u8(c.load(Ordering::Acquire)))
    }

    /// Why a quote for `offers` must not be given: the database is down, or no offered
    /// network can settle now (the first network's reason is given).
    pub fn quote_refusal(&self, offers: &[v2::PaymentRequirements]) -> Option<Blocked> {
        let mut first = None;
        for o in offers {
            match self.refusal(o.network.chain_id) {
                None => return None,
                Some(b) => {
                    first.get_or_insert(b);
                }
            }
        }
        first
    }

    /// The last report, if one was made.
    pub fn last_report(&self) -> Option<Arc<Report>> {
        self.last.lock().ok().and_then(|l| l.as_ref().map(|(_, r)| r.clone()))
    }

    /// The last report if it is younger than `max_age`.
    pub(crate) fn fresh(&self, max_age: Duration) -> Option<Arc<Report>> {
        let last = self.last.lock().ok()?;
        last.as_ref().filter(|(at, _)| at.elapsed() < max_age).map(|(_, r)| r.clone())
    }

    /// Held while a check runs: checks are one at a time, and a probe that waited for one
    /// reuses its report.
    pub(crate) async fn one_check(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.running.lock().await
    }

    /// What the database check saw.
    pub(crate) fn set_database_down(&self, down: bool) {
        self.database_down.store(down, Ordering::Release);
    }

    /// What the check of `chain_id` saw (a network not configured at startup is ignored).
    pub(crate) fn set_network(&self, chain_id: u64, blocked: Option<Blocked>) {
        if let Some(flag) = self.chains.get(&chain_id) {
            flag.store(blocked.map(Blocked::to_u8).unwrap_or(0), Ordering::Release);
        }
    }

    /// Keeps `report` as the last one, made now.
    pub(crate) fn set_report(&self, report: Arc<Report>) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), report));
        }
    }
}
