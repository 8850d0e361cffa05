//! Modes `deferred` and `before`.

use alloy_primitives::U256;
use axum::http::StatusCode;
use tollgate_metering::EntryState;
use tollgate_test_support::v2_header;

use crate::{Harness, PRICE_ATOMIC, both_engines, receipt_of};

// Goal: a deferred route answers right after the upstream with a receipt id; the worker
// settles in the background and /receipts/{id} reports the transaction; an upstream failure
// is voided and never settled.
async fn deferred_settles_in_background(h: &Harness) {
    let b = h.payment("/deferred/weather/lima").await;
    let resp = h
        .http
        .get(format!("{}/deferred/weather/lima", h.url))
        .header("payment-signature", v2_header(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(h.upstream.last().path_and_query, "/weather/lima", "strip_prefix applied");
    let id = resp.headers()["tollgate-receipt"].to_str().unwrap().to_owned();
    assert!(!resp.headers().contains_key("payment-response"), "no x402 receipt before settlement");
    assert_eq!(resp.headers()["tollgate-settlement"], "deferred");
    let entry = h.wait_state(&b, EntryState::Settled).await;
    assert_eq!(entry.id.to_string(), id);
    let r: serde_json::Value =
        h.http.get(format!("{}/receipts/{id}", h.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["state"], "settled");
    assert_eq!(r["transaction"], format!("{:#x}", entry.tx_hash.unwrap()));
    assert_eq!(h.payee_balance().await, U256::from(PRICE_ATOMIC));

    let b = h.payment("/deferred/fail").await;
    let resp =
        h.http.get(format!("{}/deferred/fail", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    h.wait_state(&b, EntryState::Voided).await;
    assert_eq!(h.payee_balance().await, U256::from(PRICE_ATOMIC));
}
both_engines!(deferred, deferred_settles_in_background);

// Goal: a `before` route settles first, then forwards; an upstream failure after settlement
// is recorded as a refund owed (the payee was paid).
async fn before_settles_first(h: &Harness) {
    let b = h.payment("/before/weather/kyiv").await;
    let resp = h
        .http
        .get(format!("{}/before/weather/kyiv", h.url))
        .header("payment-signature", v2_header(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(receipt_of(&resp, "payment-response").success);
    h.wait_state(&b, EntryState::Settled).await;

    let b = h.payment("/before/fail").await;
    let resp =
        h.http.get(format!("{}/before/fail", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let entry = h.wait_state(&b, EntryState::RefundOwed).await;
    assert_eq!(entry.reason.as_deref(), Some("upstream_5xx"));
    assert_eq!(h.payee_balance().await, U256::from(2 * PRICE_ATOMIC));
}
both_engines!(before, before_settles_first);
