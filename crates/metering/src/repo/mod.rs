//! The repositories: one per concern, each on the shared `db` handle, each owning its SQL.
//!
//! Must not: import each other, except `settings` (the change log every admin write records
//! into) and `entry_row` (the shape of a `ledger_entries` row), which import no repository.

pub(crate) mod audit;
pub(crate) mod catalog;
pub(crate) mod entries;
pub(crate) mod entry_row;
pub(crate) mod leases;
pub(crate) mod payment_ids;
pub(crate) mod policies;
pub(crate) mod recon;
pub(crate) mod settings;
pub(crate) mod spend;
pub(crate) mod tokens;
