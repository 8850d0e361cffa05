//! One ledger entry's event history: every state change, oldest first.
//!
//! Must not: validate beyond the shape (the control plane's rules do), or print a secret.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// An entry's events (its reservation first); read by the console's ledger page and by
/// `tollgate admin ledger events`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryEvents {
    /// The entry id (32 hex digits).
    pub entry_id: String,
    /// Events: id, from_state, to_state, cause, detail, tx_hash, at_unix_s.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
}
