//! The tollgate ledger and everything else tollgate keeps in its database: the storage layer.
//! One entry per payment authorization, recorded *before* the paid call is forwarded, then
//! moved through `reserved → forwarded → settling → settled` (or voided, failed, refund owed),
//! each move an appended event; and beside it the control plane's storage, the audit log and
//! the reconciliation's records.
//!
//! Layers, each importing only from the ones above it (no file imports from a file that
//! imports from it):
//!
//! - vocabulary: the entry value types (`types`, which name no error), [`MeteringError`]
//!   (`error`), parsing and checking values (`checks`), the wallet policy rules (`policy`,
//!   pure), the reconciliation store's vocabulary (`reconcile`: classes, scope, items, runs, exceptions, notes; the matcher is `tollgate-recon`'s), how amounts are shown and typed (`units`: [`TokenUnits`], the one formatting function);
//! - `db`: the engine (SQLite or PostgreSQL, chosen by the URL), connect and migrate
//!   (`migrations/sqlite`, `migrations/postgres`, embedded), the time limit around every call,
//!   the driver-error mapping, `db_call!` and the value codecs (`db::codec`);
//! - `repo`: one repository per concern on `db` ([`Entries`], [`Spend`], [`Leases`],
//!   [`Policies`], [`Catalog`], [`Tokens`], [`Audit`], [`ReconStore`], [`Settings`]); a
//!   repository imports no other, except `settings` (the change log) and `entry_row` (the
//!   shape of an entry row), which import none;
//! - `ledger`: [`Ledger`], the handle that connects and hands out the repositories.
//!
//! Owns: the schema, the double-spend guard (UNIQUE on chain, asset, payer, nonce, so it holds
//! across gateway replicas), the state machine (in Rust, [`EntryState::can_go_to`], and again
//! in a schema trigger, which also appends each change's event), spend totals, leases, wallet
//! policies enforced inside [`Entries::reserve`], the change counter and the hash-chained audit
//! log, and the reconciliation's pure matcher and records.
//!
//! Must not: know HTTP or status codes, reach a chain or depend on alloy providers (callers
//! record outcomes; only `alloy-primitives` types cross this boundary), parse the payment JSON
//! it stores, read the environment (configuration arrives by value), put the database URL in
//! errors or `Debug` output, or see a credential in clear or a bearer token (only ciphertext
//! and hashes). Every call has a time limit ([`LedgerOptions`]). Callers never check the
//! engine to decide what to run: the repositories hide it.

mod checks;
mod db;
mod error;
mod ledger;
mod policy;
mod reconcile;
mod repo;
mod types;
mod units;

pub use db::checkpoint::WAL_BYTES_MAX as SQLITE_WAL_BYTES_MAX;
pub use db::{Engine, LedgerOptions};
pub use error::MeteringError;
pub use ledger::Ledger;
pub use policy::{GLOBAL_SCOPE, PolicyDenial, period_starts};
pub use reconcile::{NewReconRun, ReconClass, ReconException, ReconItem, ReconNote, ReconRun, ReconScope};
pub use repo::audit::{Audit, AuditQuery, AuditRecord, AuditVerification, Decision, NewAuditRecord, audit_hash};
pub use repo::catalog::{
    Catalog, CredentialVersion, EndpointRecord, EndpointWrite, PriceVersion, ProviderRecord, Source,
};
pub use repo::entries::{CLAIM_BATCH_MAX, Entries};
pub use repo::leases::Leases;
pub use repo::payment_ids::{
    PAYMENT_ID_CHARS_MAX, PAYMENT_ID_CHARS_MIN, PAYMENT_ID_OUTCOME_BYTES_MAX, PaymentIdKey, PaymentIdRecord,
    PaymentIds, payment_id_valid,
};
pub use repo::policies::{Policies, WalletPolicy};
pub use repo::recon::ReconStore;
pub use repo::settings::{Actor, CONTROL_CHANNEL, ControlListener, ControlState, Settings};
pub use repo::spend::{RevenueLine, Spend};
pub use repo::tokens::{AdminToken, Role, Tokens, token_hash};
pub use types::{
    AtomicAmount, CAUSE_BYTES_MAX, DETAIL_BYTES_MAX, Entry, EntryFilter, EntryId, EntryState, Event, LABEL_BYTES_MAX,
    NewEntry, PATH_BYTES_MAX, PAYMENT_BYTES_MAX, REASON_BYTES_MAX, SettlementMode, SpendQuery, SpendTotals,
    StateCounts, Tally, Transition,
};
pub use units::TokenUnits;
