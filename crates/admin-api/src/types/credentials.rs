//! Vault credentials: the write-only upload body and the metadata answers.
//!
//! Must not: validate beyond the shape (the control plane's rules do), or print a secret.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

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
