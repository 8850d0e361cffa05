//! Integration tests of the x402 wire types against payloads captured from the official npm
//! clients (`tests/fixtures/*.json`), plus hand-made malformed input and property tests.
//!
//! Nothing here does IO beyond reading the fixture files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

mod facilitator;
mod fixtures_round_trip;
mod header_edges;
mod matching;
mod props;
mod v1_conversion;

use std::path::Path;

use serde_json::Value;
use tollgate_x402::{Network, PAYMENT_HEADER_BYTES_MAX, PaymentPayload, WireError, encode_header, v1, v2};

/// A captured client scenario: fixture file stem, protocol version, and the network the
/// client chose.
pub struct Scenario {
    pub name: &'static str,
    pub version: u8,
    pub network: Network,
}

/// Every scenario file that holds one complete paid exchange.
pub const SCENARIOS: [Scenario; 6] = [
    Scenario { name: "v2-base", version: 2, network: Network::BASE },
    Scenario { name: "v2-base-sepolia", version: 2, network: Network::BASE_SEPOLIA },
    Scenario { name: "v2-custom-asset-31337", version: 2, network: Network::new(31337) },
    Scenario { name: "v2-multi-accepts", version: 2, network: Network::BASE_SEPOLIA },
    Scenario { name: "v1-base", version: 1, network: Network::BASE },
    Scenario { name: "v1-base-sepolia", version: 1, network: Network::BASE_SEPOLIA },
];

/// A fixture file, parsed.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The string at a JSON pointer of a fixture, e.g. `/paymentHeaderRaw`.
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no string at {pointer}"))
}

/// The offers of a scenario's challenge, in v2 form whatever the version.
pub fn offers(name: &str) -> Vec<v2::PaymentRequirements> {
    let challenge = fixture(name)["challenge"]["json"].clone();
    if challenge["x402Version"] == 1 {
        let v1: v1::PaymentRequired = serde_json::from_value(challenge).unwrap();
        v1.accepts.iter().map(v1::PaymentRequirements::to_v2).collect()
    } else {
        let v2: v2::PaymentRequired = serde_json::from_value(challenge).unwrap();
        v2.accepts
    }
}

/// The JSON payment a scenario's client sent.
pub fn payment_json(name: &str) -> Value {
    fixture(name)["paymentPayload"].clone()
}

/// Decodes a JSON value the way a gateway decodes a payment header: base64 around the JSON,
/// through `PaymentPayload::from_header` with the default cap.
pub fn decode(json: &Value) -> Result<PaymentPayload, WireError> {
    PaymentPayload::from_header(encode_header(json).unwrap().as_bytes(), PAYMENT_HEADER_BYTES_MAX)
}

/// `v` with the value at `pointer` replaced by `new`, or added when the parent object
/// lacks that key.
pub fn with(mut v: Value, pointer: &str, new: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = v.pointer_mut(parent).unwrap_or_else(|| panic!("no value at {parent}"));
    match parent {
        Value::Object(map) => {
            map.insert(key.to_owned(), new);
        }
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = new,
        other => panic!("cannot set {pointer} inside {other}"),
    }
    v
}

/// `v` without the object key at `pointer` (the key must exist).
pub fn without(mut v: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let removed = v.pointer_mut(parent).and_then(Value::as_object_mut).and_then(|o| o.remove(key));
    assert!(removed.is_some(), "no key at {pointer}");
    v
}

/// `v` with every `0x` string lower-cased. We re-emit addresses with their EIP-55 checksum
/// and other hex in lower case, while clients may send any letter case; comparing after
/// this keeps "same value" separate from "same spelling".
pub fn lowercase_hex(v: &Value) -> Value {
    match v {
        Value::String(s) if s.starts_with("0x") => Value::String(s.to_ascii_lowercase()),
        Value::Array(items) => Value::Array(items.iter().map(lowercase_hex).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), lowercase_hex(v))).collect()),
        other => other.clone(),
    }
}

/// `v` with every `0x` string's hex digits upper-cased (the prefix stays `0x`).
pub fn uppercase_hex(v: &Value) -> Value {
    match v {
        Value::String(s) if s.starts_with("0x") => Value::String(format!("0x{}", s[2..].to_ascii_uppercase())),
        Value::Array(items) => Value::Array(items.iter().map(uppercase_hex).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), uppercase_hex(v))).collect()),
        other => other.clone(),
    }
}
