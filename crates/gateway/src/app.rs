//! The gateway's shared state, built once from the configuration at startup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::Address;
use secrecy::ExposeSecret;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tollgate_metering::{Ledger, LedgerOptions};
use tollgate_verifier::{AlloyChain, Chain, Clock, SettleConfig, Settler, Verifier, VerifierConfig};

use crate::config::Config;
use crate::control::{ControlHost, Live, QueuedAudit, SeedError};
use crate::settlement::{Settlements, SettlementsParts};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A chain could not be reached or is not the one configured.
    #[error("network {network}: {reason}")]
    Chain {
        /// CAIP-2 id.
        network: String,
        /// What went wrong.
        reason: String,
    },
    /// The ledger database could not be opened or migrated.
    #[error("database: {0}")]
    Database(String),
    /// The configuration is unusable as a whole.
    #[error("{0}")]
    Config(String),
}

impl From<SeedError> for StartError {
    fn from(e: SeedError) -> Self {
        match e {
            SeedError::Database(e) => StartError::Database(e.to_string()),
            SeedError::Config(reason) => StartError::Config(reason),
        }
    }
}

impl ControlHost for Gateway {
    fn live(&self) -> &Live {
        &self.live
    }
    fn config(&self) -> &Config {
        &self.config
    }
    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

/// Everything a request handler needs.
pub struct Gateway {
    /// The configuration.
    pub config: Arc<Config>,
    /// The control plane in use: route table and live credentials.
    pub live: Arc<Live>,
    /// Audit records waiting for the writer.
    pub audit_tx: mpsc::Sender<QueuedAudit>,
    /// Audit records queued and not yet committed: one token each ([`QueuedAudit`]), released
    /// by the writer once committed; shutdown waits for it to empty.
    pub audit_pending: TaskTracker,
    /// What is counted instead of recorded (payment attempts that never verified) and what
    /// happened off the happy path of settlement.
    pub counters: Arc<crate::counters::Counters>,
    /// The writer's end of the queue (taken by `serve`).
    pub audit_rx: Mutex<Option<mpsc::Receiver<QueuedAudit>>>,
    /// Payment verification.
    pub verifier: Arc<Verifier>,
    /// One settler per chain id (absent without a relayer key); the same settlers as
    /// `settlements.settlers`, for readiness checks and reports.
    pub settlers: HashMap<u64, Arc<Settler>>,
    /// The metering ledger.
    pub ledger: Ledger,
    /// Upstream HTTP client (no redirects) of the file's providers.
    pub http: reqwest::Client,
    /// The SSRF guard of upstreams set through the admin API.
    pub upstream_guard: Arc<crate::ssrf::UpstreamGuard>,
    /// Upstream HTTP client of admin-created providers: resolves through the guard, so every
    /// connection's addresses are checked (`crate::ssrf`).
    pub http_guarded: reqwest::Client,
    /// The clock used for validity windows and ledger times.
    pub clock: Arc<dyn Clock>,
    /// Settling: the settlers' turn, the deferred queue and its admission backlog, the
    /// chaser, the entries live calls hold (`crate::settlement::Settlements`).
    pub settlements: Arc<Settlements>,
    /// Token balances for deferred-mode checks.
    pub balances: crate::balances::BalanceCache,
    /// This process's id for leases.
    pub instance: String,
    /// Whether paid calls can be settled now (read by the request path, set by the checks
    /// `serve` runs, `crate::readyz`).
    pub readiness: Arc<crate::readiness::Readiness>,
    /// The Prometheus families the request path updates (rendered by `crate::metrics`).
    pub metrics: Arc<crate::meters::Metrics>,
    /// RPC calls and errors per method, per network (CAIP-2 id), counted by the verifier.
    pub rpc_stats: Vec<(String, Arc<tollgate_verifier::RpcStats>)>,
    /// The chains' heads as `GET /receipts/{id}` reads them (at most one read a second per
    /// network, `crate::finality`).
    pub heads: crate::finality::Heads,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.live.get().routes.len())
            .field("instance", &self.instance)
            .finish()
    }
}

/// A vault credential with no usable version at startup is not refused: the documented flow
/// is to start the gateway, then upload the credential through the admin API (which needs
/// the gateway running). It is said loudly instead, naming the provider and the credential,
/// and `/readyz` reports it until a version is uploaded. (A vault credential without a master
/// key can never serve, and is refused by the configuration.)
fn warn_unusable_vault_credentials(gw: &Gateway) {
    let snapshot = gw.live.get();
    for p in &snapshot.providers {
        let Some(crate::config::Credential { secret: crate::config::SecretSource::Vault { name }, .. }) = &p.credential
        else {
            continue;
        };
        if !snapshot.secrets.contains_key(&(p.id.clone(), name.clone())) {
            tracing::warn!(
                provider = %p.id,
                credential = %name,
                "vault credential has no usable version: its routes answer 503 credential_unavailable and /readyz \
                 is not ready until one is uploaded (tollgate admin credential rotate)"
            );
        }
    }
}

impl Gateway {
    /// Connects chains and the ledger and prepares the route table.
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Gateway>, StartError> {
        let relayer = match &config.settlement.relayer_key {
            Some(k) => Some(
                k.expose_secret()
                    .trim_start_matches("0x")
                    .parse::<PrivateKeySigner>()
                    .map_err(|_| StartError::Config("settlement.relayer_key is not a valid key".to_owned()))?,
            ),
            None => None,
        };
        let mut chains: Vec<Arc<dyn Chain>> = Vec::new();
        let mut settlers = HashMap::new();
        // RPC nodes are trusted through the same roots as upstreams (`[tls]`). Each call has
        // its own timeout in `AlloyChain`; this bounds the connection (TCP and TLS) itself.
        let rpc_http = config
            .tls
            .client
            .reqwest_builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| StartError::Config(format!("RPC HTTP client: {e}")))?;
        let mut rpc_stats = Vec::new();
        for n in &config.networks {
            let chain =
                AlloyChain::connect(n.rpc_url.expose_secret(), n.network.chain_id, n.rpc_timeout, rpc_http.clone())
                    .await
                    .map_err(|e| StartError::Chain { network: n.network.caip2(), reason: e.to_string() })?;
            rpc_stats.push((n.network.caip2(), chain.stats()));
            let chain: Arc<dyn Chain> = Arc::new(chain);
            if let Some(key) = &relayer {
                let settle = SettleConfig {
                    receipt_poll_interval: config.settlement.receipt_poll_interval,
                    receipt_timeout: config.settlement.receipt_timeout,
                    fee_cache: config.settlement.fee_cache,
                    ..SettleConfig::default()
                };
                settlers.insert(n.network.chain_id, Arc::new(Settler::new(chain.clone(), key.clone(), settle)));
            }
            chains.push(chain);
        }
        let verifier = Verifier::new(
            chains,
            clock.clone(),
            VerifierConfig {
                valid_before_buffer_s: config.verification.valid_before_buffer_s,
                validity_window_max_s: config.verification.validity_window_max_s,
                simulate_from: relayer.as_ref().map(|k| k.address()).unwrap_or(Address::ZERO),
            },
        );
        let ledger = Ledger::connect(
            config.database.url.expose_secret(),
            LedgerOptions {
                max_connections: config.database.max_connections,
                statement_timeout_ms: config.database.statement_timeout_ms,
                sqlite_synchronous_full: config.database.sqlite_synchronous_full,
                ..LedgerOptions::default()
            },
        )
        .await
        .map_err(|e| StartError::Database(e.to_string()))?;
        let http = config
            .tls
            .client
            .reqwest_builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| StartError::Config(format!("HTTP client: {e}")))?;
        let upstream_guard = Arc::new(crate::ssrf::UpstreamGuard::new(&config, Arc::new(crate::ssrf::SystemLookup)));
        let http_guarded = crate::ssrf::guarded_client(&config.tls.client, &upstream_guard)
            .map_err(|e| StartError::Config(format!("HTTP client: {e}")))?;
        crate::control::seed(&config, &ledger, clock.now_unix_s()).await?;
        let (audit_tx, audit_rx) = mpsc::channel(config.control.audit_queue_capacity);
        let instance = hex::encode(rand::random::<[u8; 8]>());
        let readiness = Arc::new(crate::readiness::Readiness::new(config.networks.iter().map(|n| n.network.chain_id)));
        let balances =
            crate::balances::BalanceCache::new(Duration::from_millis(config.verification.balance_cache_ttl_ms));
        let config = Arc::new(config);
        let (verifier, counters, metrics) = (
            Arc::new(verifier),
            Arc::new(crate::counters::Counters::default()),
            Arc::new(crate::meters::Metrics::default()),
        );
        let settlements = Arc::new(Settlements::new(SettlementsParts {
            config: config.clone(),
            ledger: ledger.clone(),
            verifier: verifier.clone(),
            clock: clock.clone(),
            settlers: settlers.clone(),
            instance: instance.clone(),
            counters: counters.clone(),
            metrics: metrics.clone(),
        }));
        let heads = crate::finality::Heads::new(config.networks.iter().map(|n| n.network.chain_id));
        let gw = Arc::new(Gateway {
            config,
            live: Arc::default(),
            audit_tx,
            audit_pending: TaskTracker::new(),
            counters,
            audit_rx: Mutex::new(Some(audit_rx)),
            verifier,
            settlers,
            ledger,
            http,
            upstream_guard,
            http_guarded,
            clock,
            settlements,
            balances,
            instance,
            readiness,
            metrics,
            rpc_stats,
            heads,
        });
        crate::control::refresh(&*gw, true).await.map_err(|e| StartError::Database(e.to_string()))?;
        warn_unusable_vault_credentials(&gw);
        // Every network is open until `serve` makes the first readiness check, before it
        // serves anything.
        Ok(gw)
    }

    /// The relayer's address, when a key is configured.
    pub fn relayer(&self) -> Option<Address> {
        self.settlers.values().next().map(|s| s.address())
    }
}
