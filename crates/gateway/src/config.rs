//! The gateway's configuration: a TOML file parsed once at startup into typed values.
//!
//! Unknown keys are refused, and every error names the offending key
//! (`providers[0].routes[1].price: ...`). Secrets (upstream credentials, the relayer key,
//! RPC URLs given by environment) are read here, once, into redacted types; they are never
//! printed. Every key is documented in `docs/configuration.md`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tollgate_metering::{AtomicAmount, SettlementMode};
use tollgate_tls::{ClientTls, ServerCert};
use tollgate_x402::Network;

use crate::routes::PathPattern;
pub use tollgate_control::VaultKey;
use tollgate_control::vault::check_vault_name;

mod toml_error;
mod upstream_allow;

pub use upstream_allow::AllowEntry;
pub(crate) use upstream_allow::normal_host;

fn parse_location(key: Option<&str>, line: Option<usize>, column: Option<usize>) -> String {
    toml_error::location(key, line, column)
}

/// Why the configuration was refused. Always names the key; never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// TOML syntax error, unknown key or wrong type. Built from the parser's position and a
    /// fixed description, never from its `Display`, which quotes the offending line (an
    /// unquoted `rpc_url = https://host/KEY` or an unknown `relayer_key = "0x…"` would be
    /// printed whole).
    #[error("{}{reason}", parse_location(key.as_deref(), *line, *column))]
    Parse {
        /// Dotted path of the key when it is known (`settlement.relayer_key`); a key that
        /// looks like a secret itself is not named.
        key: Option<String>,
        /// 1-based line of the error, when the parser gave a position.
        line: Option<usize>,
        /// 1-based column (in characters) of the error, when the parser gave a position.
        column: Option<usize>,
        /// What is wrong, without the value.
        reason: String,
    },
    /// A value is present but invalid.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `providers[0].pay_to`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Reasons shared by several keys. Like every reason, they do not repeat the value.
const UNKNOWN_NETWORK: &str = "not a known network (eip155:<chain id>, or a v1 name like base)";
const BAD_PATH_PATTERN: &str = "not a route pattern: starts with `/`, no empty, `.`, `..` or encoded segments, \
     `{name}` parameters, `*` only as the last segment";

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

// ---------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    verification: RawVerification,
    #[serde(default)]
    settlement: RawSettlement,
    #[serde(default)]
    networks: Vec<RawNetwork>,
    #[serde(default)]
    providers: Vec<RawProvider>,
    #[serde(default)]
    reconciliation: RawReconciliation,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    vault: RawVault,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    tls: RawTls,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    extra_ca_file: Option<PathBuf>,
    cert_reload_interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    enabled: Option<bool>,
    listen: Option<String>,
    body_bytes_max: Option<usize>,
    allow_insecure_remote: Option<bool>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    upstream_allow: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVault {
    master_key_env: Option<String>,
    master_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    poll_interval_ms: Option<u64>,
    audit_queue_capacity: Option<usize>,
    audit_batch_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    public_url: Option<String>,
    body_bytes_max: Option<u64>,
    response_bytes_max: Option<u64>,
    payment_header_bytes_max: Option<u64>,
    forwarded_headers: Option<bool>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    connections_max: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    keep_alive_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    concurrency_max: Option<usize>,
    header_bytes_max: Option<usize>,
    headers_count_max: Option<usize>,
    uri_bytes_max: Option<usize>,
    unpaid_per_ip_per_s: Option<u32>,
    unpaid_per_ip_burst: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    url_env: Option<String>,
    max_connections: Option<u32>,
    statement_timeout_ms: Option<u64>,
    sqlite_durability: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVerification {
    valid_before_buffer_s: Option<u64>,
    validity_window_max_s: Option<u64>,
    balance_cache_ttl_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettlement {
    relayer_key_env: Option<String>,
    relayer_key_file: Option<PathBuf>,
    receipt_poll_interval_ms: Option<u64>,
    receipt_timeout_ms: Option<u64>,
    recovery_interval_ms: Option<u64>,
    recovery_grace_s: Option<u64>,
    deferred_queue_capacity: Option<usize>,
    deferred_attempts_max: Option<u32>,
    deferred_concurrency: Option<usize>,
    deferred_receipt_poll_interval_ms: Option<u64>,
    deferred_admission_margin_s: Option<u64>,
    deferred_backlog_horizon_s: Option<u64>,
    deferred_overflow: Option<String>,
    deferred_payer_exposure_max_atomic: Option<String>,
    relayer_lease_wait_ms: Option<u64>,
    relayer_lease_ttl_s: Option<u64>,
    gas_warn_wei: Option<u128>,
    health_interval_ms: Option<u64>,
    ready_settlements_min: Option<u64>,
    gas_per_settlement: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReconciliation {
    interval_s: Option<u64>,
    confirmations: Option<u64>,
    chunk_blocks: Option<u64>,
    start_block: Option<u64>,
    run_blocks_max: Option<u64>,
    lease_ttl_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    id: String,
    rpc_url: Option<String>,
    rpc_url_env: Option<String>,
    asset: String,
    eip712_name: String,
    eip712_version: String,
    decimals: Option<u8>,
    rpc_timeout_ms: Option<u64>,
    allow_insecure_http: Option<bool>,
}

/// A provider as written in the file (and as stored, JSON, in the control plane).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// Stable id.
    pub id: String,
    /// Payee address.
    pub pay_to: String,
    /// Upstream base URL.
    pub upstream: String,
    /// Prefix removed before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<String>,
    /// How the upstream credential is injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<RawCredential>,
    /// Default upstream timeout of its routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout_ms: Option<u64>,
    /// Accept an `http://` upstream off loopback (requests, injected credential included,
    /// cross the network in clear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_insecure_http: Option<bool>,
    /// Priced routes (the file only; stored separately as endpoints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RawRoute>,
}

/// A credential injection as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    /// `header`, `query` or `basic`.
    pub inject: String,
    /// Secret from this environment variable (file only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Secret from this file (file only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Secret from the vault: the latest unrevoked version of this credential name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<String>,
    /// Header name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Header value template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Basic-auth user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// A priced route as written (and as stored, JSON, in the control plane).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawRoute {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_atomic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_bytes_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_redirects: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_set_cookie: Option<bool>,
}

// ---------------------------------------------------------------------------------------
// The typed configuration.

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
    /// Token decimals (for human prices).
    pub decimals: u8,
    /// Per-call RPC timeout.
    pub rpc_timeout: Duration,
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
}

/// One priced route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Path pattern.
    pub pattern: PathPattern,
    /// Allowed methods (upper case).
    pub methods: BTreeSet<String>,
    /// Price per accepted network, in that network's atomic units.
    pub prices: Vec<(Network, AtomicAmount)>,
    /// Human description (challenge `resource.description`).
    pub description: String,
    /// Response media type.
    pub mime_type: String,
    /// Settlement mode.
    pub settlement: SettlementMode,
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
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // Whoever can write the file chooses the payee and the upstreams.
        if let Some(mode) = file_mode(path)
            && mode & 0o002 != 0
        {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                reason: format!("the file is world-writable (mode {:04o}); chmod o-w", mode & 0o7777),
            });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_owned(), reason: e.to_string() })?;
        Self::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses configuration text, resolving `*_env` keys through `env`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml_error::from_str(text)?;
        build(raw, env)
    }

    /// The network entry for `network`.
    pub fn network(&self, network: Network) -> Option<&NetworkConfig> {
        self.networks.iter().find(|n| n.network == network)
    }
}

fn ms(v: Option<u64>, default_ms: u64) -> Duration {
    Duration::from_millis(v.unwrap_or(default_ms))
}

fn secret_from(
    key: &str,
    env_name: Option<&str>,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(SecretString, String)>, ConfigError> {
    match (env_name, file) {
        (Some(_), Some(_)) => Err(invalid(key, "give either the _env or the _file form, not both")),
        (Some(name), None) => match env(name) {
            Some(v) if !v.trim().is_empty() => {
                Ok(Some((SecretString::from(v.trim().to_owned()), format!("env:{name}"))))
            }
            _ => Err(invalid(key, format!("environment variable {name} is not set"))),
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => {
                Ok(Some((SecretString::from(v.trim().to_owned()), format!("file:{}", path.display()))))
            }
            Ok(_) => Err(invalid(key, format!("{} is empty", path.display()))),
            Err(e) => Err(invalid(key, format!("cannot read {}: {e}", path.display()))),
        },
        (None, None) => Ok(None),
    }
}

/// A `0x`-prefixed 20-byte address (the file's and the admin API's one rule).
pub(crate) fn address(key: &str, s: &str) -> Result<Address, ConfigError> {
    let hex = s.strip_prefix("0x").ok_or_else(|| invalid(key, "expected a 0x-prefixed address"))?;
    if hex.len() != 40 {
        return Err(invalid(key, "expected 20 bytes (40 hex digits)"));
    }
    hex.parse::<Address>().map_err(|_| invalid(key, "not a hex address"))
}

fn url(key: &str, s: &str) -> Result<Url, ConfigError> {
    let u = Url::parse(s).map_err(|e| invalid(key, format!("not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(invalid(key, "only http and https URLs are supported"));
    }
    Ok(u)
}

/// A base URL that paths are appended to (an upstream, the public URL). Credentials in it
/// would be printed, stored and (for the public URL) published in every challenge: an
/// upstream's belong in `credential`, in a redacted type. A query or fragment would end up
/// before the appended path.
fn base_url(key: &str, s: &str) -> Result<Url, ConfigError> {
    let u = url(key, s)?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err(invalid(
            key,
            "must not contain credentials (user:password@); give an upstream's as credential = { inject = \"basic\", ... }",
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(invalid(
            key,
            "must not contain a query or fragment; give an upstream's key as credential = { inject = \"query\", ... }",
        ));
    }
    Ok(u)
}

/// Converts a human decimal amount (`"0.001"`) to atomic units with `decimals`.
pub fn parse_human_amount(s: &str, decimals: u8) -> Result<u64, String> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits_only = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !digits_only(whole) || !digits_only(frac) || s.ends_with('.') {
        return Err("not a non-negative decimal amount like \"0.001\"".to_owned());
    }
    if frac.len() > usize::from(decimals) {
        return Err(format!("more decimal places than the token's {decimals}"));
    }
    let scale = 10u128.checked_pow(u32::from(decimals)).ok_or("decimals too large")?;
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| "too large".to_owned())? };
    let frac_scaled: u128 = if frac.is_empty() {
        0
    } else {
        let pad = 10u128.pow(u32::from(decimals) - u32::try_from(frac.len()).unwrap_or(0));
        frac.parse::<u128>().map_err(|_| "malformed".to_owned())? * pad
    };
    let total = whole.checked_mul(scale).and_then(|w| w.checked_add(frac_scaled)).ok_or("too large".to_owned())?;
    u64::try_from(total).map_err(|_| "too large".to_owned())
}

fn build(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut warnings = check_secret_files(&raw)?;
    let listen_s = raw.server.listen.as_deref().unwrap_or("127.0.0.1:8402");
    let listen: SocketAddr = listen_s.parse().map_err(|_| invalid("server.listen", "expected host:port"))?;
    let public_url = match &raw.server.public_url {
        Some(u) => Some(base_url("server.public_url", u)?),
        None => None,
    };
    let server = ServerConfig {
        listen,
        public_url,
        body_bytes_max: raw.server.body_bytes_max.unwrap_or(1024 * 1024),
        response_bytes_max: raw.server.response_bytes_max.unwrap_or(16 * 1024 * 1024),
        payment_header_bytes_max: usize::try_from(raw.server.payment_header_bytes_max.unwrap_or(16 * 1024))
            .map_err(|_| invalid("server.payment_header_bytes_max", "too large"))?,
        forwarded_headers: raw.server.forwarded_headers.unwrap_or(true),
        tls: server_cert("server", raw.server.tls_cert_file.as_deref(), raw.server.tls_key_file.as_deref())?,
        limits: ServerLimits::default(),
    };
    let server = ServerConfig { limits: server_limits(&raw.server, server.payment_header_bytes_max)?, ..server };
    let tls = TlsConfig {
        client: ClientTls::new(raw.tls.extra_ca_file.as_deref())
            .map_err(|e| invalid("tls.extra_ca_file", e.to_string()))?,
        cert_reload_interval: match raw.tls.cert_reload_interval_ms.unwrap_or(5_000) {
            0 => None,
            v => Some(Duration::from_millis(v.max(100))),
        },
    };

    let db_url = match (raw.database.url, raw.database.url_env.as_deref()) {
        (Some(_), Some(_)) => return Err(invalid("database", "give either url or url_env, not both")),
        (Some(u), None) => u,
        (None, Some(name)) => env(name).ok_or_else(|| invalid("database.url_env", format!("{name} is not set")))?,
        (None, None) => "sqlite://tollgate.db?mode=rwc".to_owned(),
    };
    if !(db_url.starts_with("sqlite:") || db_url.starts_with("postgres://") || db_url.starts_with("postgresql://")) {
        return Err(invalid("database.url", "expected a sqlite: or postgres:// URL"));
    }
    let database = DatabaseConfig {
        url: SecretString::from(db_url),
        max_connections: raw.database.max_connections.unwrap_or(8),
        statement_timeout_ms: raw.database.statement_timeout_ms.unwrap_or(5_000),
        sqlite_synchronous_full: match raw.database.sqlite_durability.as_deref().unwrap_or("full") {
            "full" => true,
            "normal" => false,
            _ => return Err(invalid("database.sqlite_durability", "expected full or normal")),
        },
    };

    let verification = VerificationConfig {
        valid_before_buffer_s: raw.verification.valid_before_buffer_s.unwrap_or(6),
        validity_window_max_s: raw.verification.validity_window_max_s,
        balance_cache_ttl_ms: raw.verification.balance_cache_ttl_ms.unwrap_or(2_000),
    };

    let s = raw.settlement;
    let relayer_key =
        secret_from("settlement.relayer_key", s.relayer_key_env.as_deref(), s.relayer_key_file.as_deref(), env)?
            .map(|(k, _)| k);
    if let Some(k) = &relayer_key {
        k.expose_secret()
            .trim_start_matches("0x")
            .parse::<alloy::signers::local::PrivateKeySigner>()
            .map_err(|_| invalid("settlement.relayer_key", "not a valid secp256k1 private key (32 bytes hex)"))?;
    }
    let settlement = SettlementConfig {
        relayer_key,
        receipt_poll_interval: ms(s.receipt_poll_interval_ms, 250),
        receipt_timeout: ms(s.receipt_timeout_ms, 30_000),
        recovery_interval: ms(s.recovery_interval_ms, 5_000),
        recovery_grace_s: s.recovery_grace_s.unwrap_or(120),
        deferred_queue_capacity: s.deferred_queue_capacity.unwrap_or(1024).max(1),
        deferred_attempts_max: s.deferred_attempts_max.unwrap_or(8).max(1),
        deferred_concurrency: s.deferred_concurrency.unwrap_or(32).clamp(1, 1024),
        deferred_receipt_poll_interval: ms(s.deferred_receipt_poll_interval_ms.map(|v| v.max(1)), 250),
        deferred_admission_margin_s: s.deferred_admission_margin_s.unwrap_or(30),
        deferred_backlog_horizon_s: s.deferred_backlog_horizon_s.unwrap_or(60).max(1),
        deferred_overflow: match s.deferred_overflow.as_deref() {
            None | Some("after") => DeferredOverflow::After,
            Some("reject") => DeferredOverflow::Reject,
            Some(_) => return Err(invalid("settlement.deferred_overflow", "expected after or reject")),
        },
        deferred_payer_exposure_max_atomic: match s.deferred_payer_exposure_max_atomic.as_deref() {
            None => None,
            Some(v) => Some(v.parse::<u128>().map_err(|_| {
                invalid("settlement.deferred_payer_exposure_max_atomic", "expected a decimal integer (atomic units)")
            })?),
        },
        relayer_lease_wait: ms(s.relayer_lease_wait_ms, 10_000),
        relayer_lease_ttl_s: s.relayer_lease_ttl_s.unwrap_or(10).max(1),
        gas_warn_wei: s.gas_warn_wei.unwrap_or(1_000_000_000_000_000),
        // At least 100 ms: each check is a few RPC calls and a database read.
        health_interval: ms(s.health_interval_ms.map(|v| v.max(100)), 2_000),
        ready_settlements_min: s.ready_settlements_min.unwrap_or(10).max(1),
        gas_per_settlement: s.gas_per_settlement.unwrap_or(90_000).max(21_000),
    };

    let mut networks: Vec<NetworkConfig> = Vec::new();
    for (i, n) in raw.networks.into_iter().enumerate() {
        let key = |k: &str| format!("networks[{i}].{k}");
        let network = Network::parse(&n.id).map_err(|_| invalid(key("id"), UNKNOWN_NETWORK))?;
        if networks.iter().any(|m| m.network == network) {
            return Err(invalid(key("id"), format!("{network} is configured twice")));
        }
        let rpc_url = match (n.rpc_url, n.rpc_url_env.as_deref()) {
            (Some(_), Some(_)) => return Err(invalid(key("rpc_url"), "give either rpc_url or rpc_url_env, not both")),
            (Some(u), None) => u,
            (None, Some(name)) => env(name).ok_or_else(|| invalid(key("rpc_url_env"), format!("{name} is not set")))?,
            (None, None) => return Err(invalid(key("rpc_url"), "missing")),
        };
        let parsed = url(&key("rpc_url"), &rpc_url)?;
        check_plain_http(&key("rpc_url"), &parsed, n.allow_insecure_http.unwrap_or(false))?;
        networks.push(NetworkConfig {
            network,
            rpc_url: SecretString::from(rpc_url),
            asset: address(&key("asset"), &n.asset)?,
            eip712_name: n.eip712_name,
            eip712_version: n.eip712_version,
            decimals: n.decimals.unwrap_or(6),
            rpc_timeout: ms(n.rpc_timeout_ms, 5_000),
        });
    }

    let mut providers: Vec<ProviderConfig> = Vec::new();
    for (pi, p) in raw.providers.iter().enumerate() {
        let pkey = format!("providers[{pi}]");
        if providers.iter().any(|q| q.id == p.id) {
            return Err(invalid(format!("{pkey}.id"), "an earlier provider has the same id"));
        }
        let mut provider = build_provider(&pkey, p, env, true)?;
        for (ri, r) in p.routes.iter().enumerate() {
            let route = build_route(&format!("{pkey}.routes[{ri}]"), r, &provider, &networks, &server)?;
            provider.routes.push(route);
        }
        providers.push(provider);
    }
    if settlement.relayer_key.is_none() && providers.iter().any(|p| !p.routes.is_empty()) {
        // Without a relayer every paid call would be verified, forwarded and then fail to
        // settle: refuse to start instead.
        return Err(invalid(
            "settlement.relayer_key",
            "required (relayer_key_env or relayer_key_file) when routes are priced",
        ));
    }
    let admin = AdminConfig {
        enabled: raw.admin.enabled.unwrap_or(true),
        listen: raw
            .admin
            .listen
            .as_deref()
            .unwrap_or("127.0.0.1:8403")
            .parse()
            .map_err(|_| invalid("admin.listen", "expected host:port"))?,
        body_bytes_max: raw.admin.body_bytes_max.unwrap_or(64 * 1024),
        allow_insecure_remote: raw.admin.allow_insecure_remote.unwrap_or(false),
        tls: server_cert("admin", raw.admin.tls_cert_file.as_deref(), raw.admin.tls_key_file.as_deref())?,
        upstream_allow: raw
            .admin
            .upstream_allow
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, e)| AllowEntry::parse(e).map_err(|r| invalid(format!("admin.upstream_allow[{i}]"), r)))
            .collect::<Result<_, _>>()?,
    };
    if let Some(w) = check_admin_listener(&admin)? {
        warnings.push(w);
    }
    for (pi, p) in providers.iter().enumerate() {
        check_upstream(&format!("providers[{pi}].upstream"), &p.upstream, &server, &admin, &networks)?;
    }
    let vault_key = match secret_from(
        "vault.master_key",
        raw.vault.master_key_env.as_deref(),
        raw.vault.master_key_file.as_deref(),
        env,
    )? {
        None => None,
        Some((key, _)) => Some(parse_master_key(key.expose_secret()).map_err(|r| invalid("vault.master_key", r))?),
    };
    // A vault credential named in the file cannot ever serve without the master key: refuse
    // now, naming the provider and the credential, rather than answer 503 at every call.
    // (A credential with no uploaded version yet is legitimate at startup: it is uploaded
    // through the admin API; `/readyz` reports it until then.)
    if vault_key.is_none() {
        for (pi, p) in providers.iter().enumerate() {
            if let Some(Credential { secret: SecretSource::Vault { name }, .. }) = &p.credential {
                return Err(invalid(
                    format!("providers[{pi}].credential.vault"),
                    format!(
                        "provider `{}` credential `{name}` is a vault credential, but [vault] has no master key \
                         (master_key_env or master_key_file)",
                        p.id
                    ),
                ));
            }
        }
    }
    let log = LogConfig {
        format: match raw.log.format.as_deref() {
            None => LogFormat::Text,
            Some(f) => f.parse().map_err(|r| invalid("log.format", r))?,
        },
    };
    let control = ControlConfig {
        // At least 10 ms: the poll is a database read.
        poll_interval: ms(raw.control.poll_interval_ms.map(|v| v.max(10)), 250),
        audit_queue_capacity: raw.control.audit_queue_capacity.unwrap_or(4096).max(1),
        // At most a second: records wait in memory this long, and a crash loses the waiting.
        audit_batch: ms(raw.control.audit_batch_ms.map(|v| v.min(1_000)), 50),
    };
    Ok(Config {
        server,
        database,
        verification,
        settlement,
        networks,
        providers,
        raw_providers: raw.providers,
        admin,
        vault_key,
        control,
        tls,
        reconciliation: reconciliation(raw.reconciliation)?,
        log,
        warnings,
    })
}

/// Off loopback, a plain-HTTP admin API would send its bearer tokens across the network in
/// clear. Refused unless the listener serves TLS (`admin.tls_cert_file`) or
/// `admin.allow_insecure_remote` says a TLS proxy is in front; then warned.
fn check_admin_listener(admin: &AdminConfig) -> Result<Option<ConfigWarning>, ConfigError> {
    if !admin.enabled || admin.listen.ip().is_loopback() || admin.tls.is_some() {
        return Ok(None);
    }
    if !admin.allow_insecure_remote {
        return Err(invalid(
            "admin.listen",
            "not a loopback address and no TLS: bearer tokens would cross the network in clear. Listen on \
             127.0.0.1 or ::1, set admin.tls_cert_file and admin.tls_key_file, or set \
             admin.allow_insecure_remote = true if a TLS proxy on this host is the only way in",
        ));
    }
    Ok(Some(ConfigWarning {
        key: "admin.listen".to_owned(),
        reason: "the admin API listens off loopback without TLS (admin.allow_insecure_remote = true): \
                 bearer tokens are readable on the network unless a TLS proxy is the only way in"
            .to_owned(),
    }))
}

/// A listener's certificate: both files or neither, loaded now so a bad file is refused at
/// startup with the key named.
/// `[server]`'s listener limits, each within a range that keeps the listener usable.
fn server_limits(raw: &RawServer, payment_header_bytes_max: usize) -> Result<ServerLimits, ConfigError> {
    let d = ServerLimits::default();
    let within = |key: &str, v: Option<u64>, default: u64, lo: u64, hi: u64| -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(v) if (lo..=hi).contains(&v) => Ok(v),
            Some(_) => Err(invalid(format!("server.{key}"), format!("must be between {lo} and {hi}"))),
        }
    };
    let size = |key: &str, v: Option<usize>, default: usize, lo: usize, hi: usize| {
        let wide = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        within(key, v.map(wide), wide(default), wide(lo), wide(hi)).map(|v| usize::try_from(v).unwrap_or(usize::MAX))
    };
    let millis = |key: &str, v: Option<u64>, default: Duration, lo: u64, hi: u64| {
        within(key, v, u64::try_from(default.as_millis()).unwrap_or(u64::MAX), lo, hi).map(Duration::from_millis)
    };
    let header_bytes_max = size("header_bytes_max", raw.header_bytes_max, d.header_bytes_max, 4 * 1024, 1024 * 1024)?;
    // The payment header travels among the headers: a cap below it would refuse every payment.
    if header_bytes_max < payment_header_bytes_max.saturating_add(1024) {
        return Err(invalid(
            "server.header_bytes_max",
            "must leave room for the payment header (payment_header_bytes_max plus 1024)",
        ));
    }
    let keep_alive_ms = within(
        "keep_alive_timeout_ms",
        raw.keep_alive_timeout_ms,
        d.keep_alive_timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        0,
        3_600_000,
    )?;
    let unpaid_per_ip_per_s = within("unpaid_per_ip_per_s", raw.unpaid_per_ip_per_s.map(u64::from), 10, 0, 1_000_000)?;
    let unpaid_per_ip_burst = within("unpaid_per_ip_burst", raw.unpaid_per_ip_burst.map(u64::from), 50, 1, 1_000_000)?;
    Ok(ServerLimits {
        connections_max: size("connections_max", raw.connections_max, d.connections_max, 1, 1_000_000)?,
        header_read_timeout: millis(
            "header_read_timeout_ms",
            raw.header_read_timeout_ms,
            d.header_read_timeout,
            100,
            300_000,
        )?,
        keep_alive_timeout: (keep_alive_ms > 0).then(|| Duration::from_millis(keep_alive_ms)),
        request_timeout: millis("request_timeout_ms", raw.request_timeout_ms, d.request_timeout, 100, 3_600_000)?,
        concurrency_max: size("concurrency_max", raw.concurrency_max, d.concurrency_max, 1, 1_000_000)?,
        header_bytes_max,
        headers_count_max: size("headers_count_max", raw.headers_count_max, d.headers_count_max, 8, 1000)?,
        uri_bytes_max: size("uri_bytes_max", raw.uri_bytes_max, d.uri_bytes_max, 256, 65_000)?,
        unpaid_per_ip_per_s: u32::try_from(unpaid_per_ip_per_s).unwrap_or(u32::MAX),
        unpaid_per_ip_burst: u32::try_from(unpaid_per_ip_burst).unwrap_or(u32::MAX),
    })
}

fn server_cert(section: &str, cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Arc<ServerCert>>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(format!("{section}.tls_key_file"), "missing (tls_cert_file is set)")),
        (None, Some(_)) => Err(invalid(format!("{section}.tls_cert_file"), "missing (tls_key_file is set)")),
        (Some(c), Some(k)) => ServerCert::load(c, k).map(Some).map_err(|e| {
            let key = match e {
                tollgate_tls::TlsError::BadKey { .. } => "tls_key_file",
                tollgate_tls::TlsError::Read { ref path, .. } if path == k => "tls_key_file",
                _ => "tls_cert_file",
            };
            invalid(format!("{section}.{key}"), e.to_string())
        }),
    }
}

/// `http://` to another host sends requests (RPC calls; upstream calls with their injected
/// credential) across the network in clear, where they can be read and answered by anyone
/// on the path. Loopback (`localhost`, 127.0.0.0/8, ::1) is fine; elsewhere the entry must say
/// `allow_insecure_http = true`.
fn check_plain_http(key: &str, u: &Url, allowed: bool) -> Result<(), ConfigError> {
    if u.scheme() != "http" || allowed {
        return Ok(());
    }
    let loopback = match url_host(u) {
        Some(UrlHost::Ip(ip)) => ip.is_loopback(),
        Some(UrlHost::Loopback) => true,
        _ => false,
    };
    if loopback {
        return Ok(());
    }
    Err(invalid(
        key,
        "http:// to a host that is not loopback: traffic would cross the network in clear; use https://, \
         or set allow_insecure_http = true on this entry",
    ))
}

/// An upstream must be a third party: pointed at our RPC node it would let any paying agent
/// send JSON-RPC (transactions included) to the node with our network position; pointed at
/// the admin listener it would relay paid calls into the admin API; pointed at the gateway's
/// own listener it would loop. Compared by host and port (`localhost` and the unspecified
/// listen address count as loopback). Used for the file's providers and the admin API's.
pub fn check_upstream(
    key: &str,
    upstream: &Url,
    server: &ServerConfig,
    admin: &AdminConfig,
    networks: &[NetworkConfig],
) -> Result<(), ConfigError> {
    match upstream_conflict(upstream, server, admin, networks) {
        None => Ok(()),
        Some(UpstreamConflict::RpcNode { network }) => Err(invalid(
            key,
            format!(
                "points at the RPC node of networks[{network}] (same host and port): paying agents could send \
                 it JSON-RPC requests through the gateway"
            ),
        )),
        Some(UpstreamConflict::AdminListener) => {
            Err(invalid(key, "points at the admin listener (admin.listen): paid calls would reach the admin API"))
        }
        Some(UpstreamConflict::OwnListener) => {
            Err(invalid(key, "points at the gateway's own listener (server.listen): calls would loop"))
        }
    }
}

/// Which of the gateway's own endpoints an upstream's host and port name (`check_upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamConflict {
    /// The RPC node of `networks[network]`.
    RpcNode {
        /// Index in `[[networks]]`.
        network: usize,
    },
    /// The admin listener.
    AdminListener,
    /// The public listener.
    OwnListener,
}

/// The first of the gateway's own endpoints `upstream` names by host and port, if any.
pub fn upstream_conflict(
    upstream: &Url,
    server: &ServerConfig,
    admin: &AdminConfig,
    networks: &[NetworkConfig],
) -> Option<UpstreamConflict> {
    for (network, n) in networks.iter().enumerate() {
        if let Ok(rpc) = Url::parse(n.rpc_url.expose_secret())
            && same_host_port(upstream, &rpc)
        {
            return Some(UpstreamConflict::RpcNode { network });
        }
    }
    if admin.enabled && points_at_listener(upstream, admin.listen) {
        return Some(UpstreamConflict::AdminListener);
    }
    if points_at_listener(upstream, server.listen) {
        return Some(UpstreamConflict::OwnListener);
    }
    None
}

/// The URL's host as an address when it is one (`localhost` counts as loopback).
enum UrlHost {
    Ip(std::net::IpAddr),
    Loopback,
    Name(String),
}

fn url_host(u: &Url) -> Option<UrlHost> {
    let host = u.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Some(match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => UrlHost::Ip(ip),
        Err(_) if bare.eq_ignore_ascii_case("localhost") => UrlHost::Loopback,
        Err(_) => UrlHost::Name(bare.to_ascii_lowercase()),
    })
}

fn same_host_port(a: &Url, b: &Url) -> bool {
    if a.port_or_known_default() != b.port_or_known_default() {
        return false;
    }
    let is_loopback = |h: &UrlHost| match h {
        UrlHost::Ip(ip) => ip.is_loopback(),
        UrlHost::Loopback => true,
        UrlHost::Name(_) => false,
    };
    match (url_host(a), url_host(b)) {
        (Some(UrlHost::Ip(x)), Some(UrlHost::Ip(y))) => x == y,
        (Some(UrlHost::Name(x)), Some(UrlHost::Name(y))) => x == y,
        (Some(UrlHost::Loopback), Some(h)) | (Some(h), Some(UrlHost::Loopback)) => is_loopback(&h),
        _ => false,
    }
}

fn points_at_listener(u: &Url, listen: SocketAddr) -> bool {
    if u.port_or_known_default() != Some(listen.port()) {
        return false;
    }
    match url_host(u) {
        Some(UrlHost::Ip(ip)) => ip == listen.ip() || (listen.ip().is_unspecified() && ip.is_loopback()),
        Some(UrlHost::Loopback) => listen.ip().is_loopback() || listen.ip().is_unspecified(),
        _ => false,
    }
}

/// The permission bits of `path`, when it exists (always `None` off Unix).
fn file_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).ok().map(|m| m.permissions().mode())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Every file the configuration reads a secret from, checked before any is read: a
/// world-writable one is refused (anyone on the host could substitute a key they know, or a
/// credential of their choice), a group- or world-readable one is warned about.
fn check_secret_files(raw: &RawConfig) -> Result<Vec<ConfigWarning>, ConfigError> {
    let mut files: Vec<(String, &Path)> = Vec::new();
    if let Some(f) = &raw.settlement.relayer_key_file {
        files.push(("settlement.relayer_key_file".to_owned(), f));
    }
    if let Some(f) = &raw.vault.master_key_file {
        files.push(("vault.master_key_file".to_owned(), f));
    }
    if let Some(f) = &raw.server.tls_key_file {
        files.push(("server.tls_key_file".to_owned(), f));
    }
    if let Some(f) = &raw.admin.tls_key_file {
        files.push(("admin.tls_key_file".to_owned(), f));
    }
    for (pi, p) in raw.providers.iter().enumerate() {
        if let Some(f) = p.credential.as_ref().and_then(|c| c.secret_file.as_deref()) {
            files.push((format!("providers[{pi}].credential.secret_file"), f));
        }
    }
    let mut warnings = Vec::new();
    for (key, path) in files {
        let Some(mode) = file_mode(path) else { continue };
        let bits = mode & 0o7777;
        if mode & 0o002 != 0 {
            return Err(invalid(
                key,
                format!(
                    "{} is world-writable (mode {bits:04o}): anyone on this host could replace the secret; chmod 600",
                    path.display()
                ),
            ));
        }
        if mode & 0o044 != 0 {
            warnings.push(ConfigWarning {
                key,
                reason: format!("{} is readable by other users (mode {bits:04o}); chmod 600", path.display()),
            });
        }
    }
    Ok(warnings)
}

fn reconciliation(r: RawReconciliation) -> Result<ReconciliationConfig, ConfigError> {
    let at_least_1 = |key: &str, v: Option<u64>, default: u64| match v {
        Some(0) => Err(invalid(format!("reconciliation.{key}"), "must be at least 1")),
        v => Ok(v.unwrap_or(default)),
    };
    Ok(ReconciliationConfig {
        interval: r.interval_s.map(|s| at_least_1("interval_s", Some(s), 1).map(Duration::from_secs)).transpose()?,
        confirmations: at_least_1("confirmations", r.confirmations, 10)?,
        chunk_blocks: at_least_1("chunk_blocks", r.chunk_blocks, 2_000)?,
        start_block: r.start_block.unwrap_or(0),
        run_blocks_max: at_least_1("run_blocks_max", r.run_blocks_max, 100_000)?,
        lease_ttl_s: at_least_1("lease_ttl_s", r.lease_ttl_s, 300)?,
    })
}

/// A 32-byte key as 64 hex digits (optionally `0x`-prefixed).
fn parse_master_key(s: &str) -> Result<VaultKey, &'static str> {
    let bytes = hex::decode(s.trim().trim_start_matches("0x")).map_err(|_| "expected 64 hex digits")?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| "expected 32 bytes (64 hex digits)")?;
    Ok(VaultKey(secrecy::SecretBox::new(Box::new(key))))
}

/// Validates a provider (without its routes). `static_secrets`: whether the credential may be
/// read from the environment or a file (the file may; the admin API may only name a vault
/// credential).
pub fn build_provider(
    pkey: &str,
    p: &RawProvider,
    env: &dyn Fn(&str) -> Option<String>,
    static_secrets: bool,
) -> Result<ProviderConfig, ConfigError> {
    let key = |k: &str| format!("{pkey}.{k}");
    if p.id.is_empty() || p.id.len() > 64 || !p.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(key("id"), "use 1 to 64 letters, digits, '-' and '_'"));
    }
    let credential = match &p.credential {
        None => None,
        Some(c) => Some(credential(&key("credential"), c.clone(), env, static_secrets)?),
    };
    let upstream = base_url(&key("upstream"), &p.upstream)?;
    check_plain_http(&key("upstream"), &upstream, p.allow_insecure_http.unwrap_or(false))?;
    Ok(ProviderConfig {
        id: p.id.clone(),
        pay_to: address(&key("pay_to"), &p.pay_to)?,
        upstream,
        strip_prefix: p.strip_prefix.clone(),
        credential,
        default_upstream_timeout: ms(p.upstream_timeout_ms, 10_000),
        routes: Vec::new(),
        guarded: false,
    })
}

/// Validates one route of `provider`.
pub fn build_route(
    rkey: &str,
    r: &RawRoute,
    provider: &ProviderConfig,
    networks: &[NetworkConfig],
    server: &ServerConfig,
) -> Result<RouteConfig, ConfigError> {
    let key = |k: &str| format!("{rkey}.{k}");
    let pattern = PathPattern::parse(&r.path).map_err(|_| invalid(key("path"), BAD_PATH_PATTERN))?;
    // The endpoint's name (`provider:path`) is what the ledger records; it must fit there.
    if provider.id.len() + 1 + r.path.len() > tollgate_metering::LABEL_BYTES_MAX {
        return Err(invalid(
            key("path"),
            format!(
                "too long (the provider id, `:` and the path are at most {} bytes)",
                tollgate_metering::LABEL_BYTES_MAX
            ),
        ));
    }
    if let Some(prefix) = &provider.strip_prefix
        && !r.path.starts_with(prefix.as_str())
    {
        return Err(invalid(key("path"), "does not start with the provider's strip_prefix"));
    }
    let methods: BTreeSet<String> = r
        .methods
        .clone()
        .unwrap_or_else(|| vec!["GET".to_owned()])
        .into_iter()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    for m in &methods {
        if !matches!(m.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") {
            return Err(invalid(
                key("methods"),
                "unknown method; expected GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS",
            ));
        }
    }
    if methods.is_empty() {
        return Err(invalid(key("methods"), "at least one method"));
    }
    let route_networks: Vec<&NetworkConfig> = match &r.networks {
        None => networks.iter().collect(),
        Some(ids) => {
            let mut out = Vec::new();
            for id in ids {
                let n = Network::parse(id).map_err(|_| invalid(key("networks"), UNKNOWN_NETWORK))?;
                let cfg = networks
                    .iter()
                    .find(|c| c.network == n)
                    .ok_or_else(|| invalid(key("networks"), format!("{n} is not configured under [[networks]]")))?;
                out.push(cfg);
            }
            out
        }
    };
    if route_networks.is_empty() {
        return Err(invalid(key("networks"), "no network to accept payment on"));
    }
    let mut prices = Vec::new();
    for n in route_networks {
        let atomic = match (&r.price, &r.price_atomic) {
            (Some(_), Some(_)) => return Err(invalid(key("price"), "give either price or price_atomic")),
            (Some(h), None) => parse_human_amount(h, n.decimals).map_err(|e| invalid(key("price"), e))?,
            (None, Some(a)) => {
                if a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(key("price_atomic"), "not a whole number"));
                }
                a.parse::<u64>().map_err(|_| invalid(key("price_atomic"), "too large"))?
            }
            (None, None) => return Err(invalid(key("price"), "missing (price or price_atomic)")),
        };
        let amount = AtomicAmount::new(atomic)
            .ok_or_else(|| invalid(key("price"), "must be greater than zero and below 2^63"))?;
        prices.push((n.network, amount));
    }
    let settlement = match r.settlement.as_deref().unwrap_or("after") {
        "after" => SettlementMode::After,
        "before" => SettlementMode::Before,
        "deferred" => SettlementMode::Deferred,
        _ => return Err(invalid(key("settlement"), "expected after, before or deferred")),
    };
    Ok(RouteConfig {
        pattern,
        methods,
        prices,
        description: r.description.clone().unwrap_or_default(),
        mime_type: r.mime_type.clone().unwrap_or_else(|| "application/json".to_owned()),
        settlement,
        max_timeout_seconds: r.max_timeout_seconds.unwrap_or(60),
        upstream_timeout: r.upstream_timeout_ms.map(Duration::from_millis).unwrap_or(provider.default_upstream_timeout),
        body_bytes_max: r.body_bytes_max.unwrap_or(server.body_bytes_max),
        charge_redirects: r.charge_redirects.unwrap_or(false),
        allow_set_cookie: r.allow_set_cookie.unwrap_or(false),
    })
}

fn credential(
    key: &str,
    c: RawCredential,
    env: &dyn Fn(&str) -> Option<String>,
    static_secrets: bool,
) -> Result<Credential, ConfigError> {
    let secret = match (&c.vault, c.secret_env.is_some() || c.secret_file.is_some()) {
        (Some(_), true) => return Err(invalid(key, "give either vault or secret_env/secret_file")),
        (Some(name), false) => {
            check_vault_name(name).map_err(|reason| invalid(format!("{key}.vault"), reason))?;
            SecretSource::Vault { name: name.clone() }
        }
        (None, _) if !static_secrets => {
            return Err(invalid(format!("{key}.vault"), "required: over the admin API secrets come from the vault"));
        }
        (None, _) => {
            let (secret, source) = secret_from(key, c.secret_env.as_deref(), c.secret_file.as_deref(), env)?
                .ok_or_else(|| invalid(key, "vault, secret_env or secret_file is required"))?;
            SecretSource::Static { secret, source }
        }
    };
    let unexpected = |field: &str, present: bool| {
        if present {
            Err(invalid(format!("{key}.{field}"), format!("not used with inject = \"{}\"", c.inject)))
        } else {
            Ok(())
        }
    };
    let injection = match c.inject.as_str() {
        "header" => {
            unexpected("param", c.param.is_some())?;
            unexpected("username", c.username.is_some())?;
            let name_s = c.header.as_deref().unwrap_or("Authorization");
            let name = reqwest::header::HeaderName::from_bytes(name_s.as_bytes())
                .map_err(|_| invalid(format!("{key}.header"), "not a valid header name"))?;
            let template = c.template.unwrap_or_else(|| "Bearer {secret}".to_owned());
            if !template.contains("{secret}") {
                return Err(invalid(format!("{key}.template"), "must contain {secret}"));
            }
            Injection::Header { name, template }
        }
        "query" => {
            unexpected("header", c.header.is_some())?;
            unexpected("template", c.template.is_some())?;
            unexpected("username", c.username.is_some())?;
            Injection::Query { param: c.param.ok_or_else(|| invalid(format!("{key}.param"), "missing"))? }
        }
        "basic" => {
            unexpected("header", c.header.is_some())?;
            unexpected("template", c.template.is_some())?;
            unexpected("param", c.param.is_some())?;
            Injection::Basic { username: c.username.ok_or_else(|| invalid(format!("{key}.username"), "missing"))? }
        }
        _ => return Err(invalid(format!("{key}.inject"), "expected header, query or basic")),
    };
    Ok(Credential { injection, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[settlement]
relayer_key_env = "KEY"

[[networks]]
id = "eip155:8453"
rpc_url = "http://127.0.0.1:8545"
asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
eip712_name = "USD Coin"
eip712_version = "2"

[[providers]]
id = "weather"
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
upstream = "http://127.0.0.1:9000"
credential = { inject = "header", secret_env = "API" }

[[providers.routes]]
path = "/weather/{city}"
price = "0.001"
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".to_owned()),
            "API" => Some("sk-secret-value".to_owned()),
            _ => None,
        }
    }

    fn error_of(text: &str) -> String {
        match Config::parse(text, &env) {
            Ok(_) => panic!("config accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    // Goal: a good file parses into the typed values, with the human price converted.
    #[test]
    fn good_config_parses() {
        let c = Config::parse(GOOD, &env).unwrap();
        assert_eq!(c.providers[0].routes[0].prices[0].1.get(), 1_000);
        assert_eq!(c.providers[0].routes[0].settlement, SettlementMode::After);
        assert!(c.settlement.relayer_key.is_some());
        assert!(!format!("{c:?}").contains("sk-secret-value"), "secrets are redacted in Debug");
    }

    // Goal: each kind of bad value is refused with the offending key named and no secret shown.
    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (GOOD.replace("price = \"0.001\"", "price = \"-1\""), "providers[0].routes[0].price"),
            (GOOD.replace("price = \"0.001\"", "price = \"0.0000001\""), "providers[0].routes[0].price"),
            (GOOD.replace("price = \"0.001\"", "price = \"0\""), "providers[0].routes[0].price"),
            (GOOD.replace("price = \"0.001\"", "price_atomic = \"1e3\""), "providers[0].routes[0].price_atomic"),
            (GOOD.replace("0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "0x1234"), "providers[0].pay_to"),
            (
                GOOD.replace("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
                "networks[0].asset",
            ),
            (GOOD.replace("eip155:8453", "solana:mainnet"), "networks[0].id"),
            (GOOD.replace("secret_env = \"API\"", "secret_env = \"MISSING\""), "providers[0].credential"),
            (GOOD.replace("inject = \"header\"", "inject = \"cookie\""), "providers[0].credential.inject"),
            (GOOD.replace("path = \"/weather/{city}\"", "path = \"/weather/../x\""), "providers[0].routes[0].path"),
            (GOOD.replace("upstream = \"http://127.0.0.1:9000\"", "upstream = \"ftp://x\""), "providers[0].upstream"),
            (GOOD.replace("relayer_key_env = \"KEY\"", "relayer_key_env = \"API\""), "settlement.relayer_key"),
            (GOOD.replace("relayer_key_env = \"KEY\"", ""), "settlement.relayer_key"),
        ];
        for (text, key) in cases {
            let err = error_of(&text);
            assert!(err.contains(key), "{key}: {err}");
            assert!(!err.contains("sk-secret-value"), "{err}");
        }
    }

    // Goal: the listener limits in [server] have their documented defaults, parse when given,
    // and a value out of range, a header cap below the payment header or an unknown key is
    // refused naming the key.
    #[test]
    fn server_limits() {
        let c = Config::parse(GOOD, &env).unwrap();
        assert_eq!(c.server.limits, ServerLimits::default());
        assert_eq!(c.server.limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.limits.keep_alive_timeout, Some(Duration::from_secs(75)));
        let text = format!(
            "[server]\nconnections_max = 64\nheader_read_timeout_ms = 500\nkeep_alive_timeout_ms = 0\n\
             request_timeout_ms = 2000\nconcurrency_max = 8\nheader_bytes_max = 20000\nheaders_count_max = 20\n\
             uri_bytes_max = 1024\nunpaid_per_ip_per_s = 0\nunpaid_per_ip_burst = 3\n{GOOD}"
        );
        let l = Config::parse(&text, &env).unwrap().server.limits;
        assert_eq!(
            l,
            ServerLimits {
                connections_max: 64,
                header_read_timeout: Duration::from_millis(500),
                keep_alive_timeout: None,
                request_timeout: Duration::from_secs(2),
                concurrency_max: 8,
                header_bytes_max: 20_000,
                headers_count_max: 20,
                uri_bytes_max: 1024,
                unpaid_per_ip_per_s: 0,
                unpaid_per_ip_burst: 3,
            }
        );
        for (line, key) in [
            ("connections_max = 0", "server.connections_max"),
            ("header_read_timeout_ms = 10", "server.header_read_timeout_ms"),
            ("concurrency_max = 0", "server.concurrency_max"),
            ("headers_count_max = 2", "server.headers_count_max"),
            ("uri_bytes_max = 100000", "server.uri_bytes_max"),
            ("unpaid_per_ip_burst = 0", "server.unpaid_per_ip_burst"),
            ("header_bytes_max = 8192", "server.header_bytes_max"),
            ("connection_max = 5", "connection_max"),
        ] {
            let err = error_of(&format!("[server]\n{line}\n{GOOD}"));
            assert!(err.contains(key), "{line}: {err}");
        }
    }

    // Goal: [reconciliation] is optional (job disabled, documented defaults), parses its keys, and refuses zeros and unknown keys by name.
    #[test]
    fn reconciliation_section() {
        let c = Config::parse(GOOD, &env).unwrap();
        assert_eq!(
            c.reconciliation,
            ReconciliationConfig {
                interval: None,
                confirmations: 10,
                chunk_blocks: 2_000,
                start_block: 0,
                run_blocks_max: 100_000,
                lease_ttl_s: 300,
            }
        );
        let text = format!(
            "{GOOD}\n[reconciliation]\ninterval_s = 60\nconfirmations = 3\nchunk_blocks = 500\nstart_block = 7\n\
             run_blocks_max = 9000\nlease_ttl_s = 30\n"
        );
        let r = Config::parse(&text, &env).unwrap().reconciliation;
        assert_eq!(r.interval, Some(Duration::from_secs(60)));
        assert_eq!(
            (r.confirmations, r.chunk_blocks, r.start_block, r.run_blocks_max, r.lease_ttl_s),
            (3, 500, 7, 9_000, 30)
        );
        for key in ["interval_s", "confirmations", "chunk_blocks", "run_blocks_max", "lease_ttl_s"] {
            let err = error_of(&format!("{GOOD}\n[reconciliation]\n{key} = 0\n"));
            assert!(err.contains(&format!("reconciliation.{key}")), "{err}");
        }
        let err = error_of(&format!("{GOOD}\n[reconciliation]\nintervall_s = 5\n"));
        assert!(err.contains("intervall_s"), "{err}");
    }

    // Goal: the deferred worker's and audit writer's tuning keys have their documented defaults, parse, and are held to their bounds.
    #[test]
    fn deferred_and_audit_tuning() {
        let c = Config::parse(GOOD, &env).unwrap();
        assert_eq!(c.settlement.deferred_concurrency, 32);
        assert_eq!(c.settlement.deferred_receipt_poll_interval, Duration::from_millis(250));
        assert_eq!(c.control.audit_batch, Duration::from_millis(50));
        let text = GOOD.replace(
            "relayer_key_env = \"KEY\"",
            "relayer_key_env = \"KEY\"\ndeferred_concurrency = 4\ndeferred_receipt_poll_interval_ms = 100",
        ) + "\n[control]\naudit_batch_ms = 0\n";
        let c = Config::parse(&text, &env).unwrap();
        assert_eq!(c.settlement.deferred_concurrency, 4);
        assert_eq!(c.settlement.deferred_receipt_poll_interval, Duration::from_millis(100));
        assert_eq!(c.control.audit_batch, Duration::ZERO, "0 appends each batch as soon as it is drained");
        let text = GOOD.replace(
            "relayer_key_env = \"KEY\"",
            "relayer_key_env = \"KEY\"\ndeferred_concurrency = 0\ndeferred_receipt_poll_interval_ms = 0",
        ) + "\n[control]\naudit_batch_ms = 60000\n";
        let c = Config::parse(&text, &env).unwrap();
        assert_eq!(c.settlement.deferred_concurrency, 1, "zero would stall the worker");
        assert_eq!(c.settlement.deferred_receipt_poll_interval, Duration::from_millis(1));
        assert_eq!(c.control.audit_batch, Duration::from_secs(1), "records wait in memory at most a second");
    }

    // Goal: the forwarding keys default to the safe side (forwarded headers on, redirects not
    // charged, cookies dropped) and parse when set.
    #[test]
    fn forwarding_keys() {
        let c = Config::parse(GOOD, &env).unwrap();
        assert!(c.server.forwarded_headers);
        let route = &c.providers[0].routes[0];
        assert!(!route.charge_redirects && !route.allow_set_cookie);
        let text = format!("[server]\nforwarded_headers = false\n{GOOD}")
            .replace("price = \"0.001\"", "price = \"0.001\"\ncharge_redirects = true\nallow_set_cookie = true");
        let c = Config::parse(&text, &env).unwrap();
        assert!(!c.server.forwarded_headers);
        let route = &c.providers[0].routes[0];
        assert!(route.charge_redirects && route.allow_set_cookie);
    }

    // Goal: unknown keys are refused, naming the key.
    #[test]
    fn unknown_keys_are_refused() {
        let err = error_of(&GOOD.replace("price = \"0.001\"", "price = \"0.001\"\nprize = 1"));
        assert!(err.contains("prize"), "{err}");
        let err = error_of(&format!("{GOOD}\n[serverr]\nlisten = \"x\""));
        assert!(err.contains("serverr"), "{err}");
    }

    // Goal: human prices convert exactly; malformed, negative and over-precise ones are refused.
    #[test]
    fn human_amounts() {
        assert_eq!(parse_human_amount("0.001", 6), Ok(1_000));
        assert_eq!(parse_human_amount("1", 6), Ok(1_000_000));
        assert_eq!(parse_human_amount("12.5", 6), Ok(12_500_000));
        assert_eq!(parse_human_amount(".5", 6), Ok(500_000));
        for bad in ["", "-1", "1.", "1.0000001", "1e3", "0x10", " 1", "1,5", "."] {
            assert!(parse_human_amount(bad, 6).is_err(), "{bad:?}");
        }
        assert!(parse_human_amount("99999999999999999999999", 6).is_err());
    }

    const RELAYER_HEX: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    /// Parses `text`, expecting a `ConfigError::Parse`; returns its parts and its message.
    fn parse_error_of(text: &str) -> (Option<String>, Option<usize>, Option<usize>, String) {
        match Config::parse(text, &env) {
            Ok(_) => panic!("config accepted:\n{text}"),
            Err(e @ ConfigError::Parse { .. }) => {
                let message = e.to_string();
                let ConfigError::Parse { key, line, column, .. } = e else { unreachable!() };
                (key, line, column, message)
            }
            Err(e) => panic!("not a parse error: {e}"),
        }
    }

    // Goal: a TOML error names the key and its line and column and never prints the value or
    // the source line, whatever the error's shape: an unknown key holding the relayer key, an
    // unquoted URL with an API key, a value of the wrong type, an unterminated string, a
    // duplicate key, a secret pasted on its own line, an unknown key inside an inline table,
    // and an unknown key that looks like a secret itself.
    #[test]
    fn toml_errors_never_quote_the_file() {
        let at = |needle: &str, text: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        // (file, secret, expected key, expected line)
        let unknown = GOOD.replace(
            "relayer_key_env = \"KEY\"",
            &format!("relayer_key_env = \"KEY\"\nrelayer_key = \"{RELAYER_HEX}\""),
        );
        let unquoted =
            GOOD.replace("rpc_url = \"http://127.0.0.1:8545\"", "rpc_url = https://rpc.example/v2/UNQUOTEDKEY77");
        let wrong_type = format!("{GOOD}\n[database]\nmax_connections = \"pw-WRONGTYPE-9\"\n");
        let unterminated = GOOD.replace("relayer_key_env = \"KEY\"", &format!("relayer_key_env = \"{RELAYER_HEX}"));
        let duplicate =
            format!("{GOOD}\n[database]\nurl = \"postgres://u:DUPPW@h/db\"\nurl = \"postgres://u:DUPPW@h/db\"\n");
        let own_line = GOOD.replace("relayer_key_env = \"KEY\"", &format!("relayer_key_env = \"KEY\"\n{RELAYER_HEX}"));
        let inline = GOOD.replace("secret_env = \"API\"", "secret = \"sk-INLINESECRET\"");
        let secret_key = GOOD
            .replace("relayer_key_env = \"KEY\"", "relayer_key_env = \"KEY\"\nsk_live_51HqLyjWDarjtT1zdp7dc = true");
        let cases: [(&str, &str, Option<&str>, usize); 8] = [
            (&unknown, RELAYER_HEX, Some("settlement.relayer_key"), at("relayer_key =", &unknown)),
            (&unquoted, "UNQUOTEDKEY77", Some("networks.rpc_url"), at("rpc_url", &unquoted)),
            (&wrong_type, "WRONGTYPE", Some("database.max_connections"), at("max_connections", &wrong_type)),
            (
                &unterminated,
                &RELAYER_HEX[2..],
                Some("settlement.relayer_key_env"),
                at("relayer_key_env", &unterminated),
            ),
            (&duplicate, "DUPPW", Some("database.url"), duplicate.lines().count()),
            (&own_line, &RELAYER_HEX[2..], None, at(&RELAYER_HEX[2..], &own_line)),
            (&inline, "INLINESECRET", Some("providers[0].credential.secret"), at("INLINESECRET", &inline)),
            (&secret_key, "51HqLyjWDarjtT1zdp7dc", Some("settlement.<key not shown>"), at("sk_live", &secret_key)),
        ];
        for (text, secret, key, line) in cases {
            let (k, l, c, message) = parse_error_of(text);
            assert!(!message.contains(secret), "the value is printed: {message}");
            assert!(!message.contains('\n'), "one line, no excerpt: {message}");
            assert_eq!(k.as_deref(), key, "{message}");
            assert_eq!(l, Some(line), "{message}");
            assert!(c.is_some(), "{message}");
            assert!(message.contains(&format!("line {line}, column ")), "{message}");
        }
        // The unknown key's message still helps: it lists the keys that are allowed there.
        let (_, _, c, message) = parse_error_of(&unknown);
        assert_eq!(c, Some(1));
        assert!(message.contains("unknown key") && message.contains("relayer_key_file"), "{message}");
        let (_, _, _, message) = parse_error_of(&wrong_type);
        assert!(message.contains("invalid type; expected u32"), "{message}");
        let (_, _, _, message) = parse_error_of(&unquoted);
        assert!(message.contains("TOML syntax: string values must be quoted"), "{message}");
    }

    // Goal: no validation error repeats the value it refuses (some are secrets, and an error is
    // printed to a terminal and collected in logs): each names the key and says what is wrong.
    #[test]
    fn invalid_values_are_not_repeated() {
        let cases = [
            (GOOD.replace("price = \"0.001\"", "price = \"SECRETa\""), "providers[0].routes[0].price"),
            (GOOD.replace("price = \"0.001\"", "price_atomic = \"SECRETb\""), "providers[0].routes[0].price_atomic"),
            (
                GOOD.replace("price = \"0.001\"", "price = \"1\"\nsettlement = \"SECRETc\""),
                "providers[0].routes[0].settlement",
            ),
            (
                GOOD.replace("price = \"0.001\"", "price = \"1\"\nmethods = [\"SECRETd\"]"),
                "providers[0].routes[0].methods",
            ),
            (
                GOOD.replace("price = \"0.001\"", "price = \"1\"\nnetworks = [\"SECRETe\"]"),
                "providers[0].routes[0].networks",
            ),
            (
                GOOD.replace("path = \"/weather/{city}\"", "path = \"/SECRETf/{bad name}\""),
                "providers[0].routes[0].path",
            ),
            (GOOD.replace("inject = \"header\"", "inject = \"SECRETg\""), "providers[0].credential.inject"),
            (GOOD.replace("eip155:8453", "SECRETh"), "networks[0].id"),
            (GOOD.replace("http://127.0.0.1:8545", "http://[SECRETi/x"), "networks[0].rpc_url"),
            (GOOD.replace("http://127.0.0.1:9000", "https://svc:SECRETj@api.example"), "providers[0].upstream"),
            (GOOD.replace("http://127.0.0.1:9000", "https://api.example/?api_key=SECRETk"), "providers[0].upstream"),
            (format!("{GOOD}\n[server]\npublic_url = \"https://u:SECRETl@gw.example\"\n"), "server.public_url"),
            (format!("{GOOD}\n[database]\nurl = \"mysql://u:SECRETm@h/db\"\n"), "database.url"),
            (format!("{GOOD}\n[database]\nsqlite_durability = \"SECRETn\"\n"), "database.sqlite_durability"),
            (format!("{GOOD}\n[vault]\nmaster_key_env = \"API\"\n"), "vault.master_key"),
        ];
        for (text, key) in cases {
            let err = error_of(&text);
            assert!(err.starts_with(key), "{key}: {err}");
            assert!(!err.contains("SECRET") && !err.contains("sk-secret-value"), "{err}");
        }
    }

    fn config_at(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    // Goal: a secret file anyone can write is refused (naming the key and the mode); one others
    // can read is accepted with a warning naming the key; a private one gives no warning; and a
    // world-writable configuration file is refused too.
    #[cfg(unix)]
    #[test]
    fn secret_file_modes() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("relayer.key");
        std::fs::write(&key_file, RELAYER_HEX).unwrap();
        let text = GOOD.replace("relayer_key_env = \"KEY\"", &format!("relayer_key_file = \"{}\"", key_file.display()));
        chmod(&key_file, 0o600);
        assert!(Config::parse(&text, &env).unwrap().warnings.is_empty());
        chmod(&key_file, 0o640);
        let w = Config::parse(&text, &env).unwrap().warnings;
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].key, "settlement.relayer_key_file");
        assert!(w[0].reason.contains("0640") && !w[0].reason.contains(&RELAYER_HEX[2..]), "{}", w[0]);
        chmod(&key_file, 0o606);
        let err = error_of(&text);
        assert!(err.starts_with("settlement.relayer_key_file") && err.contains("world-writable"), "{err}");
        assert!(!err.contains(&RELAYER_HEX[2..]));

        let secret = dir.path().join("api.secret");
        std::fs::write(&secret, "sk-secret-value").unwrap();
        chmod(&secret, 0o666);
        let text = GOOD.replace("secret_env = \"API\"", &format!("secret_file = \"{}\"", secret.display()));
        let err = error_of(&text);
        assert!(err.starts_with("providers[0].credential.secret_file") && err.contains("world-writable"), "{err}");

        let (_dir, path) = config_at(GOOD);
        chmod(&path, 0o666);
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("world-writable"), "{err}");
    }

    // Goal: an admin listener off loopback is refused (the admin API has no TLS) unless
    // admin.allow_insecure_remote opts in, which is then warned about; loopback needs nothing.
    #[test]
    fn admin_listener_off_loopback() {
        for listen in ["127.0.0.1:8403", "[::1]:8403"] {
            let c = Config::parse(&format!("{GOOD}\n[admin]\nlisten = \"{listen}\"\n"), &env).unwrap();
            assert!(c.warnings.is_empty(), "{listen}");
        }
        for listen in ["0.0.0.0:8403", "192.168.1.10:8403", "[::]:8403"] {
            let err = error_of(&format!("{GOOD}\n[admin]\nlisten = \"{listen}\"\n"));
            assert!(err.starts_with("admin.listen") && err.contains("no TLS"), "{err}");
            assert!(err.contains("allow_insecure_remote"), "the error says how to opt in: {err}");
        }
        let c =
            Config::parse(&format!("{GOOD}\n[admin]\nlisten = \"0.0.0.0:8403\"\nallow_insecure_remote = true\n"), &env)
                .unwrap();
        assert!(c.admin.allow_insecure_remote);
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].key, "admin.listen");
        let c = Config::parse(&format!("{GOOD}\n[admin]\nlisten = \"0.0.0.0:8403\"\nenabled = false\n"), &env).unwrap();
        assert!(c.warnings.is_empty(), "a disabled admin API listens nowhere");
    }

    // Goal: `http://` to a host that is not loopback is refused for an RPC URL and an upstream,
    // naming the key and the opt-out, and accepted with `allow_insecure_http = true` on that
    // entry; loopback (127.0.0.0/8, ::1, localhost) and https need nothing.
    #[test]
    fn plain_http_off_loopback_needs_the_opt_out() {
        let rpc = GOOD.replace("http://127.0.0.1:8545", "http://rpc.internal:8545/v2/KEYabc");
        let err = error_of(&rpc);
        assert!(err.starts_with("networks[0].rpc_url: http:// to a host that is not loopback"), "{err}");
        assert!(err.contains("allow_insecure_http") && !err.contains("KEYabc"), "{err}");
        let allowed = rpc.replace("eip712_version = \"2\"", "eip712_version = \"2\"\nallow_insecure_http = true");
        assert!(Config::parse(&allowed, &env).is_ok());
        let up = GOOD.replace("http://127.0.0.1:9000", "http://api.example");
        let err = error_of(&up);
        assert!(err.starts_with("providers[0].upstream: http:// to a host that is not loopback"), "{err}");
        let allowed = up.replace(
            "upstream = \"http://api.example\"",
            "upstream = \"http://api.example\"\nallow_insecure_http = true",
        );
        assert!(Config::parse(&allowed, &env).is_ok());
        for fine in ["http://localhost:9000", "http://127.0.0.9:9000", "http://[::1]:9000", "https://api.example"] {
            assert!(Config::parse(&GOOD.replace("http://127.0.0.1:9000", fine), &env).is_ok(), "{fine}");
        }
    }

    // Goal: a TLS listener needs both files; a missing or mismatched file is refused naming the
    // key; an admin listener off loopback that serves TLS needs no insecure opt-in.
    #[test]
    fn listener_tls_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        let err = error_of(&format!("{GOOD}\n[server]\ntls_cert_file = \"{}\"\n", missing.display()));
        assert!(err.starts_with("server.tls_key_file: missing"), "{err}");
        let key = dir.path().join("key.pem");
        let err = error_of(&format!(
            "{GOOD}\n[admin]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            missing.display(),
            key.display()
        ));
        assert!(err.starts_with("admin.tls_cert_file: cannot read"), "{err}");
        let err = error_of(&format!("{GOOD}\n[tls]\nextra_ca_file = \"{}\"\n", missing.display()));
        assert!(err.starts_with("tls.extra_ca_file: cannot read"), "{err}");
    }

    // Goal: an upstream at the RPC node's, the admin listener's or the gateway's own host and port
    // is refused with the reason, comparing localhost, loopback and unspecified addresses.
    #[test]
    fn upstream_must_be_a_third_party() {
        let with_upstream = |upstream: &str, extra: &str| {
            // allow_insecure_http: these cases are about where the upstream points, not the scheme.
            GOOD.replace(
                "upstream = \"http://127.0.0.1:9000\"",
                &format!("upstream = \"{upstream}\"\nallow_insecure_http = true"),
            ) + extra
        };
        let cases = [
            (with_upstream("http://127.0.0.1:8545", ""), "RPC node of networks[0]"),
            (with_upstream("http://localhost:8545/x", ""), "RPC node of networks[0]"),
            (with_upstream("http://127.0.0.1:8403", ""), "admin listener"),
            (with_upstream("http://localhost:8402", ""), "own listener"),
            (with_upstream("http://127.0.0.1:7000", "\n[server]\nlisten = \"0.0.0.0:7000\"\n"), "own listener"),
            (
                with_upstream(
                    "http://10.0.0.5:9100",
                    "\n[admin]\nlisten = \"10.0.0.5:9100\"\nallow_insecure_remote = true\n",
                ),
                "admin listener",
            ),
        ];
        for (text, needle) in cases {
            let err = error_of(&text);
            assert!(err.starts_with("providers[0].upstream: points at the") && err.contains(needle), "{err}");
        }
        let rpc = GOOD.replace("http://127.0.0.1:8545", "https://rpc.example/v2/KEY");
        let err = error_of(&rpc.replace("http://127.0.0.1:9000", "https://RPC.example"));
        assert!(err.contains("RPC node") && !err.contains("KEY"), "{err}");
        for fine in ["http://127.0.0.1:8546", "https://rpc.example:8545", "http://127.0.0.2:8402"] {
            assert!(Config::parse(&with_upstream(fine, ""), &env).is_ok(), "{fine}");
        }
        let c = Config::parse(&with_upstream("http://127.0.0.1:8403", "\n[admin]\nenabled = false\n"), &env);
        assert!(c.is_ok(), "the admin listener is not open");
    }
}
