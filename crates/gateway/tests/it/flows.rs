//! x402 payment flows on the wire (spec §6.1, issue 19 part 5): a `before` route is the
//! `upfront` flow and says so in `accepts[].extra.paymentFlow`; `after` routes name none (the
//! default `authorization`); a payment whose echoed flow is not the route's is refused.

use axum::http::StatusCode;
use tollgate_test_support::{PaymentBuilder, v2_header};

use crate::both_engines;
use crate::harness::Harness;

// Goal: the offers name the flow (upfront for `before`, nothing for `after`), in the v2
// header and the v1 body; a payment that echoes the `before` offer without its flow, or an
// `after` offer with `upfront`, is refused 402 payment_flow_mismatch before verification
// (no entry, no upstream call, no transfer).
async fn flow_advertised_and_enforced(h: &Harness) {
    let before = h.offer("/before/weather/lima").await;
    assert_eq!(before.extra.get("paymentFlow").and_then(|v| v.as_str()), Some("upfront"));
    let after = h.offer("/weather/lima").await;
    assert!(after.extra.get("paymentFlow").is_none(), "authorization is the default and is not named");
    let v1: serde_json::Value =
        h.http.get(format!("{}/before/weather/lima", h.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(v1["accepts"][0]["extra"]["paymentFlow"], "upfront");

    let mut unflowed = before.clone();
    unflowed.extra.remove("paymentFlow");
    let mut upfront_after = after.clone();
    upfront_after.extra.insert("paymentFlow".into(), "upfront".into());
    for (path, offer) in [("/before/weather/lima", unflowed), ("/weather/lima", upfront_after)] {
        let b = PaymentBuilder::new(&offer, &h.payer, h.now);
        let resp =
            h.http.get(format!("{}{path}", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "payment_flow_mismatch", "{path}");
        assert!(h.entry_for(&b).await.is_none());
    }
    assert_eq!(h.upstream.calls(), 0);
    assert_eq!(h.payee_balance().await, alloy_primitives::U256::ZERO);
}
both_engines!(payment_flow, flow_advertised_and_enforced);
