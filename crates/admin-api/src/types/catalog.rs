//! Providers and priced endpoints: the bodies that create or change them, their listings, enabling, and price histories.
//!
//! Must not: validate beyond the shape (the control plane's rules do), or print a secret.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

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
    /// The service's name agents see in 402s and discovery (x402 bazaar `serviceName`): 1 to
    /// 32 printable ASCII characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Topical tags (bazaar `tags`): at most 5, each 1 to 32 printable ASCII characters,
    /// distinct ignoring case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Icon (bazaar `iconUrl`): an absolute http(s) URL on a host name (not an IP address or
    /// loopback name), without user information, at most 2048 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
}

/// How an endpoint describes its input and output to agents: the x402 `bazaar` extension of
/// its 402s, `GET /discovery/resources`, `/.well-known/x402.json` and `/openapi.json` (at most
/// 4096 bytes as JSON: it is sent in every 402 header).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryBody {
    /// Example query parameters: an object of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub query_example: Option<Value>,
    /// JSON Schema of the query parameters (an object schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub query_schema: Option<Value>,
    /// `json` (default), `form-data` or `text`: the body of POST, PUT and PATCH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_type: Option<String>,
    /// Example request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub body_example: Option<Value>,
    /// JSON Schema of the request body (an object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub body_schema: Option<Value>,
    /// Example response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output_example: Option<Value>,
    /// JSON Schema of the response body (an object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
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
    /// When it was deleted (listed only with `include_deleted=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_unix_s: Option<u64>,
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
    /// Pattern: `/exact`, `/{param}` segments, trailing `/*`; `/receipts`, `/healthz`,
    /// `/readyz`, `/discovery`, `/.well-known` and `/openapi.json` are reserved.
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
    /// A free route (no price; `price = "0"` means the same): forwarded with the provider's
    /// credential and audited, never answered 402 and never written to the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<bool>,
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
    /// Require the x402 `payment-identifier` extension (a payment without an id: 400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id_required: Option<bool>,
    /// Store response bodies up to this size (at most 1 MiB) for payment-identifier replays;
    /// 0 or absent: a replay is 409 `payment_already_processed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_body_bytes_max: Option<u64>,
    /// When an `after` route answers: `submitted` (the broadcast acknowledged:
    /// `settlement_pending` with the hash), `included` (default: the receipt) or
    /// `confirmations:N` (N confirmations, its own block included, within the receipt wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_wait: Option<String>,
    /// Input and output descriptions for agents (the bazaar extension and discovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryBody>,
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
    /// Its prices (empty for a free route); null if they no longer read.
    #[schema(value_type = Vec<Price>)]
    pub prices: Value,
    /// Last change.
    pub updated_unix_s: u64,
    /// When it was deleted (listed only with `include_deleted=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_unix_s: Option<u64>,
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

/// A partial change of an endpoint (`PATCH`): `path` names it; every other field given
/// replaces the stored one, every field absent is kept. Giving `price` drops a stored
/// `price_atomic` and `free` (and the other way round): an endpoint has one price.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    /// The endpoint's path pattern (not changed: it names the endpoint).
    pub path: String,
    /// Methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Human amount in token units (`"0.002"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    /// Atomic units as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_atomic: Option<String>,
    /// `true`: a free route (the price is dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<bool>,
    /// CAIP-2 ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    /// Offered in the 402.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Offered in the 402.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// `after`, `before` or `deferred`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<String>,
    /// `maxTimeoutSeconds` offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timeout_seconds: Option<u64>,
    /// Upstream timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout_ms: Option<u64>,
    /// Request body cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_bytes_max: Option<u64>,
    /// Charge when the upstream answers with a redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_redirects: Option<bool>,
    /// Pass the upstream's `Set-Cookie` through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_set_cookie: Option<bool>,
    /// Require the x402 `payment-identifier` extension (a payment without an id: 400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id_required: Option<bool>,
    /// Store response bodies up to this size (at most 1 MiB) for payment-identifier replays;
    /// 0: a replay is 409 `payment_already_processed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_body_bytes_max: Option<u64>,
    /// When an `after` route answers: `submitted`, `included` or `confirmations:N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_wait: Option<String>,
    /// Input and output descriptions for agents; replaces the stored ones whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryBody>,
    /// Serve it (`true`) or not (`false`); absent keeps it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Whether listings include deleted records.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Include deleted providers or endpoints (with their `deleted_unix_s`); default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_deleted: Option<bool>,
}

/// A provider or endpoint deleted (softly: its history, price versions and ledger
/// references are kept; agents get 404 from now on).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deleted {
    /// The provider id, or `provider:path`.
    pub name: String,
    /// When.
    pub deleted_unix_s: u64,
}
