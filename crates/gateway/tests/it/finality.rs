//! Finality on the wire (issue 19, part 4): an `after` route's `settlement_wait` (`submitted`,
//! `included`, `confirmations:N`), the x402 `settlement_pending` answer's headers, and
//! `GET /receipts/{id}`'s confirmations and finality as blocks are mined. Every answer is
//! joined with the ledger and the chain after the recovery sweep.

use std::time::{Duration, Instant};

use alloy::providers::Provider as _;
use alloy_primitives::{Address, U256};
use axum::http::StatusCode;
use tollgate_metering::{Entry, EntryState};
use tollgate_test_support::{PaymentBuilder, ProviderConfig, RouteConfig, random_key, v1_header, v2_header};
use tollgate_x402::facilitator::SettleResponse;

use crate::harness::{Engine, Harness, Options, PRICE_ATOMIC, Upstream, receipt_of};

/// The network's `finality_confirmations` in these tests.
const DEPTH: u64 = 3;

/// The receipt wait of these tests (`settlement.receipt_timeout_ms`): room for three blocks
/// of one second.
const RECEIPT_TIMEOUT_MS: u64 = 5_000;

/// A harness with one provider per `settlement_wait`, paid to `payee`.
struct Fin {
    h: Harness,
    _upstream: Upstream,
    payee: Address,
}

impl Fin {
    async fn start(engine: Engine) -> Option<Fin> {
        let (upstream, url) = Upstream::start().await;
        let payee = random_key().address();
        let provider = |id: &str, prefix: &str, wait: &str| {
            let route =
                RouteConfig::new(&format!("{prefix}/weather/{{city}}"), PRICE_ATOMIC).set("settlement_wait", wait);
            ProviderConfig::new(id, payee, &url).strip_prefix(prefix).credential_header("TEST_API_KEY").route(route)
        };
        let opts = Options {
            receipt_timeout_ms: RECEIPT_TIMEOUT_MS,
            finality_confirmations: Some(DEPTH),
            providers: vec![
                provider("fin-submitted", "/submitted", "submitted"),
                provider("fin-included", "/included", "included"),
                provider("fin-confirmed", "/confirmed", "confirmations:3"),
            ],
            ..Options::default()
        };
        let h = Harness::start_with(engine, opts).await?;
        Some(Fin { h, _upstream: upstream, payee })
    }

    async fn call(&self, path: &str, header: (&str, String)) -> reqwest::Response {
        self.h.http.get(format!("{}{path}", self.h.url)).header(header.0, header.1).send().await.unwrap()
    }

    /// `GET /receipts/{id}`.
    async fn receipt(&self, id: &str) -> serde_json::Value {
        let resp = self.h.http.get(format!("{}/receipts/{id}", self.h.url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    /// Polls `/receipts/{id}` until `done` holds (the head is cached for a second).
    async fn receipt_until(&self, id: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        for _ in 0..100 {
            last = self.receipt(id).await;
            if done(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("/receipts/{id} never reached the expected finality: {last}");
    }

    async fn payee_balance(&self) -> U256 {
        self.h.chain.balance(self.payee).await.unwrap()
    }

    /// After the recovery sweep (past its grace period): the entry's state, and the chain's
    /// word on the authorization and the payee.
    async fn after_recovery(&self, b: &PaymentBuilder) -> Entry {
        self.h.clock.set(self.h.now + 7_200);
        tollgate_gateway::settlement::recover_once(&self.h.gateway.settlements).await.unwrap();
        self.h.entry_for(b).await.unwrap()
    }

    async fn mine(&self) {
        self.h.chain.rpc("evm_mine", serde_json::json!([])).await.unwrap();
    }
}

/// The x402 `settlement_pending` answer as the spec has it: not a success, the reason, a
/// transaction hash, the network and the payer.
fn assert_pending(r: &SettleResponse, network: &str, payer: Address) {
    assert!(!r.success, "settlement_pending is not a success");
    assert_eq!(r.error_reason.as_deref(), Some("settlement_pending"));
    assert!(r.transaction.starts_with("0x") && r.transaction.len() == 66, "the hash is given: {}", r.transaction);
    assert_eq!(r.network, network);
    assert_eq!(r.payer, Some(payer));
}

fn tx_of(e: &Entry) -> String {
    e.tx_hash.map(|t| format!("{t:#x}")).unwrap_or_default()
}

macro_rules! fin_engines {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(f) = Fin::start(Engine::Sqlite).await {
                    ($body)(&f).await;
                    f.h.stop().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(f) = Fin::start(Engine::Postgres).await {
                    ($body)(&f).await;
                    f.h.stop().await;
                }
            }
        }
    };
}

// Goal: a `submitted` route answers as soon as the node has the transaction, before any block:
// 200 with the body, `settlement_pending` in PAYMENT-RESPONSE and X-PAYMENT-RESPONSE (v2 and
// v1 network names, the hash, the payer); the entry is `settling` with that hash and the
// `answered` note written before the answer; once mined the chaser records it `settled`, and
// after the sweep the agent was told the truth: paid once, by that transaction, not owed back.
async fn submitted_answers_pending_then_settles(f: &Fin) {
    let h = &f.h;
    h.chain.rpc("evm_setAutomine", serde_json::json!([false])).await.unwrap();
    let path = "/submitted/weather/quito";
    let b = h.payment(path).await;
    let resp = f.call(path, ("payment-signature", v2_header(&b))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["tollgate-settlement"], "pending");
    let id = resp.headers()["tollgate-receipt"].to_str().unwrap().to_owned();
    let told = receipt_of(&resp, "payment-response");
    assert_pending(&told, "eip155:8453", h.payer.address());
    let told_v1 = receipt_of(&resp, "x-payment-response");
    assert_pending(&told_v1, "base", h.payer.address());
    assert_eq!(told_v1.transaction, told.transaction);
    assert!(resp.text().await.unwrap().contains("quito"), "the agent gets what it pays for");

    // Nothing is mined yet: the ledger names the hash and knows the answer went out.
    let entry = h.entry_for(&b).await.unwrap();
    assert_eq!(entry.state, EntryState::Settling);
    assert_eq!(tx_of(&entry), told.transaction);
    let events = h.gateway.ledger.entries().events(&entry.id).await.unwrap();
    assert!(events.iter().any(|e| e.cause == tollgate_gateway::settlement::ANSWERED), "{events:?}");
    let hash: alloy_primitives::B256 = told.transaction.parse().unwrap();
    assert!(h.chain.provider.get_transaction_receipt(hash).await.unwrap().is_none(), "answered before any block");
    let r = f.receipt(&id).await;
    assert_eq!(r["finality"], "pending");
    assert_eq!(r["confirmations"], serde_json::Value::Null);
    assert_eq!(r["transaction"], told.transaction.as_str());

    // Mined: the chaser records the receipt, no sweep needed.
    f.mine().await;
    let settled = h.wait_state(&b, EntryState::Settled).await;
    assert_eq!(tx_of(&settled), told.transaction);

    let end = f.after_recovery(&b).await;
    assert_eq!(end.state, EntryState::Settled, "a delivered answer is never owed back");
    assert_eq!(tx_of(&end), told.transaction);
    assert!(h.chain.authorization_used(b.from, b.nonce).await.unwrap());
    assert_eq!(f.payee_balance().await, U256::from(PRICE_ATOMIC));
}
fin_engines!(submitted, submitted_answers_pending_then_settles);

// Goal: `/receipts/{id}` follows the chain: `pending` while the settlement is unmined, then
// `included` with 1, 2 confirmations as blocks are mined, then `final` at the network's
// `finality_confirmations`; an `included` route answers with the receipt (a success) and its
// entry reads `included` at once.
async fn receipts_move_pending_included_final(f: &Fin) {
    let h = &f.h;
    h.chain.rpc("evm_setAutomine", serde_json::json!([false])).await.unwrap();
    let path = "/submitted/weather/lima";
    let b = h.payment(path).await;
    let resp = f.call(path, ("payment-signature", v2_header(&b))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["tollgate-receipt"].to_str().unwrap().to_owned();
    let told = receipt_of(&resp, "payment-response");
    assert_eq!(f.receipt(&id).await["finality"], "pending");

    f.mine().await;
    h.wait_state(&b, EntryState::Settled).await;
    let r = f.receipt_until(&id, |r| r["finality"] == "included").await;
    assert_eq!(r["confirmations"], 1);
    assert_eq!(r["finalityDepth"], DEPTH);
    assert_eq!(r["transaction"], told.transaction.as_str());
    f.mine().await;
    f.receipt_until(&id, |r| r["confirmations"] == 2 && r["finality"] == "included").await;
    f.mine().await;
    let r = f.receipt_until(&id, |r| r["finality"] == "final").await;
    assert_eq!(r["confirmations"], DEPTH);
    assert_eq!(r["state"], "settled");

    // `included` (the default's behaviour): the answer waits for the receipt and is a success.
    h.chain.rpc("evm_setAutomine", serde_json::json!([true])).await.unwrap();
    let path = "/included/weather/oslo";
    let b2 = h.payment(path).await;
    let resp = f.call(path, ("payment-signature", v2_header(&b2))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let paid = receipt_of(&resp, "payment-response");
    assert!(paid.success);
    let entry = h.entry_for(&b2).await.unwrap();
    assert_eq!(entry.state, EntryState::Settled);
    let r = f.receipt(entry.id.as_str()).await;
    assert_eq!(r["finality"], "included");
    assert_eq!(r["confirmations"], 1);

    for b in [&b, &b2] {
        assert_eq!(f.after_recovery(b).await.state, EntryState::Settled);
    }
    assert_eq!(f.payee_balance().await, U256::from(2 * PRICE_ATOMIC));
}
fin_engines!(receipts, receipts_move_pending_included_final);

// Goal: a `confirmations:3` route on a chain mining a block a second answers a success only
// once the settlement's block has 3 confirmations (so `/receipts` already says `final` at
// depth 3); the agent was told the transaction the ledger and the chain hold.
async fn confirmations_route_waits_for_blocks(f: &Fin) {
    let h = &f.h;
    h.chain.rpc("evm_setIntervalMining", serde_json::json!([1])).await.unwrap();
    let path = "/confirmed/weather/accra";
    let b = h.payment(path).await;
    let started = Instant::now();
    let resp = f.call(path, ("x-payment", v1_header(&b))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let told = receipt_of(&resp, "x-payment-response");
    assert!(told.success, "{told:?}");
    assert_eq!(told.network, "base");
    assert!(started.elapsed() >= Duration::from_secs(1), "the answer waited for blocks on top");
    let entry = h.entry_for(&b).await.unwrap();
    assert_eq!(entry.state, EntryState::Settled);
    assert_eq!(tx_of(&entry), told.transaction);
    let r = f.receipt(entry.id.as_str()).await;
    assert!(r["confirmations"].as_u64().unwrap() >= 3, "{r}");
    assert_eq!(r["finality"], "final");

    assert_eq!(f.after_recovery(&b).await.state, EntryState::Settled);
    assert!(h.chain.authorization_used(b.from, b.nonce).await.unwrap());
    assert_eq!(f.payee_balance().await, U256::from(PRICE_ATOMIC));
}
fin_engines!(confirmations, confirmations_route_waits_for_blocks);

// Goal: when the chain does not reach the route's confirmations within the receipt wait (one
// block, then nothing mined), a `confirmations:3` route answers `settlement_pending` with the
// hash, not a success; the ledger has the settlement recorded already, and `/receipts` says
// `included` with 1 confirmation. The pending answer stays true: paid once, never owed back.
async fn shallow_settlement_is_pending(f: &Fin) {
    let h = &f.h;
    let path = "/confirmed/weather/hanoi";
    let b = h.payment(path).await;
    let resp = f.call(path, ("payment-signature", v2_header(&b))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["tollgate-settlement"], "pending");
    let told = receipt_of(&resp, "payment-response");
    assert_pending(&told, "eip155:8453", h.payer.address());
    let entry = h.entry_for(&b).await.unwrap();
    assert_eq!(entry.state, EntryState::Settled, "recorded when mined, whatever the answer waited for");
    assert_eq!(tx_of(&entry), told.transaction);
    let r = f.receipt(entry.id.as_str()).await;
    assert_eq!(r["finality"], "included");
    assert_eq!(r["confirmations"], 1);

    assert_eq!(f.after_recovery(&b).await.state, EntryState::Settled);
    assert_eq!(f.payee_balance().await, U256::from(PRICE_ATOMIC));
}
fin_engines!(shallow, shallow_settlement_is_pending);

// Goal: `settlement_wait` set through the admin API is judged by the file's rules (a bad value
// is 400 naming the field, and nothing changes) and served at once: the patched route answers
// at the broadcast with `settlement_pending`, and the entry settles with the hash it gave.
async fn admin_sets_settlement_wait(f: &Fin) {
    use reqwest::Method;
    let h = &f.h;
    let list = "/admin/providers/fin-included/endpoints";
    let path = "/included/weather/{city}";
    let bad = serde_json::json!({ "path": path, "settlement_wait": "confirmations:0" });
    let (s, body) = h.admin(Method::PATCH, list, Some(&h.operator), Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("settlement_wait"), "{body}");
    let good = serde_json::json!({ "path": path, "settlement_wait": "submitted" });
    let (s, body) = h.admin(Method::PATCH, list, Some(&h.operator), Some(good)).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let b = h.payment("/included/weather/rome").await;
    let resp = f.call("/included/weather/rome", ("payment-signature", v2_header(&b))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let told = receipt_of(&resp, "payment-response");
    assert_pending(&told, "eip155:8453", h.payer.address());
    let settled = h.wait_state(&b, EntryState::Settled).await;
    assert_eq!(tx_of(&settled), told.transaction);
    assert_eq!(f.after_recovery(&b).await.state, EntryState::Settled);
    assert_eq!(f.payee_balance().await, U256::from(PRICE_ATOMIC));
}
fin_engines!(admin, admin_sets_settlement_wait);
