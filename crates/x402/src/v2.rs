//! Protocol version 2 objects: the challenge travels in the `PAYMENT-REQUIRED` header, the
//! payment in `PAYMENT-SIGNATURE`, the receipt in `PAYMENT-RESPONSE`; networks are CAIP-2.

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::exact::ExactEvmPayload;
use crate::{DecimalU256, Network, hexser};

/// The protocol version number these types carry.
pub const VERSION: u8 = 2;

/// One offer: "pay `amount` of `asset` to `pay_to` on `network`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// Always `exact` for offers tollgate makes.
    pub scheme: String,
    /// The chain.
    pub network: Network,
    /// Exact price in the asset's atomic units.
    pub amount: DecimalU256,
    /// The token contract (also the EIP-712 `verifyingContract`).
    #[serde(with = "hexser::address")]
    pub asset: Address,
    /// The payee.
    #[serde(with = "hexser::address")]
    pub pay_to: Address,
    /// How long the server is willing to take to settle, in seconds.
    pub max_timeout_seconds: u64,
    /// Scheme data; for `exact` on EVM it carries the EIP-712 domain `name` and `version`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl PaymentRequirements {
    /// The EIP-712 domain name and version from `extra`, when both are strings.
    pub fn eip712_name_version(&self) -> Option<(&str, &str)> {
        let name = self.extra.get("name")?.as_str()?;
        let version = self.extra.get("version")?.as_str()?;
        Some((name, version))
    }
}

/// What the payment is for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// The resource URL.
    pub url: String,
    /// Human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Media type of the paid response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// The service hosting the resource (bazaar extension: at most 32 printable ASCII
    /// characters; facilitators drop an invalid value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Topical tags of the service (bazaar extension: at most 5, each at most 32 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// An absolute `http(s)` URL of the service's icon (bazaar extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
}

/// The 402 challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// Always 2.
    pub x402_version: u8,
    /// Why the previous attempt, if any, was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The resource being sold.
    pub resource: ResourceInfo,
    /// The offers, in order of the server's preference.
    pub accepts: Vec<PaymentRequirements>,
    /// Protocol extensions (e.g. `bazaar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}

/// The signed payment a v2 client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// Always 2.
    pub x402_version: u8,
    /// The resource the client believes it pays for (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// The offer the client chose, echoed back.
    pub accepted: PaymentRequirements,
    /// The signed authorization.
    pub payload: ExactEvmPayload,
    /// Protocol extensions (e.g. `payment-identifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}
