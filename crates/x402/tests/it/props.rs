//! Property tests: decimal parsing, header decoding of arbitrary bytes, and the header round
//! trip of arbitrary well-formed payments.

use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{Map, Value};
use tollgate_x402::{
    Address, Authorization, B256, Bytes, DecimalU256, ExactEvmPayload, Network, PAYMENT_HEADER_BYTES_MAX,
    PaymentPayload, U256, v1, v2,
};

use crate::{fixture, str_at};

/// Chain ids that have a v1 name (a v1 payment can only be encoded on these).
const V1_CHAIN_IDS: [u64; 10] = [8453, 84532, 43114, 43113, 137, 80002, 1329, 1328, 4689, 3338];

fn u256() -> impl Strategy<Value = U256> {
    // Mostly uniform 256-bit values, plus small ones and the edges, which uniform sampling
    // would almost never hit.
    prop_oneof![
        3 => proptest::array::uniform32(any::<u8>()).prop_map(U256::from_be_bytes),
        2 => any::<u64>().prop_map(U256::from),
        1 => Just(U256::ZERO),
        1 => Just(U256::MAX),
    ]
}

fn address() -> impl Strategy<Value = Address> {
    proptest::array::uniform20(any::<u8>()).prop_map(Address::from)
}

fn authorization() -> impl Strategy<Value = Authorization> {
    (address(), address(), u256(), u256(), u256(), proptest::array::uniform32(any::<u8>())).prop_map(
        |(from, to, value, valid_after, valid_before, nonce)| Authorization {
            from,
            to,
            value: value.into(),
            valid_after: valid_after.into(),
            valid_before: valid_before.into(),
            nonce: B256::from(nonce),
        },
    )
}

fn exact_payload() -> impl Strategy<Value = ExactEvmPayload> {
    // 65 bytes for a plain wallet; anything up to a few hundred for smart wallets.
    let signature =
        prop_oneof![proptest::collection::vec(any::<u8>(), 65), proptest::collection::vec(any::<u8>(), 0..400)];
    (signature, authorization())
        .prop_map(|(signature, authorization)| ExactEvmPayload { signature: Bytes::from(signature), authorization })
}

fn json_map() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(".{0,12}", ".{0,24}", 0..4)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
}

fn v2_requirements() -> impl Strategy<Value = v2::PaymentRequirements> {
    ("[a-z]{1,8}", 1..=u64::MAX, u256(), address(), address(), any::<u64>(), json_map()).prop_map(
        |(scheme, chain_id, amount, asset, pay_to, max_timeout_seconds, extra)| v2::PaymentRequirements {
            scheme,
            network: Network::new(chain_id),
            amount: amount.into(),
            asset,
            pay_to,
            max_timeout_seconds,
            extra,
        },
    )
}

fn resource() -> impl Strategy<Value = v2::ResourceInfo> {
    (".{0,40}", proptest::option::of(".{0,40}"), proptest::option::of("[a-z]{1,10}/[a-z+.-]{1,20}")).prop_map(
        |(url, description, mime_type)| v2::ResourceInfo { url, description, mime_type, ..Default::default() },
    )
}

fn payment() -> impl Strategy<Value = PaymentPayload> {
    let v1 = ("[a-z]{1,8}", proptest::sample::select(&V1_CHAIN_IDS[..]), exact_payload()).prop_map(
        |(scheme, chain_id, payload)| {
            PaymentPayload::V1(v1::PaymentPayload {
                x402_version: v1::VERSION,
                scheme,
                network: Network::new(chain_id),
                payload,
            })
        },
    );
    let v2 = (proptest::option::of(resource()), v2_requirements(), exact_payload(), proptest::option::of(json_map()))
        .prop_map(|(resource, accepted, payload, extensions)| {
            PaymentPayload::V2(v2::PaymentPayload {
                x402_version: v2::VERSION,
                resource,
                accepted,
                payload,
                extensions,
            })
        });
    prop_oneof![v1, v2]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // Goal: any 256-bit value written in decimal parses back to itself, and serialises as the
    // same decimal string.
    #[test]
    fn decimal_u256_round_trips(n in u256()) {
        let text = n.to_string();
        let parsed: DecimalU256 = text.parse().unwrap();
        prop_assert_eq!(parsed, DecimalU256(n));
        prop_assert_eq!(parsed.to_string(), text.clone());
        prop_assert_eq!(serde_json::to_value(parsed).unwrap(), Value::String(text.clone()));
        prop_assert_eq!(serde_json::from_value::<DecimalU256>(Value::String(text)).unwrap(), parsed);
    }

    // Goal: a string holding any character other than an ASCII digit is refused as not
    // decimal (never as an overflow, never parsed).
    #[test]
    fn decimal_u256_refuses_non_digits(
        before in "[0-9]{0,40}",
        bad in any::<char>().prop_filter("not an ASCII digit", |c| !c.is_ascii_digit()),
        after in "[0-9]{0,40}",
    ) {
        let text = format!("{before}{bad}{after}");
        let err = text.parse::<DecimalU256>().unwrap_err();
        prop_assert_eq!(err.to_string(), "expected a string of decimal digits");
        prop_assert!(serde_json::from_value::<DecimalU256>(Value::String(text)).is_err());
    }

    // Goal: arbitrary bytes as a payment header never panic, whatever the cap.
    #[test]
    fn arbitrary_header_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..2048), cap in 0usize..4096) {
        let _ = PaymentPayload::from_header(&raw, PAYMENT_HEADER_BYTES_MAX);
        let _ = PaymentPayload::from_header(&raw, cap);
    }

    // Goal: arbitrary bytes behind valid base64 (so they reach the JSON parser) never panic.
    #[test]
    fn arbitrary_json_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let header = base64::engine::general_purpose::STANDARD.encode(&raw);
        let _ = PaymentPayload::from_header(header.as_bytes(), PAYMENT_HEADER_BYTES_MAX);
    }

    // Goal: a real client header with one byte of its JSON replaced (so most of the object is
    // well-formed and the decoder gets deep) never panics.
    #[test]
    fn mutated_fixture_headers_never_panic(
        which in proptest::sample::select(&["v2-base", "v1-base", "v2-multi-accepts"][..]),
        at in any::<proptest::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let raw = str_at(&fixture(which), "/paymentHeaderRaw").to_owned();
        let mut json = base64::engine::general_purpose::STANDARD.decode(raw).unwrap();
        let i = at.index(json.len());
        json[i] = byte;
        let header = base64::engine::general_purpose::STANDARD.encode(&json);
        let _ = PaymentPayload::from_header(header.as_bytes(), PAYMENT_HEADER_BYTES_MAX);
    }

    // Goal: any well-formed payment, v1 or v2, survives `to_header` then `from_header`
    // unchanged, and the header is standard padded base64.
    #[test]
    fn payments_round_trip_through_the_header(p in payment()) {
        let header = p.to_header().unwrap();
        prop_assert!(!header.is_empty());
        prop_assert!(header.len() % 4 == 0);
        prop_assert!(header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='));
        prop_assert!(header.len() <= PAYMENT_HEADER_BYTES_MAX);
        let back = PaymentPayload::from_header(header.as_bytes(), PAYMENT_HEADER_BYTES_MAX);
        prop_assert_eq!(back, Ok(p));
    }

    // Goal: `Authorization` alone round-trips through its JSON form, with EIP-55 addresses and
    // decimal strings on the wire.
    #[test]
    fn authorization_json_round_trips(a in authorization()) {
        let json = serde_json::to_value(&a).unwrap();
        prop_assert_eq!(json["from"].as_str().unwrap(), a.from.to_checksum(None));
        prop_assert_eq!(json["value"].as_str().unwrap(), a.value.to_string());
        prop_assert_eq!(serde_json::from_value::<Authorization>(json).unwrap(), a);
    }
}
