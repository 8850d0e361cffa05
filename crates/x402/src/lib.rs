//! x402 wire types for the `exact` scheme on EVM chains, protocol versions 1 and 2.
//!
//! This crate owns the *shape* of what crosses the wire: the 402 challenge
//! (`PaymentRequired`), the offers in it (`PaymentRequirements`), the signed payment a
//! client sends back (`PaymentPayload`), the settlement receipt (`SettleResponse`), the
//! facilitator and discovery bodies, the standard-base64 header codec, CAIP-2 network ids
//! with the v1 name table, and the rule that matches a client's `accepted` echo against
//! what the server offered.
//!
//! It must not do IO, know HTTP status codes, talk to a chain, or check signatures: those
//! belong to `tollgate-verifier` and `tollgate-gateway`. Everything here is pure and cheap,
//! so it can sit on the hot path of every paid request.
//!
//! Amounts and times that are decimal strings on the wire are [`DecimalU256`]; anything
//! that does not fit 256 bits, or is not plain ASCII digits, is rejected while parsing.

mod amount;
mod codec;
mod error;
mod exact;
mod hexser;
mod matching;
mod network;
mod payload;

pub mod facilitator;
pub mod v1;
pub mod v2;

pub use alloy_primitives::{Address, B256, Bytes, U256};
pub use amount::{DecimalError, DecimalU256};
/// `extra` key naming an offer's payment flow (x402 v2 §6.1): `upfront` (settle, then serve),
/// `escrow`; absent means the default `authorization` (verify, serve, settle).
pub const PAYMENT_FLOW: &str = "paymentFlow";
pub use codec::{PAYMENT_HEADER_BYTES_MAX, decode_header, encode_header};
pub use error::{MatchError, WireError};
pub use exact::{Authorization, ExactEvmPayload};
pub use matching::find_offer;
pub use network::Network;
pub use payload::PaymentPayload;

/// The only payment scheme tollgate speaks: a one-shot EIP-3009 authorization for an
/// exact amount.
pub const SCHEME_EXACT: &str = "exact";

/// Header names, as they appear on the wire. HTTP header names are case-insensitive; these
/// are the canonical spellings the reference SDKs send.
pub mod headers {
    /// v2 challenge: `base64(JSON PaymentRequired)` on the 402 response.
    pub const PAYMENT_REQUIRED: &str = "PAYMENT-REQUIRED";
    /// v2 payment from the client.
    pub const PAYMENT_SIGNATURE: &str = "PAYMENT-SIGNATURE";
    /// v2 settlement receipt on the paid response.
    pub const PAYMENT_RESPONSE: &str = "PAYMENT-RESPONSE";
    /// v1 payment from the client.
    pub const X_PAYMENT: &str = "X-PAYMENT";
    /// v1 settlement receipt on the paid response.
    pub const X_PAYMENT_RESPONSE: &str = "X-PAYMENT-RESPONSE";
}
