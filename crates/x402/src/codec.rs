//! The header codec: standard base64 (with padding) around compact JSON.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::WireError;

/// Default cap on an encoded payment header. A plain-wallet payment is about 700 bytes; an
/// ERC-6492-wrapped smart-wallet signature can reach a few KiB.
pub const PAYMENT_HEADER_BYTES_MAX: usize = 16 * 1024;

/// The reference SDKs encode with the standard alphabet and padding. We emit exactly that,
/// and accept a value whose padding was stripped by some proxy, since it is unambiguous.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_encode_padding(true).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes a value as `base64(JSON)` for an x402 header. Fails only for values that
/// cannot be written in their protocol version, such as a v1 object on a chain without a
/// v1 network name.
pub fn encode_header<T: Serialize>(value: &T) -> Result<String, WireError> {
    let json = serde_json::to_vec(value).map_err(|e| WireError::Encode { reason: e.to_string() })?;
    Ok(ENGINE.encode(json))
}

/// Decodes an x402 header value into `T`, refusing values longer than `max_bytes` before
/// doing any work on them. Surrounding ASCII whitespace is ignored.
pub fn decode_header<T: DeserializeOwned>(raw: &[u8], max_bytes: usize) -> Result<T, WireError> {
    if raw.len() > max_bytes {
        return Err(WireError::TooLarge { len_bytes: raw.len(), max_bytes });
    }
    let json = ENGINE.decode(raw.trim_ascii()).map_err(|_| WireError::Base64)?;
    serde_json::from_slice(&json).map_err(|e| WireError::json(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DecimalU256;

    // Goal: the size cap is checked before decoding, and bad base64 / bad JSON are told apart.
    #[test]
    fn rejects_oversize_base64_and_json_errors() {
        let big = vec![b'A'; 100];
        assert_eq!(decode_header::<DecimalU256>(&big, 99), Err(WireError::TooLarge { len_bytes: 100, max_bytes: 99 }));
        assert_eq!(decode_header::<DecimalU256>(b"%%%", 99), Err(WireError::Base64));
        let not_json = ENGINE.encode(b"{nope");
        assert!(matches!(decode_header::<DecimalU256>(not_json.as_bytes(), 99), Err(WireError::Json { .. })));
    }

    // Goal: encode emits padded standard base64; decode accepts it padded or not.
    #[test]
    fn round_trips_with_and_without_padding() {
        let v = DecimalU256::from(7u64);
        let enc = encode_header(&v).unwrap();
        assert_eq!(enc, "Ijci");
        let enc = encode_header(&"ab").unwrap();
        assert_eq!(enc, "ImFiIg==");
        assert_eq!(decode_header::<String>(b"ImFiIg==", 64), Ok("ab".to_owned()));
        assert_eq!(decode_header::<String>(b"ImFiIg", 64), Ok("ab".to_owned()));
        assert_eq!(decode_header::<String>(b" ImFiIg== ", 64), Ok("ab".to_owned()));
    }
}
