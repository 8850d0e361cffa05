//! Wallet policies and the control plane's settings (allowlist mode).
//!
//! Must not: validate beyond the shape (the control plane's rules do), or print a secret.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

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
