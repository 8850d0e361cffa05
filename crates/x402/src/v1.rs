//! Protocol version 1 objects: the challenge is the 402's JSON body, the payment travels in
//! `X-PAYMENT`, the receipt in `X-PAYMENT-RESPONSE`; networks are names (`base`).

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::exact::ExactEvmPayload;
use crate::network::v1_name;
use crate::{DecimalU256, Network, WireError, hexser, v2};

/// The protocol version number these types carry.
pub const VERSION: u8 = 1;

/// One v1 offer. Unlike v2 it names the resource itself and calls the price
/// `maxAmountRequired`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// Always `exact` for offers tollgate makes.
    pub scheme: String,
    /// The chain, written as its v1 name.
    #[serde(with = "v1_name")]
    pub network: Network,
    /// Price in atomic units (tollgate requires exactly this value).
    pub max_amount_required: DecimalU256,
    /// The resource URL.
    pub resource: String,
    /// Human description (the v1 client requires the field, possibly empty).
    #[serde(default)]
    pub description: String,
    /// Media type of the paid response.
    #[serde(default)]
    pub mime_type: String,
    /// JSON schema of the response; the v1 client rejects `null`, so it is omitted when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// The payee.
    #[serde(with = "hexser::address")]
    pub pay_to: Address,
    /// How long the server is willing to take to settle, in seconds.
    pub max_timeout_seconds: u64,
    /// The token contract.
    #[serde(with = "hexser::address")]
    pub asset: Address,
    /// EIP-712 domain `name` and `version`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl PaymentRequirements {
    /// The v1 form of a v2 offer for `resource`. Fails when the chain has no v1 name.
    pub fn from_v2(req: &v2::PaymentRequirements, resource: &v2::ResourceInfo) -> Result<Self, WireError> {
        if req.network.v1_name().is_none() {
            return Err(WireError::NoV1Name { chain_id: req.network.chain_id });
        }
        Ok(PaymentRequirements {
            scheme: req.scheme.clone(),
            network: req.network,
            max_amount_required: req.amount,
            resource: resource.url.clone(),
            description: resource.description.clone().unwrap_or_default(),
            mime_type: resource.mime_type.clone().unwrap_or_default(),
            output_schema: None,
            pay_to: req.pay_to,
            max_timeout_seconds: req.max_timeout_seconds,
            asset: req.asset,
            extra: req.extra.clone(),
        })
    }

    /// The v2 form of this offer.
    pub fn to_v2(&self) -> v2::PaymentRequirements {
        v2::PaymentRequirements {
            scheme: self.scheme.clone(),
            network: self.network,
            amount: self.max_amount_required,
            asset: self.asset,
            pay_to: self.pay_to,
            max_timeout_seconds: self.max_timeout_seconds,
            extra: self.extra.clone(),
        }
    }
}

/// The v1 402 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// Always 1.
    pub x402_version: u8,
    /// Why payment is required or why the last one was refused.
    pub error: String,
    /// The offers.
    pub accepts: Vec<PaymentRequirements>,
}

/// The signed payment a v1 client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// Always 1.
    pub x402_version: u8,
    /// The scheme chosen.
    pub scheme: String,
    /// The chain chosen, as a v1 name.
    #[serde(with = "v1_name")]
    pub network: Network,
    /// The signed authorization.
    pub payload: ExactEvmPayload,
}
