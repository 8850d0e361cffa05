//! The agent's side of x402: an HTTP client that pays `402 Payment Required` challenges with
//! EIP-3009 `TransferWithAuthorization` signatures, under local spend controls, and keeps a
//! persisted record of every authorization it signs.
//!
//! Owns: reading challenges (v2 `PAYMENT-REQUIRED` header, preferred; v1 JSON body),
//! choosing an offer from an allowlist of `(network, asset)` pairs, the spend controls
//! (per call, total, per host, per UTC day, per host per UTC day — checked *before*
//! signing), signing, the retry rules that
//! keep one logical request from paying twice, the spending record on disk
//! ([`SpendStore`]), and loading keys ([`keys`]).
//!
//! Must not: know the gateway's internals, its ledger or any database; read the environment
//! (configuration arrives by value in [`ClientConfig`]; [`keys::signer_from_env`] takes the
//! lookup as an argument); print or return the private key in any error or `Debug` output;
//! follow redirects with a payment header attached.
//!
//! The whole flow of [`PayingClient::send`]:
//!
//! ```text
//! request ──▶ 402? ──no──▶ response (no payment)
//!               │yes
//!               ▼
//!   challenge (v2 header | v1 body) ──▶ first allowed `exact` offer ──none──▶ NoAcceptableRequirement
//!               ▼
//!   store lock: budgets ──over──▶ BudgetExceeded (nothing signed, nothing sent)
//!               ▼
//!   sign EIP-3009, record `signed` (fsync) ──▶ record `sent` (fsync) ──▶ request + payment header
//!               ▼
//!   transport error / 409 in flight ──▶ same header again (bounded, backoff)
//!   402 to a first delivery ──▶ `refused`; fresh authorization if a new one can help
//!   402 after a lost response ──▶ `paid_pending` (in doubt, counted): PaymentOutcomeUnknown
//!   success receipt ──▶ `paid` (or `paid_pending` when settlement is pending/deferred)
//!   403 with an error code and no ledger entry (wallet policy) ──▶ `refused`: PaymentRejected
//!   2xx without a receipt (e.g. a deferred route) ──▶ `paid_pending` (counted)
//!   other status, no success receipt ──▶ `failed` (the server charged nothing)
//! ```
//!
//! [`PayingClient::quote`] is the dry run: the same request, offer choice and budget check,
//! nothing signed.
//!
//! `https` URLs are verified against the Mozilla roots plus any extra CA given in
//! [`ClientConfig::tls`] (rustls, through `tollgate-tls`); a refused certificate is reported
//! as a transport error naming the host and the reason, never the URL.

#![warn(missing_docs)]

mod challenge;
mod client;
mod config;
mod error;
pub mod keys;
mod sign;
mod store;

pub use client::{Paid, PayingClient, Quote, Spent, WouldPay};
pub use config::{AllowedAsset, ClientConfig, Clock, SpendLimits, SystemClock, USDC_BASE, USDC_BASE_SEPOLIA};
pub use error::{Budget, ClientError, Offered};
pub use store::{PaymentRecord, RecordState, SpendStore, utc_day};

pub use alloy_primitives::{Address, B256, U256};
pub use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
pub use reqwest::{Method, StatusCode};
pub use tollgate_tls::ClientTls;
pub use tollgate_x402::Network;
pub use tollgate_x402::facilitator::SettleResponse;
