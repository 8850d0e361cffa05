//! Mode `after`: the paid call end to end, and what is not charged.

use alloy_primitives::U256;
use axum::http::StatusCode;
use tollgate_metering::EntryState;
use tollgate_test_support::{v1_header, v2_header};

use crate::both_engines;
use crate::harness::{API_KEY, Harness, PRICE_ATOMIC, receipt_of};

// Goal: an unpaid call gets a 402 with the v2 header and the v1 body; a paid v2 call is
// forwarded with the injected key, settled on chain once, recorded as settled, and answered
// with both receipt headers.
async fn paid_v2_call_settles(h: &Harness) {
    let unpaid = h.http.get(format!("{}/weather/london", h.url)).send().await.unwrap();
    assert_eq!(unpaid.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(unpaid.headers()["cache-control"], "no-store");
    assert!(unpaid.headers().contains_key("payment-required"));
    let body: serde_json::Value = unpaid.json().await.unwrap();
    assert_eq!(body["x402Version"], 1);
    assert_eq!(body["accepts"][0]["network"], "base");
    assert_eq!(body["accepts"][0]["maxAmountRequired"], PRICE_ATOMIC.to_string());
    assert_eq!(body["accepts"][0]["resource"], "http://gateway.test/weather/london");
    assert_eq!(h.upstream.calls(), 0, "an unpaid call must not reach the upstream");

    let b = h.payment("/weather/london").await;
    let resp = h
        .http
        .get(format!("{}/weather/london?units=metric", h.url))
        .header("payment-signature", v2_header(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let receipt = receipt_of(&resp, "payment-response");
    assert!(receipt.success);
    assert_eq!(receipt.network, "eip155:8453");
    assert_eq!(receipt.payer, Some(h.payer.address()));
    let v1_receipt = receipt_of(&resp, "x-payment-response");
    assert_eq!(v1_receipt.network, "base");
    assert_eq!(v1_receipt.transaction, receipt.transaction);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["city"], "london");

    let seen = h.upstream.last();
    assert_eq!(seen.path_and_query, "/weather/london?units=metric");
    assert_eq!(seen.headers["authorization"], format!("Bearer {API_KEY}"));
    assert!(!seen.headers.contains_key("payment-signature"));
    assert_eq!(h.payee_balance().await, U256::from(PRICE_ATOMIC));
    let entry = h.entry_for(&b).await.expect("ledger entry");
    assert_eq!(entry.state, EntryState::Settled);
    assert_eq!(entry.tx_hash.map(|t| format!("{t:#x}")), Some(receipt.transaction.clone()));
    assert_eq!(entry.upstream_status, Some(200));
}
both_engines!(paid_v2_call, paid_v2_call_settles);

// Goal: a v1 client's X-PAYMENT is accepted on the same route and answered with
// X-PAYMENT-RESPONSE.
async fn paid_v1_call_settles(h: &Harness) {
    let b = h.payment("/weather/paris").await;
    let resp = h.http.get(format!("{}/weather/paris", h.url)).header("x-payment", v1_header(&b)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(receipt_of(&resp, "x-payment-response").success);
    assert_eq!(h.wait_state(&b, EntryState::Settled).await.amount.get(), PRICE_ATOMIC);
}
both_engines!(paid_v1_call, paid_v1_call_settles);

// Goal: upstream 5xx, 4xx, timeout and unreachable are passed on and never charged: the
// entry is voided and no transfer happens.
async fn upstream_failures_are_not_charged(h: &Harness) {
    for (path, status) in [("/fail", 500u16), ("/missing", 404), ("/slow", 504), ("/down", 502)] {
        let b = h.payment(path).await;
        let resp =
            h.http.get(format!("{}{path}", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        assert!(!resp.headers().contains_key("payment-response"), "{path}: no receipt when not charged");
        let entry = h.wait_state(&b, EntryState::Voided).await;
        assert!(entry.reason.is_some());
        assert!(!h.chain.authorization_used(b.from, b.nonce).await.unwrap(), "{path}: authorization untouched");
    }
    assert_eq!(h.payee_balance().await, U256::ZERO);
}
both_engines!(upstream_failures, upstream_failures_are_not_charged);

// Goal: a 3xx from the upstream is relayed, not followed, and not charged (a redirect is not
// the resource): the entry is voided `upstream_redirect`, and a Location outside the upstream
// base is dropped (hostile_upstream.rs covers rewriting and `charge_redirects`).
async fn redirect_is_relayed_not_followed(h: &Harness) {
    let b = h.payment("/redirect").await;
    let resp =
        h.http.get(format!("{}/redirect", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert!(!resp.headers().contains_key("location"));
    assert!(!resp.headers().contains_key("payment-response"));
    let entry = h.wait_state(&b, EntryState::Voided).await;
    assert_eq!(entry.reason.as_deref(), Some("upstream_redirect"));
    assert_eq!(h.payee_balance().await, U256::ZERO);
}
both_engines!(redirect, redirect_is_relayed_not_followed);

// Goal: when settlement fails after the upstream answered (the payer emptied the wallet
// while the call was in flight), the agent gets 402 with `success:false`, the upstream body
// is withheld, nothing is charged and the entry is `settle_failed`.
async fn settlement_failure_withholds_the_body(h: &Harness) {
    h.chain.fund_gas(h.payer.address()).await.unwrap();
    let b = h.payment("/slowok").await;
    let (http, url, header) = (h.http.clone(), format!("{}/slowok", h.url), v2_header(&b));
    let call = tokio::spawn(async move { http.get(url).header("payment-signature", header).send().await.unwrap() });
    // While the upstream takes its time, the payer moves everything away.
    for _ in 0..200 {
        if h.upstream.calls() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let all = h.chain.balance(h.payer.address()).await.unwrap();
    let drain = tollgate_test_support::TokenCall::transferCall {
        to: tollgate_test_support::random_key().address(),
        value: all,
    };
    h.chain.send_as(h.payer.clone(), h.chain.token, alloy_sol_types::SolCall::abi_encode(&drain)).await.unwrap();
    let resp = call.await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    let receipt = receipt_of(&resp, "payment-response");
    assert!(!receipt.success);
    assert_eq!(receipt.error_reason.as_deref(), Some("invalid_exact_evm_insufficient_balance"));
    assert_eq!(receipt.transaction, "");
    let text = resp.text().await.unwrap();
    assert!(!text.contains("slow but fine"), "the upstream body must be withheld");
    let entry = h.wait_state(&b, EntryState::SettleFailed).await;
    assert_eq!(entry.upstream_status, Some(200));
    assert_eq!(h.payee_balance().await, U256::ZERO);
}
both_engines!(settlement_failure, settlement_failure_withholds_the_body);

// Goal: a receipt that does not arrive in time is reported as x402 `settlement_pending` with
// its transaction hash (`Tollgate-Settlement: pending`, body delivered), never as "not
// charged"; the entry stays `settling` and the recovery sweep settles it once mined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_receipt_is_pending_then_recovered() {
    let opts = crate::harness::Options { receipt_timeout_ms: 100, ..Default::default() };
    let h = Harness::start_with(crate::harness::Engine::Sqlite, opts).await.unwrap();
    h.chain.rpc("evm_setAutomine", serde_json::json!([false])).await.unwrap();
    let b = h.payment("/weather/quito").await;
    let resp =
        h.http.get(format!("{}/weather/quito", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["tollgate-settlement"], "pending");
    let receipt = receipt_of(&resp, "payment-response");
    assert!(!receipt.success, "x402 settlement_pending is not a success");
    assert_eq!(receipt.error_reason.as_deref(), Some("settlement_pending"));
    assert!(receipt.transaction.starts_with("0x"), "the hash is given");
    let entry = h.wait_state(&b, EntryState::Settling).await;
    assert_eq!(entry.tx_hash.map(|t| format!("{t:#x}")), Some(receipt.transaction.clone()));

    h.chain.rpc("evm_mine", serde_json::json!([])).await.unwrap();
    h.clock.set(h.now + 7_200); // past the recovery grace period
    tollgate_gateway::settlement::recover_once(&h.gateway.settlements).await.unwrap();
    let entry = h.wait_state(&b, EntryState::Settled).await;
    assert_eq!(entry.tx_hash.map(|t| format!("{t:#x}")), Some(receipt.transaction));
    assert_eq!(h.payee_balance().await, U256::from(PRICE_ATOMIC));
    h.stop().await;
}
