//! A chain that is down, slow or not the one configured.

use std::time::Duration;

use tollgate_test_support::{Anvil, Deployment};
use tollgate_verifier::{AlloyChain, Fault, VerifyError};

use crate::Env;

// Goal: a node that stops answering turns verification into a chain error (not a client
// error), so the caller answers 503 rather than blaming the payment.
#[tokio::test]
async fn dead_node_is_a_chain_error() {
    let mut env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    let payment = env.payment().v2();
    env.chain.anvil.kill().await;
    let err = env.verifier.verify(&env.offer, &payment).await.unwrap_err();
    assert!(matches!(err, VerifyError::Rpc { .. }), "{err:?}");
    assert_eq!(err.fault(), Fault::Chain);
    assert!(!err.to_string().contains("127.0.0.1"), "errors must not carry the RPC URL: {err}");
}

// Goal: a node that accepts connections but never answers hits the per-call timeout.
#[tokio::test]
async fn silent_node_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            open.push(sock);
        }
    });
    let err =
        AlloyChain::connect(&url, 31337, Duration::from_millis(200), tollgate_test_support::http()).await.unwrap_err();
    assert_eq!(err, VerifyError::RpcTimeout { method: "eth_chainId", timeout_ms: 200 });
    hold.abort();
}

// Goal: connecting to a node that serves another chain id is refused at startup.
#[tokio::test]
async fn wrong_chain_id_is_refused_at_connect() {
    let anvil = Anvil::spawn(31337).await.unwrap();
    let err =
        AlloyChain::connect(&anvil.url, 8453, Duration::from_secs(5), tollgate_test_support::http()).await.unwrap_err();
    assert_eq!(err, VerifyError::NetworkMismatch { offered_chain_id: 8453, paid_chain_id: 31337 });
}

// Goal: an https RPC node whose certificate is not trusted fails at connect with the host and
// the reason, never the URL's path or query (hosted RPC URLs carry the API key there).
#[tokio::test]
async fn untrusted_rpc_certificate_names_the_host_not_the_url() {
    let anvil = Anvil::spawn(31337).await.unwrap();
    let ca = tollgate_test_support::TestCa::new().unwrap();
    let proxy = tollgate_test_support::RpcFaultProxy::start_tls(&anvil.url, ca.server_config(&["localhost"]).unwrap())
        .await
        .unwrap();
    let url = format!("{}/v2/PATHKEY31f0?apikey=QUERYKEY77aa", proxy.url());
    let err =
        AlloyChain::connect(&url, 31337, Duration::from_secs(5), tollgate_test_support::http()).await.unwrap_err();
    let text = err.to_string();
    let port = proxy.url().rsplit(':').next().unwrap().to_owned();
    assert!(text.contains(&format!("TLS handshake with localhost:{port} failed")), "{text}");
    assert!(text.contains("unknown issuer"), "{text}");
    assert!(!text.contains("PATHKEY31f0") && !text.contains("QUERYKEY77aa"), "{text}");
    assert!(!format!("{err:?}").contains("QUERYKEY77aa"), "{err:?}");
    // With the CA trusted, the same URL connects.
    AlloyChain::connect(&url, 31337, Duration::from_secs(5), ca.http()).await.unwrap();
}
