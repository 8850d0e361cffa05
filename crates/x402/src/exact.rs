//! The `exact` EVM scheme's signed object: the EIP-3009 authorization and its signature, the
//! part both protocol versions carry unchanged.
//!
//! Owns only the shape; it must not import `payload`, `v1` or `v2` (they import it: the
//! version-specific envelopes wrap this object, never the reverse).

use alloy_primitives::{Address, B256, Bytes};
use serde::{Deserialize, Serialize};

use crate::{DecimalU256, hexser};

/// The EIP-3009 `TransferWithAuthorization` message as the client signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// The payer (the token holder who signed).
    #[serde(with = "hexser::address")]
    pub from: Address,
    /// The payee.
    #[serde(with = "hexser::address")]
    pub to: Address,
    /// Amount in atomic units.
    pub value: DecimalU256,
    /// Unix seconds; the token requires `now > validAfter`.
    pub valid_after: DecimalU256,
    /// Unix seconds; the token requires `now < validBefore`.
    pub valid_before: DecimalU256,
    /// Random 32-byte authorization nonce, single use per payer.
    #[serde(with = "hexser::b256")]
    pub nonce: B256,
}

/// The `payload` object of the `exact` EVM scheme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactEvmPayload {
    /// 65-byte ECDSA signature for a plain wallet; longer for ERC-1271 / ERC-6492 wallets.
    #[serde(with = "hexser::bytes")]
    pub signature: Bytes,
    /// What was signed.
    pub authorization: Authorization,
}
