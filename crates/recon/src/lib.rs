//! Reconciliation of on-chain settlement against the tollgate ledger, to the atomic unit.
//!
//! Owns: the pure matcher (`matcher`: on-chain transfers against ledger entries → matched or
//! an exception class, totals, the tie-out, the breakdown per UTC day, UTC month, provider,
//! route and payer) and the time arguments (`times`: unix seconds or RFC 3339).
//!
//! Must not: know HTTP or axum, read the environment, or write the control plane. The matcher
//! does no IO at all. The store's vocabulary (classes, items, runs, exceptions, notes, the
//! cursor) is `tollgate-metering`'s, reached through its public API.

mod matcher;
mod times;

pub use matcher::{
    ChainTransfer, PERIOD_UNKNOWN, ReconBreakdown, ReconReport, ReconSums, ReconTotals, TieOut, breakdown, reconcile,
    utc_day, utc_month,
};
pub use times::parse_time;
