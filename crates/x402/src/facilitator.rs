//! Facilitator API bodies (`/verify`, `/settle`, `/supported`), the settlement receipt, and
//! the discovery ("Bazaar") listing.

use std::collections::BTreeMap;

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{PaymentPayload, hexser, v1, v2};

/// An offer in either version's shape (a facilitator request may carry either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnyRequirements {
    /// v2 shape (`amount`).
    V2(v2::PaymentRequirements),
    /// v1 shape (`maxAmountRequired`, `resource`).
    V1(v1::PaymentRequirements),
}

impl AnyRequirements {
    /// The offer in v2 form.
    pub fn to_v2(&self) -> v2::PaymentRequirements {
        match self {
            AnyRequirements::V2(r) => r.clone(),
            AnyRequirements::V1(r) => r.to_v2(),
        }
    }
}

/// Body of `POST /verify` and `POST /settle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest {
    /// 1 or 2.
    pub x402_version: u8,
    /// The client's payment.
    pub payment_payload: PaymentPayload,
    /// The offer to verify against.
    pub payment_requirements: AnyRequirements,
}

/// Answer of `POST /verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the payment would settle.
    pub is_valid: bool,
    /// Stable reason code when it would not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// The payer, when known.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_address")]
    pub payer: Option<Address>,
}

/// The settlement receipt (`PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`, and `/settle`'s
/// answer). Clients require `transaction` and `network` even on failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether the transfer happened.
    pub success: bool,
    /// Stable reason code on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// The payer, when known.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_address")]
    pub payer: Option<Address>,
    /// Transaction hash, `""` when there is none.
    pub transaction: String,
    /// The network in the version's spelling (CAIP-2 for v2, name for v1).
    pub network: String,
}

/// One `(version, scheme, network)` a facilitator supports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    /// 1 or 2.
    pub x402_version: u8,
    /// `exact`.
    pub scheme: String,
    /// CAIP-2 for v2, name for v1.
    pub network: String,
}

/// Answer of `GET /supported`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SupportedResponse {
    /// Every concrete kind (official servers match them exactly, so no wildcards).
    pub kinds: Vec<SupportedKind>,
    /// Extension names.
    #[serde(default)]
    pub extensions: Vec<String>,
    /// Settlement signer addresses per CAIP-2 family, e.g. `"eip155:*"`.
    #[serde(default)]
    pub signers: BTreeMap<String, Vec<String>>,
}

/// One resource in the discovery list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryItem {
    /// The resource URL.
    pub resource: String,
    /// Always `http` here.
    #[serde(rename = "type")]
    pub kind: String,
    /// Protocol version of `accepts`.
    pub x402_version: u8,
    /// The offers.
    pub accepts: Vec<v2::PaymentRequirements>,
    /// RFC 3339 time of the last change.
    pub last_updated: String,
    /// Free-form description of inputs and outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// Paging of the discovery list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pagination {
    /// Page size.
    pub limit: u64,
    /// Items skipped.
    pub offset: u64,
    /// Items in all.
    pub total: u64,
}

/// Answer of `GET /discovery/resources`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryList {
    /// 2.
    pub x402_version: u8,
    /// This page.
    pub items: Vec<DiscoveryItem>,
    /// Where this page is.
    pub pagination: Pagination,
}

mod opt_address {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &Option<Address>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => hexser::address::serialize(a, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "hexser::address")] Address);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}
