//! Paying: v2 end to end, a v1-only server, a deferred route, an upstream failure.

use alloy_primitives::U256;
use tollgate_client::{HeaderMap, Method, PayingClient, RecordState, StatusCode};
use tollgate_metering::EntryState;

use crate::harness::{Harness, PRICE, client_config, v1_front};

// Goal: a v2 challenge is paid end to end: 200 with the upstream's body, the
// PAYMENT-RESPONSE receipt decoded with its transaction, one `paid` record, the payee paid
// on chain, and the gateway's ledger settled with the same transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pays_a_v2_route_end_to_end() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let client = PayingClient::new(client_config(&payer, &dir.path().join("spend.json"))).unwrap();

    let paid = client.send(Method::GET, &format!("{}/weather/paris", h.url), HeaderMap::new(), "").await.unwrap();

    assert_eq!(paid.status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&paid.body).unwrap();
    assert_eq!(body["city"], "paris");
    let receipt = paid.receipt.clone().expect("receipt");
    assert!(receipt.success);
    assert_eq!(receipt.payer, Some(payer.address()));
    assert_eq!(receipt.network, "eip155:8453");
    let record = paid.payment.clone().expect("payment record");
    assert_eq!(record.state, RecordState::Paid);
    assert_eq!(record.amount.0, U256::from(PRICE));
    assert_eq!(record.x402_version, 2);
    assert_eq!(record.header_name, "PAYMENT-SIGNATURE");
    assert_eq!(record.transaction.as_deref(), Some(receipt.transaction.as_str()));
    assert_eq!(h.payee_balance().await, U256::from(PRICE));
    let entries = h.entries(payer.address()).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].state, EntryState::Settled);
    assert_eq!(entries[0].nonce, record.nonce);
    assert_eq!(format!("{:#x}", entries[0].tx_hash.unwrap()), receipt.transaction);
    assert_eq!(client.records().await.unwrap(), vec![record]);
    assert_eq!(client.spent().await.unwrap().total_atomic, U256::from(PRICE));

    // A path the gateway does not sell is not paid: the answer comes back as is.
    let free = client.send(Method::GET, &format!("{}/nowhere", h.url), HeaderMap::new(), "").await.unwrap();
    assert_eq!(free.status, StatusCode::NOT_FOUND);
    assert!(free.payment.is_none() && free.receipt.is_none());
    assert_eq!(client.records().await.unwrap().len(), 1);
}

// Goal: a v1-only server (v1 JSON body, no PAYMENT-REQUIRED header) is paid with a v1
// X-PAYMENT on the `base` network name, settled by the gateway on chain 8453, and the
// X-PAYMENT-RESPONSE receipt is decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pays_a_v1_only_challenge() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let (front, seen) = v1_front(h.url.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let client = PayingClient::new(client_config(&payer, &dir.path().join("spend.json"))).unwrap();

    let paid = client.send(Method::GET, &format!("{front}/weather/rome"), HeaderMap::new(), "").await.unwrap();

    assert_eq!(paid.status, StatusCode::OK);
    assert_eq!(*seen.lock().unwrap(), vec![1u8], "exactly one v1 payment header reached the server");
    let receipt = paid.receipt.expect("v1 receipt");
    assert!(receipt.success);
    assert_eq!(receipt.network, "base");
    let record = paid.payment.unwrap();
    assert_eq!((record.x402_version, record.header_name.as_str()), (1, "X-PAYMENT"));
    assert_eq!(record.state, RecordState::Paid);
    assert_eq!(h.payee_balance().await, U256::from(PRICE));
}

// Goal: a deferred route answers before settling (a Tollgate-Receipt id, and either no
// x402 receipt or one with an empty transaction): the record is `paid_pending` (counted),
// not failed, and names the receipt id; the gateway's worker then settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_settlement_is_paid_pending() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let client = PayingClient::new(client_config(&payer, &dir.path().join("spend.json"))).unwrap();

    let url = format!("{}/deferred/weather/oslo", h.url);
    let paid = client.send(Method::GET, &url, HeaderMap::new(), "").await.unwrap();

    assert_eq!(paid.status, StatusCode::OK);
    let id = paid.headers["tollgate-receipt"].to_str().unwrap().to_owned();
    if let Some(receipt) = &paid.receipt {
        assert!(receipt.success && receipt.transaction.is_empty(), "{receipt:?}");
    }
    let record = paid.payment.unwrap();
    assert_eq!(record.state, RecordState::PaidPending);
    assert!(record.reason.as_deref().unwrap_or_default().contains(&id), "{record:?}");
    assert_eq!(client.spent().await.unwrap().total_atomic, U256::from(PRICE));
    h.wait_state(payer.address(), EntryState::Settled).await;
    assert_eq!(h.payee_balance().await, U256::from(PRICE));
}

// Goal: an upstream failure after payment: the gateway voids and sends no receipt, so the
// record is `failed` (not counted), the status reaches the caller, and nobody is paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failure_is_recorded_failed_and_not_counted() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let client = PayingClient::new(client_config(&payer, &dir.path().join("spend.json"))).unwrap();

    let paid = client.send(Method::GET, &format!("{}/fail", h.url), HeaderMap::new(), "").await.unwrap();

    assert_eq!(paid.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(paid.receipt.is_none());
    assert_eq!(paid.payment.unwrap().state, RecordState::Failed);
    assert_eq!(client.spent().await.unwrap().total_atomic, U256::ZERO);
    let entries = h.wait_terminal(payer.address()).await;
    assert_eq!(entries[0].state, EntryState::Voided);
    assert_eq!(h.payee_balance().await, U256::ZERO);
}

#[path = "../../examples/pay.rs"]
#[allow(dead_code)]
mod example;

// Goal: the SDK's example program (`examples/pay.rs`, no test kit) pays a gateway served over
// https with a certificate from a private CA: the key and the CA file come through its
// environment lookup, the call is paid and settled on chain, and the same program without the
// CA refuses the certificate before signing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_program_pays_over_https() {
    let ca = tollgate_test_support::TestCa::new().unwrap();
    let h = Harness::start_tls(3600, &ca).await;
    assert!(h.url.starts_with("https://localhost:"), "{}", h.url);
    let payer = h.funded_payer(1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("spend.json");
    let key = format!("{:#x}", payer.to_bytes());
    let env = |ca_file: bool| {
        let (key, store, ca) = (key.clone(), store.display().to_string(), ca.ca_file().display().to_string());
        move |name: &str| match name {
            "TOLLGATE_KEY" => Some(key.clone()),
            "TOLLGATE_SPEND_FILE" => Some(store.clone()),
            "TOLLGATE_CA_FILE" if ca_file => Some(ca.clone()),
            _ => None,
        }
    };
    let url = format!("{}/weather/paris", h.url);

    let without_ca = example::config_from_env(&env(false)).unwrap();
    let err = example::pay(without_ca, &url).await.unwrap_err();
    assert!(err.to_string().contains("TLS handshake with localhost"), "{err}");
    let (paid, spent) = example::pay(example::config_from_env(&env(true)).unwrap(), &url).await.unwrap();

    assert_eq!(paid.status, StatusCode::OK);
    assert_eq!(paid.payment.as_ref().unwrap().state, RecordState::Paid);
    assert_eq!(spent.total_atomic, U256::from(PRICE));
    assert_eq!(h.payee_balance().await, U256::from(PRICE));
    assert_eq!(h.wait_terminal(payer.address()).await[0].state, EntryState::Settled);
}
