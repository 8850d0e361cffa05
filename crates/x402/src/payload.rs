//! The signed payment, whichever protocol version carried it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::exact::ExactEvmPayload;
use crate::{Network, WireError, codec, v1, v2};

/// A payment as received, v1 or v2.
// One value exists per request and is passed by reference; boxing v2 would only add an
// allocation to the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentPayload {
    /// From an `X-PAYMENT` header.
    V1(v1::PaymentPayload),
    /// From a `PAYMENT-SIGNATURE` header.
    V2(v2::PaymentPayload),
}

/// Both versions' fields in one pass, so a header is parsed once whatever its version.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyVersion {
    x402_version: u64,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    network: Option<String>,
    #[serde(default)]
    resource: Option<v2::ResourceInfo>,
    #[serde(default)]
    accepted: Option<v2::PaymentRequirements>,
    payload: ExactEvmPayload,
    #[serde(default)]
    extensions: Option<Map<String, Value>>,
}

impl TryFrom<AnyVersion> for PaymentPayload {
    type Error = WireError;
    fn try_from(raw: AnyVersion) -> Result<Self, WireError> {
        match raw.x402_version {
            1 => Ok(PaymentPayload::V1(v1::PaymentPayload {
                x402_version: v1::VERSION,
                scheme: raw.scheme.ok_or(WireError::MissingField { field: "scheme", version: 1 })?,
                network: Network::parse_v1_name(
                    &raw.network.ok_or(WireError::MissingField { field: "network", version: 1 })?,
                )?,
                payload: raw.payload,
            })),
            2 => Ok(PaymentPayload::V2(v2::PaymentPayload {
                x402_version: v2::VERSION,
                resource: raw.resource,
                accepted: raw.accepted.ok_or(WireError::MissingField { field: "accepted", version: 2 })?,
                payload: raw.payload,
                extensions: raw.extensions,
            })),
            version => Err(WireError::UnsupportedVersion { version }),
        }
    }
}

impl PaymentPayload {
    /// Decodes a `PAYMENT-SIGNATURE` or `X-PAYMENT` header value (`base64(JSON)`), refusing
    /// values longer than `max_bytes`.
    pub fn from_header(raw: &[u8], max_bytes: usize) -> Result<Self, WireError> {
        let any: AnyVersion = codec::decode_header(raw, max_bytes)?;
        any.try_into()
    }

    /// Encodes as a header value (fails for a v1 payment on a chain without a v1 name).
    pub fn to_header(&self) -> Result<String, WireError> {
        codec::encode_header(self)
    }

    /// 1 or 2.
    pub fn version(&self) -> u8 {
        match self {
            PaymentPayload::V1(_) => v1::VERSION,
            PaymentPayload::V2(_) => v2::VERSION,
        }
    }

    /// The scheme the client chose.
    pub fn scheme(&self) -> &str {
        match self {
            PaymentPayload::V1(p) => &p.scheme,
            PaymentPayload::V2(p) => &p.accepted.scheme,
        }
    }

    /// The network the client chose.
    pub fn network(&self) -> Network {
        match self {
            PaymentPayload::V1(p) => p.network,
            PaymentPayload::V2(p) => p.accepted.network,
        }
    }

    /// The signed authorization.
    pub fn exact(&self) -> &ExactEvmPayload {
        match self {
            PaymentPayload::V1(p) => &p.payload,
            PaymentPayload::V2(p) => &p.payload,
        }
    }
}

impl Serialize for PaymentPayload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PaymentPayload::V1(p) => p.serialize(s),
            PaymentPayload::V2(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PaymentPayload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AnyVersion::deserialize(d)?.try_into().map_err(serde::de::Error::custom)
    }
}
