//! The typed configuration: `Config` and its sections, what the rest of the gateway reads.
//!
//! Owns the types, their documentation and the defaults of `ServerLimits`. Must not parse or
//! check anything (`build`, `provider`, `checks` do) and must not import any other part of
//! `config` but `raw` (`Config` keeps the providers as written) and `upstream_allow` (whose
//! entries `[admin]` holds).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use reqwest::Url;
use secrecy::SecretString;
use tollgate_control::VaultKey;
use tollgate_metering::{AtomicAmount, SettlementMode};
use tollgate_tls::{ClientTls, ServerCert};
use tollgate_x402::Network;

use super::raw::RawProvider;
use super::upstream_allow::AllowEntry;
use crate::routes::PathPattern;

/// Everything the gateway needs, validated.
#[derive(Debug)]
pub struct Config {
    /// Listener and size limits.
    pub server: ServerConfig,
    /// The ledger database.
    pub database: DatabaseConfig,
    /// Verification policy.
    pub verification: VerificationConfig,
    /// Settlement and recovery.
    pub settlement: SettlementConfig,
    /// Chains and their assets.
    pub networks: Vec<NetworkConfig>,
    /// Providers and their priced routes, as the file gives them (validated). The served
    /// table is the control plane's, which the file seeds at startup.
    pub providers: Vec<ProviderConfig>,
    /// Reconciliation defaults and the optional periodic job.
    pub reconciliation: ReconciliationConfig,
    /// The providers as written, seeded into the control plane at startup.
    pub raw_providers: Vec<RawProvider>,
    /// The admin API.
    pub admin: AdminConfig,
    /// The credential vault's master key (absent: vault credentials cannot be used).
    pub vault_key: Option<VaultKey>,
    /// Control-plane propagation and audit.
    pub control: ControlConfig,
    /// Logging (`tollgate serve` sets up the log from it; `--log-format` overrides).
    pub log: LogConfig,
    /// Outbound trust (upstreams and RPC) and certificate reloading.
    pub tls: TlsConfig,
    /// What is accepted but unsafe; `tollgate serve` prints these at startup.
    pub warnings: Vec<ConfigWarning>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (colours only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<LogFormat, &'static str> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json"),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
}

/// A setting that is accepted but weakens a guarantee: printed at startup, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Dotted path of the key.
    pub key: String,
    /// What is unsafe and how to fix it (never a secret).
    pub reason: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Whether `serve` opens the admin listener.
    pub enabled: bool,
    /// Its address (loopback by default).
    pub listen: SocketAddr,
    /// Largest admin request body.
    pub body_bytes_max: usize,
    /// Whether a non-loopback `listen` is accepted without TLS (warned at startup).
    pub allow_insecure_remote: bool,
    /// Serve the admin API over TLS with this certificate (`tls_cert_file`/`tls_key_file`).
    pub tls: Option<Arc<ServerCert>>,
    /// Hosts (any port) and host:port pairs that upstreams set over the admin API may point
    /// at even when they resolve to loopback, private or other internal addresses
    /// (`crate::ssrf`).
    pub upstream_allow: Vec<AllowEntry>,
}

/// `[tls]`.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The roots trusted for upstreams and RPC nodes: the Mozilla set plus `extra_ca_file`.
    pub client: ClientTls,
    /// How often the listeners' certificate files are checked for a change (`None`: only
    /// on SIGHUP).
    pub cert_reload_interval: Option<Duration>,
}

/// `[control]`.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// How often a replica checks the change counter (the PostgreSQL notification usually
    /// arrives first).
    pub poll_interval: Duration,
    /// Capacity of the audit writer's queue.
    pub audit_queue_capacity: usize,
    /// How long the audit writer gathers records after the first of a batch before it appends
    /// them (one write transaction per batch instead of one per call).
    pub audit_batch: Duration,
}

/// `[reconciliation]`: the defaults of `tollgate reconcile` and the optional periodic job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconciliationConfig {
    /// Time between runs of the periodic job; `None` (the default) disables it.
    pub interval: Option<Duration>,
    /// Confirmations a transfer needs, its own block included.
    pub confirmations: u64,
    /// Blocks per `eth_getLogs` call.
    pub chunk_blocks: u64,
    /// First block of a network's first run (when no run has stored a cursor).
    pub start_block: u64,
    /// Most blocks one job run covers; a longer backlog is caught up over several runs.
    pub run_blocks_max: u64,
    /// How long the job's lease lasts (renewed before each network).
    pub lease_ttl_s: u64,
}

impl ReconciliationConfig {
    /// The reconciliation options these set (confirmations, chunk size), the rest default:
    /// for `tollgate reconcile`, the periodic job, the admin API's runs and the recovery
    /// sweep's log reads.
    pub fn options(&self) -> tollgate_recon::ReconcileOptions {
        tollgate_recon::ReconcileOptions {
            chunk_blocks: self.chunk_blocks,
            confirmations_min: self.confirmations,
            ..tollgate_recon::ReconcileOptions::default()
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Public base URL, used in the `resource` of challenges. When unset, the request's
    /// `Host` header is used (how the agent reached us).
    pub public_url: Option<Url>,
    /// Largest request body forwarded upstream.
    pub body_bytes_max: u64,
    /// Largest upstream response body relayed back.
    pub response_bytes_max: u64,
    /// Largest payment header accepted.
    pub payment_header_bytes_max: usize,
    /// How long an x402 payment identifier is remembered (its replayed outcome included).
    pub payment_id_retention: Duration,
    /// Set `X-Forwarded-For` / `-Proto` / `-Host` on forwarded requests (the agent's own are
    /// stripped either way).
    pub forwarded_headers: bool,
    /// Serve over TLS with this certificate (`tls_cert_file`/`tls_key_file`); plain HTTP when
    /// absent.
    pub tls: Option<Arc<ServerCert>>,
    /// What one client may hold of the public listener (`crate::limits`).
    pub limits: ServerLimits,
}

/// The public listener's limits (`[server]`; docs/operations.md, Limits). Applied alike to
/// plain and TLS listeners by `crate::server::serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections at once (`connections_max`); more are closed as soon as accepted.
    /// Lowered at startup to what the process's file-descriptor limit leaves room for.
    pub connections_max: usize,
    /// Time a client has to send a complete request head, from the connection's start (TLS
    /// handshake included) or from the first byte of a later request (`header_read_timeout_ms`).
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection waits for the first byte of its next request
    /// (`keep_alive_timeout_ms`); `None` (0 in the file): closed after each response.
    pub keep_alive_timeout: Option<Duration>,
    /// Longest a request without a payment takes to be answered (`request_timeout_ms`);
    /// paid calls are bounded by their own phases instead.
    pub request_timeout: Duration,
    /// Requests being handled at once (`concurrency_max`); more are shed with 503.
    pub concurrency_max: usize,
    /// Largest total of header names and values (`header_bytes_max`).
    pub header_bytes_max: usize,
    /// Most header fields in one request (`headers_count_max`).
    pub headers_count_max: usize,
    /// Longest request target, path and query (`uri_bytes_max`).
    pub uri_bytes_max: usize,
    /// Requests without a valid payment per second and client IP, refilled (`unpaid_per_ip_per_s`);
    /// 0: no per-IP limit.
    pub unpaid_per_ip_per_s: u32,
    /// How many such requests a client IP may send at once before the rate applies
    /// (`unpaid_per_ip_burst`).
    pub unpaid_per_ip_burst: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            connections_max: 10_000,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Some(Duration::from_secs(75)),
            request_timeout: Duration::from_secs(30),
            concurrency_max: 1024,
            header_bytes_max: 32 * 1024,
            headers_count_max: 100,
            uri_bytes_max: 16 * 1024,
            unpaid_per_ip_per_s: 10,
            unpaid_per_ip_burst: 50,
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// sqlx URL (may contain a password: never logged).
    pub url: SecretString,
    /// Pool size.
    pub max_connections: u32,
    /// Per-statement timeout.
    pub statement_timeout_ms: u64,
    /// SQLite: sync every commit to disk (`full`) or only survive process crashes (`normal`).
    pub sqlite_synchronous_full: bool,
}

/// `[verification]`.
#[derive(Debug, Clone)]
pub struct VerificationConfig {
    /// Minimum time left before `validBefore`.
    pub valid_before_buffer_s: u64,
    /// Optional cap on how long an authorization may stay valid.
    pub validity_window_max_s: Option<u64>,
    /// How long a payer's token balance is cached for deferred-mode checks.
    pub balance_cache_ttl_ms: u64,
}

/// What a deferred route does with a payment that admission control refuses (the backlog is
/// over its bound, the authorization would expire before its turn, or the payer's unsettled
/// exposure is at its cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferredOverflow {
    /// Serve the call in `after` mode (full verification, settled before the answer).
    After,
    /// Refuse with 503 `deferred_backlog_full` and `Retry-After`; nothing is reserved.
    Reject,
}

/// `[settlement]`.
#[derive(Debug)]
pub struct SettlementConfig {
    /// The relayer key (pays gas, sends settlements).
    pub relayer_key: Option<SecretString>,
    /// Receipt polling interval.
    pub receipt_poll_interval: Duration,
    /// How long fee caps read from the node are reused.
    pub fee_cache: Duration,
    /// Receipt wait before reporting a settlement as pending.
    pub receipt_timeout: Duration,
    /// How often the recovery sweep runs.
    pub recovery_interval: Duration,
    /// Entries untouched for this long are considered abandoned by a crashed process.
    pub recovery_grace_s: u64,
    /// Capacity of the in-memory deferred-settlement queue.
    pub deferred_queue_capacity: usize,
    /// Settlement attempts for a deferred entry before it is marked failed.
    pub deferred_attempts_max: u32,
    /// Deferred settlements in flight at once (sent and waiting for their receipts). On a
    /// chain with blocks every few seconds, one at a time would settle one entry per block.
    pub deferred_concurrency: usize,
    /// How often a deferred settlement asks for its receipt.
    pub deferred_receipt_poll_interval: Duration,
    /// Admission: a deferred payment's authorization must stay valid for the expected
    /// settlement wait (backlog ÷ measured settlements per second) plus this margin.
    pub deferred_admission_margin_s: u64,
    /// Admission: the in-process deferred backlog may hold at most this many seconds of
    /// measured settlement throughput (never fewer than `deferred_concurrency` entries).
    pub deferred_backlog_horizon_s: u64,
    /// What a deferred route does with a payment admission control refuses.
    pub deferred_overflow: DeferredOverflow,
    /// Optional cap on one payer's unsettled deferred spend per (chain, asset), atomic units.
    pub deferred_payer_exposure_max_atomic: Option<u128>,
    /// How long a settlement waits for the relayer lease (shared databases only).
    pub relayer_lease_wait: Duration,
    /// How long a relayer lease lasts if its holder dies while sending.
    pub relayer_lease_ttl_s: u64,
    /// Warn at startup when the relayer's gas balance is below this (wei).
    pub gas_warn_wei: u128,
    /// How often the readiness monitor checks the database, every network's RPC and the
    /// relayer's gas (the paid path reads its verdict, never the chain).
    pub health_interval: Duration,
    /// `/readyz` wants the relayer to afford this many settlements at the current fees.
    pub ready_settlements_min: u64,
    /// Gas one settlement is assumed to use (a `transferWithAuthorization` with the
    /// settler's margin): the relayer's balance is compared with this times the fee cap.
    pub gas_per_settlement: u64,
}

/// One `[[networks]]` entry.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The chain.
    pub network: Network,
    /// RPC endpoint (may embed an API key: redacted).
    pub rpc_url: SecretString,
    /// Token contract.
    pub asset: Address,
    /// EIP-712 domain name of the token.
    pub eip712_name: String,
    /// EIP-712 domain version of the token.
    pub eip712_version: String,
    /// Token decimals (for human prices and every amount shown to people).
    pub decimals: u8,
    /// The asset's symbol, shown beside human amounts (`USDC`).
    pub symbol: String,
    /// Per-call RPC timeout.
    pub rpc_timeout: Duration,
    /// Confirmations (its own block included) after which a settlement on this network is
    /// reported `final` by `GET /receipts/{id}`.
    pub finality_confirmations: u64,
}

impl NetworkConfig {
    /// How this network's amounts are shown to people and typed by them.
    pub fn units(&self) -> tollgate_metering::TokenUnits {
        tollgate_metering::TokenUnits { symbol: self.symbol.clone(), decimals: self.decimals }
    }
}

/// How the upstream credential is added to a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injection {
    /// A header whose value is `template` with `{secret}` replaced.
    Header {
        /// Header name.
        name: reqwest::header::HeaderName,
        /// Value template containing `{secret}`.
        template: String,
    },
    /// A query parameter.
    Query {
        /// Parameter name.
        param: String,
    },
    /// HTTP basic auth with the secret as password.
    Basic {
        /// User name.
        username: String,
    },
}

/// Where a credential's secret comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// Read once from the environment or a file (`source` is `env:NAME` / `file:PATH`).
    Static {
        /// The secret.
        secret: SecretString,
        /// Its origin, for audit and logs.
        source: String,
    },
    /// The latest unrevoked version of a vault credential of the provider.
    Vault {
        /// The credential's name.
        name: String,
    },
}

/// An upstream credential.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Where it goes.
    pub injection: Injection,
    /// Where the secret comes from.
    pub secret: SecretSource,
}

/// One `[[providers]]` entry.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Stable id.
    pub id: String,
    /// The payee.
    pub pay_to: Address,
    /// Upstream base URL.
    pub upstream: Url,
    /// Prefix removed from the gateway path before forwarding.
    pub strip_prefix: Option<String>,
    /// Injected credential.
    pub credential: Option<Credential>,
    /// Upstream timeout of routes that set none.
    pub default_upstream_timeout: Duration,
    /// Priced routes.
    pub routes: Vec<RouteConfig>,
    /// Set through the admin API: its upstream is held to the SSRF guard at every connection
    /// (`crate::ssrf`). Providers from the file are trusted.
    pub guarded: bool,
    /// What agents are told about the service (the 402's resource and discovery).
    pub service: ServiceInfo,
}

/// A provider's public description (the x402 bazaar `serviceName`, `tags`, `iconUrl`),
/// checked by the bazaar extension's rules when configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// At most 32 printable ASCII characters.
    pub name: Option<String>,
    /// At most 5, each 1 to 32 printable ASCII characters, distinct ignoring case.
    pub tags: Vec<String>,
    /// An absolute `http(s)` URL on a named host, without user information.
    pub icon_url: Option<String>,
}

/// How a route describes its input and output to agents (the bazaar extension and the
/// OpenAPI document). Examples and schemas are JSON, as configured; schemas are objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDiscovery {
    /// Example query parameters (an object).
    pub query_example: Option<serde_json::Value>,
    /// JSON Schema of the query parameters (an object schema).
    pub query_schema: Option<serde_json::Value>,
    /// `json`, `form-data` or `text`: the body of POST, PUT and PATCH.
    pub body_type: String,
    /// Example request body.
    pub body_example: Option<serde_json::Value>,
    /// JSON Schema of the request body.
    pub body_schema: Option<serde_json::Value>,
    /// Example response body.
    pub output_example: Option<serde_json::Value>,
    /// JSON Schema of the response body.
    pub output_schema: Option<serde_json::Value>,
}

/// When an `after` call is answered, relative to its settlement (`settlement_wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementWait {
    /// Once the node acknowledged the broadcast: `settlement_pending` with the hash; the
    /// chaser and the sweep record the receipt later.
    Submitted,
    /// Once the receipt is in (the default): a success, or `settlement_pending` when the
    /// receipt wait runs out.
    Included,
    /// Once the settlement's block has this many confirmations, its own included, within the
    /// receipt wait; beyond it `settlement_pending`.
    Confirmations(u64),
}

impl SettlementWait {
    /// How it is written in the configuration.
    pub fn as_config(self) -> String {
        match self {
            SettlementWait::Submitted => "submitted".to_owned(),
            SettlementWait::Included => "included".to_owned(),
            SettlementWait::Confirmations(n) => format!("confirmations:{n}"),
        }
    }
}

/// One priced route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Path pattern.
    pub pattern: PathPattern,
    /// Allowed methods (upper case).
    pub methods: BTreeSet<String>,
    /// Price per accepted network, in that network's atomic units; empty for a free route.
    pub prices: Vec<(Network, AtomicAmount)>,
    /// A free route (`free = true` or a price of 0): forwarded with the provider's credential
    /// and audited, never quoted (no 402) and never written to the ledger.
    pub free: bool,
    /// Human description (challenge `resource.description`).
    pub description: String,
    /// Response media type.
    pub mime_type: String,
    /// Settlement mode.
    pub settlement: SettlementMode,
    /// When an `after` call is answered (always [`SettlementWait::Included`] in the other
    /// modes).
    pub settlement_wait: SettlementWait,
    /// `maxTimeoutSeconds` offered.
    pub max_timeout_seconds: u64,
    /// Upstream timeout.
    pub upstream_timeout: Duration,
    /// Request body cap.
    pub body_bytes_max: u64,
    /// Charge for a 3xx answer (by default a redirect is not the resource: the entry is
    /// voided, or in `before` mode owed back).
    pub charge_redirects: bool,
    /// Relay the upstream's `Set-Cookie` to the agent (dropped by default).
    pub allow_set_cookie: bool,
    /// The x402 `payment-identifier` extension is required (a payment without an id: 400).
    pub payment_id_required: bool,
    /// A replayed payment identifier gets the stored response body when the body was at most
    /// this many bytes; 0: bodies are not stored (the replay is 409 `payment_already_processed`).
    pub replay_body_bytes_max: u64,
    /// Its input and output as agents are told them.
    pub discovery: RouteDiscovery,
}
