//! The v1 form of a v2 offer, which a gateway puts in the 402 body for v1 clients.

use tollgate_x402::{Network, WireError, v1, v2};

use crate::fixture;

fn v2_challenge(name: &str) -> v2::PaymentRequired {
    serde_json::from_value(fixture(name)["challenge"]["json"].clone()).unwrap()
}

fn v1_challenge(name: &str) -> v1::PaymentRequired {
    serde_json::from_value(fixture(name)["challenge"]["json"].clone()).unwrap()
}

// Goal: `from_v2` of the v2 Base Sepolia offer is exactly the v1 offer the v1 client paid
// (captured separately), and `to_v2` brings it back unchanged.
#[test]
fn from_v2_matches_the_captured_v1_offer_and_round_trips() {
    let v2 = v2_challenge("v2-base-sepolia");
    let offer = &v2.accepts[0];
    let as_v1 = v1::PaymentRequirements::from_v2(offer, &v2.resource).unwrap();
    assert_eq!(as_v1, v1_challenge("v1-base-sepolia").accepts[0]);
    assert_eq!(as_v1.to_v2(), *offer);
    let json = serde_json::to_value(&as_v1).unwrap();
    assert_eq!(json["network"], "base-sepolia");
    assert_eq!(json["maxAmountRequired"], "10000");
    assert!(json.get("amount").is_none());
}

// Goal: on Base the conversion equals the captured v1 offer except for the `outputSchema`
// that only the v1 route declared, which `from_v2` leaves absent rather than `null`.
#[test]
fn from_v2_on_base_leaves_output_schema_absent() {
    let v2 = v2_challenge("v2-base");
    let as_v1 = v1::PaymentRequirements::from_v2(&v2.accepts[0], &v2.resource).unwrap();
    let captured = v1_challenge("v1-base").accepts.remove(0);
    assert!(captured.output_schema.is_some());
    assert_eq!(as_v1, v1::PaymentRequirements { output_schema: None, ..captured.clone() });
    assert!(serde_json::to_value(&as_v1).unwrap().get("outputSchema").is_none());
    // And the other way round, the captured v1 offer is the v2 offer.
    assert_eq!(captured.to_v2(), v2.accepts[0]);
}

// Goal: every v1 offer survives `to_v2` then `from_v2` when the resource carries its url,
// description and mime type.
#[test]
fn to_v2_then_from_v2_round_trips() {
    for name in ["v1-base", "v1-base-sepolia"] {
        for offer in v1_challenge(name).accepts {
            let resource = v2::ResourceInfo {
                url: offer.resource.clone(),
                description: Some(offer.description.clone()),
                mime_type: Some(offer.mime_type.clone()),
                ..Default::default()
            };
            let back = v1::PaymentRequirements::from_v2(&offer.to_v2(), &resource).unwrap();
            assert_eq!(back, v1::PaymentRequirements { output_schema: None, ..offer }, "{name}");
        }
    }
}

// Goal: a resource without description or mime type becomes empty strings, which the v1
// client requires to be present.
#[test]
fn from_v2_fills_required_v1_strings() {
    let v2 = v2_challenge("v2-base");
    let bare = v2::ResourceInfo { url: "https://x.test/a".to_owned(), ..Default::default() };
    let as_v1 = v1::PaymentRequirements::from_v2(&v2.accepts[0], &bare).unwrap();
    let json = serde_json::to_value(&as_v1).unwrap();
    assert_eq!(json["resource"], "https://x.test/a");
    assert_eq!(json["description"], "");
    assert_eq!(json["mimeType"], "");
}

// Goal: a chain without a v1 name (anvil's 31337) cannot be offered to v1 clients.
#[test]
fn from_v2_without_v1_name_is_refused() {
    let v2 = v2_challenge("v2-custom-asset-31337");
    assert_eq!(v2.accepts[0].network, Network::new(31337));
    assert_eq!(
        v1::PaymentRequirements::from_v2(&v2.accepts[0], &v2.resource),
        Err(WireError::NoV1Name { chain_id: 31337 })
    );
}
