//! One authorization, many concurrent requests.

use alloy_primitives::U256;
use axum::http::StatusCode;
use tollgate_test_support::v2_header;

use crate::{Harness, PRICE_ATOMIC, both_engines};

// Goal: 50 concurrent replays of one payment header lead to exactly one upstream call and
// one on-chain transfer; every other request is refused (402 used / 409 in flight).
async fn fifty_replays_one_charge(h: &Harness) {
    let b = h.payment("/weather/oslo").await;
    let header = v2_header(&b);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (http, url, header) = (h.http.clone(), format!("{}/weather/oslo", h.url), header.clone());
        tasks.push(tokio::spawn(async move {
            http.get(url).header("payment-signature", header).send().await.unwrap().status()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::PAYMENT_REQUIRED | StatusCode::CONFLICT => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 1, "exactly one replay is served");
    assert_eq!(h.upstream.calls(), 1, "exactly one upstream call");
    assert_eq!(h.payee_balance().await, U256::from(PRICE_ATOMIC), "exactly one transfer");
}
both_engines!(replays, fifty_replays_one_charge);
