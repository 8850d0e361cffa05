//! The stored form of providers and endpoints: what the control plane keeps in the database
//! (`providers.spec`, `endpoints.spec`) and reads back into every replica's snapshot.
//!
//! The format is pinned and versioned (golden files in `tests/golden/`). Version 1 is the
//! layout stored since the control plane shipped, and it is written without a version marker:
//! the ledger detects a change by comparing spec text, so rows already stored must compare
//! equal to what the same file seeds today. A record carrying `"v": 1` reads the same; a later
//! version will write `"v": 2` and keep reading version 1 through a conversion. These types
//! are separate from the configuration file's raw types and from the admin API's request
//! bodies, so renaming a key there never turns stored records into failures.
//!
//! Must not: validate (the gateway builds typed routes from these and refuses what is
//! invalid), or hold a secret (a stored credential names a vault entry or, for the file's
//! providers, an environment variable or file read at startup).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The newest stored format version this build reads and writes.
pub const SPEC_VERSION: u64 = 1;

/// Why a stored spec could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Written by a newer build (a version this one does not know).
    #[error("stored spec has format version {found}; this build reads up to {SPEC_VERSION}")]
    UnknownVersion {
        /// The version in the record.
        found: u64,
    },
    /// Not the layout of its version.
    #[error("stored spec does not parse: {reason}")]
    Malformed {
        /// What the parser said.
        reason: String,
    },
}

/// A provider, as stored (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Stable id.
    pub id: String,
    /// Payee address, `0x`-hex as given.
    pub pay_to: String,
    /// Upstream base URL as given.
    pub upstream: String,
    /// Prefix removed before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<String>,
    /// How the upstream credential is injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialSpec>,
    /// Default upstream timeout of its endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout_ms: Option<u64>,
    /// Accept an `http://` upstream off loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_insecure_http: Option<bool>,
    /// The service's name agents see (x402 bazaar `serviceName`). Absent in records written
    /// before discovery; optional, so version 1 still reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The service's topical tags (bazaar `tags`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// The service's icon URL (bazaar `iconUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
}

/// A credential injection, as stored (version 1). The secret itself is never here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSpec {
    /// `header`, `query` or `basic`.
    pub inject: String,
    /// The file's secret from this environment variable (read at startup, not stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// The file's secret from this file (read at startup, not stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// The vault credential name (its latest unrevoked version is used).
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

/// A priced endpoint, as stored (version 1). Its prices are stored beside it, per price
/// version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Path pattern (`/weather/{city}`).
    pub path: String,
    /// Methods (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Human price in the asset's units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    /// Price in atomic units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_atomic: Option<String>,
    /// A free route: forwarded with the credential, audited, never paid (no price). Absent in
    /// records written before free routes; an optional field, so version 1 still reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<bool>,
    /// Accepted networks (CAIP-2 ids); default all configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    /// Description offered in the 402.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MIME type offered in the 402.
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
    /// Charge for an upstream redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_redirects: Option<bool>,
    /// Pass the upstream's `Set-Cookie` through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_set_cookie: Option<bool>,
    /// Require the x402 `payment-identifier` extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id_required: Option<bool>,
    /// Store response bodies up to this size for payment-identifier replays (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_body_bytes_max: Option<u64>,
    /// When an `after` call is answered: `submitted`, `included` or `confirmations:N`.
    /// Absent in records written before it; an optional field, so version 1 still reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_wait: Option<String>,
    /// How the endpoint describes its input and output to agents. Absent in records written
    /// before discovery; optional, so version 1 still reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoverySpec>,
}

/// An endpoint's input and output descriptions, as stored (version 1): examples and JSON
/// Schemas, opaque JSON here (the gateway checks them).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySpec {
    /// Example query parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_example: Option<serde_json::Value>,
    /// JSON Schema of the query parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_schema: Option<serde_json::Value>,
    /// `json`, `form-data` or `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_type: Option<String>,
    /// Example request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_example: Option<serde_json::Value>,
    /// JSON Schema of the request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_schema: Option<serde_json::Value>,
    /// Example response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_example: Option<serde_json::Value>,
    /// JSON Schema of the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<serde_json::Value>,
}

/// Reads a stored record of any known version.
fn read<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, SpecError> {
    let malformed = |e: serde_json::Error| SpecError::Malformed { reason: e.to_string() };
    let mut value: serde_json::Value = serde_json::from_str(text).map_err(malformed)?;
    let version = match value.as_object_mut().and_then(|m| m.remove("v")) {
        None => 1,
        Some(v) => v.as_u64().ok_or_else(|| SpecError::Malformed { reason: "v: not a version number".to_owned() })?,
    };
    if version != SPEC_VERSION {
        return Err(SpecError::UnknownVersion { found: version });
    }
    serde_json::from_value(value).map_err(malformed)
}

/// Writes the current version (version 1: no marker, see the module's documentation).
fn write<T: Serialize>(spec: &T) -> String {
    // Serialising these plain structs cannot fail (string keys, no maps of other keys).
    serde_json::to_string(spec).unwrap_or_default()
}

impl ProviderSpec {
    /// Reads a stored provider.
    pub fn from_stored(text: &str) -> Result<Self, SpecError> {
        read(text)
    }

    /// The stored text.
    pub fn to_stored(&self) -> String {
        write(self)
    }
}

impl EndpointSpec {
    /// Reads a stored endpoint.
    pub fn from_stored(text: &str) -> Result<Self, SpecError> {
        read(text)
    }

    /// The stored text.
    pub fn to_stored(&self) -> String {
        write(self)
    }
}
