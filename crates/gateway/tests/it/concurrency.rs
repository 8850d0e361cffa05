//! One authorization, many concurrent requests.

use alloy_primitives::U256;
use axum::http::StatusCode;
use tollgate_test_support::v2_header;

use crate::both_engines;
use crate::harness::{Harness, PRICE_ATOMIC};

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

// Goal: two gateway replicas sharing one PostgreSQL ledger and one relayer key serve 50
// concurrent replays of one header (alternating between them) with exactly one upstream
// call and one on-chain transfer; then each replica settles its own fresh payments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_double_spend_guard() {
    let Some(h) = Harness::start(crate::harness::Engine::Postgres).await else { return };
    let (_replica, replica_url, _stop) = h.start_replica().await;
    let b = h.payment("/weather/rome").await;
    let header = v2_header(&b);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let base = if i % 2 == 0 { h.url.clone() } else { replica_url.clone() };
        let (http, header) = (h.http.clone(), header.clone());
        tasks.push(tokio::spawn(async move {
            http.get(format!("{base}/weather/rome")).header("payment-signature", header).send().await.unwrap().status()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(h.upstream.calls(), 1);
    assert_eq!(h.payee_balance().await, U256::from(PRICE_ATOMIC));

    // Both replicas settle from the same relayer key without tripping over its nonce.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let base = if i % 2 == 0 { h.url.clone() } else { replica_url.clone() };
        let header = v2_header(&h.payment("/weather/rome").await);
        let http = h.http.clone();
        tasks.push(tokio::spawn(async move {
            http.get(format!("{base}/weather/rome")).header("payment-signature", header).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(h.payee_balance().await, U256::from(7 * PRICE_ATOMIC));
    h.stop().await;
}
