//! The readiness checks, their monitor and `GET /readyz`: the `ReadinessChecks` service that
//! `serve` composes from the gateway's parts, above `app` (it reads them; `app` only holds
//! the verdict, `crate::readiness`).
//!
//! Owns the checks (database reachable and migrated, every network's RPC answering with its
//! configured chain id, the relayer's gas against the cost of settlements at the current fee
//! cap, vault credentials usable, control snapshot loaded), the first check `serve` makes
//! before anything is served, and the background monitor that repeats them every
//! `settlement.health_interval`.
//!
//! Must not: be called on the request path of a paid call (it makes RPC and database calls;
//! the paid path reads the verdict's atomics); print an RPC URL (it may carry an API key) or a
//! secret in a check's detail.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::U256;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tollgate_metering::Ledger;
use tollgate_verifier::{Settler, Verifier};

use crate::app::Gateway;
use crate::config::{Config, SecretSource};
use crate::control::Live;
use crate::readiness::{Blocked, Check, Readiness, RelayerStatus, Report};

/// How long a `/readyz` answer is reused: probes cannot make the gateway hammer its RPC.
pub const READYZ_CACHE: Duration = Duration::from_secs(1);

/// What the checks read, and the verdict they set.
pub struct ReadinessChecks {
    /// The verdict the paid path reads (shared with `Gateway::readiness`).
    verdict: Arc<Readiness>,
    /// `[[networks]]`, `[settlement]` (gas, interval) and whether a vault key is set.
    config: Arc<Config>,
    /// Its schema check.
    ledger: Ledger,
    /// The connected chains.
    verifier: Arc<Verifier>,
    /// One settler per chain id (absent without a relayer key): the relayers whose gas counts.
    settlers: HashMap<u64, Arc<Settler>>,
    /// The control snapshot: loaded, and its vault credentials usable.
    live: Arc<Live>,
}

impl std::fmt::Debug for ReadinessChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessChecks").field("verdict", &self.verdict).finish_non_exhaustive()
    }
}

impl ReadinessChecks {
    /// The checks of `gw`'s parts, setting `gw`'s verdict.
    pub fn new(gw: &Gateway) -> ReadinessChecks {
        ReadinessChecks {
            verdict: gw.readiness.clone(),
            config: gw.config.clone(),
            ledger: gw.ledger.clone(),
            verifier: gw.verifier.clone(),
            settlers: gw.settlers.clone(),
            live: gw.live.clone(),
        }
    }

    /// A report no older than `max_age`: the cached one, else a new check (one at a time).
    pub async fn report(&self, max_age: Duration) -> Arc<Report> {
        if let Some(r) = self.verdict.fresh(max_age) {
            return r;
        }
        let _one = self.verdict.one_check().await;
        if let Some(r) = self.verdict.fresh(max_age) {
            return r;
        }
        self.check().await
    }

    /// Runs every check, updates the verdict the request path reads and caches the report.
    pub async fn check(&self) -> Arc<Report> {
        let mut checks = Vec::new();
        let mut relayers = Vec::new();
        let db = self.ledger.schema_check().await;
        self.verdict.set_database_down(db.is_err());
        checks.push(match db {
            Ok(v) => Check { name: "database".into(), ok: true, detail: format!("reachable, schema version {v}") },
            Err(e) => Check { name: "database".into(), ok: false, detail: e.to_string() },
        });
        for n in &self.config.networks {
            let chain_id = n.network.chain_id;
            let caip2 = n.network.caip2();
            let (blocked, rpc_check, gas_check, relayer) = self.check_network(chain_id, &caip2).await;
            self.verdict.set_network(chain_id, blocked);
            checks.push(rpc_check);
            checks.extend(gas_check);
            relayers.extend(relayer);
        }
        checks.push(self.vault_check());
        let loaded = self.live.is_loaded();
        checks.push(Check {
            name: "control".into(),
            ok: loaded,
            detail: if loaded {
                format!("snapshot version {} loaded", self.live.get().version)
            } else {
                "no snapshot loaded yet".to_owned()
            },
        });
        let ready = checks.iter().all(|c| c.ok);
        let report = Arc::new(Report { ready, checks, relayers });
        self.verdict.set_report(report.clone());
        report
    }

    /// One network: its RPC (chain id) and, with a relayer, its gas. Returns what blocks paid
    /// calls (if anything), the checks, and the relayer's status.
    async fn check_network(
        &self,
        chain_id: u64,
        caip2: &str,
    ) -> (Option<Blocked>, Check, Option<Check>, Option<RelayerStatus>) {
        let rpc_name = format!("rpc:{caip2}");
        let Ok(chain) = self.verifier.chain(chain_id) else {
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
        let Some(settler) = self.settlers.get(&chain_id) else { return (None, rpc, None, None) };
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
        let settlement = &self.config.settlement;
        let cost = U256::from(settlement.gas_per_settlement).saturating_mul(U256::from(fees.max_fee_per_gas));
        let wanted = settlement.ready_settlements_min;
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

    /// Every vault credential a provider names must be usable: the master key is configured
    /// and a version is uploaded (and decrypts). Names the provider and credential, never a
    /// value.
    fn vault_check(&self) -> Check {
        let snapshot = self.live.get();
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
            let why =
                if self.config.vault_key.is_none() { "no [vault] master key" } else { "no usable version uploaded" };
            Check { name: "vault".into(), ok: false, detail: format!("{why}: {}", missing.join(", ")) }
        }
    }

    /// The monitor: checks every `settlement.health_interval` (the first check was made by
    /// `serve` before it served), and logs changes of the verdict (not every tick).
    pub async fn monitor(self: Arc<Self>) {
        let mut was_ready: Option<bool> = None;
        loop {
            tokio::time::sleep(self.config.settlement.health_interval).await;
            let report = {
                let _one = self.verdict.one_check().await;
                self.check().await
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
}

/// `GET /readyz`: 200 when every check passes, 503 otherwise; the JSON lists each check.
pub async fn readyz(State(checks): State<Arc<ReadinessChecks>>) -> Response {
    let report = checks.report(READYZ_CACHE).await;
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(&*report)).into_response()
}
