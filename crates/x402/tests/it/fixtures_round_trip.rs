//! Every object the official clients produced or read decodes into our types and re-encodes
//! to the same JSON.

use serde_json::Value;
use tollgate_x402::facilitator::SettleResponse;
use tollgate_x402::{PAYMENT_HEADER_BYTES_MAX, PaymentPayload, SCHEME_EXACT, decode_header, encode_header, v1, v2};

use crate::{SCENARIOS, decode, fixture, lowercase_hex, str_at, uppercase_hex};

// Goal: each captured payment header decodes to the version, network and scheme the client
// chose, and re-serialises to JSON equal to the payload the client built.
#[test]
fn payment_headers_decode_and_re_encode_equal() {
    for s in SCENARIOS {
        let f = fixture(s.name);
        let raw = str_at(&f, "/paymentHeaderRaw");
        let payment = PaymentPayload::from_header(raw.as_bytes(), PAYMENT_HEADER_BYTES_MAX)
            .unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert_eq!(payment.version(), s.version, "{}", s.name);
        assert_eq!(payment.network(), s.network, "{}", s.name);
        assert_eq!(payment.scheme(), SCHEME_EXACT, "{}", s.name);
        assert_eq!(payment.exact().authorization.value.to_u64(), Some(10_000), "{}", s.name);

        // The clients send EIP-55 addresses and lower-case hex, which is exactly what we emit,
        // so the comparison is exact; `lowercase_hex` only matters for input in another case
        // (see the next test).
        let back = serde_json::to_value(&payment).unwrap();
        assert_eq!(back, f["paymentPayload"], "{}", s.name);
        assert_eq!(
            PaymentPayload::from_header(payment.to_header().unwrap().as_bytes(), PAYMENT_HEADER_BYTES_MAX).as_ref(),
            Ok(&payment),
            "{}",
            s.name
        );
    }
}

// Goal: a payment whose addresses and hex arrive in lower or upper case decodes to the same
// value, and is re-emitted with EIP-55 addresses and lower-case hex.
#[test]
fn payment_in_other_letter_case_is_the_same_payment() {
    for s in SCENARIOS {
        let f = fixture(s.name);
        let original = decode(&f["paymentPayload"]).unwrap();
        for variant in [lowercase_hex(&f["paymentPayload"]), uppercase_hex(&f["paymentPayload"])] {
            let payment = decode(&variant).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert_eq!(payment, original, "{}", s.name);
            let back = serde_json::to_value(&payment).unwrap();
            assert_eq!(lowercase_hex(&back), lowercase_hex(&variant), "{}", s.name);
            assert_eq!(back, f["paymentPayload"], "{}", s.name);
        }
    }
}

// Goal: every payment the client probes sent (both versions, many scenarios) decodes and
// re-serialises unchanged.
#[test]
fn probe_payments_round_trip() {
    let probes = fixture("client-behaviour")["probes"].as_object().unwrap().clone();
    let mut seen = 0;
    for (probe, p) in &probes {
        for sent in p["paymentPayloadsSent"].as_array().into_iter().flatten() {
            let payment: PaymentPayload =
                serde_json::from_value(sent.clone()).unwrap_or_else(|e| panic!("{probe}: {e}"));
            assert_eq!(serde_json::to_value(&payment).unwrap(), *sent, "{probe}");
            seen += 1;
        }
    }
    assert!(seen >= 10, "only {seen} probe payments");
}

// Goal: each v2 challenge (JSON, header and raw body) decodes as `v2::PaymentRequired` and
// re-encodes to the JSON the client accepted.
#[test]
fn v2_challenges_round_trip() {
    for s in SCENARIOS.iter().filter(|s| s.version == 2) {
        let f = fixture(s.name);
        let json = &f["challenge"]["json"];
        let challenge: v2::PaymentRequired =
            serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert_eq!(challenge.x402_version, v2::VERSION);
        assert!(challenge.accepts.iter().any(|o| o.network == s.network), "{}", s.name);
        assert_eq!(serde_json::to_value(&challenge).unwrap(), *json, "{}", s.name);

        let from_header: v2::PaymentRequired =
            decode_header(str_at(&f, "/challenge/headerRaw").as_bytes(), PAYMENT_HEADER_BYTES_MAX).unwrap();
        assert_eq!(from_header, challenge, "{}", s.name);
        let from_body: v2::PaymentRequired = serde_json::from_str(str_at(&f, "/challenge/bodyRaw")).unwrap();
        assert_eq!(from_body, challenge, "{}", s.name);

        // Our own header encoding is the JSON the client read, whatever the key order.
        let ours: Value =
            decode_header(encode_header(&challenge).unwrap().as_bytes(), PAYMENT_HEADER_BYTES_MAX).unwrap();
        assert_eq!(ours, *json, "{}", s.name);
    }
}

// Goal: the 402 a verify failure produced (with `error` set) round-trips as a v2 challenge.
#[test]
fn v2_challenge_with_error_round_trips() {
    let f = fixture("client-behaviour");
    let raw =
        str_at(&f, "/probes/v2_retry402_verifyFailure_PAYMENT_REQUIRED_with_error/responseHeaders/payment-required");
    let challenge: v2::PaymentRequired = decode_header(raw.as_bytes(), PAYMENT_HEADER_BYTES_MAX).unwrap();
    assert_eq!(challenge.error.as_deref(), Some("invalid_exact_evm_signature"));
    let seen_by_client = &f["probes"]["v2_retry402_verifyFailure_PAYMENT_REQUIRED_with_error"]["onPaymentResponseHookCtx"]
        [0]["paymentRequired"];
    assert_eq!(serde_json::to_value(&challenge).unwrap(), *seen_by_client);
}

// Goal: each v1 challenge body decodes as `v1::PaymentRequired` and re-encodes equal; an
// absent `outputSchema` stays absent (the v1 client rejects `null`).
#[test]
fn v1_challenges_round_trip_and_keep_output_schema_absent() {
    for s in SCENARIOS.iter().filter(|s| s.version == 1) {
        let f = fixture(s.name);
        let json = &f["challenge"]["json"];
        let challenge: v1::PaymentRequired =
            serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert_eq!(challenge.x402_version, v1::VERSION);
        let back = serde_json::to_value(&challenge).unwrap();
        assert_eq!(back, *json, "{}", s.name);
        let from_body: v1::PaymentRequired = serde_json::from_str(str_at(&f, "/challenge/bodyRaw")).unwrap();
        assert_eq!(from_body, challenge, "{}", s.name);

        let had_schema = json["accepts"][0].get("outputSchema").is_some();
        assert_eq!(challenge.accepts[0].output_schema.is_some(), had_schema, "{}", s.name);
        assert_eq!(back["accepts"][0].get("outputSchema").is_some(), had_schema, "{}", s.name);
    }
    // Both shapes are covered: v1-base carries a schema, v1-base-sepolia does not.
    assert!(fixture("v1-base")["challenge"]["json"]["accepts"][0].get("outputSchema").is_some());
    assert!(fixture("v1-base-sepolia")["challenge"]["json"]["accepts"][0].get("outputSchema").is_none());
}

// Goal: an `outputSchema: null` read from elsewhere is dropped on output, never forwarded
// as `null`.
#[test]
fn v1_null_output_schema_is_emitted_absent() {
    let json = crate::with(fixture("v1-base")["challenge"]["json"].clone(), "/accepts/0/outputSchema", Value::Null);
    let challenge: v1::PaymentRequired = serde_json::from_value(json).unwrap();
    assert_eq!(challenge.accepts[0].output_schema, None);
    let back = serde_json::to_value(&challenge).unwrap();
    assert!(back["accepts"][0].as_object().unwrap().get("outputSchema").is_none());
}

// Goal: each settlement receipt decodes as `SettleResponse` from JSON and from its header,
// and re-encodes equal.
#[test]
fn settle_responses_round_trip() {
    for s in SCENARIOS {
        let f = fixture(s.name);
        let json = &f["settleResponse"];
        let receipt: SettleResponse =
            serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert!(receipt.success, "{}", s.name);
        assert_eq!(serde_json::to_value(&receipt).unwrap(), *json, "{}", s.name);
        let network = if s.version == 1 { s.network.v1_name().unwrap().to_owned() } else { s.network.caip2() };
        assert_eq!(receipt.network, network, "{}", s.name);

        let from_header: SettleResponse =
            decode_header(str_at(&f, "/settleResponseHeaderRaw").as_bytes(), PAYMENT_HEADER_BYTES_MAX).unwrap();
        assert_eq!(from_header, receipt, "{}", s.name);
        assert_eq!(
            decode_header::<SettleResponse>(encode_header(&receipt).unwrap().as_bytes(), PAYMENT_HEADER_BYTES_MAX),
            Ok(receipt),
            "{}",
            s.name
        );
    }
}

// Goal: a failed settlement receipt (`success: false`, `errorReason`, `transaction: ""`) as
// the v2 client read it round-trips.
#[test]
fn failed_settle_response_round_trips() {
    let f = fixture("client-behaviour");
    let probe = &f["probes"]["v2_retry402_settleFailure_PAYMENT_RESPONSE_success_false"];
    let raw = str_at(probe, "/responseHeaders/payment-response");
    let receipt: SettleResponse = decode_header(raw.as_bytes(), PAYMENT_HEADER_BYTES_MAX).unwrap();
    assert!(!receipt.success);
    assert_eq!(receipt.transaction, "");
    assert_eq!(receipt.error_reason.as_deref(), Some("invalid_exact_evm_insufficient_balance"));
    assert_eq!(serde_json::to_value(&receipt).unwrap(), probe["onPaymentResponseHookCtx"][0]["settleResponse"]);
}
