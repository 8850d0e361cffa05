//! The one error type of this crate.
//!
//! Variants carry what an agent needs to decide what to do next. None carries key material:
//! key errors describe the problem without echoing the input, and transport errors name the
//! host, never the full URL (queries may hold API keys).

use std::fmt;
use std::path::PathBuf;

use alloy_primitives::{B256, U256};

/// Which spend control refused a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Budget {
    /// `max_per_call`: one payment may not exceed this.
    PerCall,
    /// `total_budget`: everything this store has counted, across hosts.
    Total,
    /// `per_host_budget`, for this host (`host:port`).
    Host {
        /// The host the payment was for.
        host: String,
    },
    /// `daily_budget`: everything counted on the current UTC day, across hosts.
    Daily,
    /// `per_host_daily_budget`: everything counted on the current UTC day for this host.
    HostDaily {
        /// The host the payment was for (`host:port`). A `Box<str>`, not a `String`: two
        /// `String` variants would make `ClientError` 128 bytes (clippy's limit for errors).
        host: Box<str>,
    },
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::PerCall => f.write_str("max-per-call"),
            Budget::Total => f.write_str("total budget"),
            Budget::Host { host } => write!(f, "budget for host {host}"),
            Budget::Daily => f.write_str("daily budget (UTC day)"),
            Budget::HostDaily { host } => write!(f, "daily budget (UTC day) for host {host}"),
        }
    }
}

/// One offer of a challenge, as the server wrote it (for error reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// `scheme`.
    pub scheme: String,
    /// `network` (CAIP-2 or a v1 name).
    pub network: String,
    /// `asset`.
    pub asset: String,
    /// `amount` (v2) or `maxAmountRequired` (v1), in atomic units.
    pub amount: String,
}

impl fmt::Display for Offered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} of {} on {}", self.scheme, self.amount, self.asset, self.network)
    }
}

struct OfferList<'a>(&'a [Offered]);

impl fmt::Display for OfferList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no offers");
        }
        for (i, o) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{o}")?;
        }
        Ok(())
    }
}

/// Everything [`crate::PayingClient`] and the key helpers can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A spend control refused the payment. Nothing was signed and nothing was sent.
    #[error("{budget} exceeded: {spent} already counted + {requested} requested > limit {limit} (atomic units)")]
    BudgetExceeded {
        /// Which control.
        budget: Budget,
        /// Its limit, in atomic units.
        limit: U256,
        /// What the store already counts against it (`signed`, `sent`, `paid`, `paid_pending`).
        spent: U256,
        /// The price of this call.
        requested: U256,
    },
    /// The challenge has no `exact` offer on an allowed `(network, asset)` pair with an
    /// EIP-712 domain to sign under.
    #[error("no acceptable payment requirement (offered: {})", OfferList(offered))]
    NoAcceptableRequirement {
        /// What the server offered.
        offered: Vec<Offered>,
    },
    /// The server refused our payment, charging nothing: a definite 402 (a fresh
    /// authorization did not help or could not), or a 403 naming an error code and no
    /// ledger entry (a tollgate gateway's wallet policy: `wallet_revoked`,
    /// `wallet_not_registered`, `endpoint_not_in_wallet_scope`, `daily_cap_exceeded`, ...).
    /// `reason` is the server's code, e.g. `invalid_exact_evm_insufficient_balance`.
    /// Recorded `refused`: not counted.
    #[error("payment refused by the server: {reason}{}{}",
        message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(),
        status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    PaymentRejected {
        /// The server's code.
        reason: String,
        /// The server's message, when its answer carried one.
        message: Option<String>,
        /// The HTTP status of the refusal (402, or 403 for a wallet policy).
        status: Option<u16>,
    },
    /// A response was lost after the payment was sent, and the re-sent same authorization
    /// was answered with something other than a success receipt (typically
    /// `invalid_exact_evm_nonce_already_used`: the first delivery was processed). The
    /// payment may have been made; it is recorded `paid_pending` and stays counted. Do not
    /// pay again for this logical request without checking.
    #[error("payment outcome unknown after a lost response ({reason}); authorization {nonce} counted as spent")]
    PaymentOutcomeUnknown {
        /// The answer to the re-send.
        reason: String,
        /// The authorization nonce (the record's id).
        nonce: B256,
    },
    /// The request could not be completed over the network.
    #[error("transport error talking to {host} after {attempts} attempt(s): {reason}{}",
        if *.payment_in_doubt { " (a payment was sent and is counted as spent)" } else { "" })]
    Transport {
        /// `host:port` of the URL.
        host: String,
        /// What failed (without the URL).
        reason: String,
        /// How many requests were tried.
        attempts: u32,
        /// A payment header may have reached the server: its record stays `sent` (counted).
        payment_in_doubt: bool,
    },
    /// The response body exceeded the configured cap (the payment, if any, is recorded by
    /// the receipt in the headers).
    #[error("response body larger than {limit_bytes} bytes")]
    ResponseTooLarge {
        /// The cap.
        limit_bytes: usize,
    },
    /// The request itself is unusable (bad URL, unsupported scheme).
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// Why.
        reason: String,
    },
    /// The spending record could not be read or written. Payments stop: budgets cannot be
    /// honoured without it.
    #[error("spending record {}: {reason}", path.display())]
    Store {
        /// The store file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The server's 402 is malformed (neither a v2 header nor a v1 body we can read).
    #[error("malformed payment challenge: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// A key could not be loaded, created or used. Never contains key material.
    #[error("key: {reason}")]
    Key {
        /// What was wrong.
        reason: String,
    },
}

impl ClientError {
    pub(crate) fn store(path: &std::path::Path, reason: impl fmt::Display) -> Self {
        ClientError::Store { path: path.to_owned(), reason: reason.to_string() }
    }

    pub(crate) fn key(reason: impl Into<String>) -> Self {
        ClientError::Key { reason: reason.into() }
    }
}
