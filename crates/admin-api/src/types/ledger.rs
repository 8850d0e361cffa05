//! Revenue and ledger entries: the range and page queries and their answers.
//!
//! Must not: validate beyond the shape (the control plane's rules do), or print a secret.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

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
    /// Lines: endpoint, state (settled is revenue), count, amount (token units), amount_atomic,
    /// symbol.
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
    /// One ledger state (`refund_owed`: the refunds owed).
    pub state: Option<String>,
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
