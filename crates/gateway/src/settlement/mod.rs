//! Settling ledger entries, the deferred-settlement worker, and crash recovery.
//!
//! Every path that moves money goes through [`settle_entry`]: the settlement transaction's
//! hash is recorded in the ledger (`settling`) *before* it is broadcast, through a
//! conditional state change that only one process can win. A crash at any point therefore
//! leaves either nothing sent, or a hash to check — and the recovery sweep drives every
//! entry left in `reserved`, `forwarded` or `settling` to a terminal state.
//!
//! Modules, each depending only on those listed before it: `service` (the [`Settlements`]
//! service and its work items), `record` (what settling writes besides the claim), `chase` (in-doubt broadcasts), `settle` (one attempt), `deferred` (the
//! worker), `recovery` (the sweep). This file only declares them and names what the rest of
//! the gateway uses.

mod chase;
mod deferred;
mod record;
mod recovery;
mod service;
mod settle;

pub use chase::chase_worker;
pub use deferred::deferred_worker;
pub use record::{ANSWERED, REFUND_DUE, note_answered, stored_payment};
pub use recovery::{backfill_audit, recheck, recover_once, recovery_loop};
pub use service::{Chase, LiveEntries, LiveHold, Queued, Settlements, SettlementsParts};
pub use settle::{SettleError, SettleResult, Waiter, settle_entry, settle_entry_until};
