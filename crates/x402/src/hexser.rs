//! Strict serde for hex fields: `0x`-prefixed strings only.
//!
//! alloy's own impls also accept byte arrays and unprefixed hex; on the wire we accept only
//! what the reference clients send, so a malformed payment fails at decode with a clear
//! field name instead of being half-understood.

use std::fmt;

use alloy_primitives::{Address, B256, Bytes};
use serde::{Deserializer, Serializer, de};

fn strip_0x<E: de::Error>(v: &str) -> Result<&str, E> {
    let digits = v
        .strip_prefix("0x")
        .or_else(|| v.strip_prefix("0X"))
        .ok_or_else(|| E::custom("expected a 0x-prefixed hex string"))?;
    // alloy's decoder would strip a second prefix; "0x0x.." is not hex.
    if digits.starts_with("0x") || digits.starts_with("0X") {
        return Err(E::custom("expected hex digits after 0x"));
    }
    Ok(digits)
}

struct HexVisitor<F>(&'static str, F);

impl<T, F: FnOnce(&str) -> Result<T, String>> de::Visitor<'_> for HexVisitor<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(strip_0x(v)?).map_err(E::custom)
    }
}

fn decode_fixed<const N: usize>(hex_digits: &str) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    if hex_digits.len() != N * 2 {
        return Err(format!("expected {} hex digits, got {}", N * 2, hex_digits.len()));
    }
    alloy_primitives::hex::decode_to_slice(hex_digits, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// `Address` as a 0x-prefixed, 40-digit hex string (any letter case; checksums are not
/// enforced because clients echo addresses in whatever case they were given).
pub mod address {
    use super::*;
    /// Serializes with the EIP-55 checksum.
    pub fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&a.to_checksum(None))
    }
    /// Deserializes strictly.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        d.deserialize_str(HexVisitor("a 0x-prefixed 20-byte hex address", |h: &str| {
            decode_fixed::<20>(h).map(Address::from)
        }))
    }
}

/// `B256` as a 0x-prefixed, 64-digit hex string.
pub mod b256 {
    use super::*;
    /// Serializes as lower-case hex.
    pub fn serialize<S: Serializer>(b: &B256, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(b)
    }
    /// Deserializes strictly.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<B256, D::Error> {
        d.deserialize_str(HexVisitor("a 0x-prefixed 32-byte hex string", |h: &str| {
            decode_fixed::<32>(h).map(B256::from)
        }))
    }
}

/// `Bytes` as a 0x-prefixed hex string of even length.
pub mod bytes {
    use super::*;
    /// Serializes as lower-case hex.
    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(b)
    }
    /// Deserializes strictly.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        d.deserialize_str(HexVisitor("a 0x-prefixed hex string", |h: &str| {
            alloy_primitives::hex::decode(h).map(Bytes::from).map_err(|e| e.to_string())
        }))
    }
}
