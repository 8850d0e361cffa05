//! The errors of this crate: malformed wire input, and a payment that matches no offer.
//!
//! Variants carry what a caller needs to log; none carries a secret (there are none here).

/// Input that could not be decoded into an x402 object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The header value is longer than the configured cap.
    #[error("header is {len_bytes} bytes, more than the {max_bytes} allowed")]
    TooLarge {
        /// Length of the raw header value.
        len_bytes: usize,
        /// The cap it exceeded.
        max_bytes: usize,
    },
    /// The header value is not standard base64.
    #[error("header is not valid base64")]
    Base64,
    /// The decoded bytes are not the JSON object expected.
    #[error("malformed JSON: {reason}")]
    Json {
        /// serde_json's description, which names the offending field and position.
        reason: String,
    },
    /// `x402Version` is not one this crate speaks.
    #[error("unsupported x402Version {version}")]
    UnsupportedVersion {
        /// The version the client sent.
        version: u64,
    },
    /// A field required by the declared version is absent.
    #[error("missing field `{field}` for x402Version {version}")]
    MissingField {
        /// Wire name of the field.
        field: &'static str,
        /// The declared version.
        version: u8,
    },
    /// A network id that is neither CAIP-2 `eip155:<chain id>` nor a known v1 name.
    #[error("unknown network `{network}`")]
    UnknownNetwork {
        /// What was sent.
        network: String,
    },
    /// The value cannot be written in its protocol version.
    #[error("cannot encode: {reason}")]
    Encode {
        /// serde_json's description.
        reason: String,
    },
    /// A network that has no v1 name cannot be offered to v1 clients.
    #[error("chain {chain_id} has no x402 v1 network name")]
    NoV1Name {
        /// The chain id without a name.
        chain_id: u64,
    },
}

impl WireError {
    pub(crate) fn json(err: &serde_json::Error) -> Self {
        WireError::Json { reason: err.to_string() }
    }
}

/// A well-formed payment that does not correspond to anything the server offered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// The payment names a scheme other than `exact`.
    #[error("unsupported scheme `{scheme}`")]
    UnsupportedScheme {
        /// The scheme the client named.
        scheme: String,
    },
    /// No offer is on the network the payment names.
    #[error("network {network} is not offered for this resource")]
    NetworkNotOffered {
        /// CAIP-2 id of the payment's network.
        network: String,
    },
    /// A v2 `accepted` echo differs from every offer in a compared field.
    #[error("the accepted requirement matches no offer (first difference: {field})")]
    AcceptedMismatch {
        /// Wire name of the first field that differed from the closest offer.
        field: &'static str,
    },
}
