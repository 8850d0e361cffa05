//! The file as written: the serde types of the TOML (`Raw*`), every table
//! `deny_unknown_fields`.
//!
//! The TOML only: the control plane stores its own versioned specs (`tollgate-control`) and the
//! admin API has its own bodies (`tollgate-admin-api`); `gateway::control` converts between
//! them. Owns no validation and no defaults beyond serde's: must not import the rest of
//! `config` (`build` turns these into the typed sections).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) database: RawDatabase,
    #[serde(default)]
    pub(super) verification: RawVerification,
    #[serde(default)]
    pub(super) settlement: RawSettlement,
    #[serde(default)]
    pub(super) networks: Vec<RawNetwork>,
    #[serde(default)]
    pub(super) providers: Vec<RawProvider>,
    #[serde(default)]
    pub(super) reconciliation: RawReconciliation,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) vault: RawVault,
    #[serde(default)]
    pub(super) control: RawControl,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) tls: RawTls,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) extra_ca_file: Option<PathBuf>,
    pub(super) cert_reload_interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<String>,
    pub(super) body_bytes_max: Option<usize>,
    pub(super) allow_insecure_remote: Option<bool>,
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
    pub(super) upstream_allow: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVault {
    pub(super) master_key_env: Option<String>,
    pub(super) master_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub(super) poll_interval_ms: Option<u64>,
    pub(super) audit_queue_capacity: Option<usize>,
    pub(super) audit_batch_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) public_url: Option<String>,
    pub(super) body_bytes_max: Option<u64>,
    pub(super) response_bytes_max: Option<u64>,
    pub(super) payment_header_bytes_max: Option<u64>,
    pub(super) payment_id_retention_s: Option<u64>,
    pub(super) forwarded_headers: Option<bool>,
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
    pub(super) connections_max: Option<usize>,
    pub(super) header_read_timeout_ms: Option<u64>,
    pub(super) keep_alive_timeout_ms: Option<u64>,
    pub(super) request_timeout_ms: Option<u64>,
    pub(super) concurrency_max: Option<usize>,
    pub(super) header_bytes_max: Option<usize>,
    pub(super) headers_count_max: Option<usize>,
    pub(super) uri_bytes_max: Option<usize>,
    pub(super) unpaid_per_ip_per_s: Option<u32>,
    pub(super) unpaid_per_ip_burst: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) max_connections: Option<u32>,
    pub(super) statement_timeout_ms: Option<u64>,
    pub(super) sqlite_durability: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerification {
    pub(super) valid_before_buffer_s: Option<u64>,
    pub(super) validity_window_max_s: Option<u64>,
    pub(super) balance_cache_ttl_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettlement {
    pub(super) relayer_key_env: Option<String>,
    pub(super) relayer_key_file: Option<PathBuf>,
    pub(super) receipt_poll_interval_ms: Option<u64>,
    pub(super) fee_cache_ms: Option<u64>,
    pub(super) receipt_timeout_ms: Option<u64>,
    pub(super) recovery_interval_ms: Option<u64>,
    pub(super) recovery_grace_s: Option<u64>,
    pub(super) deferred_queue_capacity: Option<usize>,
    pub(super) deferred_attempts_max: Option<u32>,
    pub(super) deferred_concurrency: Option<usize>,
    pub(super) deferred_receipt_poll_interval_ms: Option<u64>,
    pub(super) deferred_admission_margin_s: Option<u64>,
    pub(super) deferred_backlog_horizon_s: Option<u64>,
    pub(super) deferred_overflow: Option<String>,
    pub(super) deferred_payer_exposure_max_atomic: Option<String>,
    pub(super) relayer_lease_wait_ms: Option<u64>,
    pub(super) relayer_lease_ttl_s: Option<u64>,
    pub(super) gas_warn_wei: Option<u128>,
    pub(super) health_interval_ms: Option<u64>,
    pub(super) ready_settlements_min: Option<u64>,
    pub(super) gas_per_settlement: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReconciliation {
    pub(super) interval_s: Option<u64>,
    pub(super) confirmations: Option<u64>,
    pub(super) chunk_blocks: Option<u64>,
    pub(super) start_block: Option<u64>,
    pub(super) run_blocks_max: Option<u64>,
    pub(super) lease_ttl_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub(super) id: String,
    pub(super) rpc_url: Option<String>,
    pub(super) rpc_url_env: Option<String>,
    pub(super) asset: String,
    pub(super) eip712_name: String,
    pub(super) eip712_version: String,
    pub(super) decimals: Option<u8>,
    pub(super) symbol: Option<String>,
    pub(super) rpc_timeout_ms: Option<u64>,
    pub(super) allow_insecure_http: Option<bool>,
    pub(super) finality_confirmations: Option<u64>,
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
    /// The service's name in the 402's resource and in discovery (bazaar `serviceName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The service's topical tags (bazaar `tags`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// The service's icon (bazaar `iconUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
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

/// A route as written (priced, or free) (and as stored, JSON, in the control plane).
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
    pub free: Option<bool>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id_required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_body_bytes_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_wait: Option<String>,
    pub discovery: Option<RawDiscovery>,
}

/// How a route describes its input and output to agents (the x402 `bazaar` extension and the
/// OpenAPI document): examples and JSON Schemas, as written (and as stored, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawDiscovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_example: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_schema: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_example: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_schema: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_example: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<serde_json::Value>,
}
