//! Spend controls: refused before signing, per call, total, per host, across restarts; and
//! the allowlist.

use alloy_primitives::U256;
use tollgate_client::{AllowedAsset, Budget, ClientError, HeaderMap, Method, PayingClient, USDC_BASE_SEPOLIA};
use tollgate_x402::Network;

use crate::harness::{Harness, PRICE, client_config, lossy_proxy};

// Goal: a per-call cap or a total budget below the price refuses before anything is
// signed: BudgetExceeded names the budget and the numbers, no record is written, and the
// gateway never sees a payment (no ledger entry, upstream untouched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_refuse_before_signing() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/weather/paris", h.url);

    let mut per_call = client_config(&payer, &dir.path().join("a.json"));
    per_call.limits.max_per_call_atomic = Some(U256::from(PRICE - 1));
    let client = PayingClient::new(per_call).unwrap();
    match client.send(Method::GET, &url, HeaderMap::new(), "").await {
        Err(ClientError::BudgetExceeded { budget: Budget::PerCall, limit, spent, requested }) => {
            assert_eq!((limit, spent, requested), (U256::from(PRICE - 1), U256::ZERO, U256::from(PRICE)));
        }
        other => panic!("expected a per-call refusal, got {other:?}"),
    }
    assert!(client.records().await.unwrap().is_empty());

    let mut total = client_config(&payer, &dir.path().join("b.json"));
    total.limits.total_budget_atomic = Some(U256::from(PRICE - 1));
    let client = PayingClient::new(total).unwrap();
    let err = client.send(Method::GET, &url, HeaderMap::new(), "").await.unwrap_err();
    assert!(matches!(err, ClientError::BudgetExceeded { budget: Budget::Total, .. }), "{err}");
    assert!(client.records().await.unwrap().is_empty());

    assert!(h.entries(payer.address()).await.is_empty(), "the gateway saw no payment");
    assert_eq!(h.upstream.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(h.payee_balance().await, U256::ZERO);
}

// Goal: the per-host budget is kept per host:port (another host is still allowed), and
// every budget holds across a new PayingClient on the same store file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_host_budget_and_persistence_across_clients() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let (other_host, _) = lossy_proxy(h.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("spend.json");
    let mut config = client_config(&payer, &store);
    config.limits.per_host_budget_atomic = Some(U256::from(PRICE + PRICE / 2));
    config.limits.total_budget_atomic = Some(U256::from(2 * PRICE + PRICE / 2));
    let direct = format!("{}/weather/a", h.url);
    let proxied = format!("{other_host}/weather/b");

    let client = PayingClient::new(config.clone()).unwrap();
    client.send(Method::GET, &direct, HeaderMap::new(), "").await.unwrap();
    match client.send(Method::GET, &direct, HeaderMap::new(), "").await {
        Err(ClientError::BudgetExceeded { budget: Budget::Host { host }, spent, .. }) => {
            assert_eq!(host, h.url.trim_start_matches("http://"));
            assert_eq!(spent, U256::from(PRICE));
        }
        other => panic!("expected a host refusal, got {other:?}"),
    }
    client.send(Method::GET, &proxied, HeaderMap::new(), "").await.unwrap();
    drop(client);

    // A new client (as after a restart) on the same file: 2 × PRICE already counted.
    let client = PayingClient::new(config).unwrap();
    let spent = client.spent().await.unwrap();
    assert_eq!(spent.total_atomic, U256::from(2 * PRICE));
    assert_eq!(spent.per_host_atomic.len(), 2);
    match client.send(Method::GET, &proxied, HeaderMap::new(), "").await {
        Err(ClientError::BudgetExceeded { budget: Budget::Total, spent, .. }) => {
            assert_eq!(spent, U256::from(2 * PRICE))
        }
        other => panic!("expected a total refusal, got {other:?}"),
    }
    assert_eq!(h.entries(payer.address()).await.len(), 2);
    assert_eq!(h.payee_balance().await, U256::from(2 * PRICE));
}

// Goal: an allowlist without the gateway's (network, asset) gives NoAcceptableRequirement
// listing what was offered, and nothing is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acceptable_requirement_lists_the_offers() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = client_config(&payer, &dir.path().join("spend.json"));
    config.allow = vec![AllowedAsset { network: Network::BASE_SEPOLIA, asset: USDC_BASE_SEPOLIA }];
    let client = PayingClient::new(config).unwrap();

    match client.send(Method::GET, &format!("{}/weather/x", h.url), HeaderMap::new(), "").await {
        Err(ClientError::NoAcceptableRequirement { offered }) => {
            assert_eq!(offered.len(), 1);
            assert_eq!((offered[0].network.as_str(), offered[0].amount.as_str()), ("eip155:8453", "1000"));
        }
        other => panic!("expected NoAcceptableRequirement, got {other:?}"),
    }
    assert!(client.records().await.unwrap().is_empty());
}
