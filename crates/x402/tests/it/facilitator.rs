//! Facilitator API bodies: `/verify` and `/settle` requests in both versions' shapes, and
//! the `/supported` and discovery answers.

use serde_json::{Value, json};
use tollgate_x402::facilitator::{
    AnyRequirements, DiscoveryList, FacilitatorRequest, SettleResponse, SupportedResponse, VerifyResponse,
};
use tollgate_x402::{Address, PaymentPayload};

use crate::{SCENARIOS, fixture, offers, with, without};

/// `{x402Version, paymentPayload, paymentRequirements}` built from a scenario, as another
/// x402 server would post it.
fn request_body(name: &str) -> Value {
    let f = fixture(name);
    json!({
        "x402Version": f["paymentPayload"]["x402Version"],
        "paymentPayload": f["paymentPayload"],
        "paymentRequirements": f["challenge"]["json"]["accepts"][0],
    })
}

// Goal: a facilitator request parses in both shapes, picks the requirement's version from
// its fields, and re-encodes to the body that was posted.
#[test]
fn facilitator_requests_parse_in_both_shapes() {
    for s in SCENARIOS {
        let body = request_body(s.name);
        let req: FacilitatorRequest =
            serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert_eq!(req.x402_version, s.version, "{}", s.name);
        assert_eq!(req.payment_payload.version(), s.version, "{}", s.name);
        match (&req.payment_requirements, &req.payment_payload) {
            (AnyRequirements::V2(_), PaymentPayload::V2(_)) => assert_eq!(s.version, 2, "{}", s.name),
            (AnyRequirements::V1(_), PaymentPayload::V1(_)) => assert_eq!(s.version, 1, "{}", s.name),
            other => panic!("{}: mixed versions {other:?}", s.name),
        }
        // Either shape converts to the same v2 offer the gateway would have made.
        assert_eq!(req.payment_requirements.to_v2(), offers(s.name)[0], "{}", s.name);
        assert_eq!(serde_json::to_value(&req).unwrap(), body, "{}", s.name);
    }
}

// Goal: `AnyRequirements` is V1 for a `maxAmountRequired` object and V2 for an `amount`
// object, and an object with neither is refused.
#[test]
fn any_requirements_picks_the_version_by_shape() {
    let v1_offer = fixture("v1-base")["challenge"]["json"]["accepts"][0].clone();
    let v2_offer = fixture("v2-base")["challenge"]["json"]["accepts"][0].clone();
    let v1: AnyRequirements = serde_json::from_value(v1_offer.clone()).unwrap();
    let v2: AnyRequirements = serde_json::from_value(v2_offer.clone()).unwrap();
    assert!(matches!(v1, AnyRequirements::V1(_)), "{v1:?}");
    assert!(matches!(v2, AnyRequirements::V2(_)), "{v2:?}");
    assert_eq!(v1.to_v2(), v2.to_v2());
    assert_eq!(serde_json::to_value(&v1).unwrap(), v1_offer);
    assert_eq!(serde_json::to_value(&v2).unwrap(), v2_offer);

    // v1 objects carry network names only: a CAIP-2 spelling in a v1-shaped offer is refused.
    let caip2 = with(v1_offer.clone(), "/network", json!("eip155:8453"));
    assert!(serde_json::from_value::<AnyRequirements>(caip2).is_err());

    assert!(serde_json::from_value::<AnyRequirements>(without(v2_offer, "/amount")).is_err());
    assert!(serde_json::from_value::<AnyRequirements>(without(v1_offer, "/maxAmountRequired")).is_err());
    assert!(serde_json::from_value::<AnyRequirements>(json!({})).is_err());
}

// Goal: a malformed payload inside a facilitator request is refused, not half-parsed.
#[test]
fn facilitator_request_with_bad_payload_is_refused() {
    let body = with(request_body("v2-base"), "/paymentPayload/accepted/amount", json!(10000));
    assert!(serde_json::from_value::<FacilitatorRequest>(body).is_err());
    let body = with(request_body("v2-base"), "/paymentPayload/x402Version", json!(3));
    let err = serde_json::from_value::<FacilitatorRequest>(body).unwrap_err();
    assert!(err.to_string().contains("x402Version 3"), "{err}");
    let body = without(request_body("v1-base"), "/paymentPayload/network");
    let err = serde_json::from_value::<FacilitatorRequest>(body).unwrap_err();
    assert!(err.to_string().contains("network"), "{err}");
}

// Goal: `/verify` answers round-trip, with and without the optional fields.
#[test]
fn verify_responses_round_trip() {
    for body in [
        json!({"isValid": true, "payer": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"}),
        json!({"isValid": false, "invalidReason": "invalid_exact_evm_signature",
               "payer": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"}),
        json!({"isValid": false, "invalidReason": "invalid_exact_evm_scheme"}),
    ] {
        let parsed: VerifyResponse = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), body);
    }
    let lower: VerifyResponse =
        serde_json::from_value(json!({"isValid": true, "payer": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"}))
            .unwrap();
    assert_eq!(lower.payer, Some("0x70997970C51812dc3A010C7d01b50e0d17dc79C8".parse::<Address>().unwrap()));
    assert!(serde_json::from_value::<VerifyResponse>(json!({"isValid": true, "payer": "0x1234"})).is_err());
    assert!(serde_json::from_value::<SettleResponse>(json!({"success": true, "network": "base"})).is_err());
}

// Goal: a `/supported` answer in the shape of x402 notes §6 round-trips, listing every
// concrete network.
#[test]
fn supported_response_round_trips() {
    let body = json!({
        "kinds": [
            {"x402Version": 2, "scheme": "exact", "network": "eip155:8453"},
            {"x402Version": 2, "scheme": "exact", "network": "eip155:84532"},
            {"x402Version": 1, "scheme": "exact", "network": "base"},
            {"x402Version": 1, "scheme": "exact", "network": "base-sepolia"}
        ],
        "extensions": ["bazaar", "payment-identifier"],
        "signers": {"eip155:*": ["0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"]}
    });
    let parsed: SupportedResponse = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(parsed.kinds.len(), 4);
    assert_eq!(parsed.kinds[2].x402_version, 1);
    assert_eq!(parsed.signers["eip155:*"].len(), 1);
    assert_eq!(serde_json::to_value(&parsed).unwrap(), body);

    // `extensions` and `signers` may be left out by older facilitators.
    let minimal: SupportedResponse = serde_json::from_value(json!({"kinds": []})).unwrap();
    assert_eq!(minimal, SupportedResponse::default());
}

// Goal: a discovery page in the shape of x402 notes §6 round-trips, `type` included.
#[test]
fn discovery_list_round_trips() {
    let offer = fixture("v2-base")["challenge"]["json"]["accepts"][0].clone();
    let body = json!({
        "x402Version": 2,
        "items": [
            {
                "resource": "https://tollgate.test/paid/weather",
                "type": "http",
                "x402Version": 2,
                "accepts": [offer],
                "lastUpdated": "2026-11-30T05:55:00Z",
                "metadata": {"input": {"type": "http", "method": "GET"}, "output": {"type": "object"}}
            },
            {
                "resource": "https://tollgate.test/paid/quote",
                "type": "http",
                "x402Version": 2,
                "accepts": [],
                "lastUpdated": "2026-11-30T05:56:00Z"
            }
        ],
        "pagination": {"limit": 20, "offset": 0, "total": 2}
    });
    let parsed: DiscoveryList = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(parsed.items[0].kind, "http");
    assert_eq!(parsed.items[0].accepts, offers("v2-base"));
    assert_eq!(parsed.items[1].metadata, None);
    assert_eq!(parsed.pagination.total, 2);
    assert_eq!(serde_json::to_value(&parsed).unwrap(), body);
}
