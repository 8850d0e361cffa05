//! The admin API's request bodies, query parameters and answers.
//!
//! Bodies and queries refuse unknown fields (the gateway answers 400 naming the field).
//! Records the ledger owns (token records, credential versions, wallet policies, audit
//! records, ledger entries, reconciliation runs) travel as the ledger serialises them and are
//! documented as objects here; every envelope around them is typed.
//!
//! Must not: validate beyond the shape (the control plane's rules do), or print a secret.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

// --- errors -------------------------------------------------------------------------------

/// Every error answer: `{"error": {"code", "message", "retrySafe"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Error {
    /// The error.
    pub error: ErrorDetail,
}

/// The error's code and a safe message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: ErrorCode,
    /// Safe, human-readable; for `invalid_request` it starts with the field (`prize: unknown field ...`).
    pub message: String,
    /// Whether the same request may be sent again.
    #[serde(rename = "retrySafe")]
    pub retry_safe: bool,
}

/// The admin API's error codes: `admin_unauthorized` 401 (no, unknown or revoked token);
/// `admin_forbidden` 403 (role or provider may not); `invalid_request` 400 (a field, named
/// first in the message, is invalid or unknown); `upstream_refused` 400 (the SSRF guard
/// refuses the provider's upstream; the message names the rule); `not_found` 404 (record or
/// route); `not_configured` 409 (the vault has no master key, or no relayer key for priced
/// endpoints); `ledger_unavailable` 503 (retry); `internal_error` 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ErrorCode {
    AdminUnauthorized,
    AdminForbidden,
    InvalidRequest,
    UpstreamRefused,
    NotFound,
    NotConfigured,
    LedgerUnavailable,
    InternalError,
}

// --- whoami and tokens --------------------------------------------------------------------

/// The caller's token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Whoami {
    /// Token id.
    pub token_id: String,
    /// `operator`, `provider` or `finance`.
    pub role: String,
    /// The provider of a provider token.
    pub provider: Option<String>,
}

/// A new token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// `operator`, `provider` or `finance`.
    pub role: String,
    /// Required for provider tokens, refused for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// At most 128 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A created token: the only time it is shown (only its SHA-256 is stored).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatedToken {
    /// `tgadm_` and 64 hex digits. Shown once.
    pub token: String,
    /// The token record (id, role, provider, label, times).
    #[schema(value_type = Object)]
    pub record: Value,
}

/// Token records (never the tokens).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenList {
    /// Token records.
    #[schema(value_type = Vec<Object>)]
    pub tokens: Vec<Value>,
}

/// A revoked token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRevoked {
    /// Token id.
    pub id: String,
    /// Always true.
    pub revoked: bool,
}

// --- providers and endpoints --------------------------------------------------------------

/// The whole provider (a PUT replaces it; its endpoints are kept).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    /// Payee address, `0x` and 40 hex digits.
    pub pay_to: String,
    /// Base URL; refused (400 `upstream_refused`, naming the rule) when it resolves to
    /// loopback, link-local, private, carrier-grade NAT, unspecified, broadcast or multicast
    /// addresses, or names an RPC host or a listener of the gateway, unless `[admin]
    /// upstream_allow` lists it; checked again at every connection.
    pub upstream: String,
    /// Prefix removed before forwarding; a provider token's endpoints must lie under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<String>,
    /// How the vault credential is injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialBody>,
    /// Default upstream timeout of its endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout_ms: Option<u64>,
    /// Accept an `http://` upstream that is not on loopback (sent in clear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_insecure_http: Option<bool>,
}

/// A credential injection. Over the admin API secrets come only from the vault
/// (`secret_env`/`secret_file` are refused).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    /// `header`, `query` or `basic`.
    pub inject: String,
    /// Refused over the admin API (the file's providers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Refused over the admin API (the file's providers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// The vault credential whose latest unrevoked version is injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<String>,
    /// `inject = header`: the header; default `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `inject = header`: must contain `{secret}`; default `Bearer {secret}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// `inject = query`: the parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// `inject = basic`: the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// A provider as stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Provider id.
    pub id: String,
    /// The stored spec (the provider body with its id); null if it no longer reads.
    #[schema(value_type = Object)]
    pub spec: Value,
    /// `config` or `admin`.
    #[schema(value_type = String)]
    pub source: Value,
    /// Last change.
    pub updated_unix_s: u64,
}

/// Providers (a provider token sees its own).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderList {
    /// Providers.
    pub providers: Vec<Provider>,
}

/// A stored provider.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderPut {
    /// Provider id.
    pub id: String,
    /// What was stored.
    #[schema(value_type = Object)]
    pub spec: Value,
}

/// An endpoint (a PUT replaces it; a changed price makes a new price version).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointBody {
    /// Pattern: `/exact`, `/{param}` segments, trailing `/*`; `/receipts`, `/healthz` and
    /// `/readyz` are reserved.
    pub path: String,
    /// Default `[GET]`; GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Human amount in token units (`"0.001"`); give price or price_atomic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    /// Atomic units as a decimal string, below 2^63.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_atomic: Option<String>,
    /// CAIP-2 ids; default every configured network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    /// Offered in the 402.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Offered in the 402; default `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// `after` (default), `before` or `deferred`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<String>,
    /// `maxTimeoutSeconds` offered (a provider token: at most 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timeout_seconds: Option<u64>,
    /// Upstream timeout (a provider token: at most 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout_ms: Option<u64>,
    /// Request body cap (a provider token: at most the gateway's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_bytes_max: Option<u64>,
    /// Charge when the upstream answers with a redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_redirects: Option<bool>,
    /// Pass the upstream's `Set-Cookie` through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_set_cookie: Option<bool>,
}

/// One price of a price version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// CAIP-2 id.
    pub network: String,
    /// Atomic units.
    pub amount: String,
}

/// An endpoint with its current prices.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Endpoint id.
    pub id: u64,
    /// `provider:path`.
    pub name: String,
    /// Path pattern.
    pub path: String,
    /// The stored spec; null if it no longer reads.
    #[schema(value_type = Object)]
    pub spec: Value,
    /// Whether it is served.
    pub enabled: bool,
    /// `config` or `admin`.
    #[schema(value_type = String)]
    pub source: Value,
    /// Current price version.
    pub price_version: u64,
    /// Its prices; null if they no longer read.
    #[schema(value_type = Vec<Price>)]
    pub prices: Value,
    /// Last change.
    pub updated_unix_s: u64,
}

/// A provider's endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointList {
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// A stored endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointWrite {
    /// `provider:path`.
    pub name: String,
    /// Endpoint id.
    pub endpoint_id: u64,
    /// Its price version now.
    pub price_version: u64,
    /// True when the price changed or the endpoint is new.
    pub new_price_version: bool,
}

/// Which endpoint of the provider.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EndpointPath {
    /// The endpoint's path pattern.
    pub path: String,
}

/// An endpoint served or not.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointEnabled {
    /// `provider:path`.
    pub name: String,
    /// Whether it is served now.
    pub enabled: bool,
}

/// One price version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceVersion {
    /// Price version id.
    pub price_version: u64,
    /// When it was made.
    pub created_unix_s: u64,
    /// Its prices; null if they no longer read.
    #[schema(value_type = Vec<Price>)]
    pub prices: Value,
}

/// An endpoint's price versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceHistory {
    /// `provider:path`.
    pub name: String,
    /// The price version in use.
    pub current: u64,
    /// Every version, oldest first.
    pub versions: Vec<PriceVersion>,
}

// --- credentials --------------------------------------------------------------------------

/// A credential version's secret (write-only). No control characters, 1 to 8192 bytes;
/// encrypted with AES-256-GCM under the vault master key.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    /// The secret.
    #[schema(write_only)]
    pub secret: String,
}

impl std::fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBody([redacted])")
    }
}

/// Credential versions (metadata only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialList {
    /// Versions: provider, name, version, times, revocation.
    #[schema(value_type = Vec<Object>)]
    pub credentials: Vec<Value>,
}

/// An uploaded credential version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialUploaded {
    /// Provider id.
    pub provider: String,
    /// Credential name.
    pub name: String,
    /// The new version.
    pub version: u64,
}

/// A revoked credential version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialRevoked {
    /// Provider id.
    pub provider: String,
    /// Credential name.
    pub name: String,
    /// The version.
    pub version: u64,
    /// Always true.
    pub revoked: bool,
}

// --- revenue and ledger -------------------------------------------------------------------

/// A time range in unix seconds: from inclusive (default 0), to exclusive (default unbounded).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// From, inclusive.
    pub from_unix_s: Option<u64>,
    /// To, exclusive.
    pub to_unix_s: Option<u64>,
}

/// Revenue by endpoint and ledger state, for entries reserved in [from, to).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revenue {
    /// Provider id.
    pub provider: String,
    /// From, inclusive.
    pub from_unix_s: u64,
    /// To, exclusive.
    pub to_unix_s: u64,
    /// Lines: endpoint, state (settled is revenue), count, amount (atomic units).
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<Value>,
}

/// Which ledger entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    /// Provider id (a provider token: its own).
    pub provider: Option<String>,
    /// Payer address.
    pub payer: Option<String>,
    /// From, inclusive (unix seconds).
    pub from_unix_s: Option<u64>,
    /// To, exclusive (unix seconds).
    pub to_unix_s: Option<u64>,
    /// Entries to skip.
    pub offset: Option<u64>,
    /// At most this many (default 100).
    pub limit: Option<u32>,
}

/// Ledger entries, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntries {
    /// Entries without the signed payment.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<Value>,
}

// --- wallets and settings -----------------------------------------------------------------

/// A wallet policy's scope: `*` (every provider) or a provider id. Operators default to `*`;
/// a provider token always acts in its own provider's scope (another is 403).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScopeQuery {
    /// `*` or a provider id.
    pub scope: Option<String>,
}

/// Which wallet policies.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WalletsQuery {
    /// `*` or a provider id.
    pub scope: Option<String>,
    /// One wallet.
    pub wallet: Option<String>,
}

/// Replaces the wallet's policy in the scope. Caps: per UTC day and UTC calendar month,
/// summed over every asset, enforced inside the reservation transaction.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WalletPolicyBody {
    /// Revoked (absent keeps the current state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<bool>,
    /// Registered (allowlist mode admits only registered wallets).
    #[serde(default)]
    pub registered: bool,
    /// Allowed endpoint names `provider:path` (at most 1000); absent allows all; in a
    /// provider scope only that provider's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    /// Atomic units as a decimal string, below 2^63.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_call_max: Option<String>,
    /// Atomic units as a decimal string, below 2^63.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cap: Option<String>,
    /// Atomic units as a decimal string, below 2^63.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_cap: Option<String>,
}

/// Wallet policies.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WalletPolicyList {
    /// Policies: scope, wallet, revoked, registered, endpoints, caps, updated_unix_s.
    #[schema(value_type = Vec<Object>)]
    pub policies: Vec<Value>,
}

/// A stored wallet policy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WalletPolicySet {
    /// The policy as stored.
    #[schema(value_type = Object)]
    pub policy: Value,
}

/// A wallet revoked or reinstated.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WalletRevoked {
    /// `*` or a provider id.
    pub scope: String,
    /// The wallet, lower-case hex.
    pub wallet: String,
    /// Whether it is revoked now.
    pub revoked: bool,
}

/// Global settings and the change counter.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Only registered wallets may pay.
    pub allowlist_mode: bool,
    /// The change counter.
    pub version: u64,
}

/// Global settings as changed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsSet {
    /// Only registered wallets may pay.
    pub allowlist_mode: bool,
}

/// Global settings to change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// Only registered wallets may pay.
    pub allowlist_mode: bool,
}

// --- audit --------------------------------------------------------------------------------

/// Which audit records (a provider token: its own provider's only).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Payer address.
    pub wallet: Option<String>,
    /// Endpoint name `provider:path`.
    pub endpoint: Option<String>,
    /// Provider id.
    pub provider: Option<String>,
    /// From, inclusive (unix milliseconds).
    pub from_unix_ms: Option<u64>,
    /// To, exclusive (unix milliseconds).
    pub to_unix_ms: Option<u64>,
    /// `accepted` or `denied`.
    pub decision: Option<String>,
    /// Records after this sequence number.
    pub after_seq: Option<u64>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
}

/// One page of audit records by sequence number.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    /// Records: seq, time, actor, action, decision, hashes.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Value>,
    /// Pass as `after_seq` for the next page; null on the last.
    pub next_after_seq: Option<u64>,
}

// --- reconciliation -----------------------------------------------------------------------

/// Exactly one range: from_block+to_block, from_time+to_time (RFC 3339 or unix seconds; end
/// exclusive), or resume: true (from the stored cursor + 1 to the head).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileBody {
    /// CAIP-2 id; required when several networks are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// First block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_block: Option<u64>,
    /// Last block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_block: Option<u64>,
    /// From (RFC 3339 or unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_time: Option<String>,
    /// To, exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_time: Option<String>,
    /// From the stored cursor to the head.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resume: bool,
    /// Confirmations required (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmations: Option<u64>,
    /// Blocks per log query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_blocks: Option<u64>,
}

/// The report's format: `json` (default) or `csv`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FormatQuery {
    /// `json` or `csv`.
    pub format: Option<String>,
}

/// Which runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// CAIP-2 id; required when several networks are configured.
    pub network: Option<String>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
}

/// Recorded reconciliation runs of a network.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconRuns {
    /// CAIP-2 id.
    pub network: String,
    /// Runs, newest first.
    #[schema(value_type = Vec<Object>)]
    pub runs: Vec<Value>,
}

/// A run's exceptions (every item not matched).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconExceptions {
    /// Run id.
    pub run_id: i64,
    /// Exceptions.
    #[schema(value_type = Vec<Object>)]
    pub exceptions: Vec<Value>,
}

/// Resolution notes of an exception, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconNotes {
    /// Exception id.
    pub exception_id: i64,
    /// Notes.
    #[schema(value_type = Vec<Object>)]
    pub notes: Vec<Value>,
}

/// A resolution note.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    /// Why (not empty).
    pub why: String,
}

/// An appended note.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteAdded {
    /// Exception id.
    pub exception_id: i64,
    /// Note id.
    pub note_id: i64,
    /// `token:<id>` of the caller.
    pub who: String,
}
