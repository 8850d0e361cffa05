//! Reconciliation against a real chain: paid calls tie out; settlements the ledger does not
//! know, and ledger settlements the chain does not know, are classified; re-runs agree; ranges
//! by time, resumes from the cursor, totals per UTC day and month, and the periodic job.

use std::time::Duration;

use alloy_primitives::{B256, U256};
use alloy_sol_types::SolCall;
use tollgate_gateway::reconcile::reconciler;
use tollgate_metering::{AtomicAmount, EntryState, NewEntry, ReconClass, SettlementMode, TokenUnits, Transition};
use tollgate_recon::{
    JOB_LEASE, JobSettings, JobTick, ReconcileOptions, ReconcileOutcome, blocks_of_times, job_tick, reconcile_range,
    reconcile_resume, reconcile_times, render_csv, render_json, render_totals_csv,
};
use tollgate_recon::{ReconSums, utc_day, utc_month};
use tollgate_test_support::{PaymentBuilder, TokenCall, random_key, v2_header};
use tollgate_verifier::Clock;
use tollgate_x402::Network;

use crate::both_engines;
use crate::harness::{Engine, Harness, Options, PRICE_ATOMIC};

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
    reconcile_range(&reconciler(&h.gateway), Network::BASE, from, to, opts()).await.unwrap()
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
    let units = TokenUnits::default();
    let json = render_json(&o, &units);
    assert_eq!(json["tie_out"]["holds"], true);
    assert_eq!(json["totals"]["matched"], "0.003", "token units: {json:#}");
    assert_eq!(json["totals"]["matched_atomic"], (3 * PRICE_ATOMIC).to_string());
    assert_eq!(json["symbol"], "USDC");
    let csv = render_csv(&o.report, &units);
    let rows: Vec<&str> = csv.split("\r\n").filter(|l| l.starts_with("matched,")).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    // Every item row carries its block's time, RFC 3339 UTC, as the chain reports it.
    for (row, item) in rows.iter().zip(&o.report.items) {
        let number = format!("{:#x}", item.block_number.unwrap());
        let block = h.chain.rpc("eth_getBlockByNumber", serde_json::json!([number, false])).await.unwrap();
        let timestamp = u64::from_str_radix(block["timestamp"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        let time = tollgate_recon::rfc3339_utc(timestamp);
        assert!(row.starts_with(&format!("matched,{time},")), "{row} at {time}");
        assert!(row.contains(",0.001,1000,0.001,1000,"), "{row}");
    }
    let runs = h.gateway.ledger.recon().runs(8453, h.chain.token, 10).await.unwrap();
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
        .entries()
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
    ledger.entries().transition(&id, Transition::Settling { tx_hash: fake_tx }, "test", None, h.now).await.unwrap();
    let settled = Transition::Settled { tx_hash: fake_tx, block_number: block, block_hash, log_index: 0 };
    ledger.entries().transition(&id, settled, "test", None, h.now).await.unwrap();

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
    let runs = h.gateway.ledger.recon().runs(8453, h.chain.token, 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[0].counts.clone(), runs[0].chain_total), (runs[1].counts.clone(), runs[1].chain_total));
    let exceptions = h.gateway.ledger.recon().exceptions(o.run_id).await.unwrap();
    assert_eq!(exceptions.len(), 3);
    let note = h.gateway.ledger.recon().add_note(exceptions[0].id, "finance", "investigating", h.now).await.unwrap();
    assert_eq!(h.gateway.ledger.recon().notes(exceptions[0].id).await.unwrap()[0].id, note);
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

// Goal: a matched settlement whose block is reorged away and whose transaction is re-included
// in a later block is reported reorged; the entry goes back to settling (event `reorged`) and
// is re-checked at once, landing settled at its new block; the next run matches it again.
async fn reorged_settlement_is_matched_again(h: &Harness) {
    let from = head(h).await + 1;
    let snapshot = h.chain.rpc("evm_snapshot", serde_json::json!([])).await.unwrap();
    let b = h.payment("/weather/quito").await;
    let resp =
        h.http.get(format!("{}/weather/quito", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let before = h.entry_for(&b).await.unwrap();
    let (tx, old_block, old_hash) = (before.tx_hash.unwrap(), before.block_number.unwrap(), before.block_hash.unwrap());
    let o = run(h, from, head(h).await).await;
    assert_eq!((count(&o, ReconClass::Matched), o.report.items.len()), (1, 1));

    // The reorg: the chain goes back before the settlement, mines an empty block at its height,
    // then includes the same signed transaction one block later.
    let raw = h.chain.rpc("eth_getRawTransactionByHash", serde_json::json!([format!("{tx:#x}")])).await.unwrap();
    h.chain.rpc("evm_revert", serde_json::json!([snapshot])).await.unwrap();
    h.chain.rpc("evm_mine", serde_json::json!([])).await.unwrap();
    h.chain.rpc("eth_sendRawTransaction", serde_json::json!([raw])).await.unwrap();
    let o = run(h, from, head(h).await).await;
    assert_eq!(o.report.items.len(), 1, "{:#?}", o.report.items);
    assert_eq!(o.report.items[0].class, ReconClass::Reorged);
    assert_eq!(o.reopened, vec![before.id.clone()]);
    let after = h.entry_for(&b).await.unwrap();
    assert_eq!(after.state, EntryState::Settled, "re-checked at once");
    assert_eq!(after.tx_hash, Some(tx));
    assert_eq!(after.block_number, Some(old_block + 1));
    assert_ne!(after.block_hash, Some(old_hash));
    let events = h.gateway.ledger.entries().events(&before.id).await.unwrap();
    let causes: Vec<&str> = events.iter().map(|e| e.cause.as_str()).collect();
    assert!(causes.contains(&"reorged"), "{causes:?}");

    let o = run(h, from, head(h).await).await;
    assert_eq!((count(&o, ReconClass::Matched), o.report.items.len()), (1, 1), "{:#?}", o.report.items);
    assert!(o.reopened.is_empty());
    assert!(o.report.tie_out(&o.scope.pay_to).holds);
}
both_engines!(reorg_rematched, reorged_settlement_is_matched_again);

/// A paid call with the gateway's clock (and the payment's validity) at `now`.
async fn paid_call_at(h: &Harness, city: &str, now: u64) {
    h.clock.set(now);
    let b = PaymentBuilder::new(&h.offer(&format!("/weather/{city}")).await, &h.payer, now);
    let resp = h
        .http
        .get(format!("{}/weather/{city}", h.url))
        .header("payment-signature", v2_header(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn sums(expected: u64, matched: u64) -> ReconSums {
    ReconSums {
        expected: U256::from(expected),
        matched: U256::from(matched),
        outstanding: U256::from(expected - matched),
    }
}

// Goal: a range given by times resolves, by binary search over block timestamps, to the
// blocks made in [from, to); the report's totals per UTC day and month count each settlement
// on the day of its block (expected = matched), in JSON and in the totals CSV.
async fn time_range_and_days(h: &Harness) {
    let t0 = h.chain.latest_timestamp().await.unwrap();
    let day = (t0 / 86_400 + 1) * 86_400;
    let (d1, d2, d3) = (day, day + 86_400, day + 2 * 86_400);
    h.chain.warp_to(d1 + 3_600).await.unwrap();
    let first_of_d1 = head(h).await;
    paid_call_at(h, "accra", d1 + 3_600).await;
    h.chain.warp_to(d2 + 3_600).await.unwrap();
    let first_of_d2 = head(h).await;
    paid_call_at(h, "lagos", d2 + 3_600).await;
    paid_call_at(h, "dakar", d2 + 3_600).await;
    h.chain.warp_to(d3 + 3_600).await.unwrap();
    let first_of_d3 = head(h).await;

    let gw = &reconciler(&h.gateway);
    assert_eq!(blocks_of_times(gw, Network::BASE, d1, d3, opts()).await.unwrap(), (first_of_d1, first_of_d3 - 1));
    assert_eq!(blocks_of_times(gw, Network::BASE, d2, d3, opts()).await.unwrap(), (first_of_d2, first_of_d3 - 1));
    // An end beyond the head takes the head; a range with no block, or backwards, is refused.
    assert_eq!(blocks_of_times(gw, Network::BASE, d3, d3 + 86_400, opts()).await.unwrap(), (first_of_d3, first_of_d3));
    assert!(blocks_of_times(gw, Network::BASE, d3 + 86_400, d3 + 2 * 86_400, opts()).await.is_err());
    assert!(blocks_of_times(gw, Network::BASE, d1 + 7_200, d1 + 7_300, opts()).await.is_err());
    assert!(blocks_of_times(gw, Network::BASE, d2, d1, opts()).await.is_err());

    let o = reconcile_times(gw, Network::BASE, d1, d3, opts()).await.unwrap();
    assert_eq!((o.scope.from_block, o.scope.to_block), (first_of_d1, first_of_d3 - 1));
    assert_eq!(count(&o, ReconClass::Matched), 3, "{:#?}", o.report.items);
    let b = &o.breakdown;
    assert_eq!(b.by_day[&utc_day(d1)], sums(PRICE_ATOMIC, PRICE_ATOMIC));
    assert_eq!(b.by_day[&utc_day(d2)], sums(2 * PRICE_ATOMIC, 2 * PRICE_ATOMIC));
    assert_eq!(b.by_day.len(), 2, "{b:#?}");
    let month_total: U256 = b.by_month.values().map(|s| s.matched).sum();
    assert_eq!(month_total, U256::from(3 * PRICE_ATOMIC));
    assert!(b.by_month[&utc_month(d1)].expected >= U256::from(PRICE_ATOMIC));
    assert_eq!(b.by_provider["weather"], sums(3 * PRICE_ATOMIC, 3 * PRICE_ATOMIC));
    assert_eq!(b.by_payer[&h.payer.address()], sums(3 * PRICE_ATOMIC, 3 * PRICE_ATOMIC));
    let units = TokenUnits::default();
    let json = render_json(&o, &units);
    assert_eq!(json["totals"]["by_day"][utc_day(d2)]["matched"], "0.002");
    assert_eq!(json["totals"]["by_day"][utc_day(d2)]["matched_atomic"], (2 * PRICE_ATOMIC).to_string());
    assert_eq!(json["totals"]["by_day"][utc_day(d2)]["outstanding"], "0");
    let csv = render_totals_csv(b, &units);
    let header = "group,key,symbol,expected,expected_atomic,matched,matched_atomic,outstanding,outstanding_atomic\r\n";
    assert!(csv.starts_with(header), "{csv}");
    let p = PRICE_ATOMIC;
    assert!(csv.contains(&format!("\r\nday,{},USDC,0.002,{},0.002,{},0,0\r\n", utc_day(d2), 2 * p, 2 * p)), "{csv}");

    let second_day = reconcile_times(gw, Network::BASE, d2, d3, opts()).await.unwrap();
    assert_eq!(count(&second_day, ReconClass::Matched), 2);
    assert_eq!(second_day.report.items.len(), 2);
}
both_engines!(recon_by_time, time_range_and_days);

// Goal: resuming starts at the stored cursor + 1 (or the start block when there is none) and
// ends at the head; a settlement with too few confirmations stays behind the cursor and is
// matched by the next resume once confirmed; with no new block there is nothing to do.
async fn resume_from_cursor(h: &Harness) {
    let gw = &reconciler(&h.gateway);
    let start = head(h).await + 1;
    let two = ReconcileOptions { confirmations_min: 2, ..opts() };
    assert!(gw.ledger.recon().cursor(8453, h.chain.token).await.unwrap().is_none());
    paid_call(h, "quito").await;
    paid_call(h, "cusco").await;
    let last = head(h).await;
    let o = reconcile_resume(gw, Network::BASE, start, 1_000, two).await.unwrap().expect("a run");
    assert_eq!((o.scope.from_block, o.scope.to_block, o.cursor_block), (start, last, Some(last - 1)));
    assert_eq!(count(&o, ReconClass::Matched), 1, "{:#?}", o.report.items);
    assert_eq!(count(&o, ReconClass::Unconfirmed), 1);
    assert_eq!(gw.ledger.recon().cursor(8453, h.chain.token).await.unwrap(), Some(last - 1));

    // One more block confirms the second settlement: the resume covers only its block onwards.
    h.chain.rpc("evm_mine", serde_json::json!([])).await.unwrap();
    let o = reconcile_resume(gw, Network::BASE, start, 1_000, two).await.unwrap().expect("a run");
    assert_eq!((o.scope.from_block, o.scope.to_block, o.cursor_block), (last, last + 1, Some(last)));
    assert_eq!(count(&o, ReconClass::Matched), 1, "{:#?}", o.report.items);
    assert_eq!(o.report.items.len(), 1);

    // Confirmations 1: the cursor reaches the head; then nothing is new.
    let o = reconcile_resume(gw, Network::BASE, start, 1_000, opts()).await.unwrap().expect("a run");
    assert_eq!((o.scope.from_block, o.cursor_block), (last + 1, Some(last + 1)));
    assert!(reconcile_resume(gw, Network::BASE, start, 1_000, opts()).await.unwrap().is_none());

    // A run is at most `blocks_max` blocks; the next resume continues.
    paid_call(h, "lima").await;
    h.chain.rpc("evm_mine", serde_json::json!([])).await.unwrap();
    let o = reconcile_resume(gw, Network::BASE, start, 1, opts()).await.unwrap().expect("a run");
    assert_eq!((o.scope.from_block, o.scope.to_block), (last + 2, last + 2));
    assert_eq!(count(&o, ReconClass::Matched), 1);
    let o = reconcile_resume(gw, Network::BASE, start, 1, opts()).await.unwrap().expect("a run");
    assert_eq!((o.scope.from_block, o.scope.to_block, o.report.items.len()), (last + 3, last + 3, 0));
}
both_engines!(recon_resume, resume_from_cursor);

fn job(interval: Duration) -> JobSettings {
    JobSettings { interval, start_block: 0, run_blocks_max: 1_000, lease_ttl_s: 60, options: opts() }
}

// Goal: a job tick runs only while this process can take the reconciliation lease (another
// replica holding it means no run), reconciles every network from its cursor, and releases
// the lease afterwards.
async fn job_tick_takes_the_lease(h: &Harness) {
    let gw = &reconciler(&h.gateway);
    let instance = &h.gateway.instance;
    paid_call(h, "nairobi").await;
    let now = h.clock.now_unix_s();
    assert!(gw.ledger.leases().try_acquire(JOB_LEASE, "other-replica", 60, now).await.unwrap());
    let tick = job_tick(gw, instance, &job(Duration::from_secs(1))).await.unwrap();
    assert!(matches!(tick, JobTick::LeaseBusy), "{tick:?}");
    assert!(gw.ledger.recon().runs(8453, h.chain.token, 10).await.unwrap().is_empty());
    gw.ledger.leases().release(JOB_LEASE, "other-replica").await.unwrap();

    let JobTick::Ran(results) = job_tick(gw, instance, &job(Duration::from_secs(1))).await.unwrap() else {
        panic!("the lease was free");
    };
    assert_eq!(results.len(), 1);
    let (network, outcome) = &results[0];
    let o = outcome.as_ref().unwrap().as_ref().expect("a run");
    assert_eq!((*network, o.scope.from_block, o.scope.to_block), (Network::BASE, 0, head(h).await));
    assert_eq!(count(o, ReconClass::Matched), 1);
    // Released: another replica can take it at once.
    assert!(gw.ledger.leases().try_acquire(JOB_LEASE, "other-replica", 60, now).await.unwrap());
}
both_engines!(recon_job_lease, job_tick_takes_the_lease);

const JOB_CONFIG: &str = "\n[reconciliation]\ninterval_s = 1\nconfirmations = 1\nchunk_blocks = 5\n";

// Goal: a gateway serving with [reconciliation] interval_s set runs the job in the
// background: after paid calls settle, the runs it records cover contiguous ranges from block
// 0 and count every settlement matched, with the tie-out holding.
async fn periodic_job_records_runs(engine: Engine) {
    let opts = Options { extra_config: JOB_CONFIG.to_owned(), ..Options::default() };
    let Some(h) = Harness::start_with(engine, opts).await else { return };
    for city in ["hanoi", "hue", "vinh"] {
        paid_call(&h, city).await;
    }
    let settled_head = head(&h).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs = h.gateway.ledger.recon().runs(8453, h.chain.token, 1_000).await.unwrap();
        if runs.last().and_then(|r| r.cursor_block) >= Some(settled_head) {
            break runs;
        }
        assert!(tokio::time::Instant::now() < deadline, "the job recorded no run up to {settled_head}: {runs:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(runs[0].from_block, 0);
    for pair in runs.windows(2) {
        assert_eq!(Some(pair[1].from_block), pair[0].cursor_block.map(|c| c + 1), "{runs:#?}");
    }
    let matched: u64 = runs.iter().map(|r| r.counts[&ReconClass::Matched]).sum();
    assert_eq!(matched, 3, "{runs:#?}");
    assert!(runs.iter().all(|r| r.tie_out_holds), "{runs:#?}");
    h.stop().await;
}

mod recon_periodic_job {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        periodic_job_records_runs(Engine::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        periodic_job_records_runs(Engine::Postgres).await;
    }
}
