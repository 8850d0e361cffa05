//! Every error answer's body and the admin API's error codes.
//!
//! Must not: validate beyond the shape (the control plane's rules do), or print a secret.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
