//! Reconciliation against a real chain: paid calls tie out; settlements the ledger does not
//! know, and ledger settlements the chain does not know, are classified; re-runs agree.

use alloy_primitives::{B256, U256};
use alloy_sol_types::SolCall;
use tollgate_gateway::reconcile::{ReconcileOptions, ReconcileOutcome, reconcile_range, render_csv, render_json};
use tollgate_metering::{AtomicAmount, NewEntry, ReconClass, SettlementMode, Transition};
use tollgate_test_support::{TokenCall, random_key, v2_header};
use tollgate_x402::Network;

use crate::{Harness, PRICE_ATOMIC, both_engines};

fn opts() -> ReconcileOptions {
    // Small chunks so that a run crosses several eth_getLogs calls.
    ReconcileOptions { chunk_blocks: 3, confirmations_min: 1, ..ReconcileOptions::default() }
}

async fn head(h: &Harness) -> u64 {
    h.gateway.verifier.chain(8453).unwrap().block_number().await.unwrap()
}

async fn paid_call(h: &Harness, city: &str) {
    let b = h.payment(&format!("/weather/{city}")).await;
    let resp = h
        .http
        .get(format!("{}/weather/{city}", h.url))
        .header("payment-signature", v2_header(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

async fn run(h: &Harness, from: u64, to: u64) -> ReconcileOutcome {
    reconcile_range(&h.gateway, Network::BASE, from, to, opts()).await.unwrap()
}

fn count(o: &ReconcileOutcome, class: ReconClass) -> u64 {
    o.report.totals.counts[&class]
}

// Goal: a period of paid calls through the gateway reconciles to all matched, to the atomic
// unit, with per-provider, per-route and per-wallet totals, and the tie-out holds.
async fn clean_period_ties_out(h: &Harness) {
    let from = head(h).await + 1;
    for city in ["london", "paris", "rome"] {
        paid_call(h, city).await;
    }
    let o = run(h, from, head(h).await).await;
    assert_eq!(count(&o, ReconClass::Matched), 3, "{:#?}", o.report.items);
    assert_eq!(o.report.items.len(), 3);
    let price = U256::from(3 * PRICE_ATOMIC);
    assert_eq!((o.report.totals.chain_total, o.report.totals.matched_total), (price, price));
    assert_eq!(o.report.totals.matched_by_provider["weather"], price);
    assert_eq!(o.report.totals.matched_by_payer[&h.payer.address()], price);
    let tie = o.report.tie_out(&o.scope.pay_to);
    assert!(tie.holds && tie.explained_chain.is_zero(), "{tie:?}");
    let json = render_json(&o);
    assert_eq!(json["tie_out"]["holds"], true);
    assert_eq!(json["totals"]["matched"], (3 * PRICE_ATOMIC).to_string());
    let csv = render_csv(&o.report);
    assert_eq!(csv.split("\r\n").filter(|l| l.starts_with("matched,")).count(), 3, "{csv}");
    let runs = h.gateway.ledger.recon_runs(8453, h.chain.token, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].tie_out_holds && runs[0].cursor_block == Some(o.scope.to_block));
}
both_engines!(clean_period, clean_period_ties_out);

// Goal: an authorization settled directly on chain by a third party and a plain transfer to
// the payee are onchain_missing_in_ledger; a ledger settlement whose transaction never happened
// is ledger_settled_missing_onchain; the exceptions explain the tie-out difference; a re-run
// over the same range gives identical results.
async fn exceptions_are_classified(h: &Harness) {
    let from = head(h).await + 1;
    paid_call(h, "oslo").await;

    // A third party settles a signed authorization to our payee without the gateway.
    let b = h.payment("/weather/bern").await;
    let call = TokenCall::transferWithAuthorizationCall {
        from: b.from,
        to: b.to,
        value: b.value,
        validAfter: U256::from(b.valid_after),
        validBefore: U256::from(b.valid_before),
        nonce: b.nonce,
        signature: b.sign(),
    };
    h.chain.send(h.chain.token, call.abi_encode()).await.unwrap();

    // A plain transfer to the payee.
    h.chain.fund_gas(h.payer.address()).await.unwrap();
    let plain = TokenCall::transferCall { to: h.payee, value: U256::from(7u64) };
    h.chain.send_as(h.payer.clone(), h.chain.token, plain.abi_encode()).await.unwrap();

    // A ledger entry settled in a real block by a transaction that never happened.
    let block = head(h).await;
    let block_hash = h.gateway.verifier.chain(8453).unwrap().block_hash(block).await.unwrap().unwrap();
    let ghost = random_key().address();
    let ledger = &h.gateway.ledger;
    let id = ledger
        .reserve(&NewEntry {
            chain_id: 8453,
            asset: h.chain.token,
            payer: ghost,
            pay_to: h.payee,
            nonce: B256::repeat_byte(0x42),
            amount: AtomicAmount::new(PRICE_ATOMIC).unwrap(),
            valid_before_unix_s: h.now + 600,
            provider: "weather".to_owned(),
            route: "weather:/weather/{city}".to_owned(),
            method: "GET".to_owned(),
            path: "/weather/ghost".to_owned(),
            mode: SettlementMode::After,
            payment: "{}".to_owned(),
            price_version: None,
            credential: None,
            credential_version: None,
            now_unix_s: h.now,
        })
        .await
        .unwrap();
    let fake_tx = B256::repeat_byte(0xfa);
    ledger.transition(&id, Transition::Settling { tx_hash: fake_tx }, "test", None, h.now).await.unwrap();
    let settled = Transition::Settled { tx_hash: fake_tx, block_number: block, block_hash, log_index: 0 };
    ledger.transition(&id, settled, "test", None, h.now).await.unwrap();

    let to = head(h).await;
    let o = run(h, from, to).await;
    let items = &o.report.items;
    assert_eq!(count(&o, ReconClass::Matched), 1, "{items:#?}");
    assert_eq!(count(&o, ReconClass::OnchainMissingInLedger), 2, "{items:#?}");
    assert_eq!(count(&o, ReconClass::LedgerSettledMissingOnchain), 1, "{items:#?}");
    assert_eq!(items.len(), 4);
    let stranger = items.iter().find(|i| i.nonce == Some(b.nonce)).expect("the third party's settlement");
    assert_eq!(stranger.class, ReconClass::OnchainMissingInLedger);
    assert_eq!(stranger.amount_chain, Some(b.value));
    assert!(stranger.entry_id.is_none());
    let plain_item = items.iter().find(|i| i.amount_chain == Some(U256::from(7u64))).expect("the plain transfer");
    assert_eq!((plain_item.class, plain_item.nonce), (ReconClass::OnchainMissingInLedger, None));
    let lost = items.iter().find(|i| i.entry_id.as_ref() == Some(&id)).expect("the ghost entry");
    assert_eq!((lost.class, lost.tx_hash), (ReconClass::LedgerSettledMissingOnchain, Some(fake_tx)));

    let tie = o.report.tie_out(&o.scope.pay_to);
    assert!(tie.holds, "{tie:?}");
    assert_eq!(tie.matched_total, U256::from(PRICE_ATOMIC));
    assert_eq!(tie.explained_chain, b.value + U256::from(7u64));

    let again = run(h, from, to).await;
    assert_eq!(again.report, o.report, "a re-run over the same range gives the same report");
    assert!(again.run_id > o.run_id);
    let runs = h.gateway.ledger.recon_runs(8453, h.chain.token, 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[0].counts.clone(), runs[0].chain_total), (runs[1].counts.clone(), runs[1].chain_total));
    let exceptions = h.gateway.ledger.recon_exceptions(o.run_id).await.unwrap();
    assert_eq!(exceptions.len(), 3);
    let note = h.gateway.ledger.add_recon_note(exceptions[0].id, "finance", "investigating", h.now).await.unwrap();
    assert_eq!(h.gateway.ledger.recon_notes(exceptions[0].id).await.unwrap()[0].id, note);
}
both_engines!(exceptions, exceptions_are_classified);

// Goal: a settlement whose block is replaced by a reorg (anvil snapshot, call, revert, new
// blocks) is reorged, not ledger_settled_missing_onchain.
async fn reorg_is_detected(h: &Harness) {
    let from = head(h).await + 1;
    let snapshot = h.chain.rpc("evm_snapshot", serde_json::json!([])).await.unwrap();
    paid_call(h, "lima").await;
    let settled_at = head(h).await;
    h.chain.rpc("evm_revert", serde_json::json!([snapshot])).await.unwrap();
    while head(h).await < settled_at + 1 {
        h.chain.rpc("evm_mine", serde_json::json!([])).await.unwrap();
    }
    let o = run(h, from, head(h).await).await;
    assert_eq!(o.report.items.len(), 1, "{:#?}", o.report.items);
    assert_eq!(o.report.items[0].class, ReconClass::Reorged);
    assert_eq!(o.report.items[0].block_number, Some(settled_at));
    assert!(o.report.tie_out(&o.scope.pay_to).holds);
}
both_engines!(reorg, reorg_is_detected);
