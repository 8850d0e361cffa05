//! `RpcFaultProxy` in front of a real anvil, driven by alloy (what the gateway uses) and by
//! raw JSON-RPC posts.

use std::time::{Duration, Instant};

use alloy::providers::{Provider, ProviderBuilder};
use serde_json::{Value, json};
use tollgate_test_support::{ANY_METHOD, Anvil, RpcFault, RpcFaultProxy};

async fn post(url: &str, body: Value) -> reqwest::Result<(u16, String)> {
    let client = tollgate_test_support::http();
    let resp = client.post(url).header("content-type", "application/json").body(body.to_string()).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

fn call(method: &str, id: u64) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": [] })
}

// Goal: every fault kind does what it says on the wire, rules change at runtime, "next K"
// expires, and calls are counted per method (faulted ones included).
#[tokio::test]
async fn faults_per_method_and_counts() {
    let anvil = Anvil::spawn(31337).await.unwrap();
    let proxy = RpcFaultProxy::start(&anvil.url).await.unwrap();
    let url = proxy.url();
    let provider = ProviderBuilder::new().connect_reqwest(tollgate_test_support::http(), url.parse().unwrap());

    // Pass-through.
    assert_eq!(provider.get_chain_id().await.unwrap(), 31337);
    assert_eq!(proxy.calls("eth_chainId"), 1);
    assert_eq!(proxy.calls("eth_blockNumber"), 0);

    // HTTP status.
    proxy.set("eth_blockNumber", RpcFault::Status(503));
    assert_eq!(post(&url, call("eth_blockNumber", 1)).await.unwrap().0, 503);
    assert!(provider.get_block_number().await.is_err());
    // Other methods are untouched.
    assert_eq!(provider.get_chain_id().await.unwrap(), 31337);

    // JSON-RPC error object.
    proxy.set("eth_blockNumber", RpcFault::RpcError { code: -32005, message: "limit exceeded".into() });
    let (status, body) = post(&url, call("eth_blockNumber", 7)).await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["id"], 7);
    assert_eq!(v["error"]["code"], -32005);
    assert_eq!(v["error"]["message"], "limit exceeded");

    // A result the node did not give (a lagging replica's `null`), then the node again.
    proxy.set("eth_getTransactionReceipt", RpcFault::Result(Value::Null));
    let (status, body) = post(&url, call("eth_getTransactionReceipt", 8)).await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, v["id"].clone(), v["result"].clone()), (200, json!(8), Value::Null));
    assert!(v.get("error").is_none(), "{v}");
    proxy.pass("eth_getTransactionReceipt");

    // Next K, then pass again.
    proxy.fail_next("eth_blockNumber", 2, RpcFault::Status(429));
    assert_eq!(post(&url, call("eth_blockNumber", 1)).await.unwrap().0, 429);
    assert_eq!(post(&url, call("eth_blockNumber", 1)).await.unwrap().0, 429);
    assert!(provider.get_block_number().await.is_ok());

    // Drop and reset: no HTTP answer at all.
    proxy.set("eth_blockNumber", RpcFault::Drop);
    assert!(post(&url, call("eth_blockNumber", 1)).await.is_err());
    proxy.set("eth_blockNumber", RpcFault::Reset);
    assert!(post(&url, call("eth_blockNumber", 1)).await.is_err());

    // Stall, then the node's answer.
    proxy.set("eth_blockNumber", RpcFault::Stall(Duration::from_millis(300)));
    let started = Instant::now();
    assert!(provider.get_block_number().await.is_ok());
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Wildcard rule, overridden by a method's own rule.
    proxy.pass_all();
    proxy.set(ANY_METHOD, RpcFault::Status(502));
    proxy.set("eth_chainId", RpcFault::RpcError { code: -1, message: "x".into() });
    assert_eq!(post(&url, call("eth_gasPrice", 1)).await.unwrap().0, 502);
    assert_eq!(post(&url, call("eth_chainId", 1)).await.unwrap().0, 200);
    proxy.pass_all();

    // Counting: every arrival counts, faulted or not.
    assert_eq!(proxy.calls("eth_blockNumber"), 9);
    proxy.reset_counts();
    assert_eq!(proxy.total_calls(), 0);
}

// Goal: a batch is counted per element; an RPC-error or result rule answers its own element
// while the rest reaches the node.
#[tokio::test]
async fn batches() {
    let anvil = Anvil::spawn(31337).await.unwrap();
    let proxy = RpcFaultProxy::start(&anvil.url).await.unwrap();
    proxy.set("eth_blockNumber", RpcFault::RpcError { code: -32000, message: "nope".into() });
    let (status, body) = post(&proxy.url(), json!([call("eth_chainId", 1), call("eth_blockNumber", 2)])).await.unwrap();
    assert_eq!(status, 200);
    let items: Vec<Value> = serde_json::from_str(&body).unwrap();
    let by_id = |id: u64| items.iter().find(|v| v["id"] == id).unwrap().clone();
    assert_eq!(by_id(1)["result"], "0x7a69");
    assert_eq!(by_id(2)["error"]["message"], "nope");
    assert_eq!(proxy.calls("eth_chainId"), 1);
    assert_eq!(proxy.calls("eth_blockNumber"), 1);

    // So does a result rule.
    proxy.set("eth_getLogs", RpcFault::Result(json!([])));
    let (status, body) = post(&proxy.url(), json!([call("eth_chainId", 1), call("eth_getLogs", 2)])).await.unwrap();
    assert_eq!(status, 200);
    let items: Vec<Value> = serde_json::from_str(&body).unwrap();
    let by_id = |id: u64| items.iter().find(|v| v["id"] == id).unwrap().clone();
    assert_eq!(by_id(1)["result"], "0x7a69");
    assert_eq!(by_id(2)["result"], json!([]));

    // A whole-exchange fault on any element decides the batch.
    proxy.set("eth_gasPrice", RpcFault::Status(503));
    let (status, _) = post(&proxy.url(), json!([call("eth_chainId", 1), call("eth_gasPrice", 2)])).await.unwrap();
    assert_eq!(status, 503);
}

// Goal: "forward then fail" lets the node execute the call (a transaction lands) while the
// client gets a 502, and "down" refuses connections until "up" on the same port.
#[tokio::test]
async fn forward_then_fail_and_down() {
    let anvil = Anvil::spawn(31337).await.unwrap();
    let proxy = RpcFaultProxy::start(&anvil.url).await.unwrap();
    let direct = ProviderBuilder::new().connect_reqwest(tollgate_test_support::http(), anvil.url.parse().unwrap());
    let before = direct.get_block_number().await.unwrap();

    proxy.set("evm_mine", RpcFault::ForwardThenFail);
    let (status, _) = post(&proxy.url(), call("evm_mine", 1)).await.unwrap();
    assert_eq!(status, 502);
    assert_eq!(direct.get_block_number().await.unwrap(), before + 1, "the node executed the call");

    proxy.down();
    let err = post(&proxy.url(), call("eth_chainId", 1)).await.unwrap_err();
    assert!(err.is_connect(), "refused while down: {err:?}");
    proxy.up().await.unwrap();
    assert_eq!(post(&proxy.url(), call("eth_chainId", 1)).await.unwrap().0, 200);
}
