//! Reconciliation of on-chain settlement against the tollgate ledger, to the atomic unit.
//!
//! Owns: the pure matcher (`matcher`: on-chain transfers against ledger entries → matched or
//! an exception class, totals, the tie-out, the breakdown per UTC day, UTC month, provider,
//! route and payer), reading the chain through the verifier's `Chain` (`logs`: chunked
//! `eth_getLogs` with retries, the join of `Transfer` and `AuthorizationUsed`, times to
//! blocks, and which transaction consumed one authorization, for the gateway's recovery
//! sweep), one run against the ledger and its record (`run`), the periodic job with its lease
//! (`job`), the CSV and JSON renderings (`render`, every amount through
//! `tollgate_metering::TokenUnits`) and times (`times`: the arguments, and RFC 3339 UTC out).
//!
//! Must not: know HTTP or axum, read the environment, build an RPC or database client (the
//! caller hands in its [`Reconciler`]), or write the control plane. The matcher does no IO at
//! all. The store's vocabulary (classes, items, runs, exceptions, notes, the cursor) is
//! `tollgate-metering`'s, reached through its public API.

mod error;
mod job;
mod logs;
mod matcher;
mod options;
mod render;
mod run;
mod times;

pub use error::ReconcileError;
pub use job::{JOB_LEASE, JobSettings, JobTick, job_loop, job_tick};
pub use logs::{AuthorizationUse, find_authorization_use};
pub use matcher::{
    ChainTransfer, PERIOD_UNKNOWN, ReconBreakdown, ReconReport, ReconSums, ReconTotals, TieOut, breakdown, reconcile,
    utc_day, utc_month,
};
pub use options::ReconcileOptions;
pub use render::{CSV_COLUMNS, TOTALS_CSV_COLUMNS, render_csv, render_json, render_totals_csv, render_totals_json};
pub use run::{
    Host, ReconcileOutcome, Reconciler, Standalone, Target, blocks_of_times, reconcile_range, reconcile_resume,
    reconcile_times,
};
pub use times::{parse_time, rfc3339_utc};
