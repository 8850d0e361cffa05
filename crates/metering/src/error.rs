//! `MeteringError`: every way a ledger call can fail.
//!
//! Variants carry typed fields and never a connection URL or password (hosted database URLs
//! carry credentials). This crate does not know HTTP: the gateway maps these errors in its one
//! error-mapping place, using [`MeteringError::is_retryable`] and the variant.

use crate::types::{EntryId, EntryState};

/// Why a ledger call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeteringError {
    /// The authorization (chain, asset, payer, nonce) is already reserved. Detected by the
    /// UNIQUE constraint, so it holds across gateway replicas.
    #[error("authorization already reserved as entry {existing} (state {state})")]
    DuplicateAuthorization {
        /// The entry that holds the authorization.
        existing: EntryId,
        /// Its state when the duplicate was detected.
        state: EntryState,
    },
    /// The entry's current state does not allow the requested transition.
    #[error("entry {id}: illegal transition {from} -> {to}")]
    IllegalTransition {
        /// The entry.
        id: EntryId,
        /// Its current state.
        from: EntryState,
        /// The state asked for.
        to: EntryState,
    },
    /// Another writer changed the entry between our read and our conditional update, so the
    /// transition was not applied. Re-read the entry and decide again.
    #[error("entry {id} changed concurrently: expected state {expected}, found {found}")]
    StaleState {
        /// The entry.
        id: EntryId,
        /// The state the transition was decided on.
        expected: EntryState,
        /// The state found after losing the race.
        found: EntryState,
    },
    /// `settling -> settling` must record a different transaction (a replacement); this one is
    /// already the entry's transaction.
    #[error("entry {id} is already settling with transaction {tx_hash}")]
    NotAReplacement {
        /// The entry.
        id: EntryId,
        /// The transaction hash given, equal to the recorded one.
        tx_hash: alloy_primitives::B256,
    },
    /// No entry has this id.
    #[error("no ledger entry {id}")]
    NotFound {
        /// The id asked for.
        id: EntryId,
    },
    /// The call (including waiting for a connection) took longer than its limit.
    #[error("ledger {op} timed out after {timeout_ms} ms")]
    Timeout {
        /// The ledger operation.
        op: &'static str,
        /// The limit that was exceeded.
        timeout_ms: u64,
    },
    /// The database refused or failed the call.
    #[error("ledger {op} failed: {reason}")]
    Database {
        /// The ledger operation.
        op: &'static str,
        /// The driver's description (no URL or password).
        reason: String,
        /// Whether the same call may succeed if repeated (lost connection, lock contention,
        /// serialization failure).
        retryable: bool,
    },
    /// The schema migrations could not be applied.
    #[error("ledger migration failed: {reason}")]
    Migration {
        /// The migrator's description.
        reason: String,
    },
    /// The database URL is not a usable `sqlite:` or `postgres://` URL. The URL itself is not
    /// repeated: it may hold a password.
    #[error("invalid ledger database URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// The ledger options cannot work (e.g. a zero timeout or pool size).
    #[error("invalid ledger option `{option}`: {reason}")]
    InvalidOptions {
        /// The option's field name.
        option: &'static str,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A value given to the ledger is malformed (an entry id, a state or mode name, a cause).
    #[error("invalid {what}: {reason}")]
    InvalidValue {
        /// Which value.
        what: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// A text field is longer than the ledger stores.
    #[error("{field} is {len_bytes} bytes; at most {max_bytes} are stored")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// A number does not fit the database's signed 64-bit integers.
    #[error("{field} = {value} exceeds the ledger's range (at most {max})", max = i64::MAX)]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value given.
        value: u128,
    },
    /// A stored row could not be read back into its Rust type (the schema's CHECKs should make
    /// this impossible; it means the database was edited outside the ledger).
    #[error("ledger row has an invalid {column}: {reason}")]
    Corrupt {
        /// The column.
        column: String,
        /// What is wrong with the stored value.
        reason: String,
    },
    /// The operating system's random number generator failed while making an entry id.
    #[error("no randomness for an entry id: {reason}")]
    Randomness {
        /// The generator's description.
        reason: String,
    },
    /// The payer's wallet policy refuses this call; nothing was reserved.
    #[error("wallet policy: {0}")]
    PolicyDenied(crate::policy::PolicyDenial),
    /// A control-plane record (provider, endpoint, credential, token) does not exist.
    #[error("no {what} `{key}`")]
    UnknownRecord {
        /// The kind of record.
        what: &'static str,
        /// Its key.
        key: String,
    },
}

impl MeteringError {
    /// A stored value of `column` that cannot be read back.
    pub(crate) fn corrupt(column: &str, reason: impl std::fmt::Display) -> MeteringError {
        MeteringError::Corrupt { column: column.to_owned(), reason: reason.to_string() }
    }

    /// Whether repeating the same call may succeed. Repeating is always safe: a repeated
    /// `reserve` meets the UNIQUE constraint ([`MeteringError::DuplicateAuthorization`]) and a
    /// repeated `transition` meets the conditional update, so nothing is applied twice.
    pub fn is_retryable(&self) -> bool {
        match self {
            MeteringError::Timeout { .. } => true,
            MeteringError::Database { retryable, .. } => *retryable,
            MeteringError::DuplicateAuthorization { .. }
            | MeteringError::IllegalTransition { .. }
            | MeteringError::StaleState { .. }
            | MeteringError::NotAReplacement { .. }
            | MeteringError::NotFound { .. }
            | MeteringError::Migration { .. }
            | MeteringError::InvalidUrl { .. }
            | MeteringError::InvalidOptions { .. }
            | MeteringError::InvalidValue { .. }
            | MeteringError::TooLong { .. }
            | MeteringError::OutOfRange { .. }
            | MeteringError::Corrupt { .. }
            | MeteringError::Randomness { .. }
            | MeteringError::PolicyDenied(_)
            | MeteringError::UnknownRecord { .. } => false,
        }
    }
}
