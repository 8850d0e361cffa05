//! The control plane's one error enum: why an admin operation was refused or failed.
//!
//! Classified by kind, not by transport: the gateway turns each variant into its HTTP answer
//! in its one mapping (`GatewayError::rescue`). Storage errors that mean "bad input" or "no
//! such record" are classified here, once, so no handler re-reads a `MeteringError`.
//!
//! Must not: know HTTP status codes, or carry a secret in a reason.

use tollgate_metering::MeteringError;

use crate::VaultError;

/// Why an admin operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The caller's role or provider scope does not allow the action.
    #[error("this token may not {action}")]
    Forbidden {
        /// What was refused, in words (`list tokens`).
        action: &'static str,
    },
    /// A field of the input is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field (dotted path, `body` or `query` when none is better).
        field: String,
        /// What is wrong with it (never the value of a secret).
        reason: String,
    },
    /// The record does not exist.
    #[error("no {what} `{key}`")]
    NotFound {
        /// The kind of record.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// The operation needs something the gateway is not configured for.
    #[error("{what}")]
    Unavailable {
        /// What is missing, in words, with the keys that would configure it.
        what: &'static str,
    },
    /// The store failed (unavailable, timed out, corrupt): not the caller's fault.
    #[error(transparent)]
    Store(MeteringError),
    /// The vault could not seal a credential.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

impl ControlError {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ControlError::Invalid { field: field.into(), reason: reason.into() }
    }
}

impl From<MeteringError> for ControlError {
    /// The store's refusals of input become `Invalid` or `NotFound`; the rest stays a store
    /// failure.
    fn from(e: MeteringError) -> Self {
        match e {
            MeteringError::UnknownRecord { what, key } => ControlError::NotFound { what, key },
            MeteringError::InvalidValue { what, reason } => ControlError::invalid(what, reason),
            MeteringError::OutOfRange { field, .. } => ControlError::invalid(field, "out of range"),
            MeteringError::TooLong { field, max_bytes, .. } => {
                ControlError::invalid(field, format!("at most {max_bytes} bytes"))
            }
            other => ControlError::Store(other),
        }
    }
}
