//! The tollgate ledger: one entry per payment authorization, recorded *before* the paid call
//! is forwarded, then moved through `reserved → forwarded → settling → settled` (or voided,
//! failed, refund owed), each move an appended event.
//!
//! Owns: the schema (`migrations/sqlite`, `migrations/postgres`, embedded and applied by
//! [`Ledger::connect`]), the double-spend guard (UNIQUE on chain, asset, payer, nonce, so it
//! holds across gateway replicas), the state machine (in Rust, [`EntryState::can_go_to`], and
//! again in a schema trigger, which also appends each change's event), spend totals, leases
//! that let one process at a time act for a relayer key, the control plane's storage (admin
//! token hashes, providers, endpoints and price versions, credential ciphertexts, wallet
//! policies enforced inside [`Ledger::reserve`], the change counter, the hash-chained audit
//! log) and the reconciliation's pure matcher and records. SQLite (embedded) or PostgreSQL
//! (shared), chosen by the URL.
//!
//! Must not: know HTTP or status codes, reach a chain or depend on alloy providers (callers
//! record outcomes; only `alloy-primitives` types cross this boundary), parse the payment JSON
//! it stores, read the environment (configuration arrives by value), or put the database URL
//! in errors or `Debug` output, see a credential in clear or a bearer token (only ciphertext
//! and hashes). Every call has a time limit ([`LedgerOptions`]).

// First: its `on_db!` macro is used by the modules after it.
#[macro_use]
mod ledger;

mod control;
// The storage engine and the value codecs; the repositories move onto it in the next commit.
#[allow(dead_code, unused_imports, unused_macros)]
mod db;
mod error;
mod reconcile;
mod types;

pub use control::{
    Actor, AdminToken, AuditQuery, AuditRecord, AuditVerification, CONTROL_CHANNEL, ControlListener, ControlState,
    CredentialVersion, Decision, EndpointRecord, EndpointWrite, GLOBAL_SCOPE, NewAuditRecord, PolicyDenial,
    PriceVersion, ProviderRecord, RevenueLine, Role, Source, WalletPolicy, audit_hash, period_starts, token_hash,
};
pub use error::MeteringError;
pub use ledger::{Engine, Ledger, LedgerOptions};
pub use reconcile::{
    ChainTransfer, NewReconRun, PERIOD_UNKNOWN, ReconBreakdown, ReconClass, ReconException, ReconItem, ReconNote,
    ReconReport, ReconRun, ReconScope, ReconSums, ReconTotals, TieOut, breakdown, reconcile, unix_s_of_utc, utc_day,
    utc_month,
};
pub use types::{
    AtomicAmount, CAUSE_BYTES_MAX, DETAIL_BYTES_MAX, Entry, EntryId, EntryState, Event, LABEL_BYTES_MAX, NewEntry,
    PATH_BYTES_MAX, PAYMENT_BYTES_MAX, REASON_BYTES_MAX, SettlementMode, SpendQuery, SpendTotals, StateCounts, Tally,
    Transition,
};
