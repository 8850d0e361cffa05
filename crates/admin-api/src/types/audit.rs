//! The audit trail: query parameters and pages.
//!
//! Must not: validate beyond the shape (the control plane's rules do), or print a secret.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

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
