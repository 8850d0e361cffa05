//! `find_offer`: which offer a payment takes up, and the precise reason when none.

use serde_json::{Value, json};
use tollgate_x402::{MatchError, Network, find_offer, v2};

use crate::{SCENARIOS, decode, offers, payment_json, with, without};

/// Matches a (possibly edited) v2-base payment against the v2-base challenge.
fn match_base(payment: Value) -> Result<v2::PaymentRequirements, MatchError> {
    let offered = offers("v2-base");
    let payment = decode(&payment).unwrap();
    find_offer(&offered, &payment).cloned()
}

fn mismatch(field: &'static str) -> Result<v2::PaymentRequirements, MatchError> {
    Err(MatchError::AcceptedMismatch { field })
}

const OTHER_ADDRESS: &str = "0x1111111111111111111111111111111111111111";

// Goal: every captured payment takes up the offer on the network its client chose.
#[test]
fn fixture_payments_match_their_offer() {
    for s in SCENARIOS {
        let offered = offers(s.name);
        let payment = decode(&payment_json(s.name)).unwrap();
        let offer = find_offer(&offered, &payment).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert_eq!(offer.network, s.network, "{}", s.name);
        assert_eq!(offer.amount, payment.exact().authorization.value, "{}", s.name);
        assert_eq!(offer.pay_to, payment.exact().authorization.to, "{}", s.name);
    }
}

// Goal: with two offers the payment takes up the one the client picked (84532, offered
// first), and still that one when the server lists it second.
#[test]
fn multi_accepts_takes_the_offer_the_client_picked() {
    let mut offered = offers("v2-multi-accepts");
    assert_eq!(offered.iter().map(|o| o.network).collect::<Vec<_>>(), [Network::BASE_SEPOLIA, Network::BASE]);
    let payment = decode(&payment_json("v2-multi-accepts")).unwrap();
    assert!(std::ptr::eq(find_offer(&offered, &payment).unwrap(), &offered[0]));

    offered.reverse();
    assert!(std::ptr::eq(find_offer(&offered, &payment).unwrap(), &offered[1]));

    // A payment on 8453 against the same list picks the other offer.
    let on_base = with(payment_json("v2-base"), "/accepted", serde_json::to_value(&offered[0]).unwrap());
    let on_base = decode(&on_base).unwrap();
    assert_eq!(find_offer(&offered, &on_base).unwrap().network, Network::BASE);
}

// Goal: an `accepted` echo that differs from the offer in one compared field is refused
// with that field's wire name.
#[test]
fn changed_accepted_field_is_named() {
    let p = payment_json("v2-base");
    assert_eq!(match_base(with(p.clone(), "/accepted/amount", json!("10001"))), mismatch("amount"));
    assert_eq!(match_base(with(p.clone(), "/accepted/amount", json!("9999"))), mismatch("amount"));
    assert_eq!(match_base(with(p.clone(), "/accepted/asset", json!(OTHER_ADDRESS))), mismatch("asset"));
    assert_eq!(match_base(with(p.clone(), "/accepted/payTo", json!(OTHER_ADDRESS))), mismatch("payTo"));
    assert_eq!(match_base(with(p.clone(), "/accepted/maxTimeoutSeconds", json!(61))), mismatch("maxTimeoutSeconds"));
    assert_eq!(match_base(without(p.clone(), "/accepted/extra/version")), mismatch("extra"));
    assert_eq!(match_base(without(p.clone(), "/accepted/extra/name")), mismatch("extra"));
    assert_eq!(match_base(without(p.clone(), "/accepted/extra")), mismatch("extra"));
    // Base Sepolia's USDC domain name on Base mainnet: a different domain, so a different
    // signature; it must not match.
    assert_eq!(match_base(with(p.clone(), "/accepted/extra/name", json!("USDC"))), mismatch("extra"));
    assert_eq!(match_base(with(p.clone(), "/accepted/extra/version", json!(2))), mismatch("extra"));
    // Fields are compared in a fixed order; the first difference is reported.
    let two_off = with(with(p, "/accepted/amount", json!("1")), "/accepted/payTo", json!(OTHER_ADDRESS));
    assert_eq!(match_base(two_off), mismatch("amount"));
}

// Goal: a network we did not offer and a scheme other than `exact` get their own errors.
#[test]
fn other_network_and_scheme_are_refused() {
    let p = payment_json("v2-base");
    assert_eq!(
        match_base(with(p.clone(), "/accepted/network", json!("eip155:84532"))),
        Err(MatchError::NetworkNotOffered { network: "eip155:84532".to_owned() })
    );
    assert_eq!(
        match_base(with(p.clone(), "/accepted/scheme", json!("upto"))),
        Err(MatchError::UnsupportedScheme { scheme: "upto".to_owned() })
    );
    // The scheme is checked before the network.
    let both = with(with(p.clone(), "/accepted/scheme", json!("upto")), "/accepted/network", json!("eip155:1"));
    assert_eq!(match_base(both), Err(MatchError::UnsupportedScheme { scheme: "upto".to_owned() }));
    // A hostile scheme name is cut short before it reaches an error (and a log line).
    let long = "x".repeat(10_000);
    match match_base(with(p, "/accepted/scheme", json!(long))) {
        Err(MatchError::UnsupportedScheme { scheme }) => assert_eq!(scheme, "x".repeat(32)),
        other => panic!("{other:?}"),
    }
}

// Goal: v1 payments name only scheme and network, and are refused on those alone.
#[test]
fn v1_payment_mismatches() {
    let offered = offers("v1-base");
    let p = payment_json("v1-base");
    let on_sepolia = decode(&with(p.clone(), "/network", json!("base-sepolia"))).unwrap();
    assert_eq!(
        find_offer(&offered, &on_sepolia),
        Err(MatchError::NetworkNotOffered { network: "eip155:84532".to_owned() })
    );
    let upto = decode(&with(p, "/scheme", json!("upto"))).unwrap();
    assert_eq!(find_offer(&offered, &upto), Err(MatchError::UnsupportedScheme { scheme: "upto".to_owned() }));
    // No offer at all is "network not offered", not a panic.
    let payment = decode(&payment_json("v1-base")).unwrap();
    assert_eq!(find_offer(&[], &payment), Err(MatchError::NetworkNotOffered { network: "eip155:8453".to_owned() }));
}

// Goal: addresses in `accepted` compare as bytes, so all-lowercase or all-uppercase hex
// still matches.
#[test]
fn address_case_does_not_matter() {
    let p = payment_json("v2-base");
    let asset = p["accepted"]["asset"].as_str().unwrap().to_owned();
    let pay_to = p["accepted"]["payTo"].as_str().unwrap().to_owned();
    let upper = |a: &str| format!("0x{}", a[2..].to_ascii_uppercase());
    for (a, b) in [(asset.to_ascii_lowercase(), pay_to.to_ascii_lowercase()), (upper(&asset), upper(&pay_to))] {
        let edited = with(with(p.clone(), "/accepted/asset", json!(a)), "/accepted/payTo", json!(b));
        let offer = match_base(edited).unwrap();
        assert_eq!(offer, offers("v2-base")[0]);
    }
}

// Goal: an `accepted.extra` that carries more keys than the offer still matches (it must
// contain the offer's `extra`, not equal it).
#[test]
fn extra_with_more_keys_still_matches() {
    let p = payment_json("v2-base");
    let edited = with(p, "/accepted/extra/clientNote", json!({"anything": [1, 2, 3]}));
    assert_eq!(match_base(edited).unwrap(), offers("v2-base")[0]);
}

// Goal: with two offers on one network, the payment takes up the one it echoes, and when it
// echoes neither the reported difference is against the first.
#[test]
fn two_offers_on_one_network() {
    let cheap = offers("v2-base").remove(0);
    let dear = v2::PaymentRequirements { amount: 20_000u64.into(), max_timeout_seconds: 120, ..cheap.clone() };
    let offered = [cheap, dear];
    let echo = |offer: &v2::PaymentRequirements| {
        decode(&with(payment_json("v2-base"), "/accepted", serde_json::to_value(offer).unwrap())).unwrap()
    };
    assert!(std::ptr::eq(find_offer(&offered, &echo(&offered[1])).unwrap(), &offered[1]));
    assert!(std::ptr::eq(find_offer(&offered, &echo(&offered[0])).unwrap(), &offered[0]));

    let neither = v2::PaymentRequirements { max_timeout_seconds: 120, ..offered[0].clone() };
    assert_eq!(find_offer(&offered, &echo(&neither)), Err(MatchError::AcceptedMismatch { field: "maxTimeoutSeconds" }));
}

// Goal: an offer of ours in another scheme is never taken up, even on the payment's network.
#[test]
fn offers_in_other_schemes_are_skipped() {
    let mut offered = offers("v2-base");
    offered[0].scheme = "upto".to_owned();
    let payment = decode(&payment_json("v2-base")).unwrap();
    assert_eq!(
        find_offer(&offered, &payment),
        Err(MatchError::NetworkNotOffered { network: "eip155:8453".to_owned() })
    );
}

#[test]
fn payment_flow_must_be_the_offers() {
    // Goal: an echo naming another payment flow than the offer (absent = authorization) is a
    // mismatch on `paymentFlow`, whichever side names it; the same flow matches.
    let mut extra = serde_json::Map::new();
    extra.insert("name".into(), "USD Coin".into());
    extra.insert("version".into(), "2".into());
    let plain = v2::PaymentRequirements {
        scheme: "exact".into(),
        network: tollgate_x402::Network::BASE,
        amount: tollgate_x402::DecimalU256::from(1000u64),
        asset: tollgate_x402::Address::repeat_byte(1),
        pay_to: tollgate_x402::Address::repeat_byte(2),
        max_timeout_seconds: 60,
        extra,
    };
    let mut upfront = plain.clone();
    upfront.extra.insert("paymentFlow".into(), "upfront".into());
    let pay = |accepted: &v2::PaymentRequirements| {
        let header = serde_json::json!({
            "x402Version": 2, "accepted": accepted,
            "payload": {"signature": format!("0x{}", "11".repeat(65)), "authorization": {
                "from": format!("0x{}", "33".repeat(20)), "to": format!("0x{}", "02".repeat(20)), "value": "1000",
                "validAfter": "0", "validBefore": "9999999999", "nonce": format!("0x{}", "44".repeat(32))}}
        });
        serde_json::from_value::<tollgate_x402::PaymentPayload>(header).unwrap()
    };
    let flow_err = Err(MatchError::AcceptedMismatch { field: "paymentFlow" });
    assert_eq!(find_offer(std::slice::from_ref(&upfront), &pay(&plain)).cloned(), flow_err.clone());
    assert_eq!(find_offer(std::slice::from_ref(&plain), &pay(&upfront)).cloned(), flow_err);
    assert_eq!(find_offer(std::slice::from_ref(&upfront), &pay(&upfront)).cloned(), Ok(upfront.clone()));
    assert_eq!(find_offer(std::slice::from_ref(&plain), &pay(&plain)).cloned(), Ok(plain));
}
