//! The caller's token (`whoami`) and admin tokens: creation, listing, revocation.
//!
//! Must not: validate beyond the shape (the control plane's rules do), or print a secret.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

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
