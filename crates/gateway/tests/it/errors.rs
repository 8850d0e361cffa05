//! Bad input gets a clear 4xx with a stable code and never reaches the upstream.

use axum::http::StatusCode;
use tollgate_test_support::{random_key, v2_header};

use crate::both_engines;
use crate::harness::Harness;

async fn code_of(resp: reqwest::Response) -> (StatusCode, String, bool) {
    let status = resp.status();
    let has_challenge = resp.headers().contains_key("payment-required");
    let body: serde_json::Value = resp.json().await.unwrap();
    let code = body["error"]["code"].as_str().or(body["error"].as_str()).unwrap_or_default().to_owned();
    (status, code, has_challenge)
}

// Goal: routing errors are 404/405/400, never 402, and never reach the upstream.
async fn routing_errors(h: &Harness) {
    let get = |p: &str| h.http.get(format!("{}{p}", h.url)).send();
    assert_eq!(code_of(get("/nope").await.unwrap()).await, (StatusCode::NOT_FOUND, "route_not_found".into(), false));
    assert_eq!(
        code_of(get("/echo").await.unwrap()).await,
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into(), false)
    );
    for bad in ["/weather/..%2fadmin", "/weather/%2e%2e", "/weather/a%5c..%5cb", "/weather/../admin", "/weather/./x"] {
        let (status, body) = h.raw_get(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("path_refused"), "{bad}: {body}");
    }
    assert_eq!(code_of(get("/receipts/zz").await.unwrap()).await.1, "receipt_not_found");
    assert_eq!(h.upstream.calls(), 0);
}
both_engines!(routing, routing_errors);

// Goal: undecodable payment headers are 400 `malformed_payment`; well-formed but wrong
// payments are 402 with their reason code and a fresh challenge; none is forwarded.
async fn payment_errors(h: &Harness) {
    let send =
        |header: String| h.http.get(format!("{}/weather/rome", h.url)).header("payment-signature", header).send();
    let (status, code, _) = code_of(send("%%%".into()).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "malformed_payment"));
    let (status, code, _) = code_of(send("e30=".into()).await.unwrap()).await; // "{}"
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "malformed_payment"));
    let (status, _, _) = code_of(send("A".repeat(20_000)).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let mut b = h.payment("/weather/rome").await;
    b.value = alloy_primitives::U256::from(1u64);
    let (status, code, challenge) = code_of(send(v2_header(&b)).await.unwrap()).await;
    assert_eq!(
        (status, code.as_str(), challenge),
        (StatusCode::PAYMENT_REQUIRED, "invalid_exact_evm_payload_authorization_value_mismatch", true)
    );

    let mut b = h.payment("/weather/rome").await;
    b.offer.amount = tollgate_x402::DecimalU256::from(1u64);
    let (status, code, _) = code_of(send(v2_header(&b)).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::PAYMENT_REQUIRED, "accepted_requirement_mismatch"));

    let poor = tollgate_test_support::PaymentBuilder::new(&h.offer("/weather/rome").await, &random_key(), h.now);
    let (status, code, _) = code_of(send(v2_header(&poor)).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::PAYMENT_REQUIRED, "invalid_exact_evm_insufficient_balance"));

    let mut b = h.payment("/weather/rome").await;
    b.valid_before = h.now - 10;
    let (_, code, _) = code_of(send(v2_header(&b)).await.unwrap()).await;
    assert_eq!(code, "invalid_exact_evm_payload_authorization_valid_before");
    assert_eq!(h.upstream.calls(), 0);
}
both_engines!(payments, payment_errors);

// Goal: a request body over the route's cap is refused with 413 and not charged.
async fn body_cap(h: &Harness) {
    let b = h.payment_post("/echo").await;
    let resp = h
        .http
        .post(format!("{}/echo", h.url))
        .header("payment-signature", v2_header(&b))
        .body(vec![b'x'; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    h.wait_state(&b, tollgate_metering::EntryState::Voided).await;
    let b = h.payment_post("/echo").await;
    let resp = h
        .http
        .post(format!("{}/echo", h.url))
        .header("payment-signature", v2_header(&b))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "hello");
}
both_engines!(body_limits, body_cap);
