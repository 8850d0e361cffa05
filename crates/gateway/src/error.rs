//! The one place where errors become HTTP responses.
//!
//! Every failure of a request is a [`GatewayError`]. `rescue` classifies it by whose fault
//! it is — the client's (4xx with a stable code), the chain's or the upstream's (502, 503,
//! 504), or ours (500) — and whether retrying is safe. Bodies carry the code and a safe
//! message; the details (which may name internal addresses) go to the log only. 402s carry
//! a fresh challenge so a client can pay again.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tollgate_metering::MeteringError;
use tollgate_verifier::{Fault, VerifyError};
use tollgate_x402::facilitator::SettleResponse;
use tollgate_x402::{MatchError, WireError};

use crate::challenge::Challenge;

/// Everything that can go wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route has this path.
    #[error("no route for this path")]
    RouteNotFound,
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The path tries to leave its route.
    #[error("path refused: {reason}")]
    PathRefused {
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A priced route was called without a payment.
    #[error("payment required")]
    PaymentRequired,
    /// The payment header could not be decoded.
    #[error("malformed payment header: {0}")]
    MalformedPayment(WireError),
    /// The payment takes up none of our offers.
    #[error("payment matches no offer: {0}")]
    OfferMismatch(MatchError),
    /// Verification failed.
    #[error("verification failed: {0}")]
    Verify(VerifyError),
    /// The authorization was already used through this gateway.
    #[error("authorization already used")]
    AuthorizationUsed,
    /// The same authorization is being processed by another request right now.
    #[error("this authorization is already being processed")]
    PaymentInFlight,
    /// The x402 `payment-identifier` id is not 16–128 characters of `[A-Za-z0-9_-]`.
    #[error("payment identifier: expected 16 to 128 characters of A-Z, a-z, 0-9, '_' and '-'")]
    PaymentIdInvalid,
    /// The route requires the x402 `payment-identifier` extension and the payment has no id.
    #[error("this route requires a payment identifier (extensions.payment-identifier.info.id)")]
    PaymentIdRequired,
    /// The payment identifier was used with another payment (or another request) by this payer
    /// on this route.
    #[error("this payment identifier was used with a different payment")]
    PaymentIdConflict,
    /// The payment identifier's payment was processed already; the answer names its ledger
    /// entry and carries its receipt (the route stores no body to replay).
    #[error("this payment was processed already: see /receipts/{entry}")]
    PaymentAlreadyProcessed {
        /// The ledger entry the payment reserved.
        entry: tollgate_metering::EntryId,
        /// The receipt the agent was given (brought up to date from the entry), if any.
        receipt: Option<Box<SettleResponse>>,
    },
    /// The request body exceeds the route's cap.
    #[error("request body larger than {limit_bytes} bytes")]
    BodyTooLarge {
        /// The cap.
        limit_bytes: u64,
    },
    /// The agent's request body broke off or was malformed before it was read in full
    /// (nothing was sent upstream).
    #[error("request body incomplete")]
    RequestBodyIncomplete,
    /// The agent's request body did not arrive within the route's upstream timeout (nothing
    /// was sent upstream).
    #[error("request body not received in time")]
    RequestBodyTimeout,
    /// The request path or query is longer than the gateway accepts (refused before any
    /// verification, RPC or ledger work).
    #[error("request {part} longer than {limit_bytes} bytes")]
    UriTooLong {
        /// `path` or `query`.
        part: &'static str,
        /// The cap.
        limit_bytes: usize,
    },
    /// The request's header fields are too many or too large (`[server] headers_count_max`,
    /// `header_bytes_max`); refused before routing.
    #[error("request headers: {what} over the limit of {limit}")]
    HeadersTooLarge {
        /// `fields` or `bytes`.
        what: &'static str,
        /// The cap.
        limit: usize,
    },
    /// More requests are being handled than `[server] concurrency_max`: shed before any work.
    #[error("the gateway is at its concurrency limit")]
    Overloaded,
    /// A request without a payment was not answered within `[server] request_timeout_ms`.
    #[error("the request was not answered in time")]
    RequestTimeout,
    /// This client IP sent more requests without a valid payment than
    /// `[server] unpaid_per_ip_per_s`/`unpaid_per_ip_burst` allow (`crate::limits`).
    #[error("too many requests without a valid payment from this address")]
    RateLimited {
        /// Seconds until the next such request is accepted (`Retry-After`).
        retry_after_s: u64,
    },
    /// The upstream did not answer in time (nothing charged).
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The upstream could not be reached or broke off (nothing charged).
    #[error("upstream unavailable: {reason}")]
    UpstreamUnavailable {
        /// Transport detail (logged only).
        reason: String,
    },
    /// The upstream response exceeds the relay cap (nothing charged).
    #[error("upstream response larger than {limit_bytes} bytes")]
    UpstreamResponseTooLarge {
        /// The cap.
        limit_bytes: u64,
    },
    /// The token refused the payment at settlement (the payer's fault: balance spent,
    /// authorization used or cancelled meanwhile): the body is withheld, nothing charged.
    #[error("settlement failed: {}", .0.error_reason.as_deref().unwrap_or("unknown"))]
    SettlementFailed(SettleResponse),
    /// The chain, the relayer or the ledger could not settle now, and no transaction of ours
    /// for this payment exists or can be broadcast later: nothing charged, retry later.
    #[error("settlement unavailable")]
    SettlementUnavailable(SettleResponse),
    /// A deferred route's admission control refused the payment (configured to refuse rather
    /// than fall back to `after`): nothing reserved, retry later.
    #[error("deferred admission: {0}")]
    DeferredAdmission(crate::admission::Refusal),
    /// The call's entry left `reserved` before its `forwarded` mark: another process's
    /// recovery sweep released it because the call outlived `settlement.recovery_grace_s`.
    /// Nothing is charged; the response is withheld.
    #[error("the call's ledger entry was released before it finished")]
    EntryReleased,
    /// The readiness monitor knows that a payment cannot be settled now (the relayer cannot
    /// pay the gas of one settlement, the chain's RPC or the database is down): refused
    /// before anything is verified, reserved or forwarded. A quote is refused the same way,
    /// so no agent signs for a call that cannot be paid.
    #[error("settlement unavailable: {reason}")]
    NotReady {
        /// `relayer_gas_low`, `rpc_unavailable` or `database_unavailable`.
        reason: &'static str,
        /// Seconds for `Retry-After` (about the monitor's interval).
        retry_after_s: u64,
        /// For a payment: the x402 receipt (`settlement_unavailable`, no transaction).
        receipt: Option<Box<SettleResponse>>,
    },
    /// The upstream refused the credential we injected (401/403): the provider's credential
    /// is wrong or revoked, not the agent's fault. Nothing is charged.
    #[error("the upstream rejected the injected credential (status {status})")]
    UpstreamCredentialRejected {
        /// The upstream's status.
        status: u16,
    },
    /// The ledger could not be used.
    #[error("ledger: {0}")]
    Ledger(MeteringError),
    /// No receipt has this id.
    #[error("receipt not found")]
    ReceiptNotFound,
    /// The payer's wallet policy refuses the call (nothing reserved).
    #[error("{0}")]
    PolicyDenied(tollgate_metering::PolicyDenial),
    /// The provider's credential has no usable version (none uploaded, all revoked, or the
    /// vault is not configured): nothing is verified or charged.
    #[error("the upstream credential is unavailable")]
    CredentialUnavailable,
    /// Admin API: no bearer token, or one that is unknown or revoked.
    #[error("admin token missing, unknown or revoked")]
    AdminUnauthorized,
    /// Admin API: the token's role (or provider) may not do this.
    #[error("this token may not {action}")]
    AdminForbidden {
        /// What was attempted.
        action: &'static str,
    },
    /// Admin API: a field of the request is invalid (named).
    #[error("{field}: {reason}")]
    AdminInvalid {
        /// The field (dotted path).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Admin API: an upstream the SSRF guard refuses (`crate::ssrf`); the refusal names the
    /// rule and the host as typed, never an address it resolved to.
    #[error("{0}")]
    AdminUpstreamRefused(crate::ssrf::Refusal),
    /// Admin API: the record does not exist.
    #[error("no {what} `{key}`")]
    AdminNotFound {
        /// The kind of record.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// Admin API: the request needs something the gateway is not configured for.
    #[error("{0}")]
    AdminUnavailable(&'static str),
    /// A discovery request's query parameter is unknown, repeated or malformed (named; the
    /// value is never echoed).
    #[error("discovery query: {param}: {reason}")]
    DiscoveryQueryInvalid {
        /// The parameter (`query` for an unknown one).
        param: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A bug or misconfiguration of ours.
    #[error("internal: {0}")]
    Internal(String),
}

/// How a failure is reported.
struct Class {
    status: StatusCode,
    code: &'static str,
    retry_safe: bool,
}

impl GatewayError {
    fn class(&self) -> Class {
        use GatewayError::*;
        let c = |status, code, retry_safe| Class { status, code, retry_safe };
        match self {
            RouteNotFound => c(StatusCode::NOT_FOUND, "route_not_found", false),
            MethodNotAllowed => c(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", false),
            PathRefused { .. } => c(StatusCode::BAD_REQUEST, "path_refused", false),
            PaymentRequired => c(StatusCode::PAYMENT_REQUIRED, "payment_required", true),
            MalformedPayment(_) => c(StatusCode::BAD_REQUEST, "malformed_payment", false),
            OfferMismatch(MatchError::UnsupportedScheme { .. }) => {
                c(StatusCode::PAYMENT_REQUIRED, "invalid_exact_evm_scheme", false)
            }
            OfferMismatch(MatchError::NetworkNotOffered { .. }) => {
                c(StatusCode::PAYMENT_REQUIRED, "invalid_exact_evm_network_mismatch", false)
            }
            OfferMismatch(MatchError::AcceptedMismatch { field: tollgate_x402::PAYMENT_FLOW }) => {
                c(StatusCode::PAYMENT_REQUIRED, "payment_flow_mismatch", false)
            }
            OfferMismatch(MatchError::AcceptedMismatch { .. }) => {
                c(StatusCode::PAYMENT_REQUIRED, "accepted_requirement_mismatch", false)
            }
            Verify(e) => match e.fault() {
                Fault::Client => c(StatusCode::PAYMENT_REQUIRED, e.reason_code(), false),
                Fault::Chain => c(StatusCode::SERVICE_UNAVAILABLE, "chain_unavailable", true),
                Fault::Ours => c(StatusCode::INTERNAL_SERVER_ERROR, "gateway_misconfigured", false),
            },
            AuthorizationUsed => c(StatusCode::PAYMENT_REQUIRED, "invalid_exact_evm_nonce_already_used", false),
            PaymentInFlight => c(StatusCode::CONFLICT, "payment_in_flight", true),
            PaymentIdInvalid => c(StatusCode::BAD_REQUEST, "invalid_payment_id", false),
            PaymentIdRequired => c(StatusCode::BAD_REQUEST, "payment_id_required", false),
            PaymentIdConflict => c(StatusCode::CONFLICT, "payment_id_conflict", false),
            PaymentAlreadyProcessed { .. } => c(StatusCode::CONFLICT, "payment_already_processed", false),
            BodyTooLarge { .. } => c(StatusCode::PAYLOAD_TOO_LARGE, "request_body_too_large", false),
            RequestBodyIncomplete => c(StatusCode::BAD_REQUEST, "request_body_incomplete", true),
            RequestBodyTimeout => c(StatusCode::REQUEST_TIMEOUT, "request_body_timeout", true),
            UriTooLong { .. } => c(StatusCode::URI_TOO_LONG, "uri_too_long", false),
            HeadersTooLarge { .. } => c(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", false),
            Overloaded => c(StatusCode::SERVICE_UNAVAILABLE, "overloaded", true),
            RequestTimeout => c(StatusCode::SERVICE_UNAVAILABLE, "request_timeout", true),
            RateLimited { .. } => c(StatusCode::TOO_MANY_REQUESTS, "rate_limited", true),
            UpstreamTimeout => c(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", true),
            UpstreamUnavailable { .. } => c(StatusCode::BAD_GATEWAY, "upstream_unavailable", true),
            UpstreamResponseTooLarge { .. } => c(StatusCode::BAD_GATEWAY, "upstream_response_too_large", false),
            SettlementFailed(_) => c(StatusCode::PAYMENT_REQUIRED, "settlement_failed", true),
            SettlementUnavailable(_) => c(StatusCode::SERVICE_UNAVAILABLE, "settlement_unavailable", true),
            EntryReleased => c(StatusCode::SERVICE_UNAVAILABLE, "entry_released", true),
            NotReady { .. } => c(StatusCode::SERVICE_UNAVAILABLE, "settlement_unavailable", true),
            UpstreamCredentialRejected { .. } => c(StatusCode::BAD_GATEWAY, "upstream_credential_rejected", false),
            DeferredAdmission(crate::admission::Refusal::PayerExposure) => {
                c(StatusCode::SERVICE_UNAVAILABLE, "deferred_payer_exposure", true)
            }
            DeferredAdmission(_) => c(StatusCode::SERVICE_UNAVAILABLE, "deferred_backlog_full", true),
            Ledger(MeteringError::PolicyDenied(d)) => c(StatusCode::FORBIDDEN, d.code(), false),
            Ledger(e) if e.is_retryable() => c(StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable", true),
            Ledger(_) => c(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", false),
            ReceiptNotFound => c(StatusCode::NOT_FOUND, "receipt_not_found", false),
            PolicyDenied(d) => c(StatusCode::FORBIDDEN, d.code(), false),
            CredentialUnavailable => c(StatusCode::SERVICE_UNAVAILABLE, "credential_unavailable", true),
            AdminUnauthorized => c(StatusCode::UNAUTHORIZED, "admin_unauthorized", false),
            AdminForbidden { .. } => c(StatusCode::FORBIDDEN, "admin_forbidden", false),
            AdminInvalid { .. } => c(StatusCode::BAD_REQUEST, "invalid_request", false),
            AdminUpstreamRefused(_) => c(StatusCode::BAD_REQUEST, "upstream_refused", false),
            AdminNotFound { .. } => c(StatusCode::NOT_FOUND, "not_found", false),
            AdminUnavailable(_) => c(StatusCode::CONFLICT, "not_configured", false),
            DiscoveryQueryInvalid { .. } => c(StatusCode::BAD_REQUEST, "invalid_discovery_query", false),
            Internal(_) => c(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", false),
        }
    }

    /// A message safe to show the client (no internal detail).
    fn public_message(&self) -> String {
        use GatewayError::*;
        match self {
            Verify(e) if e.fault() == Fault::Client => e.to_string(),
            Verify(e) if e.fault() == Fault::Chain => "the chain could not be reached; retry later".to_owned(),
            Verify(_) | Internal(_) => "the gateway is misconfigured; the operator has been told".to_owned(),
            Ledger(MeteringError::PolicyDenied(d)) => format!("wallet policy: {d}"),
            Ledger(_) => "the ledger is unavailable; nothing was charged, retry later".to_owned(),
            UpstreamUnavailable { .. } => "the upstream could not be reached; nothing was charged".to_owned(),
            SettlementFailed(_) => "settlement failed; nothing was charged".to_owned(),
            EntryReleased => {
                "the call took longer than the gateway's recovery grace period; nothing was charged, retry".to_owned()
            }
            SettlementUnavailable(_) => {
                "settlement is unavailable right now; nothing was charged and this authorization will not be used; \
                 retry later"
                    .to_owned()
            }
            NotReady { reason, receipt: Some(_), .. } => format!(
                "settlement is unavailable right now ({reason}); nothing was forwarded or charged and this \
                 authorization was not used; retry later"
            ),
            NotReady { reason, receipt: None, .. } => {
                format!("settlement is unavailable right now ({reason}); no payment is taken; retry later")
            }
            UpstreamCredentialRejected { .. } => {
                "the upstream refused the provider's credential; nothing was charged; the operator has been told"
                    .to_owned()
            }
            Overloaded => "the gateway is at capacity; nothing was done, retry after Retry-After".to_owned(),
            RateLimited { .. } => "too many requests without a valid payment from this address; a paid request \
                 whose payment verifies does not count; retry after Retry-After"
                .to_owned(),
            other => other.to_string(),
        }
    }

    /// The stable code (for logs, audit and tests).
    pub fn code(&self) -> &'static str {
        self.class().code
    }

    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        self.class().status
    }

    /// The x402 receipt the answer carries, if any.
    pub fn receipt(&self) -> Option<&SettleResponse> {
        match self {
            GatewayError::SettlementFailed(r) | GatewayError::SettlementUnavailable(r) => Some(r),
            GatewayError::NotReady { receipt: Some(r), .. }
            | GatewayError::PaymentAlreadyProcessed { receipt: Some(r), .. } => Some(r),
            _ => None,
        }
    }

    /// Turns the error into a response. `challenge` is the route's offer, attached to 402s.
    pub fn rescue(self, challenge: Option<&Challenge>) -> Response {
        use GatewayError::*;
        let class = self.class();
        let message = self.public_message();
        if matches!(self, PaymentRequired) {
            // A 402 to an unpaid request is the protocol's first step, not a refusal: every
            // agent's first call gets one, so it is logged at DEBUG only.
            tracing::debug!(code = class.code, "challenge issued");
        } else if matches!(self, Overloaded | RequestTimeout | RateLimited { .. } | HeadersTooLarge { .. }) {
            // The listener's limits: counted in `tollgate_requests_limited`; a line each would
            // turn a flood into a flood of log lines.
            tracing::debug!(code = class.code, error = %self, "request limited");
        } else if class.status.is_server_error() {
            tracing::error!(code = class.code, error = %self, "request failed");
        } else {
            tracing::info!(code = class.code, error = %self, "request refused");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let GatewayError::NotReady { retry_after_s, .. } | GatewayError::RateLimited { retry_after_s } = &self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
        } else if class.retry_safe && matches!(self, PaymentInFlight) {
            // The first delivery of this payment is still running: ask again shortly.
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        } else if class.retry_safe && class.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let GatewayError::SettlementFailed(receipt) | GatewayError::SettlementUnavailable(receipt) = &self {
            crate::challenge::attach_receipt(&mut headers, receipt);
        }
        if let GatewayError::NotReady { receipt: Some(receipt), .. } = &self {
            crate::challenge::attach_receipt(&mut headers, receipt);
        }
        if let GatewayError::PaymentAlreadyProcessed { entry, receipt } = &self {
            if let Some(receipt) = receipt {
                crate::challenge::attach_receipt(&mut headers, receipt);
            }
            if let Ok(v) = HeaderValue::from_str(entry.as_str()) {
                headers.insert(header::HeaderName::from_static("tollgate-receipt"), v);
            }
            let body = json!({
                "error": { "code": class.code, "message": message, "retrySafe": class.retry_safe,
                    "entry": entry.as_str(), "receiptUrl": format!("/receipts/{entry}") }
            });
            return (class.status, headers, axum::Json(body)).into_response();
        }
        match (class.status, challenge) {
            (StatusCode::PAYMENT_REQUIRED, Some(ch)) => ch.response(class.code, &message, headers),
            _ => {
                let body = json!({
                    "error": { "code": class.code, "message": message, "retrySafe": class.retry_safe }
                });
                (class.status, headers, axum::Json(body)).into_response()
            }
        }
    }
}

impl From<MeteringError> for GatewayError {
    fn from(e: MeteringError) -> Self {
        match e {
            MeteringError::PolicyDenied(d) => GatewayError::PolicyDenied(d),
            other => GatewayError::Ledger(other),
        }
    }
}
