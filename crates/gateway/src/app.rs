//! The gateway's shared state, built once from the configuration at startup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, U256};
use secrecy::ExposeSecret;
use tokio::sync::mpsc;
use tollgate_metering::{EntryId, Ledger, LedgerOptions};
use tollgate_verifier::{AlloyChain, Chain, Clock, SettleConfig, Settler, Verifier, VerifierConfig};
use tollgate_x402::{DecimalU256, v2};

use crate::config::{Config, ProviderConfig, RouteConfig};

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

/// One priced route, flattened out of its provider.
#[derive(Debug)]
pub struct RouteEntry {
    /// Index into `config.providers`.
    pub provider: usize,
    /// Index into that provider's routes.
    pub route: usize,
    /// Our offers for this route, one per accepted network.
    pub offers: Vec<v2::PaymentRequirements>,
    /// Stable name for the ledger: `provider:path-pattern`.
    pub name: String,
}

/// (chain id, asset, payer).
pub type BalanceKey = (u64, Address, Address);

/// Everything a request handler needs.
pub struct Gateway {
    /// The configuration.
    pub config: Config,
    /// Priced routes in match order.
    pub routes: Vec<RouteEntry>,
    /// Payment verification.
    pub verifier: Verifier,
    /// One settler per chain id (absent without a relayer key).
    pub settlers: HashMap<u64, Arc<Settler>>,
    /// The metering ledger.
    pub ledger: Ledger,
    /// Upstream HTTP client (no redirects).
    pub http: reqwest::Client,
    /// The clock used for validity windows and ledger times.
    pub clock: Arc<dyn Clock>,
    /// Deferred settlements waiting for the worker.
    pub deferred_tx: mpsc::Sender<EntryId>,
    /// The worker's end of the queue (taken by `serve`).
    pub deferred_rx: Mutex<Option<mpsc::Receiver<EntryId>>>,
    /// Token balances by (chain, asset, payer) for deferred-mode checks.
    pub balances: Mutex<HashMap<BalanceKey, (U256, Instant)>>,
    /// This process's id for leases.
    pub instance: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("routes", &self.routes.len()).field("instance", &self.instance).finish()
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
        for n in &config.networks {
            let chain = AlloyChain::connect(n.rpc_url.expose_secret(), n.network.chain_id, n.rpc_timeout)
                .await
                .map_err(|e| StartError::Chain { network: n.network.caip2(), reason: e.to_string() })?;
            let chain: Arc<dyn Chain> = Arc::new(chain);
            if let Some(key) = &relayer {
                let settle = SettleConfig {
                    receipt_poll_interval: config.settlement.receipt_poll_interval,
                    receipt_timeout: config.settlement.receipt_timeout,
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
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| StartError::Config(format!("HTTP client: {e}")))?;
        let routes = route_table(&config)?;
        let (deferred_tx, deferred_rx) = mpsc::channel(config.settlement.deferred_queue_capacity);
        let instance = hex::encode(rand::random::<[u8; 8]>());
        Ok(Arc::new(Gateway {
            config,
            routes,
            verifier,
            settlers,
            ledger,
            http,
            clock,
            deferred_tx,
            deferred_rx: Mutex::new(Some(deferred_rx)),
            balances: Mutex::new(HashMap::new()),
            instance,
        }))
    }

    /// The provider and route of a table entry.
    pub fn route(&self, entry: &RouteEntry) -> Option<(&ProviderConfig, &RouteConfig)> {
        let p = self.config.providers.get(entry.provider)?;
        Some((p, p.routes.get(entry.route)?))
    }

    /// The relayer's address, when a key is configured.
    pub fn relayer(&self) -> Option<Address> {
        self.settlers.values().next().map(|s| s.address())
    }
}

const RESERVED_PREFIXES: &[&str] = &["/receipts", "/healthz"];

fn route_table(config: &Config) -> Result<Vec<RouteEntry>, StartError> {
    let mut out = Vec::new();
    for (pi, p) in config.providers.iter().enumerate() {
        for (ri, r) in p.routes.iter().enumerate() {
            let path = r.pattern.to_string();
            if RESERVED_PREFIXES.iter().any(|x| path == *x || path.starts_with(&format!("{x}/"))) {
                return Err(StartError::Config(format!(
                    "providers[{pi}].routes[{ri}].path: {path} is reserved by the gateway"
                )));
            }
            let mut offers = Vec::new();
            for (network, amount) in &r.prices {
                let n = config
                    .network(*network)
                    .ok_or_else(|| StartError::Config(format!("route {path}: network {network} not configured")))?;
                let mut extra = serde_json::Map::new();
                extra.insert("name".into(), n.eip712_name.clone().into());
                extra.insert("version".into(), n.eip712_version.clone().into());
                offers.push(v2::PaymentRequirements {
                    scheme: tollgate_x402::SCHEME_EXACT.to_owned(),
                    network: *network,
                    amount: DecimalU256::from(amount.get()),
                    asset: n.asset,
                    pay_to: p.pay_to,
                    max_timeout_seconds: r.max_timeout_seconds,
                    extra,
                });
            }
            out.push(RouteEntry { provider: pi, route: ri, offers, name: format!("{}:{}", p.id, path) });
        }
    }
    Ok(out)
}
