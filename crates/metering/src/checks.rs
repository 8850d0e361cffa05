//! Parsing and checking the vocabulary's values, where they can fail with [`MeteringError`]:
//! entry ids, states and settlement modes from text, fresh random ids, text length limits and
//! event causes.
//!
//! Kept apart from `types` so that `error` (which names entry ids and states) and `types` do
//! not import each other. Must not do IO beyond the operating system's random generator.

use std::str::FromStr;

use crate::MeteringError;
use crate::types::{CAUSE_BYTES_MAX, EntryId, EntryState, SettlementMode};

/// `N` bytes from the operating system's generator.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], MeteringError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| MeteringError::Randomness { reason: e.to_string() })?;
    Ok(bytes)
}

/// Refuses text longer than the ledger stores.
pub(crate) fn check_len(field: &'static str, value: &str, max_bytes: usize) -> Result<(), MeteringError> {
    if value.len() > max_bytes {
        return Err(MeteringError::TooLong { field, len_bytes: value.len(), max_bytes });
    }
    Ok(())
}

/// Checks that an event cause is a short machine-readable word: `[a-z0-9_]`, 1 to 64 bytes.
pub(crate) fn check_cause(cause: &str) -> Result<(), MeteringError> {
    check_len("cause", cause, CAUSE_BYTES_MAX)?;
    if cause.is_empty() || !cause.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(MeteringError::InvalidValue {
            what: "cause",
            reason: "expected 1 to 64 characters of [a-z0-9_]".to_owned(),
        });
    }
    Ok(())
}

impl EntryId {
    /// A fresh random id from the operating system's generator.
    pub(crate) fn random() -> Result<EntryId, MeteringError> {
        Ok(EntryId::from_checked_hex(hex::encode(random_bytes::<16>()?)))
    }
}

impl FromStr for EntryId {
    type Err = MeteringError;

    fn from_str(s: &str) -> Result<EntryId, MeteringError> {
        if s.len() != EntryId::LEN || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(MeteringError::InvalidValue {
                what: "entry id",
                reason: "expected 32 lowercase hex characters".to_owned(),
            });
        }
        Ok(EntryId::from_checked_hex(s.to_owned()))
    }
}

impl FromStr for SettlementMode {
    type Err = MeteringError;

    fn from_str(s: &str) -> Result<SettlementMode, MeteringError> {
        match s {
            "after" => Ok(SettlementMode::After),
            "before" => Ok(SettlementMode::Before),
            "deferred" => Ok(SettlementMode::Deferred),
            other => Err(MeteringError::InvalidValue {
                what: "settlement mode",
                reason: format!("unknown mode `{}`", other.escape_debug()),
            }),
        }
    }
}

impl FromStr for EntryState {
    type Err = MeteringError;

    fn from_str(s: &str) -> Result<EntryState, MeteringError> {
        EntryState::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| MeteringError::InvalidValue {
            what: "entry state",
            reason: format!("unknown state `{}`", s.escape_debug()),
        })
    }
}
