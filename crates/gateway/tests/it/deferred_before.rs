//! Modes `deferred` and `before`.

use alloy_primitives::U256;
use axum::http::StatusCode;
use tollgate_metering::{EntryState, SettlementMode};
use tollgate_test_support::v2_header;

use crate::both_engines;
use crate::harness::{Engine, Harness, Options, PRICE_ATOMIC, receipt_of};

// Goal: a deferred route answers right after the upstream with a receipt id; the worker
// settles in the background and /receipts/{id} reports the transaction; an upstream failure
// is voided and never settled.
async fn deferred_settles_in_background(h: &Harness) {
    let b = h.payment("/deferred/weather/lima").await;
    let resp = h
        .http
        .get(format!("{}/deferred/weather/lima", h.url))
        .header("payment-signature", v2_header(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(h.upstream.last().path_and_query, "/weather/lima", "strip_prefix applied");
    let id = resp.headers()["tollgate-receipt"].to_str().unwrap().to_owned();
    assert!(!resp.headers().contains_key("payment-response"), "no x402 receipt before settlement");
    assert_eq!(resp.headers()["tollgate-settlement"], "deferred");
    let entry = h.wait_state(&b, EntryState::Settled).await;
    assert_eq!(entry.id.to_string(), id);
    let r: serde_json::Value =
        h.http.get(format!("{}/receipts/{id}", h.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["state"], "settled");
    assert_eq!(r["transaction"], format!("{:#x}", entry.tx_hash.unwrap()));
    assert_eq!(h.payee_balance().await, U256::from(PRICE_ATOMIC));

    let b = h.payment("/deferred/fail").await;
    let resp =
        h.http.get(format!("{}/deferred/fail", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    h.wait_state(&b, EntryState::Voided).await;
    assert_eq!(h.payee_balance().await, U256::from(PRICE_ATOMIC));
}
both_engines!(deferred, deferred_settles_in_background);

// Goal: a `before` route settles first, then forwards; an upstream failure after settlement
// is recorded as a refund owed (the payee was paid).
async fn before_settles_first(h: &Harness) {
    let b = h.payment("/before/weather/kyiv").await;
    let resp = h
        .http
        .get(format!("{}/before/weather/kyiv", h.url))
        .header("payment-signature", v2_header(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(receipt_of(&resp, "payment-response").success);
    h.wait_state(&b, EntryState::Settled).await;

    let b = h.payment("/before/fail").await;
    let resp =
        h.http.get(format!("{}/before/fail", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let entry = h.wait_state(&b, EntryState::RefundOwed).await;
    assert_eq!(entry.reason.as_deref(), Some("upstream_5xx"));
    assert_eq!(h.payee_balance().await, U256::from(2 * PRICE_ATOMIC));
}
both_engines!(before, before_settles_first);

// Goal: the deferred worker overlaps receipt waits — on a chain that mines a block every 2 s,
// six deferred calls all settle within two blocks (one at a time would need six blocks,
// about 12 s, beyond `wait_state`'s 5 s bound), each exactly once.
async fn deferred_settlements_share_blocks(h: &Harness) {
    h.chain.rpc("evm_setAutomine", serde_json::json!([false])).await.unwrap();
    h.chain.rpc("evm_setIntervalMining", serde_json::json!([2])).await.unwrap();
    let mut paid = Vec::new();
    for i in 0..6 {
        let path = format!("/deferred/weather/city{i}");
        let b = h.payment(&path).await;
        let resp =
            h.http.get(format!("{}{path}", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        paid.push(b);
    }
    let mut blocks = std::collections::BTreeSet::new();
    for b in &paid {
        let entry = h.wait_state(b, EntryState::Settled).await;
        blocks.insert(entry.block_number.expect("settled entries record their block"));
    }
    assert!(blocks.len() <= 2, "six settlements landed in blocks {blocks:?}");
    assert_eq!(h.payee_balance().await, U256::from(6 * PRICE_ATOMIC));
}
both_engines!(deferred_pipelined, deferred_settlements_share_blocks);

// Goal: an entry that never got its `forwarded` mark is voided by recovery, uncharged, with a
// reason saying what is known: on a deferred route the answer may already have gone out (the
// mark is written beside the response), on the other modes it was never shown to be forwarded.
async fn unmarked_entries_are_voided_with_what_is_known(h: &Harness) {
    let mut made = Vec::new();
    for (mode, city) in [(SettlementMode::Deferred, "oslo"), (SettlementMode::After, "kyiv")] {
        let b = h.payment(&format!("/weather/{city}")).await;
        let id =
            h.gateway.ledger.entries().reserve(&h.weather_entry(&b, &format!("/weather/{city}"), mode)).await.unwrap();
        made.push((id, b));
    }
    // Within the grace period the sweep leaves them alone (a live process may be writing).
    tollgate_gateway::settlement::recover_once(&h.gateway.settlements).await.unwrap();
    for (_, b) in &made {
        assert_eq!(h.entry_for(b).await.unwrap().state, EntryState::Reserved);
    }
    h.clock.set(h.now + 7_200);
    tollgate_gateway::settlement::recover_once(&h.gateway.settlements).await.unwrap();
    let deferred = h.wait_state(&made[0].1, EntryState::Voided).await;
    let after = h.wait_state(&made[1].1, EntryState::Voided).await;
    assert_eq!(deferred.id, made[0].0);
    assert_eq!(deferred.reason.as_deref(), Some("recovery_delivery_unknown"));
    assert_eq!(after.reason.as_deref(), Some("recovery_never_forwarded"));
    assert_eq!(h.payee_balance().await, U256::ZERO);
}
both_engines!(unmarked_entries, unmarked_entries_are_voided_with_what_is_known);

// Goal: a burst of deferred calls larger than the worker's queue drains fully from the
// durable backlog without waiting for the periodic sweep (its interval is an hour here, so
// only the worker's own reads as it gets room can settle the overflow), and each entry is
// settled exactly once: one claim, one transaction of its own, one price to the payee each.
async fn burst_past_the_queue_drains_once(engine: Engine) {
    const CALLS: usize = 24;
    let opts = Options {
        recovery_interval_ms: 3_600_000,
        settlement_config: "deferred_queue_capacity = 2\ndeferred_concurrency = 2\n\
                            deferred_backlog_horizon_s = 1000\ndeferred_overflow = \"reject\"\n"
            .to_owned(),
        ..Options::default()
    };
    let Some(h) = Harness::start_with(engine, opts).await else { return };
    let mut payments = Vec::new();
    for i in 0..CALLS {
        payments.push((format!("/deferred/weather/burst{i}"), h.payment(&format!("/deferred/weather/burst{i}")).await));
    }
    let answers = futures_util::future::join_all(
        payments
            .iter()
            .map(|(path, b)| h.http.get(format!("{}{path}", h.url)).header("payment-signature", v2_header(b)).send()),
    )
    .await;
    for resp in answers {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "admitted as deferred (overflow would be 503)");
        assert_eq!(resp.headers()["tollgate-settlement"], "deferred");
    }
    let mut hashes = std::collections::HashSet::new();
    for (_, b) in &payments {
        let entry = h.wait_state(b, EntryState::Settled).await;
        assert!(hashes.insert(entry.tx_hash.unwrap()), "one transaction per entry");
        let events = h.gateway.ledger.entries().events(&entry.id).await.unwrap();
        let claims = events.iter().filter(|e| e.to_state == EntryState::Settling).count();
        assert_eq!(claims, 1, "claimed once: {events:?}");
    }
    assert_eq!(h.payee_balance().await, U256::from(CALLS as u64 * PRICE_ATOMIC));
    h.stop().await;
}

mod burst_past_the_queue {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        burst_past_the_queue_drains_once(Engine::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        burst_past_the_queue_drains_once(Engine::Postgres).await;
    }
}
