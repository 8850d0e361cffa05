//! The per-call context: what one paid request carries through its phases, like pingora's
//! `CTX`. It owns the agent's request (head and body), the matched route and the credential
//! that serves it, and, as the phases run, the verified payment, the ledger entry's id and
//! the trail the log line, the metrics and the audit record are made from.
//!
//! Must not: do IO (the phases do), or hold anything the next call could see.

use std::sync::Arc;

use alloy_primitives::{Address, B256};
use axum::body::Body;
use axum::http::request::Parts;
use tollgate_metering::{EntryId, EntryState, PaymentIdKey, SettlementMode};
use tollgate_verifier::VerifiedPayment;

use crate::challenge::Challenge;
use crate::config::Injection;
use crate::control::RouteEntry;
use crate::error::GatewayError;
use crate::meters::Timings;

/// One paid request, from the route match to the audit record.
pub(super) struct PaidCall {
    /// The matched endpoint: its route, provider, offers and price version.
    pub(super) endpoint: Arc<RouteEntry>,
    /// The credential that serves this call (resolved when the route matched).
    pub(super) credential: Option<Served>,
    /// The 402 challenge of this route (offers and resource).
    pub(super) challenge: Challenge,
    /// The agent's request head.
    pub(super) parts: Parts,
    /// The agent's body: as received, then read in full within the route's cap
    /// (`reserve::request_body`), then taken by the forward phase.
    pub(super) body: Body,
    /// The payment, once it verified (a forged payment never gets here, so nothing is filed
    /// under a wallet that did not sign).
    pub(super) payment: Option<VerifiedPayment>,
    /// The ledger entry, once the spend is reserved.
    pub(super) entry_id: Option<EntryId>,
    /// The payment's x402 `payment-identifier`, once this call claimed it (after verification).
    pub(super) payment_id: Option<PaymentId>,
    /// What the log line, the metrics and the audit record need, filled in as phases run.
    pub(super) trail: Trail,
}

impl PaidCall {
    /// The request path (no query).
    pub(super) fn path(&self) -> &str {
        self.parts.uri.path()
    }

    /// The request's query, if any.
    pub(super) fn query(&self) -> Option<&str> {
        self.parts.uri.query()
    }

    /// The reserved entry and its payment, for the phases after the reservation (copies:
    /// the phases also write the trail).
    pub(super) fn reserved(&self) -> Result<(EntryId, VerifiedPayment), GatewayError> {
        match (&self.entry_id, &self.payment) {
            (Some(id), Some(p)) => Ok((id.clone(), p.clone())),
            _ => Err(GatewayError::Internal("a phase after the reservation ran before it".to_owned())),
        }
    }
}

/// The x402 payment identifier a payment carries (`super::idempotency`), with the fingerprint
/// of the payment and request it came with.
#[derive(Debug, Clone)]
pub(super) struct PaymentId {
    pub(super) key: PaymentIdKey,
    /// SHA-256 (hex) of the method, the path and query, and the payment as decoded.
    pub(super) fingerprint: String,
    /// The authorization's nonce: the entry a record names must be this authorization's.
    pub(super) nonce: B256,
}

/// The credential that serves this call, resolved when the route matched (a rotation
/// after that point applies to the next request).
pub(super) struct Served {
    pub(super) injection: Injection,
    pub(super) secret: secrecy::SecretString,
    /// `vault:NAME`, `env:NAME` or `file:PATH` — recorded, never the value.
    pub(super) id: String,
    pub(super) version: Option<u64>,
}

/// What the log line, the metrics and the audit record of a paid attempt need beyond the
/// call itself.
#[derive(Default)]
pub(super) struct Trail {
    pub(super) tx_hash: Option<String>,
    pub(super) upstream_status: Option<u16>,
    /// How the call settles (the route's mode, or `after` when admission control refused
    /// a deferred payment); unset before verification.
    pub(super) mode: Option<SettlementMode>,
    /// Phase latencies, for the log line and the metrics.
    pub(super) timings: Timings,
    /// Where this call left its ledger entry when it ended it short of a charge (`voided`,
    /// `settle_failed`) or owed the payer (`refund_owed`), with the ledger's cause: the audit
    /// record's decision and reason say the same.
    pub(super) ended: Option<(EntryState, &'static str)>,
    /// The payer of a payment refused after its signature verified (the balance check or
    /// later): the audit record names it although the payment never verified in full.
    pub(super) signer: Option<Address>,
}

impl Trail {
    /// Notes that the call left its entry in `state` for `cause` (the ledger's words).
    pub(super) fn ended(&mut self, state: EntryState, cause: &'static str) {
        self.ended = Some((state, cause));
    }
}
