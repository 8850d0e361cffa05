//! Interop with the official x402 npm clients: the real `tollgate serve` binary, a real anvil
//! chain pretending to be Base (token at Base's USDC address, chain id 8453) and a real
//! upstream, paid by `@x402/fetch` 2.27.0 (v2) and `x402-fetch` 1.2.0 (v1) through the scripts
//! in `tests/interop/`, and by our own `tollgate-client`. Each test checks what the client saw
//! (status, body, the receipt as the client's own decoder reads it) against what happened on
//! chain and in the ledger.
//!
//! The node packages are installed by the test command (`npm ci --prefix tests`); without
//! them these tests fail with that instruction rather than skipping.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256, keccak256};
use serde_json::Value;
use tokio::process::Command;
use tollgate_metering::{EntryState, Ledger, LedgerOptions};
use tollgate_test_support::{
    ConfigBuilder, Deployment, MockUpstream, NetworkConfig, ProviderConfig, Reply, RouteConfig, TestChain, TestGateway,
    anvil_key, random_key,
};

const KEY: &str = "sk-interop-test-upstream-key";
/// 0.001 USDC: under both clients' default caps (v2: $1 per payment; v1: 0.1 USDC maxValue).
const PRICE: u64 = 1_000;
const MINTED: u64 = 1_000_000;
const UPSTREAM_BODY: &str = r#"{"weather":"sunny","temperature":21}"#;
const NODE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a deferred entry may take to settle (the worker is woken at once; the backlog
/// sweep runs every 200 ms as a fallback).
const DEFERRED_SETTLE_MAX: Duration = Duration::from_secs(10);

/// One test's world: chain, upstream, gateway process, payer and payee.
struct Scene {
    chain: TestChain,
    gateway: TestGateway,
    url: String,
    db_url: String,
    payer: PrivateKeySigner,
    payee: Address,
    upstream_hits: Arc<AtomicUsize>,
    /// Payment headers the upstream received (must stay empty: the gateway strips them).
    upstream_payment_headers: Arc<AtomicUsize>,
    gateway_log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Scene {
    async fn start() -> Scene {
        require_node_modules();
        let chain = TestChain::start(Deployment::BaseUsdc).await.unwrap();
        let payer = random_key();
        let payee = random_key().address();
        chain.mint(payer.address(), MINTED).await.unwrap();

        let upstream_hits = Arc::new(AtomicUsize::new(0));
        let upstream_payment_headers = Arc::new(AtomicUsize::new(0));
        let upstream = upstream(upstream_hits.clone(), upstream_payment_headers.clone()).await;

        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
        let config = dir.path().join("tollgate.toml");
        write_config(&config, &db_url, &chain.anvil.url, &upstream, payee);
        let gateway_log = Arc::new(Mutex::new(Vec::new()));
        let (gateway, url) = spawn_gateway(&config, gateway_log.clone()).await;
        Scene {
            chain,
            gateway,
            url,
            db_url,
            payer,
            payee,
            upstream_hits,
            upstream_payment_headers,
            gateway_log,
            _dir: dir,
        }
    }

    fn payer_key_hex(&self) -> String {
        format!("{:#x}", self.payer.to_bytes())
    }

    fn log_tail(&self) -> String {
        let log = self.gateway_log.lock().unwrap();
        log.iter().rev().take(30).rev().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Runs `tests/interop/<script>` against `path` and returns its JSON report.
    async fn pay(&self, script: &str, path: &str) -> Value {
        let script_path = repo_root().join("tests/interop").join(script);
        let run = Command::new("node")
            .arg(&script_path)
            .args([&self.url, &self.payer_key_hex(), path])
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(NODE_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| panic!("{script} did not finish within {NODE_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("could not run `node` (is Node.js on PATH?): {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{script} {path} failed ({}):\n{stderr}\n--- gateway log ---\n{}",
            out.status,
            self.log_tail()
        );
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{script} printed no JSON line ({e}): {stdout}"))
    }

    /// Polls `GET /receipts/{id}` until the entry is settled (bounded) and returns the body.
    async fn wait_settled(&self, id: &str) -> Value {
        let http = tollgate_test_support::http_builder().timeout(Duration::from_secs(5)).build().unwrap();
        let url = format!("{}/receipts/{id}", self.url);
        let deadline = tokio::time::Instant::now() + DEFERRED_SETTLE_MAX;
        loop {
            let resp = http.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "GET /receipts/{id}");
            let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
            match body["state"].as_str() {
                Some("settled") => return body,
                Some("reserved" | "forwarded" | "settling") => {}
                other => panic!("deferred entry {id} ended {other:?}: {body}\n{}", self.log_tail()),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "entry {id} not settled within {DEFERRED_SETTLE_MAX:?}: {body}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Exactly one settled ledger entry for the payer, matching exactly one on-chain transfer
    /// of `PRICE` to the payee in transaction `tx`, with the authorization `nonce` used.
    async fn assert_settled_once(&self, nonce: B256, tx: B256) {
        let payer = self.payer.address();
        let ledger = Ledger::connect(&self.db_url, LedgerOptions::default()).await.unwrap();
        let entries = ledger.entries().of_payer(8453, self.chain.token, payer, 100).await.unwrap();
        ledger.close().await;
        assert_eq!(entries.len(), 1, "one ledger entry for the payer: {entries:#?}");
        let e = &entries[0];
        assert_eq!(e.state, EntryState::Settled, "{e:#?}");
        assert_eq!(e.tx_hash, Some(tx), "ledger transaction");
        assert_eq!(e.nonce, nonce, "ledger nonce");
        assert_eq!(e.amount.get(), PRICE);
        assert_eq!(e.pay_to, self.payee);

        assert!(self.chain.authorization_used(payer, nonce).await.unwrap(), "authorization used on chain");
        assert_eq!(self.chain.balance(self.payee).await.unwrap(), U256::from(PRICE), "payee balance");
        assert_eq!(self.chain.balance(payer).await.unwrap(), U256::from(MINTED - PRICE), "payer balance");
        let transfer = keccak256("Transfer(address,address,uint256)");
        let filter = Filter::new()
            .address(self.chain.token)
            .event_signature(transfer)
            .topic2(self.payee.into_word())
            .from_block(0);
        let logs = self.chain.provider.get_logs(&filter).await.unwrap();
        assert_eq!(logs.len(), 1, "one Transfer to the payee: {logs:#?}");
        assert_eq!(logs[0].transaction_hash, Some(tx));
        let receipt = self.chain.provider.get_transaction_receipt(tx).await.unwrap().expect("mined");
        assert!(receipt.status(), "settlement transaction succeeded");
        assert_eq!(receipt.block_number, e.block_number);

        assert_eq!(self.upstream_hits.load(Ordering::SeqCst), 1, "upstream called once");
        assert_eq!(self.upstream_payment_headers.load(Ordering::SeqCst), 0, "payment header reached the upstream");
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = self.gateway.start_kill();
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn require_node_modules() {
    let modules = repo_root().join("tests/node_modules");
    for pkg in ["@x402/fetch", "@x402/evm", "@x402/core", "x402-fetch", "x402", "viem"] {
        assert!(
            modules.join(pkg).join("package.json").exists(),
            "{} is missing {pkg}: run `npm ci --prefix tests` at the repository root",
            modules.display()
        );
    }
}

/// An upstream that insists on the injected bearer key and counts calls.
async fn upstream(hits: Arc<AtomicUsize>, payment_headers: Arc<AtomicUsize>) -> String {
    let reply = Reply::with(move |req| {
        if req.header("authorization") != Some(format!("Bearer {KEY}")) {
            return Reply::body(401, "text/plain; charset=utf-8", "no key");
        }
        if req.header("payment-signature").is_some() || req.header("x-payment").is_some() {
            payment_headers.fetch_add(1, Ordering::SeqCst);
        }
        hits.fetch_add(1, Ordering::SeqCst);
        Reply::body(200, "application/json", UPSTREAM_BODY)
    });
    MockUpstream::answering(reply).await.unwrap().detach()
}

fn write_config(path: &Path, db_url: &str, rpc: &str, upstream: &str, payee: Address) {
    ConfigBuilder::new()
        .admin_listen()
        .database(db_url)
        .relayer_env("INTEROP_RELAYER_KEY")
        .set("settlement", "receipt_poll_interval_ms", 20u64)
        .set("settlement", "receipt_timeout_ms", 30_000u64)
        .set("settlement", "recovery_interval_ms", 200u64)
        .network(NetworkConfig::base(rpc))
        .provider(
            ProviderConfig::new("weather", payee, upstream)
                .credential_header("INTEROP_API_KEY")
                // The discovery description (a `bazaar` extension and service metadata in
                // every 402) must not stop any client paying.
                .set("service_name", "Interop Weather")
                .set("tags", tollgate_test_support::string_array(&["weather"]))
                .set("icon_url", "https://cdn.weather.example/icon.png")
                .route(
                    RouteConfig::new("/after/{x}", PRICE).description("Weather, settled before the answer").set(
                        "discovery",
                        tollgate_test_support::TomlValue::Raw(
                            r#"{ query_example = { units = "metric" }, output_example = { weather = "sunny" } }"#
                                .to_owned(),
                        ),
                    ),
                )
                .route(
                    RouteConfig::new("/deferred/{x}", PRICE)
                        .settlement("deferred")
                        .description("Weather, settled in the background"),
                )
                .route(
                    RouteConfig::new("/submitted/{x}", PRICE)
                        .set("settlement_wait", "submitted")
                        .description("Weather, answered once the settlement is broadcast"),
                ),
        )
        .write(path)
        .unwrap();
}

async fn spawn_gateway(config: &Path, log: Arc<Mutex<Vec<String>>>) -> (TestGateway, String) {
    let env = [("INTEROP_RELAYER_KEY", format!("{:#x}", anvil_key(9).to_bytes())), ("INTEROP_API_KEY", KEY.to_owned())];
    crate::serve::spawn_serve(config, &env, log).await
}

fn str_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no string at {pointer} in {v:#}"))
}

fn tx_hash(s: &str) -> B256 {
    assert!(
        s.len() == 66 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit()),
        "not a transaction hash: {s:?}"
    );
    s.parse().unwrap()
}

/// Checks the client made exactly two requests (challenge, then one paid retry) and returns
/// the paid retry's decoded payment.
fn paid_retry<'a>(out: &'a Value, header: &str, x402_version: u64) -> &'a Value {
    let requests = out["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 2, "challenge + one paid retry: {out:#}");
    assert_eq!(requests[0]["status"], 402);
    assert!(requests[0]["paymentHeaderName"].is_null());
    assert_eq!(requests[1]["paymentHeaderName"], header);
    let payment = &requests[1]["payment"];
    assert_eq!(payment["x402Version"], x402_version, "{payment:#}");
    payment
}

/// The nonce and `from` of a payment's EIP-3009 authorization.
fn authorization(payment: &Value) -> (B256, Address) {
    let nonce = str_of(payment, "/payload/authorization/nonce").parse().unwrap();
    let from = str_of(payment, "/payload/authorization/from").parse().unwrap();
    (nonce, from)
}

// Goal: the official v2 client (@x402/fetch 2.27 with default spend controls) pays an `after`
// route end to end: 200 with the upstream body, a PAYMENT-RESPONSE its own decoder reads as a
// success on eip155:8453 naming the transaction, which is the one on-chain transfer and the
// one settled ledger entry; the challenge carried the bazaar extension and the service
// description, which did not stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_client_pays_after_route() {
    let scene = Scene::start().await;
    let out = scene.pay("pay-v2.mjs", "/after/london").await;

    assert_eq!(out["status"], 200, "{out:#}");
    assert_eq!(out["body"], UPSTREAM_BODY);
    let payment = paid_retry(&out, "payment-signature", 2);
    assert_eq!(str_of(payment, "/accepted/network"), "eip155:8453");
    let (nonce, from) = authorization(payment);
    assert_eq!(from, scene.payer.address());

    let receipt = &out["receipt"];
    assert_eq!(out["receiptHeaderName"], "PAYMENT-RESPONSE");
    assert_eq!(receipt["success"], true, "{receipt:#}");
    assert_eq!(receipt["network"], "eip155:8453");
    assert_eq!(str_of(receipt, "/payer").parse::<Address>().unwrap(), scene.payer.address());
    let tx = tx_hash(str_of(receipt, "/transaction"));
    // The client's own view: its hook got the same receipt, and it calls the result settled.
    assert_eq!(out["clientPaymentStatus"], "settled");
    assert_eq!(out["paymentResponseHooks"][0]["settleResponse"], *receipt);
    // The challenge carried the bazaar declaration and the service description; the client
    // echoed both in the payment the gateway accepted.
    assert_eq!(payment["extensions"]["bazaar"]["info"]["input"]["pathParams"]["x"], "london", "{payment:#}");
    assert_eq!(payment["resource"]["serviceName"], "Interop Weather");

    scene.assert_settled_once(nonce, tx).await;
}

// Goal: the official v1 client (x402-fetch 1.2.0, wallet on chain `base`, signing offline)
// pays the same kind of route from the v1 JSON body of the 402: 200, an X-PAYMENT-RESPONSE
// that decodeXPaymentResponse reads as a success on `base` and that passes the v1 package's
// SettleResponseSchema, one transfer, one settled entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_client_pays_after_route() {
    let scene = Scene::start().await;
    let out = scene.pay("pay-v1.mjs", "/after/paris").await;

    assert_eq!(out["status"], 200, "{out:#}");
    assert_eq!(out["body"], UPSTREAM_BODY);
    assert_eq!(out["rpcCalls"], serde_json::json!([]), "the v1 client signed offline");
    let payment = paid_retry(&out, "x-payment", 1);
    assert_eq!(payment["network"], "base");
    assert_eq!(payment["scheme"], "exact");
    let (nonce, from) = authorization(payment);
    assert_eq!(from, scene.payer.address());

    let receipt = &out["receipt"];
    assert_eq!(out["receiptHeaderName"], "X-PAYMENT-RESPONSE");
    assert_eq!(receipt["success"], true, "{receipt:#}");
    assert_eq!(receipt["network"], "base");
    assert_eq!(out["receiptSchema"]["valid"], true, "{:#}", out["receiptSchema"]);
    let tx = tx_hash(str_of(receipt, "/transaction"));

    scene.assert_settled_once(nonce, tx).await;
}

/// A deferred call: 200 with the upstream body and a `Tollgate-Receipt` id, then the entry
/// settles in the background into the one transfer the authorization allows.
async fn deferred_call(script: &str, header: &str, x402_version: u64) -> Value {
    let scene = Scene::start().await;
    let out = scene.pay(script, "/deferred/rome").await;

    assert_eq!(out["status"], 200, "{out:#}");
    assert_eq!(out["body"], UPSTREAM_BODY);
    let payment = paid_retry(&out, header, x402_version);
    let (nonce, from) = authorization(payment);
    assert_eq!(from, scene.payer.address());
    assert_eq!(str_of(&out, "/headers/tollgate-settlement"), "deferred");
    let id = str_of(&out, "/headers/tollgate-receipt").to_owned();
    // The answer is sent before settlement, so it carries no x402 receipt (a `success:true`
    // receipt without a transaction would make the client count the call as settled).
    assert!(out["receipt"].is_null(), "{out:#}");

    let settled = scene.wait_settled(&id).await;
    assert_eq!(settled["id"], id.as_str());
    assert_eq!(settled["network"], "eip155:8453");
    assert_eq!(settled["amount"], PRICE.to_string());
    assert_eq!(str_of(&settled, "/payer").parse::<Address>().unwrap(), scene.payer.address());
    let tx = tx_hash(str_of(&settled, "/transaction"));
    scene.assert_settled_once(nonce, tx).await;
    out
}

// Goal: the official v2 client pays a `deferred` route: 200 at once with a Tollgate-Receipt id,
// and GET /receipts/{id} reaches `settled` with the transaction of the one on-chain transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_client_pays_deferred_route() {
    let out = deferred_call("pay-v2.mjs", "payment-signature", 2).await;
    assert!(out["receiptHeaderName"].is_null(), "{out:#}");
}

// Goal: the official v1 client pays a `deferred` route the same way (receipt network `base`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_client_pays_deferred_route() {
    let out = deferred_call("pay-v1.mjs", "x-payment", 1).await;
    assert_eq!(out["rpcCalls"], serde_json::json!([]), "the v1 client signed offline");
    assert!(out["receiptHeaderName"].is_null(), "{out:#}");
}

/// A call on the `settlement_wait = "submitted"` route: 200 with the body and the x402
/// `settlement_pending` receipt (the hash, the network), one paid retry and no other (the
/// client signs nothing more); the entry then settles with the very transaction the agent was
/// told, the one on-chain transfer.
async fn submitted_call(script: &str, header: &str, x402_version: u64, network: &str) -> Value {
    let scene = Scene::start().await;
    let out = scene.pay(script, "/submitted/oslo").await;

    assert_eq!(out["status"], 200, "{out:#}");
    assert_eq!(out["body"], UPSTREAM_BODY);
    let payment = paid_retry(&out, header, x402_version);
    let (nonce, from) = authorization(payment);
    assert_eq!(from, scene.payer.address());
    assert_eq!(str_of(&out, "/headers/tollgate-settlement"), "pending");
    let receipt = &out["receipt"];
    assert_eq!(receipt["success"], false, "{receipt:#}");
    assert_eq!(receipt["errorReason"], "settlement_pending");
    assert_eq!(receipt["network"], network);
    let told = tx_hash(str_of(receipt, "/transaction"));

    let id = str_of(&out, "/headers/tollgate-receipt").to_owned();
    let settled = scene.wait_settled(&id).await;
    assert_eq!(tx_hash(str_of(&settled, "/transaction")), told, "settled by the transaction the agent was told");
    scene.assert_settled_once(nonce, told).await;
    out
}

// Goal: what the official v2 client makes of `settlement_pending` (docs/agents.md): the fetch
// wrapper returns the 200 as it is, its hook gets the receipt, signs no second payment, and
// `parsePaymentResult` calls it `settle_failed` (it knows no pending state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_client_on_submitted_route() {
    let out = submitted_call("pay-v2.mjs", "payment-signature", 2, "eip155:8453").await;
    assert_eq!(out["receiptHeaderName"], "PAYMENT-RESPONSE");
    assert_eq!(out["clientPaymentStatus"], "settle_failed");
    assert_eq!(out["paymentResponseHooks"][0]["settleResponse"], out["receipt"]);
}

// Goal: what the official v1 client makes of `settlement_pending` (docs/agents.md): the 200 as
// it is, no second payment; its decoder reads the receipt, and the v1 package's
// SettleResponseSchema refuses it (`settlement_pending` is not among its error reasons).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_client_on_submitted_route() {
    let out = submitted_call("pay-v1.mjs", "x-payment", 1, "base").await;
    assert_eq!(out["receiptHeaderName"], "X-PAYMENT-RESPONSE");
    assert_eq!(out["receiptSchema"]["valid"], false, "{:#}", out["receiptSchema"]);
    let issues = out["receiptSchema"]["issues"].to_string();
    assert!(issues.contains("errorReason"), "{issues}");
}

/// Our own client (`tollgate-client`) with its defaults (USDC on Base allowed, no limits),
/// a spending record in a temp dir, paying `path` once.
async fn tollgate_client_pays(scene: &Scene, path: &str) -> (tollgate_client::Paid, tempfile::TempDir) {
    use tollgate_client::{ClientConfig, HeaderMap, Method, PayingClient};
    let dir = tempfile::tempdir().unwrap();
    let client = PayingClient::new(ClientConfig::new(scene.payer.clone(), dir.path().join("spent.json"))).unwrap();
    let url = format!("{}{path}", scene.url);
    let paid = client.send(Method::GET, &url, HeaderMap::new(), "").await.unwrap();
    (paid, dir)
}

// Goal: our own client (tollgate-client) pays the `after` route of the real binary: 200 with
// the upstream body, a success receipt on eip155:8453, its record `paid` with the same
// transaction, which is the one on-chain transfer and the one settled ledger entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_client_pays_after_route() {
    let scene = Scene::start().await;
    let (paid, _dir) = tollgate_client_pays(&scene, "/after/berlin").await;

    assert_eq!(paid.status, 200);
    assert_eq!(paid.body, UPSTREAM_BODY.as_bytes());
    let receipt = paid.receipt.expect("a receipt");
    assert!(receipt.success, "{receipt:?}");
    assert_eq!(receipt.network, "eip155:8453");
    let tx = tx_hash(&receipt.transaction);
    let record = paid.payment.expect("a payment record");
    assert_eq!(record.state, tollgate_client::RecordState::Paid, "{record:?}");
    assert_eq!(record.transaction.as_deref(), Some(receipt.transaction.as_str()));
    assert_eq!(record.x402_version, 2);
    assert!(record.header_name.eq_ignore_ascii_case("payment-signature"), "{}", record.header_name);
    assert_eq!(record.payer, scene.payer.address());

    scene.assert_settled_once(record.nonce, tx).await;
}

// Goal: our own client pays the `deferred` route: 200 with a Tollgate-Receipt id, its record
// `paid_pending` (no transaction yet), and the entry then settles into the one transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_client_pays_deferred_route() {
    let scene = Scene::start().await;
    let (paid, _dir) = tollgate_client_pays(&scene, "/deferred/madrid").await;

    assert_eq!(paid.status, 200);
    assert_eq!(paid.body, UPSTREAM_BODY.as_bytes());
    let record = paid.payment.expect("a payment record");
    assert_eq!(record.state, tollgate_client::RecordState::PaidPending, "{record:?}");
    assert_eq!(record.transaction, None);
    let id = paid.headers["tollgate-receipt"].to_str().unwrap().to_owned();

    let settled = scene.wait_settled(&id).await;
    let tx = tx_hash(str_of(&settled, "/transaction"));
    scene.assert_settled_once(record.nonce, tx).await;
}
