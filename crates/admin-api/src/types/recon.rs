//! Reconciliation: running one, its runs, exceptions and resolution notes.
//!
//! Must not: validate beyond the shape (the control plane's rules do), or print a secret.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

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

/// The report's format: `json` (default), `csv` (the items) or `totals_csv` (the totals per
/// UTC day, UTC month, provider, route and payer).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FormatQuery {
    /// `json`, `csv` or `totals_csv`.
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
