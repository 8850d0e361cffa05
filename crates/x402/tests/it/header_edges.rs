//! Malformed and unusual payment headers: each is refused with its own `WireError`, none
//! panics, and the harmless variations real proxies introduce are accepted.

use serde_json::{Value, json};
use tollgate_x402::{B256, PAYMENT_HEADER_BYTES_MAX, PaymentPayload, WireError, encode_header};

use crate::{SCENARIOS, decode, fixture, payment_json, str_at, with, without};

fn from_header(raw: &[u8]) -> Result<PaymentPayload, WireError> {
    PaymentPayload::from_header(raw, PAYMENT_HEADER_BYTES_MAX)
}

/// Asserts `json` is refused as malformed JSON whose reason mentions `needle`. Callers edit
/// one field of a client payment that otherwise decodes, so the error is that field's.
#[track_caller]
fn assert_json_error(json: &Value, needle: &str) {
    match decode(json) {
        Err(WireError::Json { reason }) => assert!(reason.contains(needle), "{reason:?} lacks {needle:?}"),
        other => panic!("expected a JSON error mentioning {needle:?}, got {other:?}"),
    }
}

fn fixture_header(name: &str) -> String {
    str_at(&fixture(name), "/paymentHeaderRaw").to_owned()
}

// Goal: the size cap is checked before any decoding: an oversize value is TooLarge even when
// it is not base64, and a value exactly at the cap is decoded.
#[test]
fn oversize_is_refused_before_decoding() {
    let junk = vec![b'%'; PAYMENT_HEADER_BYTES_MAX + 1];
    assert_eq!(
        from_header(&junk),
        Err(WireError::TooLarge { len_bytes: PAYMENT_HEADER_BYTES_MAX + 1, max_bytes: PAYMENT_HEADER_BYTES_MAX })
    );
    let raw = fixture_header("v2-base");
    let len = raw.len();
    assert_eq!(
        PaymentPayload::from_header(raw.as_bytes(), len - 1),
        Err(WireError::TooLarge { len_bytes: len, max_bytes: len - 1 })
    );
    assert!(PaymentPayload::from_header(raw.as_bytes(), len).is_ok());
    // The cap counts the raw value, surrounding whitespace included.
    let padded = format!(" {raw} ");
    assert_eq!(
        PaymentPayload::from_header(padded.as_bytes(), len + 1),
        Err(WireError::TooLarge { len_bytes: len + 2, max_bytes: len + 1 })
    );
}

// Goal: only the standard base64 alphabet is accepted; URL-safe characters and other junk
// are Base64 errors.
#[test]
fn non_standard_base64_is_refused() {
    for bad in [&b"%%%%"[..], b"not base64!", b"eyJ4\x00NDAy", "é".as_bytes(), b"====", b"e", b"ab=c"] {
        assert_eq!(from_header(bad), Err(WireError::Base64), "{bad:?}");
    }
    // "???" and ">>>" encode to "Pz8/" and "Pj4+", so this header holds both '/' and '+'.
    let json = with(payment_json("v2-base"), "/resource/description", json!("???>>>"));
    let standard = encode_header(&json).unwrap();
    assert!(standard.contains('/') && standard.contains('+'));
    assert!(from_header(standard.as_bytes()).is_ok());
    let url_safe = standard.replace('+', "-").replace('/', "_");
    assert_eq!(from_header(url_safe.as_bytes()), Err(WireError::Base64));
}

// Goal: padding stripped by a proxy and surrounding whitespace are tolerated.
#[test]
fn missing_padding_and_whitespace_are_accepted() {
    let mut padded_seen = 0;
    for s in SCENARIOS {
        let raw = fixture_header(s.name);
        let expected = from_header(raw.as_bytes()).unwrap();
        let unpadded = raw.trim_end_matches('=');
        if unpadded.len() != raw.len() {
            padded_seen += 1;
            assert_eq!(from_header(unpadded.as_bytes()).as_ref(), Ok(&expected), "{}", s.name);
        }
        for spaced in [format!(" {raw}"), format!("{raw} "), format!("\t {raw}\r\n"), format!("  {unpadded}\n")] {
            assert_eq!(from_header(spaced.as_bytes()).as_ref(), Ok(&expected), "{}: {spaced:?}", s.name);
        }
    }
    // v1-base ends in one '=', v1-base-sepolia and the 31337 payment in two.
    assert_eq!(padded_seen, 3);
    // Whitespace inside the value is not base64.
    let raw = fixture_header("v2-base");
    let split = format!("{} {}", &raw[..10], &raw[10..]);
    assert_eq!(from_header(split.as_bytes()), Err(WireError::Base64));
}

// Goal: base64 that decodes to something other than a JSON object is a JSON error.
#[test]
fn json_that_is_not_an_object_is_refused() {
    for v in [json!([1, 2]), json!("x402"), json!(null), json!(42), json!(true), json!({})] {
        assert!(matches!(decode(&v), Err(WireError::Json { .. })), "{v}");
    }
    use base64::Engine as _;
    for bytes in [&b"{nope"[..], b"", b"\xff\xfe", b"{\"x402Version\":2,"] {
        let raw = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert!(matches!(from_header(raw.as_bytes()), Err(WireError::Json { .. })), "{bytes:?}");
    }
}

// Goal: a version other than 1 or 2 is UnsupportedVersion, with the version sent.
#[test]
fn unknown_versions_are_refused() {
    for version in [0u64, 3, 255, 256, u64::MAX] {
        assert_eq!(
            decode(&with(payment_json("v2-base"), "/x402Version", json!(version))),
            Err(WireError::UnsupportedVersion { version })
        );
    }
    assert_json_error(&with(payment_json("v2-base"), "/x402Version", json!(-2)), "expected u64");
    assert_json_error(&with(payment_json("v2-base"), "/x402Version", json!("2")), "invalid type: string");
    assert_json_error(&with(payment_json("v2-base"), "/x402Version", json!(2.5)), "invalid type: floating point");
    assert_json_error(&without(payment_json("v2-base"), "/x402Version"), "missing field `x402Version`");
}

// Goal: a field the declared version requires is MissingField, naming field and version.
#[test]
fn missing_fields_are_named() {
    assert_eq!(
        decode(&without(payment_json("v2-base"), "/accepted")),
        Err(WireError::MissingField { field: "accepted", version: 2 })
    );
    assert_eq!(
        decode(&without(payment_json("v1-base"), "/network")),
        Err(WireError::MissingField { field: "network", version: 1 })
    );
    assert_eq!(
        decode(&without(payment_json("v1-base"), "/scheme")),
        Err(WireError::MissingField { field: "scheme", version: 1 })
    );
    // A v2 payment carrying v1 fields is still missing its `accepted`.
    let hybrid = with(without(payment_json("v2-base"), "/accepted"), "/scheme", json!("exact"));
    let hybrid = with(hybrid, "/network", json!("base"));
    assert_eq!(decode(&hybrid), Err(WireError::MissingField { field: "accepted", version: 2 }));
    // `payload` is needed by both versions and is a plain JSON error.
    assert_json_error(&without(payment_json("v1-base"), "/payload"), "missing field `payload`");
    assert_json_error(&without(payment_json("v2-base"), "/payload/authorization/nonce"), "missing field `nonce`");
}

// Goal: amounts and times must be decimal strings: JSON numbers, signs, hex, exponents,
// spaces and values over 2^256 - 1 are refused.
#[test]
fn malformed_amounts_are_refused() {
    let v2 = payment_json("v2-base");
    let v1 = payment_json("v1-base");
    for pointer in ["/accepted/amount", "/payload/authorization/value", "/payload/authorization/validBefore"] {
        assert_json_error(&with(v2.clone(), pointer, json!(10000)), "decimal integer string");
    }
    assert_json_error(&with(v1.clone(), "/payload/authorization/validAfter", json!(0)), "decimal integer string");
    let two_to_256 = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
    for (pointer, payload) in [("/accepted/amount", &v2), ("/payload/authorization/value", &v1)] {
        for bad in ["-1", "+1", "0x2710", "1e4", "10000.0", " 10000", "10000 ", "", "1_000"] {
            assert_json_error(&with(payload.clone(), pointer, json!(bad)), "decimal digits");
        }
        assert_json_error(&with(payload.clone(), pointer, json!(two_to_256)), "256 bits");
        assert_json_error(&with(payload.clone(), pointer, json!("1".repeat(79))), "decimal digits");
    }
    // The largest value is fine.
    let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
    assert!(decode(&with(v2, "/payload/authorization/value", json!(max))).is_ok());
}

// Goal: a nonce must be exactly 32 bytes of 0x-prefixed hex.
#[test]
fn malformed_nonces_are_refused() {
    let p = payment_json("v2-base");
    let nonce = p["payload"]["authorization"]["nonce"].as_str().unwrap().to_owned();
    let digits = &nonce[2..];
    for (bad, reason) in [
        (format!("0x{}", &digits[2..]), "expected 64 hex digits, got 62"), // 31 bytes
        (format!("{nonce}00"), "expected 64 hex digits, got 66"),          // 33 bytes
        (format!("0x{}", &digits[1..]), "expected 64 hex digits, got 63"),
        (digits.to_owned(), "expected a 0x-prefixed hex string"),
        (format!("0x{}zz", &digits[2..]), "invalid character 'z'"),
        (format!("0x0x{}", &digits[2..]), "expected hex digits after 0x"), // doubled prefix
        ("0x".to_owned(), "expected 64 hex digits, got 0"),
    ] {
        assert_json_error(&with(p.clone(), "/payload/authorization/nonce", json!(bad)), reason);
    }
    assert_json_error(&with(p.clone(), "/payload/authorization/nonce", json!(7)), "invalid type: integer");
    // An upper-case prefix is tolerated (it is unambiguous).
    let upper = format!("0X{digits}");
    let decoded = decode(&with(p, "/payload/authorization/nonce", json!(upper))).unwrap();
    assert_eq!(decoded.exact().authorization.nonce, nonce.parse::<B256>().unwrap());
}

// Goal: an address must be 0x plus exactly 40 hex digits, wherever it appears.
#[test]
fn malformed_addresses_are_refused() {
    let v2 = payment_json("v2-base");
    let pay_to = v2["accepted"]["payTo"].as_str().unwrap().to_owned();
    let digits = &pay_to[2..];
    let bad_spellings = [
        (digits.to_owned(), "expected a 0x-prefixed hex string"),
        (format!("0x{}", &digits[1..]), "expected 40 hex digits, got 39"),
        (format!("{pay_to}0"), "expected 40 hex digits, got 41"),
        (format!("0x0x{}", &digits[2..]), "expected hex digits after 0x"), // doubled prefix
        (format!("0x{}g", &digits[1..]), "invalid character 'g'"),
        ("0x".to_owned(), "expected 40 hex digits, got 0"),
    ];
    for pointer in ["/accepted/payTo", "/accepted/asset", "/payload/authorization/from", "/payload/authorization/to"] {
        for (bad, reason) in &bad_spellings {
            assert_json_error(&with(v2.clone(), pointer, json!(bad)), reason);
        }
    }
    let v1 = payment_json("v1-base");
    assert_json_error(&with(v1.clone(), "/payload/authorization/from", json!(digits)), "0x-prefixed");
    assert_json_error(&with(v1, "/payload/authorization/to", json!(null)), "invalid type: null");
}

// Goal: a network that is neither `eip155:<chain id>` nor a v1 name is refused, in either
// version.
#[test]
fn unknown_networks_are_refused() {
    let solana = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp";
    for bad in [solana, "eip155:0", "eip155:08453", "eip155:", "Base", "base ", "cosmos:cosmoshub-4"] {
        assert_json_error(&with(payment_json("v2-base"), "/accepted/network", json!(bad)), "unknown network");
        let v1 = decode(&with(payment_json("v1-base"), "/network", json!(bad)));
        assert!(matches!(&v1, Err(WireError::UnknownNetwork { network }) if network == bad), "{bad}: {v1:?}");
    }
    assert_json_error(&with(payment_json("v2-base"), "/accepted/network", json!(8453)), "expected a string");
}

// Goal: signatures are 0x-prefixed hex of even length; longer smart-wallet signatures pass.
#[test]
fn signature_spellings() {
    let p = payment_json("v2-base");
    for (bad, reason) in [
        ("abcd", "expected a 0x-prefixed hex string"),
        ("0xabc", "odd number of digits"),
        ("0xzz", "invalid character 'z'"),
        ("0x 00", "odd number of digits"),
    ] {
        assert_json_error(&with(p.clone(), "/payload/signature", json!(bad)), reason);
    }
    let long = format!("0x{}", "ab".repeat(1000));
    let decoded = decode(&with(p, "/payload/signature", json!(long))).unwrap();
    assert_eq!(decoded.exact().signature.len(), 1000);
}

// Goal: a zoo of hostile inputs returns an error and never panics.
#[test]
fn hostile_inputs_do_not_panic() {
    use base64::Engine as _;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let nested_extra = format!(
        "{{\"x402Version\":2,\"extensions\":{}1{},\"payload\":{{}}}}",
        "{\"a\":".repeat(5_000),
        "}".repeat(5_000)
    );
    let inputs: Vec<Vec<u8>> = vec![
        vec![],
        b" ".to_vec(),
        b"\r\n".to_vec(),
        b"=".to_vec(),
        vec![0; 64],
        vec![0xff; 64],
        deep.clone().into_bytes(),
        base64::engine::general_purpose::STANDARD.encode(&deep).into_bytes(),
        base64::engine::general_purpose::STANDARD.encode(&nested_extra).into_bytes(),
        base64::engine::general_purpose::STANDARD.encode("{\"x402Version\":2,\"payload\":\"\u{0}\"}").into_bytes(),
        base64::engine::general_purpose::STANDARD.encode(b"{\"x402Version\":1e999}").into_bytes(),
        base64::engine::general_purpose::STANDARD.encode(b"{\"x402Version\":\"\\ud800\"}").into_bytes(),
    ];
    for raw in &inputs {
        assert!(from_header(raw).is_err(), "{:?}", String::from_utf8_lossy(&raw[..raw.len().min(40)]));
        assert!(PaymentPayload::from_header(raw, usize::MAX).is_err());
    }
}

// Goal: a v1 payment must name its network the v1 way; a CAIP-2 id (which a v1 client never
// sends, and which could not be written back) is refused at decode, and a v1 object on a
// chain without a v1 name refuses to encode instead of producing an empty header.
#[test]
fn v1_networks_are_names_only() {
    let fixture = crate::fixture("v1-base");
    let mut payload = fixture["paymentPayload"].clone();
    payload["network"] = serde_json::json!("eip155:31337");
    let raw = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, payload.to_string());
    let err = PaymentPayload::from_header(raw.as_bytes(), PAYMENT_HEADER_BYTES_MAX).unwrap_err();
    assert!(matches!(&err, WireError::UnknownNetwork { network } if network == "eip155:31337"), "{err:?}");

    let decoded =
        PaymentPayload::from_header(fixture["paymentHeaderRaw"].as_str().unwrap().as_bytes(), PAYMENT_HEADER_BYTES_MAX)
            .unwrap();
    let PaymentPayload::V1(mut v1) = decoded else { panic!("v1 fixture") };
    v1.network = tollgate_x402::Network::new(31337);
    assert!(matches!(PaymentPayload::V1(v1).to_header(), Err(WireError::Encode { .. })));
}
