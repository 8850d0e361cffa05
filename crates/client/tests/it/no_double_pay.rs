//! One logical request never pays twice: lost responses re-send the same authorization; a
//! fresh one is signed only after a definite refusal; a crash leaves the spend counted.

use std::time::Duration;

use alloy_primitives::U256;
use tollgate_client::{ClientError, HeaderMap, Method, PayingClient, RecordState, StatusCode};
use tollgate_metering::EntryState;

use crate::harness::{Harness, Lose, PRICE, TestClock, client_config, lossy_proxy};

// Goal: the gateway settles but the answer is lost on the way back (the proxy closes the
// connection): the client re-sends the *same* header (same payment identifier), and the
// gateway, which keeps no body on this route, answers 409 payment_already_processed with the
// receipt. The client records the payment paid with its transaction. Exactly one record, one
// ledger entry, one upstream call, one on-chain transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_response_resends_the_same_authorization() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let (proxy, lose) = lossy_proxy(h.addr()).await;
    *lose.lock().unwrap() = Some(Lose::Response);
    let dir = tempfile::tempdir().unwrap();
    let client = PayingClient::new(client_config(&payer, &dir.path().join("spend.json"))).unwrap();

    let paid = client.send(Method::GET, &format!("{proxy}/weather/lima"), HeaderMap::new(), "").await.unwrap();

    assert_eq!(paid.status, StatusCode::CONFLICT);
    let body: serde_json::Value = serde_json::from_slice(&paid.body).unwrap();
    assert_eq!(body["error"]["code"], "payment_already_processed");
    let receipt = paid.receipt.expect("the replayed receipt");
    assert!(receipt.success);
    let records = client.records().await.unwrap();
    assert_eq!(records.len(), 1, "one authorization for one logical request");
    assert_eq!(records[0].state, RecordState::Paid);
    assert_eq!(records[0].transaction.as_deref(), Some(receipt.transaction.as_str()));
    assert_eq!(client.spent().await.unwrap().total_atomic, U256::from(PRICE));
    let entries = h.entries(payer.address()).await;
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].nonce, entries[0].state), (records[0].nonce, EntryState::Settled));
    assert_eq!(h.upstream.calls.load(std::sync::atomic::Ordering::SeqCst), 1, "the upstream is called once");
    assert_eq!(h.payee_balance().await, U256::from(PRICE), "exactly one transfer");
}

// Goal (issue 19): the response is lost on the way back (a TCP proxy drops it) on a route that
// keeps answers for replays: the client's retry carries the same payment identifier and
// payment, and gets the same receipt and the same body; the upstream was called once, one
// entry, one transfer on chain, one record `paid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_response_is_replayed_by_payment_id() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let (proxy, lose) = lossy_proxy(h.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let client = PayingClient::new(client_config(&payer, &dir.path().join("spend.json"))).unwrap();
    *lose.lock().unwrap() = Some(Lose::Response);

    let paid = client.send(Method::GET, &format!("{proxy}/kept/weather/lima"), HeaderMap::new(), "").await.unwrap();

    assert_eq!(paid.status, StatusCode::OK);
    assert_eq!(paid.headers["tollgate-payment-id"], "replayed", "the answer came from the stored outcome");
    let body: serde_json::Value = serde_json::from_slice(&paid.body).unwrap();
    assert_eq!(body["city"], "lima");
    let receipt = paid.receipt.expect("receipt");
    assert!(receipt.success);
    let records = client.records().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, RecordState::Paid);
    assert_eq!(records[0].transaction.as_deref(), Some(receipt.transaction.as_str()));
    let entries = h.entries(payer.address()).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].tx_hash.map(|t| format!("{t:#x}")), Some(receipt.transaction.clone()));
    assert_eq!(h.upstream.calls.load(std::sync::atomic::Ordering::SeqCst), 1, "the upstream is called once");
    assert_eq!(h.payee_balance().await, U256::from(PRICE), "one transfer on chain");
}

// Goal: the connection drops while the gateway is still working on the paid call: the
// same header (same payment identifier) is re-sent, answered 409 payment_in_flight and then
// 409 payment_already_processed with the receipt once the first delivery finishes; still one
// record (paid), one entry, one transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_lost_while_in_flight_polls_with_the_same_header() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let (proxy, lose) = lossy_proxy(h.addr()).await;
    *lose.lock().unwrap() = Some(Lose::ClientSide);
    let dir = tempfile::tempdir().unwrap();
    let mut config = client_config(&payer, &dir.path().join("spend.json"));
    config.retries = 8;
    config.retry_backoff_initial = Duration::from_millis(100);
    config.retry_backoff_max = Duration::from_millis(500);
    let client = PayingClient::new(config).unwrap();

    let paid = client.send(Method::GET, &format!("{proxy}/slow"), HeaderMap::new(), "").await.unwrap();

    assert_eq!(paid.status, StatusCode::CONFLICT, "payment_already_processed");
    assert!(paid.receipt.is_some_and(|r| r.success));
    let records = client.records().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, RecordState::Paid);
    let nonce = records[0].nonce;
    let entries = h.wait_terminal(payer.address()).await;
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].nonce, entries[0].state), (nonce, EntryState::Settled));
    assert_eq!(h.payee_balance().await, U256::from(PRICE));
}

// Goal: a definite refusal (the gateway's settlement failed — the chain moved past the
// authorization's validBefore while the upstream answered — so 402 settlement_failed and
// nothing charged) leads to exactly one fresh authorization, which is paid: two records
// (refused, then paid), ledger settle_failed + settled, one on-chain transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definite_refusal_signs_one_fresh_authorization() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let clock = TestClock::system();
    *h.upstream.warp.lock().unwrap() = Some((h.chain.anvil.url.clone(), clock.clone()));
    let dir = tempfile::tempdir().unwrap();
    let mut config = client_config(&payer, &dir.path().join("spend.json"));
    config.clock = clock;
    let client = PayingClient::new(config).unwrap();

    let paid = client.send(Method::GET, &format!("{}/warp", h.url), HeaderMap::new(), "").await.unwrap();

    assert_eq!(paid.status, StatusCode::OK);
    let records = client.records().await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].state, RecordState::Refused);
    assert_eq!(records[0].reason.as_deref(), Some("settlement_failed"));
    assert_eq!(records[1].state, RecordState::Paid);
    assert_ne!(records[0].nonce, records[1].nonce);
    assert_eq!(client.spent().await.unwrap().total_atomic, U256::from(PRICE), "the refused one is not counted");
    let mut states: Vec<_> = h.entries(payer.address()).await.iter().map(|e| e.state).collect();
    states.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(states, vec![EntryState::SettleFailed, EntryState::Settled]);
    assert_eq!(h.payee_balance().await, U256::from(PRICE));
}

// Goal: a refusal a new authorization cannot cure (the payer has no funds) is reported as
// PaymentRejected with the gateway's code after one attempt; the record is `refused` and
// not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incurable_refusal_is_rejected_once() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(0).await;
    let dir = tempfile::tempdir().unwrap();
    let client = PayingClient::new(client_config(&payer, &dir.path().join("spend.json"))).unwrap();

    let err = client.send(Method::GET, &format!("{}/weather/x", h.url), HeaderMap::new(), "").await.unwrap_err();

    let ClientError::PaymentRejected { reason, .. } = err else { panic!("{err:?}") };
    assert_eq!(reason, "invalid_exact_evm_insufficient_balance");
    let records = client.records().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, RecordState::Refused);
    assert_eq!(client.spent().await.unwrap().total_atomic, U256::ZERO);
}

// Goal: a payment left `sent` (transport failure with retries exhausted, as after a crash)
// stays counted by a new client on the same store; `resume` lists it, and `resend`
// re-sends the same header, learning that the first delivery was processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolved_payment_stays_counted_and_can_be_resent() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let (proxy, lose) = lossy_proxy(h.addr()).await;
    *lose.lock().unwrap() = Some(Lose::Response);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("spend.json");
    let mut config = client_config(&payer, &store);
    config.retries = 0;
    let client = PayingClient::new(config.clone()).unwrap();
    let err = client.send(Method::GET, &format!("{proxy}/weather/kyiv"), HeaderMap::new(), "").await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { payment_in_doubt: true, .. }), "{err:?}");
    drop(client);

    config.limits.total_budget_atomic = Some(U256::from(PRICE + PRICE / 2));
    let client = PayingClient::new(config).unwrap();
    let open = client.resume().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].state, RecordState::Sent);
    let err = client.send(Method::GET, &format!("{}/weather/kyiv", h.url), HeaderMap::new(), "").await.unwrap_err();
    assert!(matches!(err, ClientError::BudgetExceeded { .. }), "the sent payment is counted: {err:?}");

    // The same header, so the same payment identifier: the gateway names the processed payment.
    let paid = client.resend(open[0].nonce, HeaderMap::new(), "").await.unwrap();
    assert_eq!(paid.status, StatusCode::CONFLICT);
    assert!(paid.receipt.is_some_and(|r| r.success));
    let records = client.records().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, RecordState::Paid);
    assert_eq!(h.entries(payer.address()).await.len(), 1);
    assert_eq!(h.payee_balance().await, U256::from(PRICE));
}

// Goal: the gateway's relayer cannot pay gas, so the settlement broadcast is refused after the
// claim. The gateway says so with 503 `settlement_unavailable` (nothing charged, for good);
// the client signs no second authorization for the call, records it failed, and after the
// relayer is funded and the sweep has run nothing was charged (today: a 402 "not charged",
// a fresh authorization paid, and the first one charged later too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayer_out_of_gas_is_one_uncharged_attempt() {
    let h = Harness::start(0).await;
    let payer = h.funded_payer(1_000_000).await;
    let relayer = format!("{:#x}", tollgate_test_support::anvil_key(9).address());
    h.chain.rpc("anvil_setBalance", serde_json::json!([relayer, "0x0"])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = PayingClient::new(client_config(&payer, &dir.path().join("spend.json"))).unwrap();

    let paid = client.send(Method::GET, &format!("{}/weather/lima", h.url), HeaderMap::new(), "").await.unwrap();

    assert_eq!(paid.status, StatusCode::SERVICE_UNAVAILABLE);
    let records = client.records().await.unwrap();
    assert_eq!(records.len(), 1, "no second authorization");
    assert_eq!(records[0].state, RecordState::Failed);
    assert_eq!(client.spent().await.unwrap().total_atomic, U256::ZERO);
    h.chain.rpc("anvil_setBalance", serde_json::json!([relayer, "0x56BC75E2D63100000"])).await.unwrap();
    let entry = h.wait_terminal(payer.address()).await;
    assert_eq!(entry.len(), 1);
    assert_eq!(entry[0].state, EntryState::Voided);
    tollgate_gateway::settlement::recover_once(&h.gateway.settlements).await.unwrap();
    assert!(!h.chain.authorization_used(payer.address(), records[0].nonce).await.unwrap());
    assert_eq!(h.payee_balance().await, U256::ZERO);
}
