//! Readiness: whether this process can take paid calls now, and `/readyz`.
//!
//! Owns the checks (database reachable and migrated, every network's RPC answering with its
//! configured chain id, the relayer's gas against the cost of settlements at the current fee
//! cap, vault credentials usable, control snapshot loaded), the background monitor that runs
//! them every `settlement.health_interval`, and the verdict the paid path reads: an atomic
//! per network and one for the database, so fail-closed costs the request path no RPC and no
//! query.
//!
//! Must not: make an RPC or database call on the request path; print an RPC URL (it may carry
//! an API key) or a secret in a check's detail.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use alloy_primitives::U256;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tollgate_x402::v2;

use crate::app::Gateway;
use crate::config::SecretSource;

/// How long a `/readyz` answer is reused: probes cannot make the gateway hammer its RPC.
pub const READYZ_CACHE: Duration = Duration::from_secs(1);

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

    fn fresh(&self, max_age: Duration) -> Option<Arc<Report>> {
        let last = self.last.lock().ok()?;
        last.as_ref().filter(|(at, _)| at.elapsed() < max_age).map(|(_, r)| r.clone())
    }
}

/// A report no older than `max_age`: the cached one, else a new check (one at a time).
pub async fn report(gw: &Gateway, max_age: Duration) -> Arc<Report> {
    if let Some(r) = gw.readiness.fresh(max_age) {
        return r;
    }
    let _one = gw.readiness.running.lock().await;
    if let Some(r) = gw.readiness.fresh(max_age) {
        return r;
    }
    check(gw).await
}

/// Runs every check, updates the verdict the request path reads and caches the report.
pub async fn check(gw: &Gateway) -> Arc<Report> {
    let mut checks = Vec::new();
    let mut relayers = Vec::new();
    let db = gw.ledger.schema_check().await;
    gw.readiness.database_down.store(db.is_err(), Ordering::Release);
    checks.push(match db {
        Ok(v) => Check { name: "database".into(), ok: true, detail: format!("reachable, schema version {v}") },
        Err(e) => Check { name: "database".into(), ok: false, detail: e.to_string() },
    });
    for n in &gw.config.networks {
        let chain_id = n.network.chain_id;
        let caip2 = n.network.caip2();
        let (blocked, rpc_check, gas_check, relayer) = check_network(gw, chain_id, &caip2).await;
        if let Some(flag) = gw.readiness.chains.get(&chain_id) {
            flag.store(blocked.map(Blocked::to_u8).unwrap_or(0), Ordering::Release);
        }
        checks.push(rpc_check);
        checks.extend(gas_check);
        relayers.extend(relayer);
    }
    checks.push(vault_check(gw));
    let loaded = gw.live.is_loaded();
    checks.push(Check {
        name: "control".into(),
        ok: loaded,
        detail: if loaded {
            format!("snapshot version {} loaded", gw.live.get().version)
        } else {
            "no snapshot loaded yet".to_owned()
        },
    });
    let ready = checks.iter().all(|c| c.ok);
    let report = Arc::new(Report { ready, checks, relayers });
    if let Ok(mut last) = gw.readiness.last.lock() {
        *last = Some((Instant::now(), report.clone()));
    }
    report
}

/// One network: its RPC (chain id) and, with a relayer, its gas. Returns what blocks paid
/// calls (if anything), the checks, and the relayer's status.
async fn check_network(
    gw: &Gateway,
    chain_id: u64,
    caip2: &str,
) -> (Option<Blocked>, Check, Option<Check>, Option<RelayerStatus>) {
    let rpc_name = format!("rpc:{caip2}");
    let Ok(chain) = gw.verifier.chain(chain_id) else {
        let c = Check { name: rpc_name, ok: false, detail: "not connected".into() };
        return (Some(Blocked::RpcUnavailable), c, None, None);
    };
    match chain.node_chain_id().await {
        Ok(id) if id == chain_id => {}
        Ok(id) => {
            let c = Check { name: rpc_name, ok: false, detail: format!("the node reports chain id {id}") };
            return (Some(Blocked::RpcUnavailable), c, None, None);
        }
        Err(e) => {
            let c = Check { name: rpc_name, ok: false, detail: e.to_string() };
            return (Some(Blocked::RpcUnavailable), c, None, None);
        }
    }
    let rpc = Check { name: rpc_name, ok: true, detail: format!("answers with chain id {chain_id}") };
    let Some(settler) = gw.settlers.get(&chain_id) else { return (None, rpc, None, None) };
    let gas_name = format!("relayer_gas:{caip2}");
    let relayer = settler.address();
    let (balance, fees, pending_nonce, mined_nonce) = tokio::join!(
        chain.native_balance(relayer),
        chain.fees(),
        chain.pending_nonce(relayer),
        chain.mined_nonce(relayer)
    );
    let (balance, fees) = match (balance, fees) {
        (Ok(b), Ok(f)) => (b, f),
        (Err(e), _) | (_, Err(e)) => {
            let c = Check { name: gas_name, ok: false, detail: e.to_string() };
            return (Some(Blocked::RpcUnavailable), rpc, Some(c), None);
        }
    };
    let cost = U256::from(gw.config.settlement.gas_per_settlement).saturating_mul(U256::from(fees.max_fee_per_gas));
    let wanted = gw.config.settlement.ready_settlements_min;
    let enough_for = if cost.is_zero() { U256::MAX } else { balance / cost };
    let status = RelayerStatus {
        network: caip2.to_owned(),
        balance_wei: balance,
        settlement_cost_wei: cost,
        nonce: pending_nonce.as_ref().copied().unwrap_or(0),
        pending: match (&pending_nonce, &mined_nonce) {
            (Ok(p), Ok(m)) => p.saturating_sub(*m),
            _ => 0,
        },
    };
    let detail = format!(
        "relayer {relayer} has {balance} wei, enough for {enough_for} settlements at {cost} wei each (wants {wanted})"
    );
    let blocked = (balance < cost).then_some(Blocked::RelayerGasLow);
    let gas = Check { name: gas_name, ok: enough_for >= U256::from(wanted), detail };
    (blocked, rpc, Some(gas), Some(status))
}

/// Every vault credential a provider names must be usable: the master key is configured and
/// a version is uploaded (and decrypts). Names the provider and credential, never a value.
fn vault_check(gw: &Gateway) -> Check {
    let snapshot = gw.live.get();
    let mut missing = Vec::new();
    let mut configured = 0usize;
    for p in &snapshot.providers {
        let Some(c) = &p.credential else { continue };
        let SecretSource::Vault { name } = &c.secret else { continue };
        configured += 1;
        if !snapshot.secrets.contains_key(&(p.id.clone(), name.clone())) {
            missing.push(format!("provider `{}` credential `{name}`", p.id));
        }
    }
    if missing.is_empty() {
        let detail = if configured == 0 {
            "no vault credentials configured".to_owned()
        } else {
            format!("{configured} vault credentials usable")
        };
        Check { name: "vault".into(), ok: true, detail }
    } else {
        let why = if gw.config.vault_key.is_none() { "no [vault] master key" } else { "no usable version uploaded" };
        Check { name: "vault".into(), ok: false, detail: format!("{why}: {}", missing.join(", ")) }
    }
}

/// The monitor: checks every `settlement.health_interval` (the first check was made by
/// `Gateway::start`), and logs changes of the verdict (not every tick).
pub async fn monitor(gw: Arc<Gateway>) {
    let mut was_ready: Option<bool> = None;
    loop {
        tokio::time::sleep(gw.config.settlement.health_interval).await;
        let report = {
            let _one = gw.readiness.running.lock().await;
            check(&gw).await
        };
        if was_ready != Some(report.ready) {
            let failing: Vec<&str> = report.checks.iter().filter(|c| !c.ok).map(|c| c.name.as_str()).collect();
            if report.ready {
                tracing::info!("ready: every readiness check passes");
            } else {
                tracing::warn!(failing = ?failing, "not ready");
                for c in report.checks.iter().filter(|c| !c.ok) {
                    tracing::warn!(check = %c.name, detail = %c.detail, "readiness check failing");
                }
            }
            was_ready = Some(report.ready);
        }
    }
}

/// `GET /readyz`: 200 when every check passes, 503 otherwise; the JSON lists each check.
pub async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let report = report(&gw, READYZ_CACHE).await;
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(&*report)).into_response()
}
